"""The registered pyfunc: loads and recommends, rejects bad requests clearly, and answers over REST
(`mlflow models serve`, started and stopped here)."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import mlflow
import pandas as pd
import pytest
import torch
from mlflow.exceptions import MlflowException

from idgenrec.serving import log_recommender_model, parse_requests
from idgenrec.tracking import configure_tracking, ensure_experiment
from test_tracking import new_store

pytestmark = pytest.mark.flow

WORDS = ["apple pie", "banana split", "cherry tart", "date cake", "fig roll", "grape jam", "kiwi tea", "lemon curd"]
ITEM_IDS = [str(i + 1) for i in range(len(WORDS))]
NAME = "idgenrec-tiny"


def save_tiny_model(folder: Path) -> None:
    """An untrained tiny IDGenRec model: enough to exercise loading, decoding and the interface."""
    from idgenrec.backbone import build_seq2seq, build_tokenizer, vocabulary_corpus
    from idgenrec.config import BackboneConfig
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.model import DecodingSettings, IDGenRecModel

    dataset = SequenceDataset("tiny", ITEM_IDS, WORDS, [f"title: {w}" for w in WORDS], ["u0"], [[0, 1, 2, 3, 4]])
    config = BackboneConfig(profile="tiny", hidden_size=32, encoder_layers=1, decoder_layers=1)
    tokenizer = build_tokenizer(config, vocabulary_corpus(dataset))
    torch.manual_seed(0)
    recommender = build_seq2seq(config, tokenizer, "recommender", seed=0)
    table = ItemIdTable(item_ids=ITEM_IDS, textual_ids=WORDS)
    IDGenRecModel(recommender, tokenizer, table, DecodingSettings(3, 4, bf16=False)).save(folder)


@pytest.fixture(scope="module")
def champion(tmp_path_factory) -> str:
    """models:/idgenrec-tiny@champion in a temporary store; yields the store's URI."""
    from idgenrec import registry

    root = tmp_path_factory.mktemp("serving")
    save_tiny_model(root / "model")
    with pytest.MonkeyPatch.context() as patch:
        patch.delenv("IDGENREC_TRACKING_URI", raising=False)
        patch.chdir(root)  # MLflow resolves its default artifact root against the cwd
        new_store(root)
        uri = configure_tracking(root)
        with mlflow.start_run(experiment_id=ensure_experiment("tiny", root)) as run:
            info = log_recommender_model(root / "model", [["1", "2", "3"]], len(WORDS))
        version = registry.register_version(
            info.model_uri, NAME, run_id=run.info.run_id, selection_metric="valid/ndcg@10", selection_score=0.5, dataset_digest="x"
        )
        assert registry.promote(NAME, margin=0.0, version=version).promoted
        yield uri
    mlflow.set_tracking_uri(None)


def test_requests_are_validated_with_clear_messages():
    index = {item: i for i, item in enumerate(ITEM_IDS)}
    [request] = parse_requests(pd.DataFrame({"history": [["1", "2"]], "k": [3]}), index)
    assert request.history == [0, 1] and request.k == 3
    assert parse_requests(pd.DataFrame({"history": [["8"]]}), index)[0].k == 8  # default 10, capped by the catalogue
    bad = [
        (pd.DataFrame({"history": [["1", "99"]]}), r"row 0: unknown item id\(s\) \['99'\]"),
        (pd.DataFrame({"history": [[]]}), "history` is empty"),
        (pd.DataFrame({"history": ["1 2"]}), "must be a list of item ids"),
        (pd.DataFrame({"items": [["1"]]}), "missing column `history`"),
        (pd.DataFrame({"history": [["1"]], "k": [0]}), "`k` must be between 1 and 8"),
        (pd.DataFrame({"history": [["1"]], "k": [2.5]}), "`k` must be an integer"),
    ]
    for frame, message in bad:
        with pytest.raises(MlflowException, match=message) as err:
            parse_requests(frame, index)
        assert err.value.error_code == "INVALID_PARAMETER_VALUE"


def test_champion_pyfunc_loads_and_recommends(champion):
    model = mlflow.pyfunc.load_model(f"models:/{NAME}@champion")
    out = model.predict(pd.DataFrame({"history": [["1", "2", "3"], ["5"]], "k": [3, 2]}))
    assert list(out.columns) == ["item_ids", "textual_ids", "scores"]
    assert [len(x) for x in out["item_ids"]] == [3, 2]
    for items, ids, scores in zip(out["item_ids"], out["textual_ids"], out["scores"]):
        assert set(items) <= set(ITEM_IDS) and len(set(items)) == len(items)
        assert ids == [WORDS[ITEM_IDS.index(i)] for i in items]
        assert scores == sorted(scores, reverse=True)
    seen_excluded = model.predict(pd.DataFrame({"history": [["1", "2", "3"]]}), params={"exclude_seen": True})
    assert not {"1", "2", "3"} & set(seen_excluded["item_ids"][0])
    with pytest.raises(MlflowException, match="unknown item id"):
        model.predict(pd.DataFrame({"history": [["nope"]]}))
    shelf = model.predict(pd.DataFrame({"history": [["1", "2"], ["5"]], "k": [3, 3]}), params={"candidates": ["4", "6", "7"]})
    assert [sorted(items) for items in shelf["item_ids"]] == [["4", "6", "7"]] * 2  # only the candidates, all of them
    with pytest.raises(MlflowException, match=r"`candidates`: unknown item id\(s\) \['99'\]"):
        model.predict(pd.DataFrame({"history": [["1"]]}), params={"candidates": ["4", "99"]})


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _post(url: str, payload) -> tuple[int, dict]:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    request = urllib.request.Request(url, data=body, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as err:
        return err.code, json.loads(err.read())


@pytest.mark.slow
def test_rest_server_answers_and_rejects_bad_requests(champion, tmp_path):
    port = _free_port()
    env = {**os.environ, "MLFLOW_TRACKING_URI": champion, "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    log = (tmp_path / "serve.log").open("w")
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "models", "serve", "-m", f"models:/{NAME}@champion",
         "--env-manager", "local", "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            assert server.poll() is None, (tmp_path / "serve.log").read_text()[-3000:]
            try:
                with urllib.request.urlopen(f"{url}/ping", timeout=2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "server did not start in 90 s"
                time.sleep(0.5)

        status, body = _post(f"{url}/invocations", {"dataframe_records": [{"history": ["1", "2", "3"], "k": 3}]})
        assert status == 200, body
        [prediction] = body["predictions"]
        assert len(prediction["item_ids"]) == 3 and len(prediction["textual_ids"]) == 3 and len(prediction["scores"]) == 3

        request = {"dataframe_records": [{"history": ["1", "2"], "k": 2}], "params": {"candidates": ["5", "8"]}}
        status, body = _post(f"{url}/invocations", request)
        assert status == 200, body
        assert sorted(body["predictions"][0]["item_ids"]) == ["5", "8"]

        status, body = _post(f"{url}/invocations", {"dataframe_records": [{"history": ["1", "4242"]}]})
        assert status == 400 and body["error_code"] == "INVALID_PARAMETER_VALUE"
        assert "unknown item id(s) ['4242']" in body["message"]

        status, body = _post(f"{url}/invocations", b"{not json")
        assert status == 400
        assert server.poll() is None  # still serving after bad requests
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # the process group this test started (mlflow -> uvicorn)
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait()
        log.close()
