"""The fusion experiment of one configuration: which rows it gives (every width and kind, fine-tuned rows only for
the main candidates, the ensemble), its cost rows, and the fused models it hands back to be saved."""

import copy

import pytest
import torch

from lmcot.config import Configuration
from lmcot.evaluation import ensemble_evaluate, evaluate, reset_batchnorm
from lmcot.fusion import wasserstein_barycenter
from lmcot.fusion_study import fine_tune_recipe, fusion_experiment
from lmcot.models import build_model
from lmcot.training import Recipe

OT = {"solver": "emd", "epsilon": 0.001, "max_iterations": 5, "start": "best", "input_transport": "average"}
OPTIONS = {"ot": OT, "weights": "uniform", "width_factors": [0.5, 1, 2], "alpha_h_grid": [0.0, 1.0]}
SEEDS = [3, 5]
CONFIG_KEYS = ["dataset", "arch", "depth", "width", "lr"]


def untrained(arch, digits, width, depth, seeds):
    models = []
    for seed in seeds:
        torch.manual_seed(seed)
        models.append(build_model(arch, digits.input_shape, digits.num_classes, width, depth).eval())
    return models


@pytest.fixture(scope="module")
def experiment(trained_pair, digits):
    """The experiment on the two trained MLPs (width 24), with one epoch of fine-tuning."""
    config = Configuration("digits", "mlp", 2, 24, 0.05)
    recipe = Recipe(lr=0.005, epochs=1, batch_size=64)
    models = [copy.deepcopy(m) for m in trained_pair]
    return config, fusion_experiment(config, models, SEEDS, digits, OPTIONS, recipe, "cpu"), models


def test_the_rows_cover_every_width_and_kind_and_only_the_main_candidates_are_fine_tuned(experiment):
    config, result, _ = experiment
    seen = {(r["kind"], r["target_width"], r["fine_tuned"]) for r in result.rows}
    main = {("input", 24), ("fused", 12), ("fused", 24), ("fused", 48), ("vanilla", 24), ("one_shot", 24)}
    main.add(("ensemble", 24))
    assert seen == {(kind, width, tuned) for kind, width in main for tuned in (False, True)} | {
        ("fused_start", 24, False)
    }
    starts = [r["model"] for r in result.rows if r["kind"] == "fused_start"]
    assert starts == ["start: mean", "start: seed 3", "start: seed 5"]
    inputs = [r["model"] for r in result.rows if r["kind"] == "input" and not r["fine_tuned"]]
    assert inputs == ["seed 3", "seed 5"]
    assert all(list(r)[:5] == CONFIG_KEYS and r["width"] == 24 for r in result.rows)
    assert all(0 <= r["test_accuracy"] <= 1 and r["train_loss"] > 0 for r in result.rows)


def test_the_cost_rows_are_every_barycentre_iteration_and_never_rise(experiment):
    config, result, _ = experiment
    assert {r["target_width"] for r in result.costs} == {12, 24, 48}
    at_input = {r["start"] for r in result.costs if r["target_width"] == 24}
    assert at_input == {"mean", "seed 3", "seed 5"}  # every start was tried at the input width
    for width in (12, 48):
        for layer in {r["layer"] for r in result.costs}:
            costs = [r["cost"] for r in result.costs if r["target_width"] == width and r["layer"] == layer]
            assert costs and all(b <= a + 1e-9 for a, b in zip(costs, costs[1:], strict=False)), (width, layer)
    assert all(list(r)[:5] == CONFIG_KEYS for r in result.costs)


def test_the_fused_models_are_the_barycentres_of_every_width(experiment, trained_pair, digits):
    config, result, _ = experiment
    assert sorted(result.fused) == [12, 24, 48]
    best = wasserstein_barycenter(trained_pair, build_model("mlp", digits.input_shape, 10, 24, 2), **OT)
    for key, value in result.fused[24].model.state_dict().items():
        assert torch.equal(value, best.state[key]), key
    for width, fused in result.fused.items():
        assert fused.sidecar["width"] == width and fused.sidecar["fused_seeds"] == SEEDS
        assert fused.sidecar["input_shape"] == list(digits.input_shape) and fused.sidecar["num_classes"] == 10
        assert fused.sidecar["start"] in ("mean", "seed 3", "seed 5")
        assert fused.model.state_dict()["layers.0.weight"].shape[0] == width
    scored = {r["target_width"]: r for r in result.rows if r["kind"] == "fused" and not r["fine_tuned"]}
    assert {w: r["start"] for w, r in scored.items()} == {w: f.sidecar["start"] for w, f in result.fused.items()}


def test_the_input_rows_score_the_inputs_which_stay_as_they_were(experiment, trained_pair, digits):
    config, result, models = experiment
    rows = [r for r in result.rows if r["kind"] == "input" and not r["fine_tuned"]]
    for row, model, original in zip(rows, models, trained_pair, strict=True):
        assert row["test_loss"] == pytest.approx(evaluate(original, digits.x_test, digits.y_test)["loss"], rel=1e-6)
        assert all(torch.equal(v, original.state_dict()[k]) for k, v in model.state_dict().items())
    ensemble = [r for r in result.rows if r["kind"] == "ensemble"]
    assert [r["fine_tuned"] for r in ensemble] == [False, True]
    assert ensemble[0]["test_loss"] == pytest.approx(
        ensemble_evaluate(trained_pair, digits.x_test, digits.y_test)["loss"], rel=1e-6
    )


