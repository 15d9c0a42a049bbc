"""`idgenrec baseline ...`: baselines evaluated through the same protocol as the model."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, read_params

app = typer.Typer(no_args_is_help=True)


@app.command("popularity")
def popularity(
    prepared: Annotated[Path, typer.Option(help="Prepared dataset folder.")] = Path("artifacts/prepared"),
    output: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = Path("metrics/popularity.json"),
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Most-popular items: test and validation Recall/NDCG@k, seen items included and excluded."""
    from idgenrec.atomic import write_json
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.baselines.popularity import popularity_metrics

    config = read_params(params)
    results = popularity_metrics(SequenceDataset.load(prepared), config.evaluation)
    write_json(output, results)
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")


@app.command("sasrec")
def sasrec(
    prepared: Annotated[Path, typer.Option(help="Prepared dataset folder.")] = Path("artifacts/prepared"),
    output: Annotated[Path, typer.Option(help="Metrics JSON to write.")] = Path("metrics/sasrec.json"),
    model_dir: Annotated[Path, typer.Option(help="Folder for the selected model (weights + config).")] = Path("artifacts/sasrec"),
    params: ParamsOption = DEFAULT_PARAMS,
    threads: Annotated[int, typer.Option(help="torch CPU threads (0: torch's default).")] = 0,
    progress: Annotated[bool, typer.Option(help="Progress bar per epoch.")] = True,
) -> None:
    """SASRec (CE over all items): train, select the epoch on validation, report test and validation metrics."""
    import torch

    from idgenrec.atomic import write_json
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.baselines.sasrec import SASRecRecommender

    if threads > 0:
        torch.set_num_threads(threads)
    config = read_params(params)
    dataset = SequenceDataset.load(prepared)
    model = SASRecRecommender.fit(
        dataset,
        config.sasrec,
        ks=config.evaluation.ks,
        selection_metric=config.evaluation.selection_metric,
        exclude_seen=config.evaluation.exclude_seen,
        progress=progress,
    )
    model.save(model_dir)
    results = evaluate_protocol(model, dataset, config.evaluation.ks, config.evaluation.sample_users)
    epochs = len(model.log.epochs)
    results["train/epochs"] = epochs
    results["train/best_epoch"] = model.log.best_epoch
    results["train/seconds"] = round(model.log.seconds, 1)
    results["train/seconds_per_epoch"] = round(sum(e.seconds for e in model.log.epochs) / epochs, 2)
    write_json(output, results)
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")
