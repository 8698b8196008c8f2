"""The seal: judged code (the benchmark, the checks, the model server) runs where it cannot
reach what decides a keep (SPEC section 6, issue 24).

Everything a proposer may edit runs with the researcher's powers unless something takes them
away: it could read the original validation shard by path, hide weights in a temp folder
that a later process reads, drop a `.pth` hook into the venv that slows the incumbent's
runs, or open a socket. A prompt is a norm; this module is the boundary.

**What a sealed benchmark sees** (`Seal.benchmark`, bubblewrap on Linux):

- the operating system's folders, the Python installation and the venv, the daemon's own
  `loop/` package: read-only;
- the worktree: read-only, except its `logs/`, which is the run's fresh output folder
  (`outputs`, outside the worktree; the daemon reads the artifact and log from it, then
  deletes it) - so nothing the run writes outlives it except what the daemon keeps;
- the data folder the daemon assembled (train shards and the printout slice, no validation
  token) and the tokenizer: read-only;
- a private `/tmp` (TMPDIR and HOME), gone when the run ends;
- no network (a new network namespace: loopback only), no other process (new pid, ipc and
  uts namespaces), no capability, and the sandbox dies with the daemon.

Not visible at all: the dataset's own folder (its validation shards), the repo's `data/`,
`.upstream/` and `.autogolf/` (the ledger, other experiments), the user's home, every other
worktree. The environment is rebuilt from a short allowlist (`minimal_env`): no variable
names the cache root or the original data.

**What a sealed model server sees** (`Seal.server`): the same system, Python and `loop/`
folders, the trainer file and the artifact file, read-only, and nothing else: no data, no
network, nothing writable but a private empty `/tmp` (MLX compiles its CPU kernels there)
that no other process sees and that vanishes with it. It starts
Python with `-I -S` and puts the venv's site-packages on `sys.path` by hand
(`server_boot`), so no `.pth` hook and no `sitecustomize` can run in it, whatever is in the
venv.

**macOS** (`sandbox-exec`): a generated profile with the same intent - deny reading the
dataset's folder, the repo's caches and state and the home folder except what is listed,
deny writing anywhere but the outputs and a private temp folder, deny the network. Written
from the profile language's documentation; the tests check its text (no Mac here).

**Proved, not assumed**: `prove()` runs loop/measure/sealprobe.py inside each seal at the start
of a run and in `autogolf doctor`; it must fail to read the validation shard, to write
outside the outputs, and to connect out. A seal that cannot start, or a probe that gets
through, is a `SealError` naming the fix, and `autogolf run` does not start: without a
seal nothing would be kept. `judge.sealed: false` is the researcher's explicit opt-out,
said at start and stored on every row.
"""

from __future__ import annotations

import functools
import json
import os
import shutil
import site
import socket
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from loop.errors import UserError

DAEMON_ROOT = Path(__file__).resolve().parents[2]
LOOP_DIR = DAEMON_ROOT / "loop"
SYSTEM_DIRS = ("/usr", "/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32", "/etc",
               "/opt/homebrew")
INSTALL = {
    "bwrap": "install bubblewrap (`sudo apt-get install bubblewrap` on Debian/Ubuntu, "
             "`sudo dnf install bubblewrap` on Fedora; scripts/setup.sh does it as root)",
    "sandbox-exec": "sandbox-exec is part of macOS (/usr/bin/sandbox-exec)",
}
NATIVE = {"linux": "bwrap", "darwin": "sandbox-exec"}
OPT_OUT = ("or, to run unsealed on purpose (nothing then stops judged code from reading "
           "the holdout), set `judge: {sealed: false}` in autogolf.yaml")
PROBE_TIMEOUT_S = 30
# Git-ignored folders of a checkout that hold data, daemon state or caches: hidden (an empty
# folder) when the checkout itself is the benchmark's worktree (`autogolf bench`).
CACHE_DIRS = ("data", ".upstream", ".autogolf", ".auto")
# What a sealed child may inherit from the daemon: enough to run Python, numpy and MLX with
# the fast BLAS. Nothing that names the daemon's folders, the data or an API key.
ENV_KEYS = ("PATH", "LANG", "LD_PRELOAD", "LD_LIBRARY_PATH", "TERM")
ENV_PREFIXES = ("MLX_", "OPENBLAS_", "OMP_", "LC_", "VECLIB_", "METAL_")


