"""Prefix trie over tokenized item IDs, for constrained decoding.

Each item's path is its ID's token ids followed by the end-of-sequence token, so decoding
can only stop at a complete ID and every finished path names exactly one item.

The trie is built once with dicts, then frozen into flat tensors (children of a node are
a contiguous slice; every edge is a sorted ``node * base + token`` key), so one decoding
step handles all beams with a few tensor ops instead of a Python loop per beam. The
per-beam loop was what made the constraint cost +51% at history 10
(benchmarks/results/speed.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch


class IdTrie:
    ROOT = 0
    DEAD = -1  # a path that left the trie (only unconstrained tokens can lead there)

    def __init__(self, token_sequences: Sequence[Sequence[int]], eos_token_id: int):
        self.eos_token_id = eos_token_id
        children: list[dict[int, int]] = [{}]
        item_at: dict[int, int] = {}  # leaf node (after eos) -> item index
        for item, tokens in enumerate(token_sequences):
            if not tokens:
                raise ValueError(f"item {item} has an empty ID; every item needs at least one token")
            node = self.ROOT
            for token in [*tokens, eos_token_id]:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                node = nxt
            if node in item_at:
                raise ValueError(f"items {item_at[node]} and {item} share the same token sequence")
            item_at[node] = item
        self._num_items = len(item_at)
        self.max_depth = max((len(t) + 1 for t in token_sequences), default=0)
        self._freeze(children, item_at)
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _freeze(self, children: list[dict[int, int]], item_at: dict[int, int]) -> None:
        edges = sorted((node, token, child) for node, kids in enumerate(children) for token, child in kids.items())
        nodes = torch.tensor([e[0] for e in edges], dtype=torch.long)
        tokens = torch.tensor([e[1] for e in edges], dtype=torch.long)
        self._base = int(tokens.max()) + 1 if edges else 1
        counts = torch.bincount(nodes, minlength=len(children)) if edges else torch.zeros(len(children), dtype=torch.long)
        leaf_item = torch.full((len(children),), -1, dtype=torch.long)
        for node, item in item_at.items():
            leaf_item[node] = item
        completes = torch.full((len(children),), -1, dtype=torch.long)  # item reached by emitting eos here
        for node, kids in enumerate(children):
            if self.eos_token_id in kids:
                completes[node] = leaf_item[kids[self.eos_token_id]]
        self._tables = {
            "child_count": counts,
            "child_start": torch.cumsum(counts, 0) - counts,
            "edge_token": tokens,  # edges sorted by (node, token): a node's children are contiguous
            "edge_key": nodes * self._base + tokens,  # sorted, for searchsorted
            "edge_child": torch.tensor([e[2] for e in edges], dtype=torch.long),
            "leaf_item": leaf_item,
            "completes": completes,
        }
        self._children = children  # the dict form, for one-off lookups (step, walk)

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = {k: v.to(device) for k, v in self._tables.items()}
        return self._on_device[device]

    def __len__(self) -> int:
        return self._num_items

    def allowed_tokens(self, node: int) -> torch.Tensor:
        start, count = int(self._tables["child_start"][node]), int(self._tables["child_count"][node])
        return self._tables["edge_token"][start : start + count]

    def step(self, node: int, token: int) -> int:
        """Child of ``node`` along ``token``; -1 when the token leaves the trie."""
        if node < 0:
            return self.DEAD
        return self._children[node].get(token, self.DEAD)

    def walk(self, tokens: Sequence[int], node: int = ROOT) -> int:
        for token in tokens:
            node = self.step(node, token)
        return node

    # -- batched: one call per decoding step, nodes as a (N,) long tensor -----------------

    def allowed_mask(self, nodes: torch.Tensor | Sequence[int], vocab_size: int) -> torch.Tensor:
        """Boolean mask ``(N, vocab_size)``: True where a token keeps a path valid.

        Finished (leaf) and dead (-1) nodes allow only eos, which decoding treats as padding.
        """
        nodes = torch.as_tensor(nodes, dtype=torch.long)
        t = self._on(nodes.device)
        live = nodes >= 0
        safe = nodes.clamp(min=0)
        counts = torch.where(live, t["child_count"][safe], 0)
        # Flatten every node's child slice: row r repeats counts[r] times, offsets 0..counts[r]-1.
        rows = torch.repeat_interleave(torch.arange(len(nodes), device=nodes.device), counts)
        firsts = torch.repeat_interleave(t["child_start"][safe], counts)
        offsets = torch.arange(rows.numel(), device=nodes.device) - torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, t["edge_token"][firsts + offsets]] = True
        mask[counts == 0, self.eos_token_id] = True
        return mask

    def step_many(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node along its token; -1 where the token leaves the trie."""
        t = self._on(nodes.device)
        keys = nodes.clamp(min=0) * self._base + tokens.clamp(max=self._base - 1)
        where = torch.searchsorted(t["edge_key"], keys).clamp(max=max(len(t["edge_key"]) - 1, 0))
        hit = (t["edge_key"][where] == keys) & (nodes >= 0) & (tokens < self._base)
        return torch.where(hit, t["edge_child"][where], self.DEAD)

    def items_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item whose complete path ends at each node; -1 elsewhere."""
        t = self._on(nodes.device)
        return torch.where(nodes >= 0, t["leaf_item"][nodes.clamp(min=0)], -1)

    def completions(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item that emitting eos at each node would complete; -1 where eos is not allowed."""
        t = self._on(nodes.device)
        return torch.where(nodes >= 0, t["completes"][nodes.clamp(min=0)], -1)
