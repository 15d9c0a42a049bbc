"""New items without retraining (zero-shot): hold items out of training, add them afterwards.

A seeded random ``--fraction`` of ML-100k's items is "new": they are removed from every
training sequence (the model never sees an interaction with them, nor their text in the
warm-up), the model is trained on the remaining catalogue, and then
:meth:`IDGenRecModel.add_items` gives the new items textual IDs and extends the trie,
the vocabulary and the embeddings, with no training step. The extended model is scored on
the full dataset under the usual protocol, split into the users whose held-out item is new
(cold cases) and the rest (warm cases). References on the same users:

- the same recipe trained on every item ("retrained": what zero-shot gives up),
- popularity counted on the reduced training data (a new item has no count, so it is never ranked),
- each ID kind: learned IDs come from the bundled generator, title IDs from the new titles,
  random IDs are unused numbers (they carry nothing the recommender has learned: the paper's point).

    python -m benchmarks.new_items --prepared artifacts/prepared --kinds learned title random \
        --set 'training.schedule=[{phase: recommender, epochs: 0.3, learning_rate: 0.001}]' \
        --out benchmarks/results/new-items-ml-100k

``--stage train`` only trains (models land in ``--workdir``); ``--stage evaluate`` reuses them.
"""

from __future__ import annotations

import argparse
import platform
import random
import shlex
import sys
import time
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.atomic import atomic_write, write_json
from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.progress import configure_logging

from benchmarks.common import output_path, params_with_overrides, warmed_up_generator, with_seed

KS = (5, 10)


@dataclass(frozen=True)
class HeldOutSplit:
    """The full dataset (items reordered: old first, then new) and the old-items-only dataset to train on."""

    full: SequenceDataset
    old: SequenceDataset
    num_new: int
    dropped_users: int

    @property
    def new_items(self) -> range:
        return range(self.old.num_items, self.full.num_items)


def hold_out_items(dataset: SequenceDataset, fraction: float, seed: int) -> HeldOutSplit:
    """Pick ``fraction`` of the items at random as new; build the training dataset without them.

    Users left with fewer than 3 items cannot be split leave-one-out and are dropped from
    the training dataset only (they stay in the full one).
    """
    count = max(1, round(fraction * dataset.num_items))
    new = set(random.Random(seed).sample(range(dataset.num_items), count))
    order = [i for i in range(dataset.num_items) if i not in new] + sorted(new)
    position = {item: p for p, item in enumerate(order)}

    def reorder(values: list) -> list:
        return [values[i] for i in order]

    full = SequenceDataset(
        dataset.name, reorder(dataset.item_ids), reorder(dataset.item_titles), reorder(dataset.item_texts),
        list(dataset.user_ids), [[position[i] for i in s] for s in dataset.sequences], dict(dataset.stats),
    )
    num_old = dataset.num_items - count
    users, sequences = [], []
    for user, sequence in zip(full.user_ids, full.sequences):
        kept = [i for i in sequence if i < num_old]
        if len(kept) >= 3:
            users.append(user)
            sequences.append(kept)
    old = SequenceDataset(
        f"{dataset.name}-old", full.item_ids[:num_old], full.item_titles[:num_old], full.item_texts[:num_old],
        users, sequences, {},
    )
    return HeldOutSplit(full, old, count, full.num_users - len(users))


