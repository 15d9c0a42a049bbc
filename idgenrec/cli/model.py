"""Top-level model commands (train, evaluate, recommend): filled in by the recommender module."""

import typer


def register(app: typer.Typer) -> None:
    pass
