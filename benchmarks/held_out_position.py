"""Why validation overstates test: is it the history a model reads, or the item it must find?

Leave-one-out validation asks for each user's second-to-last item, test for the last. This
scores saved models (seen items excluded, N@10 and R@10) on the same users with the history
and the target swapped between the two positions:

- ``valid``: the training history -> the validation item (what selection uses);
- ``test``: the training history and the validation item -> the test item (what is reported);
- ``skip``: the training history -> the test item (the test item, without the validation item
  just before it);
- ``swap``: the training history and the test item -> the validation item;
- ``train_last``: the training history without its last item -> that item (a training target);
- ``test_shuffled``: as ``test``, with the last 10 items of the history in random order.

``skip`` against ``valid`` compares the two targets on the same history; ``test`` against
``skip`` is what reading the validation item adds; ``train_last`` against ``valid`` shows how
much of the training targets a model has fitted.

    python benchmarks/held_out_position.py --prepared artifacts/prepared \\
        --model "IDGenRec, learned IDs:0=artifacts/model/best" --model "SASRec (CE):0=artifacts/sasrec" \\
        --out benchmarks/results/held_out_position_ml-100k
"""

from __future__ import annotations

import random
import sys
from pathlib import Path

from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import ranking_metrics, target_ranks
from idgenrec.models.popularity import PopularityRecommender

sys.path.insert(0, str(Path(__file__).parent))
from seen_items import load_model, parse_model, saved_models_parser, write_report  # noqa: E402

K = 10
SHUFFLED_WINDOW = 10


def cases(dataset: SequenceDataset, seed: int = 0) -> dict[str, tuple[list[list[int]], list[int]]]:
    """(histories, targets) of every case, users in the dataset's order."""
    rng = random.Random(seed)
    sequences = dataset.sequences

    def shuffled_tail(history: list[int]) -> list[int]:
        tail = history[-SHUFFLED_WINDOW:]
        rng.shuffle(tail)
        return history[:-SHUFFLED_WINDOW] + tail

    return {
        "valid": ([s[:-2] for s in sequences], [s[-2] for s in sequences]),
        "test": ([s[:-1] for s in sequences], [s[-1] for s in sequences]),
        "skip": ([s[:-2] for s in sequences], [s[-1] for s in sequences]),
        "swap": ([s[:-2] + [s[-1]] for s in sequences], [s[-2] for s in sequences]),
        "train_last": ([s[:-3] for s in sequences], [s[-3] for s in sequences]),
        "test_shuffled": ([shuffled_tail(s[:-1]) for s in sequences], [s[-1] for s in sequences]),
    }


def score(model, dataset: SequenceDataset) -> dict[str, dict[str, float]]:
    results = {}
    for name, (histories, targets) in cases(dataset).items():
        ranked = model.recommend(histories, k=K, exclude_seen=True)
        results[name] = ranking_metrics(target_ranks(ranked, targets), [K])
    return results


def markdown(rows: list[dict], dataset: str) -> str:
    names = list(rows[0]["metrics"])
    lines = [f"## Held-out position: which item, which history ({dataset}, seen items excluded)", "",
             f"N@{K} of each case (module docstring of `benchmarks/held_out_position.py`); last columns: "
             "the test item against the validation item on the same history (skip / valid), and what reading "
             "the validation item adds (test / skip).", "",
             "| model | seed | " + " | ".join(names) + " | skip / valid | test / skip |",
             "|---|---|" + "---|" * (len(names) + 2)]
    for row in rows:
        ndcg = {name: row["metrics"][name][f"ndcg@{K}"] for name in names}
        ratio = lambda a, b: f"{ndcg[a] / ndcg[b]:.2f}" if ndcg[b] else "-"  # noqa: E731
        lines.append(f"| {row['label']} | {row['seed']} | " + " | ".join(f"{ndcg[n]:.4f}" for n in names)
                     + f" | {ratio('skip', 'valid')} | {ratio('test', 'skip')} |")
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    args = saved_models_parser(__doc__).parse_args(argv)
    dataset = SequenceDataset.load(args.prepared)
    rows = [{"label": "Pop", "seed": 0, "folder": None, "metrics": score(PopularityRecommender.fit(dataset), dataset)}]
    for label, seed, folder in map(parse_model, args.models):
        model, _ = load_model(folder)
        rows.append({"label": label, "seed": seed, "folder": str(folder), "metrics": score(model, dataset)})
        print(label, seed, {k: round(v[f"ndcg@{K}"], 4) for k, v in rows[-1]["metrics"].items()}, flush=True)
    payload = {"dataset": dataset.name, "k": K, "rows": rows}
    write_report(args.out, "benchmarks/held_out_position.py", payload, markdown(rows, dataset.name))


if __name__ == "__main__":
    main()