class SealError(UserError):
    """The seal cannot be used, or does not hold; the message says why and the fix."""


def minimal_env(base: dict[str, str], extra: dict[str, str]) -> dict[str, str]:
    """The allowlisted part of `base`, then `extra` (the run's own variables)."""
    env = {k: v for k, v in base.items() if k in ENV_KEYS or k.startswith(ENV_PREFIXES)}
    env.update(extra)
    return env


def python_dirs() -> list[Path]:
    """Folders the interpreter needs: the installation, the venv, the resolved executable."""
    dirs = {Path(sys.base_prefix).resolve(), Path(sys.prefix).resolve(),
            Path(sys.executable).resolve().parent}
    dirs.add(Path(sys.prefix))  # the venv as named (its python may be a symlink out of it)
    return sorted(dirs)


def site_dirs() -> list[str]:
    """The daemon interpreter's site-packages (for a server started with -S)."""
    return [d for d in site.getsitepackages() if Path(d).is_dir()]


def server_boot(module: str) -> list[str]:
    """`python -I -S -c ...` arguments that import `module` and call its main(), with the
    daemon's code and the venv's packages on sys.path and no site processing (no .pth)."""
    paths = [str(DAEMON_ROOT), *site_dirs()]
    code = (f"import sys; sys.path[:0] = {paths!r}; "
            f"from {module} import main; sys.exit(main())")
    return ["-I", "-S", "-c", code]


@dataclass(frozen=True)
class Seal:
    """A sealing tool (or none, when the researcher opted out) and how to call it."""

    tool: str | None  # "bwrap" | "sandbox-exec" | None: unsealed (judge.sealed: false)
    program: str = ""
    hidden: tuple[Path, ...] = field(default=())  # macOS: folders to deny reading
    # MLX's CPU backend compiles fused kernels with the system C++ compiler into a disk cache
    # under TMPDIR. A sealed process has a private, empty TMPDIR, so it would recompile every
    # kernel on every run (measured at smoke on a loaded 2-core box: 87 s instead of 10 s),
    # and a cache shared between sealed processes would be a channel between them (a planted
    # kernel in the incumbent's run, the holdout passed from one server to the next). So sealed
    # CPU runs use MLX's uncompiled path: the same numbers (val_bpb identical at smoke).
    no_jit: bool = False

    @property
    def sealed(self) -> bool:
        return self.tool is not None

    def describe(self) -> str:
        if self.tool is None:
            return ("judge: UNSEALED (judge.sealed: false): the benchmark and the model server "
                    "run with your own powers; they can read the holdout off the disk")
        return (f"judge: sealed with {self.tool} (the benchmark sees the worktree read-only, "
                "its data folder without validation tokens, no network; the model server "
                "sees only the trainer and the artifact)")

    # ---- the benchmark (and the checks)

    def benchmark(self, argv: Sequence[str], *, worktree: Path, outputs: Path,
                  readable: Sequence[Path], env: dict[str, str]) -> tuple[list[str], dict]:
        """(argv, env) that run `argv` in `worktree` sealed: `outputs` is its `logs/` and
        the only writable folder; `readable` (data folder, tokenizer) is read-only."""
        worktree, outputs = Path(worktree).resolve(), Path(outputs).resolve()
        (worktree / "logs").mkdir(exist_ok=True)  # the mount point of the outputs
        env = {**env, "HOME": "/tmp", "TMPDIR": "/tmp"}
        if self.tool is None:
            return list(argv), env
        if self.no_jit:
            env["MLX_DISABLE_COMPILE"] = "1"
        if self.tool == "bwrap":
            preload = env.pop("LD_PRELOAD", None)  # loaded into bwrap it breaks userns
            out = self._bwrap_base(preload)
            out += ["--ro-bind", str(worktree), str(worktree)]
            for name in CACHE_DIRS:  # a manual bench runs in your checkout: hide its caches
                if (worktree / name).is_dir():
                    out += ["--tmpfs", str(worktree / name)]
            out += ["--bind", str(outputs), str(worktree / "logs"),
                    "--bind", str(outputs), str(outputs)]
            out += _ro_binds(readable)
            # Process 1 is ours (loop/measure/sealinit.py): it reaps every process of the run,
            # so the kernel counts their CPU time to the daemon's child (the compute cap).
            out += ["--remount-ro", "/", "--chdir", str(worktree), "--as-pid-1", "--",
                    sys.executable, *server_boot("loop.measure.sealinit")]
            return [*out, *argv], env
        tmp = Path(tempfile.mkdtemp(prefix="autogolf-seal-"))
        env.update(HOME=str(tmp), TMPDIR=str(tmp))
        profile = sbpl_benchmark(worktree, outputs, tmp, readable, self.hidden)
        return [self.program or "sandbox-exec", "-p", profile, *argv], env

    # ---- the model server

    def server(self, argv: Sequence[str], *, readable: Sequence[Path],
               env: dict[str, str]) -> tuple[list[str], dict]:
        """(argv, env) that run the model server seeing only `readable` (trainer,
        artifact) besides the system, Python and the daemon's code; nothing writable but
        a private, empty /tmp that vanishes with it."""
        env = {**env, "HOME": "/nonexistent"}
        if self.tool is None:
            return list(argv), env
        if self.no_jit:
            env["MLX_DISABLE_COMPILE"] = "1"
        if self.tool == "bwrap":
            preload = env.pop("LD_PRELOAD", None)
            out = self._bwrap_base(preload) + _ro_binds(readable)
            # MLX's CPU backend compiles kernels into /tmp: a private tmpfs, gone with the
            # process and shared with no other (a shared cache would let the two servers
            # of one judgement talk).
            out += ["--remount-ro", "/", "--chdir", "/", "--"]
            return [*out, *argv], env
        profile = sbpl_server(readable, self.hidden)
        return [self.program or "sandbox-exec", "-p", profile, *argv], env

    def _bwrap_base(self, preload: str | None) -> list[str]:
        # The private /tmp first: binds of paths under /tmp (a test's worktree) go on top.
        out = [self.program or "bwrap", "--die-with-parent", "--new-session",
               "--unshare-user", "--unshare-pid", "--unshare-ipc", "--unshare-uts",
               "--unshare-net", "--unshare-cgroup-try", "--cap-drop", "ALL",
               "--tmpfs", "/tmp"]
        for name in SYSTEM_DIRS:
            path = Path(name)
            if path.is_symlink():
                out += ["--symlink", os.readlink(path), name]
            elif path.is_dir():
                out += ["--ro-bind", name, name]
        for path in [*python_dirs(), LOOP_DIR]:
            if not any(str(path).startswith(d + "/") or str(path) == d for d in SYSTEM_DIRS):
                out += ["--ro-bind", str(path), str(path)]
        out += ["--dev", "/dev", "--proc", "/proc"]
        if preload:
            out += ["--setenv", "LD_PRELOAD", preload]
        return out


