"""What the benchmark scripts share: the suite's table of scripts, the machine a measurement ran on,
run settings (params plus overrides, per seed and ID kind), matmul peaks and timed training steps.

Every script imports from here (``from benchmarks.common import ...``) and runs as
``python -m benchmarks.NAME`` from the project root; no script imports another.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json

RESULTS = Path("benchmarks/results")
BEAUTY_RAW = Path("../shared/data/amazon-p5/Beauty")  # the paper's Amazon Beauty (P5 layout), beside the project
# Where each dataset's prepared splits are: ML-100k's are the pipeline's; Beauty is prepared on first use.
PREPARED = {"ml-100k": Path("artifacts/prepared"), "beauty": Path("bench/prepared-beauty")}

KINDS = ("learned", "title", "random")  # ID kinds, in the paper's order
BASELINES = ("pop", "sasrec")  # the baselines quality.py runs


# -- the suite ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Benchmark:
    """One script of the suite: what it measures, how to run it, what it costs on a 2-core CPU.

    ``suites`` names the sets of ``python -m benchmarks run SUITE`` that include it (none: run by
    hand, e.g. it needs a GPU or trained models). ``commands`` are argument lists for
    ``python -m benchmarks.NAME`` (or a whole command where the first word is not an option).
    """

    name: str
    measures: str
    commands: tuple[tuple[str, ...], ...]
    running_time: str
    outputs: str
    suites: tuple[str, ...] = ()
    needs: str = ""

    def argv(self, command: tuple[str, ...]) -> list[str]:
        if command and command[0] in WHOLE_COMMANDS:
            return list(command)
        return [sys.executable, "-m", f"benchmarks.{self.name}", *command]


WHOLE_COMMANDS = ("dvc",)  # commands run as written, not as a benchmarks module
QUALITY_ML100K = "benchmarks/results/quality-ml-100k"
BEAMS_PROFILE = "profiles/cpu-beams.yaml"


def beauty_items_run(kind: str, seed: str, epochs: float, workdir: str, *settings: str, label: str | None = None) -> tuple[str, ...]:
    """quality.py's arguments for an Amazon Beauty run on params.yaml's objective: a 2-epoch warm-up plus ``settings``,
    2,000 test and 1,000 selection users, ``epochs`` of the first recommender phase, then the ID phase and re-fit."""
    label = label or f"{epochs:g}ep"
    return ("--dataset", "beauty", "--kinds", kind, "--seeds", seed, "--baselines", "--set", "warmup.epochs=2", *settings,
            "--set", "evaluation.sample_users=2000", "--set", "training.selection_users=1000",
            "--set", f"training.schedule=[{{phase: recommender, epochs: {epochs:g}, learning_rate: 0.002}}, "
            "{phase: ids, epochs: 0.005, learning_rate: 0.001}, {phase: recommender, epochs: 0.25, learning_rate: 0.0005}]",
            "--label", label, "--workdir", workdir,
            "--out", f"benchmarks/results/quality-beauty-{kind}-items-{label}-seed{seed}")


# The suite, in the order `python -m benchmarks run` executes it. A new script adds one entry.
SCRIPTS: tuple[Benchmark, ...] = (
    Benchmark("pipeline", "The default pipeline: popularity, SASRec and learned IDs, seed 0, on ML-100k "
              "(writes metrics/*.json, which the report reads as seed 0).",
              (("dvc", "repro"),), "about 25 min", "metrics/*.json", suites=("quick", "full")),
    Benchmark("quality", "Test and validation metrics of every ID kind against popularity and SASRec, "
              "one process per set of seeds, same protocol as `idgenrec evaluate`.",
              # one process per ID kind and seed (the pipeline gives learned IDs' seed 0)
              (*(("--kinds", kind, "--seeds", seed, "--baselines", "--label", "default", "--workdir", "bench/quality-items",
                  "--out", f"{QUALITY_ML100K}-{kind}-seed{seed}")
                 for kind in KINDS for seed in ("0", "1", "2") if (kind, seed) != ("learned", "0")),
               ("--kinds", "--seeds", "1", "2", "--baselines", *BASELINES, "--out", f"{QUALITY_ML100K}-baselines-seeds12"),
               ("--dataset", "beauty", "--kinds", "--seeds", "0", "1", "2", "--baselines", *BASELINES,
                "--set", "evaluation.sample_users=2000", "--set", "sasrec.max_epochs=50", "--set", "sasrec.patience=10",
                "--out", "benchmarks/results/quality-beauty-baselines"),
               # the token loss and beam search (profiles/cpu-beams.yaml): 2.5 and 5 recommender epochs
               *(("--dataset", "beauty", "--params", BEAMS_PROFILE, "--kinds", kind, "--seeds", "0", "--baselines",
                  "--set", "warmup.epochs=2",
                  "--set", "evaluation.sample_users=2000", "--set", "training.selection_users=1000",
                  "--out", f"benchmarks/results/quality-beauty-{kind}-seed0") for kind in KINDS),
               ("--dataset", "beauty", "--params", BEAMS_PROFILE, "--kinds", "learned", "--seeds", "0", "--baselines",
                "--set", "warmup.epochs=2", "--set", "evaluation.sample_users=2000", "--set", "training.selection_users=1000",
                "--set", "training.schedule=[{phase: recommender, epochs: 5, learning_rate: 0.002}, "
                "{phase: ids, epochs: 0.005, learning_rate: 0.001}, {phase: recommender, epochs: 0.25, learning_rate: 0.0005}]",
                "--label", "5ep", "--out", "benchmarks/results/quality-beauty-learned-5ep-seed0"),
               # params.yaml's item loss and ranking, 2.5 recommender epochs (every ID kind shares seed 0's generator)
               *(beauty_items_run(kind, "0", 2.5, "bench/beauty-items") for kind in KINDS),
               # about an hour of training each on one core (bf16 where the CPU has kernels; generators warmed up in
               # fp32): 4 epochs of learned IDs (3 seeds), 3 of title IDs (longer IDs, slower epochs)
               *(beauty_items_run(kind, seed, epochs, "bench/beauty-long", "--set", "warmup.bf16=false")
                 for kind, epochs, seeds in (("learned", 4, "012"), ("title", 3, "0")) for seed in seeds),
               # learned IDs warmed up to 8 keyword words instead of 4 (Amazon titles put the product's kind last)
               beauty_items_run("learned", "0", 4, "bench/beauty-kw8", "--set", "warmup.bf16=false",
                                "--set", "warmup.keyword_words=8", label="4ep-kw8")),
              "ML-100k: 11-26 min of training per IDGenRec run (random < title < learned IDs), about 4 min per SASRec run, "
              "about 3 h in all; Beauty's baselines on 2,000 sampled users: longer; Beauty on params.yaml's objective, one fp32 "
              "thread, 2.5 epochs: learned IDs about 70 min (with the generator's warm-up), title 80 min, random 23 min; "
              "with beam search: learned 1-1.5 h (2.5 epochs), 1.5-2 h (5 epochs), title about 1.5 h, random about 30 min; "
              "learned 4 epochs and title 3 epochs in bf16, one core each beside other work: about 1.6-2 h and 1.8 h (8-word learned IDs: about 2 h)",
              "benchmarks/results/quality-DATASET-*.{json,md}", suites=("full",)),
    Benchmark("speed", "The params.yaml recommender's training throughput (target items/s, target positions/s) and MFU "
              "against the measured matmul peak; decoding latency p50/p95 with and without the trie, by history length "
              "and catalogue size.",
              (("--out", "benchmarks/results/speed"),), "about 2 min (`--history-lengths 5 10 20 --catalogue-sizes 100 300 1000`: several times that)",
              "benchmarks/results/speed.{json,md,png}", suites=("quick", "full")),
    Benchmark("ids_benchmark", "Textual ID quality (unique, length, own words) and generation speed, "
              "batched and one item at a time, after the default warm-up.",
              (("--datasets", "ml-100k"),), "a few minutes on ML-100k (warm-up, then 1,349 IDs); Beauty's 12,101 items take far longer",
              "benchmarks/results/ids_benchmark_DATASET.{json,md}", suites=("full",)),
    Benchmark("alternation", "The ID phase against a control without it: finished three-phase runs (recommender, "
              "ID phase, re-fit) against the same first phase re-fit on unchanged IDs; valid and test per seed.",
              (("--runs", "artifacts/model", "bench/quality-learned-seeds12/ml-100k/model-learned-seed1",
                "bench/quality-learned-seeds12/ml-100k/model-learned-seed2", "--seeds", "0", "1", "2"),),
              "about 20 min (3 seeds: a quarter-epoch re-fit and 3 evaluations each)",
              "benchmarks/results/alternation-ml-100k.{json,md}", needs="the pipeline's run and quality runs of seeds 1 and 2"),
    Benchmark("distributed", "Training throughput of the default recommender on ML-100k: 1 process with every thread, "
              "2 torchrun processes (gloo) with the threads split, 1 process with one thread; the same global batches.",
              ((),), "about 5 min", "benchmarks/results/distributed.{json,md}, headline.json's scale.training",
              suites=("full",)),
    Benchmark("scale", "Synthetic catalogues of 10k, 100k and 1M items (real titles recombined): the vocabulary the "
              "backbone keeps, keyword and title ID tables (unique, time), trie build time and memory, decoding latency "
              "p50/p95 with the trie; learned IDs batched against one at a time, every item's at 10k; how each grows.",
              ((),), "about 40 min", "benchmarks/results/scale.{json,md}, headline.json's scale", suites=("full",)),
    Benchmark("pipeline_times", "Wall time of every stage of `dvc repro`, each forced, with the machine's matmul peaks.",
              (("--out", "benchmarks/results/pipeline-ml-100k"),), "about 25 min",
              "benchmarks/results/pipeline-ml-100k.{json,md}", suites=("full",)),
    Benchmark("new_items", "New items without retraining: 10% of the items held out of training, added with "
              "`add_items`, ranked in the full catalogue and among new items only, against chance.",
              (("--kinds", "learned", "--retrained", "--out", "benchmarks/results/new-items-ml-100k-1x1"),),
              "about 25 min of warm-up and training, then the scoring", "benchmarks/results/new-items-ml-100k-*.{json,md}",
              suites=("full",)),
    Benchmark("tail_probe", "A finished run's last recommender phase rerun at other lengths from the run's own "
              "checkpoints (what a shorter last phase would have selected).",
              (("--run", "FOLDER", "KIND", "SEED", "--tails", "0.1", "0.05", "--out", "benchmarks/results/tail-ml-100k"),),
              "about 1-3 min per run and length", "benchmarks/results/tail-ml-100k.{json,md}",
              needs="model folders of finished quality.py runs"),
    Benchmark("layer_cost", "Cost of a recommender training step at each depth (the ratio that sizes a schedule "
              "for another depth at the same compute).",
              (("--out", "benchmarks/results/layer-cost"),), "about 3 min", "benchmarks/results/layer-cost.{json,md}"),
    Benchmark("architectures", "The causal recommender against the seq2seq one: training target items and positions per "
              "second at the same tokens per batch, FLOPs and MFU (speed); validation NDCG@10 against training wall time "
              "of finished runs, with a plot (curve).",
              (("speed", "--prepared", "artifacts/prepared", "--out", "benchmarks/results/architectures-speed"),),
              "about 2 min (speed)", "benchmarks/results/architectures-*.{json,md,png}", suites=("quick", "full")),
    Benchmark("training_step", "The library's CPU training step and SASRec epoch against the same with eager "
              "attention, fused AdamW and SASRec's dropout masks swapped back for PyTorch's defaults.",
              (("--out", "benchmarks/results/training-step"),), "about 4 min",
              "benchmarks/results/training-step.{json,md}"),
    Benchmark("decoding_speed", "Batched trie-constrained decoding with the library's self-attention-only cache "
              "reorder against transformers' whole-cache reorder (same lists and scores).",
              (("--model", "artifacts/model/best", "--out", "benchmarks/results/decoding-speed-ml-100k"),),
              "a few minutes", "benchmarks/results/decoding-speed-ml-100k.{json,md}", needs="a trained model"),
    Benchmark("gpu_check", "GPU costs of a profile's model: training steps (bf16 with the library's attention "
              "choice, PyTorch's, fp32), decoding, ID generation.",
              (("--params", "profiles/paper-offline.yaml", "--out", "benchmarks/results/gpu-h200"),),
              "about 3 min on an H200", "benchmarks/results/gpu-*.{json,md}", needs="a CUDA GPU"),
    Benchmark("paper_budget", "A profile's schedule scaled to fit a wall-clock budget (probe run, then the main run).",
              (("--params", "profiles/paper-offline.yaml", "--probe-prepared", "artifacts/prepared", "--prepared",
                "PREPARED", "--budget-s", "540", "--out", "OUT"),),
              "the budget", "OUT.{json,md}, OUT-probe.*, OUT-plan.json", needs="a GPU for the paper's profiles"),
    Benchmark("zero_shot", "Leave one dataset out: a model trained on the others (together, data.combine_with, or one "
              "already trained: --trained), then recommending on the held-out one with no training, against its popularity, "
              "SASRec trained on it and the same architecture trained on it; single- against combined-dataset models on the "
              "training datasets.",
              # the Beauty model of the quality entry (learned IDs, 2.5 epochs, bench/beauty-items) put on Toys
              (("--train", "beauty", "--held-out", "toys", "--trained", "bench/beauty-items/beauty/model-learned-seed0",
                "--steps", "zero-shot", "popularity", "sasrec", "--sasrec-epochs", "25", "--set", "warmup.epochs=2",
                "--set", "evaluation.sample_users=2000", "--set", "training.selection_users=1000",
                "--out", "benchmarks/results/zero-shot-toys"),
               ("--train", "beauty", "--held-out", "ml-100k", "--trained", "bench/beauty-items/beauty/model-learned-seed0",
                "--steps", "zero-shot", "popularity", "sasrec", "--sasrec-epochs", "25", "--set", "warmup.epochs=2",
                "--set", "evaluation.sample_users=2000", "--set", "training.selection_users=1000",
                "--out", "benchmarks/results/zero-shot-ml-100k"),
               # Yelp's 30,431 users make SASRec on it a long run on a CPU: popularity only
               ("--train", "beauty", "--held-out", "yelp", "--trained", "bench/beauty-items/beauty/model-learned-seed0",
                "--steps", "zero-shot", "popularity", "--set", "warmup.epochs=2",
                "--set", "evaluation.sample_users=2000", "--set", "training.selection_users=1000",
                "--out", "benchmarks/results/zero-shot-yelp")),
              "about 45 min on 2 cores after the quality entry (Toys' IDs about 10 min, SASRec about 30 min); ML-100k "
              "held out: about 10 min; Yelp held out: about 20 min on one busy core (its 20,033 IDs most of it)", "benchmarks/results/zero-shot-{toys,ml-100k,yelp}.{json,md}, headline.json's zero_shot",
              suites=("full",)),
    Benchmark("reliability", "kill -9 across a tiny `dvc repro` (random moments, ID generation, training, registration, "
              "dvc.lock updates) and add-items, then recovery and identical outputs; corrupt artifacts named; a second "
              "`dvc repro` and simultaneous promotions; 50 loopback clients on `idgenrec serve` (latency, 5xx, memory) "
              "and fuzzed requests.",
              ((),), "about 25 min on 2 busy cores", "benchmarks/results/reliability.{json,md}, headline.json `reliability`"),
    Benchmark("warmup_probe", "One ID generator warm-up of a profile variant: loss at start and end, and how many "
              "of the first 256 items get distinct first-choice IDs.", (("profiles/paper-offline.yaml", "lr3e-4", '{"warmup": {"learning_rate": 0.0003}}'),),
              "not timed (one warm-up of the profile's generator)", "stdout (one JSON line)"),
)

SUITES = {
    "quick": "the ML-100k headline: `dvc repro` (seed 0 of popularity, SASRec and learned IDs), the speed "
             "benchmark, then the report",
    "full": "every seed, ID kind and dataset the report reads, the speed, ID and zero-shot benchmarks, then the report",
}


def script(name: str) -> Benchmark:
    return next(s for s in SCRIPTS if s.name == name)


# -- where a measurement ran ----------------------------------------------------------------


def cpu_model() -> str:
    """The CPU's model name (``/proc/cpuinfo``), or what ``platform`` knows."""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def machine() -> dict:
    """The setting of a measurement: CPU model, cores, torch threads, versions, GPU, bf16 kernels, load."""
    import torch

    from idgenrec.backbone.seq2seq import bf16_available, pick_device

    return {
        "cpu": cpu_model(), "cpus": os.cpu_count(), "threads": torch.get_num_threads(),
        "python": platform.python_version(), "torch": torch.__version__,
        "device": torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu",
        "bf16_kernels": bf16_available(pick_device()),  # what a run asking for bf16 computes in: bf16 or fp32
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }


