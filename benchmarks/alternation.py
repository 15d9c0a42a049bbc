"""Does the ID phase help? Finished alternating runs against a control without the ID phase, same seeds.

The default schedule is recommender -> ID phase (IDs regenerated) -> recommender re-fit. Its
control is recommender -> recommender re-fit, with no ID phase. The first phase is the same in both
(same seed, same code), so the control starts from each run's end of phase 1 (``best/``, which the
script requires to be that checkpoint) and trains the re-fit phase on the unchanged IDs, with the
phase's own seed, so it draws the same samples as the alternating run's re-fit. Reported for each
arm: its final model and the one validation selects (end of phase 1 or final), on validation and
test, nothing excluded and seen items excluded.

    python -m benchmarks.alternation --runs artifacts/model bench/quality-learned-seeds12/ml-100k/model-learned-seed1 \
        bench/quality-learned-seeds12/ml-100k/model-learned-seed2 --seeds 0 1 2

Writes OUT.{json,md}. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from benchmarks.common import RESULTS, machine, write_report

COLUMNS = {  # reported metric -> column title
    "valid/seen_excluded/ndcg@10": "valid N@10 (seen excl., selects)",
    "test/seen_included/ndcg@10": "test N@10",
    "test/seen_included/recall@10": "test R@10",
    "test/seen_excluded/ndcg@10": "test N@10, seen excl.",
}


def run_control(run: Path, params, dataset) -> tuple[object, list[float]]:
    """The control's final model: ``run``'s end of phase 1, re-fit as the schedule's last phase without an ID phase."""
    from idgenrec.backbone import load_seq2seq, pick_device
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.alternating import BEST, decoding_settings, recommender_inputs
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.training import train_recommender_phase

    recommender, tokenizer = load_seq2seq(run / BEST / "recommender")
    generator, _ = load_seq2seq(run / BEST / "generator")
    recommender.to(pick_device())
    table = ItemIdTable.load(run / "rounds" / "ids-00.tsv")
    _, source, _ = recommender_inputs(params, dataset, recommender, tokenizer, table)
    index = len(params.training.schedule) - 1
    losses = train_recommender_phase(recommender, source, params.training, params.training.schedule[index],
                                     seed=params.training.seed * 1000 + index)
    return IDGenRecModel(recommender, tokenizer, table, decoding_settings(params), generator), losses


def final_model(run: Path, params):
    """The alternating run's final model: ``current/`` after its last phase."""
    from idgenrec.backbone import load_seq2seq, pick_device
    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.alternating import CURRENT, decoding_settings
    from idgenrec.recommender.model import IDGenRecModel

    recommender, tokenizer = load_seq2seq(run / CURRENT / "recommender")
    generator, _ = load_seq2seq(run / CURRENT / "generator")
    table = ItemIdTable.load(run / CURRENT / "item_ids.tsv")
    return IDGenRecModel(recommender.to(pick_device()), tokenizer, table, decoding_settings(params), generator)


def check_run(run: Path, params) -> dict:
    """``run``'s state, if it finished the recommender / ids / recommender schedule with phase 1's end selected."""
    from idgenrec.recommender.alternating import TrainingState

    state = TrainingState.load(run)
    phases = [p.phase for p in params.training.schedule]
    if phases != ["recommender", "ids", "recommender"]:
        raise SystemExit(f"--params: schedule {phases}; this comparison needs recommender, ids, recommender")
    if state is None or state.completed_phases != 3:
        raise SystemExit(f"{run}: not a finished run of the three-phase schedule")
    last_epoch = max(r["epoch"] for r in state.records if r["phase_index"] == 0)
    if (state.best_phase, state.best_epoch) != (0, last_epoch):
        raise SystemExit(f"{run}: best/ is phase {state.best_phase} epoch {state.best_epoch}, not the end of phase 1")
    ids_record = next(r for r in state.records if r["phase"] == "ids")
    return {"ids_changed": ids_record["ids_changed"], "items": ids_record["ids_items"]}


