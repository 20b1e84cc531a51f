"""Barriers along linear paths: definitions on known curves, and real models."""

import copy
import logging
import re

import numpy as np
import pytest
import torch
from conftest import batch_sizes

from lmcot.align.methods import align
from lmcot.barrier import NonFinitePathError, barrier_summary, barrier_table, barrier_tables, interpolation_curve
from lmcot.config import Configuration
from lmcot.design import evaluation_grid
from lmcot.evaluation import correction_refusal, evaluate
from lmcot.permutation import identity_permutations


def test_grid_always_holds_endpoints_and_midpoint():
    assert evaluation_grid([0.25, 0.75]) == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert evaluation_grid([1.0, 0.0, 0.5, 0.5]) == [0.0, 0.5, 1.0]


def test_linear_curve_has_no_barrier():
    alphas = np.linspace(0, 1, 11)
    summary = barrier_summary(alphas, 2.0 + 3.0 * alphas)
    assert summary["barrier"] == pytest.approx(0.0, abs=1e-12)
    assert summary["midpoint"] == pytest.approx(3.5)
    assert summary["max_minus_endpoint_mean"] == pytest.approx(1.5)


def test_bump_above_the_chord_is_the_barrier():
    alphas = np.linspace(0, 1, 21)
    chord = 1.0 + alphas  # endpoints 1 and 2
    bump = 0.7 * np.sin(np.pi * alphas)
    summary = barrier_summary(alphas, chord + bump)
    assert summary["barrier"] == pytest.approx(0.7)
    assert summary["midpoint"] == pytest.approx(1.5 + 0.7)
    assert summary["max_minus_endpoint_mean"] == pytest.approx(np.max(chord + bump) - 1.5)
    assert (summary["value_a"], summary["value_b"]) == (pytest.approx(1.0), pytest.approx(2.0))


def test_unsorted_input_is_sorted_first():
    alphas = np.array([1.0, 0.0, 0.5])
    assert barrier_summary(alphas, [3.0, 1.0, 4.0])["barrier"] == pytest.approx(2.0)


def test_the_barrier_table_keeps_the_curves_order_and_summarises_each():
    import pandas as pd

    paths = [
        ("weight_matching", "train", [1.0, 1.5, 1.0]),  # barrier 0.5
        ("identity", "train", [1.0, 4.0, 3.0]),  # chord 2 at the midpoint: barrier 2
        ("weight_matching", "test", [2.0, 2.0, 2.0]),
    ]
    rows = [
        {"method": method, "split": split, "alpha": alpha, "value": value}
        for method, split, values in paths
        for alpha, value in zip([0.0, 0.5, 1.0], values, strict=True)
    ]
    curves = pd.DataFrame(rows)
    table = barrier_table(curves, ["method", "split"])
    # in the order the curves come (not sorted by method): rows follow the paths as the stage made them
    assert list(zip(table["method"], table["split"], strict=True)) == [
        ("weight_matching", "train"),
        ("identity", "train"),
        ("weight_matching", "test"),
    ]
    assert table["barrier"].tolist() == [0.5, 2.0, 0.0]
    assert table["midpoint"].tolist() == [1.5, 4.0, 2.0]


@pytest.mark.parametrize(
    "alphas", [[0.0, 1.0], [0.0, 0.5], [0.25, 0.5, 1.0], [-0.1, 0.0, 0.5, 1.0], [0.0, 0.5, 1.0, 1.5]]
)
def test_grid_without_endpoints_or_midpoint_is_refused(alphas):
    with pytest.raises(ValueError, match="alpha grid"):
        barrier_summary(alphas, np.zeros(len(alphas)))


def summarise(rows, split, metric):
    pts = [r for r in rows if r["split"] == split and r["metric"] == metric]
    return barrier_summary([r["alpha"] for r in pts], [r["value"] for r in pts])


