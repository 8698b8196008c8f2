"""`autogolf doctor`: is this machine ready for an overnight run? One line per fact.

Each check says ok, warn (works, but slower or riskier) or FAIL (a blocker: the loop cannot
produce a trustworthy result), and every warn or FAIL carries the command that fixes it.
The exit status is 1 when there is any blocker, so scripts can stop before the loop starts.
A value the doctor cannot find out is printed as "unknown", never as 0.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass
from pathlib import Path

from loop.data import datasets, sample_data, shards, tokenbytes
from loop.platform import blas_in_use, free_disk_bytes, openblas_path
from loop.proposers.sandbox import Sandbox
from loop.store.gitsession import GitError, git

OK, WARN, FAIL = "ok", "warn", "FAIL"
GIB = 1024**3
DISK_WARN_BYTES = 5 * GIB  # a few real shards (200 MB each) plus logs and checkpoints
DISK_FAIL_BYTES = GIB // 2
SETUP_FIX = "bash scripts/setup.sh"


@dataclass
class Check:
    name: str
    status: str
    detail: str
    fix: str | None = None


# ----------------------------------------------------------------------------- checks


def check_python() -> list[Check]:
    version = platform.python_version()
    return [Check("python", OK, f"{version} at {sys.executable}")]


def _import_mlx():
    import mlx.core as mx

    return mx


def check_mlx() -> list[Check]:
    try:
        mx = _import_mlx()
    except Exception as exc:  # ImportError, or a broken native library (OSError)
        fix = ("bash scripts/setup.sh (mlx with its CPU backend on Linux, Metal on macOS; "
               "--cuda for an NVIDIA GPU)")
        return [Check("mlx", FAIL, f"cannot import mlx.core: {exc}", fix)]
    version = getattr(mx, "__version__", None) or "unknown"
    try:
        device = str(mx.default_device())
    except Exception:
        device = "unknown"
    metal = _metal_available(mx)
    detail = f"{version}, default device {device}, Metal {metal}, CUDA {_cuda_available(mx)}"
    if sys.platform == "darwin" and metal != "available":
        fix = "use an Apple-silicon Mac with macOS 13.5+ and the arm64 Python build"
        return [Check("mlx", WARN, detail + " (training will run on the CPU)", fix)]
    return [Check("mlx", OK, detail)]


def _metal_available(mx) -> str:
    try:
        return "available" if mx.metal.is_available() else "not available"
    except Exception:
        return "unknown"


def _cuda_available(mx) -> str:
    """MLX's CUDA backend in words; MLX before the CUDA backend has no mx.cuda."""
    try:
        return "available" if mx.cuda.is_available() else "not available"
    except AttributeError:
        return "not available"
    except Exception:
        return "unknown"


# ----------------------------------------------------------------------------- GPU

CUDA_MIN_CAPABILITY = (7, 5)  # MLX's CUDA backend needs SM 7.5 (Turing) or newer
CUDA_SETUP_FIX = "AUTOGOLF_BACKEND=cuda bash scripts/setup.sh (or --cuda13 for driver >= 580)"
_SMI_FIELDS = ("name", "driver_version", "memory.total", "memory.used", "compute_cap")


@dataclass
class SmiReport:
    """What nvidia-smi said: one dict per GPU (its _SMI_FIELDS), or why it said nothing."""

    gpus: list[dict[str, str]]
    error: str | None = None


def _nvidia_smi() -> SmiReport | None:
    """The GPUs nvidia-smi lists, or None when nvidia-smi is not installed.

    compute_cap is a recent query field (driver 510+); older drivers reject it, so the query
    is repeated without it.
    """
    exe = shutil.which("nvidia-smi")
    if exe is None:
        return None
    first_line = "no output"
    for fields in (_SMI_FIELDS, _SMI_FIELDS[:-1]):
        try:
            done = subprocess.run([exe, f"--query-gpu={','.join(fields)}",
                                   "--format=csv,noheader,nounits"],
                                  capture_output=True, text=True, timeout=30)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return SmiReport([], f"nvidia-smi did not run: {exc}")
        if done.returncode == 0:
            rows = [line.split(",") for line in done.stdout.splitlines() if line.strip()]
            return SmiReport([dict(zip(fields, (v.strip() for v in row), strict=False))
                              for row in rows])
        lines = (done.stdout + done.stderr).strip().splitlines()
        first_line = lines[0] if lines else f"exit {done.returncode}"
    return SmiReport([], f"nvidia-smi failed: {first_line}")


