"""Concurrent runs: one writer per project (the flows' lock), released when its holder dies."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from idgenrec.locking import ProjectBusyError, lock_path, project_lock

pytestmark = pytest.mark.unit


def test_second_holder_is_refused_with_who_holds_it(tmp_path):
    with project_lock(tmp_path, "a retraining flow"):
        with pytest.raises(ProjectBusyError, match=r"a retraining flow \(pid \d+\) is running .* an add-items flow not started"):
            with project_lock(tmp_path, "an add-items flow"):
                pass
    with project_lock(tmp_path, "an add-items flow"):  # free again once released
        pass


def test_lock_of_a_killed_holder_is_free_at_once(tmp_path):
    code = f"from idgenrec.locking import project_lock; import time\nwith project_lock({str(tmp_path)!r}, 'x'):\n    print('held', flush=True); time.sleep(60)"
    holder = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "held"
    with pytest.raises(ProjectBusyError):
        with project_lock(tmp_path, "y"):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    start = time.monotonic()
    with project_lock(tmp_path, "y", wait_s=5):
        assert time.monotonic() - start < 1
    assert lock_path(tmp_path).name == ".idgenrec.lock"
