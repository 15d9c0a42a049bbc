"""Leave one dataset out: one model trained on several datasets, then recommending on one it never saw.

    python -m benchmarks.zero_shot --train ml-100k beauty --held-out toys \
        --set warmup.epochs=2 --set evaluation.sample_users=2000 --set training.selection_users=1000 \
        --single ml-100k=metrics/model.json --out benchmarks/results/zero-shot-toys

Steps, each cached as JSON in ``--workdir`` (a rerun skips what is done; ``--steps`` runs some of
them, so two processes can share a machine's cores; ``--report-only`` reports what is done):

- ``combined``: one ID generator and one recommender trained on the union of ``--train``
  (params.yaml's settings plus ``--set``, ``data.combine_with``), evaluated per dataset;
- ``zero-shot``: the combined model on the held-out dataset: its items get IDs from the trained
  generator, nothing is trained, its users are scored with the usual protocol;
- ``popularity``, ``sasrec`` and ``in-domain`` on the held-out dataset: its popularity, SASRec
  trained on it (``--sasrec-epochs`` cap), and the same architecture and settings trained on it;
- ``single-NAME``: the same settings on one training dataset alone, for "does training on more
  data help or hurt each one" (``--single NAME=FILE`` reads a metrics file of such a run instead,
  a quality.py JSON or a pipeline ``metrics/model.json``).

Writes OUT.{json,md} and headline.json's ``zero_shot``. Datasets: ml-100k (the pipeline's raw
files) and the Amazon sets of ``../shared/data/amazon-p5`` (beauty, toys, yelp), read in place.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import write_json
from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.progress import configure_logging
from idgenrec.tracking import code_version

from benchmarks.common import machine, output_path, params_with_overrides, with_seed, write_report
from benchmarks.quality import run_baseline, run_idgenrec

P5 = Path("../shared/data/amazon-p5")
AMAZON_FIELDS = ["title", "brand", "categories", "description"]
SOURCES = {
    "ml-100k": {"name": "ml-100k", "format": "recbole", "path": "data/ml-100k", "text_fields": ["title", "year", "genres"]},
    **{name.lower(): {"name": name.lower(), "format": "p5", "path": str(P5 / name), "text_fields": AMAZON_FIELDS}
       for name in ("Beauty", "Toys", "Yelp")},
}
HEADLINE = Path("benchmarks/results/headline.json")
SHOWN = ("recall@10", "ndcg@10")


def data_section(names: list[str]) -> dict:
    """``data`` of params.yaml for these datasets (the first one, the others in ``combine_with``)."""
    first, *more = [{"k_core": 5, "fallback_text": "item {item_id}", **SOURCES[n]} for n in names]
    return {**first, "combine_with": more}


def params_for(base: dict, names: list[str], seed: int) -> Params:
    return with_seed({**base, "data": data_section(names)}, None, seed)


def prepared(params: Params, workdir: Path) -> SequenceDataset:
    from idgenrec.data.prepare import prepare

    folder = workdir / f"prepared-{params.data.label}"
    if (folder / "stats.json").exists():  # written atomically: a folder that exists is whole
        return SequenceDataset.load(folder)
    return prepare(params.data, folder)


def cached(path: Path, compute) -> dict:
    if path.exists():
        return json.loads(path.read_text(encoding="utf-8"))
    import torch

    started = time.perf_counter()
    result = compute()
    result.setdefault("timings", {})["step_s"] = round(time.perf_counter() - started, 1)
    result["threads"] = torch.get_num_threads()  # the setting it ran in: a later --report-only may run in another
    write_json(path, result)
    return result


def zero_shot(combined_dir: Path, dataset: SequenceDataset, params: Params) -> dict:
    from idgenrec.backbone import pick_device
    from idgenrec.backbone.seq2seq import training_precision
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.recommender import alternating
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.new_items import for_catalogue

    trained = IDGenRecModel.load(combined_dir / alternating.BEST, device=pick_device())
    started = time.perf_counter()
    transferred, stats = for_catalogue(trained, dataset, params.ids.kind, params.ids)
    ids_s = time.perf_counter() - started
    metrics = evaluate_protocol(transferred, dataset, params.evaluation.ks, params.evaluation.sample_users)
    return {"metrics": metrics, "ids": {k: v for k, v in stats.items() if isinstance(v, (int, float))},
            "model": str(combined_dir), "similarity_weight": trained.settings.similarity_weight,
            "precision": training_precision(pick_device(), trained.settings.bf16),  # what it ranked in
            "timings": {"ids_s": round(ids_s, 1)}}


def single_metrics(spec: str) -> tuple[str, dict]:
    """``NAME=FILE``: a single-dataset run's metrics from a quality.py JSON (its IDGenRec run) or a metrics file."""
    name, _, path = spec.partition("=")
    payload = json.loads(Path(path).read_text(encoding="utf-8"))
    if "runs" in payload:
        runs = [r for r in payload["runs"] if r["model"].startswith("idgenrec-")]
        if len(runs) != 1:
            raise SystemExit(f"{path}: expected one IDGenRec run, found {len(runs)}")
        return name, {"metrics": runs[0]["metrics"], "source": path,
                      **{k: runs[0][k] for k in ("best_phase", "best_epoch") if k in runs[0]}}
    return name, {"metrics": payload, "source": path}


