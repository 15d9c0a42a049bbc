"""Prefix trie over tokenized item IDs, for constrained decoding.

Each item's path is its ID's token ids followed by the end-of-sequence token, so decoding
can only stop at a complete ID and every finished path names exactly one item.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class IdTrie:
    ROOT = 0

    def __init__(self, token_sequences: Sequence[Sequence[int]], eos_token_id: int):
        self.eos_token_id = eos_token_id
        self._children: list[dict[int, int]] = [{}]
        self._item_at: dict[int, int] = {}  # leaf node (after eos) -> item index
        for item, tokens in enumerate(token_sequences):
            if not tokens:
                raise ValueError(f"item {item} has an empty ID; every item needs at least one token")
            node = self.ROOT
            for token in [*tokens, eos_token_id]:
                nxt = self._children[node].get(token)
                if nxt is None:
                    nxt = len(self._children)
                    self._children[node][token] = nxt
                    self._children.append({})
                node = nxt
            if node in self._item_at:
                raise ValueError(f"items {self._item_at[node]} and {item} share the same token sequence")
            self._item_at[node] = item
        # Per node, the allowed next tokens and the child they lead to, as tensors, so a
        # decoding step builds its mask with one scatter instead of a Python loop per token.
        self._allowed = [torch.tensor(sorted(c), dtype=torch.long) for c in self._children]
        self.max_depth = max((len(t) + 1 for t in token_sequences), default=0)

    def __len__(self) -> int:
        return len(self._item_at)

    def allowed_tokens(self, node: int) -> torch.Tensor:
        return self._allowed[node]

    def step(self, node: int, token: int) -> int:
        """Child of ``node`` along ``token``; -1 when the token leaves the trie."""
        if node < 0:
            return -1
        return self._children[node].get(token, -1)

    def walk(self, tokens: Sequence[int], node: int = ROOT) -> int:
        for token in tokens:
            node = self.step(node, token)
        return node

    def item_at(self, node: int) -> int | None:
        """Item whose complete path (eos included) ends at ``node``."""
        return self._item_at.get(node)

    def is_leaf(self, node: int) -> bool:
        return node in self._item_at

    def allowed_mask(self, nodes: Sequence[int], vocab_size: int) -> torch.Tensor:
        """Boolean mask ``(len(nodes), vocab_size)``: True where a token keeps a path valid.

        Finished (leaf) and dead (-1) nodes allow only eos, which decoding treats as padding.
        """
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool)
        rows, cols = [], []
        for row, node in enumerate(nodes):
            allowed = self._allowed[node] if node >= 0 and not self.is_leaf(node) else None
            if allowed is None or allowed.numel() == 0:
                allowed = torch.tensor([self.eos_token_id])
            rows.append(torch.full_like(allowed, row))
            cols.append(allowed)
        if rows:
            mask[torch.cat(rows), torch.cat(cols)] = True
        return mask
