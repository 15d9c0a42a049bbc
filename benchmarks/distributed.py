"""Training throughput on one and several processes: the default recommender's optimisation steps on ML-100k.

Each setting runs the training loop's own step (``optimisation_step``: every process takes its
share of each batch and the gradients are summed, idgenrec/distributed.py) over the same global
batches (``training.batch_size`` windows of the default causal recommender, title IDs so no trained
generator is needed). Settings are run in turn, ``--rounds`` times, and the median round kept:

- 1 process with all the machine's threads (what `idgenrec train` does by default);
- N processes launched by torchrun (gloo on a CPU), the threads split between them;
- 1 process with one thread (the per-core reference).

Writes OUT.{json,md} and headline.json's ``scale.training`` (``--compare``: ``scale.processes_quality``). No
assertions: a benchmark reports.

    python -m benchmarks.distributed --prepared artifacts/prepared --steps 30 --rounds 3

``--compare`` instead tabulates finished training runs of the same params on different numbers
of processes and threads (their per-epoch records and final metrics), with the commands that
trained them: does a run on several processes reach one process's validation score?

    python -m benchmarks.distributed --compare "1 x 2" artifacts/model metrics/model.json \
        --compare "2 x 1" bench/ddp2 bench/ddp2-metrics.json --out benchmarks/results/distributed-quality-ml-100k
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import write_json
from benchmarks.common import RESULTS, machine, title_id_setup, write_report


def worker(args) -> None:
    """Time ``args.steps`` steps after two untimed ones; the first process writes the result to ``args.result``."""
    import random

    import torch

    from idgenrec import distributed
    from idgenrec.backbone.causal import build_causal
    from idgenrec.recommender.prompts import HISTORY_SEPARATOR
    from idgenrec.recommender.sequences import SequenceEncoder, training_windows
    from idgenrec.recommender.training import WindowBatches, make_optimizer, optimisation_step

    distributed.init_from_environment()
    ranks = distributed.current()
    params, dataset, tokenizer, table, _ = title_id_setup(args.params, args.prepared)
    config = params.training
    encoder = SequenceEncoder(tokenizer, table.token_ids(tokenizer), config.history_length)
    windows = training_windows([dataset.train_sequence(u) for u in range(dataset.num_users)], config.history_length,
                               config.window_stride)
    source = WindowBatches(encoder, windows, config)
    rng = random.Random(0)
    batches = []
    for batch in source.batches(range(source.num_samples), rng):
        batches.append(batch)
        if len(batches) == args.steps + 2:
            break
    separator = tokenizer(HISTORY_SEPARATOR.strip(), add_special_tokens=False)["input_ids"][0]
    model = build_causal(params.backbone, tokenizer, seed=0)
    optimizer, schedule = make_optimizer(model.parameters(), 1e-4, config, 10 * len(batches))
    model.train()
    device = torch.device("cpu")
    for batch in batches[:2]:
        optimisation_step(model, batch, optimizer, schedule, device, config)
    ranks.barrier()
    started = time.perf_counter()
    for batch in batches[2:]:
        optimisation_step(model, batch, optimizer, schedule, device, config)
    seconds = time.perf_counter() - started
    items = sum(int((b.labels == separator).sum()) for b in batches[2:])  # one separator ends each target item
    if ranks.main:
        write_json(args.result, {"processes": ranks.world, "threads": torch.get_num_threads(), "steps": args.steps,
                                 "seconds": seconds, "target_items": items, "batch_windows": config.batch_size})


def run_setting(args, processes: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory(prefix="idgenrec-distributed-") as folder:
        result = Path(folder) / "result.json"
        module = ["-m", "benchmarks.distributed", "--worker", "--result", str(result), "--params", str(args.params),
                  "--prepared", str(args.prepared), "--steps", str(args.steps)]
        if processes == 1:
            command = [sys.executable, *module]
        else:
            command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}", *module]
        subprocess.run(command, env={**os.environ, "OMP_NUM_THREADS": str(threads)}, check=True)
        return json.loads(result.read_text())


def render(payload: dict) -> str:
    env = payload["machine"]
    lines = ["# Training throughput on one and several processes", "",
             f"`{payload['command']}`; {env['cpu']}, {env['cpus']} cores, fp32, torch {env['torch']}, load average at "
             f"the end {env['load_average']}. The default causal recommender on ML-100k (title IDs), "
             f"{payload['batch_windows']} windows per global batch; median of {payload['rounds']} rounds of "
             f"{payload['steps']} steps.", "",
             "| processes x threads | s per step | target items/s | against 1 process |", "|---|---|---|---|"]
    for row in payload["settings"]:
        lines.append(f"| {row['processes']} x {row['threads']} | {row['seconds_per_step']:.3f} | "
                     f"{row['target_items_per_s']:.0f} | {row['speedup']:.2f}x |")
    return "\n".join(lines) + "\n"


def compare(runs: list[list[str]], out: Path, commands: list[str], headline: bool = True) -> None:
    """Tabulate finished runs: (label, training folder, metrics JSON) each; headline.json's
    ``scale.processes_quality`` gets each run's selected validation and test scores."""
    from idgenrec.recommender.alternating import TrainingState

    rows = []
    for label, folder, metrics_path in runs:
        state = TrainingState.load(Path(folder))
        if state is None:
            raise SystemExit(f"{folder}: no training state")
        metrics = json.loads(Path(metrics_path).read_text())
        rows.append({"label": label, "records": [{k: r[k] for k in ("phase", "phase_index", "epoch", "train_loss", "valid_ndcg@10")
                                                   if k in r} for r in state.records],
                     "selected": {"phase": state.best_phase, "epoch": state.best_epoch, "valid_ndcg@10": state.best_score},
                     "test": {k: metrics[k] for k in ("test/seen_included/ndcg@10", "test/seen_excluded/ndcg@10",
                                                      "test/seen_included/recall@10")}})
    payload = {"command": "python -m benchmarks.distributed " + shlex.join(sys.argv[1:]), "machine": machine(),
               "training_commands": commands, "runs": rows}
    lines = ["# The default profile on one and several processes (ML-100k)", "",
             f"{payload['machine']['cpu']}, fp32. Each run: the same params, generator and IDs; processes x threads "
             "per process as labelled. Per recommender epoch: train loss / valid N@10 (seen excluded).", "",
             "| processes x threads | " + " | ".join(f"phase {r['phase_index'] + 1} epoch {r['epoch']}" for r in rows[0]["records"]
                                                   if r["phase"] == "recommender") + " | selected valid N@10 | test N@10 | "
             "test N@10, seen excl. |",
             "|---|" + "---|" * (sum(r["phase"] == "recommender" for r in rows[0]["records"]) + 3)]
    for row in rows:
        cells = [f"{r['train_loss']:.4f} / {r['valid_ndcg@10']:.4f}" for r in row["records"] if r["phase"] == "recommender"]
        lines.append(f"| {row['label']} | " + " | ".join(cells) + f" | {row['selected']['valid_ndcg@10']:.4f} "
                     f"(phase {row['selected']['phase'] + 1} epoch {row['selected']['epoch']}) | "
                     f"{row['test']['test/seen_included/ndcg@10']:.4f} | {row['test']['test/seen_excluded/ndcg@10']:.4f} |")
    lines += ["", "Trained with:", "", *[f"- `{c}`" for c in commands]]
    write_report(out, payload, "\n".join(lines) + "\n")
    if headline:
        write_scale_headline("processes_quality", {
            "command": payload["command"], "source": f"{out}.json",
            "runs": [{"label": row["label"], "selected_valid_ndcg@10": row["selected"]["valid_ndcg@10"], **row["test"]}
                     for row in rows]})