def output_path(out: Path, extension: str) -> Path:
    """``out`` with ``extension`` appended: an ``--out`` such as ``...-2.5ep-seed0`` keeps its whole name
    (``Path.with_suffix`` would replace ``.5ep-seed0``)."""
    return out.with_name(out.name + extension)


def write_report(out: Path, payload: dict, text: str) -> None:
    """``out``.json (the command that made it, the machine, then ``payload``) and ``out``.md (``text``)."""
    command = " ".join(["python -m", sys.modules["__main__"].__spec__.name if sys.modules["__main__"].__spec__
                        else sys.argv[0], *sys.argv[1:]])
    write_json(output_path(out, ".json"), {"command": command, "machine": machine(), **payload})
    with atomic_write(output_path(out, ".md")) as handle:
        handle.write(text)
    print(text)


# -- run settings -----------------------------------------------------------------------------


def params_with_overrides(path: Path, overrides: list[str]) -> dict:
    """``path`` (a params file) as a dict with each ``key.sub=value`` override (YAML value) applied."""
    raw = yaml.safe_load(path.read_text()) or {}
    for override in overrides:
        key, _, value = override.partition("=")
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = yaml.safe_load(value)
    return raw


def with_seed(raw: dict, kind: str | None, seed: int):
    """Validated params for one run: every seed (IDs, training, SASRec) set to ``seed``, and the ID kind."""
    from idgenrec.config import Params

    raw = json.loads(json.dumps(raw))
    raw.setdefault("training", {})["seed"] = seed
    raw.setdefault("ids", {})["seed"] = seed
    raw.setdefault("sasrec", {})["seed"] = seed
    if kind:
        raw["ids"]["kind"] = kind
    return Params.model_validate(raw)


