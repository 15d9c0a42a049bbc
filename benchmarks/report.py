"""Regenerate the results tables from the benchmark outputs.

    python benchmarks/report.py   # rewrites docs/results.md between the results markers, README.md between the headline markers

Each included markdown table was written by a benchmark script next to its JSON; this
script only stitches them together, with the command that reproduces each one.
"""

from __future__ import annotations

import functools
import json
import re
import statistics
from pathlib import Path

import yaml

from idgenrec.atomic import atomic_write
from idgenrec.config import load_params
from quality import KINDS, id_kind

RESULTS = Path("benchmarks/results")
RESULTS_DOC, README = Path("docs/results.md"), Path("README.md")
START, END = "<!-- results:start -->", "<!-- results:end -->"
HEADLINE_START, HEADLINE_END = "<!-- headline:start -->", "<!-- headline:end -->"

# (markdown file, command that reproduces it), in the order shown.
SECTIONS = [
    ("pipeline-ml-100k.md", "make pipeline  (dvc repro; stage times from benchmarks/pipeline_times.py)"),
    ("tail-ml-100k.md", "python benchmarks/tail_probe.py --run FOLDER KIND SEED ... --tails 0.1 0.05 --out benchmarks/results/tail-ml-100k  "
                        "(every run folder is in tail-ml-100k.json; tail-ml-100k-check.json: the pipeline's run rerun at its recorded 0.38)"),
    ("training-step.md", "python benchmarks/training_step.py --prepared artifacts/prepared --out benchmarks/results/training-step"),
    ("compiled-step.md", "python benchmarks/compiled_step.py --out benchmarks/results/compiled-step"),
    ("speed.md", "python benchmarks/speed.py --prepared artifacts/prepared --out benchmarks/results/speed"),
    ("precision.md", "python benchmarks/precision.py --prepared artifacts/prepared --epochs 0.1 --out benchmarks/results/precision"),
    ("decoding-speed-ml-100k.md", "python benchmarks/decoding_speed.py --model artifacts/model/best --widths 10 20 "
                                  "--out benchmarks/results/decoding-speed-ml-100k"),
    ("beam-width-ml-100k.md", "python benchmarks/beam_width.py --widths 10 15 20 --model ... "
                              "--out benchmarks/results/beam-width-ml-100k  (each model folder is in beam-width-ml-100k.json)"),
    ("ids_benchmark_ml-100k.md", "python benchmarks/ids_benchmark.py --datasets ml-100k"),
    ("ids_benchmark_beauty.md", "python benchmarks/ids_benchmark.py --datasets beauty"),
    ("gpu-h200.md", "python benchmarks/gpu_check.py --params profiles/paper-offline.yaml --prepared artifacts/prepared "
                    "--out benchmarks/results/gpu-h200  (on a CUDA machine; the command that ran is in gpu-h200.json)"),
    ("step-overhead-h200.md", "python benchmarks/step_overhead.py --params profiles/paper-offline.yaml --prepared artifacts/prepared "
                              "--out benchmarks/results/step-overhead-h200  (on a CUDA machine; step-overhead-h200-contended.json: "
                              "the same beside three training runs on the lease's 2 host cores)"),
    ("gpu-h200-paper-beauty-3ep.md", "the quality.py command above, S = 0, 1, 2, on a CUDA machine with Beauty prepared "
                                     "('On a GPU', above)"),
    ("gpu-h200-paper-beauty-alternation.md", "the quality.py command above with the schedules in the table, S = 0, 1, four runs side "
                                             "by side on a CUDA machine with Beauty prepared ('On a GPU', above)"),
    ("seen_items_ml-100k.md", "python benchmarks/seen_items.py --out benchmarks/results/seen_items_ml-100k --model ...  "
                              "(the exact command, with every model folder, is in seen_items_ml-100k.json)"),
    ("new-items-ml-100k.md", "python benchmarks/new_items.py --kinds learned title random --retrained learned "
                             "--set 'training.schedule=[{phase: recommender, epochs: 0.3, learning_rate: 0.001}]' "
                             "--out benchmarks/results/new-items-ml-100k"),
    # Measured before session 13's default (random cross-attention) and own-token budget.
    ("new-items-ml-100k-default.md", "python benchmarks/new_items.py --kinds learned --retrained "
                                     "--set backbone.cross_attention_init=random "
                                     "--out benchmarks/results/new-items-ml-100k-default  (params.yaml's schedule; new items' IDs before c5c86ee's own-token budget)"),
    ("new-items-ml-100k-split1.md", "python benchmarks/new_items.py --split-seed 1 --kinds learned --retrained "
                                    "--set backbone.cross_attention_init=random "
                                    "--out benchmarks/results/new-items-ml-100k-split1  (params.yaml's schedule; new items' IDs before c5c86ee's own-token budget)"),
    ("new-items-ml-100k-self.md", "python benchmarks/new_items.py --kinds learned --retrained "
                                  "--out benchmarks/results/new-items-ml-100k-self  (params.yaml then: the 2+2-layer default)"),
    ("new-items-ml-100k-self-split1.md", "python benchmarks/new_items.py --split-seed 1 --kinds learned --retrained "
                                         "--out benchmarks/results/new-items-ml-100k-self-split1  (params.yaml then: the 2+2-layer default)"),
    ("new-items-ml-100k-1x1.md", "python benchmarks/new_items.py --kinds learned --retrained "
                                 "--out benchmarks/results/new-items-ml-100k-1x1  (params.yaml: the 1+1-layer default)"),
]