def precision(results: dict) -> str:
    """The precision the IDGenRec steps computed in (recorded with each; fp32 where a step predates the record)."""
    found = sorted({r.get("precision", "fp32") for r in results.values() if "best_phase" in r or "ids" in r})
    return "/".join(found) or "fp32"


def threads(results: dict) -> str:
    """The torch threads the steps ran with (recorded with each; this process's where a step predates the record)."""
    return "/".join(str(n) for n in sorted({r.get("threads", machine()["threads"]) for r in results.values()}))


def keep_share(zero: float, in_domain: float) -> float | None:
    return round(zero / in_domain, 3) if in_domain > 0 else None


def summary(results: dict, train: list[str], held_out: str) -> dict:
    """The figures: held-out dataset by model, and single- against combined-dataset models per training dataset."""
    columns = [("seen_included", m) for m in SHOWN] + [("seen_excluded", "ndcg@10")]

    def row(metrics: dict, part: str | None = None) -> dict:
        """``{setting}/{metric}`` of ``columns`` on the test split (of dataset ``part`` of a combined run)."""
        where = f"{part}/" if part else ""
        return {f"{setting}/{metric}": metrics[f"test/{setting}/{where}{metric}"] for setting, metric in columns}

    rows = {name: row(results[step]["metrics"])
            for name, step in (("popularity", "popularity"), ("sasrec", "sasrec"),
                               ("idgenrec in-domain", "in-domain"), ("idgenrec zero-shot", "zero-shot"))
            if step in results}
    held = {"dataset": held_out, "trained_on": train, "models": rows}
    if "zero-shot" in results and "similarity_weight" in results["zero-shot"]:
        held["similarity_weight"] = results["zero-shot"]["similarity_weight"]  # what the trained model ranks with
    if "idgenrec zero-shot" in rows and "idgenrec in-domain" in rows:
        held["zero_shot_keeps_of_in_domain_ndcg@10"] = keep_share(
            rows["idgenrec zero-shot"]["seen_included/ndcg@10"], rows["idgenrec in-domain"]["seen_included/ndcg@10"])
    if "idgenrec zero-shot" in rows and "popularity" in rows:
        held["zero_shot_over_popularity_ndcg@10"] = keep_share(
            rows["idgenrec zero-shot"]["seen_included/ndcg@10"], rows["popularity"]["seen_included/ndcg@10"])
    training = {}
    for name in train:
        single = results.get(f"single-{name}")
        if "combined" not in results or single is None:
            continue
        training[name] = {
            "single": row(single["metrics"]),
            "combined": row(results["combined"]["metrics"], name),
            "single_source": single.get("source", "trained here"),
        }
    selected = {name: {"phase": results[name]["best_phase"] + 1, "epoch": results[name]["best_epoch"]}
                for name in ("combined", "in-domain", *(f"single-{n}" for n in train))
                if "best_phase" in results.get(name, {})}
    notes = [f"{name}: {results[name]['stopped']}" for name in results if results[name].get("stopped")]
    return {"held_out": held, "training_datasets": training, "selected": selected, "notes": notes}