def _ro_binds(paths: Sequence[Path]) -> list[str]:
    """Read-only binds of each path and, for a symlink, of what it points to as well."""
    out: list[str] = []
    for path in dict.fromkeys(Path(p) for p in paths):
        real = path.resolve()
        for p in dict.fromkeys((real, path.absolute())):
            if p == real:
                out += ["--ro-bind", str(real), str(real)]
            else:
                out += ["--ro-bind", str(real), str(p)]
        if path.is_dir():  # links inside the data folder (shards on another disk)
            for child in sorted(path.iterdir()):
                if child.is_symlink():
                    target = child.resolve()
                    out += ["--ro-bind", str(target), str(target)]
    return out


# --------------------------------------------------------------------------- macOS profiles


def sbpl_quote(path: Path) -> str:
    """`path` as a string literal of Apple's sandbox profile language; ValueError for a
    path with a control character (it cannot be written there safely)."""
    text = str(path)
    if any(ord(c) < 32 for c in text):
        raise ValueError(f"a path with a control character cannot go into a sandbox "
                         f"profile: {text!r}")
    return text.replace("\\", "\\\\").replace('"', '\\"')


def _q(path: Path) -> str:
    try:
        return sbpl_quote(path)
    except ValueError as exc:
        raise SealError(str(exc)) from None


def _subpaths(paths: Sequence[Path]) -> list[str]:
    return [f'    (subpath "{_q(Path(p).resolve())}")' for p in paths]


