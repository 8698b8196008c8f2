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
import secrets
import select
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from loop.data import tokenbytes
from loop.judge import model_server as ms
from loop.measure.seal import Seal

DEFAULT_CODE_FILES = (Path("benchmark/train_gpt_mlx.py"),)
EVAL_TOKENS_PER_BATCH = 8192  # float64 log-softmax of a batch: tokens x vocab x 8 bytes
# On the CPU a smaller batch is faster (the activations stay in cache): a whole judgement
# took 0.59 s at 2,048 tokens per batch against 0.75 s at 8,192 (smoke), 7.3 s against
# 8.9 s (medium: 4x256, seq 1024), alternating, idle 2-core Linux, the scores equal to 1e-9
# (bench/judge_cost.py --batch-tokens). A GPU keeps the larger batch (not measured here).
CPU_TOKENS_PER_BATCH = 2048
LOAD_TIMEOUT_S = 300.0
FORWARD_TIMEOUT_S = 300.0
# Earlier logits may move by float rounding when later inputs change (batched kernels);
# a model that reads ahead moves them by far more. Enough for float32 and bf16 activations.
PROBE_TOLERANCE = 5e-3
STOP_POLL_S = 0.25  # how often a waiting judge asks whether a stop was requested
STOPPED = "stopped"  # in the reason of a server ended by a stop (or by its twin's failure)
# Hidden probe rows per artifact: a model that looks ahead on a fraction f of the rows it is
# sent, not knowing which are probes, escapes all of them with probability (1 - f) ** PROBES.
PROBES = 16
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


def batch_tokens_for(device: str | None) -> int:
    """Tokens per forward request on this device class ("cpu", "metal", "cuda")."""
    return CPU_TOKENS_PER_BATCH if device == "cpu" else EVAL_TOKENS_PER_BATCH


def server_env(base: dict[str, str] | None = None) -> dict[str, str]:
    """The model server's environment: SERVER_ENV_KEYS and SERVER_ENV_PREFIXES of base, and
    half of the machine's cores for each server's BLAS threads (server_threads)."""
    base = dict(os.environ if base is None else base)
    env = {k: v for k, v in base.items()
           if k in SERVER_ENV_KEYS or k.startswith(SERVER_ENV_PREFIXES)}
    return env | {"OPENBLAS_NUM_THREADS": str(server_threads())}


def server_threads(cores: int | None = None) -> int:
    """BLAS threads per model server: the two servers score at once, so each gets half of the
    cores. Two servers with a thread per core each spin for cores the other holds: on the
    2-core CPU a smoke artifact's scoring took 1.6-2.2 s with one thread each against
    3.6-3.7 s with two (bench/judge_cost.py, alternating, load 5-6); the scores move by
    float rounding only (9e-16 bpb at smoke)."""
    return max(1, (cores or os.cpu_count() or 2) // 2)


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
    """A running model server; `forward` sends input tokens and returns its logits (`send`
    and `receive` split it, so the judge can score one batch while the next is computed)."""

    def __init__(self, trainer: Path, artifact: Path, cwd: Path, *, python: str | None = None,
                 env: dict[str, str] | None = None, load_timeout: float = LOAD_TIMEOUT_S,
                 forward_timeout: float = FORWARD_TIMEOUT_S, logit_softcap: float = 30.0,
                 rope_base: float = 10000.0, seal: Seal | None = None,
                 logits_bytes: int = 0, stop: Callable[[], bool] | None = None) -> None:
        self.forward_timeout = forward_timeout
        self.stop = stop  # the daemon's deadline or a signal: the server is killed at once
        self.stderr = tempfile.TemporaryFile()
        trainer, artifact = Path(trainer).resolve(), Path(artifact).resolve()
        self._shm, fd = _logits_buffer(logits_bytes)  # logits_bytes 0: the pipe only
        try:  # the descriptor is inherited through the seal: no path, nothing writable
            argv, env = (seal or Seal(None)).server(
                ms.command(python or sys.executable, trainer, artifact, logit_softcap,
                           rope_base, fd),
                readable=[trainer, artifact], env=server_env() if env is None else env)
            self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.PIPE,
                                         stdout=subprocess.PIPE, stderr=self.stderr,
                                         pass_fds=() if fd is None else (fd,))
        finally:
            if fd is not None:
                os.close(fd)  # the server has its copy; the map keeps the memory
        os.set_blocking(self.proc.stdout.fileno(), False)
        _widen_pipe(self.proc.stdout.fileno())
        self.loader = None
        self._asked = 0  # windows of the request in flight
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
                raise Unscorable(f"model server: {STOPPED} while {doing} (a stop was requested)")
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
        """The logits of `tokens`: `send`, then `receive`."""
        self.send(tokens)
        return self.receive()

    def send(self, tokens: np.ndarray) -> None:
        """Ask for the logits of `tokens`; `receive` waits for them. One request at a time."""
        x = np.ascontiguousarray(tokens, dtype="<i4")
        try:
            ms.write_frame(self.proc.stdin, {"op": "forward", "dtype": x.dtype.str,
                                             "shape": list(x.shape)}, x)
        except (BrokenPipeError, OSError):
            code = self.proc.wait(timeout=10)
            raise Unscorable(f"model server exited (code {code}) before a request"
                             f"{self._stderr_tail()}") from None
        self._asked = x.shape[0]

    def receive(self) -> np.ndarray:
        """The logits of the request `send` made: the judge's own copy (from shared memory,
        the server may overwrite its buffer with the next request's at once)."""
        header, payload = self._receive(time.monotonic() + self.forward_timeout,
                                        f"computing logits for {self._asked} windows")
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


