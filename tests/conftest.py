"""Shared fixtures: the repo root, the offline sample dataset, the fast-BLAS environment."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def repo_root() -> Path:
    return REPO_ROOT


@pytest.fixture(scope="session")
def sample_dataset(repo_root: Path):
    """The offline sample dataset (built once if missing; `scripts/setup.sh` normally has)."""
    from loop import datasets, sample_data

    try:
        return datasets.resolve("sample", repo_root)
    except datasets.DatasetError:
        sample_data.build_sample(repo_root)
        return datasets.resolve("sample", repo_root)


@pytest.fixture(scope="session")
def trainer_env(sample_dataset) -> dict[str, str]:
    """Environment for running the real trainer as a child: fast BLAS, sample data, CPU."""
    from loop.platform import blas_env

    env = dict(os.environ)
    env.update(blas_env(env))
    env["DATA_PATH"] = str(sample_dataset.data_path)
    env["TOKENIZER_PATH"] = str(sample_dataset.tokenizer_path)
    return env


@pytest.fixture(scope="session")
def cache_root(sample_dataset) -> Path:
    """Where the sample data lives (the repo's own data/, shared, never copied)."""
    return Path(sample_dataset.data_path).parents[2]


@pytest.fixture
def repo(tmp_path: Path, cache_root: Path, monkeypatch: pytest.MonkeyPatch):
    """A small git repo whose benchmark is a fake (tests/scheduler_helpers.py); a test module
    may define its own `repo` instead."""
    from scheduler_helpers import make_repo

    yield from make_repo(tmp_path, cache_root, monkeypatch)
