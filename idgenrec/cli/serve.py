"""`idgenrec serve`: the registered champion (or any MLflow model) over REST, request size bounded."""

from __future__ import annotations

import os
from typing import Annotated

import typer

from idgenrec.cli.common import DEFAULT_PARAMS, ParamsOption, fail, read_params
from idgenrec.serving.server import MAX_REQUEST_BYTES


def serve(
    model: Annotated[
        str | None, typer.Option("--model", "-m", help="MLflow model URI (default: models:/idgenrec-<data.name>@champion; `a+b` for combined datasets).")
    ] = None,
    host: Annotated[str, typer.Option(help="Interface to listen on; anything but loopback needs a proxy in front (docs/operations.md).")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on.")] = 5001,
    max_request_bytes: Annotated[int, typer.Option(min=1, help="Larger request bodies get HTTP 413 before they are decoded.")] = MAX_REQUEST_BYTES,
    params: ParamsOption = DEFAULT_PARAMS,
) -> None:
    """Answer POST /invocations like `mlflow models serve` (same app, requests and errors), bodies bounded."""
    from mlflow.exceptions import MlflowException

    from idgenrec.layout import find_project_root
    from idgenrec.registry import registered_model_name
    from idgenrec.serving.server import serve as run_server
    from idgenrec.tracking import configure_tracking
    from idgenrec.tracking.store import DamagedStoreError

    try:
        if "MLFLOW_TRACKING_URI" not in os.environ and (model is None or model.startswith(("models:/", "runs:/"))):
            configure_tracking(find_project_root(params.resolve().parent))  # the project's store, as `registry` uses
        if model is None:
            model = f"models:/{registered_model_name(read_params(params).data.label)}@champion"
        run_server(model, host=host, port=port, max_request_bytes=max_request_bytes)
    except (MlflowException, OSError, DamagedStoreError) as err:
        fail(f"cannot serve {model or 'the champion'}: {err}")


def register(app: typer.Typer) -> None:
    app.command("serve")(serve)