# --------------------------------------------------------------------------- the plan


@dataclass(frozen=True)
class Probe:
    """A hidden causality check: row `variant` of one server equals row `original` of the
    other server before `cut` and differs from `cut` on (real text from another window)."""

    original: tuple[int, int]  # (server, row in its stream)
    variant: tuple[int, int]
    cut: int


@dataclass
class Plan:
    """What each of the two servers is sent, row by row, and what each row is for."""

    streams: list[np.ndarray]  # per server: (rows, seq) input tokens, in sending order
    targets: list[list[tuple[str, np.ndarray] | None]]  # per row: (set, targets); None: probe
    probes: list[Probe]


def plan_rows(sets: dict[str, tuple[np.ndarray, np.ndarray]], vocab: int,
              rng: np.random.Generator, probes: int) -> Plan:
    """Split every scored window at random between two servers, and hide `probes` variants
    of one server's windows among the other server's rows, at random places.

    A server cannot tell a probe row from a scored one (both are real text; which is which
    changes every run), and it cannot compare notes with the other server (two sealed
    processes, so a model that remembers what it was sent gains nothing): a model that
    looks ahead on a row is caught whenever that row, or its twin, is probed.
    """
    rows: list[list[list]] = [[], []]  # per server: [tokens, (set, targets) | None]
    for name, (x, y) in sets.items():
        side = rng.integers(0, 2, size=len(x))
        for i in range(len(x)):
            rows[side[i]].append([x[i], (name, y[i])])
    for r in rows:
        rng.shuffle(r)
    donor = sets[next(iter(sets))][0]  # the holdout lends the text after each cut
    seq = donor.shape[1]
    made = []
    for _ in range(probes if seq > 1 else 0):
        server = int(rng.integers(0, 2))
        scored = [r for r in rows[server] if r[1] is not None]
        if not scored:
            continue
        original = scored[int(rng.integers(0, len(scored)))]
        cut = int(rng.integers(1, seq))
        variant = original[0].copy()
        variant[cut:] = donor[int(rng.integers(0, len(donor)))][cut:]
        if variant[cut] == original[0][cut]:  # something from the cut on must change
            variant[cut] = (int(variant[cut]) + 1 + int(rng.integers(0, vocab - 1))) % vocab
        entry = [variant, None]
        other = rows[1 - server]
        other.insert(int(rng.integers(0, len(other) + 1)), entry)
        made.append((original, entry, cut))
    where = {id(r): (s, i) for s in (0, 1) for i, r in enumerate(rows[s])}
    return Plan([np.stack([r[0] for r in rs]) if rs else np.zeros((0, seq), np.int64)
                 for rs in rows],
                [[r[1] for r in rs] for rs in rows],
                [Probe(where[id(o)], where[id(v)], cut) for o, v, cut in made])


