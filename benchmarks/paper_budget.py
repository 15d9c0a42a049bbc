"""A profile's model in a fixed wall-clock budget: probe the costs, then scale the schedule to fit.

A booked machine (a GPU for a few minutes, a nightly slot) rarely holds the paper's
3 rounds of (1 ID epoch + 10 recommender epochs). This keeps the profile's model and
settings and scales every phase of its schedule by one factor, chosen so the run ends
inside the budget. The results JSON (written by ``quality.py``) records the schedule that
ran, so the numbers are those of the profile's model trained as far as the budget allowed.

1. Probe: a short ``quality.py`` run on a small prepared dataset, same model and settings,
   measures warm-up, ID generation, recommender and ID-phase samples, and decoding per user.
2. Main: ``quality.py`` on the target dataset with the schedule scaled by the factor that
   fits what is left of the budget (costs scaled by the two datasets' sizes, with margins).

    python -m benchmarks.paper_budget --params profiles/paper-offline.yaml \
        --probe-prepared artifacts/prepared --prepared PREPARED_BEAUTY --budget-s 480 \
        --set warmup.epochs=3 --out benchmarks/results/paper-beauty-budget
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import time
from pathlib import Path

import yaml

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import write_json
from idgenrec.data.dataset import SequenceDataset
from idgenrec.recommender.samples import training_samples

from benchmarks.common import output_path

# Probe schedule: enough steps to time each phase past its start-up, short enough to leave the budget.
PROBE_RECOMMENDER_EPOCHS, PROBE_ID_EPOCHS = 0.1, 0.005
PROBE_SCHEDULE = json.dumps([{"phase": "recommender", "epochs": PROBE_RECOMMENDER_EPOCHS, "learning_rate": 0.001},
                             {"phase": "ids", "epochs": PROBE_ID_EPOCHS, "learning_rate": 0.0001}])
PROBE_SELECTION_USERS, PROBE_EVAL_USERS = 50, 100
# Margin on costs carried from the probe dataset to the target (longer IDs in prompts and texts).
# The probe's warm-up time includes building the model, which already overstates the per-item rate.
STEP_MARGIN, FIXED_SETUP_S = 1.5, 45.0


def training_samples_per_epoch(dataset: SequenceDataset) -> int:
    """Samples in one recommender epoch, as training builds them (the history length does not change the count)."""
    return len(training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], history_length=1))


def run_quality(prepared: Path, params: Path, overrides: list[str], workdir: Path, out: Path, kind: str, seed: int,
                timeout_s: float) -> dict:
    command = [sys.executable, "-m", "benchmarks.quality", "--prepared", str(prepared), "--params", str(params),
               "--kinds", kind, "--baselines", "--seeds", str(seed), "--workdir", str(workdir), "--out", str(out)]
    for override in overrides:
        command += ["--set", override]
    print("$ " + " ".join(command), flush=True)
    try:
        subprocess.run(command, check=True, timeout=timeout_s)
    except subprocess.CalledProcessError as err:
        sys.exit(f"quality.py on {prepared} failed (exit status {err.returncode}); its output is above")
    except subprocess.TimeoutExpired:
        sys.exit(f"quality.py on {prepared} ran past the budget ({timeout_s:.0f} s left when it started)")
    return json.loads(output_path(out, ".json").read_text())["runs"][0]


def probe_costs(run: dict, dataset: SequenceDataset, warmup_epochs: float) -> dict[str, float]:
    """Seconds per unit of work, from the probe run's timings and per-phase records."""
    samples = training_samples_per_epoch(dataset)
    recommender, ids_phase = run["records"][0], run["records"][-1]
    items = run["id_quality"]["items"]
    return {
        "recommender_s_per_sample": recommender["seconds"] / (PROBE_RECOMMENDER_EPOCHS * samples),
        "id_phase_s_per_sample": (ids_phase["seconds"] - ids_phase["ids_seconds"]) / (PROBE_ID_EPOCHS * samples),
        "ids_s_per_item": run["timings"]["ids_s"] / items,
        "warmup_s_per_item_epoch": run["timings"]["warmup_s"] / (items * warmup_epochs),
        "decode_s_per_user": run["timings"]["evaluate_s"] / (4 * PROBE_EVAL_USERS),  # 2 splits x 2 settings
    }


