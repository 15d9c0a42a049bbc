"""Does a profile's ID generator warm up into distinct IDs? One warm-up, then top-1 IDs for the first 256 items.

Prints one JSON line: warm-up loss at start / end, and how many of 256 items got distinct top-1
candidates from diverse beam search (10 groups). Run once per variant of the profile:

    python -m benchmarks.warmup_probe profiles/paper-offline.yaml asis '{}'
    python -m benchmarks.warmup_probe profiles/paper-offline.yaml nodropout '{"backbone": {"dropout": 0.0}}'
    python -m benchmarks.warmup_probe profiles/paper-offline.yaml lr3e-4 '{"warmup": {"learning_rate": 0.0003}}'

Reads artifacts/prepared. The lines in benchmarks/results/warmup_probe_paper-offline.jsonl were
measured on 1 thread with the profile's warm-up at lr 1e-3 ("asis"); the profile uses 3e-4.
"""

import json
import sys
import time

import idgenrec  # noqa: F401  (offline defaults before transformers is imported)
from idgenrec.config import load_params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.ids import warm_up_generator
from idgenrec.backbone import load_seq2seq
from idgenrec.ids.diverse import diverse_beam_candidates
from idgenrec.ids.unique import _pad

dataset = SequenceDataset.load("artifacts/prepared")
base = load_params(sys.argv[1])
label = sys.argv[2]
updates = json.loads(sys.argv[3])  # {"warmup": {...}, "backbone": {...}}
params = base.model_copy(update={k: getattr(base, k).model_copy(update=v) for k, v in updates.items()})
start = time.perf_counter()
metrics = warm_up_generator(dataset, params, f"/tmp/pw-{label}", progress=False)
seconds = time.perf_counter() - start
generator, tokenizer = load_seq2seq(f"/tmp/pw-{label}")
ids_config = params.ids  # the first decoding pass of ID generation (ids/unique.py), for 256 items
texts = tokenizer(dataset.item_texts[:256], truncation=True, max_length=ids_config.max_input_tokens)["input_ids"]
ids, mask = _pad(texts, tokenizer.pad_token_id)
ranked = diverse_beam_candidates(
    generator, tokenizer, ids, mask, groups=ids_config.beam_groups, penalty=ids_config.diversity_penalty,
    min_tokens=ids_config.min_length, max_tokens=ids_config.min_length + ids_config.length_span,
)
top = [tokenizer.decode(r[0].tokens) if r else "" for r in ranked]
print(json.dumps({"label": label, "updates": updates, "warmup_s": round(seconds), "metrics": {k: v for k, v in metrics.items() if isinstance(v, (int, float))},
                  "distinct_top1_of_256": len(set(top)), "examples": top[:5]}), flush=True)
