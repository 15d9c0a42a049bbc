"""Regenerate the results: ``benchmarks/results/headline.json``, the README's table and docs/results.md.

    python -m benchmarks report        # or: python -m benchmarks.report

Reads the pipeline's DVC metrics (``metrics/*.json``, with the params ``dvc.lock`` recorded for
them) and the result files in ``benchmarks/results/``; measures nothing. ``headline.json``:

    {"quality":  {dataset: {model: {metric: {"mean": x, "std": s, "seeds": [...]}}}},
     "settings": {dataset: {model: {"runs": [{"seed", "source", "command", "machine", ...}], ...}}},
     "speed":    {"training" | "decoding" | "id_generation" | "pipeline": {..., "setting": {...}, "source", "command"}}}

Models: ``popularity``, ``sasrec``, ``idgenrec-KIND`` (KIND: learned, title, random). Metric keys are
the DVC metric keys (``test/seen_included/ndcg@10``, ...); ``seeds`` lists one value per seed, in
seed order (``settings`` names each run's seed). On the dataset params.yaml names, a run counts
only if it ran params.yaml's settings (seeds and ID kind aside); a run that differs from it only in
``VARIANT_KNOBS`` (an architecture, say) is reported as ``idgenrec-KIND-VALUE``. Other top-level
keys of an existing headline.json (``zero_shot``, ``scale``, ``reliability``, ...) are kept.
"""

from __future__ import annotations

import copy
import json
import re
import statistics
import sys
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from benchmarks.common import KINDS, RESULTS, SCRIPTS, atomic_write, id_kind, write_json

HEADLINE = RESULTS / "headline.json"
README, RESULTS_DOC, SUITE_DOC = Path("README.md"), Path("docs/results.md"), Path("benchmarks/README.md")
SUITE_START, SUITE_END = "<!-- scripts:start -->", "<!-- scripts:end -->"
README_START, README_END = "<!-- headline:start -->", "<!-- headline:end -->"
DOC_START, DOC_END = "<!-- results:start -->", "<!-- results:end -->"
# Result files whose tables a doc carries between ``<!-- NAME:start -->`` and ``<!-- NAME:end -->``.
DOC_TABLES = [(Path("docs/scale.md"), "distributed", "distributed.md", "python -m benchmarks.distributed"),
              (Path("docs/scale.md"), "distributed-quality", "distributed-quality-ml-100k.md",
               "python -m benchmarks.distributed --compare ..."),
              (Path("docs/scale.md"), "scale", "scale.md", "python -m benchmarks.scale"),
              (Path("docs/reliability.md"), "reliability", "reliability.md", "python -m benchmarks.reliability"),
              (Path("docs/datasets.md"), "zero-shot", "zero-shot-toys.md", "python -m benchmarks.zero_shot ..."),
              (Path("docs/datasets.md"), "zero-shot-ml-100k", "zero-shot-ml-100k.md",
               "python -m benchmarks.zero_shot --held-out ml-100k ..."),
              (Path("docs/datasets.md"), "zero-shot-yelp", "zero-shot-yelp.md",
               "python -m benchmarks.zero_shot --held-out yelp ...")]
MODELS = ("popularity", "sasrec", *(f"idgenrec-{kind}" for kind in KINDS))
DATASETS = ("ml-100k", "beauty")
DISPLAY = {"popularity": "Popularity", "sasrec": "SASRec (CE)", "idgenrec-learned": "IDGenRec, learned IDs",
           "idgenrec-title": "IDGenRec, title IDs", "idgenrec-random": "IDGenRec, random IDs"}
FILE_MODELS = {"pop": "popularity", "sasrec": "sasrec"}  # quality.py's names for the baselines

# A knob added to params.yaml after results were recorded, with the value that reproduces what the
# code did before the knob existed: a run that does not record the knob is read as having that value.
KNOB_BEFORE_RECORDED: dict[str, object] = {
    "backbone.architecture": "seq2seq", "training.item_loss": 0.0, "training.item_seen_unlikelihood": 0.0,
    "training.ranking": "beams", "training.similarity_weights": [0.0],
    "training.similarity_min_gain": 0.02,  # with one weight there is nothing to choose: any gain reads the same
    "warmup.keyword_words": 4,
}
# Knobs that name a variant of a model rather than another setting: a run that differs from
# params.yaml only in these is reported as ``idgenrec-KIND-VALUE`` (params.yaml's value: ``idgenrec-KIND``).
VARIANT_KNOBS: tuple[str, ...] = ("backbone.architecture",)
# Runs of the default's settings trained before training.similarity_weights existed (they ranked with weight 0).
WITHOUT_SIMILARITY = "nosim"
VARIANT_DISPLAY = {WITHOUT_SIMILARITY: "without the similarity term"}
# Knobs only one architecture reads: compared only between runs of that architecture.
ARCHITECTURE_ONLY = {"causal": ("backbone.causal_layers", "backbone.causal_dropout", "training.window_stride",
                               "training.item_loss", "training.item_seen_unlikelihood", "training.ranking")}
# What a run's model reads from params.yaml, by model (dotted prefixes); seeds and the ID kind vary by run.
READS = {
    "popularity": ("data.k_core", "evaluation"),
    "sasrec": ("data.k_core", "evaluation", "sasrec"),
    "idgenrec": ("data.k_core", "data.text_fields", "data.fallback_text", "evaluation", "backbone", "warmup", "ids",
                 "training"),
}
PER_RUN = {"training.seed", "ids.seed", "sasrec.seed", "ids.kind", "sasrec.device",
           # bf16 autocast is asked for, and runs only where the hardware has kernels: the precision a run
           # computed in is a fact of its machine, recorded with it (quality.py's "precision"), not a setting
           "training.bf16", "warmup.bf16"}
