"""The child runner: streamed output, exit codes, timeouts and stops that leave no orphans."""

from __future__ import annotations

import os
import sys
import textwrap
from pathlib import Path

import psutil
import pytest

from loop.measure.runner import RunResult, run_command

PY = sys.executable

# The scripts below report pids with one os.write each, so lines of processes that print
# at the same moment cannot interleave.

# A process that ignores SIGTERM and reports its pid: only SIGKILL ends it.
STUBBORN = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
os.write(1, f"pid {os.getpid()}\\n".encode())
time.sleep(60)
"""

# Forks a grandchild that stays in the group; both ignore SIGTERM.
FORKS_IN_GROUP = """
import os, signal, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
if os.fork() == 0:
    os.write(1, f"pid {os.getpid()}\\n".encode())
    time.sleep(60)
    os._exit(0)
os.write(1, f"pid {os.getpid()}\\n".encode())
time.sleep(60)
"""

# A grandchild that leaves the process group (setsid) and ignores SIGTERM.
ESCAPES_GROUP = """
import os, signal, time
if os.fork() == 0:
    os.setsid()
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
    os.write(1, f"pid {os.getpid()}\\n".encode())
    time.sleep(60)
    os._exit(0)
os.write(1, f"pid {os.getpid()}\\n".encode())
time.sleep(60)
"""

# A classic daemon: double fork + setsid, the middle process exits at once, so the survivor
# is reparented to init before the runner ever sees it in the tree.
DOUBLE_FORK = """
import os, signal, sys, time
if os.fork() == 0:
    os.setsid()
    if os.fork() == 0:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        os.write(1, f"pid {os.getpid()}\\n".encode())
        time.sleep(60)
    os._exit(0)
time.sleep(60)
"""

# A grandchild that leaves the group and lets go of the output pipe, then the child exits 0:
# nothing keeps the run open, yet the grandchild would outlive it.
QUIET_ESCAPE = """
import os, time
if os.fork() == 0:
    os.setsid()
    os.write(1, f"pid {os.getpid()}\\n".encode())
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)
    os.dup2(devnull, 2)
    time.sleep(60)
    os._exit(0)