def sbpl_benchmark(worktree: Path, outputs: Path, tmp: Path, readable: Sequence[Path],
                   hidden: Sequence[Path]) -> str:
    """A sandbox-exec profile for the benchmark: no reading `hidden` (the dataset, the
    repo's caches and state, the home folder) except the worktree, the outputs, the temp
    folder and `readable`; writing only the outputs and the temp folder; no network."""
    allowed_reads = [worktree, outputs, tmp, *readable, *python_dirs(), LOOP_DIR]
    lines = ["(version 1)", "(allow default)", "(deny network*)"]
    if hidden:
        lines += ["(deny file-read*", *_subpaths(hidden), ")"]
        lines += ["(allow file-read*", *_subpaths(allowed_reads), ")"]
    lines += ["(deny file-write*)", "(allow file-write*", *_subpaths([outputs, tmp]),
              '    (literal "/dev/null") (literal "/dev/stdout") (literal "/dev/stderr")',
              '    (regex #"^/dev/fd/[0-9]+$"))',
              "(deny signal)", "(allow signal (target same-sandbox))"]
    return "\n".join(lines) + "\n"


def sbpl_server(readable: Sequence[Path], hidden: Sequence[Path]) -> str:
    """A sandbox-exec profile for the model server: reads as the benchmark's minus the
    worktree and data, no write at all, no network."""
    lines = ["(version 1)", "(allow default)", "(deny network*)"]
    if hidden:
        lines += ["(deny file-read*", *_subpaths(hidden), ")"]
        lines += ["(allow file-read*", *_subpaths([*readable, *python_dirs(), LOOP_DIR]), ")"]
    lines += ["(deny file-write*)", '(allow file-write* (literal "/dev/null"))',
              "(deny signal)", "(allow signal (target same-sandbox))"]
    return "\n".join(lines) + "\n"


# --------------------------------------------------------------------------- choosing, proving


def choose(sealed: bool, hidden: Sequence[Path] = (), *, platform: str = sys.platform,
           which: Callable[[str], str | None] | None = None) -> Seal:
    """The seal for this machine; SealError (naming the fix) when `sealed` and none is
    available. `hidden`: what a macOS profile denies reading (bwrap shows only what it
    binds)."""
    if not sealed:
        return Seal(None)
    which = which or shutil.which
    tool = next((t for prefix, t in NATIVE.items() if platform.startswith(prefix)), None)
    if tool is None:
        raise SealError(f"judge.sealed: no sandbox tool is known on {platform} (bubblewrap on "
                        f"Linux, sandbox-exec on macOS); {OPT_OUT}")
    program = which(tool)
    if program is None:
        raise SealError(f"judge.sealed: {tool} is not installed; {INSTALL[tool]}; {OPT_OUT}")
    return Seal(tool, program, tuple(Path(p).resolve() for p in hidden), not mlx_on_gpu())


@functools.cache
def mlx_on_gpu() -> bool:
    """Whether MLX computes on a GPU here (Metal or CUDA: no disk cache of CPU kernels)."""
    try:
        import mlx.core as mx
    except ImportError:
        return False
    return mx.default_device() == mx.gpu


@dataclass(frozen=True)
class Secrets:
    """What the probe must fail to reach: files to read, folders to write into."""

    read: tuple[Path, ...]  # e.g. the dataset's validation shards
    write: tuple[Path, ...]  # e.g. the repo, the venv's site-packages, the home folder


def off_limits(repo: Path, data_folder: Path) -> tuple[Secrets, tuple[Path, ...]]:
    """What judged code must not reach for this repo and dataset: (the probe's targets,
    the folders a macOS profile denies reading)."""
    repo, data_folder = Path(repo).resolve(), Path(data_folder).resolve()
    vals = tuple(sorted(data_folder.glob("fineweb_val_*.bin")))
    home = Path.home().resolve()
    writes = [repo, repo / ".autogolf", LOOP_DIR, home, *(Path(d) for d in site_dirs())]
    hidden = [data_folder, repo / "data", repo / ".upstream", repo / ".autogolf", home]
    return (Secrets(vals, tuple(p for p in writes if p.is_dir())),
            tuple(p for p in hidden if p.exists()))


