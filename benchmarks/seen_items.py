"""How many of each model's top-10 the user has already seen, and how many of those it could see.

With nothing excluded (RecBole's convention), a model loses every slot it gives to an item
the user already interacted with; ML-100k has no repeat interactions, so each such slot is
wasted. This scores saved models on the test split with nothing excluded and splits
``seen@10`` by whether the repeated item lies inside the model's input window (the last
``training.history_length`` items for IDGenRec, ``sasrec.max_history`` for SASRec; popularity
reads no history) or only further back, where the model cannot know about it.

    python benchmarks/seen_items.py --prepared artifacts/prepared --out benchmarks/results/seen_items_ml-100k \\
        --model "learned IDs:0=artifacts/model/best" --model "SASRec (CE):0=artifacts/sasrec" ...

Each ``--model LABEL:SEED=FOLDER`` is an IDGenRec model folder or a SASRec folder;
popularity is always fitted from the prepared data. Rows are averaged per label.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
from pathlib import Path

from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import pick_device
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import ranking_metrics, seen_shares, target_ranks
from idgenrec.models.popularity import PopularityRecommender
from idgenrec.models.sasrec import WEIGHTS_FILE, SASRecRecommender
from idgenrec.recommender.model import IDGenRecModel

K = 10


def load_model(folder: Path):
    """(model, input window) for an IDGenRec or SASRec folder."""
    if (folder / WEIGHTS_FILE).exists():
        model = SASRecRecommender.load(folder, device=str(pick_device()))
        return model, model.config.max_history
    model = IDGenRecModel.load(folder, device=pick_device())
    return model, model.settings.history_length


def score(model, window: int | None, dataset: SequenceDataset) -> dict[str, float]:
    """Test metrics with nothing excluded, and seen@10 split by the model's input window."""
    histories, targets = dataset.split_examples("test")
    ranked = model.recommend(histories, k=K, exclude_seen=False)
    metrics = ranking_metrics(target_ranks(ranked, targets), [K])
    metrics.update(seen_shares(ranked, histories, [K]))
    recent = [h[-window:] for h in histories] if window else [[] for _ in histories]
    metrics[f"seen_in_window@{K}"] = seen_shares(ranked, recent, [K])[f"seen@{K}"]
    return metrics


def parse_model(spec: str) -> tuple[str, int, Path]:
    try:
        head, folder = spec.split("=", 1)
        label, seed = head.rsplit(":", 1)
        return label, int(seed), Path(folder)
    except ValueError:
        raise SystemExit(f"--model {spec!r}: expected LABEL:SEED=FOLDER") from None


def markdown(rows: list[dict], dataset: str) -> str:
    labels = list(dict.fromkeys(r["label"] for r in rows))
    lines = [f"## Already-seen items in the top-{K} ({dataset}, test, nothing excluded)", "",
             f"Share of each user's top-{K} that is already in the user's history, mean over users, then "
             "mean ± std over seeds; 'inside the window' counts the repeats the model could see in its input.", "",
             f"| model | seeds | input window | seen@{K} | inside the window | N@{K} |", "|---|---|---|---|---|---|"]
    for label in labels:
        group = [r for r in rows if r["label"] == label]

        def cell(key: str) -> str:
            values = [r["metrics"][key] for r in group]
            spread = f" ± {statistics.stdev(values):.3f}" if len(values) > 1 else ""
            return f"{statistics.fmean(values):.3f}{spread}"

        window = group[0]["window"] or "none"
        seeds = ",".join(str(r["seed"]) for r in group)
        lines.append(f"| {label} | {seeds} | {window} | {cell(f'seen@{K}')} | {cell(f'seen_in_window@{K}')} | {cell(f'ndcg@{K}')} |")
    return "\n".join(lines) + "\n"


def saved_models_parser(description: str) -> argparse.ArgumentParser:
    """The command line of a benchmark that scores saved models: --prepared, --model ..., --out."""
    parser = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--model", dest="models", action="append", default=[], metavar="LABEL:SEED=FOLDER")
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension (.json and .md are written).")
    return parser


def write_report(out: Path, script: str, payload: dict, text: str) -> None:
    """``out``.json (the command that made it, then ``payload``) and ``out``.md (``text``), each atomically."""
    write_json(out.with_suffix(".json"), {"command": " ".join([script, *sys.argv[1:]]), **payload})
    with atomic_write(out.with_suffix(".md")) as handle:
        handle.write(text)
    print(text)


def main(argv: list[str] | None = None) -> None:
    args = saved_models_parser(__doc__).parse_args(argv)

    dataset = SequenceDataset.load(args.prepared)
    rows = [{"label": "Pop", "seed": 0, "window": None, "folder": None,
             "metrics": score(PopularityRecommender.fit(dataset), None, dataset)}]
    for label, seed, folder in map(parse_model, args.models):
        model, window = load_model(folder)
        rows.append({"label": label, "seed": seed, "window": window, "folder": str(folder),
                     "metrics": score(model, window, dataset)})
        print(label, seed, {k: round(v, 4) for k, v in rows[-1]["metrics"].items()}, flush=True)
    write_report(args.out, "benchmarks/seen_items.py", {"dataset": dataset.name, "k": K, "rows": rows}, markdown(rows, dataset.name))


if __name__ == "__main__":
    main()
