"""The last-item similarity weight for a finished quality.py run: chosen as training ends, then the test protocol.

``alternating.train`` ends by giving the selected model the weight of
``training.similarity_weights`` that scores best on validation
(:func:`idgenrec.recommender.alternating.choose_similarity_weight`). This applies that same last
step to the models of a quality.py results file whose runs were trained with one weight, evaluates
them again, and writes the file as quality.py would have with these weights: each IDGenRec run
gets its new metrics, the weight kept and every weight's validation score, and keeps the metrics
it had as ``metrics_single_weight``. Its ``command`` is the quality.py command that reproduces it
from scratch.

    python -m benchmarks.similarity --run benchmarks/results/quality-beauty-title-items-3ep-seed0.json \\
        --workdir bench/beauty-long --weights 0 1 3 10 30 [--min-gain 0.02] [--label 3ep --out OTHER]
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.data.dataset import SequenceDataset
from idgenrec.progress import configure_logging
from idgenrec.tracking import code_version

from benchmarks.common import id_kind, machine, model_folder, output_path, with_seed
from benchmarks.quality import markdown, summarise


def rechosen(run: dict, raw: dict, dataset: SequenceDataset, workdir: Path, reevaluate: bool = False) -> dict:
    """``run`` (an IDGenRec run of a file whose params, with the similarity settings, are ``raw``) with its
    model's similarity weight chosen and its test metrics redone."""
    from idgenrec.backbone import pick_device
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel

    params = with_seed(raw, id_kind(run["model"]), run["seed"])
    folder = model_folder(workdir / dataset.name, params.ids.kind, run["seed"])
    state = alternating.choose_similarity_weight(params, dataset, folder)
    if run.get("similarity_weight") == state.similarity_weight and not reevaluate:  # the model this file evaluated
        metrics = run["metrics"]
    else:
        model = IDGenRecModel.load(folder / alternating.BEST, device=pick_device())
        metrics = evaluate_protocol(model, dataset, params.evaluation.ks, params.evaluation.sample_users)
    return {**run, "metrics": metrics, "metrics_single_weight": run.get("metrics_single_weight", run["metrics"]),
            "similarity_weight": state.similarity_weight, "valid_by_similarity_weight": state.valid_by_similarity_weight}


def reproducing_command(command: str, weights: list[float], min_gain: float, label: str, out: Path) -> str:
    """``command`` (quality.py's) with these similarity settings, ``label`` and ``out``."""
    command = re.sub(r' --set "?training\.similarity_weights=\[[^\]]*\]"?| --set training\.similarity_min_gain=\S+'
                     r'| --label \S+| --out \S+', "", command)
    weights_text = ", ".join(f"{w:g}" for w in weights)
    return (f'{command} --set "training.similarity_weights=[{weights_text}]" --set training.similarity_min_gain={min_gain:g}'
            + (f" --label {label}" if label else "") + f" --out {out}")


def relabelled(model: str, label: str) -> str:
    """``idgenrec-KIND[-old label]`` as ``idgenrec-KIND[-label]``."""
    kind = id_kind(model)
    return f"idgenrec-{kind}" + (f"-{label}" if label else "")


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--run", type=Path, required=True, help="A quality.py results file (.json).")
    parser.add_argument("--workdir", type=Path, required=True, help="The --workdir its runs were trained in.")
    parser.add_argument("--weights", type=float, nargs="+", required=True, help="training.similarity_weights to choose from.")
    parser.add_argument("--min-gain", type=float, default=0.02, help="training.similarity_min_gain.")
    parser.add_argument("--reevaluate", action="store_true",
                        help="Evaluate a model again even where its weight is the one the file has (ranking code changed).")
    parser.add_argument("--label", default=None, help="Label of the runs' model names (default: theirs).")
    parser.add_argument("--out", type=Path, help="Output path without extension (default: --run, rewritten in place).")
    args = parser.parse_args(argv)
    configure_logging()
    source = json.loads(args.run.read_text(encoding="utf-8"))
    dataset = SequenceDataset.load(source["prepared"])
    params = json.loads(json.dumps(source["params"]))
    params.setdefault("training", {}).update(similarity_weights=args.weights, similarity_min_gain=args.min_gain)
    runs = [rechosen(run, params, dataset, args.workdir, args.reevaluate) if id_kind(run["model"]) else run
            for run in source["runs"]]
    label = args.label if args.label is not None else (re.search(r"--label (\S+)", source["command"]) or [None, ""])[1]
    runs = [{**run, "model": relabelled(run["model"], label)} if id_kind(run["model"]) else run for run in runs]
    summary = summarise(runs)
    out = args.out or args.run.with_name(args.run.name.removesuffix(".json"))
    write_json(output_path(out, ".json"), {
        **source, "command": reproducing_command(source["command"], args.weights, args.min_gain, label, out), "params": params, "summary": summary,
        "runs": runs, "similarity": {"command": " ".join(["python -m benchmarks.similarity", *(argv or sys.argv[1:])]),
                                     "code": code_version(Path(__file__).resolve().parent.parent), "machine": machine()},
    })
    with atomic_write(output_path(out, ".md")) as handle:
        handle.write(markdown(summary, f"{dataset.name} ({', '.join(source['overrides']) or 'params as given'})"))
    for run in runs:
        if "similarity_weight" in run:
            print(f"{run['model']} seed {run['seed']}: weight {run['similarity_weight']} "
                  f"(valid {run['valid_by_similarity_weight']}); test ndcg@10 "
                  f"{run['metrics_single_weight']['test/seen_included/ndcg@10']:.4f} -> {run['metrics']['test/seen_included/ndcg@10']:.4f}")


if __name__ == "__main__":
    main()
