"""The causal recommender against the seq2seq one: training throughput at the same batch of tokens, and
validation NDCG@10 against training wall time.

speed: title IDs on the prepared data (no trained generator needed), both recommenders built from
the parameter file's backbone; the seq2seq batch is ``--seq2seq-batch`` prompts of the last
``--seq2seq-history`` items (the seq2seq CPU profile's 64 and 10); the causal batch takes as many
windows of ``--causal-history`` items as hold the same number of tokens. Both time the training loop's own optimisation step, in one
process, alternating over ``--rounds``; FLOPs per step come from torch's FlopCounterMode and MFU
is against the measured matmul peak of the precision the step runs in.

    python -m benchmarks.architectures speed --prepared artifacts/prepared --out benchmarks/results/architectures-speed

curve: the validation curves that training runs recorded (a training folder or its
``training_curve.json``), drawn against wall time in one plot, with each run's test metrics when
given. Runs from different machines or precisions are not comparable in time: the label says which.

    python -m benchmarks.architectures curve --run LABEL WORKDIR_OR_CURVE [METRICS_JSON] ... --out benchmarks/results/architectures-curve

Writes ``OUT.json`` and ``OUT.md`` (and ``OUT.png`` for the curve). No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import time
from pathlib import Path

import torch

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from benchmarks.common import batch_counts, matmul_peaks, output_path, render_peaks, title_id_setup


def _batches(params, dataset, tokenizer, table, architecture: str, history: int, count: int, token_budget: int | None,
             seed: int, prompts_per_batch: int = 64):
    """``count`` training batches of ``architecture``, drawn with the training loop's own batching: seq2seq
    batches of ``prompts_per_batch`` prompts, causal ones of as many whole windows as fill ``token_budget``."""
    from idgenrec.recommender.samples import PromptEncoder, training_samples
    from idgenrec.recommender.sequences import SequenceEncoder, collate_sequences, training_windows
    from idgenrec.recommender.training import iterate_batches

    config = params.training.model_copy(update={"history_length": history, "batch_size": prompts_per_batch})
    sequences = [dataset.train_sequence(u) for u in range(dataset.num_users)]
    item_tokens = table.token_ids(tokenizer)
    rng = random.Random(seed)
    if architecture == "seq2seq":
        encoder = PromptEncoder(tokenizer, item_tokens, history, 512)
        samples = training_samples(sequences, history)
        indices = rng.sample(range(len(samples)), config.batch_size * count)
        return list(iterate_batches(encoder, samples, indices, config, rng, tokenizer.pad_token_id, tokenizer.cls_token_id))
    encoder = SequenceEncoder(tokenizer, item_tokens, history, 512)
    windows = training_windows(sequences, history, history - 1)
    full = [encoder.encode_window(w) for w in windows if len(w.items) == history]  # whole windows: a steady size
    rng.shuffle(full)
    batches, cursor = [], 0
    for _ in range(count):
        chosen, tokens = [], 0
        while tokens < token_budget:
            chosen.append(full[cursor % len(full)])
            tokens += len(chosen[-1].input_ids)
            cursor += 1
        batches.append(collate_sequences(chosen, tokenizer.pad_token_id))
    return batches


def measure_speed(args) -> dict:
    from torch.utils.flop_counter import FlopCounterMode

    from idgenrec.backbone import build_seq2seq
    from idgenrec.backbone.causal import build_causal
    from idgenrec.backbone.seq2seq import training_precision
    from idgenrec.recommender.training import make_optimizer, optimisation_step

    from idgenrec.recommender.prompts import HISTORY_SEPARATOR

    params, dataset, tokenizer, table, _ = title_id_setup(args.params, args.prepared)
    separator = tokenizer(HISTORY_SEPARATOR.strip(), add_special_tokens=False)["input_ids"][0]
    device = torch.device("cpu")
    seq2seq_batches = _batches(params, dataset, tokenizer, table, "seq2seq", args.seq2seq_history, args.steps + 2, None, 0,
                               args.seq2seq_batch)
    budget = int(statistics.mean(batch_counts(b, separator)["tokens"] for b in seq2seq_batches))
    causal_batches = _batches(params, dataset, tokenizer, table, "causal", args.causal_history, args.steps + 2, budget, 0)
    backbone = params.backbone
    models = {
        "seq2seq": (build_seq2seq(backbone, tokenizer, "recommender", seed=0), seq2seq_batches),
        "causal": (build_causal(backbone, tokenizer, seed=0), causal_batches),
    }
    precision = training_precision(device, params.training.bf16)
    peaks = matmul_peaks()
    results: dict[str, dict] = {}
    for name, (model, batches) in models.items():
        optimizer, schedule = make_optimizer(model.parameters(), 1e-4, params.training, 10 * len(batches))
        model.train()
        for batch in batches[:2]:
            optimisation_step(model, batch, optimizer, schedule, device, params.training)
        counter = FlopCounterMode(display=False)
        with counter:
            optimisation_step(model, batches[0], optimizer, schedule, device, params.training)
        counts = [batch_counts(b, separator) for b in batches[2:]]
        results[name] = {
            "flops_per_step": counter.get_total_flops(), "optimizer": optimizer, "schedule": schedule, "seconds": [],
            "per_step": {key: statistics.mean(c[key] for c in counts) for key in counts[0]},
            "batch": {"size": batches[0].size, "history": args.seq2seq_history if name == "seq2seq" else args.causal_history},
        }
    for _ in range(args.rounds):
        for name, (model, batches) in models.items():
            entry = results[name]
            start = time.perf_counter()
            for batch in batches[2:]:
                optimisation_step(model, batch, entry["optimizer"], entry["schedule"], device, params.training)
            entry["seconds"].append((time.perf_counter() - start) / len(batches[2:]))
    # The peak is measured before and after the timed steps and the higher taken: a busy host
    # lowers a single reading, and an MFU against a low peak overstates the step.
    peaks = {precision: max(flops, matmul_peaks()[precision]) for precision, flops in peaks.items()}
    peak = peaks[precision]
    rows = {}
    for name, entry in results.items():
        step = statistics.median(entry["seconds"])
        per_step = entry["per_step"]
        rows[name] = {
            "seconds_per_step": step, "batch": entry["batch"],
            "tokens_per_step": per_step["tokens"], "target_items_per_step": per_step["items"],
            "target_positions_per_step": per_step["positions"],
            "target_items_per_s": per_step["items"] / step, "target_positions_per_s": per_step["positions"] / step,
            "tokens_per_s": per_step["tokens"] / step, "flops_per_step": entry["flops_per_step"],
            "mfu": entry["flops_per_step"] / step / peak,
        }
    return {
        "setting": {
            "cpu": platform.processor() or platform.machine(), "threads": torch.get_num_threads(), "precision": precision,
            "matmul_peak_flops": peak, "peaks": render_peaks(peaks), "dataset": str(args.prepared),
            "ids": "title", "params": str(args.params), "steps": args.steps, "rounds": args.rounds,
            "backbone": {k: getattr(backbone, k) for k in ("profile", "encoder_layers", "decoder_layers", "causal_layers", "causal_dropout", "dropout")},
        },
        "architectures": rows,
        "ratio": {key: rows["causal"][key] / rows["seq2seq"][key] for key in ("target_items_per_s", "target_positions_per_s", "tokens_per_s")},
    }


def render_speed(result: dict) -> str:
    s = result["setting"]
    lines = [
        "### Training step: causal against seq2seq recommender, same tokens per batch",
        "",
        f"{s['dataset']}, title IDs, {s['precision']}, {s['threads']} threads, CPU `{s['cpu']}` (matmul peak {s['peaks']}); "
        f"backbone {s['backbone']}; median of {s['rounds']} rounds of {s['steps']} steps each.",
        "",
        "| architecture | batch | tokens/step | s/step | target items/s | target positions/s | tokens/s | MFU |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for name, r in result["architectures"].items():
        unit = "prompts" if name == "seq2seq" else "windows"
        lines.append(
            f"| {name} | {r['batch']['size']} {unit} of {r['batch']['history']} items | {r['tokens_per_step']:.0f} | "
            f"{r['seconds_per_step']:.3f} | {r['target_items_per_s']:.0f} | {r['target_positions_per_s']:.0f} | "
            f"{r['tokens_per_s']:.0f} | {r['mfu']:.1%} |"
        )
    ratio = result["ratio"]
    lines += ["", f"causal / seq2seq: {ratio['target_items_per_s']:.1f}x target items/s, "
              f"{ratio['target_positions_per_s']:.1f}x target positions/s, {ratio['tokens_per_s']:.2f}x tokens/s."]
    return "\n".join(lines) + "\n"


def read_curve(source: Path) -> list[dict]:
    """The recommender phases' validation records of a training folder (its state) or of a training-curve
    file (``metrics/training_curve.json``), with cumulative training seconds."""
    from idgenrec.recommender.alternating import TrainingState

    if source.is_file():
        records = json.loads(source.read_text(encoding="utf-8"))
    else:
        state = TrainingState.load(source)
        if state is None:
            raise FileNotFoundError(f"{source}: no training state")
        records = state.records
    points, offset, last_phase, phase_end = [], 0.0, None, 0.0
    for record in records:
        if record.get("phase_index") != last_phase:
            offset, last_phase = phase_end, record.get("phase_index")
        seconds = offset + record.get("seconds", 0.0)
        phase_end = max(phase_end, seconds)
        if record.get("phase") == "recommender":
            points.append({"seconds": seconds, "phase": record["phase_index"], "epoch": record["epoch"],
                           "valid_ndcg@10": record["valid_ndcg@10"], "train_loss": record["train_loss"]})
    return points


def measure_curves(args) -> dict:
    runs = {}
    for label, workdir, *metrics in args.run:
        entry = {"source": workdir, "curve": read_curve(Path(workdir))}
        if metrics:
            entry["test"] = json.loads(Path(metrics[0]).read_text(encoding="utf-8"))
        runs[label] = entry
    return {"runs": runs}


def render_curves(result: dict, out: Path) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axis = plt.subplots(figsize=(7, 4))
    lines = ["### Validation NDCG@10 against training wall time", "",
             "| run | best valid N@10 | at (min) | test N@10, nothing excluded | test N@10, seen excluded |", "|---|---|---|---|---|"]
    for label, run in result["runs"].items():
        curve = run["curve"]
        axis.plot([p["seconds"] / 60 for p in curve], [p["valid_ndcg@10"] for p in curve], "o-", label=label, markersize=3)
        best = max(curve, key=lambda p: p["valid_ndcg@10"])
        test = run.get("test", {})
        cells = [f"{test[k]:.4f}" if k in test else "-" for k in ("test/seen_included/ndcg@10", "test/seen_excluded/ndcg@10")]
        lines.append(f"| {label} | {best['valid_ndcg@10']:.4f} | {best['seconds'] / 60:.1f} | {' | '.join(cells)} |")
    axis.set_xlabel("training wall time (min)")
    axis.set_ylabel("validation NDCG@10 (seen excluded)")
    axis.grid(alpha=0.3)
    axis.legend(fontsize=8)
    figure.tight_layout()
    with atomic_write(output_path(out, ".png"), "wb", encoding=None) as handle:
        figure.savefig(handle, format="png", dpi=110)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    speed = sub.add_parser("speed", help="training throughput of both architectures at the same tokens per batch")
    speed.add_argument("--params", type=Path, default=Path("params.yaml"))
    speed.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    speed.add_argument("--seq2seq-history", type=int, default=10)
    speed.add_argument("--seq2seq-batch", type=int, default=64, help="prompts per seq2seq batch (profiles/cpu-seq2seq.yaml)")
    speed.add_argument("--causal-history", type=int, default=50)
    speed.add_argument("--steps", type=int, default=8)
    speed.add_argument("--rounds", type=int, default=3)
    speed.add_argument("--out", type=Path, required=True)
    curve = sub.add_parser("curve", help="validation curves of finished training runs against wall time")
    curve.add_argument("--run", nargs="+", action="append", required=True, metavar="LABEL WORKDIR [METRICS]")
    curve.add_argument("--out", type=Path, required=True)
    args = parser.parse_args()
    if args.command == "speed":
        result = measure_speed(args)
        markdown = render_speed(result)
    else:
        result = measure_curves(args)
        markdown = render_curves(result, args.out)
    write_json(output_path(args.out, ".json"), result)
    with atomic_write(output_path(args.out, ".md")) as handle:
        handle.write(markdown)
    print(markdown)


if __name__ == "__main__":
    main()