PIPELINE_METRICS = [("Pop", "metrics/popularity.json"), ("SASRec (CE)", "metrics/sasrec.json"),
                    ("IDGenRec, learned IDs", "metrics/model.json")]
COLUMNS = ["recall@5", "recall@10", "ndcg@5", "ndcg@10"]
# (dataset key in the quality-*.json names, heading, whether `make pipeline` adds seed 0)
DATASETS = [("ml-100k", "ML-100k", True), ("beauty", "Amazon Beauty", False)]


def display_name(model: str) -> str:
    """``idgenrec-learned-user-ids`` -> ``IDGenRec, learned IDs (user-ids)``; baselines by their usual names."""
    if model in ("pop", "sasrec"):
        return {"pop": "Pop", "sasrec": "SASRec (CE)"}[model]
    rest = model.removeprefix("idgenrec-")
    kind = id_kind(model) or rest
    label = rest.removeprefix(kind).strip("- ")
    return f"IDGenRec, {kind} IDs" + (f" ({label})" if label else "")


# params.yaml's schedule changed in session 6: recommender 1.4, ID 0.02, recommender 0.4 epochs became
# 1.3, 0.01, 0.2. Runs made on the new schedule before it was the default carry the label "resized",
# later seeds of the default the label "default"; the IDGenRec runs in these files trained on the
# earlier default and are labelled so in the tables.
CURRENT_SCHEDULE_LABELS = ("resized", "default", "layers1x1")  # layers1x1: the 1+1 default, measured before it was one
EARLIER_SCHEDULE = "earlier schedule: 1.4, 0.02, 0.4 epochs"
EARLIER_SCHEDULE_FILES = {
    "quality-ml-100k-ablation-seed0.json", "quality-ml-100k-ids-seed2.json", "quality-ml-100k-previous-default-seed0.json",
    "quality-ml-100k-random-seed2.json", "quality-ml-100k-seed1.json", "quality-ml-100k-title-seed1.json",
    "quality-ml-100k-user-ids-seed0.json",
}


# params.yaml's backbone.cross_attention_init became "self" in session 13 (docs/results.md, "Collapsed runs").
# quality.py records each file's params since then; the IDGenRec runs of older files started it random.
EARLIER_CROSS_ATTENTION = "random"


@functools.cache
def recorded_params(path: Path) -> dict:
    """The params a quality.py file records (empty for files from before session 13)."""
    return json.loads(path.read_text()).get("params") or {}


def recorded_backbone(path: Path) -> dict:
    return recorded_params(path).get("backbone") or {}


def cross_attention_init(path: Path) -> str:
    return recorded_backbone(path).get("cross_attention_init", EARLIER_CROSS_ATTENTION)


@functools.cache
def default_cross_attention_init() -> str:
    return load_params("params.yaml").backbone.cross_attention_init


