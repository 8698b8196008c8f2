"""How many UTF-8 bytes each target token stands for: the denominator of val_bpb (SPEC 3).

The rules, per piece of the sentencepiece vocabulary:
- control, unknown and unused pieces (pad, BOS, EOS, <unk>) stand for 0 bytes and are
  "boundaries";
- byte-fallback pieces (`<0xNN>`) stand for 1 byte;
- any other piece stands for the UTF-8 length of its text without the leading word-boundary
  mark U+2581, plus 1 byte for that mark (a space) unless the previous token is a boundary:
  the first word of a document, right after BOS, has no space before it.

Upstream's byte-level variant (byte260) has no sentencepiece model but a JSON file
(`"tokenizer_type": "pure_byte"`): ids below its `byte_offset` (pad, BOS, EOS, unk) are
boundaries worth 0 bytes, and each of the next 256 ids is one byte; there is no word mark.

This is the trusted copy that the daemon and the tests use; the trainer carries its own (it
must stand alone), and the tests check both against real text.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import NamedTuple

import numpy as np

WORD_MARK = "\u2581"


class ByteTables(NamedTuple):
    base_bytes: np.ndarray  # int16[V]: bytes of the piece without its leading mark
    has_leading_space: np.ndarray  # bool[V]: the piece starts with the word-boundary mark
    is_boundary: np.ndarray  # bool[V]: control/unknown/unused, or beyond the tokenizer


def pure_byte_config(path) -> dict | None:  # noqa: ANN001 - a path or a processor
    """The config of upstream's pure-byte tokenizer JSON at `path`, else None."""
    if not isinstance(path, (str, Path)) or not str(path).endswith(".json"):
        return None
    data = json.loads(Path(path).read_text(encoding="utf-8"))
    if not isinstance(data, dict) or data.get("tokenizer_type") != "pure_byte":
        raise ValueError(f"{path} is not a pure_byte tokenizer (tokenizer_type "
                         f"{data.get('tokenizer_type') if isinstance(data, dict) else None!r})")
    config = {"byte_offset": 4, "byte_count": 256, **(data.get("config") or {})}
    config["vocab_size"] = int(data.get("vocab_size", config["byte_offset"]
                                        + config["byte_count"]))
    return config


def vocab_size_of(path) -> int:  # noqa: ANN001 - a path
    """How many ids the tokenizer at `path` has (sentencepiece .model or pure-byte .json)."""
    config = pure_byte_config(path)
    if config is not None:
        return config["vocab_size"]
    return int(_processor(path).get_piece_size())


def _pure_byte_tables(config: dict, vocab_size: int) -> ByteTables:
    if config["vocab_size"] > vocab_size:
        raise ValueError(f"tokenizer has {config['vocab_size']} ids, more than vocab_size "
                         f"{vocab_size}")
    base = np.zeros(vocab_size, dtype=np.int16)
    boundary = np.ones(vocab_size, dtype=bool)
    first, count = int(config["byte_offset"]), int(config["byte_count"])
    base[first:first + count] = 1
    boundary[first:first + count] = False
    return ByteTables(base, np.zeros(vocab_size, dtype=bool), boundary)


def _processor(sp_or_model_path):
    if isinstance(sp_or_model_path, (str, Path)):
        import sentencepiece as spm

        return spm.SentencePieceProcessor(model_file=str(sp_or_model_path))
    return sp_or_model_path


def build_byte_tables(sp_or_model_path, vocab_size: int) -> ByteTables:
    """Per-id tables for a tokenizer (a SentencePieceProcessor, a .model path, or upstream's
    pure-byte .json).

    vocab_size may exceed the tokenizer's size (a model with padded embeddings); the extra
    ids are boundaries worth 0 bytes. A tokenizer larger than vocab_size is refused, since
    its ids could not be embedded.
    """
    config = pure_byte_config(sp_or_model_path)
    if config is not None:
        return _pure_byte_tables(config, vocab_size)
    sp = _processor(sp_or_model_path)
    pieces = sp.get_piece_size()
    if pieces > vocab_size:
        raise ValueError(f"tokenizer has {pieces} pieces, more than vocab_size {vocab_size}")
    base = np.zeros(vocab_size, dtype=np.int16)
    leading = np.zeros(vocab_size, dtype=bool)
    boundary = np.ones(vocab_size, dtype=bool)
    for token in range(pieces):
        if sp.is_control(token) or sp.is_unknown(token) or sp.is_unused(token):
            continue
        boundary[token] = False
        if sp.is_byte(token):
            base[token] = 1
            continue
        piece = sp.id_to_piece(token)
        if piece.startswith(WORD_MARK):
            leading[token] = True
            piece = piece[len(WORD_MARK):]
        base[token] = len(piece.encode("utf-8"))
    return ByteTables(base, leading, boundary)


def count_target_bytes(prev_ids, target_ids, tables: ByteTables) -> int:
    """Total bytes that target_ids stand for, each read after the matching prev_ids token."""
    prev = np.asarray(prev_ids, dtype=np.int64)
    target = np.asarray(target_ids, dtype=np.int64)
    if prev.shape != target.shape:
        raise ValueError(f"prev_ids {prev.shape} and target_ids {target.shape} differ in shape")
    base, leading, boundary = tables
    spaces = leading[target] & ~boundary[prev]
    return int(base[target].astype(np.int64).sum() + spaces.sum())


def count_document_bytes(ids, tables: ByteTables, bos_id: int = 1) -> int:
    """Bytes of one document's ids as the trainer scores them: the first one follows BOS."""
    ids = np.asarray(ids, dtype=np.int64)
    prev = np.concatenate([[bos_id], ids[:-1]]) if ids.size else ids
    return count_target_bytes(prev, ids, tables)

