"""Shared fixtures: a small real data set and small trained models (digits, a few epochs)."""

import pytest
import torch

from lmcot.data import prepare
from lmcot.training import Recipe, train_model


@pytest.fixture(scope="session")
def digits():
    return prepare("digits", {"test_fraction": 0.25, "seed": 0})


@pytest.fixture(scope="session")
def trained_pair(digits):
    """Two MLPs (width 24, 2 hidden layers) trained from different seeds."""
    recipe = Recipe(lr=0.05, epochs=4, batch_size=64)
    models = [train_model(digits, "mlp", 24, 2, recipe, seed, progress=False)[0] for seed in (0, 1)]
    return models


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)