def id_kind(model: str) -> str | None:
    """The ID kind of a run's model name (``idgenrec-learned-default`` -> ``learned``); None for baselines."""
    if not model.startswith("idgenrec-"):
        return None
    rest = model.removeprefix("idgenrec-")
    return next((kind for kind in KINDS if rest.startswith(kind)), None)


def model_folder(workdir: Path, kind: str, seed: int) -> Path:
    """Where quality.py trains the model of ``kind`` and ``seed`` (``best/`` inside is the selected one)."""
    return workdir / f"model-{kind}-seed{seed}"


def warmed_up_generator(dataset, params, workdir: Path) -> Path:
    """The generator warmed up on ``dataset`` with these settings; trained on first use, then reused.

    The folder is named by a hash of what the warm-up reads (the params of dvc.yaml's `warmup`
    stage and the dataset's content): every ID kind of a seed and a rerun share it, and a run
    with other settings in the same workdir gets its own instead of a stale one.
    """
    from idgenrec.ids import warm_up_generator
    from idgenrec.recommender.alternating import dataset_digest

    dumped = params.model_dump(mode="json")
    reads = {"backbone": dumped["backbone"], "warmup": dumped["warmup"],
             "ids": {k: dumped["ids"][k] for k in ("seed", "max_input_tokens")}, "dataset": dataset_digest(dataset)}
    key = hashlib.sha256(json.dumps(reads, sort_keys=True).encode()).hexdigest()[:12]
    folder = workdir / f"generator-seed{params.ids.seed}-{key}"
    if not folder.exists():  # written atomically: a folder that exists is whole
        warm_up_generator(dataset, params, folder)
    return folder


