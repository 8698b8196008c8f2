"""The judge's own score of an artifact, computed in the daemon process (issue 15).

`score_artifact` starts a model server (loop/judge/model_server.py) for the candidate's
trainer file and artifact, sends it the holdout in non-overlapping windows of the protocol's
seq len (input tokens only), and from the logits it returns computes, itself, in numpy
(float32 exponentials, float64 sums): log-softmax, the cross entropy of every target, and the
target bytes (loop.data.tokenbytes). A "distribution" that does not sum to one cannot happen:
the judge normalises.

Fail closed: every way the candidate can go wrong (no artifact, a trainer that raises, a
server that hangs or dies, logits of the wrong shape or dtype or not finite, a model that
looks ahead) gives a `Score` with status "unscorable" and a reason, and no numbers.

`measure_total_bytes` is the size the cap applies to, measured from the files themselves.
"""

from __future__ import annotations

import math
import mmap
import os
import select
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loop.data import tokenbytes
from loop.judge import model_server as ms

DEFAULT_CODE_FILES = (Path("benchmark/train_gpt_mlx.py"),)
EVAL_TOKENS_PER_BATCH = 8192  # float64 log-softmax of a batch: tokens x vocab x 8 bytes
LOAD_TIMEOUT_S = 300.0
FORWARD_TIMEOUT_S = 300.0
# Earlier logits may move by float rounding when later inputs change (batched kernels);
# a model that reads ahead moves them by far more. Enough for float32 and bf16 activations.
PROBE_TOLERANCE = 5e-3
STOP_POLL_S = 0.25  # how often a waiting judge asks whether a stop was requested
STDERR_TAIL = 1500
# What the model server inherits from the daemon's environment: enough to run numpy and MLX
# with the fast BLAS, not the daemon's settings or an agent proposer's API keys.
SERVER_ENV_KEYS = ("PATH", "HOME", "LANG", "TMPDIR", "LD_PRELOAD", "LD_LIBRARY_PATH")
SERVER_ENV_PREFIXES = ("MLX_", "OPENBLAS_", "OMP_", "LC_")


class Unscorable(Exception):
    """The candidate cannot be scored; the message is the reason a researcher reads."""


@dataclass(frozen=True)
class Score:
    status: str  # "scored" | "unscorable"
    reason: str
    val_loss: float | None = None  # nats per target token
    val_bpb: float | None = None
    tokens: int = 0
    bytes: int = 0
    loader: str | None = None  # "contract" | "builtin"
    timings: dict[str, float] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status == "scored"

    def record(self) -> dict:
        return {"status": self.status, "reason": self.reason, "val_loss": self.val_loss,
                "val_bpb": self.val_bpb, "tokens": self.tokens, "bytes": self.bytes,
                "loader": self.loader, "timings": self.timings}


# --------------------------------------------------------------------------- the client


def _widen_pipe(fd: int) -> None:
    """Linux: a 1 MiB pipe instead of 64 KiB, so a batch of logits (tens of MB) crosses in
    fewer wake-ups of the two processes. Elsewhere, or when refused, the default stays."""
    try:
        import fcntl

        fcntl.fcntl(fd, getattr(fcntl, "F_SETPIPE_SZ", 1031), 1 << 20)
    except (ImportError, OSError):
        pass


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The model server's environment: SERVER_ENV_KEYS and SERVER_ENV_PREFIXES of base."""
    base = dict(os.environ if base is None else base)
    return {k: v for k, v in base.items()
            if k in SERVER_ENV_KEYS or k.startswith(SERVER_ENV_PREFIXES)}


def _logits_buffer(nbytes: int) -> tuple[mmap.mmap | None, int | None]:
    """The judge's read-only map of a new shared buffer and its descriptor for the server;
    (None, None) for nbytes 0 or where shared memory is refused (the pipe then)."""
    if nbytes <= 0:
        return None, None
    try:
        fd = ms.shared_buffer(nbytes)
    except OSError:
        return None, None
    try:
        return mmap.mmap(fd, nbytes, prot=mmap.PROT_READ), fd
    except (OSError, ValueError):
        os.close(fd)
        return None, None


