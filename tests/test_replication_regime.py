"""Which aspects of a run put it outside a paper's regime, which configurations a replication reads, and the
small texts a section is made of."""

import numpy as np
import pandas as pd
import pytest
from test_replication import ainsworth_run, barrier_rows, ferbach_run, preset_params

from lmcot.replication import (
    Run,
    _ainsworth_settings,
    _ferbach_settings,
    _warmup_text,
    markdown,
    replicate,
)

FERBACH_CONFIG = pd.Series({"dataset": "mnist", "arch": "mlp", "depth": 3, "width": 512, "lr": 0.01})
FERBACH_LRS = [1e-4, 3.98e-4, 1.58e-3, 6.31e-3, 2.51e-2, 0.1]


@pytest.fixture(scope="module")
def ferbach_params():
    return preset_params("ferbach2024_mnist", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})


@pytest.fixture(scope="module")
def ainsworth_params():
    return preset_params("ainsworth2023_mnist_mlp_width", **{"train.sweep.datasets": ["mnist"], "fetch.datasets": []})


def differing(settings) -> tuple[list[str], list[str]]:
    """(core aspects that differ, other aspects that differ)."""
    core = [s.aspect for s in settings if s.core and not s.same]
    other = [s.aspect for s in settings if not s.core and not s.same]
    return core, other


def edit(params: dict, **changes) -> dict:
    """``params`` with ``group.key=value`` changes (``prepare__mnist__standardise`` style keys: ``__`` for dots)."""
    out = {k: (dict(v) if isinstance(v, dict) else v) for k, v in params.items()}
    for key, value in changes.items():
        *parents, last = key.split("__")
        node = out
        for part in parents:
            node[part] = dict(node[part])
            node = node[part]
        node[last] = value
    return out


def test_the_full_ferbach_preset_on_mnist_differs_from_the_paper_in_no_aspect(ferbach_params):
    settings = _ferbach_settings(ferbach_params, FERBACH_CONFIG, FERBACH_LRS)
    assert differing(settings) == ([], [])
    assert [s.core for s in settings] == [True, True, True, True, True, True, False, False, False]


@pytest.mark.parametrize(
    "changes, config, core",
    [
        ({}, {"dataset": "mnist1d"}, "data"),
        ({"prepare__mnist__standardise": True}, {}, "inputs"),
        ({}, {"depth": 2}, "network"),
        ({}, {"width": 256}, "network"),
        ({}, {"arch": "cnn"}, "network"),
        ({"train__recipe__optimizer": "adam"}, {}, "optimiser"),
        ({"train__recipe__momentum": 0.0}, {}, "optimiser"),
        ({"train__recipe__batch_size": 250, "train__recipe__epochs": 25}, {}, "batch, epochs"),
    ],
)
def test_each_core_aspect_of_ferbach_takes_a_run_out_of_the_regime(ferbach_params, changes, config, core):
    params = edit(ferbach_params, **changes)
    settings = _ferbach_settings(params, pd.Series({**FERBACH_CONFIG, **config}), FERBACH_LRS)
    assert core in differing(settings)[0]


@pytest.mark.parametrize(
    "changes, lrs, other",
    [
        ({"train__recipe__warmup_steps": 5}, FERBACH_LRS, "schedule"),
        ({"train__recipe__schedule": "constant"}, FERBACH_LRS, "schedule"),
        ({}, FERBACH_LRS[::2], "learning rates"),
        ({}, [*FERBACH_LRS[:-1], 0.2], "learning rates"),
        ({}, [1e-3, *FERBACH_LRS[1:]], "learning rates"),
        ({"train__seeds": list(range(6))}, FERBACH_LRS, "pairs per learning rate"),
    ],
)
def test_other_aspects_of_ferbach_are_listed_but_keep_the_regime(ferbach_params, changes, lrs, other):
    settings = _ferbach_settings(edit(ferbach_params, **changes), FERBACH_CONFIG, lrs)
    assert differing(settings) == ([], [other])


def test_each_aspect_of_git_rebasin(ainsworth_params):
    config = pd.Series({"dataset": "mnist", "arch": "mlp", "depth": 3, "width": 512, "lr": 1e-3})
    settings = _ainsworth_settings(ainsworth_params, config, [32, 512])
    assert differing(settings) == ([], []) and [s.core for s in settings] == [True] * 3 + [False] + [True] * 3 + [False]
    assert differing(_ainsworth_settings(ainsworth_params, config, [32, 256])) == ([], ["widths"])
    for changes, override, core in (
        ({}, {"dataset": "cifar10"}, "data"),
        ({"prepare__mnist__standardise": True}, {}, "inputs"),
        ({}, {"depth": 2}, "network"),
        ({}, {"lr": 1e-2}, "optimiser"),
        ({"train__recipe__optimizer": "sgd"}, {}, "optimiser"),
        ({"train__recipe__epochs": 50}, {}, "batch, epochs"),
    ):
        settings = _ainsworth_settings(edit(ainsworth_params, **changes), pd.Series({**config, **override}), [512])
        assert core in differing(settings)[0], (changes, override)