def test_barrier_of_a_model_with_itself_is_zero(trained_pair, digits):
    model = trained_pair[0]
    splits = {"train": digits.split("train"), "test": digits.split("test")}
    container = type(model)(digits.input_shape, digits.num_classes, 24, 2)
    rows = interpolation_curve(container, model.state_dict(), model.state_dict(), evaluation_grid([0.1, 0.3]), splits)
    for split in splits:
        for metric in ("loss", "error"):
            summary = summarise(rows, split, metric)
            assert summary["barrier"] == pytest.approx(0.0, abs=1e-6)
            assert summary["midpoint"] == pytest.approx(summary["value_a"], abs=1e-6)


def test_path_endpoints_are_the_two_models(trained_pair, digits):
    model_a, model_b = trained_pair
    container = type(model_a)(digits.input_shape, digits.num_classes, 24, 2)
    x, y = digits.split("test")
    rows = interpolation_curve(container, model_a.state_dict(), model_b.state_dict(), [0.0, 0.5, 1.0], {"test": (x, y)})
    losses = {r["alpha"]: r["value"] for r in rows if r["metric"] == "loss"}
    assert losses[0.0] == pytest.approx(evaluate(model_a, x, y)["loss"], rel=1e-6)
    assert losses[1.0] == pytest.approx(evaluate(model_b, x, y)["loss"], rel=1e-6)
    # independently trained models are not linearly connected without alignment
    assert summarise(rows, "test", "loss")["barrier"] > 0


def test_states_of_other_architectures_are_refused(trained_pair, digits):
    model = trained_pair[0]
    container = type(model)(digits.input_shape, digits.num_classes, 24, 3)
    with pytest.raises(ValueError, match="different tensors"):
        interpolation_curve(
            container, model.state_dict(), model.state_dict(), [0.0, 1.0], {"test": digits.split("test")}
        )


def test_container_is_overwritten_not_the_inputs(trained_pair, digits):
    model_a, model_b = trained_pair
    before = {k: v.clone() for k, v in model_a.state_dict().items()}
    container = type(model_a)(digits.input_shape, digits.num_classes, 24, 2)
    interpolation_curve(
        container, model_a.state_dict(), model_b.state_dict(), [0.0, 0.5, 1.0], {"test": digits.split("test")}
    )
    assert all(torch.equal(before[k], v) for k, v in model_a.state_dict().items())


# --- the barrier tables of one configuration --------------------------------------------------------------

OPTIONS = {
    "alphas": [0.25, 0.75],
    "splits": ["train", "test"],
    "batch_size": 4096,
    "train_samples": 300,
    "norm_corrections": ["reset", "repair"],
    "norm_samples": 200,
}


def record(seed_a, seed_b, method, perms):
    return {
        "seed_a": seed_a,
        "seed_b": seed_b,
        "method": method,
        "permutations": {k: v.tolist() for k, v in perms.items()},
    }


