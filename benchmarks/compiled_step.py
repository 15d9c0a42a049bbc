"""Whether ``torch.compile`` speeds up the CPU training step: the library's eager step against the same step compiled.

The recommender (the ``params.yaml`` backbone, title-ID batches of real ML-100k prompts, as
``training_step.py``) trains with the training loop's own step; the compiled variant wraps the
step's forward and loss (encoder, decoder, cross-entropy under bf16 autocast, eager attention) in
``torch.compile(dynamic=True)``, so Inductor may fuse the casts, masks, softmaxes and layer norms
that take about half of an eager step, and length-grouped batches do not recompile per shape.
Both variants run in one process from the same fresh weights, eager first, then compiled, then
eager again, so a host that slows down mid-run shows as a gap between the two eager blocks.

    python benchmarks/compiled_step.py --out benchmarks/results/compiled-step

Writes ``OUT.json`` and ``OUT.md``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import autocast, build_seq2seq, training_kernels
from idgenrec.recommender.training import apply_gradients, make_optimizer, optimisation_step
from speed import title_id_batches

CPU = torch.device("cpu")


def compiled_step(model, config):
    """A step whose forward and loss run through ``torch.compile``; backward, clipping and update as the library's."""

    def loss_of(input_ids, attention_mask, target_rows, decoder_input_ids, labels):
        encoded = model.encoder(input_ids=input_ids, attention_mask=attention_mask).last_hidden_state
        logits = model.decoder(
            input_ids=decoder_input_ids, encoder_hidden_states=encoded.index_select(0, target_rows),
            encoder_attention_mask=attention_mask.index_select(0, target_rows),
        ).logits
        return F.cross_entropy(logits.float().reshape(-1, logits.size(-1)), labels.reshape(-1), ignore_index=-100)

    compiled = torch.compile(loss_of, dynamic=True)

    def step(batch, optimizer, schedule):
        with autocast(CPU, config.bf16), training_kernels(CPU, model):
            loss = compiled(batch.input_ids, batch.attention_mask, batch.target_rows, batch.decoder_input_ids, batch.labels)
        return apply_gradients(loss, model.parameters(), optimizer, schedule, config.grad_clip)

    return step


def timed(model, step, batches, config, warmup: int, blocks: int) -> dict:
    """Seconds of the first ``warmup`` steps (compilation, for the compiled step), then steps/s per block of the rest."""
    optimizer, schedule = make_optimizer(model.parameters(), 1e-4, config, len(batches) * (blocks + 1))
    model.train()
    started = time.perf_counter()
    for batch in batches[:warmup]:
        step(batch, optimizer, schedule)
    first = time.perf_counter() - started
    rates = []
    for _ in range(blocks):
        started = time.perf_counter()
        for batch in batches[warmup:]:
            step(batch, optimizer, schedule)
        rates.append((len(batches) - warmup) / (time.perf_counter() - started))
    model.eval()
    return {"first_steps_seconds": round(first, 1), "steps_per_s": [round(r, 3) for r in rates], "median": statistics.median(rates)}


def render_markdown(results: dict) -> str:
    rows = [f"| {name} | {r['first_steps_seconds']:.0f} | {' / '.join(f'{x:.2f}' for x in r['steps_per_s'])} | {r['median']:.2f} |"
            for name, r in results["variants"].items()]
    return "\n".join([
        f"### torch.compile on the CPU training step (ml-100k, {results['layers']} layers, batch {results['batch_size']}, bf16)", "",
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads. One process, in the order shown; "
        f"the first {results['warmup_steps']} steps of each variant are timed apart (the compiled one compiles there).", "",
        f"| step | first {results['warmup_steps']} steps (s) | steps/s per block | median |", "|---|---|---|---|", *rows, "",
        f"`{results['command']}`", "",
    ])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--steps", type=int, default=60, help="Batches per variant; each block times all but the first ones.")
    parser.add_argument("--warmup-steps", type=int, default=10)
    parser.add_argument("--blocks", type=int, default=3)
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension.")
    args = parser.parse_args()

    params, _, tokenizer, batches = title_id_batches(args.params, args.prepared, args.steps)
    config = params.training

    def library_step(model):
        return lambda batch, optimizer, schedule: optimisation_step(model, batch, optimizer, schedule, CPU, config)

    variants = {}
    for name in ("eager (library)", "compiled", "eager again"):
        model = build_seq2seq(params.backbone, tokenizer, "recommender", seed=0)
        step = compiled_step(model, config) if name == "compiled" else library_step(model)
        variants[name] = timed(model, step, batches, config, args.warmup_steps, args.blocks)
        print(name, variants[name], flush=True)

    results = {
        "command": f"python benchmarks/compiled_step.py --steps {args.steps} --warmup-steps {args.warmup_steps} "
                   f"--blocks {args.blocks} --out {args.out}",
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "layers": f"{params.backbone.encoder_layers}+{params.backbone.decoder_layers}", "batch_size": config.batch_size,
        "warmup_steps": args.warmup_steps, "variants": variants,
    }
    write_json(args.out.with_suffix(".json"), results)
    with atomic_write(args.out.with_suffix(".md")) as handle:
        handle.write(render_markdown(results))
    print(render_markdown(results))


if __name__ == "__main__":
    main()
