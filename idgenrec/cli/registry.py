"""`idgenrec registry ...`: log a pipeline run to MLflow, register, promote, roll back, list.

The MLflow store is ``sqlite:///<project root>/mlruns/mlflow.db`` (the project root is the
nearest folder with dvc.yaml or params.yaml), unless ``IDGENREC_TRACKING_URI`` names a tracking server.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, fail, read_params
from idgenrec.layout import LAYOUT

app = typer.Typer(no_args_is_help=True, help="MLflow tracking and model registry: log runs, promote, roll back.")

ModelNameOption = Annotated[
    str | None, typer.Option("--model-name", help="Registered model (default: idgenrec-<data.name> from params.yaml; `a+b` for combined datasets).")
]


def _connect(params_path: Path):
    """(project root, Params) with MLflow pointed at the project's store."""
    from idgenrec.layout import find_project_root
    from idgenrec.tracking import configure_tracking
    from idgenrec.tracking.store import DamagedStoreError

    config = read_params(params_path)
    root = find_project_root(params_path.resolve().parent)
    try:
        configure_tracking(root)
    except DamagedStoreError as err:
        fail(str(err))
    return root, config


def _model_name(name: str | None, params_path: Path) -> str:
    from idgenrec.registry import registered_model_name

    _, config = _connect(params_path)
    return name or registered_model_name(config.data.label)


@app.command("log-run")
def log_run(
    params: ParamsOption = DEFAULT_PARAMS,
    output: Annotated[
        Path, typer.Option(help="Record of the run id, model version and promotion decision.")
    ] = LAYOUT.registry_record,
    register: Annotated[bool, typer.Option(help="Register the selected model as a new version (alias challenger).")] = True,
    promote: Annotated[bool, typer.Option(help="Then apply the promotion rule (registry.margin) to it.")] = True,
    run_name: Annotated[
        str | None, typer.Option(help="MLflow run name (default: what it trained, e.g. ml-100k-learned-seed0).")
    ] = None,
) -> None:
    """Log the finished pipeline (files at the dvc.yaml paths) as one MLflow run with a nested run per round."""
    from idgenrec import stages

    root, config = _connect(params)
    files = LAYOUT.with_paths(params=params, registry_record=output)
    try:
        record = stages.register(
            config, files, root=root, run_name=run_name, register_model=register, promote_model=promote,
            tags={"idgenrec.trigger": "cli"},
        )
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    _report(record)


@app.command("log-model")
def log_model(
    model: Annotated[Path, typer.Option(help="Model folder, e.g. the output of `idgenrec add-items`.")],
    prepared: Annotated[Path, typer.Option(help="Prepared dataset it is scored on (validation and test).")] = LAYOUT.prepared,
    params: ParamsOption = DEFAULT_PARAMS,
    output: Annotated[Path | None, typer.Option(help="Also write the record (run id, version, decision) as JSON.")] = None,
    promote: Annotated[bool, typer.Option(help="Apply the promotion rule (registry.margin) to the new version.")] = True,
    grown_from: Annotated[
        str | None, typer.Option(help="Registered version the folder was grown from by add-items (changes the rule, see README).")
    ] = None,
    run_name: Annotated[
        str | None, typer.Option(help="MLflow run name (default: <dataset>-<folder>, or <dataset>-v<N>-plus-new-items).")
    ] = None,
) -> None:
    """Score a model folder the pipeline did not train (e.g. grown by add-items), log and register it."""
    from idgenrec.registry import record_model_folder

    root, config = _connect(params)
    try:
        record = record_model_folder(
            config, model, prepared, root=root, run_name=run_name, promote_model=promote, grown_from=grown_from,
            tags={"idgenrec.trigger": "cli log-model"},
        )
    except (FileNotFoundError, ValueError) as err:
        fail(str(err))
    _report(record, output)


