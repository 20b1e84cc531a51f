"""Barriers along linear paths: definitions on known curves, and real models."""

import numpy as np
import pytest
import torch

from lmcot.barrier import barrier_summary, interpolation_curve
from lmcot.design import evaluation_grid
from lmcot.evaluation import evaluate


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
    x, y = torch.randn(24, 1, 40, generator=generator), torch.arange(24) % 10
    Dataset("mnist1d", x[:16], y[:16], x[16:], y[16:], [str(c) for c in range(10)]).save(
        tmp_path / "data/prepared/mnist1d.safetensors"
    )
    paths = [save_seed(tmp_path, seed) for seed in range(8)]  # every seed of the repository's params.yaml
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