TAIL_PROBE = RESULTS / "tail-ml-100k.json"


@dataclass
class Run:
    model: str
    seed: int
    metrics: dict
    source: str
    command: str
    params: dict | None  # what the run used (None: the file did not record it)
    setting: dict = field(default_factory=dict)
    records: list = field(default_factory=list)


# -- reading runs ---------------------------------------------------------------------------


def flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            out |= flatten(value, f"{name}.")
        else:
            out[name] = value
    return out


def pipeline_runs() -> list[Run]:
    """Seed 0 of the pipeline: metrics/*.json, each with the params dvc.lock recorded for its stages."""
    lock = yaml.safe_load(Path("dvc.lock").read_text())["stages"] if Path("dvc.lock").exists() else {}

    def stage_params(*stages: str) -> dict:
        merged: dict = {}
        for stage in stages:
            for section, value in (lock.get(stage, {}).get("params", {}).get("params.yaml") or {}).items():
                node = merged
                *parents, leaf = section.split(".")
                for part in parents:
                    node = node.setdefault(part, {})
                node[leaf] = value
        return merged

    sources = [("popularity", "metrics/popularity.json", ("prepare", "popularity")),
               ("sasrec", "metrics/sasrec.json", ("prepare", "sasrec")),
               ("idgenrec", "metrics/model.json", ("prepare", "register"))]
    runs = []
    for model, path, stages in sources:
        if not Path(path).exists():
            continue
        params = stage_params(*stages)
        if model == "idgenrec":
            model = f"idgenrec-{params.get('ids', {}).get('kind', 'learned')}"
        seed = (params.get("sasrec") if model == "sasrec" else params.get("training", {})).get("seed", 0) if params else 0
        runs.append(Run(model, seed, json.loads(Path(path).read_text()), path, "dvc repro", params,
                        {"device": "cpu", "evaluated_users": "all"}))
    return runs


def file_runs(path: Path) -> list[Run]:
    """The runs of one quality.py file (or a file of its layout)."""
    data = json.loads(path.read_text())
    params = data.get("params") if isinstance(data.get("params"), dict) else None
    machine = data.get("machine") or {"device": data.get("device")}
    users = (params or {}).get("evaluation", {}).get("sample_users") if params else None
    command = data.get("command", "")
    if found := re.findall(r"evaluation\.sample_users=(\d+)", " ".join([*data.get("overrides", []), command])):
        users = int(found[-1])
    command = re.sub(r"^(python )?benchmarks/(\w+)\.py", r"python -m benchmarks.\2", command)
    runs = []
    for run in data["runs"]:
        name = run.get("model", "idgenrec-learned")
        kind = id_kind(name)
        model = FILE_MODELS.get(name) or (f"idgenrec-{kind}" if kind else name)
        family = model if model in READS else "idgenrec"
        overrides = [o for o in data.get("overrides", []) if o.partition("=")[0].startswith(READS[family])]
        setting = {"device": machine.get("device") or "cpu", "threads": machine.get("threads"),
                   "precision": run.get("precision"),  # quality.py records it: bf16 runs only where the hardware has kernels
                   "similarity_weight": run.get("similarity_weight"),  # the weight validation kept, where there was a choice
                   "evaluated_users": users or "all", "overrides": overrides}
        if isinstance(data.get("params"), str):
            setting["params"] = data["params"]
        runs.append(Run(model, run["seed"], run["metrics"], f"benchmarks/results/{path.name}", command, params,
                        {k: v for k, v in setting.items() if v not in (None, [])}, run.get("records", [])))
    return runs


def all_runs() -> dict[str, list[Run]]:
    runs: dict[str, list[Run]] = {dataset: [] for dataset in DATASETS}
    runs["ml-100k"] += pipeline_runs()
    for path in sorted(RESULTS.glob("quality-*.json")):
        dataset = json.loads(path.read_text()).get("dataset")
        runs.setdefault(dataset, []).extend(file_runs(path))
    for path in sorted(RESULTS.glob("gpu-h200-paper-beauty-3ep.json")):
        runs["beauty"].extend(file_runs(path))
    return runs


# -- which runs are the default's -----------------------------------------------------------


def normalised(value: object) -> object:
    """``1e-06`` (a string to YAML 1.1) and ``1.0e-6`` (a float) are the same setting."""
    if isinstance(value, str):
        try:
            return float(value)
        except ValueError:
            return value
    return value


def recorded(params: dict, knob: str) -> str:
    """``knob`` (dotted) as a run's params record it, or as the code ran before the knob existed."""
    return str(flatten(params).get(knob, KNOB_BEFORE_RECORDED[knob]))


def architecture(params: dict) -> str:
    return recorded(params, "backbone.architecture")


def differences(run: Run, reference: dict) -> set[str] | None:
    """Knobs (dotted) where ``run`` differs from ``reference`` among those its model reads; None if unknown."""
    if run.params is None:
        return None
    family = run.model if run.model in READS else "idgenrec"
    recorded, current = flatten(run.params), flatten(reference)
    ignored = set(PER_RUN)
    if family == "idgenrec":
        ours = architecture(run.params)
        ignored |= {k for arch, knobs in ARCHITECTURE_ONLY.items() if arch != ours for k in knobs}
    keys = {k for k in recorded.keys() | current.keys() if k.startswith(READS[family]) and k not in ignored}
    missing = object()
    return {k for k in keys
            if normalised(recorded.get(k, KNOB_BEFORE_RECORDED.get(k, missing))) != normalised(current.get(k, missing))}


