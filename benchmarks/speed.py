"""Speed and cost of the recommender, each as a ratio measured in this one process.

- training throughput (samples/s, target positions/s, tokens/s) and model FLOP utilisation
  (FLOPs counted by torch's FlopCounterMode) against a dense bf16 / fp32 matmul peak measured here;
- bf16 autocast against fp32 for the same steps;
- recommendation latency p50 / p95 for one user and batch throughput, with and without the
  trie constraint at the same beam width;
- how latency grows with catalogue size and history length; peak memory (RSS).

    python -m benchmarks.speed --out benchmarks/results/speed                              # params.yaml's history length
    python -m benchmarks.speed --history-lengths 5 10 20 --out benchmarks/results/speed     # and how cost grows with it

The recommender is params.yaml's (its architecture, layers and batch size) with fresh weights and
title IDs (the same length regime as learned IDs, no trained generator needed); a seq2seq sample
is one prompt, a causal one a window of up to the history length of items, each training all its
items. Trie-constrained decoding runs the same number of steps whatever the weights (every beam
must end on an ID), so its latency is set mostly by the beam width, the trie and the shapes.

Writes ``speed.json``, ``speed.md`` and ``speed.png``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import random
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

import idgenrec  # noqa: F401
from idgenrec.atomic import atomic_write, write_json
from idgenrec.config import Params
from idgenrec.ids.trie import IdTrie
from idgenrec.recommender.alternating import build_recommender, decoding_settings, recommender_inputs
from idgenrec.recommender.model import IDGenRecModel
from idgenrec.recommender.prompts import HISTORY_SEPARATOR

from benchmarks.common import machine, matmul_peaks, output_path, render_peaks, title_id_setup, training_throughput


def latency(model: IDGenRecModel, histories, constrained: bool, repeats: int) -> dict:
    """Per-user latency (batch of 1) and batched throughput (64 users per call)."""
    times = []
    for history in histories[:repeats]:
        start = time.perf_counter()
        model.recommend_with_scores([history], 10, constrained=constrained)
        times.append(time.perf_counter() - start)
    start = time.perf_counter()
    model.recommend_with_scores(histories[:256], 10, constrained=constrained)
    batch_seconds = time.perf_counter() - start
    times.sort()
    return {"p50_ms": 1000 * statistics.median(times), "p95_ms": 1000 * times[int(0.95 * (len(times) - 1))],
            "batch_users_per_s": min(256, len(histories)) / batch_seconds}


def subset_model(model: IDGenRecModel, num_items: int, rng: random.Random) -> IDGenRecModel:
    """The same recommender whose trie holds only a random subset of the catalogue.

    Prompts still read every item's ID (histories use the full catalogue); only the set
    of items decoding may produce shrinks, which is what catalogue size changes.
    """
    keep = sorted(rng.sample(range(len(model.id_table.item_ids)), num_items))
    smaller = IDGenRecModel(model.recommender, model.tokenizer, model.id_table, model.settings)
    smaller.trie = IdTrie([model.item_tokens[i] for i in keep], model.prompts.eos)
    return smaller


def recommender_layers(params: Params) -> str:
    """'1' (causal layers) or '1+1' (seq2seq encoder + decoder layers)."""
    backbone = params.backbone
    if backbone.architecture == "causal":
        return f"{backbone.causal_layers}"
    return f"{backbone.encoder_layers}+{backbone.decoder_layers}"


def with_history(params: Params, history_length: int) -> Params:
    """``params`` reading (and training on) ``history_length`` items."""
    return params.model_copy(update={"training": params.training.model_copy(update={"history_length": history_length})})


def training_batches(params: Params, dataset, recommender, tokenizer, table, count: int, rng: random.Random) -> list:
    """``count`` full training batches of params' architecture, drawn by the training loop's own batching
    from a random sample of its samples (seq2seq prompts, causal windows)."""
    _, source, _ = recommender_inputs(params, dataset, recommender, tokenizer, table)
    size = params.training.batch_size
    indices = rng.sample(range(source.num_samples), min(source.num_samples, 2 * size * count))
    full = [batch for batch in source.batches(indices, rng) if batch.size == size]
    if len(full) < count:
        raise ValueError(f"only {len(full)} full batches of {size} samples; {count} are timed")
    return full[:count]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=30, help="Timed training steps per setting.")
    parser.add_argument("--users", type=int, default=60, help="Users timed one at a time.")
    parser.add_argument("--history-lengths", type=int, nargs="+", help="History lengths: items a prompt or a causal window holds (default: params.yaml's).")
    parser.add_argument("--catalogue-sizes", type=int, nargs="*", default=[],
                        help="Also time decoding with the trie cut to these many items (e.g. 100 300 1000).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed"))
    parser.add_argument("--render", action="store_true",
                        help="Measure nothing: rewrite OUT.md from the measurements already in OUT.json.")
    args = parser.parse_args()
    if args.render:
        with atomic_write(output_path(args.out, ".md")) as handle:
            handle.write(render_markdown(json.loads(output_path(args.out, ".json").read_text())))
        return

    params, dataset, tokenizer, table, quality = title_id_setup(args.params, args.prepared)
    torch.manual_seed(0)
    recommender = build_recommender(params, tokenizer)
    separator = tokenizer(HISTORY_SEPARATOR.strip(), add_special_tokens=False)["input_ids"][0]
    rng = random.Random(0)
    lengths = sorted(set(args.history_lengths or [params.training.history_length]))
    results: dict = {
        "command": " ".join(["python -m benchmarks.speed", *sys.argv[1:]]),
        "machine": machine(),
        "model": {"architecture": params.backbone.architecture, "layers": recommender_layers(params),
                  "vocabulary": len(tokenizer), "parameters": sum(p.numel() for p in recommender.parameters()),
                  "id_tokens_mean": quality.get("mean_tokens"), "batch_size": params.training.batch_size,
                  "num_beams": params.training.num_beams},
    }
    results["peak_flops"] = matmul_peaks()

    # -- training throughput and MFU, by history length and precision ------------------
    training = []
    for history_length in lengths:
        at_length = with_history(params, history_length)
        batches = training_batches(at_length, dataset, recommender, tokenizer, table, args.steps + 2, rng)
        for bf16 in [False, True] if "bf16" in results["peak_flops"] else [False]:
            row = training_throughput(recommender, batches, bf16, at_length.training, separator)
            row |= {"history_length": history_length, "bf16": bf16,
                    "sample_tokens_mean": row["tokens_per_s"] / row["samples_per_s"]}
            training.append(row)
            print(f"train history={history_length} bf16={bf16}: {row['samples_per_s']:.0f} samples/s, "
                  f"{row['target_items_per_s']:.0f} target items/s", flush=True)
    # The peak again after training, the best of the two kept: on a shared machine one reading can
    # catch other work, and a peak read low would inflate MFU.
    after = matmul_peaks()
    results["peak_flops"] = {k: max(v, after[k]) for k, v in results["peak_flops"].items()}
    for row in training:
        row["mfu"] = row["achieved_flops"] / results["peak_flops"]["bf16" if row["bf16"] else "fp32"]
        print(f"train history={row['history_length']} bf16={row['bf16']}: MFU {row['mfu']:.1%}", flush=True)
    results["training"] = training

    # -- decoding: constrained vs unconstrained, by history length and catalogue size ----
    histories, _ = dataset.split_examples("test")
    rng.shuffle(histories)
    decoding = []
    # (ranking, trie): every item scored (the causal recommender only), beam search with and without the trie
    rankings = [("items", True)] if params.backbone.architecture == "causal" else []
    rankings += [("beams", True), ("beams", False)]
    for history_length in lengths:
        settings = decoding_settings(with_history(params, history_length))
        for ranking, constrained in rankings:
            model = IDGenRecModel(recommender, tokenizer, table, dataclasses.replace(settings, ranking=ranking))
            row = latency(model, histories, constrained, args.users)
            row |= {"history_length": history_length, "ranking": ranking, "constrained": constrained, "items": dataset.num_items}
            decoding.append(row)
            print(f"decode history={history_length} {ranking} constrained={constrained}: p50 {row['p50_ms']:.1f} ms", flush=True)
    full = IDGenRecModel(recommender, tokenizer, table, dataclasses.replace(decoding_settings(params), ranking="beams"))
    for num_items in args.catalogue_sizes:
        if num_items < dataset.num_items:
            row = latency(subset_model(full, num_items, rng), histories, True, args.users)
            decoding.append(row | {"history_length": params.training.history_length, "ranking": "beams",
                                   "constrained": True, "items": num_items})
    results["decoding"] = decoding
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["machine"] = machine()  # load average at the end

    write_json(output_path(args.out, ".json"), results)
    with atomic_write(output_path(args.out, ".md")) as handle:
        handle.write(render_markdown(results))
    plot(results, output_path(args.out, ".png"))
    print(render_markdown(results))


def render_markdown(results: dict) -> str:
    peak, model = results["peak_flops"], results["model"]
    sample = "window" if model["architecture"] == "causal" else "prompt"
    lines = [
        "## Speed (CPU, one process)", "",
        f"`{results.get('command', 'python -m benchmarks.speed')}`; CPU {results['machine'].get('cpu', results['machine'].get('processor'))}, "
        f"load average at the end {', '.join(f'{x:.1f}' for x in results['machine'].get('load_average', []))}.", "",
        f"Recommender: {model['architecture']} (layers: {model['layers']}), "
        f"{model['parameters'] / 1e6:.1f}M parameters, vocabulary {model['vocabulary']}, batches of {model['batch_size']} "
        f"{sample}s, {model['num_beams']} beams; "
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads. "
        f"Measured matmul peak: {render_peaks(peak)}. "
        f"Peak RSS {results['peak_rss_mb']:.0f} MB.", "",
        "MFU is the model's FLOPs per second over a measured matmul peak: over the peak of the precision "
        "the step runs in, and over the fp32 peak (what the same model trained without autocast is held to).", "",
        f"| history | precision | tokens per {sample} | {sample}s/s | target items/s | target positions/s | tokens/s | "
        "MFU (vs same-precision peak) | MFU (vs fp32 peak) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in results["training"]:
        lines.append(f"| {row['history_length']} | {'bf16' if row['bf16'] else 'fp32'} | {row['sample_tokens_mean']:.0f} | "
                     f"{row['samples_per_s']:.0f} | {row['target_items_per_s']:.0f} | {row['target_positions_per_s']:.0f} | "
                     f"{row['tokens_per_s']:.0f} | {row['mfu']:.1%} | {row['achieved_flops'] / peak['fp32']:.1%} |")
    if "bf16" not in peak:
        lines += ["", "This CPU has no bf16 kernels, so training runs in fp32 only (the library's fallback)."]
    lines += ["", "| history | items | ranking | p50 ms (1 user) | p95 ms | users/s (batches of 64) |", "|---|---|---|---|---|---|"]
    for row in results["decoding"]:
        lines.append(f"| {row['history_length']} | {row['items']} | {ranking_label(row, model['num_beams'])} | "
                     f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['batch_users_per_s']:.1f} |")
    pairs = {}
    for row in results["decoding"]:
        if row["items"] == max(r["items"] for r in results["decoding"]) and row.get("ranking", "beams") == "beams":
            pairs.setdefault(row["history_length"], {})[row["constrained"]] = row["p50_ms"]
    overheads = [f"history {h}: {100 * (p[True] / p[False] - 1):+.0f}%" for h, p in sorted(pairs.items()) if len(p) == 2]
    lines += ["", f"Trie constraint cost (p50, same beam width): {', '.join(overheads)}.", ""]
    return "\n".join(lines)


def ranking_label(row: dict, beams: int) -> str:
    """'every item scored', or 'B beams, trie' / 'B beams, no trie' (rows without a ranking are beam search)."""
    if row.get("ranking", "beams") == "items":
        return "every item scored"
    return f"{beams} beams, {'trie' if row['constrained'] else 'no trie'}"


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for bf16 in (False, True):
        rows = [r for r in results["training"] if r["bf16"] == bf16]
        if not rows:
            continue
        left.plot([r["history_length"] for r in rows], [r["target_items_per_s"] for r in rows], marker="o", label="bf16" if bf16 else "fp32")
    left.set(xlabel="history length (items)", ylabel="target items trained per second", title="Training throughput")
    left.legend()
    full = max(x["items"] for x in results["decoding"])
    for label in dict.fromkeys(ranking_label(r, results["model"]["num_beams"]) for r in results["decoding"]):
        rows = [r for r in results["decoding"] if ranking_label(r, results["model"]["num_beams"]) == label and r["items"] == full]
        right.plot([r["history_length"] for r in rows], [r["p50_ms"] for r in rows], marker="o", label=label)
    right.set(xlabel="history length (items)", ylabel="p50 latency, 1 user (ms)", title="Recommendation latency")
    right.legend()
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