time.sleep(0.5)
"""


def _run(tmp_path: Path, code: str, **kwargs) -> tuple[RunResult, list[str]]:
    lines: list[str] = []
    kwargs.setdefault("timeout_s", 30)
    kwargs.setdefault("env", dict(os.environ))
    result = run_command(
        [PY, "-c", textwrap.dedent(code)],
        cwd=tmp_path,
        log_path=tmp_path / "logs" / "run.log",
        on_line=lines.append,
        **kwargs,
    )
    return result, lines


def _pids(lines: list[str]) -> list[int]:
    return [int(line.split()[1]) for line in lines if line.startswith("pid ")]


def _assert_all_gone(pids: list[int]) -> None:
    assert pids, "the child should have reported the pids to check"
    for pid in pids:
        try:
            process = psutil.Process(pid)
        except psutil.NoSuchProcess:
            continue
        assert process.status() == psutil.STATUS_ZOMBIE, f"pid {pid} survived"


def test_exit_code_and_output_lines_are_returned(tmp_path: Path) -> None:
    result, lines = _run(tmp_path, "print('one'); print('two')")
    assert result.exit_code == 0 and not result.timed_out and not result.stopped
    assert lines == ["one", "two"]


def test_output_is_written_to_the_log_file(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, "print('hello log')")
    assert result.log_path.read_text() == "hello log\n"


def test_log_file_is_written_while_the_child_runs(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    seen: list[str] = []
    code = "import time; print('early', flush=True); time.sleep(1); print('late')"
    run_command(
        [PY, "-c", code],
        cwd=tmp_path,
        env=dict(os.environ),
        timeout_s=30,
        log_path=log,
        on_line=lambda line: seen.append(log.read_text()) if line == "early" else None,
    )
    assert seen == ["early\n"]


def test_stderr_is_merged_into_the_output(tmp_path: Path) -> None:
    _, lines = _run(tmp_path, "import sys; print('out', flush=True); print('err', file=sys.stderr)")
    assert lines == ["out", "err"]


def test_last_line_without_newline_is_delivered(tmp_path: Path) -> None:
    _, lines = _run(tmp_path, "import sys; sys.stdout.write('a\\nno newline')")
    assert lines == ["a", "no newline"]


def test_non_zero_exit_code_is_returned(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, "raise SystemExit(3)")
    assert result.exit_code == 3 and not result.timed_out


def test_death_by_a_foreign_signal_is_a_negative_exit_code(tmp_path: Path) -> None:
    result, _ = _run(tmp_path, "import os, signal; os.kill(os.getpid(), signal.SIGKILL)")
    assert result.exit_code == -9


def test_string_command_runs_under_the_shell_in_cwd(tmp_path: Path) -> None:
    (tmp_path / "marker.txt").write_text("here\n")
    lines: list[str] = []
    result = run_command(
        "cat marker.txt && echo $((1 + 2))",
        cwd=tmp_path,
        env=dict(os.environ),
        timeout_s=30,
        log_path=tmp_path / "run.log",
        on_line=lines.append,
    )
    assert result.exit_code == 0 and lines == ["here", "3"]


def test_child_gets_exactly_the_given_environment(tmp_path: Path) -> None:
    env = {"PATH": os.environ["PATH"], "ONLY_THIS": "yes"}
    code = "import os; print(os.environ.get('ONLY_THIS'), os.environ.get('HOME'))"
    _, lines = _run(tmp_path, code, env=env)
    assert lines == ["yes None"]


def test_child_does_not_read_our_stdin(tmp_path: Path) -> None:
    _, lines = _run(tmp_path, "import sys; print(repr(sys.stdin.read()))", timeout_s=10)
    assert lines == ["''"]


def test_on_start_gets_the_child_pid(tmp_path: Path) -> None:
    started: list[int] = []
    result, lines = _run(tmp_path, "import os; print(os.getpid())", on_start=started.append)
    assert started == [int(lines[0])] == [result.pid]


def test_timeout_kills_the_child_and_reports_it(tmp_path: Path) -> None:
    result, lines = _run(
        tmp_path,
        "import time; print('started', flush=True); time.sleep(60)",
        timeout_s=0.5,
        grace_s=1,
    )
    assert result.timed_out and result.exit_code is None
    assert result.wall_s < 30  # the child would sleep 60 s
    assert lines == ["started"]
    assert result.log_path.read_text() == "started\n"


def test_child_ignoring_sigterm_is_killed_after_the_grace_period(tmp_path: Path) -> None:
    result, lines = _run(tmp_path, STUBBORN, timeout_s=0.5, grace_s=0.5)
    assert result.timed_out and result.wall_s < 30  # it ignores SIGTERM and sleeps 60 s
    _assert_all_gone(_pids(lines))


def test_grandchild_in_the_group_is_killed_too(tmp_path: Path) -> None:
    result, lines = _run(tmp_path, FORKS_IN_GROUP, timeout_s=1, grace_s=0.5)
    assert result.timed_out
    assert len(_pids(lines)) == 2
    _assert_all_gone(_pids(lines))


def test_grandchild_that_left_the_group_is_killed_too(tmp_path: Path) -> None:
    result, lines = _run(tmp_path, ESCAPES_GROUP, timeout_s=1, grace_s=0.5)
    assert result.timed_out
    assert len(_pids(lines)) == 2
    _assert_all_gone(_pids(lines))


def test_double_forked_daemon_is_killed_too(tmp_path: Path) -> None:
    result, lines = _run(tmp_path, DOUBLE_FORK, timeout_s=1, grace_s=0.5)
    assert result.timed_out
    _assert_all_gone(_pids(lines))


def test_background_leftover_of_a_finished_child_is_killed(tmp_path: Path) -> None:
    code = "sleep 60 & echo pid $!; exit 0"
    lines: list[str] = []
    result = run_command(
        code,
        cwd=tmp_path,
        env=dict(os.environ),
        timeout_s=30,
        log_path=tmp_path / "run.log",
        on_line=lines.append,
        grace_s=1,
    )
    assert result.exit_code == 0 and not result.timed_out
    assert result.wall_s < 30  # not waiting for the leftover's 60 s
    _assert_all_gone(_pids(lines))


def test_escaped_grandchild_of_a_finished_child_is_killed(tmp_path: Path) -> None:
    result, lines = _run(tmp_path, QUIET_ESCAPE, grace_s=1)
    assert result.exit_code == 0
    _assert_all_gone(_pids(lines))


def test_stop_callback_ends_the_run(tmp_path: Path) -> None:
    lines: list[str] = []
    # Stop once the child has said its pid (stopping before it prints would leave nothing
    # to check that it is gone).
    result = run_command(
        [PY, "-c", "import time; print('pid', __import__('os').getpid(), flush=True); "
                   "time.sleep(60)"],
        cwd=tmp_path, env=dict(os.environ), timeout_s=30, log_path=tmp_path / "run.log",
        on_line=lines.append, stop=lambda: bool(lines), grace_s=1)
    assert result.stopped and not result.timed_out and result.exit_code is None
    _assert_all_gone(_pids(lines))


def test_a_failing_callback_still_kills_the_child(tmp_path: Path) -> None:
    pids: list[int] = []

    def explode(line: str) -> None:
        pids.append(int(line.split()[1]))
        raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        run_command(
            [PY, "-c", textwrap.dedent(STUBBORN)],
            cwd=tmp_path,
            env=dict(os.environ),
            timeout_s=30,
            log_path=tmp_path / "run.log",
            on_line=explode,
            grace_s=0.5,
        )
    _assert_all_gone(pids)


def test_log_file_of_an_earlier_run_is_replaced(tmp_path: Path) -> None:
    _run(tmp_path, "print('first')")
    result, _ = _run(tmp_path, "print('second')")
    assert result.log_path.read_text() == "second\n"