# --------------------------------------------------------------------------- one server's part


@dataclass
class Part:
    """What one server's stream gave: per set (nats, targets), probe logits, timings."""

    nats: dict[str, float] = field(default_factory=dict)
    count: dict[str, int] = field(default_factory=dict)
    prefixes: dict[int, np.ndarray] = field(default_factory=dict)  # row -> logits[:cut]
    forward_s: float = 0.0
    loss_s: float = 0.0


def run_stream(server: ModelServer, x: np.ndarray,
               targets: list[tuple[str, np.ndarray] | None], keep: dict[int, int],
               vocab: int, per_batch: int) -> Part:
    """Send the rows in batches; sum the cross entropy of the scored rows; keep the first
    `keep[row]` positions' logits of the rows a probe compares.

    Pipelined: the next batch is sent before this one's loss is computed, so the server's
    forward and the judge's log-softmax overlap (the logits are the judge's copy by then)."""
    part = Part()
    seq = x.shape[1]
    starts = list(range(0, len(x), per_batch))
    if starts:
        server.send(x[:per_batch])
    t0 = time.perf_counter()
    for k, first in enumerate(starts):
        xb = x[first:first + per_batch]
        logits = check_logits(server.receive(), len(xb), seq, vocab)
        if k + 1 < len(starts):
            server.send(x[starts[k + 1]:starts[k + 1] + per_batch])
        t1 = time.perf_counter()
        part.forward_s += t1 - t0
        _score_batch(part, logits, targets[first:first + len(xb)], first, keep, seq)
        t0 = time.perf_counter()
        part.loss_s += t0 - t1
    return part


def _score_batch(part: Part, logits: np.ndarray, targets: list[tuple[str, np.ndarray] | None],
                 first: int, keep: dict[int, int], seq: int) -> None:
    """Add one batch's cross entropy per set to `part`, and keep the probed rows' prefixes."""
    scored = [i for i, t in enumerate(targets) if t is not None]
    if scored:
        yb = np.stack([targets[i][1] for i in scored])
        per_row = nats_of(logits[scored], yb).sum(axis=1)
        for i, value in zip(scored, per_row, strict=True):
            name = targets[i][0]
            part.nats[name] = part.nats.get(name, 0.0) + float(value)
            part.count[name] = part.count.get(name, 0) + seq
    for i in range(len(targets)):
        if first + i in keep:
            part.prefixes[first + i] = np.array(logits[i, :keep[first + i]])


