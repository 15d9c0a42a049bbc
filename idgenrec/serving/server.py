"""`idgenrec serve`: MLflow's own scoring server for a registered model, with the request's size bounded.

``mlflow models serve`` reads and decodes any body it is sent (a 10 MB JSON history is parsed
before the model can refuse it). This runs the same FastAPI app (``mlflow.pyfunc.scoring_server``:
the same routes, request format and errors) behind one ASGI layer that answers a body over
``max_request_bytes`` with HTTP 413 before it is decoded. The pyfunc bounds rows, history
length and ``k`` itself (pyfunc.py), under either server.

There is no authentication: it listens on 127.0.0.1 unless told otherwise, and a reverse proxy
that authenticates belongs in front of it before it listens anywhere else (docs/operations.md).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable
from typing import Any

MAX_REQUEST_BYTES = 1_000_000  # about 64 rows of 2,000-item histories of short ids
LOOPBACK = ("127.0.0.1", "localhost", "::1")

Scope = dict[str, Any]
Message = dict[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

log = logging.getLogger(__name__)


class RequestSizeLimit:
    """ASGI middleware: an HTTP body over ``max_bytes`` gets 413 without reaching the app.

    A declared ``Content-Length`` over the limit is refused before a byte of the body is read;
    a chunked body is read up to the limit and refused as soon as it passes it. A body within
    the limit is handed to the app unchanged.
    """

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], max_bytes: int = MAX_REQUEST_BYTES):
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope.get("headers") or []).get(b"content-length")
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await _reply(send, 400, "BAD_REQUEST", f"Content-Length {declared[:40]!r} is not a number")
                return
            if length > self.max_bytes:
                await _reply(send, 413, "REQUEST_TOO_LARGE", self._too_large(f"{length:,} bytes"))
                return
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] == "http.disconnect":
                return
            body += message.get("body", b"")
            if len(body) > self.max_bytes:
                await _reply(send, 413, "REQUEST_TOO_LARGE", self._too_large(f"more than {self.max_bytes:,} bytes"))
                return
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if replayed:
                return await receive()  # after the body: wait for the client to disconnect
            replayed = True
            return {"type": "http.request", "body": bytes(body), "more_body": False}

        await self.app(scope, replay, send)

    def _too_large(self, size: str) -> str:
        return (
            f"request body of {size} exceeds the limit of {self.max_bytes:,} bytes "
            f"(`idgenrec serve --max-request-bytes`); send fewer rows or shorter histories"
        )


async def _reply(send: Send, status: int, code: str, message: str) -> None:
    body = json.dumps({"error_code": code, "message": message}).encode()
    await send({
        "type": "http.response.start",
        "status": status,
        "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()), (b"connection", b"close")],
    })
    await send({"type": "http.response.body", "body": body})


def scoring_app(model_uri: str, max_request_bytes: int = MAX_REQUEST_BYTES) -> RequestSizeLimit:
    """MLflow's scoring app for ``model_uri`` (loaded now), behind the size limit."""
    from mlflow.pyfunc import scoring_server

    model = scoring_server.load_model_with_mlflow_config(model_uri)
    return RequestSizeLimit(scoring_server.init(model), max_request_bytes)


def serve(model_uri: str, host: str = "127.0.0.1", port: int = 5001, max_request_bytes: int = MAX_REQUEST_BYTES) -> None:
    """Load the model and answer ``/invocations``, ``/ping`` and ``/version`` until interrupted."""
    import uvicorn

    if host not in LOOPBACK:
        log.warning(
            "serving on %s: this server has no authentication; put an authenticating reverse proxy "
            "in front of it (docs/operations.md, 'Before it leaves the loopback address')", host,
        )
    uvicorn.run(scoring_app(model_uri, max_request_bytes), host=host, port=port, workers=1, log_level="info")
