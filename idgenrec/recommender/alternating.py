"""Alternating training: the schedule in ``params.yaml`` is data, each phase a checkpoint.

Work folder layout (the DVC stage output, also what a Prefect run writes)::

    state.json            finished phases, per-epoch records, best validation score
    timings.json          the records' wall-clock fields (outside the state: see TIMING_FIELDS)
    current/              generator/, recommender/, item_ids.tsv after the last finished phase
    best/                 the complete IDGenRecModel selected on validation
    rounds/ids-NN.tsv     the ID table in force after phase NN (every version kept)

A phase reads ``current/``, trains, and replaces ``current/`` and ``state.json``; an
interrupted run resumes after its last finished phase. Every phase seeds its own RNGs
from (seed, phase index), so resumed and uninterrupted runs take the same steps.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import time
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from idgenrec import distributed
from idgenrec.atomic import atomic_directory, write_json
from idgenrec.digests import check_digests, record_digests
from idgenrec.config import Params
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate
from idgenrec.progress import LOGGER
from idgenrec.recommender.model import IDGenRecModel, DecodingSettings
from idgenrec.recommender.samples import PromptEncoder, training_samples, user_id_writer
from idgenrec.recommender.sequences import SequenceEncoder, training_windows
from idgenrec.recommender.soft_ids import ItemTextInputs, train_id_phase
from idgenrec.backbone import pick_device, prompt_token_limit
from idgenrec.recommender.training import BatchSource, PromptBatches, WindowBatches, train_recommender_phase

CURRENT, BEST, ROUNDS, STATE, TIMINGS = "current", "best", "rounds", "state.json", "timings.json"
# The records' fields that measure the host, not the model. They live in TIMINGS, which
# .dvcignore keeps out of the folder's hash, so a rerun that reproduces the same model writes
# the same folder and DVC does not rerun the stages after training.
TIMING_FIELDS = ("seconds", "ids_seconds", "ids_items_per_second")


@dataclass
class TrainingState:
    fingerprint: str
    completed_phases: int = 0
    best_score: float | None = None  # validation selection metric of best/ (None until an epoch is scored)
    best_phase: int | None = None
    best_epoch: int | None = None
    records: list[dict] = field(default_factory=list)
    # training.similarity_weights' validation scores on best/, once the schedule is done (None: not chosen yet)
    valid_by_similarity_weight: dict[str, float] | None = None
    similarity_weight: float | None = None

    @classmethod
    def load(cls, workdir: Path) -> "TrainingState | None":
        path = workdir / STATE
        if not path.exists():
            return None
        try:
            state = cls(**json.loads(path.read_text(encoding="utf-8")))
        except (json.JSONDecodeError, TypeError) as err:
            raise ValueError(f"{path}: corrupt training state ({err}); delete {workdir} to start over") from None
        for record, timing in zip(state.records, _load_timings(workdir / TIMINGS, len(state.records))):
            record.update(timing)
        return state

    def save(self, workdir: Path) -> None:
        payload = asdict(self)
        payload["records"] = [{k: v for k, v in r.items() if k not in TIMING_FIELDS} for r in self.records]
        write_json(workdir / TIMINGS, [{k: r[k] for k in TIMING_FIELDS if k in r} for r in self.records])
        write_json(workdir / STATE, payload)


def _load_timings(path: Path, num_records: int) -> list[dict]:
    """The records' wall-clock fields; none where the file is missing, none with a warning where it
    is unreadable or does not fit the records.

    Timings only describe the run, so their loss must not stop a resume. A missing file is
    normal, not worth a warning: ``dvc checkout`` restores the folder without it (.dvcignore).
    An interrupted save can leave it one phase behind the state.
    """
    if not path.exists():
        return []
    try:
        timings = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        LOGGER.warning(f"{path}: unreadable ({err}); the records keep no timings")
        return []
    if not isinstance(timings, list) or len(timings) != num_records or not all(isinstance(t, dict) for t in timings):
        LOGGER.warning(f"{path}: does not match the {num_records} records of the state; the records keep no timings")
        return []
    return timings


# The settings of `evaluation` that training reads: they score and select its checkpoints
# (`sample_users` only picks the users of the final report).
SELECTION_SETTINGS = ("ks", "exclude_seen", "selection_metric")


CHOSEN_AFTER_TRAINING = ("similarity_weights", "similarity_min_gain")  # see choose_similarity_weight


def params_fingerprint(params: Params) -> str:
    """What a resumed run must share with the interrupted one to continue it."""
    dumped = params.model_dump(mode="json")
    relevant = {k: dumped[k] for k in ("data", "backbone", "warmup", "ids", "training")}
    for knob in CHOSEN_AFTER_TRAINING:  # read only once the phases are done: changing them retrains nothing
        relevant["training"].pop(knob)
    relevant["evaluation"] = {k: dumped["evaluation"][k] for k in SELECTION_SETTINGS}
    return hashlib.sha256(json.dumps(relevant, sort_keys=True).encode()).hexdigest()[:16]


PACKAGE_ROOT = Path(__file__).resolve().parents[1]
# The code a run's results depend on: dvc.yaml's `train` stage lists the same. DVC keeps this
# stage's folder between runs (`persist`, so an interrupted `dvc repro` resumes), so after a
# change to this code it reruns the stage on the old folder: without the code in the
# fingerprint, every phase would be taken as finished and the old model kept under the new code.
TRAINING_CODE = ("recommender", "backbone", "ids", "evaluation.py", "distributed.py", "optim.py")


def decoding_settings(params: Params) -> DecodingSettings:
    """How the model ranks while it trains: with the first of ``training.similarity_weights`` (see :func:`choose_similarity_weight`)."""
    training = params.training
    return DecodingSettings(
        training.history_length, training.num_beams, training.bf16, user_id_words=training.user_id_words,
        architecture=params.backbone.architecture, ranking=training.ranking,
        similarity_weight=training.similarity_weights[0],
    )


def build_recommender(params: Params, tokenizer):
    """A fresh recommender of ``backbone.architecture`` over ``tokenizer``'s vocabulary."""
    from idgenrec.backbone import build_seq2seq
    from idgenrec.backbone.causal import build_causal

    if params.backbone.architecture == "causal":
        return build_causal(params.backbone, tokenizer, seed=params.training.seed)
    return build_seq2seq(params.backbone, tokenizer, "recommender", seed=params.training.seed)


