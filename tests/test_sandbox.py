"""Containing the agent (loop/proposers/sandbox.py, issue 18).

A confined agent can write its worktree and its attempt folder and nothing else: real
bubblewrap runs a stand-in agent through the daemon (fake benchmark, real git and ledger) that
tries to write the ledger, the state file, the main checkout's `loop/` and $HOME; those writes
are refused, its edit is measured and kept as usual. With the network off it cannot reach a
listener outside. The macOS profile cannot run here: its generated text is checked. Without a
tool the agent runs unconfined, the daemon says so, and tamper evidence stops the run.
The bwrap tests skip, saying why, where bwrap is missing or cannot start (user namespaces
refused)."""

from __future__ import annotations

import os
import shutil
import socket
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from scheduler_helpers import candidates, commit_files, rows, run_configured, worktree

from loop.config import ConfigError, load_config
from loop.daemon.tamper import Fingerprint
from loop.proposers.sandbox import (
    Sandbox,
    SandboxError,
    bwrap_argv,
    choose,
    probe,
    sbpl_profile,
    tmux_sockets,
)
from loop.ui.doctor import check_containment


def _bwrap_problem() -> str | None:
    if shutil.which("bwrap") is None:
        return "bwrap is not installed (apt-get install bubblewrap)"
    problem = probe(Sandbox("bwrap"))
    return f"bwrap cannot start here: {problem}" if problem else None


BWRAP_PROBLEM = _bwrap_problem()
needs_bwrap = pytest.mark.skipif(BWRAP_PROBLEM is not None, reason=BWRAP_PROBLEM or "")

# The stand-in agent: each forbidden write is tried and its outcome printed to the agent's
# log; then the one allowed edit (knobs.sh, editable) and a summary line.
ESCAPES = """\
try() { if ( eval "$2" ) 2>/dev/null; then echo "WROTE $1"; else echo "REFUSED $1"; fi; }
ROW='{"type": "experiment", "id": "E9999", "status": "keep"}'
try ledger 'echo "$ROW" >> ../../ledger.jsonl'
try state 'echo "{}" > ../../state.json'
try checkout "echo 'x = 1' > $CHECKOUT/loop/planted.py"
try home "echo x > $HOME/planted"
try tmp 'echo x > "$TMPDIR/scratch"'
sed -i 's/^LR=0.04$/LR=0.05/' knobs.sh
echo "LR 0.04 -> 0.05" > "$AUTOGOLF_SUMMARY_FILE"
"""


def stand_in(tmp_path: Path, body: str) -> str:
    script = tmp_path / "agent.sh"
    script.write_text("#!/usr/bin/env bash\n" + body)
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    return str(script)


def run_agent(repo: Path, tmp_path: Path, body: str, mode: str) -> str:
    return run_configured(repo, max_experiments=1, proposer="agent",
                          agent_command=(stand_in(tmp_path, body),), agent_timeout_s=30,
                          kill_grace_s=1, ladder=("breadth",), agent_sandbox_mode=mode)


# --------------------------------------------------------------------------- real bwrap