def _gib(value: object) -> str:
    return f"{value / GIB:.1f} GiB" if isinstance(value, int) and value > 0 else "unknown"


def _mib_text_as_gib(value: str | None) -> str:
    try:
        return f"{float(value) / 1024:.1f} GiB"
    except (TypeError, ValueError):  # "[N/A]" on some boards
        return "unknown"


def _device_info(mx) -> dict:
    try:
        return dict(mx.device_info())
    except Exception:  # MLX before 0.30 has no mx.device_info
        return {}


def check_gpu() -> list[Check]:
    """The GPU MLX trains on: CUDA device, driver and memory, or Metal; else why none."""
    try:
        mx = _import_mlx()
    except Exception:
        return []  # the mlx check already reports the blocker
    smi = _nvidia_smi()
    if _cuda_available(mx) == "available":
        return [_cuda_check(_device_info(mx), smi)]
    if _metal_available(mx) == "available":
        info = _device_info(mx)
        detail = (f"Metal: {info.get('device_name') or info.get('architecture') or 'Apple GPU'},"
                  f" memory {_gib(info.get('memory_size'))}, recommended working set "
                  f"{_gib(info.get('max_recommended_working_set_size'))}")
        return [Check("gpu", OK, detail)]
    return [_no_mlx_gpu_check(smi)]


def _cuda_check(info: dict, smi: SmiReport | None) -> Check:
    name = info.get("device_name") or "unknown"
    major, minor = info.get("compute_capability_major"), info.get("compute_capability_minor")
    capability = f"{major}.{minor}" if isinstance(major, int) else "unknown"
    driver = "unknown (nvidia-smi not found)"
    if smi is not None:
        driver = smi.gpus[0].get("driver_version", "unknown") if smi.gpus else (
            f"unknown ({smi.error})")
    total = _gib(info.get("total_memory"))
    if total == "unknown" and smi is not None and smi.gpus:
        total = _mib_text_as_gib(smi.gpus[0].get("memory.total"))
    detail = (f"CUDA: {name}, compute capability {capability}, memory {total} total / "
              f"{_gib(info.get('free_memory'))} free, driver {driver}")
    if isinstance(major, int) and isinstance(minor, int) and (major, minor) < CUDA_MIN_CAPABILITY:
        fix = "MLX's CUDA backend needs compute capability 7.5+; use bash scripts/setup.sh --cpu"
        return Check("gpu", FAIL, detail, fix)
    return Check("gpu", OK, detail)


def _no_mlx_gpu_check(smi: SmiReport | None) -> Check:
    if smi is None:
        return Check("gpu", OK, "none: MLX runs on the CPU (no Metal; nvidia-smi not found)")
    if not smi.gpus:
        fix = "check the NVIDIA driver (nvidia-smi must list the GPU), then re-run doctor"
        return Check("gpu", WARN, f"MLX runs on the CPU; {smi.error}", fix)
    gpu = smi.gpus[0]
    detail = (f"MLX runs on the CPU, but nvidia-smi lists {len(smi.gpus)} NVIDIA GPU(s): "
              f"{gpu.get('name', 'unknown')}, compute capability "
              f"{gpu.get('compute_cap', 'unknown')}, memory "
              f"{_mib_text_as_gib(gpu.get('memory.total'))}, driver "
              f"{gpu.get('driver_version', 'unknown')}")
    try:
        capable = tuple(int(x) for x in gpu["compute_cap"].split(".")) >= CUDA_MIN_CAPABILITY
    except (KeyError, ValueError):
        capable = True  # unknown: let the CUDA install find out
    if not capable:
        return Check("gpu", OK, detail + " (below the 7.5 MLX's CUDA backend needs)")
    return Check("gpu", WARN, detail, CUDA_SETUP_FIX)


