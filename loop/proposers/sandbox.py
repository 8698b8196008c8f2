"""Containing the agent (issue 18): the argument list that runs an agent command confined.

The agent proposer runs a coding agent as the user. Unconfined, it could write the ledger
(`../../ledger.jsonl` from its worktree), the state file, the daemon's own code in the main
checkout (which the next `autogolf run` imports) or anything in $HOME. Confined, it can write
only:

- its worktree (the edit it is there to make);
- its attempt folder (`.autogolf/agent/attempt-NNNN/`: the prompt, the summary file it writes,
  aider's history files) and, inside it, a private temp folder (`tmp/`, given as TMPDIR);
- the paths listed under `agent.sandbox.writable` (none by default). Agent CLIs keep their
  own state under $HOME (claude: `~/.claude/` and `~/.claude.json`; codex: `~/.codex/`; pi:
  `~/.pi/agent/`): list what yours needs. A CLI that replaces a file by renaming a new one over it
  needs the file's folder listed, not the file.

Git metadata: nothing of it is writable. The worktree's `.git` is a file pointing into the main
repository's `.git/worktrees/<name>/`, which lies outside every writable path, and the `.git`
entry itself is bound read-only over the writable worktree, so the agent cannot point it
elsewhere. Read-only git (status, diff, log, show) works; commit, stash, branch, config and
hooks fail with a read-only file system. Making the worktree's own gitdir writable would let
the agent rewrite its HEAD and index and nothing useful (objects live in the common dir, so
a commit fails anyway), and the daemon already judges the change from the worktree's files
and checks the git metadata after every attempt (loop/proposers/agent.py, GitState).

The network is on by default (agent CLIs talk to their API); `agent.sandbox.network: false`
cuts it (bwrap: a new network namespace with only loopback; sandbox-exec: `(deny network*)`).

Tools (`agent.sandbox.mode`: auto | bwrap | sandbox-exec | off):

- Linux, bubblewrap (`bwrap`): a new user, pid, ipc and uts namespace with every capability
  dropped (so even an agent run as root cannot remount), the whole file system bound
  read-only, a minimal /dev and a fresh /proc (the daemon's processes are invisible), then the
  writable paths bound read-write. tmux's socket folder is hidden: a connect() to a Unix
  socket is not a write, and tmux's server (the launcher runs the daemon in tmux) would run
  any command outside the sandbox. Other Unix sockets (ssh-agent, $XDG_RUNTIME_DIR) stay
  reachable while the network is on.
- macOS, `sandbox-exec` with a generated profile (Apple's SBPL): allow by default, deny every
  file write except under the writable paths and a few devices, deny connecting to tmux's
  sockets, deny signals to processes outside the sandbox, and with the network off deny
  `network*`. Written from the profile language's documentation; the tests check the text.
- `auto` takes whichever of the two this machine has and can start; with neither the agent
  runs unconfined and the daemon says so at start (`autogolf doctor` too): tamper evidence
  (loop/daemon/tamper.py) then catches a changed ledger, state file, configuration or daemon
  code after the fact, and stops the run.

The runner already gives the agent its own session (setsid) and no terminal on stdin, so the
agent cannot push keystrokes into the daemon's terminal.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from loop.measure.seal import sbpl_quote
from loop.settings.agent import SANDBOX_MODES as MODES

INSTALL = {
    "bwrap": "install bubblewrap: `sudo apt-get install bubblewrap` on Debian/Ubuntu "
             "(`sudo dnf install bubblewrap` on Fedora)",
    "sandbox-exec": "sandbox-exec is part of macOS (/usr/bin/sandbox-exec) and exists "
                    "nowhere else; on Linux use bwrap",
}
NATIVE = {"linux": "bwrap", "darwin": "sandbox-exec"}  # sys.platform prefix -> tool
PROBE_TIMEOUT_S = 10
# Devices a confined process may still write on macOS (shells redirect to them).
SBPL_DEVICES = ("/dev/null", "/dev/zero", "/dev/tty", "/dev/dtracehelper", "/dev/stdout",
                "/dev/stderr")


class SandboxError(Exception):
    """The configured containment cannot be used; the message names the key and the fix."""


@dataclass(frozen=True)
class Confined:
    """What to run instead of the agent's argv, with the environment to start it in."""

    argv: list[str]
    env: dict[str, str]


