"""SASRec baseline: training windows, learning behaviour, masking, persistence, repeatability."""

import copy
import json

import numpy as np
import pytest
import torch
from typer.testing import CliRunner

from idgenrec.config import SASRecConfig
from idgenrec.data.dataset import SequenceDataset
from idgenrec.evaluation import evaluate
from idgenrec.baselines.sasrec import IGNORE, SASRecNetwork, SASRecRecommender, dropout, training_windows

NUM_ITEMS = 20

# Small and quick to learn: dropout low, one block, a few hundred steps at most.
TINY = SASRecConfig(
    max_history=8,
    hidden_size=32,
    num_layers=1,
    num_heads=2,
    inner_size=64,
    hidden_dropout=0.1,
    attention_dropout=0.1,
    learning_rate=1e-2,
    batch_size=16,
    window_stride=4,
    max_epochs=10,
    patience=10,
    device="cpu",
    seed=7,
)

pytestmark = pytest.mark.model


def planted_dataset(users: int = 60, length: int = 12, seed: int = 0) -> SequenceDataset:
    """Item i is always followed by item i+1 (mod NUM_ITEMS); users start at random items."""
    rng = np.random.default_rng(seed)
    sequences = [[(int(start) + step) % NUM_ITEMS for step in range(length)] for start in rng.integers(NUM_ITEMS, size=users)]
    items = [f"i{n}" for n in range(NUM_ITEMS)]
    return SequenceDataset(
        name="planted",
        item_ids=items,
        item_titles=items,
        item_texts=items,
        user_ids=[f"u{n}" for n in range(users)],
        sequences=sequences,
    )


@pytest.fixture(scope="module")
def dataset() -> SequenceDataset:
    return planted_dataset()


@pytest.fixture(scope="module")
def trained(dataset) -> SASRecRecommender:
    torch.set_num_threads(1)
    return SASRecRecommender.fit(dataset, TINY, progress=False)


@pytest.mark.parametrize("stride", [1, 3, 8])
@pytest.mark.parametrize("random_offsets", [False, True])
def test_windows_predict_every_target_once_with_its_true_context(stride, random_offsets):
    max_history = 8
    rng = np.random.default_rng(1)
    offsets = np.random.default_rng(2) if random_offsets else None
    for length in (2, 5, 9, 17, 30):
        sequence = [int(i) for i in rng.permutation(40)[:length]]  # distinct items: the last one read names j
        inputs, targets = training_windows([sequence], max_history, stride, offsets)
        predicted = []
        for window_inputs, window_targets in zip(inputs.tolist(), targets.tolist()):
            for position, target in enumerate(window_targets):
                if target == IGNORE:
                    continue
                context = [token - 1 for token in window_inputs[: position + 1]]
                j = sequence.index(context[-1]) + 1
                assert target == sequence[j] and context == sequence[j - len(context) : j]
                assert len(context) >= min(j, max_history - stride + 1)
                predicted.append(j)
        assert sorted(predicted) == list(range(1, length))


def test_windows_need_a_sequence_with_a_target():
    with pytest.raises(ValueError, match="two or more items"):
        training_windows([[3], []], max_history=8, stride=4)


def test_loss_falls(trained):
    losses = [epoch.train_loss for epoch in trained.log.epochs]
    assert losses[-1] < 0.5 * losses[0]


def test_planted_next_item_is_ranked_first(trained, dataset):
    histories, targets = dataset.split_examples("test")
    top = trained.recommend(histories, k=1)
    hits = sum(ranked[0] == target for ranked, target in zip(top, targets))
    assert hits / len(targets) >= 0.9
    assert evaluate(trained, dataset, "valid", ks=(1,))["recall@1"] >= 0.9


def test_exclude_seen_never_recommends_history_items(trained):
    histories = [[0, 1, 2], [5], [], list(range(NUM_ITEMS - 3))]
    for history, ranked in zip(histories, trained.recommend(histories, k=10, exclude_seen=True)):
        assert not set(history) & set(ranked)
        assert len(ranked) == min(10, NUM_ITEMS - len(set(history)))
    # without exclusion the planted model's top pick after [0, 1, 2] is 3; excluding 3 moves 4 up
    assert trained.recommend([[0, 1, 2]], k=1)[0] == [3]
    assert trained.recommend([[0, 1, 2, 3]], k=1, exclude_seen=True)[0] == [4]


def test_out_of_catalogue_history_is_an_error(trained):
    with pytest.raises(ValueError, match="outside 0..19"):
        trained.recommend([[0, NUM_ITEMS]], k=5)


def test_save_load_round_trip(trained, dataset, tmp_path):
    trained.save(tmp_path / "model")
    loaded = SASRecRecommender.load(tmp_path / "model")
    histories, _ = dataset.split_examples("test")
    assert loaded.recommend(histories, k=10) == trained.recommend(histories, k=10)
    assert torch.equal(loaded.score(histories[:5]), trained.score(histories[:5]))
    assert loaded.config == trained.config and loaded.num_items == NUM_ITEMS
    assert loaded.log == trained.log  # seconds included, read back from timings.json