def check_timeouts(root: Path) -> list[Check]:
    """The profile timeouts that apply on this machine, and for which device class."""
    from loop.config import ConfigError, load_config
    from loop.platform import device_class

    try:
        cfg = load_config(root / "autogolf.yaml")
    except ConfigError as exc:
        more = f" (and {len(exc.problems) - 1} more)" if len(exc.problems) > 1 else ""
        return [Check("timeouts", FAIL, exc.problems[0] + more,
                      "fix autogolf.yaml (autogolf run lists every problem)")]
    device = cfg.device_class or (cfg.device if cfg.device != "auto" else device_class())
    given = "per device class" if cfg.device_class else "the same on every device"
    listed = ", ".join(f"{p.name} {p.timeout_s:g} s" for p in cfg.profiles.values())
    return [Check("timeouts", OK, f"{device} ({given}): {listed}")]


def check_containment(root: Path) -> list[Check]:
    """How an agent proposer would be confined here (agent.sandbox, loop/proposers/sandbox.py)."""
    from loop.config import ConfigError, load_config
    from loop.proposers.sandbox import INSTALL, SandboxError, choose

    try:
        cfg = load_config(root / "autogolf.yaml")
        sandbox = choose(cfg.agent_sandbox_mode, cfg.agent_sandbox_network,
                         cfg.agent_sandbox_writable)
    except ConfigError as exc:
        return [Check("containment", WARN, f"unknown: autogolf.yaml: {exc.problems[0]}")]
    except SandboxError as exc:
        return [Check("containment", FAIL, str(exc), "see docs/AGENT_NIGHT.md (containing)")]
    used = "agent" in (cfg.proposer, *cfg.proposer_rotation)
    detail = sandbox.describe().removeprefix("agent containment: ")
    detail += "" if used else " (the agent proposer is not configured)"
    if sandbox.tool is None and cfg.agent_sandbox_mode != "off":
        tool = "sandbox-exec" if sys.platform == "darwin" else "bwrap"
        return [Check("containment", WARN, detail, INSTALL[tool])]
    return [Check("containment", OK, detail)]


def check_seal(root: Path) -> list[Check]:
    """The judge's seal (judge.sealed, loop/measure/seal.py), proved here as `run` proves it:
    a probe inside must fail to read the validation shards, to write outside, to connect."""
    from loop.config import ConfigError, load_config
    from loop.measure import seal

    try:
        cfg = load_config(root / "autogolf.yaml")
        info = datasets.resolve(cfg.dataset, datasets.cache_root(root))
    except ConfigError as exc:
        return [Check("seal", WARN, f"unknown: autogolf.yaml: {exc.problems[0]}")]
    except datasets.DatasetError as exc:
        return [Check("seal", WARN, f"not proved: no dataset to prove it on ({exc.problem})")]
    if not (cfg.judge_enabled and cfg.judge_sealed):
        return [Check("seal", WARN, seal.Seal(None).describe(),
                      "set judge: {sealed: true} in autogolf.yaml")]
    try:
        with tempfile.TemporaryDirectory(prefix="autogolf-doctor-") as scratch:
            sealed = seal.for_checkout(True, root, info.data_path, worktree=Path(scratch),
                                       data=[info.tokenizer_path])
    except seal.SealError as exc:
        return [Check("seal", FAIL, str(exc), "see docs/THREAT_MODEL.md")]
    return [Check("seal", OK, f"{sealed.describe()}; proved: the validation shards unreadable, "
                              "no write outside, no network")]