@needs_bwrap
def test_a_confined_agent_writes_only_its_worktree_and_its_edit_is_kept(
        repo: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (repo / "loop").mkdir()
    commit_files(repo, {"loop/__init__.py": ""}, "the daemon's code in the checkout")
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.setenv("CHECKOUT", str(repo))
    run_agent(repo, tmp_path, ESCAPES, mode="bwrap")
    [row] = candidates(repo)
    log = (repo / row["agent"]["log"]).read_text()
    for target in ("ledger", "state", "checkout", "home"):
        assert f"REFUSED {target}" in log, log
    assert "WROTE tmp" in log
    assert (row["status"], row["description"]) == ("keep", "LR 0.04 -> 0.05")
    assert not any(r.get("id") == "E9999" for r in rows(repo))
    assert not (repo / "loop" / "planted.py").exists() and not (home / "planted").exists()
    session = next(r for r in rows(repo) if r.get("type") == "session")
    assert session["containment"].startswith("agent containment: bwrap")


@needs_bwrap
def test_a_confined_agent_can_read_git_but_not_write_it(tmp_path: Path, repo: Path) -> None:
    run_configured(repo, max_experiments=0)  # opens the session: its worktree exists
    tree = worktree(repo)
    confined = Sandbox("bwrap").wrap(
        ["sh", "-c", "git status --short && git log -1 --format=%s && "
                     "if git branch planted 2>/dev/null || echo x > .git; then exit 9; fi"],
        tree, tmp_path / "attempt", dict(os.environ))
    done = subprocess.run(confined.argv, cwd=tree, env=confined.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "start"  # git read works; branch and .git writes refused
    assert "planted" not in subprocess.run(["git", "branch"], cwd=repo, capture_output=True,
                                           text=True).stdout


def connect_from_sandbox(sandbox: Sandbox, tmp_path: Path,
                         port: int) -> subprocess.CompletedProcess:
    code = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=5)"
    tree = tmp_path / "tree"
    tree.mkdir(exist_ok=True)
    confined = sandbox.wrap([sys.executable, "-c", code], tree, tmp_path / "attempt",
                            dict(os.environ))
    return subprocess.run(confined.argv, cwd=tree, env=confined.env, capture_output=True,
                          text=True, timeout=60)


@needs_bwrap
def test_with_the_network_off_a_confined_agent_cannot_reach_a_listener_outside(
        tmp_path: Path) -> None:
    with socket.create_server(("127.0.0.1", 0)) as listener:
        port = listener.getsockname()[1]
        allowed = connect_from_sandbox(Sandbox("bwrap", network=True), tmp_path, port)
        refused = connect_from_sandbox(Sandbox("bwrap", network=False), tmp_path, port)
    assert allowed.returncode == 0, allowed.stderr
    assert refused.returncode != 0 and "ConnectionRefusedError" in refused.stderr


@needs_bwrap
def test_a_confined_agent_cannot_reach_the_tmux_server(tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    path = tmp_path / "tmux-socket"
    with socket.socket(socket.AF_UNIX) as server:
        server.bind(str(path))
        server.listen()
        monkeypatch.setenv("TMUX", f"{path},1234,0")
        code = f"import socket; socket.socket(socket.AF_UNIX).connect({str(path)!r})"
        confined = Sandbox("bwrap").wrap([sys.executable, "-c", code], tmp_path,
                                         tmp_path / "attempt", dict(os.environ))
        done = subprocess.run(confined.argv, cwd=tmp_path, env=confined.env,
                              capture_output=True, text=True, timeout=60)
    assert done.returncode != 0 and "ConnectionRefusedError" in done.stderr


# --------------------------------------------------------------------------- the fallback


def test_an_unconfined_agent_that_writes_the_ledger_stops_the_run_naming_it(
        repo: Path, tmp_path: Path) -> None:
    body = ('echo \'{"type": "experiment", "id": "E9999", "status": "keep"}\' '
            ">> ../../ledger.jsonl\nsed -i 's/^LR=0.04$/LR=0.05/' knobs.sh\n")
    reason = run_agent(repo, tmp_path, body, mode="off")
    assert reason.startswith("tamper evidence: .autogolf/ledger.jsonl changed during the "
                             "agent proposer of E0002")
    [row] = [r for r in candidates(repo) if r["id"] == "E0002"]
    assert row["status"] == "interrupted" and row["commit"] is None
    assert rows(repo)[-1]["type"] == "stop" and rows(repo)[-1]["reason"] == reason
    session = next(r for r in rows(repo) if r.get("type") == "session")
    assert "agent containment: none (agent.sandbox.mode is off)" in session["containment"]


def test_tamper_evidence_covers_the_state_file_and_the_checkouts_daemon_code(
        tmp_path: Path, sample_dataset) -> None:
    (tmp_path / "loop").mkdir()
    (tmp_path / "loop" / "scheduler.py").write_text("x = 1\n")
    files = {str(f) for f in Fingerprint.of_protected(tmp_path, sample_dataset).files}
    assert str(tmp_path / ".autogolf" / "state.json") in files
    assert str((tmp_path / "loop" / "scheduler.py").resolve()) in files


# --------------------------------------------------------------------------- choosing


def test_auto_without_a_tool_runs_unconfined_and_says_what_to_install() -> None:
    sandbox = choose("auto", which=lambda _: None, platform="linux")
    assert sandbox.tool is None
    line = sandbox.describe()
    assert "agent containment: none (bwrap not found" in line
    assert "apt-get install bubblewrap" in line and "tamper evidence" in line


@pytest.mark.parametrize("mode, platform, needle", [
    ("bwrap", "linux", "apt-get install bubblewrap"),
    ("sandbox-exec", "linux", "part of macOS"),
])
def test_a_named_tool_that_is_missing_is_refused_naming_the_key(
        mode: str, platform: str, needle: str) -> None:
    with pytest.raises(SandboxError, match="agent.sandbox.mode") as refused:
        choose(mode, which=lambda _: None, platform=platform)
    assert needle in str(refused.value)


def test_a_tool_that_cannot_start_is_refused_when_named_and_noted_under_auto(
        tmp_path: Path) -> None:
    broken = tmp_path / "bwrap"
    broken.write_text("#!/bin/sh\necho 'No permissions to create new namespace' >&2\nexit 1\n")
    broken.chmod(0o755)
    with pytest.raises(SandboxError, match="No permissions to create new namespace"):
        choose("bwrap", which=lambda _: str(broken), platform="linux")
    noted = choose("auto", which=lambda _: str(broken), platform="linux")
    assert noted.tool is None and "bwrap is installed but failed" in noted.describe()


def test_mode_off_is_unconfined_and_says_so() -> None:
    sandbox = choose("off")
    assert sandbox.tool is None and "agent.sandbox.mode is off" in sandbox.describe()


def test_an_extra_writable_path_is_expanded_and_must_exist(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / ".claude").mkdir()
    with pytest.raises(SandboxError, match=r"agent.sandbox.writable\[1\]: .*\.codex does not"):
        choose("auto", writable=["~/.claude", "~/.codex"], which=lambda _: None)
    with pytest.raises(SandboxError, match=r"writable\[0\]: 'rel' is not an absolute path"):
        choose("auto", writable=["rel"], which=lambda _: None)


# --------------------------------------------------------------------------- the argv


def test_the_bwrap_command_is_read_only_root_then_the_writable_paths(tmp_path: Path) -> None:
    tree, attempt = tmp_path / "tree", tmp_path / "attempt"
    tree.mkdir()
    (tree / ".git").write_text("gitdir: /elsewhere\n")
    argv = bwrap_argv(["agent", "-p"], tree, [tree, attempt], network=True, env={})
    assert argv[0] == "bwrap" and argv[-3:] == ["--", "agent", "-p"]
    assert {"--unshare-user", "--unshare-pid", "--die-with-parent"} <= set(argv)
    assert argv[argv.index("--cap-drop") + 1] == "ALL" and "--unshare-net" not in argv
    text = " ".join(argv)
    root = text.index("--ro-bind / /")
    assert root < text.index(f"--bind {tree} {tree}") < text.index(f"--ro-bind {tree}/.git")
    assert "--unshare-net" in bwrap_argv(["agent"], tree, [tree], network=False, env={})


def test_a_preloaded_library_is_set_inside_bwrap_not_on_it(tmp_path: Path) -> None:
    env = {"LD_PRELOAD": "/usr/lib/libopenblas.so.0", "PATH": "/usr/bin"}
    confined = Sandbox("bwrap").wrap(["agent"], tmp_path, tmp_path / "attempt", env)
    assert "LD_PRELOAD" not in confined.env
    at = confined.argv.index("--setenv")
    assert confined.argv[at:at + 3] == ["--setenv", "LD_PRELOAD", "/usr/lib/libopenblas.so.0"]
    assert confined.env["TMPDIR"] == str(tmp_path / "attempt" / "tmp")


def test_the_macos_profile_denies_writes_except_the_writable_paths(tmp_path: Path) -> None:
    text = sbpl_profile([Path("/Users/me/repo/.autogolf/worktrees/s"), Path("/Users/me/.claude")],
                        network=True)
    lines = text.splitlines()
    assert lines[:4] == ["(version 1)", "(allow default)", "(deny file-write*)",
                         "(allow file-write*"]
    assert '    (subpath "/Users/me/repo/.autogolf/worktrees/s")' in lines
    assert '    (subpath "/Users/me/.claude")' in lines
    assert '    (literal "/dev/null")' in lines
    assert "(allow signal (target same-sandbox))" in lines
    assert "(deny network*)" not in text
    assert text.count("(") == text.count(")")


def test_the_macos_profile_with_the_network_off_denies_it() -> None:
    assert sbpl_profile([Path("/w")], network=False).splitlines()[-1] == "(deny network*)"


def test_the_macos_profile_quotes_paths_and_refuses_control_characters() -> None:
    assert '(subpath "/a \\"b\\" \\\\c")' in sbpl_profile([Path('/a "b" \\c')], network=True)
    with pytest.raises(SandboxError, match="control character"):
        sbpl_profile([Path("/a\nb")], network=True)


def test_the_macos_profile_denies_connecting_to_tmux(tmp_path: Path) -> None:
    path = tmp_path / "default"
    path.write_text("")  # a stand-in for the server's socket
    sockets = tmux_sockets({"TMUX": f"{path},99,0", "TMUX_TMPDIR": str(tmp_path / "none")})
    assert sockets == [path.resolve()]
    assert (f'(deny network-outbound (remote unix-socket (path-literal "{path.resolve()}")))'
            in sbpl_profile([Path("/w")], network=True, sockets=sockets))


# --------------------------------------------------------------------------- settings


def settings(tmp_path: Path, text: str):
    path = tmp_path / "autogolf.yaml"
    path.write_text(text)
    return load_config(path)


def test_sandbox_settings_are_read(tmp_path: Path) -> None:
    cfg = settings(tmp_path, "agent: {sandbox: {mode: bwrap, network: false, "
                             "writable: [~/.claude, /opt/cache]}}\n")
    assert (cfg.agent_sandbox_mode, cfg.agent_sandbox_network) == ("bwrap", False)
    assert cfg.agent_sandbox_writable == ("~/.claude", "/opt/cache")
    default = settings(tmp_path, "agent: {timeout_s: 5}\n")
    assert (default.agent_sandbox_mode, default.agent_sandbox_network) == ("auto", True)


@pytest.mark.parametrize("text, needle", [
    ("agent: {sandbox: {mode: docker}}\n", "agent.sandbox.mode: got 'docker'"),
    ("agent: {sandbox: {network: yes please}}\n", "agent.sandbox.network: got 'yes please'"),
    ("agent: {sandbox: {writable: ~/.claude}}\n", "agent.sandbox.writable: got '~/.claude'"),
    ("agent: {sandbox: {writable: [rel/path]}}\n", "agent.sandbox.writable[0]: got 'rel/path'"),
    ("agent: {sandbox: {net: false}}\n", "agent.sandbox.net: unknown key"),
])
def test_bad_sandbox_settings_are_refused_naming_the_key(tmp_path: Path, text: str,
                                                         needle: str) -> None:
    with pytest.raises(ConfigError) as refused:
        settings(tmp_path, text)
    assert needle in str(refused.value)


def test_doctor_says_how_the_agent_would_be_contained(tmp_path: Path) -> None:
    (tmp_path / "autogolf.yaml").write_text("agent: {sandbox: {mode: off}}\n")
    [check] = check_containment(tmp_path)
    assert check.status == "ok" and "none (agent.sandbox.mode is off)" in check.detail
    (tmp_path / "autogolf.yaml").write_text("agent: {sandbox: {mode: sandbox-exec}}\n")
    if sys.platform != "darwin":
        [check] = check_containment(tmp_path)
        assert check.status == "FAIL" and "agent.sandbox.mode" in check.detail


def test_the_session_row_of_a_proposer_without_outside_code_has_no_containment(
        repo: Path) -> None:
    run_configured(repo, max_experiments=0)
    session = next(r for r in rows(repo) if r.get("type") == "session")
    assert "containment" not in session


@needs_bwrap
def test_a_confined_agent_cannot_read_the_holdouts_dataset_folder(tmp_path: Path) -> None:
    dataset = tmp_path / "dataset"
    dataset.mkdir()
    (dataset / "fineweb_val_000000.bin").write_bytes(b"the holdout")
    tree = tmp_path / "tree"
    tree.mkdir()
    code = f"print(open({str(dataset / 'fineweb_val_000000.bin')!r}).read())"
    confined = Sandbox("bwrap", hidden=(dataset,)).wrap([sys.executable, "-c", code], tree,
                                                        tmp_path / "attempt", dict(os.environ))
    done = subprocess.run(confined.argv, cwd=tree, env=confined.env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode != 0 and "No such file or directory" in done.stderr


def test_the_macos_agent_profile_denies_reading_the_hidden_folders(tmp_path: Path) -> None:
    profile = sbpl_profile([tmp_path / "tree"], True, (), [tmp_path / "dataset"])
    assert f'(deny file-read* (subpath "{(tmp_path / "dataset").resolve()}"))' in profile
