"""Textual ID quality and generation speed on ML-100k and Amazon Beauty.

    python -m benchmarks.ids_benchmark --datasets ml-100k   # one dataset (about 3 min on 2 cores)
    python -m benchmarks.ids_benchmark                      # both

Per dataset: warm up the ID generator with params.yaml's backbone and warm-up settings, generate
every item's ID batched (timed), generate the first ``--sequential-items`` items one at a time
and batched in the same process (the speed ratio), measure quality (unique, empty, length, share
of words from the item's own text) and check it against fixed bounds. Beauty is read from
``../shared/data/amazon-p5/Beauty`` and prepared under ``bench/`` (never committed). Writes
benchmarks/results/ids_benchmark_<datasets>.{json,md}. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers)

from benchmarks.common import RESULTS, machine, prepared

BOUNDS = {"unique_ratio": 1.0, "empty_ids": 0, "max_mean_words": 6.0, "min_own_word_fraction": 0.8, "ml100k_max_seconds": 120}


def prepared_dataset(name: str, ml100k_prepared: Path):
    from idgenrec.data.dataset import SequenceDataset

    return SequenceDataset.load(ml100k_prepared if name == "ml-100k" else prepared(name))


def run_dataset(name: str, dataset, params_path: Path, epochs: float, sequential_items: int, workdir: Path) -> dict:
    from idgenrec.backbone import load_seq2seq
    from idgenrec.config import load_params
    from idgenrec.ids import generate_unique_ids, make_id_table, warm_up_generator

    params = load_params(params_path)
    params = params.model_copy(update={"warmup": params.warmup.model_copy(update={"epochs": epochs})})
    started = time.perf_counter()
    warmup = warm_up_generator(dataset, params, workdir / f"generator-{name}", progress=False)
    warmup["wall_seconds"] = round(time.perf_counter() - started, 1)
    model, tokenizer = load_seq2seq(workdir / f"generator-{name}")

    table, learned = make_id_table("learned", dataset, model, tokenizer, params.ids, progress=False)
    table.save(workdir / f"item_ids-{name}.tsv", tokenizer)
    examples = [
        {"item_id": dataset.item_ids[i], "text": dataset.item_texts[i][:120], "id": table.textual_ids[i]} for i in range(8)
    ]
    # Same items, same algorithm: one item per decoding batch vs batched.
    subset = dataset.item_texts[:sequential_items]
    _, one = generate_unique_ids(model, tokenizer, subset, params.ids.model_copy(update={"batch_size": 1}), progress=False)
    _, batched = generate_unique_ids(model, tokenizer, subset, params.ids, progress=False)
    kinds = {kind: make_id_table(kind, dataset, None, tokenizer, params.ids, progress=False)[1] for kind in ("title", "random")}
    return {
        "dataset": name,
        "items": dataset.num_items,
        "warmup": warmup,
        "learned": learned,
        "examples": examples,
        "speed": {
            "subset_items": len(subset),
            "one_at_a_time_items_per_second": one["items_per_second"],
            "batched_items_per_second": batched["items_per_second"],
            "batched_speedup": round(batched["items_per_second"] / one["items_per_second"], 2),
        },
        "title": kinds["title"],
        "random": kinds["random"],
        "backbone": {"encoder_layers": params.backbone.encoder_layers, "decoder_layers": params.backbone.decoder_layers,
                     "profile": params.backbone.profile},
        "bounds": _bounds(name, learned),
    }


def _bounds(name: str, learned: dict) -> dict:
    checks = {
        "unique_ratio == 1.0": learned["unique_ratio"] == BOUNDS["unique_ratio"],
        "no empty IDs": learned["empty_ids"] == BOUNDS["empty_ids"],
        "mean words <= 6": learned["mean_words"] <= BOUNDS["max_mean_words"],
        "own-word fraction >= 0.8": learned["own_word_fraction"] >= BOUNDS["min_own_word_fraction"],
    }
    if name == "ml-100k":
        checks["all items <= 120 s"] = learned["seconds"] <= BOUNDS["ml100k_max_seconds"]
    return checks


# -- reporting ------------------------------------------------------------------------


def environment() -> dict:
    return machine()


def ids_markdown(results: list[dict], env: dict) -> str:
    lines = [
        "# Textual ID benchmark", "", f"`python -m benchmarks.ids_benchmark {' '.join(sys.argv[1:])}`; CPU {env['cpu']}, "
        f"{env['threads']} threads, torch {env['torch']}, load average at the end {env['load_average']}", "",
        "| dataset | items | unique | empty | mean / p95 / max words | mean / p95 / max tokens | own words | "
        "by penalty / length / fallback | generation s | items/s | batched speed-up | warm-up s (steps) |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in results:
        q, s, w = r["learned"], r["speed"], r["warmup"]
        lines.append(
            f"| {r['dataset']} | {q['items']} | {q['unique_ratio']} | {q['empty_ids']} | {q['mean_words']} / {q['p95_words']} / "
            f"{q['max_words']} | {q['mean_tokens']} / {q['p95_tokens']} / {q['max_tokens']} | {q['own_word_fraction']:.1%} | "
            f"{q['resolved_by_penalty']} / {q['resolved_by_length']} / {q['fallbacks']} | {q['seconds']} | {q['items_per_second']} | "
            f"{s['batched_speedup']}x ({s['batched_items_per_second']} vs {s['one_at_a_time_items_per_second']} items/s, "
            f"first {s['subset_items']} items) | {w['wall_seconds']} ({w['steps']}) |"
        )
    lines += ["", "Reference kinds (same tokenizer): mean words / own-word fraction", ""]
    for r in results:
        lines.append(
            f"- {r['dataset']}: title {r['title']['mean_words']} / {r['title']['own_word_fraction']:.1%}, "
            f"random {r['random']['mean_words']} / {r['random']['own_word_fraction']:.1%}"
        )
    lines += ["", "Bounds:", ""]
    for r in results:
        lines.append(f"- {r['dataset']}: " + ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in r["bounds"].items()))
    lines += ["", "Examples:", ""]
    for r in results:
        lines += [f"- {r['dataset']} `{e['item_id']}`: {e['text']} -> **{e['id']}**" for e in r["examples"][:5]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"], choices=["ml-100k", "beauty"])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="Backbone and warm-up settings.")
    parser.add_argument("--ml100k-prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--ml100k-epochs", type=float, default=10.0, help="Warm-up epochs on ML-100k (1,349 items).")
    parser.add_argument("--beauty-epochs", type=float, default=2.0, help="Warm-up epochs on Beauty (12,101 items).")
    parser.add_argument("--sequential-items", type=int, default=200, help="Items for the one-at-a-time comparison.")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is faster on a busy machine.")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="idgenrec-ids-bench-"))
    results = []
    for name in args.datasets:
        dataset = prepared_dataset(name, args.ml100k_prepared)
        epochs = args.ml100k_epochs if name == "ml-100k" else args.beauty_epochs
        results.append(run_dataset(name, dataset, args.params, epochs, args.sequential_items, workdir))
        print(json.dumps({k: results[-1][k] for k in ("dataset", "learned", "speed", "bounds")}, indent=1), flush=True)
    env = environment()
    stem = "ids_benchmark_" + "_".join(args.datasets)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(ids_markdown(results, env))
    print(ids_markdown(results, env))


if __name__ == "__main__":
    main()
