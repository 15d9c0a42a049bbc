"""`idgenrec train | evaluate | recommend`: the recommender's stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, get_args

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, PreparedOption, fail, read_params
from idgenrec.layout import LAYOUT

ModelOption = Annotated[Path, typer.Option("--model", help="Model folder (the selected checkpoint).")]


def train(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = LAYOUT.prepared,
    generator: Annotated[Path, typer.Option(help="Warmed-up ID generator folder.")] = LAYOUT.generator,
    ids: Annotated[Path, typer.Option(help="Initial item-ID table.")] = LAYOUT.id_table,
    workdir: Annotated[Path, typer.Option(help="Training folder (checkpoints, rounds, best model).")] = LAYOUT.workdir,
    curve: Annotated[Path, typer.Option(help="Per-epoch / per-round records for `dvc plots`.")] = LAYOUT.training_curve,
) -> None:
    """Alternating training per `training.schedule`; resumes an interrupted run with the same params."""
    from idgenrec import stages

    from idgenrec.backbone import BackboneUnavailableError

    config = read_params(params)
    files = LAYOUT.with_paths(prepared=prepared, generator=generator, id_table=ids, workdir=workdir, training_curve=curve)
    try:
        state = stages.train(config, files)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:  # damaged or missing inputs, named
        fail(str(err))
    typer.echo(
        f"selected phase {state.best_phase} epoch {state.best_epoch}: "
        f"valid {config.evaluation.selection_metric} = {state.best_score:.4f}"
        + (f"; similarity weight {state.similarity_weight:g} (valid {state.valid_by_similarity_weight[str(state.similarity_weight)]:.4f})"
           if state.valid_by_similarity_weight is not None else "")
    )


def evaluate(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = LAYOUT.prepared,
    model: ModelOption = LAYOUT.model,
    output: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = LAYOUT.model_metrics,
) -> None:
    """Validation and test Recall/NDCG@k of the selected model, both seen-item settings."""
    from idgenrec import stages

    config = read_params(params)
    from idgenrec.backbone import BackboneUnavailableError

    try:
        results = stages.evaluate(config, LAYOUT.with_paths(prepared=prepared, model_metrics=output), model=model)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")


def recommend(
    user: Annotated[str, typer.Option(help="Original user id (as in the raw data).")],
    k: Annotated[int, typer.Option(help="How many items to recommend.")] = 10,
    exclude_seen: Annotated[bool, typer.Option(help="Never recommend items already in the history.")] = False,
    prepared: PreparedOption = LAYOUT.prepared,
    model: ModelOption = LAYOUT.model,
    among: Annotated[
        Path | None, typer.Option(help="Recommend only items of this TSV (an item_id column), e.g. the new items of add-items.")
    ] = None,
) -> None:
    """Print a user's recent history and the top-k next items, with their textual IDs."""
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.data.textfile import DataFormatError
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.new_items import read_new_items

    from idgenrec.backbone import BackboneUnavailableError

    try:
        dataset = SequenceDataset.load(prepared)
        recommender = IDGenRecModel.load(model)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    try:
        index = dataset.user_ids.index(user)
    except ValueError:
        fail(f"user {user!r} is not in {prepared} ({dataset.num_users} users, e.g. {dataset.user_ids[:3]})")
    titles = {item: title for item, title in zip(dataset.item_ids, dataset.item_titles)}
    history_ids = [dataset.item_ids[i] for i in dataset.sequences[index]]  # everything known: recommend what comes next
    try:
        history = recommender.indices(history_ids)  # the model's own numbering (a grown model's differs)
    except ValueError as err:
        fail(f"user {user!r}'s history, model {model}: {err}")
    candidates = None
    if among is not None:
        try:
            wanted = read_new_items(among)
        except DataFormatError as err:
            fail(str(err))
        try:
            candidates = recommender.indices(wanted.item_ids)
        except ValueError as err:
            fail(f"{among}: {err}")
        # new items are not in the prepared dataset: their titles (else texts) come from the file
        titles.update((item, title or text) for item, title, text in zip(wanted.item_ids, wanted.titles, wanted.texts))
    shown = history[-recommender.settings.history_length :]
    table = recommender.id_table
    typer.echo(f"user {user}: {len(history)} interactions, last {len(shown)} (oldest first):")
    if recommender.user_ids is not None:
        typer.echo(f"  textual user ID in the prompt: {recommender.user_ids(history)!r}")
    for item in shown:
        typer.echo(f"  {table.item_ids[item]:>10}  {table.textual_ids[item]:40s}  {titles.get(table.item_ids[item], '')}")
    items, scores = recommender.recommend_with_scores([history], k, exclude_seen, candidates=candidates)
    typer.echo(f"top-{k}" + (f" among the {len(candidates)} items of {among}:" if candidates is not None else ":"))
    for rank, (item, score) in enumerate(zip(items[0], scores[0]), start=1):
        typer.echo(f"  {rank:2d}. {table.item_ids[item]:>10}  {table.textual_ids[item]:40s}  "
                   f"{titles.get(table.item_ids[item], '')}  (log-p {score:.2f})")


