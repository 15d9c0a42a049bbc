"""Does bf16 autocast cost quality? The same training run in fp32 and in bf16, compared.

bf16 doubles training throughput on this CPU (`benchmarks/speed.py`); this measures what it
does to learning. Both runs start from the same weights and see the same samples, templates
and batch order (the library's own ``train_recommender_phase`` with one seed), for
``--epochs`` of the default profile's first phase. Then, for each:

- teacher-forced loss on every user's validation item, computed in fp32 (a measure of the
  weights alone, not of the arithmetic used to evaluate them);
- validation Recall/NDCG@10 of trie-constrained beam search on a fixed user sample, decoded
  in the precision it was trained in;
- training wall time, so the speed-up is a ratio from the same process.

    python benchmarks/precision.py --prepared artifacts/prepared --out benchmarks/results/precision

Writes ``precision.json`` and ``precision.md``. No assertions: a benchmark reports.
"""

from __future__ import annotations

import argparse
import copy
import platform
import time
from pathlib import Path

import torch

import idgenrec  # noqa: F401
from idgenrec.atomic import atomic_write, write_json
from idgenrec.backbone import build_seq2seq
from idgenrec.config import PhaseConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate
from idgenrec.recommender.model import DecodingSettings, IDGenRecModel
from idgenrec.recommender.samples import PromptEncoder, collate, training_samples
from idgenrec.recommender.training import recommender_loss, train_recommender_phase
from speed import title_id_setup


@torch.no_grad()
def validation_loss(model, encoder: PromptEncoder, dataset: SequenceDataset, pad_id: int, batch_size: int = 128) -> float:
    """Mean fp32 teacher-forced loss on every user's validation item (template 0)."""
    histories, targets = dataset.split_examples("valid")
    model.eval()
    total, count = 0.0, 0
    for start in range(0, len(histories), batch_size):
        prompts = [encoder.encode(h) for h in histories[start : start + batch_size]]
        batch = collate(prompts, [encoder.target(t) for t in targets[start : start + batch_size]], pad_id,
                        model.config.decoder_start_token_id)
        total += recommender_loss(model, batch, torch.device("cpu")).item() * len(prompts)
        count += len(prompts)
    return total / count


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prepared", type=Path, default=Path("artifacts/prepared"))
    parser.add_argument("--params", type=Path, default=Path("params.yaml"))
    parser.add_argument("--epochs", type=float, default=0.1, help="Training epochs per precision (0.1 is the committed result).")
    parser.add_argument("--users", type=int, default=500, help="Validation users decoded per precision.")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results/precision"))
    args = parser.parse_args()

    params, dataset, tokenizer, table, _ = title_id_setup(args.params, args.prepared)
    encoder = PromptEncoder(tokenizer, table.token_ids(tokenizer), params.training.history_length)
    samples = training_samples([dataset.train_sequence(u) for u in range(dataset.num_users)], params.training.history_length)
    first = params.training.schedule[0]
    phase = PhaseConfig(phase="recommender", epochs=args.epochs, learning_rate=first.learning_rate)
    initial = build_seq2seq(params.backbone, tokenizer, "recommender", seed=0)
    sample = dataset.sample_users(args.users, seed=0)

    runs = []
    for bf16 in (False, True):
        model = copy.deepcopy(initial)
        config = params.training.model_copy(update={"bf16": bf16})
        started = time.perf_counter()
        losses = train_recommender_phase(model, encoder, samples, config, phase, seed=0)
        seconds = time.perf_counter() - started
        model.eval()
        recommender = IDGenRecModel(model, tokenizer, table, DecodingSettings(config.history_length, config.num_beams, bf16))
        metrics = evaluate(recommender, sample, "valid", [10], params.evaluation.exclude_seen)
        run = {"precision": "bf16" if bf16 else "fp32", "train_seconds": round(seconds, 1), "train_loss": losses[-1],
               "valid_loss_fp32": validation_loss(model, encoder, dataset, tokenizer.pad_token_id), **metrics}
        runs.append(run)
        print(run, flush=True)

    fp32, bf16 = runs
    results = {
        "machine": {"python": platform.python_version(), "torch": torch.__version__, "threads": torch.get_num_threads()},
        "setup": {"epochs": args.epochs, "samples": round(args.epochs * len(samples)), "learning_rate": phase.learning_rate,
                  "history_length": params.training.history_length, "ids": "title", "decoded_users": sample.num_users,
                  "exclude_seen": params.evaluation.exclude_seen, "dataset": dataset.name},
        "runs": runs,
        "speedup": fp32["train_seconds"] / bf16["train_seconds"],
        "valid_loss_change": bf16["valid_loss_fp32"] - fp32["valid_loss_fp32"],
    }
    write_json(args.out.with_suffix(".json"), results)
    with atomic_write(args.out.with_suffix(".md")) as handle:
        handle.write(render_markdown(results))


def render_markdown(results: dict) -> str:
    setup = results["setup"]
    lines = [
        "# bf16 autocast against fp32: same run, both precisions", "",
        f"{setup['dataset']}, title IDs, history {setup['history_length']}, {setup['epochs']} epoch "
        f"({setup['samples']} samples) at lr {setup['learning_rate']} from the same initial weights, same batches; "
        f"torch {results['machine']['torch']}, {results['machine']['threads']} threads. Validation loss is computed in "
        f"fp32 for both; N@10 / R@10 decode {setup['decoded_users']} validation users in the run's own precision "
        f"(seen items excluded: {setup['exclude_seen']}).", "",
        "| precision | train s | last train loss | valid loss (fp32) | valid R@10 | valid N@10 |",
        "|---|---|---|---|---|---|",
    ]
    for run in results["runs"]:
        lines.append(f"| {run['precision']} | {run['train_seconds']} | {run['train_loss']:.4f} | {run['valid_loss_fp32']:.4f} "
                     f"| {run['recall@10']:.4f} | {run['ndcg@10']:.4f} |")
    lines += ["", f"bf16 trains {results['speedup']:.2f}x as fast; validation loss changes by "
              f"{results['valid_loss_change']:+.4f}."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    main()
