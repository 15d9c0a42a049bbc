"""Catalogue scale: ID tables, the trie, decoding and ID generation on synthetic catalogues of 10k to 1M items.

    python -m benchmarks.scale                                  # 10k, 100k and 1M items (about 40 min on 2 cores)
    python -m benchmarks.scale --sizes 10000 --out /tmp/scale   # one size

A synthetic catalogue recombines the real item titles of Beauty, Toys and Yelp
(``../shared/data/amazon-p5``): the first half of one title, the second half of another, a
colour, size or pack variant on 30% of items (near-duplicates, as real catalogues have), and a
real category path, written as prepared data writes item text (``title: ...; categories: ...``).
Per size, every item: the vocabulary the pruned backbone keeps; keyword IDs (the phrase the
warm-up teaches the generator to write, unique by counter words: what learned IDs look like,
without the generator's cost) and title IDs, with uniqueness and time; the trie over the keyword
IDs (build time, peak memory of the build, memory held, nodes); decoding latency with the trie
(an untrained 1+1-layer recommender on that vocabulary: latency does not depend on its weights),
one user at a time, 10 beams, 10-item histories, seen items excluded. Learned IDs: a generator
warmed up for ``--warmup-steps`` on the catalogue, batched against one item at a time on the
first items, and every item of the sizes up to ``--learned-all`` (uniqueness of learned IDs). Writes
OUT.{json,md} and headline.json's ``scale``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import csv
import functools
import gc
import json
import random
import sys
import statistics
import time
import tracemalloc
from pathlib import Path

import idgenrec  # noqa: F401  (offline defaults before transformers)
from idgenrec.atomic import write_json

from benchmarks.common import RESULTS, machine, write_report

P5 = Path("../shared/data/amazon-p5")
SOURCES = ("Beauty", "Toys", "Yelp")
VARIANTS = ["black", "white", "red", "blue", "pink", "small", "medium", "large", "xl", "pack of 2", "pack of 3",
            "pack of 6", "8 oz", "16 oz", "1 count", "refill", "travel size", "value pack", "2019 edition", "deluxe"]


# -- the catalogue ----------------------------------------------------------------------------


@functools.cache
def real_titles_and_categories() -> tuple[list[list[str]], list[str]]:
    titles, categories = [], []
    for name in SOURCES:
        with (P5 / name / "items.tsv").open(encoding="utf-8", newline="") as handle:
            for row in csv.DictReader(handle, delimiter="\t"):
                if words := (row.get("title") or "").split():
                    titles.append(words)
                if row.get("categories"):
                    categories.append(row["categories"])
    return titles, categories


def synthetic_catalogue(size: int, seed: int = 0) -> tuple[list[str], list[str]]:
    """(titles, texts) of ``size`` items recombined from real titles and category paths."""
    rng = random.Random(seed)
    real, categories = real_titles_and_categories()
    titles, texts = [], []
    for _ in range(size):
        head, tail = rng.choice(real), rng.choice(real)
        title = " ".join(head[: max(1, len(head) // 2)] + tail[len(tail) // 2 :])
        if rng.random() < 0.3:
            title += ", " + rng.choice(VARIANTS)
        titles.append(title)
        texts.append(f"title: {title}; categories: {rng.choice(categories)}")
    return titles, texts


def as_dataset(titles: list[str], texts: list[str]):
    from idgenrec.data.dataset import SequenceDataset

    n = len(titles)
    rng = random.Random(1)
    users = [[rng.randrange(n) for _ in range(12)] for _ in range(64)]  # histories for decoding
    return SequenceDataset(name=f"synthetic-{n}", item_ids=[str(i) for i in range(n)], item_titles=titles,
                           item_texts=texts, user_ids=[str(u) for u in range(len(users))], sequences=users)


# -- measurements -----------------------------------------------------------------------------


def timed(function, *args, **kwargs):
    start = time.perf_counter()
    result = function(*args, **kwargs)
    return result, round(time.perf_counter() - start, 2)


def id_table_row(kind: str, ids: list[str], seconds: float, tokenizer) -> dict:
    lengths = [len(t) for t in tokenizer(ids, add_special_tokens=False)["input_ids"]]
    return {"kind": kind, "seconds": seconds, "items_per_second": round(len(ids) / seconds, 1) if seconds else None,
            "unique_ratio": len(set(ids)) / len(ids), "mean_tokens": round(statistics.fmean(lengths), 2), "max_tokens": max(lengths)}


def trie_row(token_ids: list[list[int]], eos: int) -> dict:
    from idgenrec.ids.trie import IdTrie

    gc.collect()
    tracemalloc.start()
    start = time.perf_counter()
    trie = IdTrie(token_ids, eos)
    seconds = time.perf_counter() - start
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    return {"build_seconds": round(seconds, 2), "build_peak_mb": round(peak / 2**20, 1), "held_mb": round(trie.nbytes() / 2**20, 1),
            "nodes": trie.num_nodes, "bytes_per_item": round(trie.nbytes() / len(token_ids), 1)}, trie


def decoding_row(dataset, tokenizer, keyword_ids: list[str], params, users: int) -> dict:
    import torch

    from idgenrec.ids import ItemIdTable
    from idgenrec.recommender.alternating import build_recommender, decoding_settings
    from idgenrec.recommender.model import IDGenRecModel

    torch.manual_seed(0)
    settings = decoding_settings(params.model_copy(update={"training": params.training.model_copy(update={"bf16": False})}))
    table = ItemIdTable(list(dataset.item_ids), keyword_ids)
    (model, load_seconds) = timed(IDGenRecModel, build_recommender(params, tokenizer), tokenizer, table, settings)
    histories = [s[:10] for s in dataset.sequences[:users]]
    model.recommend_with_scores(histories[:1], 10, exclude_seen=True)  # warm-up call
    times = []
    for history in histories:
        start = time.perf_counter()
        model.recommend_with_scores([history], 10, exclude_seen=True)
        times.append(time.perf_counter() - start)
    times.sort()
    return {"model_setup_seconds": load_seconds, "users": len(times), "p50_ms": round(1000 * statistics.median(times), 1),
            "p95_ms": round(1000 * times[int(0.95 * (len(times) - 1))], 1)}


def learned_row(dataset, params, workdir: Path, warmup_steps: int, one_at_a_time: int, batched: int, every_item: bool) -> dict:
    """The generator has the whole catalogue's vocabulary (its softmax is what grows with it) and is
    warmed up on a sample (enough to learn the habit of writing keyword phrases)."""
    from idgenrec.backbone import build_seq2seq, build_tokenizer, load_seq2seq, save_seq2seq, vocabulary_corpus
    from idgenrec.ids import generate_unique_ids
    from idgenrec.ids.warmup import train_keyword_phrases, warmup_pairs

    sample = as_dataset(dataset.item_titles[:20_000], dataset.item_texts[:20_000])
    warmup = params.warmup.model_copy(update={"epochs": warmup_steps * params.warmup.batch_size / sample.num_items, "bf16": False})
    tokenizer = build_tokenizer(params.backbone, vocabulary_corpus(dataset))
    model = build_seq2seq(params.backbone, tokenizer, "generator", seed=params.ids.seed)
    (_, warm_seconds) = timed(train_keyword_phrases, model, tokenizer, warmup_pairs(sample, warmup.keyword_words), warmup,
                              max_input_tokens=params.ids.max_input_tokens, progress=False)
    folder = workdir / f"generator-{dataset.num_items}"
    save_seq2seq(model, tokenizer, folder)
    model, tokenizer = load_seq2seq(folder)  # as the pipeline's ids stage reads it
    texts = dataset.item_texts
    # The speed-up: the same first items, one per decoding batch and batched, alternated twice and the
    # faster of each kept (a shared machine's other work slows one run, not the comparison).
    one_by_one = params.ids.model_copy(update={"batch_size": 1})
    runs = [generate_unique_ids(model, tokenizer, texts[:one_at_a_time], config, progress=False)[1]
            for _ in range(2) for config in (one_by_one, params.ids)]
    one = max(runs[0::2], key=lambda stats: stats["items_per_second"])
    same = max(runs[1::2], key=lambda stats: stats["items_per_second"])
    many = generate_unique_ids(model, tokenizer, texts[:batched], params.ids, progress=False)[1]
    row = {"warmup_steps": warmup_steps, "warmup_seconds": warm_seconds, "vocabulary": len(tokenizer),
           "speedup_items": one_at_a_time, "one_at_a_time_items_per_second": one["items_per_second"],
           "batched_same_items_per_second": same["items_per_second"],
           "batched_speedup": round(same["items_per_second"] / one["items_per_second"], 2),
           "batched_items": batched, "batched_items_per_second": many["items_per_second"], "batched_passes": many["passes"]}
    if every_item:
        ids, stats = generate_unique_ids(model, tokenizer, texts, params.ids, progress=False)
        row["every_item"] = {**id_table_row("learned", ids, stats["seconds"], tokenizer), "passes": stats["passes"],
                             "fallbacks": stats["fallbacks"]}
    return row


def measure_size(size: int, params, args, workdir: Path) -> dict:
    from idgenrec.backbone import build_tokenizer, vocabulary_corpus
    from idgenrec.ids import title_ids
    from idgenrec.ids.text import keyword_phrase
    from idgenrec.recommender.samples import end_of_sequence_id

    (titles, texts), catalogue_seconds = timed(synthetic_catalogue, size)
    dataset = as_dataset(titles, texts)
    tokenizer, vocabulary_seconds = timed(build_tokenizer, params.backbone, vocabulary_corpus(dataset))
    row = {"items": size, "catalogue_seconds": catalogue_seconds, "distinct_titles": len(set(titles)),
           "vocabulary": {"tokens": len(tokenizer), "seconds": vocabulary_seconds}}
    print(f"{size}: catalogue {catalogue_seconds} s, vocabulary {len(tokenizer)} tokens in {vocabulary_seconds} s", flush=True)
    phrases = [keyword_phrase(t, x, params.warmup.keyword_words) for t, x in zip(titles, texts)]
    (keyword_ids, _), seconds = timed(title_ids, phrases, texts, tokenizer)
    row["keyword_ids"] = id_table_row("keyword", keyword_ids, seconds, tokenizer)
    (titled, _), seconds = timed(title_ids, titles, texts, tokenizer)
    row["title_ids"] = id_table_row("title", titled, seconds, tokenizer)
    token_ids, seconds = timed(lambda: tokenizer(keyword_ids, add_special_tokens=False)["input_ids"])
    row["trie"], trie = trie_row(token_ids, end_of_sequence_id(tokenizer))
    row["trie"]["tokenize_seconds"] = seconds
    print(f"{size}: keyword IDs {row['keyword_ids']}, trie {row['trie']}", flush=True)
    del trie, token_ids, titled
    row["decoding"] = decoding_row(dataset, tokenizer, keyword_ids, params, args.users)
    print(f"{size}: decoding {row['decoding']}", flush=True)
    if args.learned:
        row["learned"] = learned_row(dataset, params, workdir, args.warmup_steps, args.one_at_a_time, args.batched,
                                     every_item=size <= args.learned_all)
        print(f"{size}: learned {row['learned']}", flush=True)
    return row


# -- report -----------------------------------------------------------------------------------


def growth(rows: list[dict], value) -> str:
    """How a cost grows from the smallest to the largest catalogue, against the items' growth."""
    first, last = rows[0], rows[-1]
    a, b = value(first), value(last)
    if not a or not b or first["items"] == last["items"]:
        return ""
    return f"x{b / a:.3g} for x{last['items'] / first['items']:.0f} items"


