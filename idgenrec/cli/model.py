"""`idgenrec train | evaluate | recommend`: the recommender's stages."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, fail, read_params

PreparedOption = Annotated[Path, typer.Option("--prepared", help="Prepared dataset folder.")]
ModelOption = Annotated[Path, typer.Option("--model", help="Model folder (the selected checkpoint).")]
DEFAULT_PREPARED = Path("artifacts/prepared")
DEFAULT_MODEL = Path("artifacts/model/best")


def train(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = DEFAULT_PREPARED,
    generator: Annotated[Path, typer.Option(help="Warmed-up ID generator folder.")] = Path("artifacts/generator"),
    ids: Annotated[Path, typer.Option(help="Initial item-ID table.")] = Path("artifacts/ids/item_ids.tsv"),
    workdir: Annotated[Path, typer.Option(help="Training folder (checkpoints, rounds, best model).")] = Path("artifacts/model"),
    curve: Annotated[Path, typer.Option(help="Per-epoch / per-round records for `dvc plots`.")] = Path("metrics/training_curve.json"),
) -> None:
    """Alternating training per `training.schedule`; resumes an interrupted run with the same params."""
    from idgenrec.atomic import write_json
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.recommender.alternating import train as run_training

    config = read_params(params)
    state = run_training(config, SequenceDataset.load(prepared), generator, ids, workdir)
    write_json(curve, [{"step": step, **record} for step, record in enumerate(state.records, start=1)])
    typer.echo(
        f"selected phase {state.best_phase} epoch {state.best_epoch}: "
        f"valid {config.evaluation.selection_metric} = {state.best_score:.4f}"
    )


def evaluate(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = DEFAULT_PREPARED,
    model: ModelOption = DEFAULT_MODEL,
    output: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = Path("metrics/model.json"),
) -> None:
    """Validation and test Recall/NDCG@k of the selected model, both seen-item settings."""
    from idgenrec.atomic import write_json
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.backbone import pick_device

    config = read_params(params)
    dataset = SequenceDataset.load(prepared)
    recommender = IDGenRecModel.load(model, device=pick_device())
    results = evaluate_protocol(recommender, dataset, config.evaluation.ks, config.evaluation.sample_users)
    write_json(output, results)
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")


def recommend(
    user: Annotated[str, typer.Option(help="Original user id (as in the raw data).")],
    k: Annotated[int, typer.Option(help="How many items to recommend.")] = 10,
    exclude_seen: Annotated[bool, typer.Option(help="Never recommend items already in the history.")] = False,
    prepared: PreparedOption = DEFAULT_PREPARED,
    model: ModelOption = DEFAULT_MODEL,
) -> None:
    """Print a user's recent history and the top-k next items, with their textual IDs."""
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.recommender.model import IDGenRecModel

    dataset = SequenceDataset.load(prepared)
    try:
        index = dataset.user_ids.index(user)
    except ValueError:
        fail(f"user {user!r} is not in {prepared} ({dataset.num_users} users, e.g. {dataset.user_ids[:3]})")
    recommender = IDGenRecModel.load(model)
    history = dataset.sequences[index]  # everything known: recommend what comes after it
    shown = history[-recommender.settings.history_length :]
    ids = recommender.id_table.textual_ids
    typer.echo(f"user {user}: {len(history)} interactions, last {len(shown)} (oldest first):")
    if recommender.user_ids is not None:
        typer.echo(f"  textual user ID in the prompt: {recommender.user_ids(history)!r}")
    for item in shown:
        typer.echo(f"  {dataset.item_ids[item]:>10}  {ids[item]:40s}  {dataset.item_titles[item]}")
    items, scores = recommender.recommend_with_scores([history], k, exclude_seen)
    typer.echo(f"top-{k}:")
    for rank, (item, score) in enumerate(zip(items[0], scores[0]), start=1):
        typer.echo(f"  {rank:2d}. {dataset.item_ids[item]:>10}  {ids[item]:40s}  {dataset.item_titles[item]}  (log-p {score:.2f})")


def register(app: typer.Typer) -> None:
    app.command("train")(train)
    app.command("evaluate")(evaluate)
    app.command("recommend")(recommend)