AGENT_PROBE_TIMEOUT_S = 30
# What each agent CLI writes in your home folder: list it under agent.sandbox.writable.
AGENT_STATE = {"claude": "[~/.claude, ~/.claude.json]", "pi": "[~/.pi/agent]",
               "codex": "[~/.codex]"}


def check_agent(root: Path) -> list[Check]:
    """The agent command, found and started confined as the night will (`<cmd> --version`:
    it answers without an API call, so no token is spent). Only when the agent proposes."""
    from loop.config import ConfigError, load_config
    from loop.proposers.sandbox import SandboxError, choose

    try:
        cfg = load_config(root / "autogolf.yaml")
    except ConfigError:
        return []  # the timeouts line reports the configuration's problems
    if "agent" not in (cfg.proposer, *cfg.proposer_rotation) or not cfg.agent_command:
        return []
    program = cfg.agent_command[0]
    exe = shutil.which(program)
    if exe is None:
        return [Check("agent", FAIL, f"agent.command: {program!r} is not on PATH",
                      f"install {Path(program).name} or give its full path in agent.command")]
    try:
        sandbox = choose(cfg.agent_sandbox_mode, cfg.agent_sandbox_network,
                         cfg.agent_sandbox_writable)
    except SandboxError as exc:
        return [Check("agent", FAIL, str(exc), "see docs/AGENT_NIGHT.md")]
    confined, said = _version_in(sandbox, exe)
    where = f"under {sandbox.tool}" if sandbox.tool else "unconfined"
    if confined:
        return [Check("agent", OK, f"{exe} --version {where}: {said}")]
    name = Path(program).name
    hint = (f"list what {name} writes under agent.sandbox.writable, e.g. {AGENT_STATE[name]}"
            if name in AGENT_STATE else "list what it writes under agent.sandbox.writable")
    return [Check("agent", FAIL, f"{exe} --version failed {where}: {said}", hint)]


