"""Where the benchmark scripts write their results."""

from pathlib import Path

from benchmarks.common import output_path


def test_an_out_name_with_dots_keeps_its_whole_name():
    out = Path("benchmarks/results/quality-beauty-learned-items-2.5ep-seed0")
    assert output_path(out, ".json") == Path("benchmarks/results/quality-beauty-learned-items-2.5ep-seed0.json")
    assert output_path(Path("results/speed"), ".md") == Path("results/speed.md")

