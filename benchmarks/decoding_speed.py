"""What decoding costs, and what the self-attention-only cache reorder saves, in one process.

Beam search re-ranks beams at every step and the decoder's key/value cache must follow
them. Transformers' ``EncoderDecoderCache.reorder_cache`` copies both halves of the cache;
``idgenrec.recommender.decoding`` reorders only the self-attention half, because beams move
only within their own prompt and every beam of a prompt holds the same cross-attention keys
and values. This times batched, trie-constrained recommendations of the same users with the
whole-cache reorder (the baseline, patched in) and with the library's, alternating the two,
at each beam width, and checks that both return the same items with the same scores.

    python -m benchmarks.decoding_speed --model artifacts/model/best --prepared artifacts/prepared \\
        --widths 10 20 --out benchmarks/results/decoding-speed-ml-100k
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

from idgenrec.backbone import pick_device
from idgenrec.data.dataset import SequenceDataset
from idgenrec.recommender import decoding
from idgenrec.recommender.model import IDGenRecModel

from benchmarks.common import write_report

K = 10
LIBRARY_REORDER = decoding._reorder_cache


def whole_cache_reorder(cache, beam_index: torch.Tensor):
    """The baseline: reorder both halves of the cache, as transformers' beam search does."""
    if cache is None:
        return None
    cache.reorder_cache(beam_index)
    return cache


def timed_recommendations(model: IDGenRecModel, histories, exclude_seen: bool, reorder) -> tuple[float, list, list]:
    decoding._reorder_cache = reorder
    try:
        started = time.perf_counter()
        items, scores = model.recommend_with_scores(histories, K, exclude_seen=exclude_seen)
        return time.perf_counter() - started, items, scores
    finally:
        decoding._reorder_cache = LIBRARY_REORDER


def compare(model: IDGenRecModel, histories, width: int, exclude_seen: bool, repeats: int) -> dict:
    """Best-of-``repeats`` seconds of each reorder (alternating), and how far their results differ."""
    model.settings = dataclasses.replace(model.settings, num_beams=width)
    seconds = {"whole_cache": [], "self_attention_only": []}
    for _ in range(repeats):
        baseline, base_items, base_scores = timed_recommendations(model, histories, exclude_seen, whole_cache_reorder)
        current, items, scores = timed_recommendations(model, histories, exclude_seen, LIBRARY_REORDER)
        seconds["whole_cache"].append(baseline)
        seconds["self_attention_only"].append(current)
    differing_lists = sum(a != b for a, b in zip(base_items, items))
    score_gap = max((abs(x - y) for a, b in zip(base_scores, scores) for x, y in zip(a, b)), default=0.0)
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "width": width, "exclude_seen": exclude_seen, "users": len(histories),
        "seconds": {name: round(value, 2) for name, value in best.items()},
        "speedup": round(best["whole_cache"] / best["self_attention_only"], 2),
        "users_per_second": round(len(histories) / best["self_attention_only"], 1),
        "differing_lists": differing_lists, "max_score_difference": score_gap,
    }


def agreement(rows: list[dict]) -> str:
    lists = sum(row["differing_lists"] for row in rows)
    gap = max(row["max_score_difference"] for row in rows)
    if lists == 0 and gap == 0:
        return "Both reorders returned identical lists with identical scores."
    return f"The reorders disagreed on {lists} lists; largest score difference {gap:.1e}."


def markdown(rows: list[dict], dataset: str, device: str, threads: int) -> str:
    lines = [f"## Decoding: whole-cache against self-attention-only reorder ({dataset}, {device}, {threads} threads)", "",
             f"Trie-constrained top-{K} of the same users, batched as in evaluation; best of the repeats "
             f"(`python -m benchmarks.decoding_speed`). {agreement(rows)}", "",
             "| beam width | seen items | users | whole cache (s) | self-attention only (s) | speedup | users/s "
             "| lists that differ | max score difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for row in rows:
        lines.append(
            f"| {row['width']} | {'excluded' if row['exclude_seen'] else 'included'} | {row['users']} "
            f"| {row['seconds']['whole_cache']:.1f} | {row['seconds']['self_attention_only']:.1f} | {row['speedup']:.2f}x "
            f"| {row['users_per_second']:.1f} | {row['differing_lists']} | {row['max_score_difference']:.1e} |"
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", type=Path, required=True, help="A saved IDGenRec model folder (e.g. artifacts/model/best).")
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--widths", type=int, nargs="+", default=[10, 20])
    parser.add_argument("--users", type=int, default=320, help="Test users decoded per timing (the first N).")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path, required=True, help="Output path without extension (.json and .md are written).")
    args = parser.parse_args(argv)
    if min(args.widths) < K:
        parser.error(f"--widths: each width must be at least {K}")

    dataset = SequenceDataset.load(args.prepared)
    device = pick_device()
    model = IDGenRecModel.load(args.model, device=device)
    histories = dataset.split_examples("test")[0][: args.users]
    model.recommend(histories[: model.settings.batch_size], K)  # warm-up: allocations, kernels
    rows = []
    for width in args.widths:
        for exclude_seen in (True, False):
            rows.append(compare(model, histories, width, exclude_seen, args.repeats))
            print(rows[-1], flush=True)
    payload = {"dataset": dataset.name, "model": str(args.model), "device": str(device),
               "threads": torch.get_num_threads(), "rows": rows}
    write_report(args.out, payload, markdown(rows, dataset.name, str(device), torch.get_num_threads()))


if __name__ == "__main__":
    main()
