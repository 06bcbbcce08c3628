"""consumer.malloc: glibc's mmap threshold pinned at start (RSS stays flat; see the module docstring
and bench/memory_trace.py). The RSS effect itself is a bench figure (bench/memory.py), not a test."""

from __future__ import annotations

import ctypes.util
import platform

import pytest

from consumer.malloc import pin_mmap_threshold


@pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="mallopt is glibc's"
)
def test_pins_on_glibc() -> None:
    assert ctypes.util.find_library("c") is not None
    assert pin_mmap_threshold() is True


def test_an_operator_setting_wins(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("MALLOC_MMAP_THRESHOLD_", "65536")
    assert pin_mmap_threshold() is False


def test_no_c_library_is_not_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_", raising=False)
    monkeypatch.setattr(ctypes.util, "find_library", lambda name: None)
    assert pin_mmap_threshold() is False