def prove(seal: Seal, *, worktree: Path, data: Sequence[Path], secrets: Secrets,
          trainer: Path | None = None) -> list[str]:
    """Run the probe inside the benchmark seal and the server seal; [] when both hold,
    else one line per breach (or a SealError when the seal does not even start)."""
    if not seal.sealed:
        return []
    problems = []
    listener = socket.socket()  # on the host's loopback: a sealed child must not reach it
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    host = [["127.0.0.1", listener.getsockname()[1]]]
    marker = f".autogolf-seal-probe-{uuid.uuid4().hex}"
    with listener, tempfile.TemporaryDirectory(prefix="autogolf-probe-") as scratch:
        outputs = Path(scratch) / "outputs"
        outputs.mkdir()
        data = [Path(p).resolve() for p in data]
        plan = {"read_fail": [str(Path(p).resolve()) for p in secrets.read],
                "write_fail": [str(Path(p).resolve()) for p in [*secrets.write, worktree]],
                "read_ok": [str(p) for p in data], "write_ok": [str(outputs)],
                "connect": host, "marker": marker}
        argv, env = seal.benchmark(
            [sys.executable, *server_boot("loop.measure.sealprobe"), json.dumps(plan)],
            worktree=worktree, outputs=outputs, readable=data,
            env=minimal_env(dict(os.environ), {}))
        problems += _run_probe("the benchmark seal", argv, env, plan)
        served = [Path(p).resolve() for p in (trainer,) if p is not None and Path(p).exists()]
        plan = {"read_fail": [str(Path(p).resolve()) for p in [*secrets.read, *data]],
                "write_fail": [str(Path(p).resolve())
                               for p in [*secrets.write, worktree, Path("/tmp")]],
                "read_ok": [str(p) for p in served], "write_ok": [], "connect": host,
                "marker": marker}
        argv, env = seal.server(
            [sys.executable, *server_boot("loop.measure.sealprobe"), json.dumps(plan)],
            readable=served, env=minimal_env(dict(os.environ), {}))
        problems += _run_probe("the model server's seal", argv, env, plan)
    return problems


def holds(seal: Seal, repo: Path, data_folder: Path, *, worktree: Path,
          data: Sequence[Path], trainer: Path | None = None) -> None:
    """Prove `seal` for runs of `worktree` on this dataset, or raise SealError with every
    breach and the fix: nothing would be kept otherwise."""
    secrets, _ = off_limits(repo, data_folder)
    breaches = prove(seal, worktree=worktree, data=data, secrets=secrets, trainer=trainer)
    if breaches:
        raise SealError("the seal does not hold here: " + "; ".join(breaches)
                        + f"; nothing would be kept; {OPT_OUT}")


def for_checkout(sealed: bool, repo: Path, data_folder: Path, *, worktree: Path,
                 data: Sequence[Path], trainer: Path | None = None) -> Seal:
    """The seal for benchmarks of `worktree` (`autogolf bench`, `adopt`), chosen and
    proved."""
    chosen = choose(sealed, off_limits(repo, data_folder)[1])
    holds(chosen, repo, data_folder, worktree=worktree, data=data, trainer=trainer)
    return chosen


def _run_probe(which: str, argv: list[str], env: dict[str, str], plan: dict) -> list[str]:
    try:
        done = subprocess.run(argv, env=env, capture_output=True, text=True,
                              timeout=PROBE_TIMEOUT_S, stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise SealError(f"{which} could not start: {exc}; {OPT_OUT}") from None
    lines = [ln for ln in done.stdout.splitlines() if ln.startswith("{")]
    if done.returncode != 0 or not lines:
        said = " ".join((done.stderr or done.stdout).split())[-300:] or "no output"
        hint = ("; user namespaces may be disabled (sysctl kernel.unprivileged_userns_clone=1, "
                "or AppArmor's kernel.apparmor_restrict_unprivileged_userns=0)"
                if "namespace" in said or "Operation not permitted" in said else "")
        raise SealError(f"{which} failed to start its probe (exit {done.returncode}: {said})"
                        f"{hint}; {OPT_OUT}")
    breaches = list(json.loads(lines[-1]).get("breaches", []))
    for folder in plan["write_fail"]:  # a write that reached the real disk
        marker = Path(folder) / plan["marker"]
        if marker.exists():
            breaches.append(f"wrote into {folder}")
            marker.unlink(missing_ok=True)
    for folder in plan["write_ok"]:
        (Path(folder) / plan["marker"]).unlink(missing_ok=True)
    return [f"{which}: {breach}" for breach in breaches]