def recommender_inputs(params: Params, dataset: SequenceDataset, recommender, tokenizer, table) -> tuple:
    """The encoder of histories, the recommender phase's batches and the ID phase's samples, for
    ``backbone.architecture``: prompts of the last items (seq2seq) or windows of whole sequences (causal)."""
    training = params.training
    sequences = [dataset.train_sequence(u) for u in range(dataset.num_users)]
    item_tokens = table.token_ids(tokenizer)
    limit = prompt_token_limit(recommender)
    if params.backbone.architecture == "causal":
        encoder = SequenceEncoder(tokenizer, item_tokens, training.history_length, limit)
        source: BatchSource = WindowBatches(encoder, training_windows(sequences, training.history_length, training.window_stride), training)
        return encoder, source, training_samples(sequences, training.history_length)
    user_ids = user_id_writer(table.textual_ids, training.user_id_words)
    samples = training_samples(sequences, training.history_length, user_ids, training.later_targets)
    encoder = PromptEncoder(tokenizer, item_tokens, training.history_length, limit)
    return encoder, PromptBatches(encoder, samples, training, recommender.config.decoder_start_token_id), samples


def _digest(path: Path, pattern: str = "*") -> str:
    """SHA-256 over a file, or over a folder's files matching ``pattern`` (sorted by relative path)."""
    digest = hashlib.sha256()
    files = sorted(p for p in path.rglob(pattern) if p.is_file()) if path.is_dir() else [path]
    for file in files:
        digest.update(str(file.relative_to(path) if path.is_dir() else file.name).encode())
        digest.update(file.read_bytes())
    return digest.hexdigest()


