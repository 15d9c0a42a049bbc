"""Wall time of the default pipeline, stage by stage (each stage forced, in DAG order).

    python -m benchmarks.pipeline_times --out benchmarks/results/pipeline-ml-100k

Runs `dvc repro --force --single-item STAGE` for every stage of dvc.yaml in order, so the
total is what a fresh `dvc repro` costs on this machine once the data is fetched. The
machine's CPU model and dense matmul peaks are written beside the times: 2-core machines
differ (the same code's pipeline has taken 1.5x longer on one than on another), so a time
means little without them.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import torch
import yaml

from idgenrec.atomic import atomic_write, write_json

from benchmarks.common import machine, matmul_peaks, output_path, render_peaks


def stage_order(dvc_yaml: Path) -> list[str]:
    """Stages in the order dvc.yaml lists them (written in dependency order)."""
    return list(yaml.safe_load(dvc_yaml.read_text())["stages"])


def upstream(dvc_yaml: Path, stage: str) -> set[str]:
    """``stage`` and every stage whose outputs it depends on, directly or not (dvc.yaml's deps and outs)."""
    stages = yaml.safe_load(dvc_yaml.read_text())["stages"]
    producer = {}
    for name, spec in stages.items():
        for out in [*spec.get("outs", []), *spec.get("metrics", [])]:
            producer[next(iter(out)) if isinstance(out, dict) else out] = name
    found, todo = set(), [stage]
    while todo:
        name = todo.pop()
        if name not in found:
            found.add(name)
            todo += [producer[dep] for dep in stages[name].get("deps", []) if dep in producer]
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/pipeline-ml-100k"))
    parser.add_argument("--skip", nargs="*", default=[], help="Stages not to time (e.g. register).")
    args = parser.parse_args()
    dvc = str(Path(sys.executable).with_name("dvc"))
    params = yaml.safe_load(Path("params.yaml").read_text())
    architecture, ranking = params["backbone"]["architecture"], params["training"]["ranking"]
    setting = machine() | {"peak_flops": matmul_peaks()}
    print(f"matmul peak at {setting['threads']} threads: {render_peaks(setting['peak_flops'])}", flush=True)
    rows = []
    for stage in stage_order(Path("dvc.yaml")):
        if stage in args.skip:
            continue
        start = time.perf_counter()
        result = subprocess.run([dvc, "repro", "--force", "--single-item", stage], capture_output=True, text=True, env=os.environ)
        seconds = time.perf_counter() - start
        if result.returncode != 0:
            raise SystemExit(f"stage {stage} failed:\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}")
        rows.append({"stage": stage, "seconds": round(seconds, 1)})
        print(f"{stage:12s} {seconds:7.1f} s", flush=True)
    total = sum(r["seconds"] for r in rows)
    # Prepared data -> evaluated model: the stages `evaluate` needs after `prepare` (not the
    # baselines beside them, nor registration after).
    path = upstream(Path("dvc.yaml"), "evaluate") - {"prepare"}
    to_model = sum(r["seconds"] for r in rows if r["stage"] in path)
    load = os.getloadavg()
    write_json(output_path(args.out, ".json"),
               {"stages": rows, "total_seconds": round(total, 1), "prepared_to_evaluated_seconds": round(to_model, 1),
                "prepared_to_evaluated_stages": sorted(path), "load_average_at_end": load, "machine": setting,
                "architecture": architecture, "ranking": ranking})
    lines = [f"## Pipeline wall time by stage (params.yaml, {architecture} recommender ranking by {ranking}, ML-100k)", "",
             "| stage | seconds |", "|---|---|", *[f"| {r['stage']} | {r['seconds']:.0f} |" for r in rows],
             f"| **total** | **{total:.0f}** ({total / 60:.1f} min) |",
             f"| prepared data -> evaluated model ({', '.join(r['stage'] for r in rows if r['stage'] in path)}) "
             f"| **{to_model:.0f}** ({to_model / 60:.1f} min) |", "",
             f"Load average at the end: {', '.join(f'{x:.1f}' for x in load)} (other work on the machine inflates these).", "",
             f"Measured matmul peak at {setting['threads']} threads: {render_peaks(setting['peak_flops'])} "
             "(`benchmarks.common.matmul_peaks`).", ""]
    with atomic_write(output_path(args.out, ".md")) as handle:
        handle.write("\n".join(lines))
    print(json.dumps({"total_seconds": total}))


if __name__ == "__main__":
    main()