def check_probes(plan: Plan, parts: list[Part], tolerance: float) -> None:
    """Every probe's variant must have left the logits before its cut unchanged."""
    for probe in plan.probes:
        a = parts[probe.original[0]].prefixes[probe.original[1]][:probe.cut]
        b = parts[probe.variant[0]].prefixes[probe.variant[1]][:probe.cut]
        moved = float(np.abs(a - b).max())
        if moved > tolerance:
            raise Unscorable(f"the model looks ahead: changing input tokens from position "
                             f"{probe.cut} on changed the logits at earlier positions by up "
                             f"to {moved:.3g} (tolerance {tolerance:g}; a probe hidden among "
                             "the scored windows, in the other model process)")


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
               probe_tolerance: float = PROBE_TOLERANCE, probes: int = PROBES,
               load_timeout: float = LOAD_TIMEOUT_S, forward_timeout: float = FORWARD_TIMEOUT_S,
               logit_softcap: float = 30.0, rope_base: float = 10000.0,
               seal: Seal | None = None, rng: np.random.Generator | None = None,
               transport: str = "shm", stop: Callable[[], bool] | None = None
               ) -> dict[str, Score]:
    """A Score per named token set (the first decides: the holdout), from two model servers.

    E.g. {"holdout": ..., "claim": the trainer's slice}: the slice is what the trainer's
    printed val_bpb is compared with. The windows of every set are split at random between
    two servers started together, and each gets hidden causality probes of the other's
    windows (plan_rows). Fail closed: once anything is unscorable (a failed probe, nan
    logits, a dead server), every set is, with that reason.

    trainer is the candidate's trainer file (its `load_for_eval` contract, else the built-in
    loader); env is the servers' whole environment (default: server_env()); seal confines
    them (default: none). rng decides the split and the probes (default: fresh randomness,
    so a model cannot learn them). logit_softcap and rope_base matter only to the built-in
    loader of an artifact that does not record them. transport: "shm" (logits through shared
    memory; the pipe where that is refused) or "pipe" (bench/judge_cost.py compares them; the
    scores are the same). stop: polled while waiting for a server; once true the servers are
    killed and every set is unscorable ("stopped"): the deadline stops the judge too.
    """
    t_start = time.perf_counter()
    names = list(token_sets)
    if not Path(artifact).is_file():
        return dict.fromkeys(names, Score(
            "unscorable", f"no artifact at {artifact} (the trainer did not write it where "
            "the daemon asked)"))
    vocab = len(tables.base_bytes)
    try:
        sets = {name: windows(tokens, seq_len) for name, tokens in token_sets.items()}
    except Unscorable as exc:
        return dict.fromkeys(names, Score("unscorable", str(exc)))
    rng = rng if rng is not None else np.random.default_rng(secrets.randbits(64))
    plan = plan_rows(sets, vocab, rng, probes if probe else 0)
    keep: list[dict[int, int]] = [{}, {}]
    for p in plan.probes:  # a row may be probed at several cuts: keep the longest prefix
        for server, row in (p.original, p.variant):
            keep[server][row] = max(keep[server].get(row, 0), p.cut)
    per_batch = max(1, batch_tokens // seq_len)
    failed = threading.Event()  # one server failing stops the other at once

    def halt() -> bool:
        return failed.is_set() or bool(stop is not None and stop())

    def serve(i: int) -> tuple[Part, str | None, float]:
        try:
            return serve_stream(i)
        except BaseException:
            failed.set()
            raise

    def serve_stream(i: int) -> tuple[Part, str | None, float]:
        t0 = time.perf_counter()
        with ModelServer(Path(trainer), Path(artifact),
                         Path(cwd) if cwd else Path(trainer).resolve().parent.parent,
                         python=python, env=env, load_timeout=load_timeout,
                         forward_timeout=forward_timeout, logit_softcap=logit_softcap,
                         rope_base=rope_base, seal=seal, stop=halt,
                         logits_bytes=0 if transport == "pipe" else
                         logits_bytes_for(batch_tokens, seq_len, vocab)) as server:
            load_s = time.perf_counter() - t0
            part = run_stream(server, plan.streams[i], plan.targets[i], keep[i], vocab,
                              per_batch)
            return part, server.loader, load_s

    try:
        with ThreadPoolExecutor(max_workers=2) as pool:
            futures = [pool.submit(serve, 0), pool.submit(serve, 1)]
        errors = [f.exception() for f in futures if f.exception() is not None]
        if errors:  # the cause, not the other server's "stopped" that it brought about
            raise next((e for e in errors if STOPPED not in str(e)), errors[0])
        done = [f.result() for f in futures]
        t0 = time.perf_counter()
        check_probes(plan, [d[0] for d in done], probe_tolerance)
        probe_s = time.perf_counter() - t0
    except OSError as exc:  # a server could not even start
        return dict.fromkeys(names, Score("unscorable", f"cannot start the model server: {exc}"))
    except Unscorable as exc:
        return dict.fromkeys(names, Score("unscorable", str(exc), timings={
            "total_s": time.perf_counter() - t_start}))
    parts, loader = [d[0] for d in done], done[0][1]
    timings = {"load_s": max(d[2] for d in done),
               "forward_s": sum(p.forward_s for p in parts),
               "loss_s": sum(p.loss_s for p in parts), "probe_s": probe_s,
               "probes": float(len(plan.probes)), "total_s": time.perf_counter() - t_start}
    results = {}
    for name, (x, y) in sets.items():
        nats = sum(p.nats.get(name, 0.0) for p in parts)
        count = sum(p.count.get(name, 0) for p in parts)
        results[name] = _scored(nats, count, tokenbytes.count_target_bytes(x, y, tables),
                                loader, timings if name == names[0] else {})
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
