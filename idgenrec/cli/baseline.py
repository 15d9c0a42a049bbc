"""`idgenrec baseline ...`: baselines evaluated through the same protocol as the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, PreparedOption, read_params
from idgenrec.layout import LAYOUT

app = typer.Typer(no_args_is_help=True)


@app.command("popularity")
def popularity(
    prepared: PreparedOption = LAYOUT.prepared,
    output: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = LAYOUT.popularity_metrics,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Most-popular items: test and validation Recall/NDCG@k, seen items included and excluded."""
    from idgenrec import stages

    results = stages.popularity(read_params(params), LAYOUT.with_paths(prepared=prepared, popularity_metrics=output))
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")


@app.command("sasrec")
def sasrec(
    prepared: PreparedOption = LAYOUT.prepared,
    output: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = LAYOUT.sasrec_metrics,
    model_dir: Annotated[Path, typer.Option(help="Folder for the selected model (weights + config).")] = LAYOUT.sasrec_model,
    params: ParamsOption = DEFAULT_PARAMS,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
    progress: Annotated[bool, typer.Option(help="Progress bar per epoch.")] = True,
) -> None:
    """SASRec (CE over all items): train, select the epoch on validation, report test and validation metrics."""
    import torch

    from idgenrec import stages

    if threads > 0:
        torch.set_num_threads(threads)
    files = LAYOUT.with_paths(prepared=prepared, sasrec_metrics=output, sasrec_model=model_dir)
    results = stages.sasrec(read_params(params), files, progress=progress)
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")