def prepared(name: str) -> Path:
    """The prepared splits of dataset ``name`` (Beauty: prepared from ``BEAUTY_RAW`` on first use)."""
    folder = PREPARED[name]
    if name == "beauty" and not (folder / "stats.json").exists():
        from idgenrec.config import DataConfig
        from idgenrec.data.prepare import prepare

        prepare(DataConfig(name="beauty", format="p5", path=BEAUTY_RAW, text_fields=["title", "brand", "categories", "description"]),
                folder)
    return folder


# -- timing -------------------------------------------------------------------------------------


def matmul_peak(dtype, size: int = 1024, seconds: float = 5.0) -> float:
    """Dense matmul FLOP/s on this machine for ``dtype`` (best of repeated square products)."""
    import torch

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
    """FLOP/s of the precisions the model may train in here: what MFU and machine comparisons are held to.

    bf16 only where the CPU has bf16 kernels (elsewhere PyTorch emulates it and the library trains in fp32).
    """
    import torch

    from idgenrec.backbone.seq2seq import bf16_available

    peaks = {"fp32": matmul_peak(torch.float32)}
    if bf16_available(torch.device("cpu")):
        peaks = {"bf16": matmul_peak(torch.bfloat16), **peaks}
    return peaks


def render_peaks(peak_flops: dict[str, float]) -> str:
    """'bf16 1410 GFLOP/s, fp32 179 GFLOP/s'."""
    return ", ".join(f"{precision} {flops / 1e9:.0f} GFLOP/s" for precision, flops in peak_flops.items())


