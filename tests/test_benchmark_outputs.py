"""Where the benchmark scripts write their results."""

from pathlib import Path

from benchmarks.common import output_path


def test_an_out_name_with_dots_keeps_its_whole_name():
    out = Path("benchmarks/results/quality-beauty-learned-items-2.5ep-seed0")
    assert output_path(out, ".json") == Path("benchmarks/results/quality-beauty-learned-items-2.5ep-seed0.json")
    assert output_path(Path("results/speed"), ".md") == Path("results/speed.md")


def test_runs_from_before_the_similarity_weights_count_only_where_validation_kept_zero():
    """The report counts a run trained before training.similarity_weights as the default's only where every
    model the weight was chosen for kept 0 (and says so with the run); one choice above 0 excludes them."""
    import copy

    from benchmarks.report import Run, settings_match, similarity_kept_zero

    reference = {"training": {"ranking": "items", "similarity_weights": [0.0, 1.0, 3.0]}}
    old = {"training": {"ranking": "items"}}

    def run(params, weight=None):
        return Run("idgenrec-title", 1, {}, "f.json", "cmd", copy.deepcopy(params),
                   {} if weight is None else {"similarity_weight": weight})

    chose_zero = [run(reference, 0.0), run(reference, 0.0)]
    assert settings_match(chose_zero[0], reference) is True
    before = run(old)
    assert settings_match(before, reference) is False  # on its own it differs from the default
    reason = similarity_kept_zero([*chose_zero, before])
    assert reason and settings_match(before, reference, reason) is True and before.setting["counted_by"] == reason
    assert similarity_kept_zero([run(reference, 0.0), run(reference, 10.0), run(old)]) is None
    assert similarity_kept_zero([run(old)]) is None  # no evidence: not counted
