"""Held-out validation tokens for the judge, and the data folder the trainer is given.

No validation token ever reaches the trainer:

    train split:  [ printout slice: 0 .. t ] [ the rest ]      <- the trainer's data folder
    val split:    [ holdout: 0 .. h ] [ rest ]                 <- the judge's alone

- the trainer's data folder has links to the dataset's train shards and, as its only
  "validation" shard, the **printout slice**: the first `trainer_tokens + 1` tokens of the
  train split (what the trainer's `load_val_tokens` reads with VAL_MAX_TOKENS). The trainer
  prints its val_bpb on these; the judge scores the same tokens to check the claim. A trainer
  that trains on its "validation" shard trains on training data: no gain it could fake;
- the **holdout** is the front of the validation split (documents start with BOS, so it
  starts one), `holdout_tokens` long (0 = the whole split). The judge scores only these, in
  non-overlapping windows of the profile's TRAIN_SEQ_LEN (loop/judge/score.py).

**How `full` is scored:** the holdout is the whole validation split, in windows of the
protocol's seq len: the full-split val_bpb, as upstream computes it, from the daemon's code.
Results stay comparable within one protocol only, which is why every row records
`identity()`.

The judge's window length is the protocol's too (Sizes.seq_len, autoresearch.sh's
TRAIN_SEQ_LEN per profile): a trainer that changes its own seq len is still scored in the
daemon's windows.

Sizes per profile (tokens; printout slice / holdout):

| profile | real data (val ~62M)    | offline sample (val 115,973)        |
|---------|-------------------------|-------------------------------------|
| smoke   | 4,096 / 16,384          | 4,096 / 16,384                      |
| breadth | 4,096 / 524,288         | 4,096 / 32,768                      |
| confirm | 4,096 / 2,097,152       | 4,096 / 65,536                      |
| full    | 4,096 / the whole       | 4,096 / the whole                   |

Why the printout slice is small (issue 26): it only checks that the trainer's printed
val_bpb is the number its model gives on those tokens, and a printout that lies is off by
far more than the claim tolerance on any few thousand tokens. The holdout decides. A small
slice makes the judge's second pass cheap, and the trainer's own final evaluations (it
evaluates the slice twice: before and after the int8 roundtrip) cheap too.

What the trainer can still do (docs/THREAT_MODEL.md): it runs as the same user and can open the
dataset's original val shard by path; the folder only keeps validation tokens out of what it
is *given*. A sandbox (issue 18) closes that.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from loop.data import datasets, shards

BOS_ID = 1
DATA_FOLDER = Path(".autogolf/judge-data")
HOLDOUT_FORMAT = "autogolf_holdout_v1"
VAL_FILE = "fineweb_val_000000.bin"


@dataclass(frozen=True)
class Sizes:
    """Tokens per profile: the trainer's validation slice and the judge's holdout."""

    trainer_tokens: int
    holdout_tokens: int  # 0 = everything after the trainer slice
    seq_len: int  # the judge's window: the profile's TRAIN_SEQ_LEN, fixed by the protocol


# The trainer's printout slice: the claim check's tokens (module docstring: why few).
CLAIM_TOKENS = 4_096
REAL_SIZES: dict[str, Sizes] = {
    "smoke": Sizes(CLAIM_TOKENS, 16_384, 128),
    "breadth": Sizes(CLAIM_TOKENS, 524_288, 1024),
    "confirm": Sizes(CLAIM_TOKENS, 2_097_152, 1024),
    "full": Sizes(CLAIM_TOKENS, 0, 1024),
}
SAMPLE_SIZES: dict[str, Sizes] = {
    "smoke": Sizes(CLAIM_TOKENS, 16_384, 128),
    "breadth": Sizes(CLAIM_TOKENS, 32_768, 1024),
    "confirm": Sizes(CLAIM_TOKENS, 65_536, 1024),
    "full": Sizes(CLAIM_TOKENS, 0, 1024),
}


class HoldoutError(Exception):
    """The holdout cannot be cut as asked; the message names the profile/file and the fix."""


def sizes_for(info: datasets.DatasetInfo, profile: str) -> Sizes:
    table = SAMPLE_SIZES if info.kind == "sample" else REAL_SIZES
    if profile not in table:
        raise HoldoutError(f"no holdout sizes for profile {profile!r} (known: "
                           f"{', '.join(table)}); add it to loop/judge/holdout.py")
    return table[profile]


@dataclass(frozen=True)
class Holdout:
    """The judge's tokens and where they came from; `tokens` never reaches the trainer."""

    tokens: np.ndarray = field(repr=False)
    dataset_id: str
    profile: str
    start: int  # position in the concatenated val split
    trainer_tokens: int  # the printout slice is train[0 : trainer_tokens + 1]
    sha256: str  # of the holdout tokens as little-endian uint16
    seq_len: int  # windows the judge scores it in (the daemon's, not the trainer's, value)

    def identity(self) -> dict:
        """What a ledger row records so that scores are compared within one protocol only."""
        return {"format": HOLDOUT_FORMAT, "dataset": self.dataset_id, "profile": self.profile,
                "start": self.start, "tokens": int(self.tokens.size),
                "trainer_slice": [0, self.trainer_tokens + 1], "sha256": self.sha256,
                "seq_len": self.seq_len,
                "cut": "holdout: the front of the val split; the trainer's printout slice: "
                       "the front of the train split (no validation token is given)"}

    @property
    def id(self) -> str:
        return f"{self.dataset_id}:{self.profile}:{self.sha256[:16]}"