def main() -> None:
    from idgenrec.config import load_params
    from idgenrec.data.dataset import SequenceDataset
    from idgenrec.evaluation import evaluate_protocol
    from idgenrec.progress import configure_logging
    from idgenrec.recommender.alternating import BEST
    from idgenrec.recommender.model import IDGenRecModel

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, nargs="+", required=True, help="Finished alternating training folders.")
    parser.add_argument("--seeds", type=int, nargs="+", required=True, help="Each run's training.seed, in order.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="The runs' params (seed aside).")
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--out", type=Path, default=RESULTS / "alternation-ml-100k")
    args = parser.parse_args()
    if len(args.runs) != len(args.seeds):
        raise SystemExit("--runs and --seeds: one seed per run")
    configure_logging()
    base = load_params(args.params)
    dataset = SequenceDataset.load(args.prepared)
    seeds = []
    for run, seed in zip(args.runs, args.seeds):
        params = base.model_copy(update={"training": base.training.model_copy(update={"seed": seed})})
        info = check_run(run, params)
        started = time.perf_counter()
        control, losses = run_control(run, params, dataset)
        refit_s = time.perf_counter() - started

        def scores(model) -> dict:
            metrics = evaluate_protocol(model, dataset, params.evaluation.ks, params.evaluation.sample_users)
            return {key: metrics[key] for key in COLUMNS}

        phase1 = scores(IDGenRecModel.load(run / BEST))
        arms = {"alternating": scores(final_model(run, params)), "control": scores(control)}
        selected = {name: max((phase1, end), key=lambda m: m["valid/seen_excluded/ndcg@10"]) for name, end in arms.items()}
        seeds.append({"seed": seed, "run": str(run), **info, "control_refit_loss": losses[-1], "control_refit_s": refit_s,
                      "phase1": phase1, "final": arms, "selected": selected})
    means = {part: {arm: {key: statistics.mean(s[part][arm][key] for s in seeds) for key in COLUMNS}
                    for arm in ("alternating", "control")} for part in ("final", "selected")}
    means["phase1"] = {key: statistics.mean(s["phase1"][key] for s in seeds) for key in COLUMNS}
    payload = {"command": " ".join(["python -m benchmarks.alternation", *sys.argv[1:]]), "params": str(args.params),
               "machine": machine(),
               "dataset": dataset.name, "schedule": [p.model_dump() for p in base.training.schedule],
               "seeds": seeds, "mean": means}
    write_report(args.out, payload, render(payload))


def render(payload: dict) -> str:
    env = payload["machine"]
    schedule = " -> ".join(f"{p['phase']} {p['epochs']} ep (lr {p['learning_rate']})" for p in payload["schedule"])
    lines = [f"# The ID phase against a control without it ({payload['dataset']})", "",
             f"`{payload['command']}`; {env['cpu']}, {env['threads']} threads, fp32. Schedule: {schedule}; the control "
             "replaces the ID phase by nothing (the same first phase, then the same re-fit on unchanged IDs).", "",
             "| seed | model | " + " | ".join(COLUMNS.values()) + " |", "|---|---|" + "---|" * len(COLUMNS)]

    def row(seed, name, metrics) -> str:
        return f"| {seed} | {name} | " + " | ".join(f"{metrics[key]:.4f}" for key in COLUMNS) + " |"

    for s in payload["seeds"]:
        lines.append(row(s["seed"], "end of phase 1 (both)", s["phase1"]))
        lines.append(row(s["seed"], f"alternating, final ({s['ids_changed']} of {s['items']:,} IDs changed)",
                         s["final"]["alternating"]))
        lines.append(row(s["seed"], "control, final", s["final"]["control"]))
    m = payload["mean"]
    lines += [row("mean", "end of phase 1 (both)", m["phase1"]),
              row("mean", "alternating, final", m["final"]["alternating"]),
              row("mean", "control, final", m["final"]["control"]),
              row("mean", "alternating, selected", m["selected"]["alternating"]),
              row("mean", "control, selected", m["selected"]["control"])]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