@dataclass(frozen=True)
class Sandbox:
    """A containment tool (or none) with its settings; `wrap` builds the confined argv."""

    tool: str | None  # "bwrap" | "sandbox-exec" | None (unconfined)
    network: bool = True
    writable: tuple[Path, ...] = ()  # agent.sandbox.writable, resolved
    why_none: str = ""  # when tool is None: why, for the start line and doctor
    program: str = ""  # the tool's executable (default: its name, found on PATH)
    # Folders the agent must not read: the dataset's (its validation shards are the judge's
    # holdout), the repo's data/ and .upstream/. Hidden (bwrap: an empty folder in their
    # place; sandbox-exec: reading denied), so an agent cannot copy the holdout into an edit.
    hidden: tuple[Path, ...] = ()

    def wrap(self, argv: Sequence[str], worktree: Path, attempt: Path,
             env: dict[str, str]) -> Confined:
        """The agent's `argv` and `env`, confined to `worktree`, `attempt` (TMPDIR is its
        `tmp/`) and the extra writable paths."""
        tmp = Path(attempt) / "tmp"
        tmp.mkdir(parents=True, exist_ok=True)
        env = {**env, "TMPDIR": str(tmp)}
        if self.tool is None:
            return Confined(list(argv), env)
        paths = _writable(worktree, attempt, self.writable)
        if self.tool == "bwrap":
            # A preloaded library that starts threads (OpenBLAS) would be loaded into bwrap
            # itself, which then cannot create its user namespace: set it inside instead.
            preload = env.pop("LD_PRELOAD", None)
            inner = ["--setenv", "LD_PRELOAD", preload] if preload else []
            command = bwrap_argv(argv, Path(worktree), paths, self.network, env, inner,
                                 self.hidden)
            return Confined([self.program or "bwrap", *command[1:]], env)
        profile = sbpl_profile(paths, self.network, tmux_sockets(env), self.hidden)
        return Confined([self.program or "sandbox-exec", "-p", profile, *argv], env)

    def describe(self) -> str:
        """One line for the session start, its row and doctor."""
        if self.tool is None:
            return (f"agent containment: none ({self.why_none}); the agent can write anything "
                    "the user can: tamper evidence only (a changed ledger, state file, "
                    "autogolf.yaml or daemon code stops the run)")
        extra = "".join(f", {p}" for p in self.writable)
        return (f"agent containment: {self.tool} (writable: the worktree, the attempt folder"
                f"{extra}; network {'on' if self.network else 'off'})")


def _writable(worktree: Path, attempt: Path, extra: Sequence[Path]) -> list[Path]:
    paths = [Path(worktree).resolve(), Path(attempt).resolve(), *(Path(p) for p in extra)]
    return list(dict.fromkeys(paths))


# --------------------------------------------------------------------------- bwrap


def bwrap_argv(argv: Sequence[str], worktree: Path, writable: Sequence[Path], network: bool,
               env: dict[str, str] | None = None, extra: Sequence[str] = (),
               hidden: Sequence[Path] = ()) -> list[str]:
    """bubblewrap's command line: read-only root, `hidden` folders emptied, tmux's sockets
    hidden, `writable` bound read-write, the worktree's `.git` read-only again, then `argv` in
    the worktree."""
    out = ["bwrap", "--die-with-parent", "--unshare-user", "--unshare-pid", "--unshare-ipc",
           "--unshare-uts", "--unshare-cgroup-try", "--cap-drop", "ALL"]
    if not network:
        out.append("--unshare-net")
    out += ["--ro-bind", "/", "/", "--dev", "/dev", "--proc", "/proc"]
    for path in hidden:  # before the writable binds: a worktree inside stays reachable
        if Path(path).is_dir():
            out += ["--tmpfs", str(Path(path).resolve())]
    for path in writable:
        out += ["--bind", str(path), str(path)]
    folders = tmux_dirs(env)  # after the binds: hidden even inside a writable path
    for folder in folders:
        out += ["--tmpfs", str(folder)]  # also hides servers started later
    for socket in tmux_sockets(env):
        if not any(folder in socket.parents for folder in folders):
            out += ["--ro-bind", "/dev/null", str(socket)]
    dot_git = Path(worktree).resolve() / ".git"
    if dot_git.exists():
        out += ["--ro-bind", str(dot_git), str(dot_git)]
    return [*out, *extra, "--chdir", str(Path(worktree).resolve()), "--", *argv]


def tmux_sockets(env: dict[str, str] | None = None) -> list[Path]:
    """The tmux server sockets a confined agent must not reach: $TMUX's and those in this
    user's default tmux folder, resolved; [] when there is no tmux."""
    env = os.environ if env is None else env
    found = set()
    socket = env.get("TMUX", "").split(",")[0]
    if socket and Path(socket).exists():
        found.add(Path(socket).resolve())
    for folder in tmux_dirs(env):
        try:
            found.update(p.resolve() for p in folder.iterdir())
        except OSError:
            continue
    return sorted(found)


def tmux_dirs(env: dict[str, str] | None = None) -> list[Path]:
    """This user's default tmux socket folder ($TMUX_TMPDIR or /tmp, then tmux-<uid>)."""
    env = os.environ if env is None else env
    base = Path(env.get("TMUX_TMPDIR") or "/tmp") / f"tmux-{os.getuid()}"
    return [base.resolve()] if base.is_dir() else []


# --------------------------------------------------------------------------- sandbox-exec


