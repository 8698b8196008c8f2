"""Read, write and validate token shards (SPEC section 2), for real and sample data alike.

A shard is a 1024-byte header of 256 little-endian int32 (magic, version, token count, then
zeros) followed by the tokens as little-endian uint16. Every error names the file and the
problem, because the user meets these errors at night in a log, far from the cause.

`python -m loop.data.shards --validate DIR` checks every shard in DIR (used by the bootstrap script
after a download).
"""

from __future__ import annotations

import argparse
import os
import sys
from dataclasses import dataclass
from pathlib import Path

import numpy as np

MAGIC = 20240520
VERSION = 1
HEADER_INTS = 256
HEADER_BYTES = HEADER_INTS * 4
TOKEN_BYTES = 2
MAX_TOKEN_ID = np.iinfo(np.uint16).max
TRAIN_PATTERN = "fineweb_train_*.bin"
VAL_PATTERN = "fineweb_val_*.bin"


class ShardError(Exception):
    """A shard that cannot be used; the message names the file and the problem."""

    def __init__(self, path: str | Path, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{self.path}: {problem}")


@dataclass(frozen=True)
class ShardHeader:
    magic: int
    version: int
    tokens: int

    @property
    def expected_size(self) -> int:
        return HEADER_BYTES + TOKEN_BYTES * self.tokens


def read_header(path: str | Path) -> ShardHeader:
    """Parse and check the header: magic, version and a non-negative token count."""
    path = Path(path)
    try:
        with path.open("rb") as f:
            raw = f.read(HEADER_BYTES)
    except OSError as exc:
        raise ShardError(path, f"cannot read: {exc.strerror or exc}") from exc
    if len(raw) < HEADER_BYTES:
        raise ShardError(path, f"truncated header: {len(raw)} bytes, expected {HEADER_BYTES}")
    ints = np.frombuffer(raw, dtype="<i4", count=HEADER_INTS)
    header = ShardHeader(int(ints[0]), int(ints[1]), int(ints[2]))
    if header.magic != MAGIC:
        raise ShardError(path, f"bad magic number {header.magic} (expected {MAGIC})")
    if header.version != VERSION:
        raise ShardError(path, f"unsupported version {header.version} (expected {VERSION})")
    if header.tokens < 0:
        raise ShardError(path, f"negative token count {header.tokens} in header")
    return header


def _check_size(path: Path, header: ShardHeader) -> None:
    size = path.stat().st_size
    if size < header.expected_size:
        raise ShardError(
            path,
            f"truncated body: header says {header.tokens} tokens ({header.expected_size} bytes)"
            f" but the file has {size} bytes",
        )
    if size > header.expected_size:
        raise ShardError(
            path,
            f"file has {size - header.expected_size} bytes after the {header.tokens} tokens"
            f" its header announces (size {size}, expected {header.expected_size})",
        )


def _check_ids(path: Path, tokens: np.ndarray, vocab_size: int) -> None:
    if tokens.size == 0:
        return
    bad = np.flatnonzero(tokens >= vocab_size)
    if bad.size:
        pos = int(bad[0])
        raise ShardError(
            path,
            f"token id {int(tokens[pos])} at position {pos} is >= vocab size {vocab_size}"
            f" ({bad.size} such tokens); the shard does not belong to this tokenizer",
        )


def load_tokens(path: str | Path, vocab_size: int | None = None) -> np.ndarray:
    """All tokens of a checked shard as uint16 (ids checked against vocab_size when given)."""
    path = Path(path)
    header = read_header(path)
    _check_size(path, header)
    tokens = np.fromfile(path, dtype="<u2", count=header.tokens, offset=HEADER_BYTES)
    if tokens.size != header.tokens:  # the file shrank between stat and read
        raise ShardError(path, f"truncated body: read {tokens.size} of {header.tokens} tokens")
    if vocab_size is not None:
        _check_ids(path, tokens, vocab_size)
    return tokens.astype(np.uint16, copy=False)


def validate_shard(path: str | Path, vocab_size: int | None = None) -> int:
    """Check header and size (and every id when vocab_size is given); return the token count.

    Without vocab_size only the header and file size are read, which is cheap even for the
    200 MB real shards; with it the whole body is scanned.
    """
    path = Path(path)
    if vocab_size is not None:
        return int(load_tokens(path, vocab_size).size)
    header = read_header(path)
    _check_size(path, header)
    return header.tokens


def write_shard(path: str | Path, tokens: np.ndarray | list[int]) -> None:
    """Write tokens as a shard, atomically (a reader never sees a half-written file)."""
    path = Path(path)
    arr = np.asarray(tokens)
    if arr.ndim != 1:
        raise ShardError(path, f"tokens must be one-dimensional, got shape {arr.shape}")
    if arr.size and (int(arr.min()) < 0 or int(arr.max()) > MAX_TOKEN_ID):
        raise ShardError(path, f"token ids must lie in 0..{MAX_TOKEN_ID} to fit uint16")
    header = np.zeros(HEADER_INTS, dtype="<i4")
    header[:3] = (MAGIC, VERSION, arr.size)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    with tmp.open("wb") as f:
        f.write(header.tobytes())
        f.write(arr.astype("<u2").tobytes())
    os.replace(tmp, path)


def shard_files(directory: str | Path, split: str) -> list[Path]:
    """The shards of one split ("train" or "val") in name order."""
    pattern = TRAIN_PATTERN if split == "train" else VAL_PATTERN
    return sorted(Path(directory).glob(pattern))


@dataclass
class DirectoryReport:
    train_files: int
    val_files: int
    train_tokens: int
    val_tokens: int
    errors: list[str]


def validate_directory(
    directory: str | Path, vocab_size: int | None = None, train_shards: int | None = None
) -> DirectoryReport:
    """Validate every shard in a dataset directory; collect problems instead of stopping."""
    directory = Path(directory)
    errors: list[str] = []
    if not directory.is_dir():
        return DirectoryReport(0, 0, 0, 0, [f"{directory}: no such directory"])
    counts = {}
    for split in ("train", "val"):
        total = 0
        files = shard_files(directory, split)
        for path in files:
            try:
                total += validate_shard(path, vocab_size)
            except ShardError as exc:
                errors.append(str(exc))
        counts[split] = (len(files), total)
    if counts["val"][0] == 0:
        errors.append(f"{directory}: no validation shard ({VAL_PATTERN})")
    if train_shards is not None and counts["train"][0] < train_shards:
        errors.append(
            f"{directory}: {counts['train'][0]} train shards, expected at least {train_shards}"
        )
    elif counts["train"][0] == 0:
        errors.append(f"{directory}: no train shard ({TRAIN_PATTERN})")
    return DirectoryReport(
        train_files=counts["train"][0],
        val_files=counts["val"][0],
        train_tokens=counts["train"][1],
        val_tokens=counts["val"][1],
        errors=errors,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loop.data.shards", description=__doc__)
    parser.add_argument("--validate", metavar="DIR", required=True, help="dataset directory")
    parser.add_argument("--vocab-size", type=int, help="also scan every token id (slow)")
    parser.add_argument("--train-shards", type=int, help="require at least this many")
    args = parser.parse_args(argv)
    report = validate_directory(args.validate, args.vocab_size, args.train_shards)
    for line in report.errors:
        print(f"error: {line}", file=sys.stderr)
    print(
        f"{args.validate}: {report.train_files} train shards ({report.train_tokens:,} tokens),"
        f" {report.val_files} val shards ({report.val_tokens:,} tokens),"
        f" {len(report.errors)} problems"
    )
    return 1 if report.errors else 0


if __name__ == "__main__":
    sys.exit(main())
