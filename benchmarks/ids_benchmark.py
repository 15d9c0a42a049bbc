"""Benchmark of issue 3's targets: textual ID quality and speed on ML-100k and Amazon Beauty.

    .venv/bin/python benchmarks/ids_benchmark.py                      # both datasets
    .venv/bin/python benchmarks/ids_benchmark.py --datasets ml-100k   # one
    .venv/bin/python benchmarks/ids_benchmark.py --throughput-only    # backbone training throughput

Per dataset: warm up the offline generator, generate all IDs batched (timed), generate
the first ``--sequential-items`` items one at a time and batched in the same run (the
speed ratio), measure quality, and check the targets. Beauty is read from
``../shared/data/amazon-p5/Beauty`` and prepared under /tmp (never copied into the
project). Writes benchmarks/results/ids_benchmark_<datasets>.{json,md}; ``--throughput`` adds
benchmarks/results/backbone_throughput.{json,md} (recommender training samples/s, fp32 vs
bf16 autocast, 1-3 layers). No thresholds here are asserted by tests.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers)

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
BEAUTY = ROOT.parent / "shared" / "data" / "amazon-p5" / "Beauty"
TARGETS = {"unique_ratio": 1.0, "empty_ids": 0, "max_mean_words": 6.0, "min_own_word_fraction": 0.8, "ml100k_max_seconds": 120}


def prepared_dataset(name: str, ml100k_prepared: Path):
    from idgenrec.config import DataConfig
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.data.prepare import prepare

    if name == "ml-100k":
        return SequenceDataset.load(ml100k_prepared)
    folder = Path(tempfile.gettempdir()) / "idgenrec-bench" / "prepared-beauty"
    if (folder / "stats.json").exists():
        return SequenceDataset.load(folder)
    config = DataConfig(name="beauty", format="p5", path=BEAUTY, text_fields=["title", "brand", "categories", "description"])
    return prepare(config, folder)


def run_dataset(name: str, dataset, epochs: float, sequential_items: int, workdir: Path) -> dict:
    from idgenrec.backbone import load_seq2seq
    from idgenrec.config import IdConfig, Params, WarmupConfig
    from idgenrec.ids import generate_unique_ids, make_id_table, warm_up_generator

    params = Params(warmup=WarmupConfig(epochs=epochs))
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
    _, one = generate_unique_ids(model, tokenizer, subset, IdConfig(batch_size=1), progress=False)
    _, batched = generate_unique_ids(model, tokenizer, subset, IdConfig(), progress=False)
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
        "targets": _targets(name, learned),
    }


def _targets(name: str, learned: dict) -> dict:
    checks = {
        "unique_ratio == 1.0": learned["unique_ratio"] == TARGETS["unique_ratio"],
        "no empty IDs": learned["empty_ids"] == TARGETS["empty_ids"],
        "mean words <= 6": learned["mean_words"] <= TARGETS["max_mean_words"],
        "own-word fraction >= 0.8": learned["own_word_fraction"] >= TARGETS["min_own_word_fraction"],
    }
    if name == "ml-100k":
        checks["all items <= 120 s"] = learned["seconds"] <= TARGETS["ml100k_max_seconds"]
    return checks


# -- backbone training throughput -------------------------------------------------------


def throughput(dataset, layers: list[int], steps: int = 4, batch: int = 64, source_len: int = 60, target_len: int = 6) -> list[dict]:
    """Recommender training samples/s (forward + backward + AdamW), fp32 vs bf16 autocast."""
    import torch
    import torch.nn.functional as F

    from idgenrec.backbone import build_seq2seq, build_tokenizer, vocabulary_corpus
    from idgenrec.config import BackboneConfig

    tokenizer = build_tokenizer(BackboneConfig(), vocabulary_corpus(dataset))
    generator = torch.Generator().manual_seed(0)
    vocab = len(tokenizer)
    source = torch.randint(5, vocab, (batch, source_len), generator=generator)  # (B, S) ~60 prompt tokens
    target = torch.randint(5, vocab, (batch, target_len + 1), generator=generator)  # (B, T+1) start + ID tokens
    rows = []
    for n in layers:
        model = build_seq2seq(BackboneConfig(encoder_layers=n, decoder_layers=n), tokenizer, "recommender").train()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
        for bf16 in (False, True):
            timings = []
            for step in range(steps + 1):  # first step is warm-up, not timed
                started = time.perf_counter()
                with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
                    logits = model(input_ids=source, decoder_input_ids=target[:, :-1]).logits  # (B, T, V)
                loss = F.cross_entropy(logits.float().flatten(0, 1), target[:, 1:].flatten())
                loss.backward()
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
                if step:
                    timings.append(time.perf_counter() - started)
            rows.append({
                "layers": n, "precision": "bf16 autocast" if bf16 else "fp32", "vocabulary": vocab,
                "parameters_m": round(sum(p.numel() for p in model.parameters()) / 1e6, 2),
                "samples_per_second": round(batch * len(timings) / sum(timings), 1),
            })
            print(rows[-1], flush=True)
    return rows


# -- reporting ------------------------------------------------------------------------


def environment() -> dict:
    import torch

    return {
        "python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
        "cpus": os.cpu_count(), "load_average_at_end": [round(x, 2) for x in os.getloadavg()],
        "date": time.strftime("%Y-%m-%d %H:%M"),
    }


def ids_markdown(results: list[dict], env: dict) -> str:
    lines = [
        "# Textual ID benchmark", "", f"`{' '.join(sys.argv)}` — {env}", "",
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
    lines += ["", "Targets:", ""]
    for r in results:
        lines.append(f"- {r['dataset']}: " + ", ".join(f"{k} {'PASS' if ok else 'FAIL'}" for k, ok in r["targets"].items()))
    lines += ["", "Examples:", ""]
    for r in results:
        lines += [f"- {r['dataset']} `{e['item_id']}`: {e['text']} -> **{e['id']}**" for e in r["examples"][:5]]
    return "\n".join(lines) + "\n"


def throughput_markdown(rows: list[dict], env: dict) -> str:
    lines = [
        "# Offline recommender training throughput", "",
        f"batch 64, input 60 tokens, target 6 tokens, pruned ML-100k vocabulary — {env}", "",
        "| layers (enc = dec) | params (M) | fp32 samples/s | bf16 autocast samples/s | bf16 speed-up |", "|---|---|---|---|---|",
    ]
    for n in sorted({r["layers"] for r in rows}):
        fp32 = next(r for r in rows if r["layers"] == n and r["precision"] == "fp32")
        bf16 = next(r for r in rows if r["layers"] == n and r["precision"] != "fp32")
        lines.append(
            f"| {n} | {fp32['parameters_m']} | {fp32['samples_per_second']} | {bf16['samples_per_second']} | "
            f"{bf16['samples_per_second'] / fp32['samples_per_second']:.2f}x |"
        )
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--datasets", nargs="+", default=["ml-100k", "beauty"], choices=["ml-100k", "beauty"])
    parser.add_argument("--ml100k-prepared", type=Path, default=ROOT / "artifacts" / "prepared")
    parser.add_argument("--ml100k-epochs", type=float, default=10.0, help="Warm-up epochs on ML-100k (1,349 items).")
    parser.add_argument("--beauty-epochs", type=float, default=2.0, help="Warm-up epochs on Beauty (12,101 items).")
    parser.add_argument("--sequential-items", type=int, default=200, help="Items for the one-at-a-time comparison.")
    parser.add_argument("--throughput", action="store_true", help="Also measure backbone training throughput.")
    parser.add_argument("--throughput-only", action="store_true")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (0: torch's default); 1 is faster on a busy machine.")
    args = parser.parse_args()
    if args.threads:
        import torch

        torch.set_num_threads(args.threads)
    RESULTS.mkdir(parents=True, exist_ok=True)
    workdir = Path(tempfile.mkdtemp(prefix="idgenrec-ids-bench-"))
    if args.throughput or args.throughput_only:
        rows = throughput(prepared_dataset("ml-100k", args.ml100k_prepared), layers=[1, 2, 3])
        env = environment()
        (RESULTS / "backbone_throughput.json").write_text(json.dumps({"environment": env, "rows": rows}, indent=2) + "\n")
        (RESULTS / "backbone_throughput.md").write_text(throughput_markdown(rows, env))
        print(throughput_markdown(rows, env))
        if args.throughput_only:
            return
    results = []
    for name in args.datasets:
        dataset = prepared_dataset(name, args.ml100k_prepared)
        epochs = args.ml100k_epochs if name == "ml-100k" else args.beauty_epochs
        results.append(run_dataset(name, dataset, epochs, args.sequential_items, workdir))
        print(json.dumps({k: results[-1][k] for k in ("dataset", "learned", "speed", "targets")}, indent=1), flush=True)
    env = environment()
    stem = "ids_benchmark_" + "_".join(args.datasets)
    (RESULTS / f"{stem}.json").write_text(json.dumps({"environment": env, "results": results}, indent=2) + "\n")
    (RESULTS / f"{stem}.md").write_text(ids_markdown(results, env))
    print(ids_markdown(results, env))


if __name__ == "__main__":
    main()