def write_scale_headline(key: str, value: dict) -> None:
    """headline.json's ``scale[key]`` set to ``value``, the rest of the file kept."""
    path = RESULTS / "headline.json"
    whole = json.loads(path.read_text()) if path.exists() else {}
    write_json(path, {**whole, "scale": {**whole.get("scale", {}), key: value}})


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--steps", type=int, default=30, help="Timed steps per setting and round.")
    parser.add_argument("--rounds", type=int, default=3, help="Rounds over the settings (the median is kept).")
    parser.add_argument("--processes", type=int, default=2, help="Processes of the several-process setting.")
    parser.add_argument("--out", type=Path, default=RESULTS / "distributed")
    parser.add_argument("--no-headline", dest="headline", action="store_false", help="Leave headline.json alone.")
    parser.add_argument("--compare", nargs=3, action="append", metavar=("LABEL", "FOLDER", "METRICS"),
                        help="Tabulate a finished training run instead of timing steps (repeat per run).")
    parser.add_argument("--trained-with", action="append", default=[], help="A command that trained a compared run.")
    parser.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--result", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(args)
        return
    if args.compare:
        compare(args.compare, args.out, args.trained_with, args.headline)
        return
    cores = os.cpu_count() or 1
    settings = [(1, cores), (args.processes, max(1, cores // args.processes)), (1, 1)]
    runs: dict[tuple[int, int], list[dict]] = {s: [] for s in settings}
    for _ in range(args.rounds):
        for processes, threads in settings:
            runs[(processes, threads)].append(run_setting(args, processes, threads))
    rows = []
    for (processes, threads), results in runs.items():
        seconds = statistics.median(r["seconds"] / r["steps"] for r in results)
        items = results[0]["target_items"] / results[0]["steps"]
        rows.append({"processes": processes, "threads": threads, "seconds_per_step": seconds,
                     "target_items_per_s": items / seconds, "rounds_seconds_per_step": [r["seconds"] / r["steps"] for r in results]})
    for row in rows:
        row["speedup"] = row["target_items_per_s"] / rows[0]["target_items_per_s"]
    payload = {"command": " ".join(["python -m benchmarks.distributed", *sys.argv[1:]]), "machine": machine(),
               "steps": args.steps, "rounds": args.rounds, "batch_windows": results[0]["batch_windows"], "settings": rows}
    write_report(args.out, payload, render(payload))
    if args.headline:
        write_scale_headline("training", {
            "command": payload["command"], "machine": payload["machine"],
            "settings": [{k: row[k] for k in ("processes", "threads", "seconds_per_step", "target_items_per_s", "speedup")}
                         for row in rows]})


if __name__ == "__main__":
    main()
