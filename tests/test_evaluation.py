import math

import pytest

from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import catalogue_coverage, evaluate, ranking_metrics, seen_shares, target_ranks
from idgenrec.baselines.popularity import PopularityRecommender

pytestmark = pytest.mark.unit


def test_metrics_match_hand_computed_values():
    ranked = [[3, 1, 2], [5, 6, 4], [9, 8, 7]]
    targets = [1, 4, 0]  # rank 1, rank 2, absent
    ranks = target_ranks(ranked, targets)
    assert ranks == [1, 2, None]
    metrics = ranking_metrics(ranks, ks=[1, 2, 3])
    assert metrics["recall@1"] == 0.0
    assert metrics["recall@2"] == pytest.approx(1 / 3)
    assert metrics["recall@3"] == pytest.approx(2 / 3)
    assert metrics["ndcg@2"] == pytest.approx((1 / math.log2(3)) / 3)
    assert metrics["ndcg@3"] == pytest.approx((1 / math.log2(3) + 1 / math.log2(4)) / 3)


def test_first_place_scores_one():
    assert ranking_metrics([0, 0], ks=[5]) == {"recall@5": 1.0, "ndcg@5": 1.0}


def test_seen_share_counts_already_seen_items_in_each_top_k():
    ranked = [[3, 1, 2], [5, 6, 4]]
    histories = [[1, 2, 9], [7]]
    # user 1: top-1 [3] has none seen, top-3 has 1 and 2; user 2: nothing seen
    assert seen_shares(ranked, histories, [1, 3]) == pytest.approx({"seen@1": 0.0, "seen@3": (2 / 3) / 2})
    with pytest.raises(ValueError, match="2 ranked lists for 1 histories"):
        seen_shares(ranked, [[1]], [1])


def test_coverage_counts_distinct_items_over_all_top_k_lists():
    ranked = [[3, 1, 2], [3, 1, 4], [3, 5]]  # the last list is shorter than k
    # top-1s: {3}; top-3s: {1, 2, 3, 4, 5}; catalogue of 10 items
    assert catalogue_coverage(ranked, 10, [1, 3]) == pytest.approx({"coverage@1": 0.1, "coverage@3": 0.5})
    with pytest.raises(ValueError, match="catalogue of 0 items"):
        catalogue_coverage(ranked, 0, [1])


def test_mismatched_lengths_are_an_error():
    with pytest.raises(ValueError, match="2 ranked lists for 1 targets"):
        target_ranks([[1], [2]], [1])


def _toy_dataset() -> SequenceDataset:
    # item 0 is the most popular; user 2's test item is 0, which they have already seen.
    sequences = [[0, 1, 2, 3], [0, 1, 3, 2], [0, 2, 1, 0]]
    return SequenceDataset(
        name="toy",
        item_ids=["a", "b", "c", "d"],
        item_titles=["A", "B", "C", "D"],
        item_texts=["A", "B", "C", "D"],
        user_ids=["u1", "u2", "u3"],
        sequences=sequences,
    )


def test_popularity_counts_only_training_items_and_excludes_seen_on_request():
    dataset = _toy_dataset()
    model = PopularityRecommender.fit(dataset)
    # training rows: [0,1], [0,1], [0,2] -> counts 0:3, 1:2, 2:1, 3:0 (validation items not counted)
    assert model.counts.tolist() == [3, 2, 1, 0]
    assert model.recommend([[]], k=4) == [[0, 1, 2, 3]]
    assert model.recommend([[0, 2]], k=4, exclude_seen=True) == [[1, 3]]
    metrics = evaluate(model, dataset, "test", ks=[1], exclude_seen=False)
    # targets 3, 2, 0: only user 3's target (0) is at rank 0
    assert metrics["recall@1"] == pytest.approx(1 / 3)
    # everyone's top-1 is item 0, which every user has seen; excluded, no seen share is reported
    assert metrics["seen@1"] == 1.0
    # popularity gives everyone the same top-1: one item of four
    assert metrics["coverage@1"] == 0.25
    excluded = evaluate(model, dataset, "test", ks=[1], exclude_seen=True)
    assert "seen@1" not in excluded
    # excluded, everyone has seen item 0: users 1 and 3 (seen 0, 1, 2) get item 3, user 2 (seen 0, 1, 3) item 2
    assert excluded["coverage@1"] == 0.5


def test_a_user_sample_scores_the_same_fixed_users_for_every_model():
    from idgenrec.evaluation import evaluate_protocol

    dataset = _toy_dataset()
    sample = dataset.sample_users(2, seed=0)
    assert sample.num_users == 2 and sample.item_ids == dataset.item_ids
    assert sample.user_ids == dataset.sample_users(2, seed=0).user_ids  # fixed, not redrawn
    assert set(sample.user_ids) < set(dataset.user_ids)
    assert dataset.sample_users(None, seed=0) is dataset and dataset.sample_users(5, seed=0) is dataset
    model = PopularityRecommender.fit(dataset)
    sampled = evaluate_protocol(model, dataset, [1, 2], sample_users=2)
    assert sampled == evaluate_protocol(model, sample, [1, 2])
    assert sampled != evaluate_protocol(model, dataset, [1, 2])
