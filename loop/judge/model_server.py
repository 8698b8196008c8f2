"""The model server: a separate process that turns input tokens into logits, nothing more.

The judge (loop/judge/score.py) starts one per artifact. The server imports the candidate's
trainer file from the worktree and loads the artifact through the trainer's evaluation
contract:

    load_for_eval(artifact_path: str) -> forward
    forward(tokens: int32 ndarray (batch, seq)) -> float32 ndarray (batch, seq, vocab)

A trainer without that function (upstream's, and a researcher's edits of it) is served by
the built-in loader (loop/judge/loader.py): the int8+zlib export, dequantized and run through
the trainer's own model class under the run's settings (which the judge puts in the server's
environment), logits made the way the trainer's loss makes them. The server is given input
tokens only: never targets, byte counts or the score, so the candidate's code never sees
what it is graded on beyond the inputs (which it could keep: see docs/THREAT_MODEL.md).

Wire protocol on the server's stdin/stdout (the trainer's own prints go to stderr): each
message is a frame

    b"AGMS" | uint32 LE length of a JSON header | the JSON header | header["nbytes"] raw bytes

- server -> judge, once loaded: {"ok": true, "loader": "contract" | "builtin"}, or
  {"ok": false, "error": "..."} and exit;
- judge -> server: {"op": "forward", "dtype": "int32", "shape": [b, t], "nbytes": n} + tokens;
  server -> judge: {"ok": true, "dtype": "<f4", "shape": [...], "nbytes": n} + the array in C
  order, or {"ok": false, "error": "..."};
- judge -> server: {"op": "close"}: the server exits 0.

Logits through shared memory (`--logits-fd N`): the judge creates an anonymous shared file
(a memfd, sealed against any change of size; Linux only), sizes it for its largest batch and
passes its descriptor to the server (inherited: no path, nothing writable in the sandbox).
The server then answers a forward with {"ok": true, "dtype": "<f4", "shape": [...],
"shm": true, "nbytes": 0} after writing the logits, as float32 in C order, at the start of
that file; the judge copies them out before it reads them (a snapshot the server cannot
change while it is checked). Logits that do not fit, or a descriptor the server cannot map,
go through the pipe as above (the ready frame says which: "transport": "shm" | "pipe").

Run it as `python -I -S -c "<the daemon and the venv's packages on sys.path>; from
loop.judge.model_server import main; main()" --trainer T --artifact A` (what `command()`
builds): `-I` keeps the worktree, and a `loop/` package in it, off sys.path; `-S` skips site
processing, so no `.pth` hook in the venv runs; only the daemon's own code is imported by
name. The judge starts it inside the seal (loop.measure.seal.Seal.server): it sees the trainer
file and the artifact, read-only, and nothing else.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import mmap
import os
import struct
import sys
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import BinaryIO

import numpy as np

from loop.measure.seal import server_boot

MAGIC = b"AGMS"
CONTRACT = "load_for_eval"
MAX_HEADER = 1 << 16


class ProtocolError(Exception):
    """A malformed frame; the message says what was wrong."""


def write_frame(out: BinaryIO, header: dict, payload: bytes | memoryview = b"") -> None:
    payload = memoryview(payload).cast("B")  # bytes of any buffer, without a copy
    header = {**header, "nbytes": payload.nbytes}
    raw = json.dumps(header).encode("utf-8")
    out.write(MAGIC + struct.pack("<I", len(raw)) + raw)
    if payload.nbytes:
        out.write(payload)
    out.flush()


def read_frame(read: Callable[[int], bytes]) -> tuple[dict, bytes]:
    """One frame through read(n) (which returns exactly n bytes or raises)."""
    head = read(8)
    if head[:4] != MAGIC:
        raise ProtocolError(f"bad frame magic {head[:4]!r}")
    (length,) = struct.unpack("<I", head[4:])
    if length > MAX_HEADER:
        raise ProtocolError(f"frame header of {length} bytes (limit {MAX_HEADER})")
    try:
        header = json.loads(read(length))
    except ValueError as exc:
        raise ProtocolError(f"frame header is not JSON: {exc}") from None
    if not isinstance(header, dict):
        raise ProtocolError("frame header is not a JSON object")
    nbytes = header.get("nbytes", 0)
    if not isinstance(nbytes, int) or nbytes < 0:
        raise ProtocolError(f"bad nbytes {nbytes!r}")
    return header, read(nbytes) if nbytes else b""


def array_frame(arr: np.ndarray) -> tuple[dict, memoryview]:
    arr = np.ascontiguousarray(arr)
    return ({"ok": True, "dtype": arr.dtype.str, "shape": list(arr.shape)},
            memoryview(arr.reshape(-1).view(np.uint8)))


def array_of(header: dict, payload: bytes | bytearray) -> np.ndarray:
    dtype = np.dtype(header["dtype"])
    if dtype.hasobject:
        raise ProtocolError("object arrays are not accepted")
    shape = tuple(int(n) for n in header["shape"])
    if int(np.prod(shape)) * dtype.itemsize != len(payload):
        raise ProtocolError(f"{len(payload)} bytes do not make a {dtype} array of {shape}")
    return np.frombuffer(payload, dtype=dtype).reshape(shape)


def command(python: str, trainer: Path, artifact: Path, logit_softcap: float = 30.0,
            rope_base: float = 10000.0, logits_fd: int | None = None) -> list[str]:
    """The argv that starts a server: `python -I -S` with the daemon's code and the venv's
    packages put on sys.path by hand (loop.measure.seal.server_boot), so neither the
    worktree (a `loop/` there) nor a `.pth` hook in the venv can run first."""
    shm = [] if logits_fd is None else ["--logits-fd", str(logits_fd)]
    return [python, *server_boot("loop.judge.model_server"), "--trainer", str(trainer),
            "--artifact", str(artifact), "--logit-softcap", repr(logit_softcap),
            "--rope-base", repr(rope_base), *shm]

def shared_buffer(nbytes: int) -> int:
    """A descriptor of `nbytes` of anonymous shared memory for the logits (close-on-exec:
    subprocess's pass_fds hands it to the server only). Pages cost memory once written.

    Sealed against a change of size: a server that shrank the file would make the judge's
    read of its map fault (SIGBUS) and take the daemon down. Where memfd seals do not exist
    (macOS) this raises OSError and the logits go through the pipe."""
    import fcntl

    seals = getattr(fcntl, "F_SEAL_SHRINK", 0) | getattr(fcntl, "F_SEAL_GROW", 0)
    if not hasattr(os, "memfd_create") or not hasattr(fcntl, "F_ADD_SEALS") or not seals:
        raise OSError("no sealed shared memory here (memfd_create with seals)")
    fd = os.memfd_create("autogolf-logits", os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
    try:
        os.ftruncate(fd, nbytes)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals | fcntl.F_SEAL_SEAL)
    except OSError:
        os.close(fd)
        raise
    return fd


def _map_logits(fd: int | None) -> mmap.mmap | None:
    """The server's writable map of the judge's buffer; None: answer through the pipe."""
    if fd is None:
        return None
    try:
        size = os.fstat(fd).st_size
        return mmap.mmap(fd, size) if size > 0 else None
    except (OSError, ValueError):
        return None


def _write_logits(buffer: mmap.mmap, result: np.ndarray) -> dict | None:
    """The result as float32 into the shared buffer (one pass); its frame header, or None
    when it does not fit or is not a float array (then it goes through the pipe)."""
    if result.dtype.kind != "f" or result.size * 4 > len(buffer):
        return None
    target = np.frombuffer(buffer, dtype="<f4", count=result.size).reshape(result.shape)
    np.copyto(target, result, casting="same_kind")
    return {"ok": True, "dtype": "<f4", "shape": list(result.shape), "shm": True}


# ------------------------------------------------------------------------------ server side


def _import_trainer(path: Path):  # noqa: ANN202 - a module
    spec = importlib.util.spec_from_file_location("autogolf_candidate_trainer", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def builtin_forward(module, trainer: Path, artifact: Path  # noqa: ANN001 - a module
                    ) -> Callable[[np.ndarray], np.ndarray]:
    """An upstream-shaped trainer's export, built through that trainer's own code
    (loop/judge/loader.py: its Hyperparameters under the run's settings, its model class,
    its dequantizer; logits the way its loss makes them)."""
    from loop.judge import loader

    return loader.builtin_forward(module, trainer, artifact)


def load(trainer: Path, artifact: Path, logit_softcap: float = 30.0, rope_base: float = 10000.0
         ) -> tuple[str, Callable[[np.ndarray], np.ndarray]]:
    """(loader name, forward) for this trainer file and artifact.

    logit_softcap and rope_base are no longer used: the built-in loader reads the run's
    settings from the environment through the trainer's own Hyperparameters. They stay in the
    command line for compatibility with the daemon's launcher.
    """
    if not artifact.is_file():
        raise FileNotFoundError(f"no artifact at {artifact}")
    module = _import_trainer(trainer)
    contract = getattr(module, CONTRACT, None)
    if callable(contract):
        return "contract", contract(str(artifact))
    return "builtin", builtin_forward(module, trainer, artifact)


def _reader(stream: BinaryIO) -> Callable[[int], bytes]:
    def read(n: int) -> bytes:
        data = stream.read(n)
        if len(data) != n:
            raise EOFError("the judge closed the pipe")
        return data
    return read


def _describe(exc: BaseException) -> str:
    where = traceback.extract_tb(exc.__traceback__)[-1:] if exc.__traceback__ else []
    at = f" (at {Path(where[0].filename).name}:{where[0].lineno})" if where else ""
    return f"{type(exc).__name__}: {exc}{at}"


def serve(forward: Callable[[np.ndarray], np.ndarray], inp: BinaryIO, out: BinaryIO,
          logits: mmap.mmap | None = None) -> None:
    read = _reader(inp)
    while True:
        header, payload = read_frame(read)
        if header.get("op") == "close":
            return
        if header.get("op") != "forward":
            write_frame(out, {"ok": False, "error": f"unknown op {header.get('op')!r}"})
            continue
        try:
            result = np.asarray(forward(array_of(header, payload)))
        except Exception as exc:  # noqa: BLE001 - the candidate's code: report, do not die
            write_frame(out, {"ok": False, "error": f"forward raised {_describe(exc)}"})
            continue
        if result.dtype.hasobject:
            write_frame(out, {"ok": False, "error": "forward returned an object array"})
            continue
        shared = _write_logits(logits, result) if logits is not None else None
        write_frame(out, *((shared,) if shared else array_frame(result)))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="loop.judge.model_server", description=__doc__)
    parser.add_argument("--trainer", type=Path, required=True)
    parser.add_argument("--artifact", type=Path, required=True)
    parser.add_argument("--logit-softcap", type=float, default=30.0)
    parser.add_argument("--rope-base", type=float, default=10000.0)
    parser.add_argument("--logits-fd", type=int, default=None)
    args = parser.parse_args(argv)
    # The protocol owns the real stdout; anything the candidate prints goes to stderr.
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = os.fdopen(os.dup(0), "rb")
    try:
        loader, forward = load(args.trainer, args.artifact, args.logit_softcap, args.rope_base)
    except BaseException as exc:  # noqa: BLE001 - SystemExit from a trainer too
        from loop.judge.loader import CannotLoad

        why = str(exc) if isinstance(exc, CannotLoad) else _describe(exc)
        write_frame(out, {"ok": False, "error": f"loading {args.artifact.name} with "
                          f"{args.trainer.name} failed: {why}"})
        return 1
    logits = _map_logits(args.logits_fd)
    write_frame(out, {"ok": True, "loader": loader, "transport": "shm" if logits else "pipe"})
    try:
        serve(forward, inp, out, logits)
    except (EOFError, BrokenPipeError):
        return 0
    except ProtocolError as exc:
        print(f"model_server: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
