"""The training loop's heap release hands fragmented free memory back to the OS."""

import sys

import pytest

from idgenrec.memory import _malloc_trim, release_free_heap

pytestmark = pytest.mark.unit


def _resident_bytes() -> int:
    with open("/proc/self/statm") as statm:
        return int(statm.read().split()[1]) * 4096


@pytest.mark.skipif(not sys.platform.startswith("linux") or _malloc_trim() is None, reason="needs glibc's malloc_trim")
def test_release_free_heap_returns_free_pages_below_a_live_block():
    blocks = [bytearray(64 * 1024) for _ in range(4000)]  # 256 MB of heap blocks (below glibc's mmap threshold)
    pinned = bytearray(64 * 1024)  # allocated last: the heap's top stays in use, so free() alone cannot shrink it
    del blocks
    before = _resident_bytes()
    assert release_free_heap()
    released = before - _resident_bytes()
    assert released > 128 * 2**20, f"only {released / 2**20:.0f} MB went back to the OS"
    assert len(pinned) == 64 * 1024
