"""The `idgenrec` command line: one subcommand per pipeline stage.

Each stage command is a thin wrapper over its function in :mod:`idgenrec.stages`, which the
Prefect flows call too; its path options default to :data:`idgenrec.layout.LAYOUT`, the paths
dvc.yaml names. Heavy imports (torch, transformers) happen inside commands so `--help` is instant.
"""

from __future__ import annotations

import typer

from idgenrec.cli import baseline, data, ids, model, registry, serve

app = typer.Typer(
    help="IDGenRec: generative recommendation with learned textual item IDs.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
)
app.add_typer(data.app, name="data", help="Fetch, prepare and validate datasets.")
app.add_typer(ids.app, name="ids", help="Warm up the ID generator, generate and inspect textual item IDs.")
app.add_typer(baseline.app, name="baseline", help="Evaluate baselines under the same protocol.")
app.add_typer(registry.app, name="registry", help="MLflow tracking and the model registry: log runs, promote, roll back.")
model.register(app)
serve.register(app)


@app.callback()
def _logging(quiet: bool = typer.Option(False, "--quiet", "-q", help="Only warnings and errors; no progress lines.")) -> None:
    """Progress and summary lines go to stderr (see idgenrec.progress); stdout keeps each command's output."""
    import logging

    from idgenrec.progress import configure_logging

    configure_logging(logging.WARNING if quiet else logging.INFO)


def main() -> None:
    app()