def batch_counts(batch, separator: int | None = None) -> dict:
    """Tokens read, target items and target token positions of one training batch of either architecture.

    A seq2seq prompt has one target item; a causal window has one per labelled ``separator`` (every
    target's ID ends with one), so causal batches need it.
    """
    from idgenrec.recommender.sequences import SequenceBatch

    positions = int((batch.labels != -100).sum())
    if isinstance(batch, SequenceBatch):
        if separator is None:
            raise ValueError("counting a causal batch's target items needs the separator token")
        return {"tokens": int(batch.attention_mask.sum()), "items": int((batch.labels == separator).sum()), "positions": positions}
    return {"tokens": int(batch.attention_mask.sum()) + positions, "items": batch.size, "positions": positions}


def training_throughput(model, batches, bf16: bool, config, separator: int | None = None) -> dict:
    """Time the training loop's own optimisation step over ``batches`` (after two warm-up steps); count FLOPs of one.

    A sample is one batch row (a seq2seq prompt, a causal window); a target item is an item whose ID
    the loss trains; a target position is one ID token the loss is computed on (labels != -100).
    """
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from idgenrec.recommender.training import make_optimizer, optimisation_step

    device = torch.device("cpu")
    optimizer, schedule = make_optimizer(model.parameters(), 1e-4, config, len(batches) + 2)
    settings = config.model_copy(update={"bf16": bf16})

    def step(batch) -> None:
        optimisation_step(model, batch, optimizer, schedule, device, settings)

    model.train()
    for batch in batches[:2]:
        step(batch)
    counter = FlopCounterMode(display=False)
    with counter:
        step(batches[0])
    flops_per_sample = counter.get_total_flops() / batches[0].size
    totals = {"samples": 0, "tokens": 0, "items": 0, "positions": 0}
    start = time.perf_counter()
    for batch in batches:
        step(batch)
        counts = batch_counts(batch, separator)
        totals["samples"] += batch.size
        for key in ("tokens", "items", "positions"):
            totals[key] += counts[key]
    seconds = time.perf_counter() - start
    model.eval()
    return {"samples_per_s": totals["samples"] / seconds, "target_items_per_s": totals["items"] / seconds,
            "target_positions_per_s": totals["positions"] / seconds, "tokens_per_s": totals["tokens"] / seconds,
            "flops_per_sample": flops_per_sample, "achieved_flops": flops_per_sample * totals["samples"] / seconds}


