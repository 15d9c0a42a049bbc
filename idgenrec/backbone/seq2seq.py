"""Seq2seq models for the ID generator and the recommender, and their checkpoints.

offline: a BERT encoder-decoder (transformers ``EncoderDecoderModel``) started from
MiniLM-L6: its first ``encoder_layers`` / ``decoder_layers`` layers (the decoder's
cross-attention and LM-head transform are fresh), word embeddings cut to the pruned
vocabulary's rows. Encoder, decoder and LM head share one word-embedding matrix, so
``get_input_embeddings()`` is also the output projection (soft IDs ``p @ E`` live in the
same space the recommender reads and writes).
tiny: the same architecture, random, ``hidden_size`` wide (tests).
paper: ``AutoModelForSeq2SeqLM`` from a hub name or local path (t5-small).
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Literal

import torch
from transformers import BertConfig, EncoderDecoderConfig, EncoderDecoderModel, PreTrainedModel, PreTrainedTokenizerBase

from idgenrec.atomic import atomic_directory
from idgenrec.backbone.vocabulary import BackboneUnavailableError, minilm_folder, unavailable_message
from idgenrec.config import BackboneConfig

Role = Literal["generator", "recommender"]
WEIGHTS_FILE = "model.safetensors"
SHARED_FLAG = "idgenrec_shared_word_embeddings"

log = logging.getLogger("idgenrec")


def build_seq2seq(
    config: BackboneConfig, tokenizer: PreTrainedTokenizerBase, role: Role, seed: int = 0
) -> PreTrainedModel:
    """A fresh model for ``role`` whose vocabulary is ``tokenizer``'s (same size for both roles)."""
    if role not in ("generator", "recommender"):
        raise ValueError(f"role must be 'generator' or 'recommender', got {role!r}")
    torch.manual_seed(seed)  # fresh layers (cross-attention, tiny weights) depend on the seed only
    if config.profile == "paper":
        checkpoint = config.generator_checkpoint if role == "generator" else config.recommender_checkpoint
        return _hub_model(checkpoint, tokenizer, config.dropout)
    if config.profile == "tiny":
        base = _tiny_bert_config(config.hidden_size)
    else:
        base = BertConfig.from_pretrained(minilm_folder())
    model = _empty_encoder_decoder(_encoder_decoder_config(base, config, tokenizer))
    if config.profile == "offline":
        _load_minilm_weights(model, tokenizer)
    if role == "recommender" and config.cross_attention_init == "self":
        _copy_self_attention_to_cross_attention(model)
    return model.eval()


def _copy_self_attention_to_cross_attention(model: EncoderDecoderModel) -> None:
    """Each decoder layer's cross-attention := its self-attention (query/key/value, output dense, LayerNorm)."""
    with torch.no_grad():
        for layer in model.decoder.bert.encoder.layer:
            layer.crossattention.load_state_dict(layer.attention.state_dict())


def _tiny_bert_config(hidden: int) -> BertConfig:
    heads = hidden // 16 if hidden % 16 == 0 else 1
    return BertConfig(
        hidden_size=hidden, num_attention_heads=heads, intermediate_size=2 * hidden, max_position_embeddings=512,
        hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0,
    )


def _encoder_decoder_config(base: BertConfig, config: BackboneConfig, tokenizer) -> EncoderDecoderConfig:
    common = {k: v for k, v in base.to_dict().items() if k in _BERT_FIELDS}
    common.update(vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id)
    if config.dropout is not None:
        common.update(hidden_dropout_prob=config.dropout, attention_probs_dropout_prob=config.dropout)
    encoder = BertConfig(**common, num_hidden_layers=config.encoder_layers)
    decoder = BertConfig(
        **common, num_hidden_layers=config.decoder_layers, is_decoder=True, add_cross_attention=True,
        bos_token_id=tokenizer.cls_token_id, eos_token_id=tokenizer.sep_token_id,
    )
    joint = EncoderDecoderConfig.from_encoder_decoder_configs(encoder, decoder)
    joint.decoder_start_token_id = tokenizer.cls_token_id
    joint.pad_token_id = tokenizer.pad_token_id
    joint.eos_token_id = tokenizer.sep_token_id
    joint.vocab_size = len(tokenizer)
    setattr(joint, SHARED_FLAG, True)
    return joint


_BERT_FIELDS = (
    "hidden_size", "num_attention_heads", "intermediate_size", "hidden_act", "hidden_dropout_prob",
    "attention_probs_dropout_prob", "max_position_embeddings", "type_vocab_size", "initializer_range", "layer_norm_eps",
)


