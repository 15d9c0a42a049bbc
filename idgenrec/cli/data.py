"""Placeholder: filled in by the stage's own module."""

import typer

app = typer.Typer(no_args_is_help=True)
