"""Does a wider beam rank better? Scores saved IDGenRec models at several beam widths.

Trie-constrained beam search keeps the ``width`` best partial IDs at every step and returns
the finished ones, best first; the top-10 is the 10 best of them. With ``width`` 10 a prefix
that starts unlikely is dropped even when its item would end in the true top-10, so a wider
beam usually brings the returned list closer to the model's own top-10 by probability. This
measures what that is worth (Recall/NDCG/coverage@5/10 on validation and test, both seen-item
settings) and what it costs (seconds per evaluation), on the same models and users.

    python benchmarks/beam_width.py --prepared artifacts/prepared --widths 10 20 40 \\
        --model "IDGenRec, learned IDs:0=artifacts/model/best" --out benchmarks/results/beam-width-ml-100k
"""

from __future__ import annotations

import dataclasses
import sys
import time
from pathlib import Path

from idgenrec.backbone import pick_device
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate, selection_key
from idgenrec.recommender.model import IDGenRecModel

sys.path.insert(0, str(Path(__file__).parent))
from seen_items import parse_model, saved_models_parser, write_report  # noqa: E402

KS = (5, 10)
SPLITS = ("valid", "test")


def score(model: IDGenRecModel, dataset: SequenceDataset, width: int) -> dict[str, float]:
    """Every split and seen-item setting at beam ``width``, with the seconds each evaluation took."""
    model.settings = dataclasses.replace(model.settings, num_beams=width)
    metrics: dict[str, float] = {}
    for split in SPLITS:
        for exclude_seen in (True, False):
            started = time.perf_counter()
            for name, value in evaluate(model, dataset, split, KS, exclude_seen).items():
                metrics[selection_key(split, exclude_seen, name)] = round(value, 6)
            metrics[selection_key(split, exclude_seen, "seconds")] = round(time.perf_counter() - started, 1)
    return metrics


def markdown(rows: list[dict], dataset: str) -> str:
    lines = [f"## Beam width at decoding ({dataset})", "",
             "Saved models scored at each width (`benchmarks/beam_width.py`); N@10 / R@10 / coverage@10, "
             "seen items excluded, and N@10 with nothing excluded; seconds of one test evaluation "
             "(seen excluded) on this machine.", "",
             "| model | seed | width | valid N@10 | test N@10 | test R@10 | test coverage@10 "
             "| valid N@10, nothing excl. | test N@10, nothing excl. | seconds |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        m = row["metrics"]
        lines.append(
            f"| {row['label']} | {row['seed']} | {row['width']} | {m['valid/seen_excluded/ndcg@10']:.4f} "
            f"| {m['test/seen_excluded/ndcg@10']:.4f} | {m['test/seen_excluded/recall@10']:.4f} "
            f"| {m['test/seen_excluded/coverage@10']:.3f} | {m['valid/seen_included/ndcg@10']:.4f} "
            f"| {m['test/seen_included/ndcg@10']:.4f} | {m['test/seen_excluded/seconds']:.0f} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = saved_models_parser(__doc__)
    parser.add_argument("--widths", type=int, nargs="+", default=[10, 20, 40], help="Beam widths to score (each >= 10).")
    args = parser.parse_args(argv)
    if not args.models:
        parser.error("give at least one --model LABEL:SEED=FOLDER (an IDGenRec model folder)")
    if min(args.widths) < max(KS):
        parser.error(f"--widths: each width must be at least {max(KS)} (the top-{max(KS)} is read from the beams)")

    dataset = SequenceDataset.load(args.prepared)
    rows = []
    for label, seed, folder in map(parse_model, args.models):
        model = IDGenRecModel.load(folder, device=pick_device())
        for width in args.widths:
            rows.append({"label": label, "seed": seed, "width": width, "folder": str(folder),
                         "metrics": score(model, dataset, width)})
            m = rows[-1]["metrics"]
            print(label, seed, width, {k: v for k, v in m.items() if "ndcg@10" in k or "seconds" in k}, flush=True)
    write_report(args.out, "benchmarks/beam_width.py", {"dataset": dataset.name, "ks": list(KS), "rows": rows},
                 markdown(rows, dataset.name))


if __name__ == "__main__":
    main()
