"""Scheduled retraining: serve the retrain flow as a Prefect deployment with a cron schedule.

    python -m flows.serve                      # daily at 03:00 UTC
    python -m flows.serve --cron "0 */6 * * *" --timezone Europe/Paris
    python -m flows.serve --add-items new_items.tsv   # and the catalogue refresh, hourly (flows/add_items.py)

The deployment ``idgenrec-retrain/scheduled-retrain`` then shows in the Prefect UI with its
schedule; trigger a run now with ``prefect deployment run idgenrec-retrain/scheduled-retrain``.
With ``--add-items``, ``idgenrec-add-items/scheduled-add-items`` too: new items of that file join
the champion between retrainings.
This process executes the runs (no work pool needed) and must stay up. With
``PREFECT_API_URL`` unset, Prefect starts a temporary local server for as long as it runs.
To have the runs executed on another host instead, deploy to a work pool: flows/deploy.py.
"""

from __future__ import annotations

import argparse

from prefect import serve
from prefect.client.schemas.schedules import CronSchedule
from prefect.deployments.runner import RunnerDeployment

from flows.add_items import add_new_items
from flows.retrain import retrain

DEPLOYMENT = "scheduled-retrain"
ADD_ITEMS_DEPLOYMENT = "scheduled-add-items"
# What each deployment says of itself, here and on a work pool (flows/deploy.py).
RETRAIN = {
    "description": "Retrain IDGenRec: validate data, generate IDs, alternating rounds, evaluate, register, promote.",
    "tags": ["idgenrec", "retraining"],
}
ADD_ITEMS = {
    "description": "Add the new items of a file to the champion without training; register and promote if it kept its score.",
    "tags": ["idgenrec", "new-items"],
}


def scheduled_deployment(
    cron: str = "0 3 * * *",
    timezone: str = "UTC",
    params_path: str = "params.yaml",
    paused: bool = False,
    root: str | None = None,
) -> RunnerDeployment:
    return _on_cron(retrain, DEPLOYMENT, cron, timezone, paused, {"params_path": params_path}, root, **RETRAIN)


def add_items_deployment(
    items: str,
    cron: str = "0 * * * *",
    timezone: str = "UTC",
    params_path: str = "params.yaml",
    paused: bool = False,
    root: str | None = None,
) -> RunnerDeployment:
    return _on_cron(
        add_new_items, ADD_ITEMS_DEPLOYMENT, cron, timezone, paused, {"items": items, "params_path": params_path}, root, **ADD_ITEMS,
    )


def _on_cron(flow, name, cron, timezone, paused, parameters, root, description, tags) -> RunnerDeployment:
    return flow.to_deployment(
        name=name,
        schedule=CronSchedule(cron=cron, timezone=timezone),
        paused=paused,
        parameters={**parameters, **({"root": root} if root else {})},
        description=description,
        tags=tags,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description="Serve the retraining flow on a cron schedule.")
    parser.add_argument("--cron", default="0 3 * * *", help="cron schedule of retraining (default: daily 03:00)")
    parser.add_argument("--timezone", default="UTC", help="time zone the cron expression is read in")
    parser.add_argument("--params-path", default="params.yaml", help="params file of scheduled runs")
    parser.add_argument("--paused", action="store_true", help="create the schedule paused (resume it in the UI)")
    parser.add_argument("--root", help="project to retrain (default: the one holding this flows/ folder)")
    parser.add_argument("--add-items", metavar="TSV", help="also serve the catalogue refresh of this file's new items")
    parser.add_argument("--add-items-cron", default="0 * * * *", help="its schedule (default: hourly)")
    args = parser.parse_args()
    deployments = [scheduled_deployment(args.cron, args.timezone, args.params_path, args.paused, args.root)]
    if args.add_items:
        deployments.append(add_items_deployment(
            args.add_items, args.add_items_cron, args.timezone, args.params_path, args.paused, args.root,
        ))
    # limit=1: one run at a time (runs share artifacts/, the DVC lock and the champion).
    serve(*deployments, limit=1)


if __name__ == "__main__":
    main()
