"""Speed and cost of the recommender, each as a ratio measured in this one process.

- training throughput (samples/s, tokens/s) and model FLOP utilisation (FLOPs counted by
  torch's FlopCounterMode) against a dense bf16 / fp32 matmul peak measured here;
- bf16 autocast against fp32 for the same steps;
- recommendation latency p50 / p95 for one user and batch throughput, with and without the
  trie constraint at the same beam width;
- how latency grows with catalogue size and history length; peak memory (RSS).

    python benchmarks/speed.py --prepared artifacts/prepared --out benchmarks/results/speed

Writes ``speed.json``, ``speed.md`` and ``speed.png``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import platform
import random
import resource
import statistics
import time
from pathlib import Path

import torch
from torch.utils.flop_counter import FlopCounterMode

import idgenrec  # noqa: F401
from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import build_seq2seq, build_tokenizer, vocabulary_corpus
from idgenrec.config import BackboneConfig, IdConfig, PhaseConfig, TrainingConfig, load_params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids import make_id_table
from idgenrec.ids.trie import IdTrie
from idgenrec.recommender.model import DecodingSettings, IDGenRecModel
from idgenrec.recommender.samples import PromptEncoder, collate, training_samples
from idgenrec.recommender.training import iterate_batches, make_optimizer, optimisation_step


def matmul_peak(dtype: torch.dtype, size: int = 1024, seconds: float = 3.0) -> float:
    """Dense matmul FLOP/s on this machine for ``dtype`` (best of repeated square products)."""
    a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
    for _ in range(3):
        a @ b
    best, deadline = 0.0, time.perf_counter() + seconds
    while time.perf_counter() < deadline:
        start = time.perf_counter()
        for _ in range(5):
            a @ b
        best = max(best, 5 * 2 * size**3 / (time.perf_counter() - start))
    return best


def matmul_peaks() -> dict[str, float]:
    """FLOP/s of both precisions the model may train in: what MFU and host comparisons are held to."""
    return {"bf16": matmul_peak(torch.bfloat16), "fp32": matmul_peak(torch.float32)}


def render_peaks(peak_flops: dict[str, float]) -> str:
    """'bf16 1410 GFLOP/s, fp32 179 GFLOP/s'."""
    return ", ".join(f"{precision} {flops / 1e9:.0f} GFLOP/s" for precision, flops in peak_flops.items())


def training_throughput(model, batches, bf16: bool, config: TrainingConfig) -> dict:
    """Time optimisation steps over ``batches`` (after two warm-up steps); count FLOPs of one."""
    device = torch.device("cpu")
    optimizer, schedule = make_optimizer(model.parameters(), 1e-4, config, len(batches) + 2)

    settings = config.model_copy(update={"bf16": bf16})

    def step(batch) -> None:
        optimisation_step(model, batch, optimizer, schedule, device, settings)  # exactly the training loop's step

    model.train()
    for batch in batches[:2]:
        step(batch)
    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    flops_per_sample = counter.get_total_flops() / batches[0].labels.size(0)
    start = time.perf_counter()
    samples = tokens = 0
    for batch in batches:
        step(batch)
        samples += batch.labels.size(0)
        tokens += int(batch.attention_mask.sum()) + int((batch.labels != -100).sum())
    seconds = time.perf_counter() - start
    model.eval()
    return {"samples_per_s": samples / seconds, "tokens_per_s": tokens / seconds,
            "flops_per_sample": flops_per_sample, "achieved_flops": flops_per_sample * samples / seconds}


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


@contextlib.contextmanager
def patched(module, **names):
    """``module``'s attributes ``names`` replaced by the given values inside the block, restored after it.

    How a benchmark times the library with one piece swapped for what it replaced.
    """
    saved = {name: getattr(module, name) for name in names}
    for name, value in names.items():
        setattr(module, name, value)
    try:
        yield
    finally:
        for name, value in saved.items():
            setattr(module, name, value)


def title_id_setup(params_path: Path, prepared: Path):
    """(params, dataset, tokenizer, ID table, its quality) for a recommender benchmark.

    Title IDs: the same length regime as learned IDs, without needing a trained generator.
    """
    params = load_params(params_path)
    dataset = SequenceDataset.load(prepared)
    tokenizer = build_tokenizer(params.backbone, vocabulary_corpus(dataset))
    table, quality = make_id_table("title", dataset, None, tokenizer, IdConfig(kind="title"))
    return params, dataset, tokenizer, table, quality


def title_id_batches(params_path: Path, prepared: Path, steps: int):
    """(params, dataset, tokenizer, ``steps`` full training batches of title-ID prompts) for a step-timing benchmark.

    The training loop's own batching (length-grouped, the configured templates) over a fixed
    random sample of ML-100k's training prefixes, so every variant times the same batches.
    """
    params, dataset, tokenizer, table, _ = title_id_setup(params_path, prepared)
    config = params.training
    encoder = PromptEncoder(tokenizer, table.token_ids(tokenizer), config.history_length)
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], config.history_length)
    rng = random.Random(0)
    indices = rng.sample(range(len(samples)), config.batch_size * steps)
    batches = list(iterate_batches(encoder, samples, indices, config, rng, tokenizer.pad_token_id, 0))
    return params, dataset, tokenizer, batches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=30, help="Timed training steps per setting.")
    parser.add_argument("--users", type=int, default=60, help="Users timed one at a time.")
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
    results: dict = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads(),
                    "processor": platform.processor() or platform.machine()},
        "model": {"layers": [backbone.encoder_layers, backbone.decoder_layers], "vocabulary": len(tokenizer),
                  "parameters": sum(p.numel() for p in recommender.parameters()), "id_tokens_mean": quality.get("mean_tokens")},
    }
    results["peak_flops"] = matmul_peaks()

    # -- training throughput and MFU, by history length and precision ------------------
    config = TrainingConfig(batch_size=params.training.batch_size, history_length=params.training.history_length)
    training = []
    for history_length in sorted({5, params.training.history_length, 20}):
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
        for bf16 in (False, True):
            row = training_throughput(recommender, batches, bf16, config)
            peak = results["peak_flops"]["bf16" if bf16 else "fp32"]
            row |= {"history_length": history_length, "bf16": bf16, "mfu": row["achieved_flops"] / peak,
                    "prompt_tokens_mean": statistics.fmean(len(p.input_ids) for p in prompts)}
            training.append(row)
            print(f"train history={history_length} bf16={bf16}: {row['samples_per_s']:.0f} samples/s, MFU {row['mfu']:.1%}", flush=True)
    results["training"] = training

    # -- decoding: constrained vs unconstrained, by history length and catalogue size ----
    histories, _ = dataset.split_examples("test")
    rng.shuffle(histories)
    decoding = []
    for history_length in sorted({5, params.training.history_length, 20}):
        model = IDGenRecModel(recommender, tokenizer, table, DecodingSettings(history_length, params.training.num_beams, True))
        for constrained in (True, False):
            row = latency(model, histories, constrained, args.users)
            row |= {"history_length": history_length, "constrained": constrained, "items": dataset.num_items}
            decoding.append(row)
            print(f"decode history={history_length} constrained={constrained}: p50 {row['p50_ms']:.1f} ms", flush=True)
    full = IDGenRecModel(recommender, tokenizer, table, DecodingSettings(params.training.history_length, params.training.num_beams, True))
    for num_items in (100, 300, 1000):
        if num_items < dataset.num_items:
            row = latency(subset_model(full, num_items, rng), histories, True, args.users)
            decoding.append(row | {"history_length": params.training.history_length, "constrained": True, "items": num_items})
    results["decoding"] = decoding
    results["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024

    write_json(args.out.with_suffix(".json"), results)
    with atomic_write(args.out.with_suffix(".md")) as handle:
        handle.write(render_markdown(results))
    plot(results, args.out.with_suffix(".png"))
    print(render_markdown(results))


def render_markdown(results: dict) -> str:
    peak = results["peak_flops"]
    lines = [
        "## Speed (CPU, one process)", "",
        f"Recommender: {results['model']['layers'][0]}+{results['model']['layers'][1]} layers, "
        f"{results['model']['parameters'] / 1e6:.1f}M parameters, vocabulary {results['model']['vocabulary']}; "
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads. "
        f"Measured matmul peak: {render_peaks(peak)}. "
        f"Peak RSS {results['peak_rss_mb']:.0f} MB.", "",
        "MFU is the model's FLOPs per second over a measured matmul peak: over the peak of the precision "
        "the step runs in, and over the fp32 peak (what the same model trained without autocast is held to).", "",
        "| history | precision | prompt tokens | samples/s | tokens/s | MFU (vs same-precision peak) | MFU (vs fp32 peak) |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in results["training"]:
        lines.append(f"| {row['history_length']} | {'bf16' if row['bf16'] else 'fp32'} | {row['prompt_tokens_mean']:.0f} | "
                     f"{row['samples_per_s']:.0f} | {row['tokens_per_s']:.0f} | {row['mfu']:.1%} | "
                     f"{row['achieved_flops'] / peak['fp32']:.1%} |")
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