# params.yaml's backbone became 1+1 layers in session 21 (docs/results.md, "Depth"); every run
# before it had 2+2, the default then, and files from before session 13 record no params.
EARLIER_LAYERS = (2, 2)


def layers(path: Path) -> tuple[int, int]:
    backbone = recorded_backbone(path)
    return backbone.get("encoder_layers", EARLIER_LAYERS[0]), backbone.get("decoder_layers", EARLIER_LAYERS[1])


def depth_label(depth: tuple[int, int]) -> str:
    return "{}+{} layers".format(*depth)


@functools.cache
def default_layers() -> tuple[int, int]:
    backbone = load_params("params.yaml").backbone
    return backbone.encoder_layers, backbone.decoder_layers


# params.yaml's last recommender phase became 0.1 epoch in session 25 (0.38 before). A run of the
# 1+1 default with the earlier length still counts as the default's where tail_probe.py reran its
# last phase at the current length from the run's own checkpoints and the first phase stayed
# selected: the default keeps that same checkpoint, so its test metrics are the run's. Elsewhere
# a recorded schedule other than params.yaml's is named (2+2 runs: their depth label names their
# profile, schedule included).
TAIL_PROBE = RESULTS / "tail-ml-100k.json"


def recorded_schedule(path: Path) -> list[dict] | None:
    return (recorded_params(path).get("training") or {}).get("schedule")


@functools.cache
def default_schedule() -> list[dict]:
    return [phase.model_dump(mode="json") for phase in load_params("params.yaml").training.schedule]


def schedule_label(schedule: list[dict]) -> str:
    return "schedule " + " / ".join(f"{phase['epochs']:g}" for phase in schedule) + " epochs"


def first_phase_best(records: list[dict]) -> float | None:
    scores = [r["valid_ndcg@10"] for r in records if r.get("phase_index") == 0 and "valid_ndcg@10" in r]
    return max(scores) if scores else None


@functools.cache
def probed_runs() -> tuple[dict, ...]:
    return tuple(json.loads(TAIL_PROBE.read_text())["runs"]) if TAIL_PROBE.exists() else ()


def tail_probe(kind: str, seed: int, first_best: float | None) -> dict | None:
    """tail_probe.py's rerun at params.yaml's length of the run of (kind, seed) whose first phase
    scored ``first_best``, where that rerun kept the first phase selected (the run's checkpoint stands)."""
    if first_best is None:
        return None
    length = default_schedule()[-1]["epochs"]
    for run in probed_runs():
        # The first phase's best score, to the last bit, tells this run from another of the same kind and seed (other code).
        if (run["kind"], run["seed"], run.get("first_phase_best")) == (kind, seed, first_best):
            probe = next((p for p in run["probes"] if p["epochs"] == length), None)
            return probe if probe is not None and probe["selected_phase"] == 1 else None
    return None


def run_label(model: str, kind: str) -> str:
    """``idgenrec-learned-user-ids`` -> ``user-ids``: what quality.py's --label added to the model name."""
    return model.removeprefix(f"idgenrec-{kind}").strip("- ")


def counted_by_probe(path: Path, run: dict) -> dict | None:
    """The tail probe by which a default run of an earlier last-phase length counts as the current default's."""
    kind = id_kind(run["model"])
    if kind is None or layers(path) != default_layers():
        return None
    if run_label(run["model"], kind) not in ("", *CURRENT_SCHEDULE_LABELS):
        return None
    schedule, current = recorded_schedule(path), default_schedule()
    if schedule is None or schedule == current or len(schedule) != len(current) or schedule[:-1] != current[:-1]:
        return None
    if {k: v for k, v in schedule[-1].items() if k != "epochs"} != {k: v for k, v in current[-1].items() if k != "epochs"}:
        return None
    return tail_probe(kind, run["seed"], first_phase_best(run.get("records", [])))


