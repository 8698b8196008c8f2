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
    from loop.data import datasets, sample_data

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



# The fake-benchmark repository of the scheduler tests, for every test module (a module may
# define its own `repo` instead, as test_gitsession does).
from scheduler_helpers import cache_root, repo  # noqa: E402, F401