def test_warm_up_in_steps_epochs_or_none():
    recipe = {"warmup_steps": 10, "warmup_epochs": 0, "schedule": "cosine"}
    assert _warmup_text(recipe) == "10 warm-up steps, then cosine"
    assert _warmup_text({**recipe, "warmup_steps": 0, "warmup_epochs": 1.5}) == "1.5 warm-up epochs, then cosine"
    assert _warmup_text({**recipe, "warmup_steps": 0, "schedule": "constant"}) == "no warm-up, constant"


def test_a_markdown_table_prints_learning_rates_as_written_floats_with_3_decimals_and_nan_as_empty():
    table = pd.DataFrame({"lr": [0.001, 0.1], "barrier": [0.12345, np.nan], "method": ["a", "b"], "pairs": [3, 4]})
    lines = markdown(table).splitlines()
    assert [cell.strip() for cell in lines[2].split("|")[1:-1]] == ["0.001", "0.123", "a", "3"]
    assert [cell.strip() for cell in lines[3].split("|")[1:-1]] == ["0.1", "", "b", "4"]


def test_ferbach_reads_the_mlp_closest_to_the_papers(ferbach_params):
    """Two MLPs on MNIST trained at 3 learning rates, 3x512 and 2x128, and a 3x512 on MNIST-1D at 4: the paper's
    network on the paper's data wins, whatever the order of the rows or the number of learning rates."""
    run = ferbach_run(ferbach_params)
    small = run.barriers.assign(depth=2, width=128)
    other_data = pd.concat([run.barriers, run.barriers[run.barriers["lr"] == 0.1].assign(lr=0.5)]).assign(
        dataset="mnist1d"
    )
    barriers = pd.concat([small, other_data, run.barriers], ignore_index=True)
    result = replicate("ferbach2024", Run(run.params, barriers, run.dimensions))
    assert result.notes[-1] == "Configuration used: mnist mlp-d3-w512, learning rates 0.001, 0.01, 0.1."
    no_mnist = replicate("ferbach2024", Run(run.params, pd.concat([small.assign(dataset="mnist1d"), other_data]),
                                            run.dimensions))  # fmt: skip
    assert no_mnist.notes[-1] == "Configuration used: mnist1d mlp-d3-w512, learning rates 0.001, 0.01, 0.1, 0.5."


def test_git_rebasin_reads_the_3_layer_mnist_mlp_at_adams_rate_and_judges_width_512(ainsworth_params):
    run = ainsworth_run(ainsworth_params, {32: (0.4, 1.0), 512: (0.02, 1.0), 1024: (0.01, 1.0)})
    deeper = run.barriers.assign(depth=4)
    other_lr = run.barriers.assign(lr=1e-2)
    other_data = run.barriers.assign(dataset="mnist1d")
    barriers = pd.concat([deeper, other_lr, other_data, run.barriers], ignore_index=True)
    result = replicate("ainsworth2023", Run(run.params, barriers, run.dimensions))
    assert result.notes[-1] == ("Configuration used: mnist mlp-d3 at learning rate 0.001, widths 32, 512, 1024 (32x).")
    assert result.claims[0].text.endswith("at width 512).")  # the paper's width, not the widest
    near_zero = result.claims[0].evidence
    assert near_zero["pairs"].tolist() == [3, 3, 3, 3]


def test_a_replication_leaves_out_a_claim_whose_methods_the_run_lacks(ainsworth_params, ferbach_params):
    run = ainsworth_run(ainsworth_params, {32: (0.4, 1.0), 512: (0.02, 1.0)})
    unaligned_only = Run(run.params, run.barriers[run.barriers["method"] == "identity"], run.dimensions)
    assert replicate("ainsworth2023", unaligned_only).claims == []
    ferbach = ferbach_run(ferbach_params)
    no_dimensions = Run(ferbach.params, ferbach.barriers, ferbach.dimensions.iloc[:0])
    keys = [c.key for c in replicate("ferbach2024", no_dimensions).claims]
    assert keys == ["cov_weight_matching_midpoint_below_naive", "activation_covariance_midpoint_below_naive"]
    one_width = barrier_rows({(512, "weight_matching"): [1.0] * 3, (512, "identity"): [2.0] * 3},
                             dataset="mnist", arch="mlp", depth=3, lr=1e-3)  # fmt: skip
    nothing = replicate("ainsworth2023", Run(run.params, one_width, pd.DataFrame()))
    assert [c.key for c in nothing.claims] == ["ainsworth2023"] and nothing.settings == []