def probed_tail(run: Run, reference: dict) -> dict | None:
    """The tail probe by which a run that differs from ``reference`` only in its last phase's length counts.

    benchmarks/tail_probe.py reran that run's last phase at the reference length from the run's own
    checkpoints; where the first phase stayed selected, the default's run selects the same checkpoint,
    so its test metrics are this run's.
    """
    kind = id_kind(run.model)
    schedule, current = run.params["training"]["schedule"], reference["training"]["schedule"]
    if kind is None or len(schedule) != len(current) or schedule[:-1] != current[:-1] or not TAIL_PROBE.exists():
        return None
    if {k: v for k, v in schedule[-1].items() if k != "epochs"} != {k: v for k, v in current[-1].items() if k != "epochs"}:
        return None
    first = [r["valid_ndcg@10"] for r in run.records if r.get("phase_index") == 0 and "valid_ndcg@10" in r]
    for probed in json.loads(TAIL_PROBE.read_text())["runs"]:
        # the first phase's best score, to the last bit, tells this run from another of the same kind and seed
        if first and (probed["kind"], probed["seed"], probed.get("first_phase_best")) == (kind, run.seed, max(first)):
            probe = next((p for p in probed["probes"] if p["epochs"] == current[-1]["epochs"]), None)
            if probe is not None and probe["selected_phase"] == 1:
                return probe
    return None


# Profiles whose runs are reported beside the default's, as ``idgenrec-KIND-LABEL`` (on the default's dataset).
VARIANT_PROFILES = {"seq2seq": Path("profiles/cpu-seq2seq.yaml"), "beams": Path("profiles/cpu-beams.yaml")}


def settings_match(run: Run, reference: dict) -> bool | None:
    """Whether ``run`` has ``reference``'s settings (a last phase the tail probe covers counts); None if unknown."""
    diff = differences(run, reference)
    if diff is None:
        return None
    if diff == {"training.schedule"} and (probe := probed_tail(run, reference)):
        run.setting["last_phase_epochs"] = run.params["training"]["schedule"][-1]["epochs"]
        run.setting["counted_by"] = f"{TAIL_PROBE}: its last phase rerun at {probe['epochs']:g} epoch kept the first phase selected"
        diff = set()
    return not diff


def headline_name(run: Run, reference: dict) -> str | None:
    """``run``'s model name in the headline against ``reference`` (params.yaml), None where it is not reported."""
    name = run.model
    match = settings_match(run, reference)
    if match is None:
        return None
    if match:
        return name
    diff = differences(run, reference)
    if id_kind(name) and "training.similarity_weights" in diff and "similarity_weights" not in run.params.get("training", {}):
        # trained before the similarity weights existed: beside the default's, as its model without the term
        without = copy.deepcopy(reference)
        without["training"]["similarity_weights"] = KNOB_BEFORE_RECORDED["training.similarity_weights"]
        if settings_match(run, without):
            return f"{name}-{WITHOUT_SIMILARITY}"
    if diff <= set(VARIANT_KNOBS) and id_kind(name):
        return name + "-" + "-".join(str(flatten(run.params).get(k, KNOB_BEFORE_RECORDED.get(k))) for k in sorted(diff))
    if id_kind(name):
        for label, path in VARIANT_PROFILES.items():
            if path.exists() and settings_match(run, yaml.safe_load(path.read_text())):
                return f"{name}-{label}"
    return None


def other_dataset_name(run: Run, reference: dict) -> str:
    """``run``'s model name on a dataset params.yaml does not name: the default's architecture keeps the
    model's name; a run of another architecture or of a named profile says which, and so does a run
    of the default architecture that ranks another way (``-beams``) or whose first recommender phase is
    longer or shorter (``-5ep``) says so too, as does one whose warm-up taught IDs of another length (``-8words``)."""
    if not id_kind(run.model):
        return run.model
    if run.params is None:  # an older file that names its profile instead of recording its params
        profile = str(run.setting.get("params", "")).split()
        return f"{run.model}-{Path(profile[0]).stem}" if profile else run.model
    ours = architecture(run.params)
    if ours != architecture(reference):
        return f"{run.model}-{ours}"
    name, ranking = run.model, recorded(run.params, "training.ranking")
    if ranking != recorded(reference, "training.ranking"):
        name += f"-{ranking}"
    epochs, default = first_phase_epochs(run.params), first_phase_epochs(reference)
    if epochs != default:
        name += f"-{epochs:g}ep"
    words = recorded(run.params, "warmup.keyword_words")
    return name if words == recorded(reference, "warmup.keyword_words") else f"{name}-{words}words"


def first_phase_epochs(params: dict) -> float | None:
    """Epochs of the schedule's first recommender phase."""
    phases = params.get("training", {}).get("schedule", [])
    return next((float(p["epochs"]) for p in phases if p.get("phase") == "recommender"), None)


def current_runs(dataset: str, runs: list[Run], reference: dict, same_dataset: bool) -> dict[str, list[Run]]:
    """Runs by headline model name: on the reference's dataset only the reference's settings (or a variant)."""
    chosen: dict[str, list[Run]] = {}
    for run in runs:
        name = headline_name(run, reference) if same_dataset else other_dataset_name(run, reference)
        if name is None:
            continue
        seeds = {r.seed for r in chosen.get(name, [])}
        if run.seed not in seeds:  # the first source of a seed wins (the pipeline's metrics come first)
            chosen.setdefault(name, []).append(run)
    return {name: sorted(rs, key=lambda r: r.seed) for name, rs in sorted(chosen.items(), key=lambda x: model_order(x[0]))}


def model_order(name: str) -> tuple[int, int, str]:
    """The default's models in MODELS' order, then each variant's ID kinds in the same order."""
    base = next((m for m in MODELS if name.startswith(m + "-")), None)
    if name in MODELS:
        return (0, MODELS.index(name), "")
    return (1, MODELS.index(base) if base else len(MODELS), name)


