"""Backbones as configuration: the shared tokenizer and the seq2seq models (see seq2seq.py)."""

from idgenrec.backbone.seq2seq import (
    autocast,
    build_seq2seq,
    load_seq2seq,
    pick_device,
    prompt_token_limit,
    save_seq2seq,
    training_kernels,
)
from idgenrec.backbone.vocabulary import BackboneUnavailableError, build_tokenizer, vocabulary_corpus

__all__ = [
    "BackboneUnavailableError",
    "build_seq2seq",
    "build_tokenizer",
    "load_seq2seq",
    "prompt_token_limit",
    "save_seq2seq",
    "training_kernels",
    "vocabulary_corpus",
]