def train_model(dataset: SequenceDataset, params: Params, workdir: Path) -> Path:
    """Warm-up (once per dataset and settings), IDs of ``params.ids.kind``, training; returns the selected model.

    A rerun resumes: a finished run with the same settings, inputs and code is not trained again.
    """
    from idgenrec.backbone import load_seq2seq, pick_device
    from idgenrec.ids import make_id_table
    from idgenrec.recommender import alternating

    seed = params.training.seed
    generator_dir = warmed_up_generator(dataset, params, workdir)
    run_dir = workdir / f"model-{params.ids.kind}-seed{seed}"
    generator, tokenizer = load_seq2seq(generator_dir)
    table, _ = make_id_table(params.ids.kind, dataset, generator.to(pick_device()), tokenizer, params.ids)
    table_path = workdir / f"ids-{params.ids.kind}-seed{seed}.tsv"
    table.save(table_path, tokenizer)
    alternating.train(params, dataset, generator_dir, table_path, run_dir)
    return run_dir / alternating.BEST


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--fraction", type=float, default=0.1, help="Share of the items held out as new.")
    parser.add_argument("--split-seed", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0, help="Training seed.")
    parser.add_argument("--kinds", nargs="+", default=["learned", "title", "random"])
    parser.add_argument("--retrained", nargs="*", default=["learned"], help="Kinds also trained on every item.")
    parser.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--occurrences", type=int, default=2000,
                        help="Sampled training positions whose next item is new, for ranking among new items.")
    parser.add_argument("--stage", choices=["train", "evaluate", "all"], default="all")
    parser.add_argument("--workdir", type=Path, default=Path("bench/new_items"))
    parser.add_argument("--out", type=Path, help="Output path without extension (.json and .md are written).")
    args = parser.parse_args(argv)
    configure_logging()

    split = hold_out_items(SequenceDataset.load(args.prepared), args.fraction, args.split_seed)
    print(f"{split.num_new} new items of {split.full.num_items}; training on {split.old.num_users} users "
          f"({split.dropped_users} dropped), {split.old.num_interactions} of {split.full.num_interactions} interactions", flush=True)
    raw = params_with_overrides(args.params, args.overrides)
    started = time.perf_counter()
    models: dict[str, Path] = {}
    for kind in args.kinds:
        print(f"training {kind} on the old items", flush=True)
        models[kind] = train_model(split.old, with_seed(raw, kind, args.seed), args.workdir / "old")
    for kind in args.retrained:
        print(f"training {kind} on every item", flush=True)
        models[f"{kind}-retrained"] = train_model(split.full, with_seed(raw, kind, args.seed), args.workdir / "full")
    print(f"trained in {time.perf_counter() - started:.0f} s", flush=True)
    if args.stage == "train":
        return

    import torch

    from idgenrec.models.popularity import PopularityRecommender
    from idgenrec.recommender.model import IDGenRecModel
    from idgenrec.recommender.new_items import NewItems, add_items

    new = split.new_items
    items = NewItems([split.full.item_ids[i] for i in new], [split.full.item_titles[i] for i in new],
                     [split.full.item_texts[i] for i in new])
    rows = []
    occurrences = new_item_occurrences(split, args.occurrences, args.split_seed)
    pop = PopularityRecommender.fit(split.old)  # counts from the data the zero-shot models had: new items count 0
    rows.append({"model": "pop (old items' counts)", **score(pop, split)})
    variants = [(name, folder, True) for name, folder in models.items()]
    if "learned" in models:  # the generator unconstrained too: what the own-token rule changes
        variants.append(("learned", models["learned"], False))
    for name, folder, own_tokens in variants:
        kind = name.removesuffix("-retrained")
        model = IDGenRecModel.load(folder)
        label = f"idgenrec-{name}" + ("" if own_tokens or kind != "learned" else " (any tokens)")
        extra: dict = {}
        if not name.endswith("-retrained"):
            started = time.perf_counter()
            params = with_seed(raw, kind, args.seed)
            model, stats = add_items(model, items, kind, params.ids, progress=False, own_tokens=own_tokens)
            extra = {"add_items_s": round(time.perf_counter() - started, 2), **stats,
                     "new_id_own_word_fraction": own_word_fraction(model.id_table.textual_ids[split.old.num_items:], items.texts),
                     "examples": [{"item": split.full.item_titles[i], "id": model.id_table.textual_ids[i]} for i in list(new)[:12]]}
        model.id_table.check_aligned(split.full)
        print(f"scoring {label}", flush=True)
        among_new = score_among_new(model, split, occurrences, include_occurrences=not name.endswith("-retrained"))
        rows.append({"model": label, **score(model, split), **among_new, **extra})
    rows.append({"model": "random ranking (expected)", **chance_among_new(split, occurrences)})
    report = {
        "command": shlex.join(sys.argv), "overrides": args.overrides, "fraction": args.fraction, "split_seed": args.split_seed,
        "seed": args.seed, "new_items": split.num_new, "items": split.full.num_items, "occurrences": len(occurrences[0]),
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "rows": rows,
    }
    if args.out:
        write_json(output_path(args.out, ".json"), report)
        with atomic_write(output_path(args.out, ".md")) as handle:
            handle.write(markdown(report))
    print(markdown(report))


