"""Quality table: IDGenRec (each ID kind) against Pop and SASRec, same protocol, several seeds.

Runs the library's own stages (warm-up, IDs, alternating training, evaluation) for every
(ID kind, seed), and the baselines for every seed, on a prepared dataset. Writes a JSON of
every run plus mean / std per model, and a markdown table.

    python -m benchmarks.quality --kinds learned title random --seeds 0 1 2 --baselines pop sasrec \
        --out benchmarks/results/quality-ml-100k-NAME

``--set key=value`` overrides params (dotted keys, YAML values), e.g.
``--set training.history_length=20 --set backbone.encoder_layers=1``.

An interrupted run (a time limit that struck during the final evaluation, say) is finished by
running the same command again: the warmed-up generator is reused, the IDs come out the same,
and training resumes after its last finished phase (only with the same settings, inputs and code).
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate_protocol
from idgenrec.progress import configure_logging
from idgenrec.tracking import code_version

from benchmarks.common import (BASELINES, KINDS, PREPARED, machine, model_folder, output_path, params_with_overrides,
                               prepared, warmed_up_generator, with_seed)

REPORTED = [f"{split}/{setting}/{metric}" for split in ("test", "valid") for setting in ("seen_included", "seen_excluded")
            for metric in ("recall@5", "recall@10", "ndcg@5", "ndcg@10")]


def run_idgenrec(dataset: SequenceDataset, params: Params, workdir: Path) -> dict:
    from idgenrec.backbone import load_seq2seq
    from idgenrec.ids import make_id_table
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.backbone import pick_device
    from idgenrec.backbone.seq2seq import training_precision

    timings = {}
    started = time.perf_counter()
    generator_dir = warmed_up_generator(dataset, params, workdir)
    timings["warmup_s"] = time.perf_counter() - started
    started = time.perf_counter()
    generator, tokenizer = load_seq2seq(generator_dir)
    table, quality = make_id_table(params.ids.kind, dataset, generator.to(pick_device()), tokenizer, params.ids)
    table_path = workdir / f"ids-{params.ids.kind}-seed{params.training.seed}.tsv"
    table.save(table_path, tokenizer)
    timings["ids_s"] = time.perf_counter() - started
    started = time.perf_counter()
    run_dir = model_folder(workdir, params.ids.kind, params.training.seed)
    state = alternating.train(params, dataset, generator_dir, table_path, run_dir)
    timings["train_s"] = time.perf_counter() - started
    started = time.perf_counter()
    model = IDGenRecModel.load(run_dir / alternating.BEST, device=pick_device())
    metrics = evaluate_protocol(model, dataset, params.evaluation.ks, params.evaluation.sample_users)
    timings["evaluate_s"] = time.perf_counter() - started
    first_phase = [r for r in state.records if r["phase_index"] == 0 and "train_loss" in r]
    return {
        "metrics": metrics,
        "timings": timings,
        "precision": training_precision(pick_device(), params.training.bf16),  # bf16 only where the hardware has kernels
        "id_quality": {k: v for k, v in quality.items() if isinstance(v, (int, float))},
        "best_phase": state.best_phase,
        "best_epoch": state.best_epoch,
        "best_valid": state.best_score,
        # training.similarity_weights' validation scores on the selected checkpoint, and the weight kept
        **({"similarity_weight": state.similarity_weight, "valid_by_similarity_weight": state.valid_by_similarity_weight}
           if state.valid_by_similarity_weight is not None else {}),
        "first_round_best_valid": max(
            (r.get(f"valid_{params.evaluation.selection_metric}", float("-inf")) for r in first_phase), default=None
        ),
        "records": state.records,
    }


def run_baseline(name: str, dataset: SequenceDataset, params: Params) -> dict:
    started = time.perf_counter()
    if name == "pop":
        from idgenrec.models.popularity import PopularityRecommender

        model = PopularityRecommender.fit(dataset)
    elif name == "sasrec":
        from idgenrec.models.sasrec import SASRecRecommender

        model = SASRecRecommender.fit(
            dataset, params.sasrec, ks=params.evaluation.ks, selection_metric=params.evaluation.selection_metric,
            exclude_seen=params.evaluation.exclude_seen, progress=True,
        )
    else:
        raise ValueError(f"unknown baseline {name!r}")
    trained = time.perf_counter() - started
    metrics = evaluate_protocol(model, dataset, params.evaluation.ks, params.evaluation.sample_users)
    run = {"metrics": metrics, "timings": {"train_s": trained}}
    if name == "sasrec":  # how far training went: with a capped max_epochs, whether the cap cut it short
        run["training"] = {"epochs": len(model.log.epochs), "best_epoch": model.log.best_epoch,
                           "max_epochs": params.sasrec.max_epochs, "patience": params.sasrec.patience}
    return run


def summarise(runs: list[dict]) -> dict[str, dict[str, float]]:
    summary: dict[str, dict[str, float]] = {}
    for model in sorted({r["model"] for r in runs}):
        rows = [r["metrics"] for r in runs if r["model"] == model]
        summary[model] = {"runs": len(rows)}
        for key in REPORTED:
            values = [row[key] for row in rows]
            summary[model][f"{key}/mean"] = statistics.fmean(values)
            summary[model][f"{key}/std"] = statistics.stdev(values) if len(values) > 1 else 0.0
    return summary


def markdown(summary: dict, title: str) -> str:
    cols = ["recall@5", "recall@10", "ndcg@5", "ndcg@10"]
    lines = [f"## {title}", "", "Test split, mean ± std over seeds (runs). Nothing excluded / seen items excluded.", "",
             "| model | runs | " + " | ".join(f"{c}" for c in cols) + " | N@10 seen excluded |",
             "|---|---|" + "---|" * (len(cols) + 1)]
    for model, row in summary.items():
        cells = [f"{row[f'test/seen_included/{c}/mean']:.4f} ± {row[f'test/seen_included/{c}/std']:.4f}" for c in cols]
        excluded = f"{row['test/seen_excluded/ndcg@10/mean']:.4f} ± {row['test/seen_excluded/ndcg@10/std']:.4f}"
        lines.append(f"| {model} | {int(row['runs'])} | " + " | ".join(cells) + f" | {excluded} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dataset", choices=sorted(PREPARED), default="ml-100k",
                        help="Which prepared splits to use when --prepared is not given (Beauty is prepared on first use).")
    parser.add_argument("--prepared", type=Path, help="A prepared dataset folder (default: the --dataset's).")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--kinds", nargs="*", default=list(KINDS), choices=KINDS,
                        help="ID kinds to train (default: all three; the bare flag: none, to run baselines only).")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    parser.add_argument("--baselines", nargs="*", default=list(BASELINES), choices=BASELINES,
                        help="Baselines to run for every seed (default: pop sasrec; the bare flag: none).")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--label", default="", help="Suffix for model names in the table (e.g. a sweep setting).")
    parser.add_argument("--workdir", type=Path, default=Path("bench/tmp"))
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension (.json and .md are written).")
    args = parser.parse_args(argv)
    configure_logging()  # long runs log their epochs and progress (idgenrec.progress), even to a file

    import torch

    args.prepared = args.prepared or prepared(args.dataset)
    dataset = SequenceDataset.load(args.prepared)
    raw = params_with_overrides(args.params, args.overrides)
    runs: list[dict] = []
    out_json = output_path(args.out, ".json")
    code = code_version(Path(__file__).resolve().parent.parent)  # before any result is written

    def save() -> None:
        summary = summarise(runs)
        write_json(out_json, {
            "dataset": dataset.name, "prepared": str(args.prepared), "overrides": args.overrides, "command": " ".join(["python -m benchmarks.quality", *sys.argv[1:]]),
            "params": raw,  # what the runs used (params file plus overrides): defaults change, files stay
            "code": code,
            "machine": machine(),
            # what a machine running this needs: the process's peak so far (a Beauty title-ID run peaked above 12 GB)
            "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024),
            "summary": summary, "runs": runs,
        })
        with atomic_write(output_path(args.out, ".md")) as handle:
            handle.write(markdown(summary, f"{dataset.name} ({', '.join(args.overrides) or 'params as given'})"))

    for seed in args.seeds:
        for name in args.baselines:
            params = with_seed(raw, None, seed)
            print(f"[{dataset.name}] {name} seed {seed}", flush=True)
            runs.append({"model": name, "seed": seed, **run_baseline(name, dataset, params)})
            save()
        for kind in args.kinds:
            params = with_seed(raw, kind, seed)
            print(f"[{dataset.name}] idgenrec-{kind} seed {seed}", flush=True)
            result = run_idgenrec(dataset, params, args.workdir / dataset.name)
            runs.append({"model": f"idgenrec-{kind}" + (f"-{args.label}" if args.label else ""), "seed": seed, **result})
            print(json.dumps({k: result["metrics"][k] for k in REPORTED[:4]} | result["timings"]), flush=True)
            save()
    print(markdown(summarise(runs), dataset.name))


if __name__ == "__main__":
    main()
