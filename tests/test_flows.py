"""The Prefect retraining flow under `prefect_test_harness`: end to end on the tiny project in a
temporary DVC repository (stages gated and versioned by DVC, model registered and promoted, task
runs named for their stages), the cron deployment, and task logic through `task.fn`."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import subprocess
import sys
from pathlib import Path

import mlflow
import pytest
import yaml
from mlflow import MlflowClient

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `flows` is a top-level folder of the project, not an installed package

from flows import retrain as retrain_module  # noqa: E402
from flows.retrain import UP_TO_DATE, retrain  # noqa: E402
from idgenrec.config import Params  # noqa: E402
from idgenrec.layout import LAYOUT  # noqa: E402
from idgenrec.stages import MODEL_STAGES  # noqa: E402
from test_tracking import new_store, write_tiny_project  # noqa: E402

pytestmark = pytest.mark.flow

DVC = str(Path(sys.executable).with_name("dvc"))
# The task runs of a retraining run that runs every stage, in order: one per stage and one per phase.
TASK_RUNS = [
    "prepare", "validate", "warmup", "ids", "train", "round-00-recommender", "round-01-ids", "round-02-recommender",
    "training-curve", "evaluate", "register",
]


@pytest.fixture(scope="session")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def dvc_project(root: Path) -> Path:
    """The tiny project as a DVC repository with this checkout's dvc.yaml, code and a local remote."""
    write_tiny_project(root)
    new_store(root)
    shutil.copytree(ROOT / "idgenrec", root / "idgenrec", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copyfile(ROOT / "dvc.yaml", root / "dvc.yaml")
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=root, check=True)
    subprocess.run([DVC, "remote", "add", "-d", "-q", "store", str(root / "dvc-remote")], cwd=root, check=True)
    return root


def test_the_code_a_training_run_resumes_on_is_the_code_dvc_retrains_it_for():
    from idgenrec.recommender.alternating import PACKAGE_ROOT, TRAINING_CODE

    train = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]["train"]
    code_deps = {dep for dep in train["deps"] if dep.startswith("idgenrec/")}
    assert code_deps == {f"idgenrec/{part}" for part in TRAINING_CODE}
    assert all((PACKAGE_ROOT / part).exists() for part in TRAINING_CODE)


def test_timings_inside_stage_outputs_are_kept_out_of_their_hashes():
    """A rerun that reproduces a model must hash the same: its seconds are not part of it."""
    from idgenrec.baselines.sasrec import TIMINGS_FILE
    from idgenrec.recommender.alternating import TIMINGS

    stages = yaml.safe_load((ROOT / "dvc.yaml").read_text(encoding="utf-8"))["stages"]
    timing_files = [f"{next(iter(stages['train']['outs'][0]))}/{TIMINGS}", f"{stages['sasrec']['outs'][0]}/{TIMINGS_FILE}"]
    ignored = subprocess.run([DVC, "check-ignore", *timing_files], cwd=ROOT, capture_output=True, text=True)
    assert ignored.stdout.split() == timing_files, ignored.stderr


