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
        paths: list[list[int]] = []  # nodes below the root on each item's path, leaf last
        for item, tokens in enumerate(token_sequences):
            if not tokens:
                raise ValueError(f"item {item} has an empty ID; every item needs at least one token")
            node = self.ROOT
            path = []
            for token in [*tokens, eos_token_id]:
                nxt = children[node].get(token)
                if nxt is None:
                    nxt = len(children)
                    children[node][token] = nxt
                    children.append({})
                node = nxt
                path.append(node)
            paths.append(path)
            if node in item_at:
                raise ValueError(f"items {item_at[node]} and {item} share the same token sequence")
            item_at[node] = item
        self._num_items = len(item_at)
        self.max_depth = max((len(t) + 1 for t in token_sequences), default=0)
        self._freeze(children, item_at, paths)
        self._on_device: dict[torch.device, dict[str, torch.Tensor]] = {}

    def _freeze(self, children: list[dict[int, int]], item_at: dict[int, int], paths: list[list[int]]) -> None:
        edges = sorted((node, token, child) for node, kids in enumerate(children) for token, child in kids.items())
        nodes = torch.tensor([e[0] for e in edges], dtype=torch.long)
        tokens = torch.tensor([e[1] for e in edges], dtype=torch.long)
        self._base = int(tokens.max()) + 1 if edges else 1
        counts = torch.bincount(nodes, minlength=len(children)) if edges else torch.zeros(len(children), dtype=torch.long)
        leaf_item = torch.full((len(children),), -1, dtype=torch.long)
        for node, item in item_at.items():
            leaf_item[node] = item
        item_path = torch.full((len(paths), self.max_depth), -1, dtype=torch.long)
        for item, path in enumerate(paths):
            item_path[item, : len(path)] = torch.tensor(path)
        on_paths = item_path[item_path >= 0]
        self._tables = {
            "item_path": item_path,  # (items, max_depth) nodes below the root, -1 padded
            "items_below": torch.bincount(on_paths, minlength=len(children)),  # items whose path passes a node
            "child_count": counts,
            "child_start": torch.cumsum(counts, 0) - counts,
            "edge_token": tokens,  # edges sorted by (node, token): a node's children are contiguous
            "edge_key": nodes * self._base + tokens,  # sorted, for searchsorted
            "edge_child": torch.tensor([e[2] for e in edges], dtype=torch.long),
            "leaf_item": leaf_item,
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

    def blocked_nodes(self, exclude: Sequence[set[int]], device: torch.device | str = "cpu") -> torch.Tensor:
        """``(P, num_nodes)`` bool: True where every item below a node is excluded for prompt ``p``.

        Decoding never steps into a blocked node, so no beam is spent on the path of an
        excluded item: forbidding only the final eos would let seen items take beam slots
        until their last token and then drop them, returning fewer than ``k`` items.
        """
        t = self._on(torch.device(device))
        pairs = [(prompt, item) for prompt, items in enumerate(exclude) for item in items]
        excluded_below = torch.zeros(len(exclude), len(t["items_below"]), dtype=torch.long, device=device)
        if pairs:
            prompts, items = torch.tensor(pairs, dtype=torch.long, device=device).unbind(1)
            paths = t["item_path"][items]  # (E, D)
            on_path = paths >= 0
            rows = prompts[:, None].expand_as(paths)[on_path]
            excluded_below.index_put_((rows, paths[on_path]), torch.ones_like(rows), accumulate=True)
        return (excluded_below == t["items_below"]) & (t["items_below"] > 0)

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
        if blocked is not None:
            keep = ~blocked[prompt_of_row[rows], t["edge_child"][edges]]
            rows, edges = rows[keep], edges[keep]
        mask = torch.zeros(len(nodes), vocab_size, dtype=torch.bool, device=nodes.device)
        mask[rows, t["edge_token"][edges]] = True
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
