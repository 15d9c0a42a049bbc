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
    from idgenrec.evaluation import evaluate
    from idgenrec.models.popularity import PopularityRecommender

    config = read_params(params)
    dataset = SequenceDataset.load(prepared)
    results: dict[str, float] = {}
    for split in ("valid", "test"):
        model = PopularityRecommender.fit(dataset, split)
        for exclude_seen in (False, True):
            setting = "seen_excluded" if exclude_seen else "seen_included"
            for name, value in evaluate(model, dataset, split, config.evaluation.ks, exclude_seen).items():
                results[f"{split}/{setting}/{name}"] = round(value, 6)
    write_json(output, results)
    for key in sorted(results):
        typer.echo(f"{key:40s} {results[key]:.4f}")