def sbpl_profile(writable: Sequence[Path], network: bool, sockets: Sequence[Path] = (),
                 hidden: Sequence[Path] = ()) -> str:
    """A sandbox-exec profile: everything allowed except file writes outside `writable` (and
    a few devices), connecting to `sockets`, signalling processes outside the sandbox, and
    with `network` false any network use. Paths must be resolved (/private/tmp, not /tmp):
    the kernel matches real paths."""
    lines = ["(version 1)", "(allow default)", "(deny file-write*)",
             "(allow file-write*"]
    lines += [f'    (subpath "{_sbpl_string(p)}")' for p in writable]
    lines += [f'    (literal "{d}")' for d in SBPL_DEVICES]
    lines += ['    (regex #"^/dev/fd/[0-9]+$")', '    (regex #"^/dev/ttys[0-9]+$"))',
              "(deny signal)", "(allow signal (target same-sandbox))"]
    for socket in sockets:
        lines.append(f'(deny network-outbound (remote unix-socket (path-literal '
                     f'"{_sbpl_string(socket)}")))')
    if not network:
        lines.append("(deny network*)")
    for folder in hidden:
        lines.append(f'(deny file-read* (subpath "{_sbpl_string(Path(folder).resolve())}"))')
    return "\n".join(lines) + "\n"


def _sbpl_string(path: Path) -> str:
    try:
        return sbpl_quote(path)
    except ValueError as exc:
        raise SandboxError(str(exc)) from None


# --------------------------------------------------------------------------- choosing


def choose(mode: str, network: bool = True, writable: Sequence[str] = (), *,
           platform: str = sys.platform,
           which: Callable[[str], str | None] | None = None,
           hidden: Sequence[Path] = ()) -> Sandbox:
    """The containment `agent.sandbox` asks for, started once to prove it works.

    A named tool that is missing or refuses to start raises SandboxError (the run must not
    start believing it is contained); `auto` finding none returns an unconfined Sandbox whose
    `why_none` says what to install."""
    which = which or shutil.which
    if mode not in MODES:
        raise SandboxError(f"agent.sandbox.mode: got {mode!r} (allowed: {' | '.join(MODES)})")
    if mode == "off":
        return Sandbox(None, network, why_none="agent.sandbox.mode is off")
    extra = tuple(resolve_writable(writable))
    tool = mode if mode != "auto" else _native(platform)
    if tool is None:
        return Sandbox(None, network, why_none=f"no containment tool is known on {platform}")
    program = which(tool)
    if program is None:
        if mode == "auto":
            return Sandbox(None, network, why_none=f"{tool} not found; {INSTALL[tool]}")
        raise SandboxError(f"agent.sandbox.mode: {tool} is not on PATH; {INSTALL[tool]} "
                           "(or set agent.sandbox.mode: auto to run without it)")
    sandbox = Sandbox(tool, network, extra, program=program,
                      hidden=tuple(Path(p) for p in hidden if Path(p).is_dir()))
    problem = probe(sandbox)
    if problem is None:
        return sandbox
    if mode == "auto":
        return Sandbox(None, network, why_none=f"{tool} is installed but failed: {problem}")
    raise SandboxError(f"agent.sandbox.mode: {tool} failed to start a trial command: "
                       f"{problem}")


def _native(platform: str) -> str | None:
    return next((tool for prefix, tool in NATIVE.items() if platform.startswith(prefix)), None)


def resolve_writable(paths: Sequence[str]) -> list[Path]:
    """`agent.sandbox.writable` entries: `~` and $VARS expanded, absolute, existing."""
    out = []
    for i, raw in enumerate(paths):
        path = Path(os.path.expandvars(os.path.expanduser(raw)))
        if not path.is_absolute():
            raise SandboxError(f"agent.sandbox.writable[{i}]: {raw!r} is not an absolute path "
                               "(use ~/... or /...)")
        if not path.exists():
            raise SandboxError(f"agent.sandbox.writable[{i}]: {path} does not exist; create "
                               "it (mkdir -p) or remove it from the list")
        out.append(path.resolve())
    return out


def probe(sandbox: Sandbox) -> str | None:
    """None when `sandbox` runs `true` in a scratch worktree; else what went wrong (e.g.
    user namespaces refused by the kernel or by AppArmor)."""
    with tempfile.TemporaryDirectory(prefix="autogolf-sandbox-") as scratch:
        tree, attempt = Path(scratch) / "tree", Path(scratch) / "attempt"
        tree.mkdir()
        attempt.mkdir()
        confined = sandbox.wrap([sys.executable, "-c", "pass"], tree, attempt, dict(os.environ))
        try:
            done = subprocess.run(confined.argv, cwd=tree, env=confined.env,
                                  capture_output=True, text=True,
                                  timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return str(exc)
    if done.returncode == 0:
        return None
    said = " ".join((done.stderr or done.stdout).split())[:200] or "no output"
    return f"exit {done.returncode}: {said}"
