"""Progress that reaches the user wherever a run's output goes.

On a terminal, a tqdm bar. Where tqdm draws nothing (``dvc repro`` piped to a file, a
Prefect worker, CI), the same progress is written as a line on the ``idgenrec`` logger at
most every ``interval`` seconds, so a 20-minute training phase is not silent until it ends;
the Prefect flows attach that logger to the run's logs (``PREFECT_LOGGING_EXTRA_LOGGERS``).
Either way, a summary line is logged when the work finishes.
"""

from __future__ import annotations

import logging
import sys
import time
from collections.abc import Callable

from tqdm.auto import tqdm

LOGGER = logging.getLogger("idgenrec")


class _CurrentStderr(logging.StreamHandler):
    """Writes to whatever ``sys.stderr`` is when a line is logged (test runners swap it)."""

    stream = property(lambda self: sys.stderr, lambda self, value: None)


def configure_logging(level: int = logging.INFO) -> None:
    """Show the library's progress and summary lines on stderr (what the CLI does first); idempotent."""
    if not any(isinstance(handler, _CurrentStderr) for handler in LOGGER.handlers):
        handler = _CurrentStderr()
        handler.setFormatter(logging.Formatter("%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S"))
        LOGGER.addHandler(handler)
    LOGGER.setLevel(level)


def _duration(seconds: float) -> str:
    minutes, seconds = divmod(int(seconds), 60)
    return f"{minutes}:{seconds:02d}"


class Progress:
    """A tqdm bar that logs its state when no bar is drawn, and a summary when closed.

    ``enabled=False`` silences both (tests, nested work); ``summary=False`` drops the closing
    line where the caller logs its own; ``postfix`` values passed to :meth:`update` (e.g. the
    running loss) appear on the bar and in the log lines.
    """

    def __init__(
        self,
        total: int,
        desc: str,
        unit: str = "step",
        enabled: bool = True,
        interval: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        logger: logging.Logger = LOGGER,
        summary: bool = True,
    ):
        self.total, self.desc, self.unit = total, desc, unit
        self.bar = tqdm(total=total, desc=desc, unit=unit, leave=False, disable=None if enabled else True)
        self.enabled, self.interval, self.clock, self.logger, self.summary = enabled, interval, clock, logger, summary
        self.log_progress = enabled and self.bar.disable  # tqdm found no terminal: log lines instead
        self.done, self.postfix = 0, ""
        self.started = self.last_logged = clock()

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        self.close(finished=exc[0] is None)

    def update(self, count: int = 1, **postfix: str) -> None:
        self.done += count
        self.bar.update(count)
        if postfix:
            self.postfix = ", ".join(f"{key} {value}" for key, value in postfix.items())
            self.bar.set_postfix(postfix, refresh=False)
        now = self.clock()
        if self.log_progress and now - self.last_logged >= self.interval and self.done < self.total:
            self.last_logged = now
            self.logger.info(self._line(now))

    def _line(self, now: float) -> str:
        elapsed = now - self.started
        rate = self.done / elapsed if elapsed > 0 else 0.0
        share = f" ({self.done / self.total:.0%})" if self.total else ""
        left = f", {_duration((self.total - self.done) / rate)} left" if rate > 0 and self.done < self.total else ""
        extra = f", {self.postfix}" if self.postfix else ""
        return f"{self.desc}: {self.done}/{self.total} {self.unit}s{share}, {rate:.1f} {self.unit}s/s{left}{extra}"

    def close(self, finished: bool = True) -> None:
        self.bar.close()
        if self.enabled and self.summary and finished:
            now = self.clock()
            extra = f", {self.postfix}" if self.postfix else ""
            self.logger.info(f"{self.desc}: done, {self.done} {self.unit}s in {_duration(now - self.started)}{extra}")