def run_name(path: Path, run: dict) -> str:
    """Display name of a run in ``path``, its labels saying which default schedule and initialisation it had."""
    model = run["model"]
    kind = id_kind(model)
    if kind is None:
        return display_name(model)
    label = run_label(model, kind)
    parts = [label] if label and label not in CURRENT_SCHEDULE_LABELS else []
    if path.name in EARLIER_SCHEDULE_FILES:
        parts.append(EARLIER_SCHEDULE)
    depth = layers(path)
    schedule = recorded_schedule(path)
    if (depth == default_layers() and schedule is not None and schedule != default_schedule()
            and counted_by_probe(path, run) is None):
        parts.append(schedule_label(schedule))
    if depth != default_layers():
        parts.append(depth_label(depth))
    if (init := cross_attention_init(path)) != default_cross_attention_init():
        parts.append(f"{init} cross-attention")
    return display_name(f"idgenrec-{kind}" + (f"-{', '.join(parts)}" if parts else ""))


def result_files(dataset: str) -> list[Path]:
    return sorted(RESULTS.glob(f"quality-{dataset}*.json"))


def quality_runs(dataset: str, with_pipeline: bool) -> list[tuple[str, int, dict]]:
    """(model, seed, run) from the pipeline's DVC metrics (seed 0) and every quality.py run on ``dataset``."""
    runs = []
    if with_pipeline:
        runs = [(name, 0, {"metrics": json.loads(Path(path).read_text())})
                for name, path in PIPELINE_METRICS if Path(path).exists()]
    for path in result_files(dataset):
        for run in json.loads(path.read_text())["runs"]:
            name = run_name(path, run)
            if probe := counted_by_probe(path, run):
                run = {**run, "probed_tail": probe}
            if (name, run["seed"]) not in {(n, s) for n, s, _ in runs}:
                runs.append((name, run["seed"], run))
    return runs


def _mean_std(values: list[float]) -> str:
    spread = f" ± {statistics.stdev(values):.4f}" if len(values) > 1 else ""
    return f"{statistics.fmean(values):.4f}{spread}"


def quality_table(dataset: str, heading: str, with_pipeline: bool, headline: bool = False) -> str:
    """Mean ± std over seeds per model, both exclusion settings, from :func:`quality_runs`.

    ``headline``: the baselines and the three ID kinds on the current defaults only, no notes.
    """
    runs = quality_runs(dataset, with_pipeline)
    if headline:
        runs = [run for run in runs if run[0] in HEADLINE_MODELS]
    if not runs:
        return ""
    lines = [f"## Quality on {heading} (test, leave-one-out, full ranking)", "",
             "Mean ± std over seeds. Left: nothing excluded (RecBole's convention, anchors.md); right: each user's "
             "history excluded from the ranking (what the default profile decodes with).", "",
             "| model | seeds | " + " | ".join(COLUMNS) + " | R@10, seen excluded | N@10, seen excluded |",
             "|---|---|" + "---|" * (len(COLUMNS) + 2)]
    for name in sorted(dict.fromkeys(n for n, _, _ in runs), key=_table_order):
        rows = [(seed, run["metrics"]) for n, seed, run in runs if n == name]
        cells = [_mean_std([m[f"test/seen_included/{c}"] for _, m in rows]) for c in COLUMNS]
        cells += [_mean_std([m[f"test/seen_excluded/{c}"] for _, m in rows]) for c in ("recall@10", "ndcg@10")]
        seeds = ",".join(str(seed) for seed, _ in sorted(rows, key=lambda r: r[0]))
        lines.append(f"| {name} | {seeds} | " + " | ".join(cells) + " |")
    if headline:
        return "\n".join(lines) + "\n"
    lines += ["", *budget_notes(dataset), sasrec_note(runs)]
    if with_pipeline:
        lines += [alternation_note(runs), user_id_note(runs)]
    return "\n".join(line for line in lines if line is not None) + "\n"


EARLIER_DEPTH_LABEL = depth_label(EARLIER_LAYERS)
# The baselines, the three ID kinds on the current defaults, and on the 2+2 layers before them.
HEADLINE_MODELS = ("Pop", "SASRec (CE)", *(display_name(f"idgenrec-{kind}") for kind in KINDS),
                   *(display_name(f"idgenrec-{kind}-{EARLIER_DEPTH_LABEL}") for kind in KINDS))


def _table_order(name: str) -> tuple[int, str]:
    """Baselines first, then the ID kinds in the paper's order, then variants."""
    fixed = ["Pop", "SASRec (CE)", *(display_name(f"idgenrec-{kind}") for kind in KINDS),
             *(display_name(f"idgenrec-{kind}-{EARLIER_DEPTH_LABEL}") for kind in KINDS),
             *(display_name(f"idgenrec-{kind}-{EARLIER_CROSS_ATTENTION} cross-attention") for kind in KINDS)]
    return (fixed.index(name), "") if name in fixed else (len(fixed), name)