@pytest.mark.slow
def test_retrain_flow_runs_registers_and_versions_like_dvc_repro(prefect_server, tmp_path, monkeypatch):
    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    root = dvc_project(tmp_path / "project")

    state = retrain(root=str(root), return_state=True)
    record = state.result()
    assert record["model_version"] == "1" and record["promotion"]["promoted"]
    # Prefect: a task run per stage and per phase, named for it, in the flow's order
    assert task_runs(state) == [(name, "Completed") for name in TASK_RUNS] + [("dvc-push", "Completed")]
    assert json.loads((root / "metrics/registry.json").read_text()) == record

    # DVC: every flow stage recorded in dvc.lock and up to date; outputs pushed to the remote
    lock = yaml.safe_load((root / "dvc.lock").read_text())
    assert set(MODEL_STAGES) <= set(lock["stages"])
    status = subprocess.run([DVC, "status", *MODEL_STAGES, "--json"], cwd=root, capture_output=True, text=True, check=True)
    assert json.loads(status.stdout) == {}
    assert any((root / "dvc-remote").rglob("*"))
    assert (root / "artifacts/model/rounds/ids-02.tsv").exists()

    # Prefect: the library's progress lines are in the run's logs (what the UI shows), not only on a terminal,
    # and only while the flow runs (after it, a library line would make Prefect warn of a missing flow run)
    assert any("phase 1/" in line for line in stored_log_lines("phase", logger="idgenrec"))
    prefect_handlers = logging.getLogger("prefect.extra").handlers
    assert prefect_handlers and not set(prefect_handlers) & set(logging.getLogger("idgenrec").handlers)

    # MLflow: the run, named for what it trained, its rounds, the champion
    mlflow.set_tracking_uri(record["tracking_uri"])
    client = MlflowClient()
    run = client.get_run(record["run_id"])
    assert run.data.tags["idgenrec.trigger"] == "prefect" and run.info.run_name == "tiny-learned-seed0"
    assert client.get_model_version_by_alias("idgenrec-tiny", "champion").version in (1, "1")

    # A second scheduled run with nothing changed: every stage skipped (shown as such), nothing re-registered.
    lock_before = (root / "dvc.lock").read_text()
    state = retrain(root=str(root), return_state=True)
    assert state.result() == record
    assert task_runs(state) == [(stage, UP_TO_DATE) for stage in MODEL_STAGES] + [("dvc-push", "Completed")]
    assert (root / "dvc.lock").read_text() == lock_before
    assert len(client.search_model_versions("name = 'idgenrec-tiny'")) == 1

    # A changed knob re-runs only what depends on it: a new margin re-registers, nothing retrains.
    params = (root / "params.yaml").read_text().replace("margin: 0.0", "margin: 0.5")
    (root / "params.yaml").write_text(params)
    second = retrain(root=str(root), run_name="margin-0.5")
    assert second["model_version"] == "2" and not second["promotion"]["promoted"]
    assert client.get_run(second["run_id"]).info.run_name == "margin-0.5"
    assert "does not beat champion v1" in second["promotion"]["reason"]
    lock_after = yaml.safe_load((root / "dvc.lock").read_text())
    assert lock_after["stages"]["train"] == lock["stages"]["train"]
    mlflow.set_tracking_uri(None)


def task_runs(flow_state) -> list[tuple[str, str]]:
    """(name, state name) of each task run of the flow run that ended in ``flow_state``, in start order."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

    async def read():
        async with get_client() as client:
            return await client.read_task_runs(
                flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[flow_state.state_details.flow_run_id]))
            )

    runs = sorted(asyncio.run(read()), key=lambda run: run.start_time or run.expected_start_time)
    return [(run.name, run.state.name) for run in runs]


def stored_log_lines(text: str, logger: str | None = None) -> list[str]:
    """Messages stored by the Prefect API (what the UI shows) that contain ``text``, of ``logger`` if given."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import LogFilter, LogFilterTextSearch
    from prefect.logging.handlers import APILogHandler

    async def read():
        await APILogHandler.aflush()  # logs reach the API in background batches
        async with get_client() as client:
            return await client.read_logs(LogFilter(text=LogFilterTextSearch(query=text)))

    return [log.message for log in asyncio.run(read()) if logger is None or log.name == logger]


def stored_deployment(deployment):
    """Apply a deployment to the API and read it back as the server stores it."""
    from prefect.client.orchestration import get_client

    deployment_id = deployment.apply()

    async def read():
        async with get_client() as client:
            return await client.read_deployment(deployment_id)

    return asyncio.run(read())


def test_cron_deployment_is_scheduled(prefect_server):
    from flows.serve import DEPLOYMENT, scheduled_deployment

    stored = stored_deployment(scheduled_deployment(cron="0 3 * * *", timezone="Europe/Paris"))
    assert stored.name == DEPLOYMENT and stored.entrypoint.endswith("retrain.py:retrain")
    [schedule] = stored.schedules
    assert schedule.active and schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "Europe/Paris"
    assert stored.parameters == {"params_path": "params.yaml"}


def test_task_logic_through_fn(tmp_path):
    from idgenrec.recommender.alternating import TrainingState

    (tmp_path / "dvc.yaml").write_text("stages:\n  prepare:\n    cmd: echo\n")
    assert retrain_module.declared_stages(tmp_path) == {"prepare"}
    assert retrain_module.stage_is_current(tmp_path, "register") is False  # undeclared stages always run

    files = LAYOUT.under(tmp_path)
    files.workdir.mkdir(parents=True)
    TrainingState(fingerprint="x", completed_phases=1, best_score=0.5, best_phase=0, best_epoch=2,
                  records=[{"phase_index": 0, "epoch": 1, "train_loss": 2.0}, {"phase_index": 0, "epoch": 2, "train_loss": 1.0}]).save(files.workdir)
    assert retrain_module.finish_training.fn(Params(), files) == {
        "best_phase": 0, "best_epoch": 2, "best_score": 0.5, "similarity_weight": None}
    assert [r["step"] for r in json.loads(files.training_curve.read_text())] == [1, 2]

    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=tmp_path, check=True)
    assert "no default DVC remote" in retrain_module.push_outputs.fn(tmp_path)