def render(payload: dict) -> str:
    rows = payload["sizes"]
    env = payload["machine"]
    lines = [
        "# Catalogue scale", "",
        f"`{payload['command']}`; {env['cpu']}, {env['threads']} torch threads, load average at the end {env['load_average']}.", "",
        "| items | vocabulary kept | keyword IDs: unique / s / mean tokens | title IDs: unique / s | trie build s | "
        "trie build peak MB | trie held MB (bytes/item) | trie nodes | decoding p50 / p95 ms |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for r in rows:
        k, t, trie, d = r["keyword_ids"], r["title_ids"], r["trie"], r["decoding"]
        lines.append(
            f"| {r['items']:,} | {r['vocabulary']['tokens']:,} | {k['unique_ratio']} / {k['seconds']} / {k['mean_tokens']} | "
            f"{t['unique_ratio']} / {t['seconds']} | {trie['build_seconds']} | {trie['build_peak_mb']} | {trie['held_mb']} "
            f"({trie['bytes_per_item']}) | {trie['nodes']:,} | {d['p50_ms']} / {d['p95_ms']} |")
    learned = [r for r in rows if "learned" in r]
    if learned:
        lines += ["", "Learned IDs (generator warmed up on a sample, the catalogue's vocabulary):", "",
                  "| items | generator vocabulary | first items: one at a time / batched items/s (speed-up) | "
                  "batched items/s (first items) | every item: unique / s / passes |",
                  "|---|---|---|---|---|"]
        for r in learned:
            g = r["learned"]
            every = g.get("every_item")
            lines.append(f"| {r['items']:,} | {g['vocabulary']:,} | {g['speedup_items']}: {g['one_at_a_time_items_per_second']} / "
                         f"{g['batched_same_items_per_second']} ({g['batched_speedup']}x) | {g['batched_items_per_second']} "
                         f"({g['batched_items']:,}) | "
                         + (f"{every['unique_ratio']} / {every['seconds']} / {every['passes']}" if every else "not run") + " |")
    lines += ["", "Growth from the smallest to the largest catalogue:", ""]
    for name, value in [("vocabulary kept", lambda r: r["vocabulary"]["tokens"]),
                        ("keyword ID table time", lambda r: r["keyword_ids"]["seconds"]),
                        ("title ID table time", lambda r: r["title_ids"]["seconds"]),
                        ("trie build time", lambda r: r["trie"]["build_seconds"]),
                        ("trie memory held", lambda r: r["trie"]["held_mb"]),
                        ("decoding p50", lambda r: r["decoding"]["p50_ms"]),
                        ("decoding p95", lambda r: r["decoding"]["p95_ms"])]:
        lines.append(f"- {name}: {growth(rows, value)}")
    return "\n".join(lines) + "\n"


def headline(payload: dict) -> dict:
    """The catalogue table, as headline.json's ``scale``."""
    return {"command": payload["command"], "sizes": [
        {"items": r["items"], "vocabulary": r["vocabulary"]["tokens"], "keyword_ids_unique": r["keyword_ids"]["unique_ratio"],
         "title_ids_unique": r["title_ids"]["unique_ratio"], "trie_build_s": r["trie"]["build_seconds"],
         "trie_build_peak_mb": r["trie"]["build_peak_mb"], "trie_held_mb": r["trie"]["held_mb"],
         "decoding_p50_ms": r["decoding"]["p50_ms"], "decoding_p95_ms": r["decoding"]["p95_ms"],
         **({"learned_batched_speedup": r["learned"]["batched_speedup"],
             "learned_batched_items_per_s": r["learned"]["batched_items_per_second"]} if "learned" in r else {}),
         **({"learned_unique": r["learned"]["every_item"]["unique_ratio"]} if "every_item" in r.get("learned", {}) else {})}
        for r in payload["sizes"]]}


def main() -> None:
    import tempfile

    import torch

    from idgenrec.config import load_params

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    parser.add_argument("--params", type=Path, default=Path("params.yaml"), help="Backbone, ID and decoding settings.")
    parser.add_argument("--users", type=int, default=20, help="Users timed one at a time for decoding latency.")
    parser.add_argument("--no-learned", dest="learned", action="store_false", help="Skip the learned-ID generator.")
    parser.add_argument("--warmup-steps", type=int, default=150, help="Generator warm-up steps per size.")
    parser.add_argument("--one-at-a-time", type=int, default=200, help="Items generated one at a time and batched (the speed-up).")
    parser.add_argument("--batched", type=int, default=2000, help="Items generated batched.")
    parser.add_argument("--learned-all", type=int, default=10_000, help="Generate every item's learned ID up to this size.")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (1: steady on a shared machine).")
    parser.add_argument("--out", type=Path, default=RESULTS / "scale")
    parser.add_argument("--no-headline", dest="headline", action="store_false", help="Leave headline.json alone.")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    params = load_params(args.params)
    workdir = Path(tempfile.mkdtemp(prefix="idgenrec-scale-"))
    rows = [measure_size(size, params, args, workdir) for size in sorted(args.sizes)]
    payload = {"sizes": rows}
    module = "python -m benchmarks.scale"
    payload = {"command": " ".join([module, *sys.argv[1:]]), "machine": machine(), "sizes": rows}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    write_report(args.out, payload, render(payload))
    if args.headline:
        path = RESULTS / "headline.json"
        whole = json.loads(path.read_text()) if path.exists() else {}
        # Other benchmarks write their own parts of `scale` (distributed.py: `training`): kept.
        write_json(path, {**whole, "scale": {**whole.get("scale", {}), **headline(payload), "machine": payload["machine"]}})


if __name__ == "__main__":
    main()
