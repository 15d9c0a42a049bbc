"""Prefix trie over tokenized item IDs, for constrained decoding.

Each item's path is its ID's token ids followed by the end-of-sequence token, so decoding
can only stop at a complete ID and every finished path names exactly one item.

The trie lives in flat arrays, built level by level with vectorised sorts (no Python object
per node, so a million-item catalogue fits in a few hundred MB): nodes are numbered level by
level, each level's in (parent, token) order, so every node's children are a contiguous slice
and the edge keys ``parent * base + token`` come out sorted. One decoding step then handles all
beams with a few tensor ops instead of a Python loop per beam (the per-beam loop was what made
the constraint cost +51% at history 10, benchmarks/results/speed.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

import numpy as np
import torch


class IdTrie:
    ROOT = 0
    DEAD = -1  # a path that left the trie (only unconstrained tokens can lead there)

    def __init__(self, token_sequences: Sequence[Sequence[int]], eos_token_id: int):
        self.eos_token_id = eos_token_id
        lengths = np.fromiter((len(t) for t in token_sequences), dtype=np.int64, count=len(token_sequences))
        flat = np.fromiter(itertools.chain.from_iterable(token_sequences), dtype=np.int64, count=int(lengths.sum()))
        self.max_depth = int(lengths.max()) + 1 if len(lengths) else 0
        self._base = max(int(flat.max()) if len(flat) else 0, eos_token_id) + 1
        parents, tokens, items_below, leaf_of_item = _levels(lengths, flat, eos_token_id, self._base)
        _check_paths(lengths, leaf_of_item)
        num_nodes = len(parents) + 1
        counts = np.bincount(parents, minlength=num_nodes)
        leaf_item = np.full(num_nodes, -1, dtype=np.int64)
        leaf_item[leaf_of_item] = np.arange(len(leaf_of_item))
        self._num_items = len(leaf_of_item)
        self._tables = {
            name: torch.from_numpy(array) for name, array in {
                "parent": np.concatenate([[-1], parents]),  # node -> its parent (root: -1)
                "items_below": items_below,  # items whose path passes a node
                "child_count": counts,
                "child_start": np.cumsum(counts) - counts,  # a node's children are edges start..start+count-1
                "edge_token": tokens,  # edge e leads to node e + 1
                "edge_key": parents * self._base + tokens,  # sorted, for searchsorted
                "leaf_item": leaf_item,
                "leaf_of_item": leaf_of_item,
            }.items()
        }
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _on(self, device: torch.device) -> dict[str, torch.Tensor]:
        if device not in self._on_device:
            self._on_device[device] = {k: v.to(device) for k, v in self._tables.items()}
        return self._on_device[device]

    def __len__(self) -> int:
        return self._num_items

    @property
    def num_nodes(self) -> int:
        return len(self._tables["parent"])

    def nbytes(self) -> int:
        """Memory of the trie's arrays (one device's copy)."""
        return sum(t.numel() * t.element_size() for t in self._tables.values())

    def allowed_tokens(self, node: int) -> torch.Tensor:
        start, count = int(self._tables["child_start"][node]), int(self._tables["child_count"][node])
        return self._tables["edge_token"][start : start + count]

    def step(self, node: int, token: int) -> int:
        """Child of ``node`` along ``token``; -1 when the token leaves the trie (one lookup: no tensors)."""
        keys = self._tables["edge_key"].numpy()  # shares memory with the tensor
        if node < 0 or not 0 <= token < self._base:
            return self.DEAD
        key = node * self._base + token
        where = int(np.searchsorted(keys, key))
        return where + 1 if where < len(keys) and keys[where] == key else self.DEAD

    def walk(self, tokens: Sequence[int], node: int = ROOT) -> int:
        for token in tokens:
            node = self.step(node, token)
        return node

    # -- batched: one call per decoding step, nodes as a (N,) long tensor -----------------

    def blocked_nodes(self, exclude: Sequence[set[int]], device: torch.device | str = "cpu") -> torch.Tensor:
        """The nodes every item below which is excluded for prompt ``p``, as sorted keys ``p * num_nodes + node``.

        Decoding never steps into a blocked node, so no beam is spent on the path of an
        excluded item: forbidding only the final eos would let seen items take beam slots
        until their last token and then drop them, returning fewer than ``k`` items. Only the
        nodes on excluded items' paths are listed (a dense prompts x nodes table would not fit
        for a large catalogue).
        """
        t = self._on(torch.device(device))
        pairs = [(prompt, item) for prompt, items in enumerate(exclude) for item in items]
        if not pairs:
            return torch.zeros(0, dtype=torch.long, device=device)
        prompts, nodes = torch.tensor(pairs, dtype=torch.long, device=device).unbind(1)
        nodes = t["leaf_of_item"][nodes]
        keys = []
        for _ in range(self.max_depth):  # up every path, leaf to the root's child
            below_root = nodes > self.ROOT
            if not bool(below_root.any()):
                break
            prompts, nodes = prompts[below_root], nodes[below_root]
            keys.append(prompts * self.num_nodes + nodes)
            nodes = t["parent"][nodes]
        keys, excluded_below = torch.cat(keys).unique(return_counts=True)  # sorted
        return keys[excluded_below == t["items_below"][keys % self.num_nodes]]

    def is_blocked(self, blocked: torch.Tensor, prompts: torch.Tensor, nodes: torch.Tensor) -> torch.Tensor:
        """Whether each (prompt, node) is in ``blocked`` (:meth:`blocked_nodes`)."""
        keys = prompts * self.num_nodes + nodes
        where = torch.searchsorted(blocked, keys).clamp(max=max(len(blocked) - 1, 0))
        return (blocked[where] == keys) if len(blocked) else torch.zeros_like(keys, dtype=torch.bool)

    def allowed_mask(
        self,
        nodes: torch.Tensor | Sequence[int],
        vocab_size: int,
        blocked: torch.Tensor | None = None,
        prompt_of_row: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Boolean mask ``(N, vocab_size)``: True where a token keeps a path valid.

        Finished (leaf) and dead (-1) nodes allow only eos, which decoding treats as padding.
        With ``blocked`` (:meth:`blocked_nodes`) and each row's prompt, tokens leading into a
        node whose items are all excluded for that prompt are not allowed either.
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
        edges = firsts + offsets
        if blocked is not None and len(blocked):
            keep = ~self.is_blocked(blocked, prompt_of_row[rows], edges + 1)  # edge e leads to node e + 1
            rows, edges = rows[keep], edges[keep]
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, t["edge_token"][edges]] = True
        mask[counts == 0, self.eos_token_id] = True
        return mask

    def step_many(self, nodes: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
        """Child of each node along its token; -1 where the token leaves the trie."""
        t = self._on(nodes.device)
        keys = nodes.clamp(min=0) * self._base + tokens.clamp(min=0, max=self._base - 1)
        where = torch.searchsorted(t["edge_key"], keys).clamp(max=max(len(t["edge_key"]) - 1, 0))
        hit = (t["edge_key"][where] == keys) & (nodes >= 0) & (tokens >= 0) & (tokens < self._base) if len(t["edge_key"]) else keys < 0
        return torch.where(hit, where + 1, self.DEAD)

    def items_at(self, nodes: torch.Tensor) -> torch.Tensor:
        """Item whose complete path ends at each node; -1 elsewhere."""
        t = self._on(nodes.device)
        return torch.where(nodes >= 0, t["leaf_item"][nodes.clamp(min=0)], -1)


def _levels(lengths: np.ndarray, flat: np.ndarray, eos: int, base: int) -> tuple[np.ndarray, ...]:
    """Edges level by level: (parent, token) of nodes 1.., items below each node, each item's leaf.

    At depth d every item still on its path (ID tokens, then eos) moves to the child along its
    d-th token; the distinct (node, token) pairs of a level, sorted, are that level's new nodes.
    """
    offsets = np.cumsum(lengths) - lengths
    node = np.zeros(len(lengths), dtype=np.int64)
    active = np.arange(len(lengths))
    parents, tokens, below = [], [], [np.array([len(lengths)], dtype=np.int64)]
    next_node = 1
    for depth in range(int(lengths.max()) + 1 if len(lengths) else 0):
        active = active[lengths[active] >= depth]  # still on its path: tokens 0..len-1, then eos at depth len
        ends = lengths[active] == depth
        token = np.where(ends, eos, flat[np.minimum(offsets[active] + depth, max(len(flat) - 1, 0))] if len(flat) else eos)
        keys, child, count = np.unique(node[active] * base + token, return_inverse=True, return_counts=True)
        parents.append(keys // base)
        tokens.append(keys % base)
        below.append(count)
        node[active] = next_node + child
        next_node += len(keys)
        active = active[~ends]
    empty = np.zeros(0, dtype=np.int64)
    return (np.concatenate(parents) if parents else empty, np.concatenate(tokens) if tokens else empty,
            np.concatenate(below), node)


def _check_paths(lengths: np.ndarray, leaf_of_item: np.ndarray) -> None:
    """Every ID non-empty and every path its own; the error names the first offending item."""
    empty = np.flatnonzero(lengths == 0)
    _, first, inverse = np.unique(leaf_of_item, return_index=True, return_inverse=True)
    repeats = np.flatnonzero(first[inverse] != np.arange(len(leaf_of_item)))
    if len(empty) and (not len(repeats) or empty[0] < repeats[0]):
        raise ValueError(f"item {int(empty[0])} has an empty ID; every item needs at least one token")
    if len(repeats):
        item = int(repeats[0])
        raise ValueError(f"items {int(first[inverse[item]])} and {item} share the same token sequence")