def display(name: str) -> str:
    """'IDGenRec, learned IDs' for the default's model; 'IDGenRec seq2seq, learned IDs' for a variant's."""
    if name in DISPLAY:
        return DISPLAY[name]
    base = next((m for m in MODELS if name.startswith(m + "-")), None)
    if base is None or not base.startswith("idgenrec-"):
        return name
    variant = name[len(base) + 1:]
    return DISPLAY[base].replace("IDGenRec,", f"IDGenRec {VARIANT_DISPLAY.get(variant, variant)},")


def summarise(runs: list[Run]) -> dict:
    keys = sorted(set.intersection(*(set(r.metrics) for r in runs)))
    out = {}
    for key in keys:
        values = [r.metrics[key] for r in runs]
        out[key] = {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                    "seeds": values}
    return out


def run_settings(runs: list[Run]) -> dict:
    return {"runs": [{"seed": r.seed, "source": r.source, "command": r.command, **r.setting} for r in runs]}


# -- speed ----------------------------------------------------------------------------------


def read(name: str) -> dict | None:
    path = RESULTS / name
    return json.loads(path.read_text()) if path.exists() else None


def speed_section() -> dict:
    speed: dict = {}
    if data := read("speed.json"):
        setting = {**data.get("machine", {}), "model": data.get("model"),
                   "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in data["peak_flops"].items()}}
        source = {"source": "benchmarks/results/speed.json", "command": data.get("command", "python -m benchmarks.speed")}
        model = data["model"]
        speed["training"] = {**source, "setting": setting, "rows": [
            {"history_length": r["history_length"], "precision": "bf16" if r["bf16"] else "fp32",
             "batch_size": model["batch_size"], "samples_per_s": r["samples_per_s"],
             "target_items_per_s": r.get("target_items_per_s"), "target_positions_per_s": r.get("target_positions_per_s"),
             "mfu": r["mfu"], "mfu_peak": "measured dense matmul peak of the same precision"} for r in data["training"]]}
        speed["decoding"] = {**source, "setting": setting, "rows": [
            {"history_length": r["history_length"], "items": r["items"], "ranking": r.get("ranking", "beams"),
             "trie": r["constrained"], "beams": model["num_beams"],
             "p50_ms": r["p50_ms"], "p95_ms": r["p95_ms"], "batched_users_per_s": r["batch_users_per_s"]}
            for r in data["decoding"]]}
    if data := read("architectures-speed.json"):
        speed["architectures"] = {
            "source": "benchmarks/results/architectures-speed.json",
            "command": "python -m benchmarks.architectures speed --prepared artifacts/prepared --out "
                       "benchmarks/results/architectures-speed",
            "setting": data["setting"], "rows": data["architectures"], "causal_over_seq2seq": data["ratio"]}
    if data := read("ids_benchmark_ml-100k.json"):
        result = data["results"][0]
        speed["id_generation"] = {
            "source": "benchmarks/results/ids_benchmark_ml-100k.json", "command": "python -m benchmarks.ids_benchmark --datasets ml-100k",
            "setting": {**data["environment"], "dataset": "ml-100k", "backbone": result.get("backbone")},
            "catalogue_items": result["items"], "catalogue_items_per_s": result["learned"]["items_per_second"],
            "subset_items": result["speed"]["subset_items"],
            "batched_items_per_s": result["speed"]["batched_items_per_second"],
            "one_at_a_time_items_per_s": result["speed"]["one_at_a_time_items_per_second"]}
    if data := read("pipeline-ml-100k.json"):
        peaks = data["machine"].get("peak_flops", {})
        speed["pipeline"] = {
            "source": "benchmarks/results/pipeline-ml-100k.json", "command": "python -m benchmarks.pipeline_times",
            # the machine's load at the start is dropped: where() then shows the load at the end, which
            # counts the other work that ran beside the stages
            "setting": {**{k: v for k, v in data["machine"].items() if k not in ("peak_flops", "load_average")},
                        "dataset": "ml-100k", "params": "params.yaml",
                        "matmul_peak_gflops": {k: round(v / 1e9, 1) for k, v in peaks.items()},
                        "load_average_at_end": [round(x, 2) for x in data["load_average_at_end"]]},
            # ranking: recorded since the item ranking existed; the runs before it used beam search
            "architecture": data["architecture"], "ranking": data.get("ranking", "beams"),
            "total_s": data["total_seconds"], "prepared_to_evaluated_s": data["prepared_to_evaluated_seconds"],
            "stages_s": {r["stage"]: r["seconds"] for r in data["stages"]}}
    return speed


# -- the headline ---------------------------------------------------------------------------


def headline() -> dict:
    reference = yaml.safe_load(Path("params.yaml").read_text())
    quality, settings = {}, {}
    for dataset, runs in all_runs().items():
        chosen = current_runs(dataset, runs, reference, dataset == reference["data"]["name"])
        if chosen:
            quality[dataset] = {name: summarise(rs) for name, rs in chosen.items()}
            settings[dataset] = {name: run_settings(rs) for name, rs in chosen.items()}
    kept = json.loads(HEADLINE.read_text()) if HEADLINE.exists() else {}
    return {**kept, "quality": quality, "settings": settings, "speed": speed_section()}


# -- tables ---------------------------------------------------------------------------------


def cell(entry: dict | None) -> str:
    if entry is None:
        return "-"
    return f"{entry['mean']:.4f}" + (f" ± {entry['std']:.4f}" if len(entry["seeds"]) > 1 else "")


def quality_table(head: dict, dataset: str, keys: list[str], brief: bool = False) -> list[str]:
    """One row per model; ``brief`` (the README) leaves out the rows of the architecture params.yaml does not use
    and of beam search (docs/results.md has them)."""
    other = {"causal", "seq2seq"} - {architecture(yaml.safe_load(Path("params.yaml").read_text()))}
    labels = [k.replace("test/", "").replace("seen_included/", "").replace("seen_excluded/", "excl. ").replace("recall", "R")
              .replace("ndcg", "N") for k in keys]
    lines = ["| model | seeds | " + " | ".join(labels) + " |", "|---|---|" + "---|" * len(keys)]
    for model, metrics in head["quality"].get(dataset, {}).items():
        if brief and model.rsplit("-", 1)[-1] in other | {"beams"}:
            continue
        seeds = ",".join(str(r["seed"]) for r in head["settings"][dataset][model]["runs"])
        lines.append(f"| {display(model)} | {seeds} | " + " | ".join(cell(metrics.get(k)) for k in keys) + " |")
    return lines


HEADLINE_KEYS = ["test/seen_included/recall@10", "test/seen_included/ndcg@10",
                 "test/seen_excluded/recall@10", "test/seen_excluded/ndcg@10"]
FULL_KEYS = [f"test/{setting}/{metric}@{k}" for setting in ("seen_included", "seen_excluded")
             for metric in ("recall", "ndcg") for k in (5, 10)]


BEAUTY_RUN = re.compile(r"idgenrec-(?P<kind>\w+?)(?P<beams>-beams)?(?:-(?P<epochs>[\d.]+)ep)?(?:-(?P<words>\d+)words)?")


def beauty_finding(beauty: dict, key: str) -> str:
    """Every CPU IDGenRec run on Amazon Beauty against SASRec and popularity: ID kind, ranking, recommender epochs."""
    default_epochs = first_phase_epochs(yaml.safe_load(Path("params.yaml").read_text()))
    sasrec = beauty["sasrec"][key]["mean"]
    groups: dict[tuple[str, str], list[str]] = {}
    for name, metrics in beauty.items():
        match = BEAUTY_RUN.fullmatch(name)
        if match is None or match["kind"] not in KINDS or key not in metrics:
            continue
        value, seeds = metrics[key]["mean"], len(metrics[key]["seeds"])
        epochs = float(match["epochs"] or default_epochs)
        groups.setdefault((match["kind"], "beam search" if match["beams"] else "item ranking"), []).append(
            (epochs, f"{epochs:g} ep.{f' {words}-word IDs' if (words := match['words']) else ''} {value:.4f} ({value / sasrec:.2f}x"
                     f"{f', {seeds} seeds' if seeds > 1 else ''})"))
    order = {kind: index for index, kind in enumerate(KINDS)}
    by_kind: dict[str, list[str]] = {}
    for (kind, ranking), runs in sorted(groups.items(), key=lambda g: (order[g[0][0]], g[0][1] != "item ranking")):
        by_kind.setdefault(kind, []).append(f"{ranking} " + ", ".join(text for _, text in sorted(runs)))
    parts = [f"{kind} IDs, " + ", ".join(rankings) for kind, rankings in by_kind.items()]
    return (f"Amazon Beauty on the CPU (one seed unless said, 2,000 sampled users; [docs/results.md](docs/results.md)), "
            f"test N@10 with nothing excluded (and its ratio to SASRec's): SASRec {sasrec:.4f}, "
            f"popularity {beauty['popularity'][key]['mean']:.4f}; "
            + "; ".join(parts) + ".")


def per_seed(head: dict, dataset: str, model: str, key: str) -> dict[int, float]:
    """``model``'s ``key`` by seed (the headline keeps a model's values in its runs' seed order)."""
    seeds = [run["seed"] for run in head["settings"][dataset][model]["runs"]]
    return dict(zip(seeds, head["quality"][dataset][model][key]["seeds"]))


def findings(head: dict) -> list[str]:
    """Findings computed from the headline numbers (no number here is typed in)."""
    quality = head["quality"].get("ml-100k", {})
    out = []
    key, excluded = "test/seen_included/ndcg@10", "test/seen_excluded/ndcg@10"
    pop, learned, sasrec = (quality.get(m, {}) for m in ("popularity", "idgenrec-learned", "sasrec"))
    if key in pop and key in learned:
        out.append(f"Learned IDs reach {learned[key]['mean'] / pop[key]['mean']:.1f}x popularity's NDCG@10 with nothing "
                   f"excluded and {learned[excluded]['mean'] / pop[excluded]['mean']:.1f}x with seen items excluded.")
    for suffix, where in (("", ""), ("-beams", " with the cpu-beams profile")):
        kinds = [m for kind in KINDS if key in quality.get(m := f"idgenrec-{kind}{suffix}", {})]
        if len(kinds) < 3:
            continue
        # compared on the seeds every kind has, so a kind with more seeds is not averaged over others
        by_seed = [per_seed(head, "ml-100k", m, key) for m in kinds]
        common = sorted(set.intersection(*(set(values) for values in by_seed)))
        if not common:
            continue
        runs = [[values[seed] for seed in common] for values in by_seed]
        means = [statistics.fmean(values) for values in runs]
        lows_above = all(min(a) > max(b) for a, b in zip(runs, runs[1:]))
        shown = ", ".join(f"{id_kind(m)} {value:.4f}" for m, value in zip(kinds, means))
        seeds = f"seed{'s' if len(common) > 1 else ''} {', '.join(map(str, common))}"
        verdict = "holds" if means == sorted(means, reverse=True) else "does not hold"
        out.append(f"On ML-100k{where} the paper's ablation (learned > title > random IDs) {verdict} on "
                   f"{'the mean of ' if len(common) > 1 else ''}{seeds} ({shown})"
                   + (", and every seed of each kind is above every seed of the next." if lows_above and len(common) > 1 else "."))
    if key in sasrec and key in learned:
        ratio = learned[key]["mean"] / sasrec[key]["mean"]
        out.append(f"Against SASRec trained to convergence in the same harness, learned IDs reach {ratio:.2f}x its "
                   "NDCG@10 with nothing excluded.")
    seq2seq = quality.get("idgenrec-learned-seq2seq", {})
    if key in seq2seq and key in learned:
        out.append(f"The causal recommender's learned IDs score {learned[key]['mean'] / seq2seq[key]['mean']:.2f}x the "
                   f"seq2seq recommender's NDCG@10 (means of {len(learned[key]['seeds'])} and "
                   f"{len(seq2seq[key]['seeds'])} seeds), in a fraction of its training compute.")
    alternation = read("alternation-ml-100k.json")
    if alternation:
        final, valid = alternation["mean"]["final"], "valid/seen_excluded/ndcg@10"
        alt, control = final["alternating"], final["control"]
        profile = Path(alternation.get("params", "params.yaml")).stem
        where = "" if profile == "params" else f" ({profile} profile)"
        out.append(f"The ID phase{where}: over {len(alternation['seeds'])} seeds the alternating run's final model scores as a "
                   f"control without the ID phase does (valid N@10 {alt[valid]:.4f} against {control[valid]:.4f}, test "
                   f"{alt[key]:.4f} against {control[key]:.4f}); validation selects the end of the first phase in both.")
    beauty = head["quality"].get("beauty", {})
    if all(key in beauty.get(m, {}) for m in ("popularity", "sasrec")):
        out.append(beauty_finding(beauty, key))
    shots = []
    for dataset, entry in sorted(head.get("zero_shot", {}).items()):
        held, included = entry["held_out"], "seen_included/ndcg@10"
        rows = held["models"]
        zero, pop, own, sasrec = (rows.get(m, {}).get(included) for m in
                                  ("idgenrec zero-shot", "popularity", "idgenrec in-domain", "sasrec"))
        if None in (zero, pop):
            continue
        against = [f"{zero / pop:.2f}x its popularity"]
        if sasrec:
            against.append(f"{zero / sasrec:.2f}x SASRec trained on it")
        if own:
            against.append(f"{zero / own:.0%} of the same model trained on it")
        shots.append(f"{dataset} (trained on {' + '.join(held['trained_on'])}) {zero:.4f}, {', '.join(against)}")
    if shots:
        out.append("Zero-shot, test N@10 on a dataset the model never saw: " + "; ".join(shots)
                   + " ([docs/datasets.md](docs/datasets.md)).")
    return out


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f}"