def _empty_encoder_decoder(config: EncoderDecoderConfig) -> EncoderDecoderModel:
    from transformers import BertLMHeadModel, BertModel

    config.encoder._attn_implementation = "sdpa"
    config.decoder._attn_implementation = "sdpa"
    encoder = BertModel(config.encoder, add_pooling_layer=False)  # no pooler: unused, would get no gradient
    decoder = BertLMHeadModel(config.decoder)
    model = EncoderDecoderModel(config=config, encoder=encoder, decoder=decoder)
    if getattr(config, SHARED_FLAG, False):
        _share_word_embeddings(model)
    return model


def _share_word_embeddings(model: EncoderDecoderModel) -> None:
    """One (V, H) matrix for encoder input, decoder input and LM head (the soft-ID contract)."""
    shared = model.encoder.embeddings.word_embeddings
    model.decoder.bert.embeddings.word_embeddings = shared
    model.decoder.cls.predictions.decoder.weight = shared.weight


def load_minilm_state(tokenizer: PreTrainedTokenizerBase, layers: int) -> dict[str, torch.Tensor]:
    """MiniLM's embeddings (the rows of ``tokenizer``'s pruned vocabulary) and its first ``layers`` layers,
    keyed as a ``BertModel``'s state."""
    from safetensors.torch import load_file

    folder = minilm_folder()
    state = load_file(str(folder / WEIGHTS_FILE))
    full_vocab = _minilm_vocab(folder)
    tokens = tokenizer.convert_ids_to_tokens(list(range(len(tokenizer))))
    missing = [t for t in tokens if t not in full_vocab]
    if missing:
        raise ValueError(f"tokenizer has tokens outside MiniLM's vocabulary ({missing[:5]}...): build it with build_tokenizer")
    rows = torch.tensor([full_vocab[t] for t in tokens])
    state["embeddings.word_embeddings.weight"] = state["embeddings.word_embeddings.weight"][rows]  # (V_pruned, 384)
    state.pop("embeddings.position_ids", None)
    return {k: v for k, v in state.items() if not k.startswith("encoder.layer.") or int(k.split(".")[2]) < layers}


def _load_minilm_weights(model: EncoderDecoderModel, tokenizer: PreTrainedTokenizerBase) -> None:
    """Copy MiniLM's embeddings and first layers into encoder and decoder (pruned vocabulary rows)."""
    with torch.no_grad():
        for part in (model.encoder, model.decoder.bert):
            result = part.load_state_dict(load_minilm_state(tokenizer, len(part.encoder.layer)), strict=False)
            unexpected = [k for k in result.unexpected_keys if "pooler" not in k]
            if unexpected:
                raise RuntimeError(f"{minilm_folder() / WEIGHTS_FILE}: unexpected MiniLM weights {unexpected[:5]}")
    _share_word_embeddings(model)  # load_state_dict copied into the shared tensor; re-assert the tie anyway


def grow_embeddings(model: PreTrainedModel, known: list[str], tokens: list[str]) -> None:
    """Append embedding rows (and LM-head biases) for ``tokens``, new at the end of the vocabulary.

    ``known`` is the token of each existing row (the model's tokenizer, before it grew).

    A token's row is its MiniLM row mapped into this model's embedding space: training moved
    the model's rows away from MiniLM's, so a ridge-regularised linear map from MiniLM's rows
    to the model's is fitted on the tokens the model has, and applied to the new ones (it
    also bridges a different width, e.g. a tiny test model). A new token's LM-head bias is
    the mean of the existing ones. Only for the offline / tiny models (encoder-decoder or causal).
    """
    from transformers import BertLMHeadModel

    if not tokens:
        return
    causal = isinstance(model, BertLMHeadModel)
    if not causal and (not isinstance(model, EncoderDecoderModel) or not getattr(model.config, SHARED_FLAG, False)):
        raise ValueError(f"growing the vocabulary needs an offline/tiny backbone, not {type(model).__name__}")
    from safetensors import safe_open

    folder = minilm_folder()
    full_vocab = _minilm_vocab(folder)
    with safe_open(str(folder / WEIGHTS_FILE), framework="pt") as weights:
        pretrained = weights.get_tensor("embeddings.word_embeddings.weight").float()  # (30522, 384)
    unknown = [t for t in [*known, *tokens] if t not in full_vocab]
    if unknown:
        raise ValueError(f"tokens outside MiniLM's vocabulary: {unknown[:5]}")
    embedding = model.get_input_embeddings()
    current = embedding.weight.detach().float()  # (V, H)
    if (size := (model.config if causal else model.config.encoder).vocab_size) != current.size(0):
        raise ValueError(f"config vocab_size {size} does not match the embedding's {current.size(0)} rows")
    if len(known) != current.size(0):
        raise ValueError(f"{len(known)} known tokens for an embedding of {current.size(0)} rows")
    source = torch.cat([pretrained[[full_vocab[t] for t in known]], torch.ones(len(known), 1)], dim=1)
    gram = source.T @ source
    ridge = 1e-3 * gram.diagonal().mean() * torch.eye(gram.size(0))
    mapping = torch.linalg.solve(gram + ridge, source.T @ current)  # (385, H)
    added = torch.cat([pretrained[[full_vocab[t] for t in tokens]], torch.ones(len(tokens), 1)], dim=1) @ mapping
    head = (model if causal else model.decoder).cls.predictions
    with torch.no_grad():
        rows = torch.nn.Embedding(current.size(0) + len(tokens), current.size(1), padding_idx=embedding.padding_idx)
        rows.weight.copy_(torch.cat([embedding.weight.detach(), added.to(embedding.weight.dtype)]))
        bias = torch.cat([head.bias.detach(), head.bias.detach().mean().expand(len(tokens))])
    rows.to(embedding.weight.device)
    head.decoder = torch.nn.Linear(current.size(1), rows.num_embeddings, bias=True, device=rows.weight.device)
    head.bias = torch.nn.Parameter(bias.to(rows.weight.device))
    head.decoder.bias = head.bias
    if causal:
        model.bert.embeddings.word_embeddings = rows
        head.decoder.weight = rows.weight
        configs = (model.config,)
    else:
        model.encoder.embeddings.word_embeddings = rows
        _share_word_embeddings(model)
        configs = (model.config, model.config.encoder, model.config.decoder)
    for config in configs:
        config.vocab_size = rows.num_embeddings