def markdown(figures: dict, settings: dict) -> str:
    held = figures["held_out"]
    names = {"seen_included/recall@10": "R@10", "seen_included/ndcg@10": "N@10", "seen_excluded/ndcg@10": "excl. N@10"}
    lines = [f"## Zero-shot: trained on {' + '.join(held['trained_on'])}, recommending on {held['dataset']}", "",
             f"Test split, leave-one-out, each user ranking its own dataset's catalogue; {settings['users']}. "
             f"Seed {settings['seed']}; {settings['machine']}.", "",
             "| model | " + " | ".join(names.values()) + " |", "|---|" + "---|" * len(names)]
    for model, row in held["models"].items():
        lines.append(f"| {model} | " + " | ".join(f"{row[k]:.4f}" for k in names) + " |")
    if "similarity_weight" in held:
        lines += ["", f"The trained model ranks with last-item similarity weight {held['similarity_weight']:g} "
                      "(chosen on its training data's validation)."]
    if "zero_shot_keeps_of_in_domain_ndcg@10" in held:
        lines += ["", f"The zero-shot model keeps {held['zero_shot_keeps_of_in_domain_ndcg@10']:.0%} of the in-domain "
                      f"model's N@10 ({held.get('zero_shot_over_popularity_ndcg@10', float('nan')):.2f}x popularity's)."]
    if figures["training_datasets"]:
        lines += ["", "On the training datasets, one model per dataset against the one trained on all of them "
                      "(test N@10, nothing excluded / excluded):", "",
                  "| dataset | alone | combined | alone, excl. | combined, excl. |", "|---|---|---|---|---|"]
        for name, row in figures["training_datasets"].items():
            lines.append(f"| {name} | {row['single']['seen_included/ndcg@10']:.4f} | {row['combined']['seen_included/ndcg@10']:.4f} "
                         f"| {row['single']['seen_excluded/ndcg@10']:.4f} | {row['combined']['seen_excluded/ndcg@10']:.4f} |")
    if figures["selected"]:
        lines += ["", "Checkpoints validation selected: " + "; ".join(
            f"{name} phase {where['phase']}" for name, where in figures["selected"].items()) + " (of recommender, ID phase, re-fit)."]
    lines += [f"Note: {note}." for note in figures["notes"]]
    capped = f"; SASRec capped at {settings['sasrec_epochs']} epochs" if "sasrec" in held["models"] else ""
    lines += ["", f"Settings: params.yaml with {', '.join(settings['overrides']) or 'no changes'}{capped}."]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", nargs="+", required=True, choices=sorted(SOURCES))
    parser.add_argument("--held-out", required=True, choices=sorted(SOURCES))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--sasrec-epochs", type=int, default=50, help="SASRec's epoch cap (patience 10) on the held-out set.")
    parser.add_argument("--single", action="append", default=[], metavar="NAME=FILE",
                        help="A training dataset's single-dataset metrics from a finished run instead of training one.")
    parser.add_argument("--steps", nargs="+", default=None,
                        help="Run only these steps (combined, zero-shot, popularity, sasrec, in-domain, single-NAME).")
    parser.add_argument("--report-only", action="store_true", help="Compute nothing: report the steps already done.")
    parser.add_argument("--trained", type=Path, default=None,
                        help="A finished run folder trained on --train (quality.py's model-KIND-SEED) to put on the held-out "
                             "dataset instead of training the combined model here (its best/ is used).")
    parser.add_argument("--workdir", type=Path, default=Path("bench/zero-shot"))
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension.")
    args = parser.parse_args(argv)
    if args.held_out in args.train:
        parser.error(f"--held-out {args.held_out} is also in --train")
    configure_logging()
    base = params_with_overrides(args.params, args.set + [f"sasrec.max_epochs={args.sasrec_epochs}", "sasrec.patience=10"])
    work = args.workdir / f"{'+'.join(args.train)}-to-{args.held_out}-seed{args.seed}"
    work.mkdir(parents=True, exist_ok=True)
    combined = params_for(base, args.train, args.seed)
    held = params_for(base, [args.held_out], args.seed)
    singles = dict(single_metrics(spec) for spec in args.single)
    wanted = set() if args.report_only else set(args.steps) if args.steps else None
    results: dict = {}

    def step(name: str, compute) -> None:
        path = work / f"{name}.json"
        if wanted is None or name in wanted:
            results[name] = cached(path, compute)
        elif path.exists():
            results[name] = json.loads(path.read_text(encoding="utf-8"))

    if args.trained is None:
        step("combined", lambda: run_idgenrec(prepared(combined, work), combined, work / "combined"))
    trained = args.trained or work / "combined" / f"model-{combined.ids.kind}-seed{args.seed}"
    step("zero-shot", lambda: zero_shot(trained, prepared(held, work), held))
    step("popularity", lambda: run_baseline("pop", prepared(held, work), held))
    step("in-domain", lambda: run_idgenrec(prepared(held, work), held, work / f"in-domain-{args.held_out}"))
    step("sasrec", lambda: run_baseline("sasrec", prepared(held, work), held))
    for name in args.train if args.trained is None else ():  # a model trained elsewhere has no combined run to compare
        if name in singles:
            results[f"single-{name}"] = singles[name]
        else:
            alone = params_for(base, [name], args.seed)
            step(f"single-{name}", lambda alone=alone: run_idgenrec(prepared(alone, work), alone, work / f"single-{name}"))

    figures = summary(results, args.train, args.held_out)
    settings = {
        "seed": args.seed,
        "overrides": args.set,
        "sasrec_epochs": args.sasrec_epochs,
        "users": (f"{base['evaluation']['sample_users']:,} sampled users per dataset (all where fewer)"
                  if base.get("evaluation", {}).get("sample_users") else "every user"),
        "machine": f"{machine()['cpu']}, {threads(results)} thread(s) per process, {precision(results)}",
    }
    # What reruns every step (a report assembled from steps run apart is reproduced by the whole run).
    arguments = [a for a in (argv if argv is not None else sys.argv[1:]) if a != "--report-only"]
    if args.steps:
        at = arguments.index("--steps")
        arguments = arguments[:at] + arguments[at + 1 + len(args.steps):]
    payload = {"command": " ".join(["python -m benchmarks.zero_shot", *arguments]), "figures": figures, "settings": settings,
               "code_version": code_version(Path(__file__).resolve().parent.parent),
               "steps": {name: {k: v for k, v in r.items() if k != "records"} for name, r in results.items()}}
    write_report(args.out, payload, markdown(figures, settings))
    if all(k in results for k in ("zero-shot", "popularity")):
        headline = json.loads(HEADLINE.read_text(encoding="utf-8")) if HEADLINE.exists() else {}
        command = json.loads(output_path(args.out, ".json").read_text(encoding="utf-8"))["command"]
        headline.setdefault("zero_shot", {})[args.held_out] = {**figures, "settings": settings, "command": command}
        write_json(HEADLINE, headline)


if __name__ == "__main__":
    main()