def _version_in(sandbox: Sandbox, exe: str) -> tuple[bool, str]:
    """(it answered, its first output line or the failure) for `exe --version` run as the
    agent would be: confined to a scratch worktree and attempt folder."""
    with tempfile.TemporaryDirectory(prefix="autogolf-doctor-") as scratch:
        tree, attempt = Path(scratch) / "tree", Path(scratch) / "attempt"
        tree.mkdir()
        attempt.mkdir()
        run = sandbox.wrap([exe, "--version"], tree, attempt, dict(os.environ))
        try:
            done = subprocess.run(run.argv, cwd=tree, env=run.env, capture_output=True,
                                  text=True, timeout=AGENT_PROBE_TIMEOUT_S,
                                  stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, str(exc)
    lines = (done.stdout + done.stderr).strip().splitlines()
    first = lines[0][:160] if lines else "no output"
    return done.returncode == 0, first if done.returncode == 0 else (
        f"exit {done.returncode}: {first}")


def check_sentencepiece() -> list[Check]:
    try:
        import sentencepiece as spm
    except Exception as exc:
        return [Check("sentencepiece", FAIL, f"cannot import: {exc}", SETUP_FIX)]
    return [Check("sentencepiece", OK, getattr(spm, "__version__", "unknown"))]


def check_blas() -> list[Check]:
    detail = blas_in_use()
    if sys.platform.startswith("linux") and openblas_path() is None:
        fix = "apt-get install libopenblas0-pthread (as root), then re-run doctor"
        return [Check("blas", WARN, detail, fix)]
    return [Check("blas", OK, detail)]


def _run_git(root: Path, *args: str) -> str | None:
    """git's answer, or None when git failed (the check then says what that means)."""
    try:
        return git(root, *args, timeout=30).strip()
    except (OSError, GitError):
        return None


def check_git(root: Path) -> list[Check]:
    if not root.is_dir():
        return [Check("git", FAIL, f"{root} does not exist", "run doctor from your checkout")]
    if shutil.which("git") is None:
        return [Check("git", FAIL, "git is not installed", "install git (xcode-select "
                      "--install on macOS, apt-get install git on Linux)")]
    if _run_git(root, "rev-parse", "--show-toplevel") is None:
        fix = f"cd {root} && git init && git add -A && git commit -m start"
        return [Check("git", FAIL, f"{root} is not a git repository", fix)]
    head = _run_git(root, "rev-parse", "--short", "HEAD")
    if head is None:
        fix = "git add -A && git commit -m start (the loop branches from your HEAD)"
        return [Check("git", FAIL, "no commits yet", fix)]
    branch_name = _run_git(root, "rev-parse", "--abbrev-ref", "HEAD") or "unknown"
    status = _run_git(root, "status", "--porcelain")
    changed = "unknown" if status is None else str(len(status.splitlines()))
    detail = f"branch {branch_name} at {head}, {changed} uncommitted changes"
    if changed not in ("0", "unknown"):
        note = "the loop starts from HEAD; commit what it should build on"
        return [Check("git", WARN, detail, note)]
    return [Check("git", OK, detail)]


def check_disk(root: Path) -> list[Check]:
    try:
        free = free_disk_bytes(root)
    except OSError as exc:
        return [Check("disk", WARN, f"free space unknown ({exc})")]
    detail = f"{free / GIB:.1f} GiB free under {root}"
    fix = "free disk space (logs/, .autogolf/experiments/, old shards)"
    if free < DISK_FAIL_BYTES:
        return [Check("disk", FAIL, detail, fix)]
    if free < DISK_WARN_BYTES:
        return [Check("disk", WARN, detail, fix)]
    return [Check("disk", OK, detail)]


# ----------------------------------------------------------------------------- datasets


def check_datasets(root: Path) -> list[Check]:
    """The configured dataset (a name or a folder anywhere on disk) and every other known
    one: present or not, and where each was looked for; the configured one missing is a
    blocker."""
    try:
        configured = datasets.configured(root)
    except datasets.DatasetError as exc:
        if exc.fix:  # a `dataset:` value of the wrong shape
            return [Check("dataset", FAIL, exc.problem, exc.fix)]
        configured = "sample"  # unreadable autogolf.yaml: the config check owns that error
        note = Check("dataset", WARN, f"cannot read dataset: from autogolf.yaml ({exc})")
    else:
        note = None
    checks = [note] if note else []
    if isinstance(configured, datasets.DatasetFolder):
        checks.append(_folder_check(configured, root))
        wanted = None
    else:
        try:
            wanted = datasets.spec_for(configured).name
        except datasets.DatasetError as exc:
            return [Check("dataset", FAIL, str(exc),
                          "set dataset: sample, fineweb or {path: /your/data/folder}")]
    for key in sorted(datasets.DATASETS):
        checks.append(_dataset_check(key, root, wanted))
    return checks


def _folder_check(folder: datasets.DatasetFolder, root: Path) -> Check:
    """`dataset: {path: ...}`: the folder and tokenizer autogolf.yaml names, wherever they are."""
    label = f"data:{folder.path}"
    try:
        info = datasets.resolve(folder, root)
    except datasets.DatasetError as exc:
        return Check(label, FAIL, exc.problem, exc.fix)
    problems = _match_problems(info, root)
    summary = f"{_summary(info, 'configured')}; tokenizer {info.tokenizer_path}"
    if problems:
        return Check(label, FAIL, f"{summary}; " + "; ".join(problems[:3]),
                     "check the folder and the tokenizer named in autogolf.yaml's dataset:")
    return Check(label, OK, summary)


def _dataset_check(key: str, root: Path, wanted: str | None) -> Check:
    spec = datasets.DATASETS[key]
    label = f"data:{key}"
    role = "configured" if spec.name == wanted else "optional"
    try:
        info = datasets.resolve(key, root)
    except datasets.DatasetError as exc:
        if role == "optional":
            looked = Path(root).resolve() / spec.data_dir
            return Check(label, OK, f"not found (optional; looked for {looked})")
        return Check(label, FAIL, exc.problem, exc.fix)
    problems = _match_problems(info, root)
    summary = _summary(info, role)
    if problems:
        fix = (f"{spec.fix} --force" if spec.kind == "sample"
               else "delete the files named and re-run the bootstrap with --train-shards N")
        status = FAIL if role == "configured" else WARN
        return Check(label, status, f"{summary}; " + "; ".join(problems[:3]), fix)
    return Check(label, OK, summary)


def _summary(info: datasets.DatasetInfo, role: str) -> str:
    report = shards.validate_directory(info.data_path)
    try:
        ident = datasets.dataset_id(info)
    except (datasets.DatasetError, OSError):
        ident = f"{info.name}:unknown"
    return (f"{ident} ({role}): {report.train_files} train shards / "
            f"{report.train_tokens:,} tokens, {report.val_files} val / "
            f"{report.val_tokens:,} tokens in {info.data_path}")


def _match_problems(info: datasets.DatasetInfo, root: Path) -> list[str]:
    """Does the tokenizer belong to the shards? Size of the vocab, and every id below it."""
    problems = _tokenizer_problems(info)
    # A sample in its usual folder (any vocabulary) is checked against its manifest.
    known = next((s for s in datasets.DATASETS.values() if s.name == info.name), None)
    home = (Path(root) / known.data_dir).resolve() if known else None
    if info.kind == "sample" and info.data_path.resolve() == home:
        return problems + sample_data.validate_sample(root, info.vocab_size)
    report = shards.validate_directory(info.data_path)
    problems += report.errors
    for path in shards.shard_files(info.data_path, "val"):  # ids: the split that is scored
        try:
            shards.validate_shard(path, info.vocab_size)
        except shards.ShardError as exc:
            problems.append(str(exc))
    return problems


def _tokenizer_problems(info: datasets.DatasetInfo) -> list[str]:
    try:
        pieces = tokenbytes.vocab_size_of(info.tokenizer_path)
    except Exception as exc:
        return [f"{info.tokenizer_path}: not a sentencepiece model or a pure-byte tokenizer "
                f"({exc})"]
    if pieces != info.vocab_size:
        return [f"{info.tokenizer_path}: {pieces} pieces, the dataset expects {info.vocab_size}"]
    return []


# ----------------------------------------------------------------------------- report


def run_checks(root: Path) -> list[Check]:
    return [
        *check_python(),
        *check_mlx(),
        *check_gpu(),
        *check_timeouts(root),
        *check_seal(root),
        *check_containment(root),
        *check_agent(root),
        *check_sentencepiece(),
        *check_blas(),
        *check_datasets(root),
        *check_git(root),
        *check_disk(root),
    ]


def format_report(checks: list[Check]) -> str:
    width = max(len(c.name) for c in checks)
    lines = []
    for check in checks:
        lines.append(f"{check.status:<4}  {check.name:<{width}}  {check.detail}")
        if check.fix and check.status != OK:
            lines.append(f"{'':<4}  {'':<{width}}  fix: {check.fix}")
    blockers = sum(c.status == FAIL for c in checks)
    warnings = sum(c.status == WARN for c in checks)
    verdict = "ready" if not blockers else f"{blockers} blocker(s): fix the FAIL lines first"
    lines.append(f"doctor: {verdict} ({warnings} warning(s))")
    return "\n".join(lines)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--root", type=Path, help="repository / cache root (default: found)")
    parser.add_argument("--json", action="store_true", help="print the checks as JSON")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="autogolf doctor", description=__doc__)
    add_arguments(parser)
    return report(parser.parse_args(argv))


def report(args: argparse.Namespace) -> int:
    """Run every check and print them (`autogolf doctor`); 1 when any is a blocker."""
    root = (args.root or datasets.cache_root()).resolve()
    checks = run_checks(root)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=2))
    else:
        print(format_report(checks))
    return 1 if any(c.status == FAIL for c in checks) else 0


if __name__ == "__main__":
    sys.exit(main())
