"""Re-score the saved IDGenRec models of a ``quality.py`` results file with the current code.

When an evaluation-side fix lands (decoding, exclusion), the trained models need not be
retrained to be scored again. For every IDGenRec run in the file this loads
``<workdir>/<dataset>/model-<kind>-seed<seed>/best`` (where ``quality.py`` saved it),
recomputes the chosen seen-item setting on validation and test, keeps the replaced values
under ``superseded`` with the reason, and rewrites the ``.json`` and ``.md``. Checkpoint
selection is not redone: the selected checkpoint stays the one training chose.

    python benchmarks/reevaluate.py benchmarks/results/quality-ml-100k-seed1.json --workdir bench/tmp/qb \
        --setting seen_excluded --reason "exclusion prunes the trie (dfbe220)"
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from quality import id_kind, load_params, markdown, model_folder, summarise, with_seed

from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import pick_device
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate, selection_key
from idgenrec.recommender.model import IDGenRecModel

def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("results", type=Path, help="A quality.py results JSON.")
    parser.add_argument("--workdir", type=Path, required=True, help="The --workdir the runs were made with.")
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--setting", choices=["seen_included", "seen_excluded"], default="seen_excluded")
    parser.add_argument("--reason", required=True, help="Why the metrics are recomputed (kept in the JSON).")
    args = parser.parse_args()

    data = json.loads(args.results.read_text())
    dataset = SequenceDataset.load(data["prepared"])
    raw = load_params(args.params, data.get("overrides", []))
    exclude_seen = args.setting == "seen_excluded"
    for run in data["runs"]:
        kind = id_kind(run["model"])
        if kind is None:
            continue
        params = with_seed(raw, kind, run["seed"])
        folder = model_folder(args.workdir / dataset.name, kind, run["seed"]) / "best"
        model = IDGenRecModel.load(folder, device=pick_device())
        scored = dataset.sample_users(params.evaluation.sample_users, seed=0)
        replaced = {}
        for split in ("valid", "test"):
            for name, value in evaluate(model, scored, split, params.evaluation.ks, exclude_seen).items():
                key = selection_key(split, exclude_seen, name)
                replaced[key] = run["metrics"][key]
                run["metrics"][key] = round(value, 6)
        run.setdefault("superseded", []).append({"reason": args.reason, "metrics": replaced})
        print(run["model"], run["seed"], {k: (replaced[k], run["metrics"][k]) for k in replaced if "ndcg@10" in k}, flush=True)

    data["summary"] = summarise(data["runs"])
    write_json(args.results, data)
    with atomic_write(args.results.with_suffix(".md")) as handle:
        overrides = ", ".join(data.get("overrides", [])) or "params as given"
        handle.write(markdown(data["summary"], f"{dataset.name} ({overrides}; {args.setting} re-scored: {args.reason})"))


if __name__ == "__main__":
    main()