def test_recurrent_models_get_the_hidden_term_ablation_and_no_fine_tuning_when_it_has_no_epochs(digits):
    config = Configuration("digits", "rnn", 1, 4, 0.05)
    models = untrained("rnn", digits, 4, 1, SEEDS)
    options = {**OPTIONS, "width_factors": [1]}
    result = fusion_experiment(config, models, SEEDS, digits, options, Recipe(lr=0.01, epochs=0), "cpu")
    assert not any(r["fine_tuned"] for r in result.rows)
    ablation = [(r["model"], r["alpha_h"]) for r in result.rows if r["kind"] == "fused_alpha_h"]
    assert ablation == [("alpha_h = 0", 0.0), ("alpha_h = 1", 1.0)]
    assert sorted(result.fused) == [4]
    assert [r["kind"] for r in result.rows].count("ensemble") == 1


def test_the_fused_models_keep_the_barycentres_batchnorm_statistics_while_their_scores_reset_them(digits):
    """The saved fused model is the barycentre as computed; only the scored copy gets its statistics recomputed."""
    config = Configuration("digits", "resnet_bn", 1, 4, 0.05)
    models = untrained("resnet_bn", digits, 4, 1, SEEDS)
    for model in models:  # running statistics of their own, as trained models have
        model.train()
        with torch.no_grad():
            model(digits.x_train[:256])
        model.eval()
    options = {**OPTIONS, "width_factors": [1], "ot": {**OT, "start": "mean"}}
    result = fusion_experiment(config, models, SEEDS, digits, options, Recipe(lr=0.01, epochs=0), "cpu")
    target = build_model("resnet_bn", digits.input_shape, 10, 4, 1)
    fusion = wasserstein_barycenter(models, target, **options["ot"])
    for key, value in result.fused[4].model.state_dict().items():
        assert torch.equal(value, fusion.state[key]), key
    scored = copy.deepcopy(result.fused[4].model)
    reset_batchnorm(scored, digits.x_train)
    (row,) = [r for r in result.rows if r["kind"] == "fused"]
    assert row["test_loss"] == pytest.approx(evaluate(scored, digits.x_test, digits.y_test)["loss"], rel=1e-6)
    assert row["test_loss"] != pytest.approx(evaluate(result.fused[4].model, digits.x_test, digits.y_test)["loss"])


def test_the_fine_tuning_recipe_is_the_training_recipe_shortened_without_warm_up():
    recipe = {"optimizer": "adam", "epochs": 30, "batch_size": 32, "warmup_epochs": 2, "warmup_steps": 0}
    tuned = fine_tune_recipe(recipe, 0.05, {"epochs": 2, "lr_factor": 0.1})
    assert tuned.lr == pytest.approx(0.005)
    assert tuned == Recipe(lr=tuned.lr, optimizer="adam", epochs=2, batch_size=32, warmup_epochs=0)  # no warm-up
    assert fine_tune_recipe(recipe, "0.05", {"epochs": 0, "lr_factor": 1.0}).lr == 0.05


def test_a_transformer_is_fused_by_weight_matching_and_averaging_at_its_width(digits):
    """The barycentre could split a head: a ViT gets the weight-matching average of its models, which equals the
    average of the first model with the others permuted onto it, and no barycentre cost rows."""
    from lmcot.align.methods import align, permuted_copy
    from lmcot.fusion import vanilla_average

    config = Configuration("digits", "vit", 1, 8, 0.05, heads=2)
    models = []
    for seed in SEEDS:
        torch.manual_seed(seed)
        models.append(build_model("vit", digits.input_shape, digits.num_classes, 8, 1, 2).eval())
    result = fusion_experiment(config, models, SEEDS, digits, OPTIONS, Recipe(lr=0.005, epochs=0), "cpu")
    kinds = {(r["kind"], r["target_width"]) for r in result.rows}
    assert kinds == {("input", 8), ("aligned_average", 8), ("vanilla", 8), ("ensemble", 8)}
    assert result.costs == [] and set(result.fused) == {8}
    assert all(r["heads"] == 2 for r in result.rows)
    second = permuted_copy(models[1], align("weight_matching", models[0], models[1]))
    expected = vanilla_average([models[0], second]).state_dict()
    for key, value in result.fused[8].model.state_dict().items():
        torch.testing.assert_close(value, expected[key], atol=0, rtol=0)


def test_one_shot_fusion_runs_from_each_model_and_the_barycentre_names_those_it_equals(experiment, trained_pair):
    """One one-shot row per anchor (before and after fine-tuning). With two models and exact OT the barycentre,
    wherever it starts, is the optimal matching of the two, which one-shot fusion from either model also is:
    the input-width barycentre's row names both anchors; the other widths' rows name none."""
    from lmcot.fusion import one_shot_fusion

    _, result, _ = experiment
    one_shot = [r for r in result.rows if r["kind"] == "one_shot" and not r["fine_tuned"]]
    assert [(r["model"], r["anchor"]) for r in one_shot] == [
        ("one-shot OT fusion (anchor seed 3)", "seed 3"),
        ("one-shot OT fusion (anchor seed 5)", "seed 5"),
    ]
    fused = {r["target_width"]: r for r in result.rows if r["kind"] == "fused" and not r["fine_tuned"]}
    assert fused[24]["equals_one_shot"] == "seed 3, seed 5"
    assert "equals_one_shot" not in fused[12] and "equals_one_shot" not in fused[48]
    for anchor in range(len(one_shot)):
        x = torch.randn(8, 64)
        expected = one_shot_fusion(trained_pair, anchor=anchor)(x)
        torch.testing.assert_close(result.fused[24].model(x), expected, atol=1e-5, rtol=1e-5)