def _combined(digests: Iterable[str]) -> str:
    """One SHA-256 over several hex digests, in order."""
    return hashlib.sha256("|".join(digests).encode()).hexdigest()


def dataset_digest(dataset: SequenceDataset) -> str:
    """SHA-256 of a dataset's content: its items, their texts and every user's sequence."""
    return hashlib.sha256(json.dumps([dataset.item_ids, dataset.item_texts, dataset.sequences]).encode()).hexdigest()


def code_fingerprint(root: Path, parts: tuple[str, ...]) -> str:
    """SHA-256 over the Python sources of ``parts`` under ``root`` (paths and contents, sorted)."""
    return _combined(f"{part}:{_digest(root / part, '*.py')}" for part in parts)


def run_fingerprint(params: Params, dataset: SequenceDataset, generator_dir: Path, id_table_path: Path) -> str:
    """What a resumed run must share with the interrupted one: params, every input and the code.

    New data with unchanged params must retrain, so the dataset's content, the warmed-up
    generator and the initial ID table are part of it, not only the params; so is the
    training code (:data:`TRAINING_CODE`).
    """
    return _combined([params_fingerprint(params), dataset_digest(dataset), _digest(generator_dir), _digest(id_table_path),
                      code_fingerprint(PACKAGE_ROOT, TRAINING_CODE)])[:16]


def start_or_resume(
    params: Params, dataset: SequenceDataset, generator_dir: Path, id_table_path: Path, workdir: Path
) -> TrainingState:
    """Resume a run with the same parameters and inputs, else initialise ``current/`` from the inputs.

    On several processes the first one does it; the others then read what it wrote.
    """
    ranks = distributed.current()
    if ranks.main:
        state = _start_or_resume(params, dataset, generator_dir, id_table_path, workdir)
    ranks.barrier()
    return state if ranks.main else TrainingState.load(workdir)


def _damage(workdir: Path) -> str | None:
    """Why a finished or resumable run's checkpoints cannot be trusted (a file differs from its saved digest), or None.

    DVC reruns this stage when its output folder was changed; resuming on a damaged checkpoint
    would keep it, so the run starts over instead (and, being deterministic, ends as it did).
    """
    for folder in (workdir / CURRENT, workdir / BEST):
        if folder.exists():
            try:
                check_digests(folder)
            except ValueError as err:
                return str(err).split("; ")[0]
    return None


def _start_or_resume(
    params: Params, dataset: SequenceDataset, generator_dir: Path, id_table_path: Path, workdir: Path
) -> TrainingState:
    from idgenrec.backbone import load_seq2seq, save_seq2seq
    from idgenrec.ids import ItemIdTable

    state = TrainingState.load(workdir)
    fingerprint = run_fingerprint(params, dataset, generator_dir, id_table_path)
    if state is not None and state.fingerprint == fingerprint and (workdir / CURRENT).exists():
        damage = _damage(workdir)
        if damage is None:
            return state
        LOGGER.warning(f"{damage}: starting the run over")
    elif state is not None:
        LOGGER.info(
            f"{workdir}: its run had other params, inputs or training code (phases finished: {state.completed_phases}); "
            "starting over"
        )
    shutil.rmtree(workdir, ignore_errors=True)
    generator, tokenizer = load_seq2seq(generator_dir)
    torch.manual_seed(params.training.seed)
    recommender = build_recommender(params, tokenizer)
    table = ItemIdTable.load(id_table_path)
    with atomic_directory(workdir / CURRENT) as tmp:
        save_seq2seq(generator, tokenizer, tmp / "generator")
        save_seq2seq(recommender, tokenizer, tmp / "recommender")
        table.save(tmp / "item_ids.tsv")
        record_digests(tmp)
    table.save(workdir / ROUNDS / "ids-00.tsv")
    state = TrainingState(fingerprint=fingerprint)
    state.save(workdir)
    return state


