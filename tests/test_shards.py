"""Shard format (SPEC section 2): every malformed shard is refused with the file and the problem."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from loop.data import shards
from loop.data.shards import ShardError


def raw_shard(path: Path, magic=shards.MAGIC, version=shards.VERSION, count=None, body=(1, 2, 3)):
    """Write a shard by hand so the header can disagree with the body."""
    header = np.zeros(shards.HEADER_INTS, dtype="<i4")
    header[:3] = (magic, version, len(body) if count is None else count)
    path.write_bytes(header.tobytes() + np.asarray(body, dtype="<u2").tobytes())
    return path


def test_write_then_load_gives_back_the_tokens(tmp_path):
    path = tmp_path / "fineweb_train_000000.bin"
    shards.write_shard(path, [1, 5, 1023, 0])
    tokens = shards.load_tokens(path, vocab_size=1024)
    assert tokens.dtype == np.uint16
    assert tokens.tolist() == [1, 5, 1023, 0]


def test_written_file_size_is_header_plus_two_bytes_per_token(tmp_path):
    path = tmp_path / "s.bin"
    shards.write_shard(path, np.arange(10))
    assert path.stat().st_size == 1024 + 2 * 10


def test_header_carries_magic_version_and_count(tmp_path):
    path = tmp_path / "s.bin"
    shards.write_shard(path, [1, 2, 3, 4])
    assert shards.read_header(path) == shards.ShardHeader(20240520, 1, 4)


def test_empty_shard_is_valid(tmp_path):
    path = tmp_path / "s.bin"
    shards.write_shard(path, [])
    assert shards.validate_shard(path, vocab_size=1024) == 0


def test_bad_magic_is_refused_naming_file_and_problem(tmp_path):
    path = raw_shard(tmp_path / "bad_magic.bin", magic=12345)
    with pytest.raises(ShardError) as err:
        shards.load_tokens(path)
    assert str(path) in str(err.value)
    assert "bad magic number 12345" in str(err.value)


def test_wrong_version_is_refused_naming_file_and_problem(tmp_path):
    path = raw_shard(tmp_path / "v2.bin", version=2)
    with pytest.raises(ShardError) as err:
        shards.validate_shard(path)
    assert str(path) in str(err.value)
    assert "unsupported version 2" in str(err.value)


def test_truncated_body_is_refused_naming_file_and_problem(tmp_path):
    path = raw_shard(tmp_path / "short.bin", count=10, body=(1, 2, 3))
    with pytest.raises(ShardError) as err:
        shards.load_tokens(path)
    assert str(path) in str(err.value)
    assert "truncated body" in str(err.value)
    assert "10 tokens" in str(err.value)


def test_truncated_body_is_found_without_reading_ids(tmp_path):
    path = raw_shard(tmp_path / "short.bin", count=10, body=(1, 2, 3))
    with pytest.raises(ShardError, match="truncated body"):
        shards.validate_shard(path)


def test_truncated_header_is_refused(tmp_path):
    path = tmp_path / "stub.bin"
    path.write_bytes(b"\x00" * 100)
    with pytest.raises(ShardError, match="truncated header: 100 bytes"):
        shards.read_header(path)


def test_bytes_after_the_announced_tokens_are_refused(tmp_path):
    path = raw_shard(tmp_path / "long.bin", count=2, body=(1, 2, 3))
    with pytest.raises(ShardError, match="2 bytes after the 2 tokens"):
        shards.validate_shard(path)


def test_token_id_at_or_above_vocab_size_is_refused_naming_file_and_problem(tmp_path):
    path = raw_shard(tmp_path / "ids.bin", body=(1, 7, 1024, 3))
    with pytest.raises(ShardError) as err:
        shards.load_tokens(path, vocab_size=1024)
    assert str(path) in str(err.value)
    assert "token id 1024 at position 2 is >= vocab size 1024" in str(err.value)


def test_token_ids_are_not_checked_without_a_vocab_size(tmp_path):
    path = raw_shard(tmp_path / "ids.bin", body=(1, 60000))
    assert shards.validate_shard(path) == 2


def test_missing_file_is_refused_naming_it(tmp_path):
    path = tmp_path / "nope.bin"
    with pytest.raises(ShardError, match="cannot read"):
        shards.read_header(path)


def test_write_refuses_ids_that_do_not_fit_uint16(tmp_path):
    with pytest.raises(ShardError, match="0..65535"):
        shards.write_shard(tmp_path / "s.bin", [1, 70000])
    assert not (tmp_path / "s.bin").exists()


def test_write_leaves_no_temporary_file(tmp_path):
    shards.write_shard(tmp_path / "s.bin", [1, 2])
    assert [p.name for p in tmp_path.iterdir()] == ["s.bin"]


def good_dataset(folder: Path, train: int = 2) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    shards.write_shard(folder / "fineweb_val_000000.bin", [1, 2, 3])
    for i in range(train):
        shards.write_shard(folder / f"fineweb_train_{i:06d}.bin", [1, 4, 5, 6])
    return folder


def test_directory_report_counts_files_and_tokens(tmp_path):
    report = shards.validate_directory(good_dataset(tmp_path / "d"))
    assert (report.train_files, report.train_tokens) == (2, 8)
    assert (report.val_files, report.val_tokens) == (1, 3)
    assert report.errors == []


def test_directory_without_val_shard_is_an_error(tmp_path):
    folder = good_dataset(tmp_path / "d")
    (folder / "fineweb_val_000000.bin").unlink()
    assert any("no validation shard" in e for e in shards.validate_directory(folder).errors)


def test_directory_with_fewer_train_shards_than_asked_is_an_error(tmp_path):
    folder = good_dataset(tmp_path / "d", train=2)
    errors = shards.validate_directory(folder, train_shards=3).errors
    assert errors == [f"{folder}: 2 train shards, expected at least 3"]


def test_directory_collects_every_bad_shard(tmp_path):
    folder = good_dataset(tmp_path / "d")
    raw_shard(folder / "fineweb_train_000000.bin", magic=1)
    raw_shard(folder / "fineweb_train_000001.bin", count=99)
    errors = shards.validate_directory(folder).errors
    assert len(errors) == 2
    assert "fineweb_train_000000.bin" in errors[0] and "fineweb_train_000001.bin" in errors[1]


def test_validate_command_fails_on_a_bad_shard_and_names_it(tmp_path, capsys):
    folder = good_dataset(tmp_path / "d")
    raw_shard(folder / "fineweb_train_000001.bin", version=7)
    assert shards.main(["--validate", str(folder)]) == 1
    assert "fineweb_train_000001.bin: unsupported version 7" in capsys.readouterr().err


def test_validate_command_passes_a_good_directory(tmp_path, capsys):
    folder = good_dataset(tmp_path / "d")
    assert shards.main(["--validate", str(folder), "--train-shards", "2"]) == 0
    out = capsys.readouterr().out
    assert "2 train shards (8 tokens), 1 val shards (3 tokens), 0 problems" in out
