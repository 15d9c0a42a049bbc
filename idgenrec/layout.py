"""Where every stage of the pipeline reads and writes: the one home of the artifact layout.

The CLI's defaults, the Prefect flows, the MLflow logging and the benchmarks take their paths
from :data:`LAYOUT`; dvc.yaml, which cannot import Python, writes the same paths out and
tests/test_layout.py checks that they agree.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path


@dataclass(frozen=True)
class PipelineFiles:
    """The pipeline's files, relative to the project root unless made absolute by :meth:`under`."""

    params: Path = Path("params.yaml")
    prepared: Path = Path("artifacts/prepared")
    validation_report: Path = Path("artifacts/validation/report.json")
    popularity_metrics: Path = Path("metrics/popularity.json")
    sasrec_model: Path = Path("artifacts/sasrec")
    sasrec_metrics: Path = Path("metrics/sasrec.json")
    generator: Path = Path("artifacts/generator")
    warmup_metrics: Path = Path("metrics/warmup.json")
    ids: Path = Path("artifacts/ids")  # the `ids` stage's output folder, holding the ID table
    id_table: Path = Path("artifacts/ids/item_ids.tsv")
    ids_metrics: Path = Path("metrics/ids.json")
    workdir: Path = Path("artifacts/model")
    training_curve: Path = Path("metrics/training_curve.json")
    model_metrics: Path = Path("metrics/model.json")
    registry_record: Path = Path("metrics/registry.json")
    grown_model: Path = Path("artifacts/model-plus")  # the champion plus new items (add-items; not a DVC stage)

    @property
    def model(self) -> Path:
        """The selected model (``best/`` of the training folder)."""
        return self.workdir / "best"

    @property
    def rounds(self) -> Path:
        return self.workdir / "rounds"

    def under(self, root: str | Path) -> "PipelineFiles":
        """The same layout with every relative path made absolute under ``root``."""
        root = Path(root).resolve()
        return replace(self, **{field.name: root / getattr(self, field.name) for field in fields(self)})

    def with_paths(self, **paths: str | Path | None) -> "PipelineFiles":
        """This layout with some paths replaced (a CLI option given, say); None keeps the layout's."""
        return replace(self, **{name: Path(path) for name, path in paths.items() if path is not None})


LAYOUT = PipelineFiles()


def find_project_root(start: str | Path = ".") -> Path:
    """The nearest folder at or above ``start`` holding dvc.yaml or params.yaml (else ``start``)."""
    start = Path(start).resolve()
    for folder in (start, *start.parents):
        if (folder / "dvc.yaml").exists() or (folder / "params.yaml").exists():
            return folder
    return start
