"""Sleep awareness (loop.daemon.awake): the awake clock, the --hours budget, caffeinate."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import pytest

from loop.daemon import awake


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux clock choice")
def test_on_linux_the_awake_clock_is_clock_monotonic_which_excludes_suspend():
    clock = awake.awake_clock()
    before = time.clock_gettime(time.CLOCK_MONOTONIC)
    value = clock()
    assert before <= value <= time.clock_gettime(time.CLOCK_MONOTONIC)


def test_the_budget_counts_only_what_its_clock_counts():
    now = [100.0]
    budget = awake.AwakeBudget(1.0, clock=lambda: now[0])
    now[0] += 3599  # a sleeping machine's clock would not have moved at all
    assert not budget.expired() and budget.used_s() == 3599
    now[0] += 1
    assert budget.expired()


def test_a_budget_must_be_positive():
    with pytest.raises(ValueError, match="hours"):
        awake.AwakeBudget(0)


@pytest.fixture
def fake_caffeinate(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A `caffeinate` on PATH that records its arguments and waits to be ended."""
    record = tmp_path / "caffeinate.args"
    script = tmp_path / "bin" / "caffeinate"
    script.parent.mkdir()
    script.write_text(f'#!/bin/sh\necho "$@" > {record}\nexec sleep 60\n')
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}{os.pathsep}{os.environ['PATH']}")
    return record


def test_no_caffeinate_off_macos(fake_caffeinate):
    assert awake.caffeinate_command(123, platform="linux") is None
    with awake.keep_awake(platform="linux") as helper:
        assert helper is None


def test_on_macos_caffeinate_holds_the_machine_awake_while_the_block_runs(fake_caffeinate):
    assert awake.caffeinate_command(123, platform="darwin")[1:] == ["-i", "-w", "123"]
    with awake.keep_awake(platform="darwin") as helper:
        assert helper is not None and helper.poll() is None
        deadline = time.monotonic() + 10
        while not fake_caffeinate.exists() and time.monotonic() < deadline:
            time.sleep(0.02)
        assert fake_caffeinate.read_text().split() == ["-i", "-w", str(os.getpid())]
    assert helper.poll() is not None  # ended with the block


def test_no_caffeinate_installed_is_not_an_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", str(tmp_path))
    with awake.keep_awake(platform="darwin") as helper:
        assert helper is None