def score(model, split: HeldOutSplit) -> dict:
    """Test Recall/NDCG@k over all users, cold cases (held-out item is new) and warm ones, both seen-item settings.

    Also how much of the top-10 goes to new items, and how many cold cases get any new item in their top-10.
    """
    from idgenrec.evaluation import ranking_metrics, target_ranks

    histories, targets = split.full.split_examples("test")
    is_new = [t >= split.old.num_items for t in targets]
    result: dict = {"cold_cases": sum(is_new), "warm_cases": len(targets) - sum(is_new)}
    for exclude_seen in (False, True):
        setting = "seen_excluded" if exclude_seen else "seen_included"
        ranked = model.recommend(histories, k=max(KS), exclude_seen=exclude_seen)
        ranks = target_ranks(ranked, targets)
        for group, chosen in (("all", [True] * len(targets)), ("cold", is_new), ("warm", [not n for n in is_new])):
            picked = [r for r, keep in zip(ranks, chosen) if keep]
            for key, value in ranking_metrics(picked, KS).items():
                result[f"{setting}/{group}/{key}"] = round(value, 6)
        top = [items[: max(KS)] for items in ranked]
        result[f"{setting}/new_share@10"] = round(
            sum(sum(i >= split.old.num_items for i in items) for items in top) / (max(KS) * len(top)), 6)
        result[f"{setting}/cold_with_a_new_item@10"] = round(
            sum(any(i >= split.old.num_items for i in items) for items, n in zip(top, is_new) if n) / max(1, sum(is_new)), 6)
    return result


def new_item_occurrences(split: HeldOutSplit, count: int, seed: int) -> tuple[list[list[int]], list[int]]:
    """(histories, targets) at a seeded sample of the positions, before each user's validation item, where a new item comes next.

    None of the zero-shot models trained on a new item, so these are fair cases for them
    (not for the retrained model, which trained on exactly these positions).
    """
    cases = [(user, position) for user, sequence in enumerate(split.full.sequences)
             for position in range(1, len(sequence) - 2) if sequence[position] >= split.old.num_items]
    chosen = sorted(random.Random(seed).sample(cases, min(count, len(cases))))
    return ([split.full.sequences[u][:p] for u, p in chosen], [split.full.sequences[u][p] for u, p in chosen])


def score_among_new(model, split: HeldOutSplit, occurrences, include_occurrences: bool) -> dict:
    """Recall/NDCG@k when only new items may be recommended: does the model tell which new item a user takes next?

    Cases: the cold test users, and (``include_occurrences``) the sampled training positions.
    Items already in the history are excluded.
    """
    from idgenrec.evaluation import ranking_metrics, target_ranks

    candidates = list(split.new_items)
    histories, targets = split.full.split_examples("test")
    cold = [(h, t) for h, t in zip(histories, targets) if t >= split.old.num_items]
    groups = {"among_new/cold_test": ([h for h, _ in cold], [t for _, t in cold])}
    if include_occurrences:
        groups["among_new/occurrences"] = occurrences
    result = {}
    for group, (group_histories, group_targets) in groups.items():
        ranked = model.recommend(group_histories, k=max(KS), exclude_seen=True, candidates=candidates)
        for key, value in ranking_metrics(target_ranks(ranked, group_targets), KS).items():
            result[f"{group}/{key}"] = round(value, 6)
        # Personalised, or one list for everyone? How many new items the lists use, and how often the commonest appears.
        counts = Counter(item for items in ranked for item in items)
        result[f"{group}/distinct_items@10"] = len(counts)
        result[f"{group}/commonest_item_share@10"] = round(max(counts.values()) / len(ranked), 6) if counts else 0.0
    return result


