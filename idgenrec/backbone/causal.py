"""The decoder-only recommender: BERT layers with causal self-attention (transformers ``BertLMHeadModel``).

offline: MiniLM-L6's embeddings (pruned vocabulary rows) and first ``causal_layers`` layers,
read left to right; the LM head's transform is fresh and its output matrix is the word
embedding matrix (tied), so soft IDs ``p @ E`` live in the space the model reads and writes,
as for the seq2seq recommender. tiny: the same architecture, random (tests).

Unlike the encoder-decoder, which encodes a whole prompt to train one target, this model
reads a user's sequence of textual IDs once and is trained on the ID of every item in it.
"""

from __future__ import annotations

import torch
from transformers import BertConfig, BertLMHeadModel, PreTrainedModel, PreTrainedTokenizerBase

from idgenrec.backbone.vocabulary import minilm_folder
from idgenrec.config import BackboneConfig


def build_causal(config: BackboneConfig, tokenizer: PreTrainedTokenizerBase, seed: int = 0) -> BertLMHeadModel:
    """A fresh decoder-only recommender whose vocabulary is ``tokenizer``'s."""
    from idgenrec.backbone.seq2seq import _BERT_FIELDS, _tiny_bert_config, load_minilm_state

    if config.profile not in ("offline", "tiny"):
        raise ValueError(f"the causal recommender is built from the offline or tiny backbone, not {config.profile!r}")
    torch.manual_seed(seed)  # fresh layers (the LM head's transform, tiny weights) depend on the seed only
    base = _tiny_bert_config(config.hidden_size) if config.profile == "tiny" else BertConfig.from_pretrained(minilm_folder())
    fields = {k: v for k, v in base.to_dict().items() if k in _BERT_FIELDS}
    fields.update(
        vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id, num_hidden_layers=config.causal_layers,
        hidden_dropout_prob=config.causal_dropout, attention_probs_dropout_prob=config.causal_dropout,
        is_decoder=True, add_cross_attention=False, tie_word_embeddings=True,
    )
    model_config = BertConfig(**fields)
    model_config._attn_implementation = "sdpa"
    model = BertLMHeadModel(model_config)
    if config.profile == "offline":
        state = load_minilm_state(tokenizer, config.causal_layers)
        result = model.bert.load_state_dict(state, strict=False)
        unexpected = [k for k in result.unexpected_keys if "pooler" not in k]
        if unexpected:
            raise RuntimeError(f"{minilm_folder()}: unexpected MiniLM weights {unexpected[:5]}")
        model.tie_weights()
    return model.eval()


def is_causal(model: PreTrainedModel) -> bool:
    """Whether ``model`` is a decoder-only recommender (else an encoder-decoder)."""
    return not model.config.is_encoder_decoder


def hidden_states(model: BertLMHeadModel, **inputs) -> torch.Tensor:
    """The last layer's states (B, T, H), without the LM head: training scores only the target positions."""
    return model.bert(**inputs).last_hidden_state


def token_logits(model: BertLMHeadModel, states: torch.Tensor) -> torch.Tensor:
    """LM-head logits (..., V) of the given hidden states."""
    return model.cls(states)