@dataclass(frozen=True)
class Prepared:
    """What the daemon hands the trainer (paths) and keeps for the judge (holdout)."""

    data_path: Path
    tokenizer_path: Path
    holdout: Holdout

    def trainer_slice(self) -> np.ndarray:
        """The val tokens the trainer was given: what its printed val_bpb is about."""
        return shards.load_tokens(self.data_path / VAL_FILE)


def val_split(info: datasets.DatasetInfo) -> np.ndarray:
    files = shards.shard_files(info.data_path, "val")
    if not files:
        raise HoldoutError(f"no {shards.VAL_PATTERN} in {info.data_path}")
    return np.concatenate([shards.load_tokens(f, info.vocab_size) for f in files])


def train_front(info: datasets.DatasetInfo, count: int) -> np.ndarray:
    """The first `count` tokens of the train split (the trainer's printout slice)."""
    parts, have = [], 0
    for path in shards.shard_files(info.data_path, "train"):
        tokens = shards.load_tokens(path, info.vocab_size)[: count - have]
        parts.append(tokens)
        have += tokens.size
        if have >= count:
            break
    if have < count:
        raise HoldoutError(f"the train split of {info.data_path} has {have} tokens, fewer "
                           f"than the {count}-token printout slice")
    return np.concatenate(parts)


def cut(val: np.ndarray, sizes: Sizes, profile: str) -> tuple[int, int]:
    """(holdout start, holdout end) in the val split; HoldoutError if it won't fit."""
    if val.size == 0 or val[0] != BOS_ID:
        raise HoldoutError(f"profile {profile!r}: the val split does not start a document "
                           "(BOS); is it a parameter-golf shard?")
    stop = val.size if sizes.holdout_tokens == 0 else sizes.holdout_tokens
    if stop > val.size:
        raise HoldoutError(
            f"profile {profile!r}: the val split has {val.size} tokens, too few for a "
            f"{sizes.holdout_tokens}-token holdout; use smaller sizes in loop/judge/holdout.py")
    return 0, stop


def make_holdout(info: datasets.DatasetInfo, profile: str) -> tuple[Holdout, np.ndarray]:
    """The holdout (val split) and the trainer's printout slice (train split), for one
    profile."""
    sizes = sizes_for(info, profile)
    val = val_split(info)
    start, stop = cut(val, sizes, profile)
    tokens = np.ascontiguousarray(val[start:stop], dtype="<u2")
    holdout = Holdout(tokens, datasets.dataset_id(info), profile, start, sizes.trainer_tokens,
                      hashlib.sha256(tokens.tobytes()).hexdigest(), sizes.seq_len)
    return holdout, train_front(info, sizes.trainer_tokens + 1)


def _link(source: Path, target: Path) -> None:
    """A hard link when the filesystem allows it (no path back to the dataset), else a
    symlink; never a copy of a big file."""
    if target.exists() and os.path.samefile(target, source):
        return
    if target.exists() or target.is_symlink():
        target.unlink()
    try:
        os.link(source, target)
    except OSError:
        target.symlink_to(source.resolve())


def prepare(info: datasets.DatasetInfo, profile: str, root: Path) -> Prepared:
    """Assemble the trainer's data folder under root/.autogolf/ and cut the holdout.

    The folder is named after the holdout's identity, so the same protocol reuses it and a
    different one never shares it. Its DATA_PATH has the train shards (links) and one
    `fineweb_val_000000.bin` with the printout slice (train tokens) only.
    """
    holdout, trainer_slice = make_holdout(info, profile)
    folder = Path(root) / DATA_FOLDER / f"{info.name}-{profile}-{holdout.sha256[:12]}"
    folder.mkdir(parents=True, exist_ok=True)
    for shard in shards.shard_files(info.data_path, "train"):
        _link(shard, folder / shard.name)
    val_file = folder / VAL_FILE
    if not val_file.is_file() or not np.array_equal(shards.load_tokens(val_file), trainer_slice):
        shards.write_shard(val_file, trainer_slice)
    return Prepared(folder, info.tokenizer_path, holdout)