def _minilm_vocab(folder: Path) -> dict[str, int]:
    lines = (folder / "vocab.txt").read_text(encoding="utf-8").splitlines()
    return {token: index for index, token in enumerate(lines)}


def _hub_model(checkpoint: str, tokenizer: PreTrainedTokenizerBase, dropout: float | None) -> PreTrainedModel:
    from transformers import AutoConfig, AutoModelForSeq2SeqLM

    try:
        config = AutoConfig.from_pretrained(checkpoint)
        for name in ("dropout_rate", "dropout", "attention_dropout"):  # T5 / BART-style names
            if dropout is not None and hasattr(config, name):
                setattr(config, name, dropout)
        model = AutoModelForSeq2SeqLM.from_pretrained(checkpoint, config=config)
    except (OSError, ValueError) as err:
        raise BackboneUnavailableError(unavailable_message(checkpoint, err)) from None
    if model.get_input_embeddings().num_embeddings < len(tokenizer):
        model.resize_token_embeddings(len(tokenizer))
    if model.config.decoder_start_token_id is None:
        model.config.decoder_start_token_id = tokenizer.pad_token_id
    return model.eval()


def pick_device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def prompt_token_limit(model: PreTrainedModel) -> int | None:
    """The most tokens ``model``'s encoder (a causal model: the model) reads: its learned positions (MiniLM: 512);
    None for T5's relative ones."""
    encoder_config = getattr(model.config, "encoder", None) if model.config.is_encoder_decoder else model.config
    return getattr(encoder_config, "max_position_embeddings", None)


@functools.cache
def cpu_has_bf16_kernels() -> bool:
    """Whether oneDNN has bf16 matrix kernels for this CPU (AVX-512 and up; AMX is fastest).

    Without them PyTorch emulates bf16 and it is no speed-up but a collapse: on a 2-core AMD
    EPYC with AVX2 only, a 1024x1024 bf16 matmul ran at 1 GFLOP/s against 94 in fp32, and the
    default pipeline's warm-up at 0.1 steps/s against 2.4 on the AVX-512 + AMX hosts measured
    before.
    """
    try:
        return bool(torch.ops.mkldnn._is_mkldnn_bf16_supported())
    except (AttributeError, RuntimeError):  # a build without oneDNN
        return False


@functools.cache
def _warn_bf16_unavailable(device_type: str) -> None:
    log.warning("bf16 requested, but this %s has no bf16 kernels: running in fp32, slower than a bf16 host "
                "and not bit-identical to its results", device_type.upper())


def bf16_available(device: torch.device) -> bool:
    """Whether bf16 runs on hardware kernels on ``device``; where not, :func:`autocast` keeps fp32."""
    if device.type == "cuda":
        return torch.cuda.is_bf16_supported()
    return device.type != "cpu" or cpu_has_bf16_kernels()


def training_precision(device: torch.device, bf16: bool) -> str:
    """The precision a run with ``bf16`` requested actually computes in on ``device``: "bf16" or "fp32"."""
    return "bf16" if bf16 and bf16_available(device) else "fp32"