def where(setting: dict) -> str:
    """'AMD EPYC, 2 threads, load 5.2' (the load average over the last minute, at the end)."""
    load = setting.get("load_average") or setting.get("load_average_at_end")
    return ", ".join(filter(None, [setting.get("cpu"), f"{setting.get('threads')} threads",
                                   f"load {load[0]:.1f}" if load else None]))


def speed_lines(head: dict, brief: bool = False) -> list[str]:
    """The speed table; ``brief`` (the README) leaves out decoding without the trie."""
    speed, lines = head["speed"], []
    if training := speed.get("training"):
        s = training["setting"]
        model, sample = s["model"], "windows" if s["model"]["architecture"] == "causal" else "prompts"
        for row in training["rows"]:
            lines.append(f"| training, {model['architecture']} recommender (params.yaml), history {row['history_length']}, "
                         f"batches of {row['batch_size']} {sample}, {row['precision']} | "
                         f"{row['samples_per_s']:.0f} {sample}/s, {fmt(row['target_items_per_s'])} target items/s, "
                         f"MFU {row['mfu']:.0%} | {where(s)} |")
    if architectures := speed.get("architectures"):
        s, rows, ratio = architectures["setting"], architectures["rows"], architectures["causal_over_seq2seq"]
        cpu = f"{s['cpu']}, {s['threads']} threads, {s['precision']}"
        lines.append(f"| training, causal against seq2seq, {rows['causal']['tokens_per_step']:.0f} tokens a step | "
                     f"{rows['causal']['target_items_per_s']:.0f} against {rows['seq2seq']['target_items_per_s']:.0f} "
                     f"target items/s ({ratio['target_items_per_s']:.1f}x), MFU {rows['causal']['mfu']:.0%} against "
                     f"{rows['seq2seq']['mfu']:.0%} | {cpu} |")
    if decoding := speed.get("decoding"):
        s = decoding["setting"]
        full = max(r["items"] for r in decoding["rows"])
        for row in [r for r in decoding["rows"] if r["items"] == full and (r["trie"] or not brief)]:
            how = "every item scored" if row["ranking"] == "items" else f"{row['beams']} beams, {'trie' if row['trie'] else 'no trie'}"
            lines.append(f"| top-10 for one user, {s['model']['architecture']} recommender, history {row['history_length']}, "
                         f"{how} | p50 {row['p50_ms']:.0f} ms, "
                         f"p95 {row['p95_ms']:.0f} ms | {where(s)} |")
    if ids := speed.get("id_generation"):
        s = ids["setting"]
        lines.append(f"| textual IDs, first {ids['subset_items']} ML-100k items | {ids['batched_items_per_s']:.0f} items/s batched, "
                     f"{ids['one_at_a_time_items_per_s']:.0f} one at a time | {where(s)} |")
    if pipeline := speed.get("pipeline"):
        s = pipeline["setting"]
        peaks = ", ".join(f"{k} {v:.0f}" for k, v in s["matmul_peak_gflops"].items())
        lines.append(f"| `dvc repro`, {pipeline['architecture']} recommender ranking by {pipeline['ranking']}, every stage forced | "
                     f"{pipeline['total_s'] / 60:.1f} min "
                     f"(prepared data -> evaluated model {pipeline['prepared_to_evaluated_s'] / 60:.1f} min) | "
                     f"{where(s)}, matmul peak GFLOP/s: {peaks} |")
    return ["| what | measured | setting |", "|---|---|---|", *lines] if lines else []