def test_retries_are_for_hiccups_not_mistakes(prefect_server):
    from prefect import flow, task

    calls = []

    @task(retries=2, retry_delay_seconds=0, retry_condition_fn=retrain_module.transient)
    def failing(error: Exception) -> None:
        calls.append(error)
        raise error

    @flow
    def attempt(error: Exception) -> int:
        calls.clear()
        failing(error, return_state=True)
        return len(calls)

    assert attempt(RuntimeError("dvc lock busy")) == 3
    assert attempt(FileNotFoundError("metrics/model.json")) == 1


def test_flow_refuses_a_folder_without_dvc_unless_told(tmp_path):
    with pytest.raises(ValueError, match="not a DVC repository"):
        retrain.fn(root=str(tmp_path))


@pytest.mark.slow
def test_add_items_flow_grows_the_champion_registers_and_promotes_it(prefect_server, tmp_path, monkeypatch):
    """The catalogue refresh: champion v1 + a new item -> v2 (grown_from 1), promoted; a rerun adds nothing."""
    import pandas as pd

    from flows.add_items import add_new_items
    from idgenrec.config import load_params
    from idgenrec.registry import GROWN_FROM_TAG, record_pipeline_run, rollback
    from idgenrec.tracking import configure_tracking
    from test_tracking import trained_tiny_project

    root = trained_tiny_project(tmp_path, monkeypatch)
    configure_tracking(root)
    assert record_pipeline_run(load_params(root / "params.yaml"), LAYOUT, root=root)["promotion"]["promoted"]
    # a wide margin: the tiny model's validation order can move when an item joins (the rule itself: test_registry)
    (root / "params.yaml").write_text((root / "params.yaml").read_text().replace("margin: 0.0", "margin: 1.0"))
    (root / "new.tsv").write_text("item_id\ttitle\ttext\n100\tbanana bread\ttitle: banana bread\n", encoding="utf-8")

    record = add_new_items(items="new.tsv", root=str(root))
    assert record["model_version"] == "2" and record["grown_from"] == "1" and record["promotion"]["promoted"]
    assert any("1 new items added to champion v1" in line for line in stored_log_lines("new items added"))
    mlflow.set_tracking_uri(record["tracking_uri"])
    client = MlflowClient()
    assert client.get_model_version("idgenrec-tiny", "2").tags[GROWN_FROM_TAG] == "1"
    assert client.get_run(record["run_id"]).data.tags["idgenrec.trigger"] == "prefect add-items"
    served = mlflow.pyfunc.load_model("models:/idgenrec-tiny@champion")
    answer = served.predict(pd.DataFrame({"history": [["1", "2"]], "k": [1]}), params={"candidates": ["100"]})
    assert answer.iloc[0]["item_ids"] == ["100"]

    assert add_new_items(items="new.tsv", root=str(root)) == {}  # the champion knows it now: no new version
    assert len(client.search_model_versions("name = 'idgenrec-tiny'")) == 2
    # Rolled back to v1, which lacks the item: the next scheduled run must not undo the rollback.
    rollback("idgenrec-tiny")
    assert add_new_items(items="new.tsv", root=str(root)) == {}
    assert any("already added to champion v1 as v2" in line for line in stored_log_lines("already added"))
    assert len(client.search_model_versions("name = 'idgenrec-tiny'")) == 2
    mlflow.set_tracking_uri(None)


def test_add_items_deployment_is_scheduled_hourly(prefect_server):
    from flows.serve import ADD_ITEMS_DEPLOYMENT, add_items_deployment

    stored = stored_deployment(add_items_deployment("new_items.tsv"))
    assert stored.name == ADD_ITEMS_DEPLOYMENT and stored.entrypoint.endswith("add_items.py:add_new_items")
    [schedule] = stored.schedules
    assert schedule.schedule.cron == "0 * * * *"
    assert stored.parameters == {"items": "new_items.tsv", "params_path": "params.yaml"}
