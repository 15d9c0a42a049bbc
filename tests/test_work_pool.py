"""Scheduled retraining on a worker host: a process work pool, the retraining deployed to it, and a
worker (`prefect worker start --pool ...`, as on the worker host) that runs a scheduled run of it,
all on a temporary Prefect server."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
from datetime import datetime, timezone
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # `flows` is a top-level folder of the project, not an installed package

from flows.deploy import deploy_retraining, ensure_process_pool  # noqa: E402
from flows.serve import DEPLOYMENT  # noqa: E402

pytestmark = pytest.mark.flow

PREFECT = str(Path(sys.executable).with_name("prefect"))


@pytest.fixture(scope="module")
def prefect_server():
    from prefect.testing.utilities import prefect_test_harness

    with prefect_test_harness(server_startup_timeout=120):
        yield


def _client_call(method: str, *args, **kwargs):
    from prefect import get_client

    async def call():
        async with get_client() as client:
            return await getattr(client, method)(*args, **kwargs)

    return asyncio.run(call())


def test_retraining_is_deployed_to_a_process_pool_that_runs_one_at_a_time(prefect_server):
    assert ensure_process_pool("retrain-hosts") is True
    assert ensure_process_pool("retrain-hosts") is False  # idempotent: a redeploy keeps the pool
    pool = _client_call("read_work_pool", "retrain-hosts")
    assert pool.type == "process" and pool.concurrency_limit == 1

    deployment_id = deploy_retraining("retrain-hosts", cron="0 3 * * *", timezone="Europe/Paris", root="/srv/idgenrec")
    stored = _client_call("read_deployment", deployment_id)
    assert stored.name == DEPLOYMENT and stored.work_pool_name == "retrain-hosts"
    assert stored.entrypoint == "flows/retrain.py:retrain"
    # the worker runs the flow from this checkout's folder (a path on the worker host)
    assert stored.pull_steps == [{"prefect.deployments.steps.set_working_directory": {"directory": str(ROOT)}}]
    [schedule] = stored.schedules
    assert schedule.active and schedule.schedule.cron == "0 3 * * *" and schedule.schedule.timezone == "Europe/Paris"
    assert stored.parameters == {"params_path": "params.yaml", "root": "/srv/idgenrec"}
    assert stored.global_concurrency_limit is not None and stored.global_concurrency_limit.limit == 1


@pytest.mark.slow
def test_a_worker_runs_a_scheduled_retraining(prefect_server, tmp_path, monkeypatch):
    from prefect.settings import PREFECT_API_URL
    from prefect.states import Scheduled

    from test_flows import dvc_project

    monkeypatch.delenv("IDGENREC_TRACKING_URI", raising=False)
    root = dvc_project(tmp_path / "project")
    ensure_process_pool("workers")
    deployment_id = deploy_retraining("workers", root=str(root))
    # What the scheduler does at the cron time: a run of the deployment, due now.
    flow_run = _client_call("create_flow_run_from_deployment", deployment_id,
                            state=Scheduled(scheduled_time=datetime.now(timezone.utc)))

    # The worker host: poll the pool once, run what is due as a subprocess, wait for it (bounded).
    env = {**os.environ, "PREFECT_API_URL": PREFECT_API_URL.value()}
    worker = subprocess.run([PREFECT, "worker", "start", "--pool", "workers", "--run-once", "--limit", "1"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=1200)

    run = _client_call("read_flow_run", flow_run.id)
    assert run.state.is_completed(), f"{run.state}\n{worker.stdout[-4000:]}\n{worker.stderr[-4000:]}"
    assert run.deployment_id == deployment_id
    assert (root / "metrics/registry.json").exists()  # retrained, evaluated and registered in that project
    assert (root / "dvc.lock").exists()