def autocast(device: torch.device, enabled: bool) -> contextlib.AbstractContextManager:
    """bf16 autocast where the hardware has bf16 kernels (CPUs with AVX-512 / AMX, GPUs from Ampere); else fp32.

    On CUDA, bf16 attention would go to cuDNN's kernel, which builds an execution plan for
    every new shape: ~5 ms of CPU per call on an H200, and length-grouped batches and
    decoding steps change shape every call. A paper-offline training step took 347 ms that
    way against 36.7 ms with flash / memory-efficient attention, which have no per-shape plan
    (benchmarks/results/gpu-h200.md).
    """
    if not enabled:
        return contextlib.nullcontext()
    if not bf16_available(device):
        _warn_bf16_unavailable(device.type)
        return contextlib.nullcontext()
    if device.type != "cuda":
        return torch.autocast(device.type, dtype=torch.bfloat16)
    from torch.nn.attention import SDPBackend, sdpa_kernel

    stack = contextlib.ExitStack()
    stack.enter_context(torch.autocast("cuda", dtype=torch.bfloat16))
    stack.enter_context(sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]))
    return stack


@contextlib.contextmanager
def training_kernels(device: torch.device, *models: PreTrainedModel) -> Iterator[None]:
    """Attention for a training step of ``models``: on CPU, their eager (matmul + softmax) attention.

    On CPU, PyTorch's SDPA picks its flash-attention kernel when dropout is off, and that
    kernel's backward took ~45% of a step here; its math kernel trained 1.4x faster, and the
    eager path is faster again: it skips the math kernel's masked-row guard (an all() and a
    where() over every score) and the per-call mask conversion: the 1+1 default's step ran
    1.12x as fast (benchmarks/results/training-step.md). Decoding keeps SDPA; each model gets
    its attention back on exit. Other devices keep SDPA's own choice.
    """
    if device.type != "cpu":
        yield
        return
    saved = [model.config._attn_implementation for model in models]
    for model in models:
        model.set_attn_implementation("eager")
    try:
        yield
    finally:
        for model, implementation in zip(models, saved):
            model.set_attn_implementation(implementation)


# -- checkpoints ---------------------------------------------------------------------------


def save_seq2seq(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, folder: str | Path) -> None:
    """Write config + weights + tokenizer into ``folder`` atomically (readers see old or new, whole).

    The same weights always give the same bytes, so DVC and the resume fingerprint see an
    unchanged checkpoint as unchanged.
    """
    from safetensors.torch import save_file

    with atomic_directory(folder) as tmp:
        model.config.save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        # Not safetensors' save_model: it records the dropped aliases in a header map that it
        # writes in a different order in every process (safetensors#584). load_model re-ties
        # the aliases from the model's own sharing, so no map is needed.
        save_file(_stored_once(model.state_dict()), str(tmp / WEIGHTS_FILE))


def _stored_once(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """``state`` with each tensor aliased under several names (tied embeddings) kept once, under
    the first of its names in sorted order, the name safetensors' save_model keeps."""
    names_by_view: dict[tuple, list[str]] = {}
    for name, tensor in state.items():
        # Empty tensors may all report address 0: never treat them as aliases of each other.
        address = tensor.data_ptr() if tensor.numel() else name
        view = (tensor.device, address, tensor.dtype, tuple(tensor.shape), tensor.stride())
        names_by_view.setdefault(view, []).append(name)
    return {min(names): state[min(names)] for names in names_by_view.values()}


def load_seq2seq(folder: str | Path) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Model (eval mode) and tokenizer saved by :func:`save_seq2seq` (a seq2seq model, or the causal
    recommender of ``backbone/causal.py``); clear error naming ``folder``."""
    from safetensors import SafetensorError
    from safetensors.torch import load_model
    from transformers import AutoConfig, AutoModelForSeq2SeqLM, AutoTokenizer

    folder = Path(folder)
    missing = [f for f in ("config.json", WEIGHTS_FILE, "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise BackboneUnavailableError(
            f"{folder}: not a complete checkpoint, missing {missing} (run `idgenrec ids warmup` or the training stage)"
        )
    try:
        config = AutoConfig.from_pretrained(folder)
        if config.model_type == "encoder-decoder":
            model = _empty_encoder_decoder(config)
        elif config.model_type == "bert" and config.is_decoder:  # the causal recommender
            from transformers import BertLMHeadModel

            config._attn_implementation = "sdpa"
            model = BertLMHeadModel(config)
        else:
            model = AutoModelForSeq2SeqLM.from_config(config)
        load_model(model, str(folder / WEIGHTS_FILE))
        tokenizer = AutoTokenizer.from_pretrained(folder)
    except (OSError, ValueError, RuntimeError, SafetensorError) as err:
        raise BackboneUnavailableError(f"{folder}: corrupt checkpoint ({type(err).__name__}: {str(err)[:300]})") from None
    return model.eval(), tokenizer
