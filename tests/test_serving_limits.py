"""The served model under hostile input: request bodies bounded before they are decoded (413), rows,
history length and candidates bounded by the pyfunc (400), fuzzed requests answered with 4xx and
never 5xx, all with every non-loopback connection refused."""

from __future__ import annotations

import asyncio
import http.client
import json
import socket
import time
import urllib.error
import urllib.request

import pandas as pd
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from mlflow.exceptions import MlflowException

from idgenrec.serving.pyfunc import MAX_HISTORY, MAX_ROWS, parse_candidates, parse_requests
from idgenrec.serving.server import RequestSizeLimit, scoring_app
from network_guard import offline, serving
from test_serving import ITEM_IDS, NAME, champion  # noqa: F401  (champion: the registered tiny model)

pytestmark = pytest.mark.flow

INDEX = {item: i for i, item in enumerate(ITEM_IDS)}


def test_pyfunc_bounds_rows_history_and_candidates():
    with pytest.raises(MlflowException, match=f"at most {MAX_HISTORY} are accepted"):
        parse_requests(pd.DataFrame({"history": [["1"] * (MAX_HISTORY + 1)]}), INDEX)
    with pytest.raises(MlflowException, match=f"{MAX_ROWS + 1} rows in one request, at most {MAX_ROWS}"):
        parse_requests(pd.DataFrame({"history": [["1"]] * (MAX_ROWS + 1)}), INDEX)
    with pytest.raises(MlflowException, match="more than the model's 8 items"):
        parse_candidates(["1"] * 9, INDEX)
    assert len(parse_requests(pd.DataFrame({"history": [["1"] * MAX_HISTORY] * MAX_ROWS}), INDEX)) == MAX_ROWS


async def _call(app, body_chunks: list[bytes], headers: list[tuple[bytes, bytes]]) -> tuple[int, bytes, bytes]:
    """(status, body, what the inner app received) for one request through ``app``."""
    messages = [{"type": "http.request", "body": chunk, "more_body": i < len(body_chunks) - 1} for i, chunk in enumerate(body_chunks)]
    sent: list[dict] = []

    async def receive():
        return messages.pop(0) if messages else {"type": "http.disconnect"}

    async def send(message):
        sent.append(message)

    scope = {"type": "http", "method": "POST", "path": "/invocations", "headers": headers}
    await app(scope, receive, send)
    return sent[0]["status"], b"".join(m.get("body", b"") for m in sent[1:]), b""


def test_size_limit_refuses_large_bodies_before_the_app_sees_them():
    seen: list[bytes] = []

    async def inner(scope, receive, send):
        message = await receive()
        seen.append(message["body"])
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b"ok"})

    app = RequestSizeLimit(inner, max_bytes=10)
    status, body, _ = asyncio.run(_call(app, [b"x" * 11], [(b"content-length", b"11")]))
    assert status == 413 and b"exceeds the limit of 10 bytes" in body and not seen
    status, body, _ = asyncio.run(_call(app, [b"12345", b"67890", b"1"], []))  # chunked: no length declared
    assert status == 413 and not seen
    status, body, _ = asyncio.run(_call(app, [b"12345", b"67890"], []))
    assert status == 200 and seen == [b"1234567890"]
    status, body, _ = asyncio.run(_call(app, [b""], [(b"content-length", b"ten")]))
    assert status == 400


def _post(url: str, body: bytes, content_type: str = "application/json", timeout: float = 60) -> tuple[int, dict | str]:
    request = urllib.request.Request(f"{url}/invocations", data=body, headers={"Content-Type": content_type})
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        text = err.read().decode("utf-8", "replace")
        try:
            return err.code, json.loads(text)
        except json.JSONDecodeError:
            return err.code, text


@pytest.fixture(scope="module")
def server(champion):  # noqa: F811
    """`idgenrec serve`'s app for the tiny champion on loopback, with the network guard on."""
    with offline() as attempts:
        with serving(scoring_app(f"models:/{NAME}@champion", max_request_bytes=200_000)) as url:
            yield url
        assert attempts == [], attempts


@pytest.mark.slow
def test_served_model_bounds_requests(server):
    status, body = _post(server, json.dumps({"dataframe_records": [{"history": ["1", "2"], "k": 2}]}).encode())
    assert status == 200 and len(body["predictions"][0]["item_ids"]) == 2

    # The request: 10 MB, a 2-million-item history. Refused by its declared size, unread.
    huge = json.dumps({"dataframe_records": [{"history": ["1"] * 2_000_000}]}).encode()
    start = time.monotonic()
    try:
        status, body = _post(server, huge)
    except (ConnectionError, urllib.error.URLError):  # the server may close before the client has sent everything
        status, body = 413, {"error_code": "REQUEST_TOO_LARGE"}
    assert status == 413 and body["error_code"] == "REQUEST_TOO_LARGE", body
    assert time.monotonic() - start < 10

    # Chunked (no Content-Length): refused once the limit is passed.
    host, port = server.removeprefix("http://").split(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=30)
    connection.request("POST", "/invocations", body=iter([b"[" + b" " * 150_000, b" " * 150_000 + b"]"]),
                       headers={"Content-Type": "application/json"}, encode_chunked=True)
    assert connection.getresponse().status == 413
    connection.close()

    # Within the byte limit, over the pyfunc's bounds: 400 with the bound named.
    status, body = _post(server, json.dumps({"dataframe_records": [{"history": ["1"] * (MAX_HISTORY + 1)}]}).encode())
    assert status == 400 and f"at most {MAX_HISTORY}" in body["message"]
    status, body = _post(server, json.dumps({"dataframe_records": [{"history": ["1"]}] * (MAX_ROWS + 1)}).encode())
    assert status == 400 and f"at most {MAX_ROWS}" in body["message"]


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-10**20, 10**20) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4),
    max_leaves=12,
)
item = st.sampled_from(ITEM_IDS) | st.text(max_size=6) | st.integers(-5, 20)
record = st.fixed_dictionaries(
    {"history": st.lists(item, max_size=5) | json_values},
    optional={"k": st.integers(-3, 120) | json_values, "extra": json_values},
)
requests = st.one_of(
    st.fixed_dictionaries(
        {"dataframe_records": st.lists(record, max_size=3)},
        optional={"params": st.fixed_dictionaries({}, optional={
            "exclude_seen": st.booleans() | json_values, "candidates": st.lists(item, max_size=4) | json_values,
        })},
    ).map(lambda payload: json.dumps(payload).encode()),
    json_values.map(lambda payload: json.dumps(payload).encode()),
    st.binary(max_size=200),
)


@pytest.mark.slow
@given(body=requests, content_type=st.sampled_from(["application/json", "text/csv", "application/json; charset=latin-1"]))
@settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_fuzzed_requests_get_answers_never_server_errors(server, body, content_type):
    status, answer = _post(server, body, content_type)
    assert status == 200 or 400 <= status < 500, (status, body[:300], answer)


def test_network_guard_refuses_everything_but_loopback():
    with offline() as attempts:
        with pytest.raises(OSError):
            urllib.request.urlopen("http://huggingface.co/", timeout=5)
        with socket.socket() as sock, pytest.raises(OSError):
            sock.connect(("10.255.255.1", 80))
    assert attempts == ["resolve huggingface.co", "connect ('10.255.255.1', 80)"]


def test_serve_command_names_a_model_it_cannot_load(tmp_path):
    from typer.testing import CliRunner

    from idgenrec.cli import app

    result = CliRunner().invoke(app, ["serve", "--model", str(tmp_path / "no-model")])
    assert result.exit_code == 1 and "cannot serve" in result.output and "no-model" in result.output