@app.command("add-items")
def add_items(
    items: Annotated[Path, typer.Option(help="TSV of new items: item_id, text, optional title (see `idgenrec add-items`).")],
    output: Annotated[Path, typer.Option(help="Folder for the champion plus the new items.")] = LAYOUT.grown_model,
    prepared: Annotated[Path, typer.Option(help="Prepared dataset the grown model is scored on.")] = LAYOUT.prepared,
    params: ParamsOption = DEFAULT_PARAMS,
    kind: Annotated[str | None, typer.Option(help="ID kind (default: ids.kind of --params).")] = None,
    own_tokens: Annotated[
        bool, typer.Option("--own-tokens/--any-tokens", help="Learned IDs only from tokens of the item's own text.")
    ] = True,
    promote: Annotated[bool, typer.Option(help="Apply the rule for grown models (keep the champion's score within the margin).")] = True,
    record_file: Annotated[Path | None, typer.Option("--record", help="Also write the record as JSON.")] = None,
) -> None:
    """The champion plus new items, without training: grown, scored, registered, promoted if it kept its score."""
    from idgenrec.data.textfile import DataFormatError
    from idgenrec.recommender.new_items import read_new_items
    from idgenrec.registry import RegistryError, grow_champion

    root, config = _connect(params)
    try:
        new_items = read_new_items(items)
        growth = grow_champion(
            config, new_items, output, prepared, root=root, kind=kind, own_tokens=own_tokens, promote_model=promote,
            tags={"idgenrec.trigger": "cli add-items"},
        )
    except (DataFormatError, RegistryError, FileNotFoundError, ValueError) as err:
        fail(str(err))
    if growth.skipped:
        fail(growth.skipped)
    stats = growth.stats
    typer.echo(f"{stats['items_added']} new items ({stats['items_already_known']} already known, skipped) "
               f"added to champion v{growth.champion}; model saved to {output}")
    _report(growth.record, record_file)


def _report(record: dict, output: Path | None = None) -> None:
    """Print the record; write it to ``output`` when given."""
    from idgenrec.atomic import write_json

    if output is not None:
        write_json(output, record)
    typer.echo(f"run {record['run_id']} logged to experiment {record['experiment']}")
    if record["model_version"]:
        score = record["selection_score"]
        scored = f" ({record['selection_metric']} {score:.4f})" if score is not None else ""
        typer.echo(f"{record['model_name']} v{record['model_version']} registered as challenger{scored}")
    if record["promotion"]:
        verdict = "promoted to champion" if record["promotion"]["promoted"] else "not promoted"
        typer.echo(f"{verdict}: {record['promotion']['reason']}")


@app.command("promote")
def promote(
    version: Annotated[str | None, typer.Option(help="Version to promote (default: the challenger).")] = None,
    force: Annotated[bool, typer.Option(help="Promote even if it does not beat the champion.")] = False,
    margin: Annotated[float | None, typer.Option(help="Override registry.margin from params.yaml.")] = None,
    model_name: ModelNameOption = None,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Move alias `champion` to a version if its validation score beats the champion's by the margin."""
    from idgenrec.registry import RegistryError, promote as promote_version

    name = _model_name(model_name, params)
    config = read_params(params)
    try:
        decision = promote_version(name, config.registry.margin if margin is None else margin, version, force)
    except RegistryError as err:
        fail(str(err))
    verdict = "promoted to champion" if decision.promoted else "NOT promoted"
    typer.echo(f"{name} v{decision.version} {verdict}: {decision.reason}")
    typer.echo(f"champion: v{decision.champion}" if decision.champion else "no champion")
    if not decision.promoted:
        raise typer.Exit(code=2)  # scripts can tell "rejected" from an error (1)


@app.command("rollback")
def rollback(model_name: ModelNameOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Give alias `champion` back to the version it replaced."""
    from idgenrec.registry import RegistryError, rollback as rollback_champion

    name = _model_name(model_name, params)
    try:
        decision = rollback_champion(name)
    except RegistryError as err:
        fail(str(err))
    typer.echo(f"{name}: champion v{decision.previous_champion} -> v{decision.champion} ({decision.reason})")


@app.command("list")
def list_versions(model_name: ModelNameOption = None, params: ParamsOption = DEFAULT_PARAMS) -> None:
    """Versions, newest first: aliases, validation score, popularity's on the same users, last decision."""
    from idgenrec.registry import RegistryError, list_versions as versions

    name = _model_name(model_name, params)
    try:
        rows = versions(name)
    except RegistryError as err:
        fail(str(err))
    typer.echo(f"{name}:")
    typer.echo(f"{'version':>7}  {'aliases':22}  {'score':>7}  {'pop':>7}  {'created':16}  decision")
    for row in rows:
        score, pop = (f"{value:.4f}" if value is not None else "-" for value in (row.selection_score, row.popularity_score))
        decision = f"{row.decision}: {row.reason}" if row.decision else "-"
        typer.echo(f"{row.version:>7}  {','.join(row.aliases) or '-':22}  {score:>7}  {pop:>7}  {row.created:16}  {decision}")
