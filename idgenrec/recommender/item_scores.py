"""Item-level scores of the causal recommender: every item of the catalogue scored by its textual ID at once.

Beam search writes the next ID token by token and sees only the IDs its beams reach. Here
each item is scored by its ID tokens' mean token logit where the next ID starts, one matrix
product over the catalogue: a softmax over it is an item-level training objective
(``training.item_loss``, as SASRec's full cross-entropy), and its top k is a ranking of
every item (``training.ranking: items``). Items are still known only by their ID tokens, so a
new item's score comes from its ID alone, as with beams.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from idgenrec.recommender.samples import pad_batch


def catalogue_tokens(item_tokens: Sequence[Sequence[int]]) -> torch.Tensor:
    """(I, L) every item's ID tokens, right-padded with -1."""
    return pad_batch([list(tokens) for tokens in item_tokens], -1)


def item_embeddings(model, catalogue: torch.Tensor) -> torch.Tensor:
    """(I, H) each item of ``catalogue`` (:func:`catalogue_tokens`) as the mean of its ID tokens' (tied) embeddings."""
    real = catalogue >= 0
    lengths = real.sum(dim=1)
    return torch.nn.functional.embedding_bag(
        catalogue[real], model.get_input_embeddings().weight, offsets=torch.cumsum(lengths, 0) - lengths, mode="mean"
    )


def item_logits(model, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """Scores (N, I) of every item from hidden ``states`` (N, H) and :func:`item_embeddings` ``items`` (I, H).

    An item's score is its ID tokens' mean token logit without the output bias: the LM head's
    transformed state against the mean of the embeddings of the item's ID tokens.
    """
    return model.cls.predictions.transform(states) @ items.to(states.dtype).T


def item_log_probs(model, states: torch.Tensor, items: torch.Tensor) -> torch.Tensor:
    """(N, I) log-probabilities over the catalogue: the softmax of :func:`item_logits`, in fp32."""
    return torch.log_softmax(item_logits(model, states, items).float(), dim=-1)


def item_directions(items: torch.Tensor) -> torch.Tensor:
    """(I, H) each item's embedding centred over the catalogue and scaled to unit length, in fp32.

    Centring removes what every ID shares (common tokens, the embeddings' mean), so the cosine
    of two rows says how alike the two items' IDs are rather than how alike IDs are in general.
    """
    centred = items.float() - items.float().mean(dim=0, keepdim=True)
    return torch.nn.functional.normalize(centred, dim=-1)


def last_item_similarity(directions: torch.Tensor, last_items: Sequence[int | None]) -> torch.Tensor:
    """(B, I) cosine between every item and each row's last item (:func:`item_directions`).

    0 for an empty history, and for the last item itself: the term favours items like the last
    one, and would otherwise put the last item first (whether to repeat it is the model's call).
    """
    rows = torch.tensor([-1 if item is None else item for item in last_items], device=directions.device)
    similarity = directions[rows.clamp(min=0)] @ directions.T
    similarity *= (rows >= 0).unsqueeze(1)
    own = torch.nonzero(rows >= 0).squeeze(1)
    similarity[own, rows[own]] = 0.0
    return similarity