def add_items(
    items: Annotated[Path, typer.Option(help="TSV with a header: item_id, text and optionally title (a prepared items.tsv works).")],
    output: Annotated[Path, typer.Option(help="Folder for the model that also knows the new items (may be --model itself).")],
    model: ModelOption = LAYOUT.model,
    params: ParamsOption = DEFAULT_PARAMS,
    kind: Annotated[str | None, typer.Option(help="ID kind the model was trained with (default: ids.kind of --params).")] = None,
    own_tokens: Annotated[
        bool, typer.Option("--own-tokens/--any-tokens", help="Learned IDs only from tokens of the item's own text.")
    ] = True,
) -> None:
    """Give new items textual IDs and make the model recommend them, without training (zero-shot)."""
    from idgenrec.ids.kinds import IdKind
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.new_items import add_items as extend, read_new_items

    config = read_params(params)
    kind = kind or config.ids.kind
    if kind not in get_args(IdKind):
        fail(f"--kind must be one of {', '.join(get_args(IdKind))}, got {kind!r}")
    from idgenrec.backbone import BackboneUnavailableError

    try:
        new_items = read_new_items(items)
        recommender = IDGenRecModel.load(model)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:  # DataFormatError is a ValueError
        fail(str(err))
    try:
        grown, stats = extend(recommender, new_items, kind, config.ids, own_tokens=own_tokens)
    except ValueError as err:
        fail(str(err))
    if stats["items_added"]:
        grown.save(output)
    typer.echo(f"{stats['items_added']} new items ({stats['items_already_known']} already in the model, skipped); "
               f"{stats['tokens_added']} tokens added to the vocabulary")
    if not stats["items_added"]:
        typer.echo(f"nothing to add: {output} not written")
        return
    table = grown.id_table
    for index in range(len(recommender.id_table), min(len(table), len(recommender.id_table) + 10)):
        typer.echo(f"  {table.item_ids[index]:>10}  {table.textual_ids[index]}")
    typer.echo(f"model with {len(table)} items saved to {output}")


def zero_shot(
    params: Annotated[Path, typer.Option(help="Params whose `data` section is the unseen dataset (and `evaluation` how to score it).")],
    output: Annotated[Path, typer.Option(help="Folder to write: prepared/, validation.json, model/ and metrics.json.")],
    model: ModelOption = LAYOUT.model,
    kind: Annotated[str | None, typer.Option(help="ID kind the model was trained with (default: ids.kind of --params).")] = None,
) -> None:
    """Recommend on a dataset the model never saw: prepare and validate it, give its items IDs (no training), evaluate."""
    from idgenrec import stages
    from idgenrec.atomic import write_json
    from idgenrec.backbone import BackboneUnavailableError, pick_device
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.ids.kinds import IdKind
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.new_items import for_catalogue

    config = read_params(params)
    kind = kind or config.ids.kind
    if kind not in get_args(IdKind):
        fail(f"--kind must be one of {', '.join(get_args(IdKind))}, got {kind!r}")
    files = LAYOUT.with_paths(prepared=output / "prepared", validation_report=output / "validation.json")
    try:
        trained = IDGenRecModel.load(model)
        dataset = stages.prepare(config, files)
        report = stages.validate(config, files)
        if not report.success:
            fail(f"{config.data.path}: data validation failed: {'; '.join(report.to_json()['failures'][:3])} "
                 f"(report: {files.validation_report})")
        transferred, stats = for_catalogue(trained, dataset, kind, config.ids)
    except (BackboneUnavailableError, FileNotFoundError, ValueError) as err:  # DataFormatError is a ValueError
        fail(str(err))
    transferred.recommender.to(pick_device())
    metrics = evaluate_protocol(transferred, dataset, config.evaluation.ks, config.evaluation.sample_users)
    transferred.save(output / "model")
    write_json(output / "metrics.json", {"items": stats["items"], "tokens_added": stats["tokens_added"], **metrics})
    typer.echo(f"{dataset.name}: {stats['items']} items given {kind} IDs, {stats['tokens_added']} tokens added; model -> "
               f"{output / 'model'}")
    k = max(config.evaluation.ks)
    for key in (f"test/seen_included/ndcg@{k}", f"test/seen_included/recall@{k}", f"test/seen_excluded/ndcg@{k}"):
        typer.echo(f"  {key:32} {metrics[key]:.4f}")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("recommend")(recommend)
    app.command("add-items")(add_items)
    app.command("zero-shot")(zero_shot)