def run_phase(params: Params, dataset: SequenceDataset, workdir: Path, index: int) -> list[dict]:
    """Run phase ``index`` of the schedule from ``current/``; returns its records.

    Already-finished phases are skipped (that is how a run resumes). On several processes every
    one trains and validates its share, and the first one alone writes.
    """
    from idgenrec.backbone import load_seq2seq, save_seq2seq
    from idgenrec.ids import ItemIdTable, make_id_table

    state = TrainingState.load(workdir)
    if state is None:
        raise FileNotFoundError(f"{workdir}: no training state; start the run first")
    phases = len(params.training.schedule)
    if index < state.completed_phases:
        LOGGER.info(f"phase {index + 1}/{phases}: finished in an earlier run, skipped (resuming)")
        return [r for r in state.records if r["phase_index"] == index]
    if index != state.completed_phases:
        raise ValueError(f"phase {index} cannot run before phase {state.completed_phases} has finished")
    phase = params.training.schedule[index]
    device = pick_device()
    current = workdir / CURRENT
    generator, tokenizer = load_seq2seq(current / "generator")
    recommender, _ = load_seq2seq(current / "recommender")
    generator.to(device)
    recommender.to(device)
    table = ItemIdTable.load(current / "item_ids.tsv")
    ranks = distributed.current()
    seed = params.training.seed * 1000 + index
    encoder, source, samples = recommender_inputs(params, dataset, recommender, tokenizer, table)
    records: list[dict] = []
    started = time.perf_counter()
    LOGGER.info(f"phase {index + 1}/{phases}: {phase.phase}, {phase.epochs} epochs at lr {phase.learning_rate}")

    if phase.phase == "recommender":
        selection = dataset.sample_users(params.training.selection_users, params.training.seed)

        def select(epoch: int, loss: float) -> None:
            model = IDGenRecModel(recommender, tokenizer, table, decoding_settings(params), generator)
            metrics = evaluate(model, selection, "valid", params.evaluation.ks, params.evaluation.exclude_seen)
            score = metrics[params.evaluation.selection_metric]
            record = {
                "phase_index": index, "phase": "recommender", "epoch": epoch + 1, "train_loss": loss,
                "seconds": time.perf_counter() - started,
                **{f"valid_{name}": value for name, value in metrics.items()},
            }
            if state.best_score is None or score > state.best_score:
                state.best_score, state.best_phase, state.best_epoch = score, index, epoch + 1
                if ranks.main:
                    model.save(workdir / BEST)
                record["selected"] = True
            records.append(record)
            coverage = f"coverage@{max(params.evaluation.ks)}"  # low coverage: a collapsed run (see evaluation)
            LOGGER.info(
                f"phase {index + 1}/{phases}, epoch {epoch + 1}: train loss {loss:.4f}, valid "
                f"{params.evaluation.selection_metric} {score:.4f}, {coverage} {metrics[coverage]:.3f}"
                + (" (best so far: saved to best/)" if record.get("selected") else "")
            )

        train_recommender_phase(recommender, source, params.training, phase, seed, on_epoch_end=select)
    elif params.ids.kind != "learned":
        records.append({"phase_index": index, "phase": "ids", "skipped": f"ids.kind is {params.ids.kind!r}: no generator to train"})
    else:
        item_inputs = ItemTextInputs(tokenizer, dataset.item_texts, params.ids.max_input_tokens)
        losses = train_id_phase(generator, recommender, encoder, samples, item_inputs, params.training, phase, seed)
        new_table, quality = make_id_table("learned", dataset, generator, tokenizer, params.ids)
        changed = sum(a != b for a, b in zip(table.textual_ids, new_table.textual_ids))
        table = new_table
        if ranks.main:
            table.save(workdir / ROUNDS / f"ids-{index + 1:02d}.tsv")
        LOGGER.info(f"phase {index + 1}/{phases}: ID phase loss {losses[-1]:.4f}; {changed} of {len(table.textual_ids)} IDs changed")
        records.append({
            "phase_index": index, "phase": "ids", "train_loss": losses[-1], "ids_changed": changed,
            "ids_changed_fraction": changed / len(table.textual_ids), "seconds": time.perf_counter() - started,
            **{f"ids_{k}": v for k, v in quality.items() if isinstance(v, (int, float))},
        })

    state.completed_phases = index + 1
    state.records += records
    if ranks.main:
        with atomic_directory(current) as tmp:
            save_seq2seq(generator, tokenizer, tmp / "generator")
            save_seq2seq(recommender, tokenizer, tmp / "recommender")
            table.save(tmp / "item_ids.tsv")
            record_digests(tmp)
        state.save(workdir)
    ranks.barrier()
    return records


