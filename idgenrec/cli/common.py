"""Options and error handling shared by the subcommands."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from idgenrec.config import ConfigError, Params, load_params

ParamsOption = Annotated[Path, typer.Option("--params", help="The pipeline's params.yaml.")]
DEFAULT_PARAMS = Path("params.yaml")


def read_params(path: Path) -> Params:
    try:
        return load_params(path)
    except ConfigError as err:
        fail(str(err))


def fail(message: str) -> "typer.Exit":
    """Print a one-line error (no traceback) and exit non-zero."""
    typer.secho(f"error: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code=1)
