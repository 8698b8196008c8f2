"""Pre-flight checks (loop.daemon.preflight): disk floor, dataset unchanged, worktree clean."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from loop.daemon import preflight
from loop.data import datasets


@pytest.fixture
def data_root(tmp_path: Path, sample_dataset) -> Path:
    """A private copy of the sample dataset (tests change it; the shared one stays)."""
    root = tmp_path / "cache"
    source = Path(sample_dataset.data_path).parents[2]
    for sub in ("data/datasets/sample_sp1024", "data/tokenizers"):
        shutil.copytree(source / sub, root / sub)
    return root


def watch_of(root: Path) -> preflight.DatasetWatch:
    info = datasets.resolve("sample", root)
    return preflight.DatasetWatch("sample", info, datasets.dataset_id(info), root)


def test_disk_floor_zero_is_off_and_a_small_floor_passes(tmp_path):
    assert preflight.disk_problem(tmp_path, 0) is None
    assert preflight.disk_problem(tmp_path, 1) is None


def test_disk_under_the_floor_names_the_setting_and_the_free_space(tmp_path):
    free_mb = shutil.disk_usage(tmp_path).free // preflight.MB
    message = preflight.disk_problem(tmp_path, free_mb + 10_000)
    assert message is not None
    assert f"limits.min_free_disk_mb is {free_mb + 10_000}" in message
    assert str(tmp_path) in message and "MB free" in message


def test_clean_worktree_passes_and_a_dirty_one_lists_the_files(tmp_path):
    assert preflight.worktree_problem([], tmp_path) is None
    message = preflight.worktree_problem([f"f{i}" for i in range(7)], tmp_path)
    assert message is not None and str(tmp_path) in message
    assert "f0, f1, f2, f3, f4 (+2 more)" in message


def test_the_content_id_of_the_sample_matches_its_manifest(data_root):
    info = datasets.resolve("sample", data_root)
    assert preflight.content_id(info) == datasets.dataset_id(info)


def test_an_untouched_dataset_passes(data_root):
    assert watch_of(data_root).problem() is None


def test_a_dataset_touched_but_identical_passes(data_root):
    watch = watch_of(data_root)
    shard = next((data_root / "data/datasets/sample_sp1024").glob("*train*.bin"))
    os.utime(shard, ns=(1, 1))
    assert watch.problem() is None


def test_a_shard_edited_in_place_is_a_changed_dataset(data_root):
    watch = watch_of(data_root)
    shard = next((data_root / "data/datasets/sample_sp1024").glob("*train*.bin"))
    data = bytearray(shard.read_bytes())
    data[-1] ^= 1  # same size: only the content hash can tell
    shard.write_bytes(bytes(data))
    message = watch.problem()
    assert message is not None and "changed since the daemon started" in message
    assert "sample_sp1024:" in message and "--new-session" in message


def test_a_missing_tokenizer_is_a_missing_dataset(data_root):
    watch = watch_of(data_root)
    (data_root / "data/tokenizers/sample_1024_bpe.model").unlink()
    message = watch.problem()
    assert message is not None and "missing or incomplete" in message
    assert "sample_1024_bpe.model" in message


def test_preflight_reports_the_first_problem(tmp_path, data_root):
    changed: list[str] = ["knobs.sh"]
    check = preflight.Preflight(tmp_path, 0, watch_of(data_root), tmp_path, lambda: changed)
    assert "knobs.sh" in (check.problem() or "")
    changed.clear()
    assert check.problem() is None
    check.min_free_disk_mb = 10**9
    assert "min_free_disk_mb" in (check.problem() or "")
