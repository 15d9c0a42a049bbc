"""Where the benchmark scripts write their results."""

from pathlib import Path

from benchmarks.common import output_path


def test_an_out_name_with_dots_keeps_its_whole_name():
    out = Path("benchmarks/results/quality-beauty-learned-items-2.5ep-seed0")
    assert output_path(out, ".json") == Path("benchmarks/results/quality-beauty-learned-items-2.5ep-seed0.json")
    assert output_path(Path("results/speed"), ".md") == Path("results/speed.md")



def test_a_run_on_another_dataset_is_named_by_what_it_changed():
    """Runs on a dataset params.yaml does not name keep the default's name unless their first recommender
    phase or their IDs' warm-up length differ; those differences name them, so seeds of two setups never merge."""
    import copy

    import yaml

    from benchmarks.report import Run, other_dataset_name

    reference = yaml.safe_load(Path("params.yaml").read_text())
    longer = copy.deepcopy(reference)
    longer["training"]["schedule"][0]["epochs"] = 4
    wordier = copy.deepcopy(longer)
    wordier["warmup"]["keyword_words"] = 8

    def name(params):
        return other_dataset_name(Run("idgenrec-learned", 0, {}, "f.json", "cmd", params), reference)

    assert name(copy.deepcopy(reference)) == "idgenrec-learned"
    assert name(longer) == "idgenrec-learned-4ep"
    assert name(wordier) == "idgenrec-learned-4ep-8words"


def test_a_zero_shot_step_records_the_threads_it_ran_with(tmp_path):
    """A report assembled later (--report-only) describes the steps' setting, not its own process's."""
    import json

    import torch

    from benchmarks.zero_shot import cached, threads

    result = cached(tmp_path / "step.json", lambda: {"metrics": {}})
    assert result["threads"] == torch.get_num_threads()
    assert json.loads((tmp_path / "step.json").read_text())["threads"] == torch.get_num_threads()
    assert threads({"zero-shot": {"threads": 1}, "popularity": {"threads": 3}}) == "1/3"