def logits_bytes_for(batch_tokens: int, seq_len: int, vocab: int) -> int:
    """The shared buffer for the largest answer: a batch (or the probe's 4 windows) of
    float32 logits, with room for a vocab padded up to 2x (unwritten pages cost nothing)."""
    windows = max(max(1, batch_tokens // seq_len), 4)
    return windows * seq_len * vocab * 2 * 4


class ModelServer:
    """A running model server; `forward` sends input tokens and returns its logits."""

    def __init__(self, trainer: Path, artifact: Path, cwd: Path, *, python: str | None = None,
                 env: dict[str, str] | None = None, load_timeout: float = LOAD_TIMEOUT_S,
                 forward_timeout: float = FORWARD_TIMEOUT_S, logit_softcap: float = 30.0,
                 rope_base: float = 10000.0, logits_bytes: int = 0,
                 stop: Callable[[], bool] | None = None) -> None:
        self.forward_timeout = forward_timeout
        self.stop = stop  # the daemon's deadline or a signal: the server is killed at once
        self.stderr = tempfile.TemporaryFile()
        self._shm, fd = _logits_buffer(logits_bytes)  # logits_bytes 0: the pipe only
        try:
            self.proc = subprocess.Popen(
                ms.command(python or sys.executable, Path(trainer).resolve(),
                           Path(artifact).resolve(), logit_softcap, rope_base, fd),
                cwd=cwd, env=server_env() if env is None else env, stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=self.stderr, pass_fds=() if fd is None else (fd,))
        finally:
            if fd is not None:
                os.close(fd)  # the server has its copy; the map keeps the memory
        os.set_blocking(self.proc.stdout.fileno(), False)
        _widen_pipe(self.proc.stdout.fileno())
        self.loader = None
        try:
            header, _ = self._receive(time.monotonic() + load_timeout, "loading the model")
            if not header.get("ok"):
                raise Unscorable(f"model server: {header.get('error')}")
        except BaseException:
            self.close()
            raise
        self.loader = header.get("loader")
        self.transport = "shm" if header.get("transport") == "shm" and self._shm else "pipe"

    def _stderr_tail(self) -> str:
        self.stderr.seek(0)
        text = self.stderr.read().decode("utf-8", "replace").strip()
        return f"; its stderr ends: {text[-STDERR_TAIL:]}" if text else ""

    def _read(self, n: int, deadline: float, doing: str) -> bytearray:
        # Straight into one buffer: a batch of logits is tens of MB, copies add up.
        buf = bytearray(n)
        view, got = memoryview(buf), 0
        raw = self.proc.stdout.raw  # unbuffered: select() and the reads see the same bytes
        while got < n:
            left = deadline - time.monotonic()
            if left <= 0:
                self.proc.kill()  # it is busy or stuck: asking it to close would wait too
                self.proc.wait()
                self.close()
                raise Unscorable(f"model server: no answer while {doing} within the timeout")
            if self.stop is not None and self.stop():
                self.proc.kill()
                self.proc.wait()
                self.close()
                raise Unscorable(f"model server: stopped while {doing} (a stop was requested)")
            ready, _, _ = select.select([raw], [], [], min(left, STOP_POLL_S))
            if not ready:
                continue
            count = raw.readinto(view[got:])
            if count == 0:
                code = self.proc.wait(timeout=10)
                raise Unscorable(f"model server exited (code {code}) while {doing}"
                                 f"{self._stderr_tail()}")
            got += count or 0  # None: nothing there after all
        return buf

    def _receive(self, deadline: float, doing: str) -> tuple[dict, bytes]:
        try:
            return ms.read_frame(lambda n: self._read(n, deadline, doing))
        except ms.ProtocolError as exc:
            self.close()
            raise Unscorable(f"model server broke the protocol while {doing}: {exc}") from None

    def forward(self, tokens: np.ndarray) -> np.ndarray:
        x = np.ascontiguousarray(tokens, dtype="<i4")
        try:
            ms.write_frame(self.proc.stdin, {"op": "forward", "dtype": x.dtype.str,
                                             "shape": list(x.shape)}, x)
        except (BrokenPipeError, OSError):
            code = self.proc.wait(timeout=10)
            raise Unscorable(f"model server exited (code {code}) before a request"
                             f"{self._stderr_tail()}") from None
        header, payload = self._receive(time.monotonic() + self.forward_timeout,
                                        f"computing logits for {x.shape[0]} windows")
        if not header.get("ok"):
            raise Unscorable(f"the model failed: {header.get('error')}")
        try:
            if header.get("shm") is True:
                return self._shared_logits(header)
            return ms.array_of(header, payload)
        except (ms.ProtocolError, KeyError, TypeError, ValueError) as exc:
            raise Unscorable(f"model server sent an unreadable array: {exc}") from None

    def _shared_logits(self, header: dict) -> np.ndarray:
        """A copy of the logits the server wrote into the shared buffer (a snapshot: the
        server's code cannot change what the judge checks and scores)."""
        shape = tuple(int(n) for n in header["shape"])
        count = int(np.prod(shape))
        if self._shm is None or header.get("dtype") != "<f4" or count * 4 > len(self._shm) or (
                count < 0):
            raise ms.ProtocolError(f"shared logits {header.get('dtype')} {shape} do not fit "
                                   "the judge's buffer")
        return np.frombuffer(self._shm, dtype="<f4", count=count).reshape(shape).copy()

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                ms.write_frame(self.proc.stdin, {"op": "close"})
                self.proc.stdin.close()
                self.proc.wait(timeout=10)
            except (OSError, ValueError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        for pipe in (self.proc.stdin, self.proc.stdout):
            try:
                pipe.close()
            except OSError:
                pass  # already broken: nothing left to flush
        self.stderr.close()
        if self._shm is not None:
            self._shm.close()
            self._shm = None

    def __enter__(self) -> ModelServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# --------------------------------------------------------------------------- the score


def windows(tokens: np.ndarray, seq_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Inputs and targets of the non-overlapping windows, shape (windows, seq_len)."""
    n = (tokens.size - 1) // seq_len
    if n < 1:
        raise Unscorable(f"{tokens.size} tokens do not make one window of seq_len {seq_len}")
    t = np.asarray(tokens, dtype=np.int64)
    return t[:n * seq_len].reshape(n, seq_len), t[1:n * seq_len + 1].reshape(n, seq_len)


def check_logits(logits: np.ndarray, batch: int, seq_len: int, vocab: int) -> np.ndarray:
    """The logits as float32 after the shape, dtype and finiteness checks."""
    if logits.dtype.kind != "f":
        raise Unscorable(f"the model's logits have dtype {logits.dtype}, not a float")
    if logits.ndim != 3 or logits.shape[:2] != (batch, seq_len) or logits.shape[2] < vocab:
        raise Unscorable(f"the model's logits have shape {tuple(logits.shape)}, expected "
                         f"({batch}, {seq_len}, vocab >= {vocab})")
    bad = int(np.size(logits) - np.count_nonzero(np.isfinite(logits)))
    if bad:
        raise Unscorable(f"the model's logits are not finite ({bad} nan/inf values)")
    return logits.astype(np.float32, copy=False)


def nats_of(logits: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """Cross entropy (nats, float64) of each target: log-sum-exp minus the target's logit.

    The shifted exponentials lie in (0, 1] and are exact enough in float32; their sums, the
    logarithm and the subtraction are float64.
    """
    top = logits.max(axis=-1, keepdims=True)
    shifted = logits - top
    total = np.exp(shifted, out=shifted).sum(axis=-1, dtype=np.float64)  # one buffer, not two
    lse = top[..., 0].astype(np.float64) + np.log(total)
    target = np.take_along_axis(logits, targets[..., None], axis=-1)[..., 0]
    return lse - target.astype(np.float64)


def probe_causality(server: ModelServer, x: np.ndarray, vocab: int,
                    tolerance: float = PROBE_TOLERANCE) -> None:
    """Change the inputs from a cut point on; the logits before it must not move.

    The later tokens come from another window (real text, so a model cannot tell a probe by
    odd inputs); cut points 1, seq/2 and seq-1 catch a model that reads any token ahead.
    The original window rides in the same batch, so both see the same kernels.
    """
    seq = x.shape[1]
    base, other = x[0], x[len(x) // 2] if len(x) > 1 else np.roll(x[0], seq // 3)
    cuts = sorted({c for c in (1, seq // 2, seq - 1) if 0 < c < seq})
    batch = [base]
    for c in cuts:
        v = base.copy()
        v[c:] = other[c:]
        v[c] = (base[c] + 1) % vocab if v[c] == base[c] else v[c]
        batch.append(v)
    logits = check_logits(server.forward(np.stack(batch)), len(batch), seq, vocab)
    for i, c in enumerate(cuts, start=1):
        moved = float(np.abs(logits[i, :c] - logits[0, :c]).max())
        if moved > tolerance:
            raise Unscorable(f"the model looks ahead: changing input tokens from position {c} "
                             f"on changed the logits at earlier positions by up to "
                             f"{moved:.3g} (tolerance {tolerance:g})")


def _score(server: ModelServer, tokens: np.ndarray, seq_len: int,
           tables: tokenbytes.ByteTables, batch_tokens: int, probe: bool,
           probe_tolerance: float, timings: dict[str, float]) -> tuple[float, int, int]:
    x, y = windows(tokens, seq_len)
    vocab = len(tables.base_bytes)
    if probe:
        t0 = time.perf_counter()
        probe_causality(server, x, vocab, probe_tolerance)
        timings["probe_s"] = time.perf_counter() - t0
    per_batch = max(1, batch_tokens // seq_len)
    nats, forward_s, loss_s = 0.0, 0.0, 0.0
    for first in range(0, len(x), per_batch):
        xb, yb = x[first:first + per_batch], y[first:first + per_batch]
        t0 = time.perf_counter()
        logits = server.forward(xb)
        t1 = time.perf_counter()
        nats += float(nats_of(check_logits(logits, len(xb), seq_len, vocab), yb).sum())
        forward_s, loss_s = forward_s + t1 - t0, loss_s + time.perf_counter() - t1
    timings.update(forward_s=forward_s, loss_s=loss_s)
    return nats, int(y.size), tokenbytes.count_target_bytes(x, y, tables)


def score_artifact(trainer: Path, artifact: Path, tokens: np.ndarray, seq_len: int,
                   tables: tokenbytes.ByteTables, **options: Any) -> Score:
    """The judge's val_loss and val_bpb of the artifact on `tokens` (the holdout).

    Options as for score_sets.
    """
    return score_sets(trainer, artifact, {"holdout": tokens}, seq_len, tables,
                      **options)["holdout"]


def score_sets(trainer: Path, artifact: Path, token_sets: dict[str, np.ndarray], seq_len: int,
               tables: tokenbytes.ByteTables, *, cwd: Path | None = None,
               python: str | None = None, env: dict[str, str] | None = None,
               batch_tokens: int = EVAL_TOKENS_PER_BATCH, probe: bool = True,
               probe_tolerance: float = PROBE_TOLERANCE, load_timeout: float = LOAD_TIMEOUT_S,
               forward_timeout: float = FORWARD_TIMEOUT_S, logit_softcap: float = 30.0,
               rope_base: float = 10000.0, transport: str = "shm",
               stop: Callable[[], bool] | None = None) -> dict[str, Score]:
    """A Score per named token set, all from one model server (one load, one probe).

    E.g. {"holdout": ..., "claim": the trainer's slice}: the holdout decides, the slice is
    what the trainer's printed val_bpb is compared with. Once one set is unscorable every
    later one is too, with the same reason (fail closed: a model that failed the probe or
    sent nan logits is not scored on anything).

    trainer is the candidate's trainer file (its `load_for_eval` contract, else the built-in
    loader); cwd is the worktree (default: the trainer's folder's parent); env is the
    server's whole environment (default: server_env(), a filtered copy of the daemon's).
    logit_softcap and rope_base matter only to the built-in loader of an artifact that does
    not record them. transport: "shm" (logits through shared memory; the pipe where that is
    refused) or "pipe" (bench/judge_cost.py compares them; the scores are the same).
    stop: polled while waiting for the server; once true the server is killed and every
    set not yet scored is unscorable ("stopped"): the deadline stops the judge too.
    """
    t_start = time.perf_counter()
    names = list(token_sets)
    if not Path(artifact).is_file():
        return dict.fromkeys(names, Score(
            "unscorable", f"no artifact at {artifact} (the trainer did not write it where "
            "the daemon asked)"))
    try:
        server = ModelServer(Path(trainer), Path(artifact),
                             Path(cwd) if cwd else Path(trainer).resolve().parent.parent,
                             python=python, env=env, load_timeout=load_timeout,
                             forward_timeout=forward_timeout, logit_softcap=logit_softcap,
                             rope_base=rope_base, logits_bytes=0 if transport == "pipe" else
                             logits_bytes_for(batch_tokens, seq_len, len(tables.base_bytes)),
                             stop=stop)
    except OSError as exc:  # the server could not even start
        return dict.fromkeys(names, Score("unscorable", f"cannot start the model server: {exc}"))
    except Unscorable as exc:
        return dict.fromkeys(names, Score("unscorable", str(exc), timings={
            "total_s": time.perf_counter() - t_start}))
    results: dict[str, Score] = {}
    try:
        load_s = time.perf_counter() - t_start
        for i, name in enumerate(names):
            t0 = time.perf_counter()
            timings = {"load_s": load_s} if i == 0 else {}
            try:
                nats, count, nbytes = _score(server, token_sets[name], seq_len, tables,
                                             batch_tokens, probe and i == 0, probe_tolerance,
                                             timings)
            except Unscorable as exc:
                timings["total_s"] = time.perf_counter() - t0 + timings.get("load_s", 0.0)
                failed = Score("unscorable", str(exc), loader=server.loader, timings=timings)
                results.update(dict.fromkeys(names[i:], failed))
                break
            timings["total_s"] = time.perf_counter() - t0 + timings.get("load_s", 0.0)
            results[name] = _scored(nats, count, nbytes, server.loader, timings)
    finally:
        server.close()
    return results


def _scored(nats: float, count: int, nbytes: int, loader: str | None,
            timings: dict[str, float]) -> Score:
    if nbytes <= 0:
        return Score("unscorable", "the targets stand for 0 bytes", loader=loader,
                     timings=timings)
    bpb = nats / math.log(2) / nbytes
    return Score("scored", f"judge: val_bpb {bpb:.6f} on {count} target tokens ({loader} "
                 "loader)", nats / count, bpb, count, nbytes, loader, timings)


# --------------------------------------------------------------------------- the size


@dataclass(frozen=True)
class TotalBytes:
    artifact_bytes: int
    code_bytes: int
    code_files: dict[str, int]

    @property
    def total(self) -> int:
        return self.artifact_bytes + self.code_bytes


def measure_total_bytes(artifact: Path, worktree: Path,
                        code_files: tuple[Path, ...] = DEFAULT_CODE_FILES) -> TotalBytes:
    """Artifact file size + the bytes of the counted code files (UTF-8 text) in worktree.

    Raises Unscorable naming the file when one is missing or is not UTF-8 text.
    """
    artifact = Path(artifact)
    if not artifact.is_file():
        raise Unscorable(f"no artifact at {artifact} to measure")
    sizes = {}
    for rel in code_files:
        path = Path(worktree) / rel
        try:
            data = path.read_bytes()
            data.decode("utf-8")
        except OSError as exc:
            raise Unscorable(f"cannot read counted code file {path}: {exc}") from None
        except UnicodeDecodeError as exc:
            raise Unscorable(f"counted code file {path} is not UTF-8 text: {exc}") from None
        sizes[str(rel)] = len(data)
    return TotalBytes(artifact.stat().st_size, sum(sizes.values()), sizes)
