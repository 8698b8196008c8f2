"""Held-out validation tokens for the judge, and the data folder the trainer is given.

The validation split is cut in two, front to back:

    val split:  [ trainer slice: 0 .. t ] [ gap to the next BOS ] [ holdout: h0 .. h1 ] [ rest ]

- the **trainer slice** is the first `trainer_tokens + 1` tokens (the same cut the trainer's
  own `load_val_tokens` makes with VAL_MAX_TOKENS, so its printouts cover exactly these). It
  is written as the only validation shard of the data folder the trainer gets, beside links to
  the dataset's train shards. The trainer's printed val_bpb is a claim the judge compares
  against its own score of the same slice, if it wants to;
- the **holdout** starts at the first document start (BOS) after the slice, so no document is
  shared with it, and holds `holdout_tokens` tokens (0 = everything after the slice). The
  judge scores only these, in non-overlapping windows of the profile's TRAIN_SEQ_LEN
  (loop/judge/score.py). The data folder never contains them.

**How `full` is scored:** on real data the trainer keeps a 1,048,576-token slice for its
printouts and the holdout is *the whole rest of the split* (~61M of the ~62M tokens), so the
full rung is still a full-split score. It is not the same number as upstream's val_bpb over the
entire split (the first 1M tokens are not in it); results stay comparable within one protocol
only, which is why every row records `identity()`.

The judge's window length is the protocol's too (Sizes.seq_len, autoresearch.sh's
TRAIN_SEQ_LEN per profile): a trainer that changes its own seq len is still scored in the
daemon's windows.

Sizes per profile (tokens; trainer slice / holdout):

| profile | real data (val ~62M)    | offline sample (val 115,973)        |
|---------|-------------------------|-------------------------------------|
| smoke   | 16,384 / 16,384         | 16,384 / 16,384                     |
| breadth | 524,288 / 524,288       | 16,384 / 32,768                     |
| confirm | 2,097,152 / 2,097,152   | 16,384 / 65,536                     |
| full    | 1,048,576 / the rest    | 16,384 / the rest (~99.5k)          |

The sample's split is too small for the real sizes, so it gets its own table: every sample
holdout fits after one small trainer slice (checked at build, with an error naming the
profile). The trainer slice at smoke equals autoresearch.sh's smoke VAL_MAX_TOKENS, so the
trainer's printouts at smoke are unchanged.

What the trainer can still do (docs/THREAT_MODEL.md): it runs as the same user and can open the
dataset's original val shard by path; the folder only keeps the holdout out of what it is
*given*. A sandbox (issue 18) closes that.
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


REAL_SIZES: dict[str, Sizes] = {
    "smoke": Sizes(16_384, 16_384, 128),
    "breadth": Sizes(524_288, 524_288, 1024),
    "confirm": Sizes(2_097_152, 2_097_152, 1024),
    "full": Sizes(1_048_576, 0, 1024),
}
SAMPLE_SIZES: dict[str, Sizes] = {
    "smoke": Sizes(16_384, 16_384, 128),
    "breadth": Sizes(16_384, 32_768, 1024),
    "confirm": Sizes(16_384, 65_536, 1024),
    "full": Sizes(16_384, 0, 1024),
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
    trainer_tokens: int  # the trainer slice is val[0 : trainer_tokens + 1]
    sha256: str  # of the holdout tokens as little-endian uint16
    seq_len: int  # windows the judge scores it in (the daemon's, not the trainer's, value)

    def identity(self) -> dict:
        """What a ledger row records so that scores are compared within one protocol only."""
        return {"format": HOLDOUT_FORMAT, "dataset": self.dataset_id, "profile": self.profile,
                "start": self.start, "tokens": int(self.tokens.size),
                "trainer_slice": [0, self.trainer_tokens + 1], "sha256": self.sha256,
                "seq_len": self.seq_len,
                "cut": "val split; trainer slice first, holdout from the next BOS after it"}

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


def cut(val: np.ndarray, sizes: Sizes, profile: str) -> tuple[int, int, int]:
    """(trainer slice end, holdout start, holdout end) in val; HoldoutError if it won't fit."""
    slice_end = min(sizes.trainer_tokens + 1, val.size)
    bos = np.flatnonzero(val[slice_end:] == BOS_ID)
    if bos.size == 0:
        raise HoldoutError(f"profile {profile!r}: no document starts after the trainer's "
                           f"{sizes.trainer_tokens}-token slice of a {val.size}-token split")
    start = slice_end + int(bos[0])
    stop = val.size if sizes.holdout_tokens == 0 else start + sizes.holdout_tokens
    if stop > val.size:
        raise HoldoutError(
            f"profile {profile!r}: the val split has {val.size} tokens, too few for a "
            f"{sizes.trainer_tokens}-token trainer slice and a {sizes.holdout_tokens}-token "
            f"holdout from token {start}; use smaller sizes in loop/judge/holdout.py")
    return slice_end, start, stop


def make_holdout(info: datasets.DatasetInfo, profile: str) -> tuple[Holdout, np.ndarray]:
    """The holdout and the trainer's slice of the val split, for one profile."""
    sizes = sizes_for(info, profile)
    val = val_split(info)
    slice_end, start, stop = cut(val, sizes, profile)
    tokens = np.ascontiguousarray(val[start:stop], dtype="<u2")
    holdout = Holdout(tokens, datasets.dataset_id(info), profile, start, slice_end - 1,
                      hashlib.sha256(tokens.tobytes()).hexdigest(), sizes.seq_len)
    return holdout, val[:slice_end]


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
    `fineweb_val_000000.bin` with the trainer slice only.
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