def test_barrier_tables_of_every_record_and_applicable_correction(trained_pair, digits, caplog, capsys):
    config = Configuration("digits", "mlp", 2, 24, 0.05)
    models = dict(zip((3, 5), trained_pair, strict=True))
    identity = identity_permutations(trained_pair[0].permutation_spec(), trained_pair[0].state_dict())
    matched = align("weight_matching", *trained_pair)
    records = [record(3, 3, "identity", identity), record(3, 5, "weight_matching", matched)]
    with caplog.at_level(logging.INFO, logger="lmcot.barrier"):
        tables = barrier_tables(config, models, records, digits, OPTIONS)
    assert "no reset paths" in caplog.text  # an MLP has no BatchNorm; REPAIR applies
    assert f"{config.name}: no reset paths: BN reset recomputes BatchNorm statistics" in caplog.text
    assert f"{config.name}: no reset paths: {correction_refusal(trained_pair[0], 'reset')}" in caplog.messages
    assert f"{config.name}: 100%" in capsys.readouterr().err  # the progress bar names the configuration
    curves, barriers = tables.curves, tables.barriers
    # one log line per path: seeds, the path's label padded to 20 characters, its test loss barrier
    test_loss = barriers.query("split == 'test' and metric == 'loss'")
    for row in test_loss.itertuples():
        label = row.method if row.correction == "none" else f"{row.method}+{row.correction}"
        assert f"seeds {row.seed_a}-{row.seed_b} {label:<20s} test loss barrier {row.barrier:.4f}\n" in caplog.text
    assert "seeds 3-5 weight_matching+repair test loss barrier " in caplog.text
    assert list(curves.columns[:5]) == list(config.as_dict())
    assert set(curves["alpha"]) == {0.0, 0.25, 0.5, 0.75, 1.0}
    paths = zip(curves["seed_a"], curves["seed_b"], curves["method"], curves["correction"], strict=True)
    assert list(dict.fromkeys(paths)) == [(3, 3, "identity", "none"), (3, 3, "identity", "repair")] + [
        (3, 5, "weight_matching", "none"),
        (3, 5, "weight_matching", "repair"),
    ]
    assert len(barriers) == 4 * 2 * 2  # paths x splits x metrics
    # REPAIR changes the interpolated network: its midpoint differs from the path's as it is
    midpoint = curves.query("seed_b == 5 and alpha == 0.5 and split == 'train' and metric == 'loss'")
    assert midpoint.set_index("correction")["value"].nunique() == 2
    itself = barriers[barriers["seed_b"] == 3]
    assert itself["barrier"].abs().max() == pytest.approx(0.0, abs=1e-6)  # a model with itself
    train_loss = barriers.query(
        "seed_b == 5 and split == 'train' and metric == 'loss' and method == 'weight_matching' and correction == 'none'"
    )
    x, y = digits.x_train[:300], digits.y_train[:300]
    assert train_loss["value_a"].item() == pytest.approx(evaluate(trained_pair[0], x, y)["loss"], rel=1e-6)
    assert train_loss["value_b"].item() == pytest.approx(evaluate(trained_pair[1], x, y)["loss"], rel=1e-5)


def test_barrier_tables_stop_on_a_path_that_is_not_finite(trained_pair, digits):
    config = Configuration("digits", "mlp", 2, 24, 0.05)
    broken = copy.deepcopy(trained_pair[1])
    with torch.no_grad():
        broken.state_dict()["layers.0.weight"].fill_(float("nan"))
    identity = identity_permutations(broken.permutation_spec(), broken.state_dict())
    message = f"{config.name}: the train loss is not finite on the path from seed 0 to seed 1 (identity) at alpha"
    with pytest.raises(NonFinitePathError, match=re.escape(message)):
        barrier_tables(config, {0: trained_pair[0], 1: broken}, [record(0, 1, "identity", identity)], digits, OPTIONS)


