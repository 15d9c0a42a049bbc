"""Options and error handling shared by the subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.config import ConfigError, Params, load_params
from idgenrec.layout import LAYOUT

ParamsOption = Annotated[Path, typer.Option("--params", help="The pipeline's params.yaml.")]
PreparedOption = Annotated[Path, typer.Option("--prepared", help="Prepared dataset folder.")]
DEFAULT_PARAMS = LAYOUT.params


def read_params(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as err:
        fail(str(err))


def fail(message: str) -> "typer.Exit":
    """Print a one-line error (no traceback) and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)