def readme_block(head: dict) -> str:
    lines = [README_START, "",
             "_Generated by `python -m benchmarks report` from `benchmarks/results/headline.json`; "
             "every table, setting and command: [docs/results.md](docs/results.md)._", "",
             "ML-100k, test split, leave-one-out, full-catalogue ranking; mean ± std over seeds. "
             "R/N = Recall/NDCG; \"excl.\" = each user's history excluded from the ranking.", "",
             *quality_table(head, "ml-100k", HEADLINE_KEYS, brief=True), "",
             *[f"- {line}" for line in findings(head)], "",
             "Reproduce: `make pipeline` (seed 0 of popularity, SASRec and learned IDs), then "
             "`python -m benchmarks run full --only quality` (the other seeds and ID kinds; the beams rows: the same with "
             "`--params profiles/cpu-beams.yaml`; the seq2seq recommender's rows, in docs/results.md: `cpu-seq2seq.yaml`) "
             "and `python -m benchmarks report`.", "",
             "Speed, each figure with the machine it ran on and its load average (other work on a 2-core machine "
             "slows every figure; `python -m benchmarks.speed` remeasures training and decoding in about 2 minutes):", "",
             *speed_lines(head, brief=True), "", README_END]
    return "\n".join(lines)


def settings_lines(head: dict, dataset: str) -> list[str]:
    """One line per model: each source file with its seeds and the settings it records."""
    lines = []
    for model, entry in head["settings"][dataset].items():
        groups: dict[str, list[dict]] = {}
        for run in entry["runs"]:
            groups.setdefault(run["source"], []).append(run)
        parts = []
        for source, runs in groups.items():
            run = runs[0]
            extra = [run["device"], *([run["precision"]] if "precision" in run else []), f"users: {run['evaluated_users']}"]
            if run.get("similarity_weight") is not None:
                extra.append(f"similarity weight {run['similarity_weight']:g}")
            extra += [f"last phase {r['last_phase_epochs']:g} epochs (seed {r['seed']}, counted by the tail probe)"
                      for r in runs if "last_phase_epochs" in r]
            extra += [f"`--set {o}`" for o in run.get("overrides", [])]
            if "params" in run:
                extra.append(f"command `{run['command']}`")
            seeds = ",".join(str(r["seed"]) for r in runs)
            parts.append(f"`{source}` (seed {seeds}; {'; '.join(extra)})")
        lines.append(f"- {display(model)}: " + ", ".join(parts))
    return lines


