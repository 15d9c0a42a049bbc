"""What the last recommender phase's length does, without retraining the phases before it.

A finished run of the default schedule (recommender, ID phase, recommender) keeps what the last
phase starts from: ``best/recommender`` is the first phase's model when that phase was selected
(the ID phase never updates the recommender), ``current/generator`` the generator after the ID
phase (the last phase never updates it) and ``rounds/ids-02.tsv`` the table the ID phase wrote
(title and random IDs skip the ID phase: their table is ``best/``'s). Every phase seeds its own
RNGs from (seed, phase index), so the library's own ``run_phase`` on that state with the same
length takes the same steps as the original run: a rerun at the recorded length reproduces the
recorded validation and loss to the last bit (the "identical" column; tail-ml-100k-check.md is
that check on the pipeline's run).

    python -m benchmarks.tail_probe --run artifacts/model learned 0 \\
        --run bench/w/ml-100k/model-learned-seed1 learned 1 --tails 0.38 0.1 --out benchmarks/results/tail-ml-100k

Each run is a folder, its ID kind and its seed (quality.py's ``model-KIND-seedS`` or the
pipeline's ``artifacts/model``); its params are ``--params`` with that kind and seed, as quality.py
sets them. Writes ``OUT.json`` and ``OUT.md``; the probe phases run in scratch folders and the
runs are only read. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import yaml

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.data.dataset import SequenceDataset
from idgenrec.progress import configure_logging
from idgenrec.recommender import alternating
from idgenrec.tracking import code_version

from benchmarks.common import output_path, with_seed

LAST_PHASE = 2  # the schedule's third phase: the recommender phase after the ID phase


def finished_run(run: Path) -> tuple[alternating.TrainingState, list[dict]]:
    """``run``'s state as its last phase began, and that phase's records; ValueError where ``run`` cannot tell."""
    state = alternating.TrainingState.load(run)
    if state is None:
        raise ValueError(f"{run}: no {alternating.STATE}")
    if state.completed_phases != LAST_PHASE + 1:
        raise ValueError(f"{run}: {state.completed_phases} phases finished, the probe needs a finished 3-phase schedule")
    if state.best_phase != 0:
        raise ValueError(f"{run}: phase {state.best_phase + 1} was selected, so best/ does not hold the first phase's model")
    recorded = [r for r in state.records if r["phase_index"] == LAST_PHASE]
    state.records = [r for r in state.records if r["phase_index"] < LAST_PHASE]
    state.completed_phases = LAST_PHASE
    return state, recorded


def graft(run: Path, kind: str, state: alternating.TrainingState, scratch: Path) -> None:
    """``scratch`` set up as ``run`` was when its last phase began (``state``: :func:`finished_run`'s)."""
    table = run / alternating.ROUNDS / "ids-02.tsv" if kind == "learned" else run / alternating.BEST / "item_ids.tsv"
    current = scratch / alternating.CURRENT
    shutil.copytree(run / alternating.BEST / "recommender", current / "recommender")
    shutil.copytree(run / alternating.CURRENT / "generator", current / "generator")
    shutil.copy(table, current / "item_ids.tsv")
    shutil.copytree(run / alternating.BEST, scratch / alternating.BEST)
    state.save(scratch)


def probe(run: Path, kind: str, seed: int, raw: dict, tails: list[float], dataset: SequenceDataset) -> dict:
    result = {"run": str(run), "kind": kind, "seed": seed, "probes": []}
    try:
        state, recorded = finished_run(run)
    except ValueError as err:
        return {**result, "skipped": str(err)}
    result["first_phase_best"] = state.best_score
    result["recorded"] = [{"epoch": r["epoch"], "valid_ndcg@10": r["valid_ndcg@10"], "train_loss": r["train_loss"]} for r in recorded]
    for tail in tails:
        raw["training"]["schedule"][LAST_PHASE]["epochs"] = tail
        params = with_seed(raw, kind, seed)
        with tempfile.TemporaryDirectory(prefix="tail-probe-") as tmp:
            scratch = Path(tmp)
            graft(run, kind, state, scratch)
            started = time.perf_counter()
            records = alternating.run_phase(params, dataset, scratch, LAST_PHASE)
            seconds = time.perf_counter() - started
        last = records[-1]
        result["probes"].append({
            "epochs": tail, "seconds": round(seconds, 1), "valid_ndcg@10": last["valid_ndcg@10"], "train_loss": last["train_loss"],
            "selected_phase": LAST_PHASE + 1 if last["valid_ndcg@10"] > state.best_score else 1,
        })
        print(f"{run} tail {tail}: valid {last['valid_ndcg@10']:.4f} (first phase {state.best_score:.4f}), {seconds:.0f} s", flush=True)
    return result


def render_markdown(results: dict) -> str:
    lines = [
        "## The last recommender phase's length, from each run's own checkpoints (ml-100k)", "",
        "Validation NDCG@10 in the selection setting. The probe reruns only the last phase (after the ID phase) "
        "from the state the run's earlier phases left; the first phase is the run's own, unchanged. "
        "Selected: the phase whose checkpoint the run would keep (1: the first phase's). Identical: the probe's "
        "validation and training loss equal the recorded ones to the last bit (a probe at the recorded length must say yes).", "",
        "| run | kind | seed | first phase (best) | recorded last phase | probed length (epochs) | probed last phase "
        "| identical to the recorded phase | seconds | selected |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        if "skipped" in run:
            lines.append(f"| {run['run']} | {run['kind']} | {run['seed']} | skipped: {run['skipped']} | | | | | | |")
            continue
        recorded = " / ".join(f"{r['valid_ndcg@10']:.4f}" for r in run["recorded"])
        final = run["recorded"][-1] if run["recorded"] else {}
        for probe_result in run["probes"]:
            same = all(probe_result[k] == final.get(k) for k in ("valid_ndcg@10", "train_loss"))
            lines.append(
                f"| {run['run']} | {run['kind']} | {run['seed']} | {run['first_phase_best']:.4f} | {recorded} | "
                f"{probe_result['epochs']} | {probe_result['valid_ndcg@10']:.4f} | {'yes' if same else ''} | "
                f"{probe_result['seconds']:.0f} | {probe_result['selected_phase']} |"
            )
    code = results["code"] or {}
    at = f" at {code['commit'][:7]}" + (", library modified" if code.get("library_modified") else "") if code else ""
    return "\n".join([*lines, "", f"`{results['command']}`{at}", ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", nargs=3, action="append", metavar=("FOLDER", "KIND", "SEED"),
                        help="A finished run: its folder, ID kind and seed (repeat for several).")
    parser.add_argument("--tails", nargs="+", type=float, help="Last-phase lengths to probe, in epochs.")
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension.")
    parser.add_argument("--render", action="store_true", help="Measure nothing: rewrite OUT.md from OUT.json.")
    args = parser.parse_args()
    if args.render:
        write_markdown(json.loads(output_path(args.out, ".json").read_text()), args.out)
        return
    if not args.run or not args.tails:
        parser.error("--run and --tails are required to measure")
    configure_logging()

    raw = yaml.safe_load(args.params.read_text())
    if len(raw["training"]["schedule"]) != LAST_PHASE + 1:
        parser.error(f"{args.params}: the probe needs a 3-phase schedule (recommender, ids, recommender)")
    dataset = SequenceDataset.load(args.prepared)
    runs = [probe(Path(folder), kind, int(seed), raw, args.tails, dataset) for folder, kind, seed in args.run]
    command = "python -m benchmarks.tail_probe " + " ".join(f"--run {' '.join(r)}" for r in args.run)
    command += " --tails " + " ".join(str(t) for t in args.tails) + f" --out {args.out}"
    results = {"command": command, "code": code_version(Path(__file__).resolve().parents[1]), "params": str(args.params), "runs": runs}
    write_json(output_path(args.out, ".json"), results)
    write_markdown(results, args.out)
    print(render_markdown(results))


def write_markdown(results: dict, out: Path) -> None:
    with atomic_write(output_path(out, ".md")) as handle:
        handle.write(render_markdown(results))


if __name__ == "__main__":
    main()