def chance_among_new(split: HeldOutSplit, occurrences) -> dict:
    """Expected Recall/NDCG@k of a uniformly random order of the new items a history does not hold."""
    import math

    histories, targets = split.full.split_examples("test")
    cold = [h for h, t in zip(histories, targets) if t >= split.old.num_items]
    result = {}
    for group, group_histories in (("among_new/cold_test", cold), ("among_new/occurrences", occurrences[0])):
        for k in KS:
            recall = ndcg = 0.0
            for history in group_histories:
                eligible = split.num_new - len({i for i in history if i >= split.old.num_items})
                recall += min(k, eligible) / eligible
                ndcg += sum(1 / math.log2(r + 2) for r in range(min(k, eligible))) / eligible
            result[f"{group}/recall@{k}"] = round(recall / len(group_histories), 6)
            result[f"{group}/ndcg@{k}"] = round(ndcg / len(group_histories), 6)
    return result


def own_word_fraction(ids: list[str], texts: list[str]) -> float:
    """Share of the IDs' words that occur in their own item's text."""
    from idgenrec.ids.text import words

    pairs = [(set(words(text)), textual_id.split()) for textual_id, text in zip(ids, texts)]
    total = sum(len(id_words) for _, id_words in pairs)
    return round(sum(w in own for own, id_words in pairs for w in id_words) / total, 4) if total else 0.0


def markdown(report: dict) -> str:
    lines = [
        "# New items without retraining (zero-shot), ML-100k",
        "",
        f"`{report['command']}`",
        "",
        f"{report['new_items']} of {report['items']} items held out of training (seed {report['split_seed']}), then added to "
        "the trained model with `add_items` (no training). Test split; cold = users whose test item is a new item "
        f"({report['rows'][0]['cold_cases']} users), warm = the rest. Seen items excluded (the default decoding); "
        "N@10 with nothing excluded in the last column.",
        "",
        "| model | all N@10 | cold R@10 | cold N@10 | warm N@10 | new items in top-10 | cold users with a new item in top-10 "
        "| all N@10, nothing excluded | new IDs' own words |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "seen_excluded/all/ndcg@10" not in row:
            continue
        own = f"{row['new_id_own_word_fraction']:.1%}" if "new_id_own_word_fraction" in row else "-"
        lines.append(
            f"| {row['model']} | {row['seen_excluded/all/ndcg@10']:.4f} | {row['seen_excluded/cold/recall@10']:.4f} | "
            f"{row['seen_excluded/cold/ndcg@10']:.4f} | {row['seen_excluded/warm/ndcg@10']:.4f} | "
            f"{row['seen_excluded/new_share@10']:.1%} | {row['seen_excluded/cold_with_a_new_item@10']:.1%} | "
            f"{row['seen_included/all/ndcg@10']:.4f} | {own} |"
        )
    lines += [
        "",
        f"Only new items recommended ({report['new_items']} candidates, history items excluded): cold test users, and "
        f"{report['occurrences']} sampled training positions whose next item is new (not scored for the retrained model, "
        "which trained on them).",
        "",
        "| model | cold test R@10 | cold test N@10 | positions R@10 | positions N@10 | new items used by the positions' lists "
        "| lists holding the commonest one |",
        "|---|---|---|---|---|---|---|",
    ]
    for row in report["rows"]:
        if "among_new/cold_test/ndcg@10" not in row:
            continue
        cells = [f"{row[key]:.4f}" if key in row else "-" for key in (
            "among_new/cold_test/recall@10", "among_new/cold_test/ndcg@10",
            "among_new/occurrences/recall@10", "among_new/occurrences/ndcg@10")]
        cells += [str(row.get("among_new/occurrences/distinct_items@10", "-")),
                  f"{row['among_new/occurrences/commonest_item_share@10']:.0%}" if "among_new/occurrences/commonest_item_share@10" in row else "-"]
        lines.append(f"| {row['model']} | " + " | ".join(cells) + " |")
    for row in report["rows"]:
        if row["model"].startswith("idgenrec-learned") and "examples" in row:
            lines += ["", f"New items' IDs, {row['model']} (title -> ID):", ""]
            lines += [f"- {e['item']} -> **{e['id']}**" for e in row["examples"]]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