INCLUDED = [  # (file, what it shows, command when the JSON does not record it)
    ("architectures-speed.md", "The causal recommender's training step against the seq2seq one's, same tokens per batch.",
     "python -m benchmarks.architectures speed --prepared artifacts/prepared --out benchmarks/results/architectures-speed"),
    ("architectures-curve-ml-100k.md", "Validation NDCG@10 against training wall time, causal and seq2seq "
     "(plot: `benchmarks/results/architectures-curve-ml-100k.png`; the machines differ, as each label says).",
     "python -m benchmarks.architectures curve --run LABEL artifacts/model metrics/model.json ... "
     "--out benchmarks/results/architectures-curve-ml-100k"),
    ("alternation-ml-100k.md", "The paper's alternation on the causal recommender: each seed's run against a "
     "control without the ID phase.", None),
    ("tail-ml-100k.md", "The seq2seq CPU profile: its last recommender phase rerun at other lengths from each run's own "
     "checkpoints.", None),
    ("quality-ml-100k-1x1-no-id-phase-learned-seed0.md",
     "The alternation control on the seq2seq CPU profile: its schedule with the ID phase left out (learned IDs, seed 0).",
     None),
    ("new-items-ml-100k-1x1.md", "New items without retraining on the seq2seq CPU profile (split seed 0).", None),
    ("ids_benchmark_ml-100k.md", "Textual ID quality and generation speed.", "python -m benchmarks.ids_benchmark --datasets ml-100k"),
    ("ids_benchmark_beauty.md", "Textual ID quality and generation speed on Amazon Beauty.",
     "python -m benchmarks.ids_benchmark --datasets beauty"),
    ("speed.md", "Training throughput, MFU and decoding latency.", None),
    ("pipeline-ml-100k.md", "The default pipeline's wall time by stage (every stage forced).",
     "python -m benchmarks.pipeline_times"),
    ("layer-cost.md", "Cost of a training step at each depth.", None),
    ("training-step.md", "The library's CPU training step against PyTorch's defaults.", None),
    ("decoding-speed-ml-100k.md", "Decoding with the self-attention-only cache reorder against the whole-cache reorder.", None),
    ("gpu-h200.md", "GPU costs of the paper-offline profile's model on an NVIDIA H200.", None),
    ("gpu-h200-paper-beauty-3ep.md", "The paper-offline profile on Amazon Beauty, 3 of its 30 recommender epochs "
                                     "(NVIDIA H200).", None),
    ("gpu-h200-paper-beauty-alternation.md", "An ID phase on the paper-offline profile against a control without it "
                                             "(Amazon Beauty, NVIDIA H200).", None),
]


