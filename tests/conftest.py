"""Shared fixtures: a small real data set and small trained models (digits, a few epochs)."""

import collections
import hashlib
import json
import os
from pathlib import Path

import pytest
import torch

from lmcot.data import prepare
from lmcot.models import build_model
from lmcot.training import Recipe, train_model

PACKAGE = Path(__file__).resolve().parents[1] / "lmcot"


# The end-to-end files, longest first (`make test` prints the slowest tests). Under `make test` (pytest-xdist,
# one worker per core, each file on one worker) they start first, so that the short files fill the gaps at
# the end instead of one long file running alone.
LONGEST_FIRST = ("test_experiments.py", "test_cluster.py", "test_pipeline.py", "test_sharing.py", "test_reliability.py")


def pytest_configure(config):
    if hasattr(config, "workerinput"):
        # `make test` runs one worker per core: one thread each, here and in the stages they start, so that
        # two workers do not oversubscribe the cores (about a tenth less CPU time on 2 cores). Set it yourself
        # to override.
        os.environ.setdefault("OMP_NUM_THREADS", "1")
        torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))


def pytest_collection_modifyitems(config, items):
    if hasattr(config, "workerinput"):  # a worker of pytest-xdist: every worker sorts the same way
        rank = {name: i for i, name in enumerate(LONGEST_FIRST)}
        items.sort(key=lambda item: rank.get(item.path.name, len(rank)))  # a stable sort: files stay whole
    else:
        order_by_mutmut_durations(items)


def order_by_mutmut_durations(items):
    """Under ``make mutate`` only: a mutant's test files run cheapest first (by mutmut's recorded durations of
    the tests selected), so that a fast exact-value test kills it before the slow ones start (mutmut stops at
    the first failure). Each file's tests keep their order, so its fixtures are set up once."""
    stats = Path("mutmut-stats.json")
    if "MUTANT_UNDER_TEST" not in os.environ or not stats.is_file():
        return
    durations = json.loads(stats.read_text())["duration_by_test"]
    cost = collections.defaultdict(float)
    for item in items:
        cost[item.path] += durations.get(item.nodeid, 0.0)
    items.sort(key=lambda item: cost[item.path])  # a stable sort


@pytest.fixture(scope="session")
def digits():
    return prepare("digits", {"test_fraction": 0.25, "seed": 0})


def trained_models(digits, arch, width, depth, recipe, seeds) -> list[torch.nn.Module]:
    """One model per seed, trained on ``digits``.

    Under ``make mutate`` (mutmut sets MUTANT_UNDER_TEST) every mutant's tests run in a new process; there the
    models are trained once and loaded from disk afterwards, keyed by the training code and the arguments.
    Training code is not under mutation, so a mutant sees the models it would have trained; one that could only
    show through training would survive, never be counted killed by mistake.
    """
    train = lambda: [train_model(digits, arch, width, depth, recipe, s, progress=False)[0] for s in seeds]  # noqa: E731
    if "MUTANT_UNDER_TEST" not in os.environ:
        return train()
    files = [PACKAGE / "training.py", *sorted((PACKAGE / "models").glob("*.py")), PACKAGE / "data.py"]
    code = b"".join(path.read_bytes() for path in files)
    key = hashlib.sha256(code + repr((arch, width, depth, recipe, list(seeds))).encode()).hexdigest()[:16]
    path = PACKAGE.parent / ".mutation_models" / f"{arch}-{key}.pt"
    if path.is_file():
        models = [build_model(arch, digits.input_shape, digits.num_classes, width, depth) for _ in seeds]
        for model, state in zip(models, torch.load(path), strict=True):
            model.load_state_dict(state)
            model.eval()  # as train_model returns it
        return models
    models = train()
    path.parent.mkdir(exist_ok=True)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")  # two mutants may train the same models at once
    torch.save([model.state_dict() for model in models], tmp)
    tmp.replace(path)
    return models


@pytest.fixture(scope="session")
def trained_pair(digits):
    """Two MLPs (width 24, 2 hidden layers) trained from different seeds."""
    return trained_models(digits, "mlp", 24, 2, Recipe(lr=0.05, epochs=4, batch_size=64), (0, 1))


@pytest.fixture
def generator():
    return torch.Generator().manual_seed(1234)


def batch_sizes(model: torch.nn.Module) -> list[int]:
    """The list that every later forward pass of ``model`` appends its batch size to (a forward pre-hook)."""
    seen = []
    model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    return seen
