"""Progress reaches the user without a terminal: log lines at an interval, then a summary."""

from __future__ import annotations

import io
import logging
import sys

import pytest

from idgenrec.progress import LOGGER, Progress, configure_logging

pytestmark = pytest.mark.unit


class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Lines(logging.Handler):
    """A logger of its own, so other tests' handlers on ``idgenrec`` (Prefect's) do not matter."""

    def __init__(self):
        super().__init__(logging.INFO)
        self.lines: list[str] = []
        self.logger = logging.getLogger(f"test-progress-{id(self)}")
        self.logger.setLevel(logging.INFO)
        self.logger.propagate = False
        self.logger.addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.append(record.getMessage())


def run(progress: Progress, clock: FakeClock, steps: int, seconds_per_step: float) -> None:
    for step in range(steps):
        clock.now += seconds_per_step
        progress.update(1, loss=f"{1 / (step + 1):.2f}")


def test_without_a_terminal_progress_is_logged_at_the_interval_then_summarised(monkeypatch):
    monkeypatch.setattr(sys, "stderr", io.StringIO())  # no terminal, as under dvc repro > log or a Prefect worker
    clock, log = FakeClock(), Lines()
    with Progress(10, "recommender epoch 1/2", interval=5.0, clock=clock, logger=log.logger) as progress:
        assert progress.log_progress  # tqdm draws no bar there
        run(progress, clock, 10, 2.0)
    lines = log.lines
    # every 5 s of 20: after steps 3, 6, 9 (never at 100%, the summary says that), then the summary
    assert lines[:3] == [
        "recommender epoch 1/2: 3/10 steps (30%), 0.5 steps/s, 0:14 left, loss 0.33",
        "recommender epoch 1/2: 6/10 steps (60%), 0.5 steps/s, 0:08 left, loss 0.17",
        "recommender epoch 1/2: 9/10 steps (90%), 0.5 steps/s, 0:02 left, loss 0.11",
    ]
    assert lines[3:] == ["recommender epoch 1/2: done, 10 steps in 0:20, loss 0.10"]


def test_disabled_progress_logs_nothing_and_a_failed_run_gets_no_summary():
    clock, log = FakeClock(), Lines()
    with Progress(4, "quiet", interval=0.0, clock=clock, enabled=False, logger=log.logger) as progress:
        run(progress, clock, 4, 1.0)
    with pytest.raises(RuntimeError):
        with Progress(4, "fails", interval=100.0, clock=clock, logger=log.logger) as progress:
            run(progress, clock, 2, 1.0)
            raise RuntimeError("boom")
    with Progress(2, "no summary", interval=100.0, clock=clock, summary=False, logger=log.logger) as progress:
        run(progress, clock, 2, 1.0)
    assert log.lines == []


def test_configure_logging_writes_to_the_current_stderr_once(capsys):
    configure_logging()
    configure_logging()  # idempotent: one handler, one line per record
    try:
        LOGGER.info("hello from the library")
        assert capsys.readouterr().err.count("hello from the library") == 1
        configure_logging(logging.WARNING)  # --quiet
        LOGGER.info("not shown")
        assert "not shown" not in capsys.readouterr().err
    finally:
        for handler in [h for h in LOGGER.handlers if type(h).__name__ == "_CurrentStderr"]:
            LOGGER.removeHandler(handler)
        LOGGER.setLevel(logging.NOTSET)