def is_default(override: str, params: dict) -> bool:
    """Whether a ``--set key=value`` override equals what ``params`` (params.yaml now) says: a setting since adopted."""
    key, _, value = override.partition("=")
    node = params
    for part in key.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return node == yaml.safe_load(value)


def budget_notes(dataset: str) -> list[str]:
    """What was changed from params.yaml for the runs on ``dataset`` (their --set overrides), files grouped by change."""
    groups: dict[tuple[str, ...], list[tuple[str, set[str]]]] = {}
    params = yaml.safe_load(Path("params.yaml").read_text())
    for path in result_files(dataset):
        data = json.loads(path.read_text())
        if overrides := [o for o in data.get("overrides", []) if not is_default(o, params)]:
            models = {run_name(path, r) for r in data["runs"]}
            groups.setdefault(tuple(overrides), []).append((path.name, models))
    notes = []
    for overrides, files in groups.items():
        models = sorted(set().union(*(m for _, m in files)), key=_table_order)
        names = ", ".join(f"`{name}`" for name, _ in files)
        notes.append(f"- {names} ({', '.join(models)}): " + ", ".join(f"`{o}`" for o in overrides))
    return ["Settings changed from `params.yaml`:", "", *notes, ""] if notes else []


def sasrec_note(runs: list[tuple[str, int, dict]]) -> str | None:
    """How far each SASRec run trained: epochs run, the selected epoch, and the cap when one was set."""
    cells = []
    for name, seed, run in sorted(runs, key=lambda r: r[1]):
        if name != "SASRec (CE)":
            continue
        training, metrics = run.get("training"), run["metrics"]
        if training:  # a quality.py run
            capped = " (stopped by the cap)" if training["epochs"] == training["max_epochs"] else ""
            cells.append(f"seed {seed}: {training['epochs']} epochs{capped}, best epoch {training['best_epoch']}, "
                         f"max_epochs {training['max_epochs']}, patience {training['patience']}")
        elif "train/epochs" in metrics:  # the pipeline's metrics/sasrec.json
            cells.append(f"seed {seed}: {metrics['train/epochs']:.0f} epochs, best epoch {metrics['train/best_epoch']:.0f}")
    return ("SASRec training (each epoch predicts every training target once; selection on validation N@10): "
            + "; ".join(cells) + ".\n") if cells else None


def _rounds(records: list[dict]) -> tuple[float, float] | None:
    """(best validation N@10 of the first recommender phase, best of the later ones)."""
    key = next((k for r in records for k in r if k.startswith("valid_") and k.endswith("ndcg@10")), None)
    first = [r[key] for r in records if r.get("phase_index") == 0 and key in r]
    later = [r[key] for r in records if r.get("phase_index", 0) > 0 and key in r]
    return (max(first), max(later)) if first and later else None


def _pipeline_records() -> list[dict]:
    curve = Path("metrics/training_curve.json")
    return json.loads(curve.read_text()) if curve.exists() else []


def alternation_note(runs: list[tuple[str, int, dict]]) -> str | None:
    """Did the phases after the ID phase beat the first recommender phase (validation)?

    Title and random IDs run the same schedule with the ID phase skipped, so they are the
    control: what the extra recommender phase gives without any ID change.
    """
    cells = []
    if pair := _rounds(_pipeline_records()):
        cells.append(f"learned IDs seed 0: {pair[0]:.4f} -> {pair[1]:.4f}")
    probed = False
    for name, seed, run in runs:
        if name.startswith("IDGenRec") and (pair := _rounds(run.get("records", []))):
            later = f"{pair[1]:.4f}"
            if probe := run.get("probed_tail"):  # the last phase at params.yaml's length (TAIL_PROBE)
                later, probed = f"{probe['valid_ndcg@10']:.4f}*", True
            cells.append(f"{name.removeprefix('IDGenRec, ')} seed {seed}: {pair[0]:.4f} -> {later}")
    if not cells:
        return None
    if probed:
        cells.append("* the last phase rerun at params.yaml's length from the run's own checkpoints "
                     "(benchmarks/tail_probe.py, tail-ml-100k.md)")
    return ("Rounds (validation N@10 in the selection setting, as measured during training): best of the first "
            "recommender phase -> best of the "
            "recommender phase after the ID phase (title/random: the same phase, no ID change). Runs trained before "
            "dfbe220 decoded the excluded setting by dropping seen items' beams, which lowers these numbers. "
            + "; ".join(cells) + ".\n")