@pytest.mark.slow
def test_the_barrier_stage_writes_the_correction_beside_the_method(tmp_path):
    """The stage as DVC runs it, on untrained MLPs: every path once as it is (correction ``none``) and once after
    REPAIR (an MLP has no BatchNorm to reset), in column ``correction`` right after ``method``, which names the
    alignment alone."""
    import json

    import pandas as pd
    from test_stage_errors import CONFIG, ROOT, run_stage, save_seed

    from lmcot.align.methods import align
    from lmcot.data import Dataset
    from lmcot.model_files import load_model
    from lmcot.study import uncorrected

    (tmp_path / "params.yaml").write_text((ROOT / "params.yaml").read_text())
    generator = torch.Generator().manual_seed(0)
    x, y = torch.rand(24, 1, 28, 28, generator=generator), torch.arange(24) % 10
    Dataset("mnist10k", x[:16], y[:16], x[16:], y[16:], [str(c) for c in range(10)]).save(
        tmp_path / "data/prepared/mnist10k.safetensors"
    )
    paths = [save_seed(tmp_path, seed) for seed in range(10)]  # every seed of the repository's params.yaml
    model_a, model_b = (load_model(path) for path in paths[:2])
    records = [
        {"seed_a": 0, "seed_b": 1, "method": method, "output_change": 0.0,
         "permutations": {k: p.tolist() for k, p in align(method, model_a, model_b, x[:16]).items()}}
        for method in ("identity", "weight_matching")
    ]  # fmt: skip
    results = tmp_path / "results" / CONFIG
    results.mkdir(parents=True)
    (results / "alignment.json").write_text(json.dumps({"alignments": records}))

    ran = run_stage(tmp_path, "barrier", CONFIG)
    assert ran.returncode == 0, ran.stderr
    assert "weight_matching+repair" in ran.stderr  # the log prints each path as one name
    expected = {(m, c) for m in ("identity", "weight_matching") for c in ("none", "repair")}
    for name in ("barriers", "curves"):
        table = pd.read_csv(results / f"{name}.csv")
        assert list(table.columns[list(table.columns).index("method") :][:2]) == ["method", "correction"], name
        assert set(zip(table["method"], table["correction"], strict=True)) == expected, name
    barriers = pd.read_csv(results / "barriers.csv")
    assert len(barriers) == len(expected) * 2 * 2  # x 2 splits x 2 metrics
    plain = uncorrected(barriers)
    assert len(plain) == len(barriers) / 2 and set(plain["correction"]) == {"none"}
    # the correction changes the path, not its endpoints: the same models at alpha = 0 and 1
    ends = barriers.set_index(["method", "correction", "split", "metric"])[["value_a", "value_b"]]
    assert np.allclose(ends.xs("repair", level="correction"), ends.xs("none", level="correction"), atol=1e-5)


def test_either_state_that_misses_a_tensor_is_refused_and_a_correction_needs_inputs(trained_pair, digits):
    model_a, model_b = trained_pair
    container = copy.deepcopy(model_a)
    short = {k: v for k, v in model_b.state_dict().items() if k != "layers.0.bias"}
    for state_a, state_b in ((model_a.state_dict(), short), (short, model_a.state_dict())):
        with pytest.raises(ValueError) as error:
            interpolation_curve(container, state_a, state_b, [0.0, 1.0], {"test": digits.split("test")})
        assert str(error.value) == "interpolation_curve: the two states and the model have different tensors"
    with pytest.raises(ValueError) as error:
        interpolation_curve(container, model_a.state_dict(), model_b.state_dict(), [0.5], {}, correction="repair")
    assert str(error.value) == "the 'repair' correction needs norm_inputs (training samples)"


def test_double_precision_states_give_the_float_curve(trained_pair, digits):
    """States are cast to the container's tensors before interpolating (a float64 checkpoint is fine)."""
    model_a, model_b = trained_pair
    container = copy.deepcopy(model_a)
    split = {"test": digits.split("test")}
    as_float = interpolation_curve(container, model_a.state_dict(), model_b.state_dict(), [0.5], split)
    states = [{k: v.double() for k, v in m.state_dict().items()} for m in trained_pair]
    assert interpolation_curve(container, *states, [0.5], split) == as_float


@pytest.mark.parametrize("correction", [None, "repair"])
def test_a_path_evaluates_and_corrects_in_batches_of_its_batch_size(trained_pair, digits, correction):
    """Memory stays bounded by ``batch_size``: every forward pass of the path, the correction's included, sees at
    most that many samples."""
    model_a, model_b = trained_pair
    container = copy.deepcopy(model_a)
    seen = batch_sizes(container)
    x, y = digits.split("test")
    interpolation_curve(
        container, model_a.state_dict(), model_b.state_dict(), [0.5], {"test": (x[:40], y[:40])}, batch_size=16,
        correction=correction, norm_inputs=digits.x_train[:40],
    )  # fmt: skip
    assert seen and max(seen) == 16