def test_retraining_to_the_same_weights_writes_the_same_config(trained, tmp_path):
    """Seconds go to timings.json (out of the folder's DVC hash), so only they differ between two runs."""
    trained.save(tmp_path / "first")
    slower = copy.deepcopy(trained)
    slower.log.seconds += 10.0
    for epoch in slower.log.epochs:
        epoch.seconds *= 2
    slower.save(tmp_path / "second")
    for name in ("config.json", "weights.safetensors"):
        assert (tmp_path / "first" / name).read_bytes() == (tmp_path / "second" / name).read_bytes()
    assert SASRecRecommender.load(tmp_path / "second").log == slower.log
    (tmp_path / "second" / "timings.json").unlink()  # `dvc checkout` restores the folder without it
    assert SASRecRecommender.load(tmp_path / "second").log.best_epoch == slower.log.best_epoch


def test_load_names_the_corrupt_file(trained, tmp_path):
    trained.save(tmp_path / "model")
    weights = tmp_path / "model" / "weights.safetensors"
    weights.write_bytes(weights.read_bytes()[:100])
    with pytest.raises(ValueError, match="weights.safetensors: corrupt"):
        SASRecRecommender.load(tmp_path / "model")
    trained.save(tmp_path / "model")
    (tmp_path / "model" / "config.json").write_text("{not json", encoding="utf-8")
    with pytest.raises(ValueError, match="config.json: corrupt"):
        SASRecRecommender.load(tmp_path / "model")
    with pytest.raises(FileNotFoundError, match="missing"):
        SASRecRecommender.load(tmp_path / "nowhere")


def test_same_seed_same_model_and_global_rng_untouched(dataset):
    config = TINY.model_copy(update={"max_epochs": 2})
    before = torch.get_rng_state()
    first = SASRecRecommender.fit(dataset, config, progress=False)
    assert torch.equal(torch.get_rng_state(), before)
    second = SASRecRecommender.fit(dataset, config, progress=False)
    other = SASRecRecommender.fit(dataset, config.model_copy(update={"seed": 8}), progress=False)
    assert [e.train_loss for e in first.log.epochs] == [e.train_loss for e in second.log.epochs]
    for name, tensor in first.network.state_dict().items():
        assert torch.equal(tensor, second.network.state_dict()[name])
    assert not torch.equal(first.network.item_embedding.weight, other.network.item_embedding.weight)


def test_config_rejects_heads_that_do_not_divide_width():
    with pytest.raises(ValueError, match="not divisible"):
        SASRecConfig(hidden_size=64, num_heads=3)


def test_cli_writes_metrics_and_model(dataset, tmp_path):
    from idgenrec.cli import app

    dataset.save(tmp_path / "prepared")
    tiny = TINY.model_dump(mode="json") | {"max_epochs": 2}
    (tmp_path / "params.yaml").write_text(json.dumps({"sasrec": tiny}), encoding="utf-8")
    result = CliRunner().invoke(
        app,
        [
            "baseline", "sasrec",
            "--prepared", str(tmp_path / "prepared"),
            "--output", str(tmp_path / "sasrec.json"),
            "--model-dir", str(tmp_path / "model"),
            "--params", str(tmp_path / "params.yaml"),
            "--threads", "1",
        ],
    )
    assert result.exit_code == 0, result.output
    metrics = json.loads((tmp_path / "sasrec.json").read_text())
    for split in ("valid", "test"):
        for setting in ("seen_included", "seen_excluded"):
            for metric in ("recall@5", "recall@10", "ndcg@5", "ndcg@10"):
                assert 0.0 <= metrics[f"{split}/{setting}/{metric}"] <= 1.0
    assert metrics["train/epochs"] == 2
    assert SASRecRecommender.load(tmp_path / "model").num_items == NUM_ITEMS


def test_attention_is_causal_and_matches_torch_sdpa():
    """The written-out attention equals F.scaled_dot_product_attention(is_causal=True) without dropout,
    so a position never reads a later one."""
    torch.manual_seed(0)
    network = SASRecNetwork(NUM_ITEMS, TINY.model_copy(update={"num_heads": 4})).eval()
    block = network.blocks[0]
    x = torch.randn(3, 7, TINY.hidden_size)
    q, k, v = block.qkv(x).view(3, 7, 3, 4, TINY.hidden_size // 4).permute(2, 0, 3, 1, 4)
    reference = torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=True)
    reference = block.attention_norm(x + block.attention_out(reference.transpose(1, 2).reshape(3, 7, -1)))
    expected = block.feed_forward_norm(reference + block.feed_forward(reference))
    torch.testing.assert_close(block(x), expected, rtol=1e-5, atol=1e-5)
    tokens = torch.tensor([[1, 2, 3, 4, 5]])
    changed = torch.tensor([[1, 2, 3, 9, 9]])
    torch.testing.assert_close(network(tokens)[:, :3], network(changed)[:, :3])


@pytest.mark.parametrize("p", [0.1, 0.5])
def test_dropout_keeps_each_unit_with_probability_one_minus_p_and_rescales_it(p):
    torch.manual_seed(0)
    x = torch.full((200_000,), 2.0)
    dropped = dropout(x, p, training=True)
    kept = dropped != 0
    assert abs(kept.float().mean().item() - (1 - p)) < 0.005  # ~7 standard deviations at p = 0.5
    torch.testing.assert_close(dropped[kept], torch.full_like(dropped[kept], 2.0 / (1 - p)))
    assert dropout(x, p, training=False) is x
