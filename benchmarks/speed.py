"""Speed and cost of the recommender, each as a ratio measured in this one process.

- training throughput (samples/s, target positions/s, tokens/s) and model FLOP utilisation
  (FLOPs counted by torch's FlopCounterMode) against a dense bf16 / fp32 matmul peak measured here;
- bf16 autocast against fp32 for the same steps;
- recommendation latency p50 / p95 for one user and batch throughput, with and without the
  trie constraint at the same beam width;
- how latency grows with catalogue size and history length; peak memory (RSS).

    python -m benchmarks.speed --out benchmarks/results/speed                              # params.yaml's history length
    python -m benchmarks.speed --history-lengths 5 10 20 --out benchmarks/results/speed     # and how cost grows with it

The recommender is params.yaml's backbone with fresh weights and title IDs (the same length
regime as learned IDs, no trained generator needed). Trie-constrained decoding runs the same number
of steps whatever the weights (every beam must end on an ID), so its latency is set mostly by the
beam width, the trie and the shapes.

Writes ``speed.json``, ``speed.md`` and ``speed.png``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
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
from idgenrec.backbone import build_seq2seq
from idgenrec.config import BackboneConfig, TrainingConfig
from idgenrec.ids.trie import IdTrie
from idgenrec.recommender.model import DecodingSettings, IDGenRecModel
from idgenrec.recommender.samples import PromptEncoder, collate, training_samples

from benchmarks.common import machine, matmul_peaks, render_peaks, title_id_setup, training_throughput


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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=30, help="Timed training steps per setting.")
    parser.add_argument("--users", type=int, default=60, help="Users timed one at a time.")
    parser.add_argument("--history-lengths", type=int, nargs="+", help="Prompt history lengths (default: params.yaml's).")
    parser.add_argument("--catalogue-sizes", type=int, nargs="*", default=[],
                        help="Also time decoding with the trie cut to these many items (e.g. 100 300 1000).")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/speed"))
    parser.add_argument("--render", action="store_true",
                        help="Measure nothing: rewrite OUT.md from the measurements already in OUT.json.")
    args = parser.parse_args()
    if args.render:
        with atomic_write(args.out.with_suffix(".md")) as handle:
            handle.write(render_markdown(json.loads(args.out.with_suffix(".json").read_text())))
        return

    params, dataset, tokenizer, table, quality = title_id_setup(args.params, args.prepared)
    backbone: BackboneConfig = params.backbone
    torch.manual_seed(0)
    recommender = build_seq2seq(backbone, tokenizer, "recommender", seed=0)
    rng = random.Random(0)
    lengths = sorted(set(args.history_lengths or [params.training.history_length]))
    results: dict = {
        "command": " ".join(["python -m benchmarks.speed", *sys.argv[1:]]),
        "machine": machine(),
        "model": {"layers": [backbone.encoder_layers, backbone.decoder_layers], "vocabulary": len(tokenizer),
                  "parameters": sum(p.numel() for p in recommender.parameters()), "id_tokens_mean": quality.get("mean_tokens")},
    }
    results["peak_flops"] = matmul_peaks()

    # -- training throughput and MFU, by history length and precision ------------------
    config = TrainingConfig(batch_size=params.training.batch_size, history_length=params.training.history_length)
    training = []
    for history_length in lengths:
        encoder = PromptEncoder(tokenizer, table.token_ids(tokenizer), history_length)
        samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], history_length)
        chosen = rng.sample(samples, config.batch_size * (args.steps + 2))
        prompts = [encoder.encode(s.history, 0) for s in chosen]
        targets = [encoder.target(s.target) for s in chosen]
        batches = [
            collate(prompts[i : i + config.batch_size], targets[i : i + config.batch_size], tokenizer.pad_token_id,
                    recommender.config.decoder_start_token_id)
            for i in range(0, len(prompts), config.batch_size)
        ]
        for bf16 in [False, True] if "bf16" in results["peak_flops"] else [False]:
            row = training_throughput(recommender, batches, bf16, config)
            row |= {"history_length": history_length, "bf16": bf16,
                    "prompt_tokens_mean": statistics.fmean(len(p.input_ids) for p in prompts)}
            training.append(row)
            print(f"train history={history_length} bf16={bf16}: {row['samples_per_s']:.0f} samples/s, "
                  f"{row['target_positions_per_s']:.0f} target positions/s", flush=True)
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
    for history_length in lengths:
        model = IDGenRecModel(recommender, tokenizer, table, DecodingSettings(history_length, params.training.num_beams, True))
        for constrained in (True, False):
            row = latency(model, histories, constrained, args.users)
            row |= {"history_length": history_length, "constrained": constrained, "items": dataset.num_items}
            decoding.append(row)
            print(f"decode history={history_length} constrained={constrained}: p50 {row['p50_ms']:.1f} ms", flush=True)
    full = IDGenRecModel(recommender, tokenizer, table, DecodingSettings(params.training.history_length, params.training.num_beams, True))
    for num_items in args.catalogue_sizes:
        if num_items < dataset.num_items:
            row = latency(subset_model(full, num_items, rng), histories, True, args.users)
            decoding.append(row | {"history_length": params.training.history_length, "constrained": True, "items": num_items})
    results["decoding"] = decoding
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    results["machine"] = machine()  # load average at the end

    write_json(args.out.with_suffix(".json"), results)
    with atomic_write(args.out.with_suffix(".md")) as handle:
        handle.write(render_markdown(results))
    plot(results, args.out.with_suffix(".png"))
    print(render_markdown(results))


def render_markdown(results: dict) -> str:
    peak = results["peak_flops"]
    lines = [
        "## Speed (CPU, one process)", "",
        f"`{results.get('command', 'python -m benchmarks.speed')}`; CPU {results['machine'].get('cpu', results['machine'].get('processor'))}, "
        f"load average at the end {', '.join(f'{x:.1f}' for x in results['machine'].get('load_average', []))}.", "",
        f"Recommender: {results['model']['layers'][0]}+{results['model']['layers'][1]} layers, "
        f"{results['model']['parameters'] / 1e6:.1f}M parameters, vocabulary {results['model']['vocabulary']}; "
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads. "
        f"Measured matmul peak: {render_peaks(peak)}. "
        f"Peak RSS {results['peak_rss_mb']:.0f} MB.", "",
        "MFU is the model's FLOPs per second over a measured matmul peak: over the peak of the precision "
        "the step runs in, and over the fp32 peak (what the same model trained without autocast is held to).", "",
        "| history | precision | prompt tokens | samples/s | target positions/s | tokens/s | MFU (vs same-precision peak) | MFU (vs fp32 peak) |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for row in results["training"]:
        lines.append(f"| {row['history_length']} | {'bf16' if row['bf16'] else 'fp32'} | {row['prompt_tokens_mean']:.0f} | "
                     f"{row['samples_per_s']:.0f} | {row.get('target_positions_per_s', float('nan')):.0f} | {row['tokens_per_s']:.0f} | {row['mfu']:.1%} | "
                     f"{row['achieved_flops'] / peak['fp32']:.1%} |")
    if "bf16" not in peak:
        lines += ["", "This CPU has no bf16 kernels, so training runs in fp32 only (the library's fallback)."]
    lines += ["", "| history | items | trie | p50 ms (1 user) | p95 ms | users/s (batches of 64) |", "|---|---|---|---|---|---|"]
    for row in results["decoding"]:
        lines.append(f"| {row['history_length']} | {row['items']} | {'yes' if row['constrained'] else 'no'} | "
                     f"{row['p50_ms']:.1f} | {row['p95_ms']:.1f} | {row['batch_users_per_s']:.1f} |")
    pairs = {}
    for row in results["decoding"]:
        if row["items"] == max(r["items"] for r in results["decoding"]):
            pairs.setdefault(row["history_length"], {})[row["constrained"]] = row["p50_ms"]
    overheads = [f"history {h}: {100 * (p[True] / p[False] - 1):+.0f}%" for h, p in sorted(pairs.items()) if len(p) == 2]
    lines += ["", f"Trie constraint cost (p50, same beam width): {', '.join(overheads)}.", ""]
    return "\n".join(lines)


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 4))
    for bf16 in (False, True):
        rows = [r for r in results["training"] if r["bf16"] == bf16]
        if not rows:
            continue
        left.plot([r["history_length"] for r in rows], [r["samples_per_s"] for r in rows], marker="o", label="bf16" if bf16 else "fp32")
    left.set(xlabel="history length (items)", ylabel="training samples/s", title="Training throughput")
    left.legend()
    for constrained in (True, False):
        rows = [r for r in results["decoding"] if r["constrained"] == constrained and r["items"] == max(x["items"] for x in results["decoding"])]
        right.plot([r["history_length"] for r in rows], [r["p50_ms"] for r in rows], marker="o", label="trie" if constrained else "no trie")
    right.set(xlabel="history length (items)", ylabel="p50 latency, 1 user (ms)", title="Recommendation latency")
    right.legend()
    fig.tight_layout()
    with atomic_write(path, "wb", encoding=None) as handle:
        fig.savefig(handle, format="png", dpi=100)
    plt.close(fig)


if __name__ == "__main__":
    main()
