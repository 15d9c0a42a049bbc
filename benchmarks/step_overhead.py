"""Where a training step's time goes on a GPU: the library's loop against the bare step, one process.

- bare: ``optimisation_step`` over pre-built batches (what ``gpu_check.py`` times), the queue drained
  once at the end;
- loop: ``train_recommender_phase`` over the same number of steps (prompt encoding, batching,
  progress and loss reads included);
- loop, host waits every step: the same loop with the library's old habits put back, pageable
  batch copies and the loss read after every step (each makes the host wait for the GPU);
- where the bare step's time goes: ``torch.profiler`` over a few steps (host time against GPU
  kernel time) and cProfile's top functions of the loop.

    python benchmarks/step_overhead.py --params profiles/paper-offline.yaml --prepared artifacts/prepared \
        --out benchmarks/results/step-overhead-h200

Title IDs feed the recommender (no generator needed), as in ``gpu_check.py``. ``--device cpu``
only tries the script out.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import pstats
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.config import PhaseConfig
from idgenrec.recommender import training
from gpu_check import cuda_seconds, recommender_setup


def loop_steps_per_second(model, encoder, samples, config, steps: int) -> float:
    """Steps per second of the library's recommender loop over ``steps`` batches."""
    phase = PhaseConfig(phase="recommender", epochs=steps * config.batch_size / len(samples), learning_rate=1e-5)
    seconds = cuda_seconds(lambda: training.train_recommender_phase(model, encoder, samples, config, phase, seed=0))
    return steps / seconds


@contextlib.contextmanager
def host_waits():
    """Put back the pageable batch copies and the per-step loss read that the library dropped."""
    saved = training.to_device, training.optimisation_step

    def waiting_step(*args, **kwargs):
        loss = saved[1](*args, **kwargs)
        loss.item()
        return loss

    training.to_device, training.optimisation_step = (lambda tensor, device: tensor.to(device)), waiting_step
    try:
        yield
    finally:
        training.to_device, training.optimisation_step = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--params", type=Path, default=Path("profiles/paper-offline.yaml"))
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--steps", type=int, default=300, help="Steps per timed loop.")
    parser.add_argument("--profiled-steps", type=int, default=10)
    parser.add_argument("--device", default="cuda", help="cpu only to try the script out")
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension (.json and .md).")
    args = parser.parse_args()
    device = torch.device(args.device)
    params, _, tokenizer, _, model, encoder, samples = recommender_setup(args.params, args.prepared, device)
    config = params.training
    rng = random.Random(0)
    started = time.perf_counter()
    batches = list(training.iterate_batches(encoder, samples, rng.sample(range(len(samples)), config.batch_size * args.steps),
                                            config, rng, tokenizer.pad_token_id, model.config.decoder_start_token_id))
    collate_ms = 1000 * (time.perf_counter() - started) / len(batches)
    optimizer, schedule = training.make_optimizer(model.parameters(), 1e-5, config, 10 * len(batches))
    model.train()
    for batch in batches[:5]:  # kernels chosen, memory pooled
        training.optimisation_step(model, batch, optimizer, schedule, device, config)
    bare = len(batches) / cuda_seconds(lambda: [training.optimisation_step(model, b, optimizer, schedule, device, config) for b in batches])
    loop = loop_steps_per_second(model, encoder, samples, config, args.steps)
    with host_waits():
        waiting = loop_steps_per_second(model, encoder, samples, config, args.steps)
    print(f"bare {bare:.1f} steps/s, loop {loop:.1f}, loop waiting every step {waiting:.1f}; collate {collate_ms:.1f} ms", flush=True)

    # where the bare step's time goes
    model.train()
    activities = [torch.profiler.ProfilerActivity.CPU] + ([torch.profiler.ProfilerActivity.CUDA] if device.type == "cuda" else [])
    profiled = batches[: args.profiled_steps]
    with torch.profiler.profile(activities=activities) as profiler:
        wall = cuda_seconds(lambda: [training.optimisation_step(model, b, optimizer, schedule, device, config) for b in profiled])
    events = profiler.key_averages()
    kernel_us = sum(e.self_device_time_total for e in events if e.device_type == torch.autograd.DeviceType.CUDA)
    launches = sum(e.count for e in events if e.key in ("cudaLaunchKernel", "cudaLaunchKernelExC", "cuLaunchKernel", "cuLaunchKernelEx"))
    top_host = events.table(sort_by="self_cpu_time_total", row_limit=15)
    print(top_host, flush=True)

    # the loop's Python, by function
    cprofile = cProfile.Profile()
    cprofile.runcall(loop_steps_per_second, model, encoder, samples, config, min(args.steps, 100))
    text = io.StringIO()
    pstats.Stats(cprofile, stream=text).sort_stats("tottime").print_stats(20)

    results = {
        "command": " ".join(sys.argv),
        "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu",
        "torch": torch.__version__,
        "backbone": params.backbone.model_dump(),
        "batch_size": config.batch_size,
        "history_length": config.history_length,
        "steps_per_s": {"bare step": bare, "library loop": loop, "library loop, host waits every step": waiting},
        "collate_ms_per_batch": collate_ms,
        "profiled_steps": len(profiled),
        "profiled_ms_per_step": 1000 * wall / len(profiled),
        "gpu_kernel_ms_per_step": kernel_us / 1000 / len(profiled),
        "kernel_launches_per_step": launches / len(profiled),
        "top_host_ops": top_host,
        "loop_top_functions": text.getvalue(),
    }
    write_json(args.out.with_suffix(".json"), results)
    with atomic_write(args.out.with_suffix(".md")) as handle:
        handle.write(render_markdown(results))
    print(render_markdown(results), flush=True)


def render_markdown(results: dict) -> str:
    rows = "\n".join(f"| {name} | {rate:.1f} | {1000 / rate:.1f} |" for name, rate in results["steps_per_s"].items())
    return (
        f"### Where a training step's time goes: {results['device']}\n\n"
        f"`{results['command']}` (torch {results['torch']})\n\n"
        f"| recommender training, batch {results['batch_size']} | steps/s | ms/step |\n|---|---|---|\n{rows}\n\n"
        f"Building one batch on the host: {results['collate_ms_per_batch']:.1f} ms. Over "
        f"{results['profiled_steps']} profiled bare steps of {results['profiled_ms_per_step']:.1f} ms, the GPU ran "
        f"kernels for {results['gpu_kernel_ms_per_step']:.1f} ms of each, from "
        f"{results['kernel_launches_per_step']:.0f} kernel launches.\n"
    )


if __name__ == "__main__":
    main()