def scale_schedule(schedule: list[dict], costs: dict, samples: int, items: int, seconds: float,
                   warmup_epochs: float, selection_users: int, eval_users: int) -> tuple[float, float]:
    """The largest factor (at most 1, 2 significant digits) on every phase's epochs that fits ``seconds``; and its estimate.

    ``samples`` and ``items``: the target dataset's training samples per epoch and catalogue size.
    """
    id_phases = sum(p["phase"] == "ids" for p in schedule)
    fixed = (FIXED_SETUP_S
             + warmup_epochs * items * costs["warmup_s_per_item_epoch"]
             + (1 + id_phases) * items * costs["ids_s_per_item"] * STEP_MARGIN
             + 4 * eval_users * costs["decode_s_per_user"] * STEP_MARGIN)
    validation = selection_users * costs["decode_s_per_user"] * STEP_MARGIN
    per_unit = sum(  # seconds of the schedule at factor 1
        p["epochs"] * samples * costs["recommender_s_per_sample" if p["phase"] == "recommender" else "id_phase_s_per_sample"]
        for p in schedule) * STEP_MARGIN
    # each recommender phase validates at every epoch end and at its end: at least once per phase
    phases = sum(p["phase"] == "recommender" for p in schedule)
    factor = (seconds - fixed - phases * validation) / (per_unit + validation * sum(
        p["epochs"] for p in schedule if p["phase"] == "recommender"))
    if factor <= 0:
        return 0.0, fixed
    factor = min(factor, 1.0)  # never more than the profile itself
    digits = 1 - math.floor(math.log10(factor))  # 2 significant digits, rounded down so the estimate stays inside
    factor = math.floor(factor * 10**digits) / 10**digits
    estimate = fixed + per_unit * factor + validation * (phases + sum(
        math.floor(p["epochs"] * factor) for p in schedule if p["phase"] == "recommender"))
    return factor, estimate


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("profiles/paper-offline.yaml"))
    parser.add_argument("--probe-prepared", type=Path, required=True, help="Small prepared dataset for the probe.")
    parser.add_argument("--prepared", type=Path, required=True, help="The prepared dataset to report.")
    parser.add_argument("--budget-s", type=float, required=True, help="Wall-clock seconds for probe and main run.")
    parser.add_argument("--kind", default="learned")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--selection-users", type=int, default=1000)
    parser.add_argument("--eval-users", type=int, default=2000)
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                        help="Passed to both runs (e.g. warmup.epochs=3).")
    parser.add_argument("--workdir", type=Path, default=Path("bench/tmp/paper-budget"))
    parser.add_argument("--out", type=Path, required=True, help="Main run's results, without extension.")
    args = parser.parse_args()
    deadline = time.monotonic() + args.budget_s

    raw = params_with_overrides(args.params, args.overrides)  # the same override rules as the runs themselves
    warmup_epochs = float(raw.get("warmup", {}).get("epochs", 10.0))
    probe_out = args.out.with_name(args.out.name + "-probe")
    probe = run_quality(
        args.probe_prepared, args.params,
        [*args.overrides, f"training.schedule={PROBE_SCHEDULE}", f"training.selection_users={PROBE_SELECTION_USERS}",
         f"evaluation.sample_users={PROBE_EVAL_USERS}"],
        args.workdir / "probe", probe_out, args.kind, args.seed, timeout_s=deadline - time.monotonic())
    costs = probe_costs(probe, SequenceDataset.load(args.probe_prepared), warmup_epochs)

    target = SequenceDataset.load(args.prepared)
    samples, items = training_samples_per_epoch(target), target.num_items
    schedule = raw["training"]["schedule"]
    left = deadline - time.monotonic()
    factor, estimate = scale_schedule(schedule, costs, samples, items, left, warmup_epochs, args.selection_users,
                                      args.eval_users)
    plan = {"budget_s": args.budget_s, "left_after_probe_s": round(left, 1), "factor": factor,
            "estimate_s": round(estimate, 1), "costs": costs, "profile_schedule": schedule,
            "training_samples_per_epoch": samples, "items": items}
    print(json.dumps(plan, indent=1), flush=True)
    write_json(args.out.with_name(args.out.name + "-plan.json"), plan)
    if factor < 0.01:
        sys.exit(f"the budget leaves no time to train: {left:.0f} s left after the probe, fixed costs ~{estimate:.0f} s")
    scaled = [{**phase, "epochs": round(phase["epochs"] * factor, 4)} for phase in schedule]
    run_quality(
        args.prepared, args.params,
        [*args.overrides, f"training.schedule={json.dumps(scaled)}", f"training.selection_users={args.selection_users}",
         f"evaluation.sample_users={args.eval_users}"],
        args.workdir / "main", args.out, args.kind, args.seed, timeout_s=max(deadline - time.monotonic(), 1))


if __name__ == "__main__":
    main()
