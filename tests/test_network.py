"""loop/network.py, the one table of the baseline network's tensors, is the trainer's network:
the trained names and shapes match the trainer's own model, at the defaults and at another
shape, so the trusted re-evaluation and the search's size model follow the trainer."""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

from loop import network
from loop.proposers.shape import parameter_count

TRAINER_REL = "benchmark/train_gpt_mlx.py"


def trainer_tensors(repo_root: Path, monkeypatch: pytest.MonkeyPatch,
                    settings: dict[str, int]) -> dict[str, tuple[int, ...]]:
    from mlx.utils import tree_flatten

    for name, value in settings.items():
        monkeypatch.setenv(name, str(value))
    spec = importlib.util.spec_from_file_location("train_gpt_mlx_network", repo_root / TRAINER_REL)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    import mlx.core as mx

    model = module.GPT(module.Hyperparameters(), mx.float32)
    return {name: tuple(value.shape) for name, value in tree_flatten(model.parameters())}


@pytest.mark.parametrize("settings", [
    {},
    {"NUM_LAYERS": 3, "MODEL_DIM": 96, "NUM_HEADS": 4, "NUM_KV_HEADS": 2, "MLP_MULT": 3},
], ids=["defaults", "another shape"])
def test_the_table_is_the_trainers_network(repo_root, monkeypatch, settings):
    expected = network.tensors(network.Shape.from_settings(settings))
    assert trainer_tensors(repo_root, monkeypatch, settings) == expected


def test_the_search_counts_the_parameters_of_the_trainers_network(repo_root, monkeypatch):
    settings = {"NUM_LAYERS": 4, "MODEL_DIM": 64, "NUM_HEADS": 2, "NUM_KV_HEADS": 1,
                "MLP_MULT": 2}
    trained = trainer_tensors(repo_root, monkeypatch, settings)
    assert parameter_count(settings) == sum(math.prod(dims) for dims in trained.values())