def train(params: Params, dataset: SequenceDataset, generator_dir: Path, id_table_path: Path, workdir: Path) -> TrainingState:
    """Run (or resume) the whole schedule; the selected model ends up in ``workdir/best``."""
    start_or_resume(params, dataset, generator_dir, id_table_path, workdir)
    for index in range(len(params.training.schedule)):
        run_phase(params, dataset, workdir, index)
    state = TrainingState.load(workdir)
    if state is None or state.best_phase is None:
        raise RuntimeError("the schedule has no recommender phase, so no model was selected")
    return choose_similarity_weight(params, dataset, workdir)


def choose_similarity_weight(params: Params, dataset: SequenceDataset, workdir: Path) -> TrainingState:
    """Give ``best/`` the weight of ``training.similarity_weights`` that validation prefers; returns the state.

    The checkpoint was selected with the first weight; each weight is then scored on the same
    validation users (once per run and set of weights: the scores are kept in the state) and
    :func:`preferred_similarity_weight` picks one, which is saved with the model.
    """
    state = TrainingState.load(workdir)
    weights = params.training.similarity_weights
    if state is None or state.best_phase is None:
        raise FileNotFoundError(f"{workdir}: no selected model to choose a similarity weight for")
    if len(weights) == 1:
        return state
    scores = state.valid_by_similarity_weight
    scored = set(scores or ()) == {str(w) for w in weights}
    if scored and preferred_similarity_weight(scores, weights, params.training.similarity_min_gain) == state.similarity_weight:
        return state  # chosen already, and best/ carries it
    ranks = distributed.current()
    best = IDGenRecModel.load(workdir / BEST, device=pick_device())
    if not scored:
        selection = dataset.sample_users(params.training.selection_users, params.training.seed)
        scores = {}
        for weight in weights:
            candidate = _with_similarity_weight(best, weight)
            metrics = evaluate(candidate, selection, "valid", params.evaluation.ks, params.evaluation.exclude_seen)
            scores[str(weight)] = metrics[params.evaluation.selection_metric]
    weight = preferred_similarity_weight(scores, weights, params.training.similarity_min_gain)
    LOGGER.info(f"similarity weight {weight:g} selected (valid {params.evaluation.selection_metric}: "
                + ", ".join(f"{w:g}: {scores[str(w)]:.4f}" for w in weights) + ")")
    if ranks.main:
        if weight != best.settings.similarity_weight:
            _with_similarity_weight(best, weight).save(workdir / BEST)
        state.valid_by_similarity_weight, state.similarity_weight = scores, weight
        state.save(workdir)
    ranks.barrier()
    return state if ranks.main else TrainingState.load(workdir)


def preferred_similarity_weight(scores: dict[str, float], weights: list[float], min_gain: float) -> float:
    """The best-scoring weight where it beats the first one by ``min_gain`` (relative), else the first one.

    A validation score over about a thousand users moves by more than a percent between
    checkpoints of equal quality: a smaller gain is no reason to change how the model ranks.
    """
    first = weights[0]
    best = max(weights, key=lambda w: scores[str(w)])  # max keeps the first of equal scores
    return best if scores[str(best)] > scores[str(first)] * (1 + min_gain) else first


def _with_similarity_weight(model: IDGenRecModel, weight: float) -> IDGenRecModel:
    return IDGenRecModel(model.recommender, model.tokenizer, model.id_table,
                         dataclasses.replace(model.settings, similarity_weight=weight), model.generator)
