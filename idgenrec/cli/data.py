"""`idgenrec data ...`: fetch, prepare and validate datasets (thin wrappers over idgenrec.data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, PreparedOption, fail, read_params
from idgenrec.layout import LAYOUT

app = typer.Typer(no_args_is_help=True)


@app.command("fetch")
def fetch(
    name: Annotated[str, typer.Argument(help="Dataset to fetch (ml-100k).")] = "ml-100k",
    dest: Annotated[Path, typer.Option(help="Folder that receives <name>/ (tracked by data.dvc).")] = Path("data"),
    force: Annotated[bool, typer.Option(help="Replace files whose content differs from the published ones.")] = False,
) -> None:
    """Download a public dataset from its mirrors (canonical source first), verify SHA-256, write atomically.

    Does nothing when the verified files are already there, so it is safe before every `dvc repro`.
    """
    from idgenrec.data.fetch import FetchError, fetch_dataset

    try:
        result = fetch_dataset(name, dest, force=force, log=lambda message: typer.echo(message, err=True))
    except FetchError as err:
        fail(str(err))
    typer.echo(f"{result.folder}: {', '.join(p.name for p in result.files)} verified ({result.source})")


@app.command("prepare")
def prepare(
    params: ParamsOption = DEFAULT_PARAMS,
    output: Annotated[Path, typer.Option(help="Folder for items.tsv, sequences.tsv, stats.json.")] = LAYOUT.prepared,
) -> None:
    """Read the raw data named in params.yaml (data.*), apply k-core and time order, build item text, save."""
    from idgenrec import stages
    from idgenrec.data.textfile import DataFormatError

    full = read_params(params)
    config = full.data
    try:
        dataset = stages.prepare(full, LAYOUT.with_paths(prepared=output))
    except DataFormatError as err:
        fail(str(err))
    stats = dataset.stats
    if "datasets" in stats:
        typer.echo(f"{output}: {dataset.name}, {stats['users']:,} users, {stats['items']:,} items, "
                   f"{stats['interactions']:,} interactions")
    for source, part_stats in zip(config.sources, stats.get("datasets", [stats])):
        _describe_prepared(source, part_stats, f"  {source.name}" if "datasets" in stats else str(output))


def _describe_prepared(config, stats: dict, where: str) -> None:
    passes = stats["k_core_iterations"]
    core = f"{config.k_core}-core after {passes} filtering pass{'es' if passes > 1 else ''}" if passes else f"already a {config.k_core}-core"
    raw = stats["raw"]
    typer.echo(
        f"{where}: {stats['users']:,} users, {stats['items']:,} items, {stats['interactions']:,} interactions "
        f"({core}; raw: {raw['users']:,} users, {raw['items']:,} items, {raw['interactions']:,} interactions)"
    )
    if stats["items_without_text"]:
        typer.echo(f"  {stats['items_without_text']} items have no text row: fallback text {config.fallback_text!r}")
    missing = {field: n for field, n in stats["missing_fields"].items() if n}
    if missing:
        typer.echo(f"  empty text fields, skipped: {missing}")


@app.command("validate")
def validate(
    params: ParamsOption = DEFAULT_PARAMS,
    prepared: PreparedOption = LAYOUT.prepared,
    report: Annotated[Path, typer.Option(help="JSON report to write (also on failure).")] = LAYOUT.validation_report,
) -> None:
    """Great Expectations suites on the raw data, item text and prepared splits; exit 1 on any failure."""
    from idgenrec import stages

    config = read_params(params)
    try:
        outcome = stages.validate(config, LAYOUT.with_paths(prepared=prepared, validation_report=report))
    except (ValueError, FileNotFoundError) as err:  # DataFormatError is a ValueError
        fail(f"{err} (report: {report})")
    for line in outcome.summary_lines():
        typer.echo(line)
    if not outcome.success:
        first = outcome.failures[0]
        fail(f"validation failed: {first.summary()} (report: {report})")
    typer.echo(f"report: {report}")