def included(name: str, caption: str, command: str | None) -> list[str]:
    path = RESULTS / name
    if not path.exists():
        return []
    body = re.sub(r"^#{1,3} ", "#### ", path.read_text(encoding="utf-8").strip(), flags=re.M)
    data = read(path.with_suffix(".json").name) or {}
    command = data.get("command") if isinstance(data.get("command"), str) else command
    if command:
        command = re.sub(r"^(python )?benchmarks/(\w+)\.py", r"python -m benchmarks.\2", command)
    return [f"### {caption}", "", body, "", f"Source: `benchmarks/results/{name}`" + (f"; command: `{command}`" if command else ""), ""]


def doc_block(head: dict) -> str:
    lines = [DOC_START, "", "_Generated by `python -m benchmarks report` from `metrics/` and `benchmarks/results/`; "
             "do not edit by hand._", ""]
    for dataset in head["quality"]:
        lines += [f"### Quality on {dataset} (test, leave-one-out, full-catalogue ranking)", "",
                  "Mean ± std over seeds; left four: nothing excluded, right four: each user's history excluded.", "",
                  *quality_table(head, dataset, FULL_KEYS), "", "Runs:", "", *settings_lines(head, dataset), ""]
    lines += ["Reproduce: `make pipeline` (ML-100k seed 0), `python -m benchmarks run full --only quality`, and each "
              "file's own command (in its JSON).", "", "### Speed", "", *speed_lines(head), ""]
    for name, caption, command in INCLUDED:
        lines += included(name, caption, command)
    lines.append(DOC_END)
    return "\n".join(lines)


def doc_table(marker: str, result: str, command: str) -> str:
    """A doc's copy of ``benchmarks/results/<result>`` between its ``marker`` comments."""
    body = included(result, "Measured", None) or [f"Not measured yet: `{command}`.", ""]
    return "\n".join([f"<!-- {marker}:start -->", "", "_Generated by `python -m benchmarks report`; do not edit by hand._",
                      "", *body, f"<!-- {marker}:end -->"])


SIMILARITY_DOC, SIMILARITY_START, SIMILARITY_END = Path("docs/method.md"), "<!-- similarity:start -->", "<!-- similarity:end -->"


def similarity_block() -> str:
    """docs/method.md's table of the similarity weight validation kept, per quality run that chose one."""
    lines = [SIMILARITY_START, "", "_Generated by `python -m benchmarks report` from `benchmarks/results/quality-*.json`._", ""]
    rows = []
    for path in sorted(RESULTS.glob("quality-*.json")):
        data = json.loads(path.read_text())
        for run in data["runs"]:
            scores = run.get("valid_by_similarity_weight")
            if not scores:
                continue
            before, after = run.get("metrics_single_weight", {}), run["metrics"]
            key = "test/seen_included/ndcg@10"
            # a run that chose while training was tested with its kept weight only: weight 0's test score is unknown
            without = before.get(key, after[key] if run["similarity_weight"] == 0 else None)
            rows.append(f"| {data['dataset']} | {run['model'].removeprefix('idgenrec-')} | {run['seed']} | "
                        + ", ".join(f"{float(w):g}: {v:.4f}" for w, v in sorted(scores.items(), key=lambda e: float(e[0])))
                        + f" | {run['similarity_weight']:g} | {'-' if without is None else f'{without:.4f}'} -> {after[key]:.4f} | "
                        f"`{path.name}` |")
    if not rows:
        return "\n".join([*lines, "No quality run has chosen a weight yet.", "", SIMILARITY_END])
    lines += ["| dataset | model | seed | valid by weight | kept | test N@10 | file |", "|---|---|---|---|---|---|---|", *rows]
    return "\n".join([*lines, "", SIMILARITY_END])


def suite_block() -> str:
    """benchmarks/README.md's table of scripts, from ``benchmarks.common.SCRIPTS``."""
    lines = [SUITE_START, "", "_Generated by `python -m benchmarks report` from `SCRIPTS` in `benchmarks/common.py`._", "",
             "| script | measures | command | running time (2 cores) | sets | writes |", "|---|---|---|---|---|---|"]
    for entry in SCRIPTS:
        commands = "<br>".join(f"`{' '.join(entry.argv(c)).replace(sys.executable, 'python')}`"
                               for c in entry.commands)
        sets = ", ".join(entry.suites) or ("by hand" + (f" (needs {entry.needs})" if entry.needs else ""))
        lines.append(f"| `{entry.name}` | {entry.measures} | {commands} | {entry.running_time} | {sets} | `{entry.outputs}` |")
    return "\n".join([*lines, "", SUITE_END])


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
    head = headline()
    write_json(HEADLINE, head)
    replace_between(README, README_START, README_END, readme_block(head))
    replace_between(RESULTS_DOC, DOC_START, DOC_END, doc_block(head))
    replace_between(SUITE_DOC, SUITE_START, SUITE_END, suite_block())
    replace_between(SIMILARITY_DOC, SIMILARITY_START, SIMILARITY_END, similarity_block())
    for doc, marker, result, command in DOC_TABLES:
        replace_between(doc, f"<!-- {marker}:start -->", f"<!-- {marker}:end -->", doc_table(marker, result, command))
    print(json.dumps({"wrote": [str(HEADLINE), str(README), str(RESULTS_DOC), str(SUITE_DOC), str(SIMILARITY_DOC),
                                *sorted({str(doc) for doc, *_ in DOC_TABLES})],
                      "quality": {d: {m: len(v["test/seen_included/ndcg@10"]["seeds"]) for m, v in q.items()}
                                  for d, q in head["quality"].items()},
                      "speed": sorted(head["speed"])}))


if __name__ == "__main__":
    main()