@contextlib.contextmanager
def patched(module, **names):
    """``module``'s attributes ``names`` replaced by the given values inside the block, restored after it.

    How a benchmark times the library with one piece swapped for an alternative.
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
    from idgenrec.backbone import build_tokenizer, vocabulary_corpus
    from idgenrec.config import IdConfig, load_params
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.ids import make_id_table

    params = load_params(params_path)
    dataset = SequenceDataset.load(prepared)
    tokenizer = build_tokenizer(params.backbone, vocabulary_corpus(dataset))
    table, quality = make_id_table("title", dataset, None, tokenizer, IdConfig(kind="title"))
    return params, dataset, tokenizer, table, quality


def title_id_batches(params_path: Path, prepared: Path, steps: int):
    """(params, dataset, tokenizer, ``steps`` full training batches of title-ID prompts) for a step-timing benchmark.

    The training loop's own batching (length-grouped, the configured templates) over a fixed
    random sample of the training prefixes, so every variant times the same batches.
    """
    from idgenrec.recommender.samples import PromptEncoder, training_samples
    from idgenrec.recommender.training import iterate_batches

    params, dataset, tokenizer, table, _ = title_id_setup(params_path, prepared)
    config = params.training
    encoder = PromptEncoder(tokenizer, table.token_ids(tokenizer), config.history_length)
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], config.history_length)
    rng = random.Random(0)
    indices = rng.sample(range(len(samples)), config.batch_size * steps)
    batches = list(iterate_batches(encoder, samples, indices, config, rng, tokenizer.pad_token_id, 0))
    return params, dataset, tokenizer, batches