def user_id_note(runs: list[tuple[str, int, dict]]) -> str | None:
    """Validation N@10 of the selected checkpoint with user IDs against the same kind and seed without."""
    key = "valid/seen_excluded/ndcg@10"
    best = {(name, seed): run["metrics"].get(key) for name, seed, run in runs if name.startswith("IDGenRec")}
    pairs = []
    for (name, seed), score in best.items():
        if "(user-ids" in name:
            plain_name = name.replace("(user-ids)", "").replace("(user-ids, ", "(").strip()
            plain = best.get((plain_name, seed))
            if plain is not None and score is not None:
                pairs.append(f"{plain_name.removeprefix('IDGenRec, ')} seed {seed}: {plain:.4f} without -> {score:.4f} with")
    if not pairs:
        return None
    return (f"User IDs (`training.user_id_words`), `{key}` of the selected checkpoint: " + "; ".join(pairs) + ".\n")


def section() -> str:
    parts = [START, "", "_Generated by `python benchmarks/report.py` from `metrics/` and `benchmarks/results/`; do not edit by hand._", "",
             *[quality_table(*dataset) for dataset in DATASETS],
             "Reproduce: `make pipeline` (ML-100k: Pop, SASRec, learned IDs seed 0); the other runs: "
             "`python benchmarks/quality.py --prepared PREPARED --kinds KIND --baselines --seeds SEEDS "
             "--out benchmarks/results/quality-DATASET-NAME` (each JSON there records its exact command)", ""]
    for name, command in SECTIONS:
        path = RESULTS / name
        if not path.exists():
            continue
        body = path.read_text(encoding="utf-8").strip()
        body = re.sub(r"^# ", "### ", body, flags=re.M)
        body = re.sub(r"^## ", "### ", body, flags=re.M)
        parts += [body, "", f"Reproduce: `{command}`", ""]
        png = path.with_suffix(".png")
        if png.exists():
            parts += [f"![{path.stem}]({png.as_posix()})", ""]
    parts.append(END)
    return "\n".join(parts)


def headline() -> str:
    """The README's table: ML-100k, the baselines and the three ID kinds on the current defaults."""
    dataset, heading, with_pipeline = DATASETS[0]
    table = quality_table(dataset, heading, with_pipeline, headline=True).replace("## Quality on", "### Quality on", 1)
    return "\n".join([HEADLINE_START, "", "_Generated by `python benchmarks/report.py`; every other run and table: "
                      "[docs/results.md](docs/results.md#tables)._", "", table,
                      "Reproduce: `make pipeline` (seed 0 of Pop, SASRec and learned IDs); the other seeds and kinds: "
                      "`python benchmarks/quality.py --kinds KIND --seeds SEEDS --baselines --out benchmarks/results/quality-ml-100k-NAME` "
                      "(each JSON there records its exact command).", "", HEADLINE_END])


def replace_between(path: Path, start: str, end: str, block: str) -> None:
    """Rewrite ``path`` with ``block`` (which carries the markers) in place of start...end."""
    text = path.read_text(encoding="utf-8")
    if start not in text or end not in text:
        raise SystemExit(f"{path}: missing the {start} / {end} markers")
    head, rest = text.split(start, 1)
    _, tail = rest.split(end, 1)
    with atomic_write(path) as handle:
        handle.write(head + block + tail)


def main() -> None:
    replace_between(RESULTS_DOC, START, END, section())
    replace_between(README, HEADLINE_START, HEADLINE_END, headline())
    print(json.dumps({"updated": [str(RESULTS_DOC), str(README)], "sections": [n for n, _ in SECTIONS if (RESULTS / n).exists()]}))


if __name__ == "__main__":
    main()
