"""Scheduled retraining on a worker host: a process work pool and deployments bound to it.

    python -m flows.deploy --pool idgenrec                  # pool (created if missing) + daily 03:00 UTC retraining
    python -m flows.deploy --pool idgenrec --add-items new_items.tsv   # and the hourly catalogue refresh
    prefect worker start --pool idgenrec                    # on the worker host: runs what the pool is given

Unlike ``python -m flows.serve`` (the serving process runs the flow itself), this only registers
the deployments with the Prefect server and exits; a worker polling the pool starts each run as
a subprocess on its own host, in ``--source`` (the folder holding ``flows/``, as that host sees
it, or a git URL the worker clones), with the worker's Python. The pool runs one flow run at a
time (runs share artifacts/, the DVC lock and the champion). docs/operations.md has the setup.
"""

from __future__ import annotations

import argparse
from uuid import UUID

from prefect import Flow, get_client
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.exceptions import ObjectNotFound
from prefect.utilities.asyncutils import run_coro_as_sync
from prefect.workers.process import ProcessWorker

from flows.add_items import add_new_items
from flows.retrain import PROJECT_ROOT, retrain
from flows.serve import ADD_ITEMS, DEPLOYMENT, RETRAIN, ADD_ITEMS_DEPLOYMENT

POOL = "idgenrec"


def ensure_process_pool(name: str = POOL, concurrency_limit: int | None = 1) -> bool:
    """Create process work pool ``name`` unless it exists (what ``prefect work-pool create NAME --type
    process`` does, with the pool's run limit); True when it was created."""

    async def create() -> bool:
        async with get_client() as client:
            try:
                await client.read_work_pool(name)
                return False
            except ObjectNotFound:
                await client.create_work_pool(WorkPoolCreate(
                    name=name, type=ProcessWorker.type, concurrency_limit=concurrency_limit,
                    base_job_template=ProcessWorker.get_default_base_job_template(),
                    description="IDGenRec retraining and catalogue refresh; start a worker with `prefect worker start --pool "
                                f"{name}`",
                ))
                return True

    return run_coro_as_sync(create())


def deploy_to_pool(
    flow: Flow, name: str, pool: str, cron: str, timezone: str, parameters: dict, paused: bool = False,
    source: str | None = None, description: str = "", tags: list[str] | None = None,
) -> UUID:
    """Deployment ``flow.name/name`` on ``pool``: a cron schedule, its code at ``source`` (a path on
    the worker host or a git URL; default: this checkout), one run at a time."""
    entrypoint = f"flows/{flow.fn.__module__.rsplit('.', 1)[-1]}.py:{flow.fn.__name__}"
    deployable = flow.from_source(source=source or str(PROJECT_ROOT), entrypoint=entrypoint)
    return deployable.deploy(
        name=name, work_pool_name=pool, build=False, push=False, schedule=CronSchedule(cron=cron, timezone=timezone),
        paused=paused, parameters=parameters, description=description, tags=tags, concurrency_limit=1,
        print_next_steps=False,
    )


def deploy_retraining(
    pool: str = POOL, cron: str = "0 3 * * *", timezone: str = "UTC", params_path: str = "params.yaml",
    paused: bool = False, root: str | None = None, source: str | None = None,
) -> UUID:
    """``idgenrec-retrain/scheduled-retrain`` on ``pool`` (the same flow, schedule and parameters as flows.serve)."""
    parameters = {"params_path": params_path, **({"root": root} if root else {})}
    return deploy_to_pool(retrain, DEPLOYMENT, pool, cron, timezone, parameters, paused, source, **RETRAIN)


def deploy_add_items(
    items: str, pool: str = POOL, cron: str = "0 * * * *", timezone: str = "UTC", params_path: str = "params.yaml",
    paused: bool = False, root: str | None = None, source: str | None = None,
) -> UUID:
    """``idgenrec-add-items/scheduled-add-items`` on ``pool``: the file's new items join the champion."""
    parameters = {"items": items, "params_path": params_path, **({"root": root} if root else {})}
    return deploy_to_pool(add_new_items, ADD_ITEMS_DEPLOYMENT, pool, cron, timezone, parameters, paused, source, **ADD_ITEMS)


def main() -> None:
    parser = argparse.ArgumentParser(description="Deploy the retraining flow to a process work pool (a worker host runs it).")
    parser.add_argument("--pool", default=POOL, help=f"process work pool, created if missing (default: {POOL})")
    parser.add_argument("--cron", default="0 3 * * *", help="cron schedule of retraining (default: daily 03:00)")
    parser.add_argument("--timezone", default="UTC", help="time zone the cron expression is read in")
    parser.add_argument("--params-path", default="params.yaml", help="params file of scheduled runs")
    parser.add_argument("--paused", action="store_true", help="create the schedule paused (resume it in the UI)")
    parser.add_argument("--root", help="project the worker retrains (default: the one holding the flow's code)")
    parser.add_argument("--source", help="the flow's code as the worker host sees it: a folder or a git URL (default: this checkout)")
    parser.add_argument("--add-items", metavar="TSV", help="also deploy the catalogue refresh of this file's new items")
    parser.add_argument("--add-items-cron", default="0 * * * *", help="its schedule (default: hourly)")
    args = parser.parse_args()
    if ensure_process_pool(args.pool):
        print(f"created process work pool {args.pool!r} (one flow run at a time)")
    deployed = [deploy_retraining(args.pool, args.cron, args.timezone, args.params_path, args.paused, args.root, args.source)]
    if args.add_items:
        deployed.append(deploy_add_items(args.add_items, args.pool, args.add_items_cron, args.timezone, args.params_path,
                                         args.paused, args.root, args.source))
    print(f"deployed {len(deployed)} deployment(s) to pool {args.pool!r}; on the worker host: prefect worker start --pool {args.pool}")


if __name__ == "__main__":
    main()
