"""The ID trie and the unique-ID fallbacks at catalogue scale: flat arrays built level by level
give the lookups of the paths themselves, exclusions stay sparse, costs grow linearly."""

from __future__ import annotations

import random

import pytest
import torch

from idgenrec.ids.trie import IdTrie

pytestmark = pytest.mark.unit

EOS, VOCAB = 2, 30


def _random_ids(rng: random.Random, count: int) -> list[tuple[int, ...]]:
    """Distinct token sequences (prefixes of each other allowed: "a b" and "a b c" are both IDs)."""
    ids = {tuple(rng.randrange(3, VOCAB) for _ in range(rng.randint(1, 5))) for _ in range(count)}
    return sorted(ids, key=lambda _: rng.random())


def _prefixes(sequences):
    return {(*s, EOS)[:i] for s in sequences for i in range(len(s) + 2)}


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_lookups_are_those_of_the_paths(seed):
    rng = random.Random(seed)
    sequences = _random_ids(rng, 300)
    trie = IdTrie(sequences, EOS)
    assert len(trie) == len(sequences)
    paths = [(*s, EOS) for s in sequences]
    prefixes = sorted(_prefixes(sequences), key=len)
    nodes = torch.tensor([trie.walk(p) for p in prefixes])
    assert len(set(nodes.tolist())) == len(prefixes) == trie.num_nodes  # one node per distinct prefix, none dead
    mask = trie.allowed_mask(nodes, VOCAB)
    for row, prefix in enumerate(prefixes):
        following = {p[len(prefix)] for p in paths if p[: len(prefix)] == prefix and len(p) > len(prefix)}
        assert set(mask[row].nonzero().flatten().tolist()) == (following or {EOS}), prefix
    items = trie.items_at(nodes).tolist()
    assert [i for i in items if i >= 0] == [paths.index(p) for p in prefixes if p in paths]
    tokens = torch.tensor([rng.randrange(-1, VOCAB + 3) for _ in prefixes])
    stepped = trie.step_many(nodes, tokens).tolist()
    for prefix, token, child in zip(prefixes, tokens.tolist(), stepped):
        assert child == (trie.walk((*prefix, token)) if (*prefix, token) in _prefixes(sequences) else IdTrie.DEAD)
    assert trie.step_many(torch.tensor([IdTrie.DEAD]), torch.tensor([3])).tolist() == [IdTrie.DEAD]


def test_excluded_items_block_exactly_the_nodes_with_nothing_else_below():
    rng = random.Random(3)
    sequences = _random_ids(rng, 200)
    trie = IdTrie(sequences, EOS)
    paths = [(*s, EOS) for s in sequences]
    exclude = [set(rng.sample(range(len(sequences)), k)) for k in (0, 5, 60, len(sequences))]
    blocked = trie.blocked_nodes(exclude)
    prefixes = sorted(_prefixes(sequences) - {()}, key=len)
    for prompt, excluded in enumerate(exclude):
        got = trie.is_blocked(blocked, torch.full((len(prefixes),), prompt), torch.tensor([trie.walk(p) for p in prefixes]))
        for prefix, is_blocked in zip(prefixes, got.tolist()):
            below = {item for item, path in enumerate(paths) if path[: len(prefix)] == prefix}
            assert is_blocked == (below <= excluded), (prompt, prefix)
    # decoding never steps into a blocked node: at the root, a first token all of whose items are excluded
    roots = torch.zeros(len(exclude), dtype=torch.long)
    mask = trie.allowed_mask(roots, VOCAB, blocked, torch.arange(len(exclude)))
    for prompt, excluded in enumerate(exclude):
        open_first = {paths[i][0] for i in range(len(paths)) if i not in excluded}
        assert set(mask[prompt].nonzero().flatten().tolist()) == open_first  # everything excluded: nothing
    assert len(blocked) < len(exclude) * trie.num_nodes  # sparse: only nodes on excluded paths are listed


def test_errors_name_the_first_bad_item():
    with pytest.raises(ValueError, match="item 2 has an empty ID"):
        IdTrie([[5], [6], [], [5]], EOS)
    with pytest.raises(ValueError, match="items 0 and 3 share the same token sequence"):
        IdTrie([[5, 7], [6], [5], [5, 7], []], EOS)


def test_memory_is_a_few_arrays_per_node():
    rng = random.Random(4)
    sequences = [tuple(rng.randrange(3, 5000) for _ in range(rng.randint(2, 8))) for _ in range(20_000)]
    sequences = list(dict.fromkeys(sequences))
    trie = IdTrie(sequences, EOS)
    assert trie.num_nodes <= sum(len(s) + 1 for s in sequences) + 1
    assert trie.nbytes() <= 64 * trie.num_nodes + 8 * len(sequences)


class _CountingSet(set):
    """A set that counts membership tests: how much work finding a free ID took."""

    lookups = 0

    def __contains__(self, key) -> bool:
        type(self).lookups += 1
        return super().__contains__(key)


@pytest.fixture(scope="module")
def tokenizer():
    from idgenrec.backbone import build_tokenizer
    from idgenrec.config import BackboneConfig

    return build_tokenizer(BackboneConfig(profile="tiny", hidden_size=32), ["red mug item 0123456789"])


def test_title_counters_continue_where_the_title_left_off(tokenizer):
    from idgenrec.ids import title_ids

    titles = ["Red Mug"] * 3000 + ["red mug 5", "Red Mug"]
    ids, stats = title_ids(titles, ["" for _ in titles], tokenizer, taken={"red mug 3"})
    assert ids[:4] == ["red mug", "red mug 2", "red mug 4", "red mug 5"]  # 3 was taken already
    assert ids[-2:] == ["red mug 5 2", "red mug 3002"] and len(set(ids)) == len(ids)
    assert stats["collisions"] == len(titles) - 1


def test_fallback_counters_continue_where_the_base_left_off(tokenizer):
    from idgenrec.ids.unique import _fallback, _Progress

    count = 2500  # past the 1,000 counters of a base: then "item N", then bare numbers
    state = _Progress(ids=[None] * count, best=["red mug"] * count, taken=_CountingSet({"red mug", "item 7", "1"}))
    _CountingSet.lookups = 0
    _fallback(list(range(count)), state, tokenizer)
    expected = ([f"red mug {n}" for n in range(2, 1002)] + [f"item {n}" for n in range(2, 1002) if n != 7]
                + [str(n) for n in range(2, count)])
    assert state.ids == expected[:count] and state.stats["fallbacks"] == count
    assert _CountingSet.lookups < 6 * count
