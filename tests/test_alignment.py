"""Alignment methods: they keep the aligned model's function, recover planted permutations, and improve
the matching objective over no alignment."""

import itertools
from pathlib import Path

import pytest
import torch

from lmcot.align import methods as methods_module
from lmcot.align.covariance import _unit_bias
from lmcot.align.methods import METHODS, align, align_pairs, method_options, output_change, permuted_copy
from lmcot.align.weight_matching import is_bias
from lmcot.design import seed_pairs
from lmcot.errors import UserError
from lmcot.models import build_model
from lmcot.ot import solve_lap
from lmcot.permutation import (
    PermutationSpec,
    apply_permutations,
    chain_spec,
    identity_permutations,
    incoming_weights,
    invert_permutations,
    random_permutations,
)


@pytest.mark.parametrize("method", sorted(METHODS))
def test_alignment_keeps_the_function(method, trained_pair, digits):
    model_a, model_b = trained_pair
    perms = align(method, model_a, model_b, digits.x_train)
    assert output_change(model_b, perms, digits.x_test) < 1e-4


DATA_METHODS = {"activation_matching", "activation_covariance"}


def plant_and_align(method, model, inputs, generator):
    """Shuffle ``model``'s units at random, align the copy back onto it; return what undoing needs."""
    spec = model.permutation_spec()
    planted = random_permutations(spec, model.state_dict(), generator)
    shuffled = permuted_copy(model, planted)
    found = align(method, model, shuffled, inputs)
    return spec, shuffled, found, invert_permutations(planted)


@pytest.mark.parametrize("method", sorted(set(METHODS) - {"identity"} - DATA_METHODS))
def test_planted_permutation_is_recovered_exactly(method, trained_pair, digits, generator):
    model = trained_pair[0]
    # aligning the shuffled copy back onto the original must undo the planted permutation
    spec, shuffled, found, expected = plant_and_align(method, model, digits.x_train, generator)
    for name in spec.names:
        assert torch.equal(found[name], expected[name]), name
    restored = apply_permutations(spec, found, shuffled.state_dict())
    assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())


@pytest.mark.parametrize("method", sorted(DATA_METHODS))
def test_planted_permutation_is_recovered_on_every_active_unit(method, trained_pair, digits, generator):
    """Methods that see only activations cannot tell apart units that never fire (they are all 0 on
    the data); every other unit must be recovered exactly, and dead units must map to dead units."""
    model = trained_pair[0]
    spec, _, found, expected = plant_and_align(method, model, digits.x_train, generator)
    active = {k: v.std(0) > 0 for k, v in model.hidden_activations(digits.x_train).items()}
    assert all(a.sum() >= 0.75 * len(a) for a in active.values())  # the test means something
    for name in spec.names:
        assert torch.equal(found[name][active[name]], expected[name][active[name]]), name
        dead = ~active[name]
        assert set(found[name][dead].tolist()) == set(expected[name][dead].tolist()), name


def matching_objective(model_a, model_b, perms):
    state_b = apply_permutations(model_a.permutation_spec(), perms, model_b.state_dict())
    return sum((v * state_b[k]).sum().item() for k, v in model_a.state_dict().items())


def test_weight_matching_beats_identity_on_its_objective(trained_pair):
    model_a, model_b = trained_pair
    none = align("identity", model_a, model_b)
    matched = align("weight_matching", model_a, model_b)
    assert matching_objective(model_a, model_b, matched) > matching_objective(model_a, model_b, none)


def test_weight_matching_is_reproducible(trained_pair):
    first = align("weight_matching", *trained_pair, seed=3)
    second = align("weight_matching", *trained_pair, seed=3)
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_identity_is_the_identity(trained_pair):
    perms = align("identity", *trained_pair)
    assert all(torch.equal(p, torch.arange(len(p))) for p in perms.values())


def test_unknown_method_names_the_valid_ones(trained_pair):
    from lmcot.align.methods import METHODS

    with pytest.raises(ValueError) as refused:
        align("weight_matchin", *trained_pair)
    assert str(refused.value) == f"unknown alignment method 'weight_matchin'; valid: {', '.join(METHODS)}"
    assert "weight_matching, " in str(refused.value)


def test_ot_emd_is_the_assignment_on_uniform_weights(trained_pair):
    """Exact OT between equal uniform masses is a permutation: the LAP on the same squared-distance cost."""
    model_a, model_b = trained_pair
    spec = model_a.permutation_spec()
    found = align("ot_emd", model_a, model_b)
    perms = identity_permutations(spec, model_a.state_dict())
    for name in spec.names:  # replay the layer-by-layer LAPs with B's inputs aligned as ot_emd left them
        w_a = incoming_weights(spec, name, model_a.state_dict(), identity_permutations(spec, model_a.state_dict()))
        w_b = incoming_weights(spec, name, model_b.state_dict(), perms)
        perms[name] = solve_lap(-(torch.cdist(w_a.double(), w_b.double()) ** 2))
        assert torch.equal(found[name], perms[name]), name


def test_ferbach_methods_differ_from_each_other_on_real_pairs(trained_pair, digits):
    """The covariance-aware score is not the plain inner product: on two real models they disagree."""
    model_a, model_b = trained_pair
    naive = align("naive_weight_matching", model_a, model_b)
    cov = align("cov_weight_matching", model_a, model_b, digits.x_train)
    assert any(not torch.equal(naive[k], cov[k]) for k in naive)


def test_sinkhorn_rounding_returns_the_exact_plan_where_rounding_the_coupling_does_not():
    """Two untrained 512-wide MLPs (many near-ties between neurons): rounding by the log-coupling gives exactly
    the exact plan's permutations; rounding the coupling itself, the old rule, loses some
    (85% here; 37% in a trained 512-wide layer)."""
    import numpy as np
    import ot

    torch.manual_seed(0)
    model_a, model_b = (build_model("mlp", (40,), 10, width=512, depth=2) for _ in range(2))
    exact = align("ot_emd", model_a, model_b)
    rounded = align("ot_sinkhorn", model_a, model_b, epsilon=0.01)
    for name in exact:
        assert torch.equal(rounded[name], exact[name]), name
    w_a, w_b = model_a.state_dict()["layers.0.weight"], model_b.state_dict()["layers.0.weight"]
    cost = ot.dist(w_a.double().numpy(), w_b.double().numpy())
    uniform = np.full(512, 1 / 512)
    coupling = ot.sinkhorn(uniform, uniform, cost / cost.max(), 0.01, method="sinkhorn_log", stopThr=1e-4, warn=False)
    least_cost = solve_lap(torch.from_numpy(-cost))
    by_mass = solve_lap(torch.from_numpy(coupling))
    assert (by_mass == least_cost).float().mean() < 0.9


# --- exact answers by brute force over every permutation of a width-4 network -------------------------


def best_permutation(score: torch.Tensor) -> list[int]:
    """``perm`` maximising ``sum_i score[i, perm[i]]``, by trying all of them."""
    n = len(score)
    return list(max(itertools.permutations(range(n)), key=lambda p: sum(score[i, p[i]].item() for i in range(n))))


def covariance_scores_by_hand(model_a, model_b, x, biases: bool, inputs_of: str = "a"):
    """Ferbach et al.'s layer-by-layer covariance-aware matching of two 2-hidden-layer MLPs, written out:
    layer l's score is ``mean_x[(w_A,i . h + b_A,i)(w_B,j . h + b_B,j)]`` over model A's inputs h to that layer
    (B's columns already aligned), the biases' terms only with ``biases``."""
    sa, sb = ({k: v.double() for k, v in m.state_dict().items()} for m in (model_a, model_b))
    k = 1.0 if biases else 0.0
    h = x.flatten(1).double()
    p0 = best_permutation(((h @ sa["layers.0.weight"].T + k * sa["layers.0.bias"]).T
                           @ (h @ sb["layers.0.weight"].T + k * sb["layers.0.bias"])) / len(h))  # fmt: skip
    h_a = torch.relu(h @ sa["layers.0.weight"].T + sa["layers.0.bias"])
    h_b = torch.relu(h @ sb["layers.0.weight"].T + sb["layers.0.bias"])[:, p0]
    h1 = h_a if inputs_of == "a" else h_b
    w1_b = sb["layers.1.weight"][:, p0]
    p1 = best_permutation(((h1 @ sa["layers.1.weight"].T + k * sa["layers.1.bias"]).T
                           @ (h1 @ w1_b.T + k * sb["layers.1.bias"])) / len(h1))  # fmt: skip
    return {"P0": p0, "P1": p1}


@pytest.fixture
def width4_pair():
    """Two independent width-4 MLPs whose biases matter (scaled up), on 300 random 3-value inputs."""
    torch.manual_seed(0)
    models = [build_model("mlp", (1, 3), 2, 4, 2) for _ in range(2)]
    with torch.no_grad():
        for model in models:
            for name, p in model.named_parameters():
                p.mul_(4 if "bias" in name else 1)
    return *models, torch.randn(300, 1, 3)


def test_covariance_matching_finds_the_brute_force_optimum_with_and_without_biases(width4_pair):
    model_a, model_b, x = width4_pair
    with_biases = covariance_scores_by_hand(model_a, model_b, x, biases=True)
    without = covariance_scores_by_hand(model_a, model_b, x, biases=False)
    # the case distinguishes the formulas: biases change the answer, and so would Sigma taken from model B
    assert with_biases != without
    assert with_biases["P1"] != covariance_scores_by_hand(model_a, model_b, x, True, inputs_of="b")["P1"]
    found = align("cov_weight_matching_with_biases", model_a, model_b, x)
    assert {name: perm.tolist() for name, perm in found.items()} == with_biases
    found = align("cov_weight_matching", model_a, model_b, x)
    assert {name: perm.tolist() for name, perm in found.items()} == without


@pytest.mark.parametrize("method", ["cov_weight_matching", "cov_weight_matching_with_biases"])
def test_covariance_matching_of_double_precision_models(width4_pair, method):
    """A float64 model's second moments are float64 while the compared rows are float32: the score casts them,
    and the answer is the brute-force optimum as for the float32 models."""
    model_a, model_b, x = width4_pair
    expected = covariance_scores_by_hand(model_a, model_b, x, biases=method.endswith("biases"))
    found = align(method, model_a.double(), model_b.double(), x.double())
    assert {name: perm.tolist() for name, perm in found.items()} == expected


def test_weight_matching_without_biases_ignores_them(trained_pair, digits, generator):
    model = trained_pair[0]
    spec = model.permutation_spec()
    planted = random_permutations(spec, model.state_dict(), generator)
    shuffled = permuted_copy(model, planted)
    with torch.no_grad():  # biases that point elsewhere: only the weights still say where each unit went
        for name, p in shuffled.named_parameters():
            if name.endswith("bias") and name != "layers.2.bias":
                p.copy_(1e3 * torch.randn(p.shape, generator=generator))
    expected = invert_permutations(planted)
    found = align("weight_matching_without_biases", model, shuffled, None)
    assert all(torch.equal(found[name], expected[name]) for name in spec.names)
    with_biases = align("weight_matching", model, shuffled, None)
    assert not all(torch.equal(with_biases[name], expected[name]) for name in spec.names)


def test_pairs_of_seeds():
    assert seed_pairs([4, 5, 6], "all") == [(4, 5), (4, 6), (5, 6)]
    assert seed_pairs([4, 5, 6, 7], "disjoint") == [(4, 5), (6, 7)]
    with pytest.raises(ValueError, match="even number of seeds, got 3"):
        seed_pairs([4, 5, 6], "disjoint")


def test_bias_names():
    assert all(is_bias(p) for p in ("bias", "layers.0.bias", "layers.0.bias_f", "stem.bn.bias"))
    assert not any(is_bias(p) for p in ("layers.0.weight", "bias.weight", "layers.0.weight_ih"))


def test_bias_aware_matching_needs_one_matrix_and_one_bias_per_unit():
    """The bias beside a unit's one incoming matrix, or an error naming what the unit has instead."""
    state = {"a.weight": torch.ones(3, 2), "b.weight": torch.ones(3, 5), "a.bias": torch.arange(3.0)}
    one = PermutationSpec({"P0": (("a.weight", 0), ("a.bias", 0))})
    assert _unit_bias(one, "P0", state).tolist() == [0.0, 1.0, 2.0]
    two = PermutationSpec({"P0": (("a.weight", 0), ("b.weight", 0), ("a.bias", 0))})
    with pytest.raises(UserError, match=r"it has a\.weight, b\.weight and a 'a\.bias'; use cov_weight_matching"):
        _unit_bias(two, "P0", state)
    none = PermutationSpec({"P0": (("a.weight", 0),)})
    with pytest.raises(UserError, match=r"permutation 'P0' .* it has a\.weight and no 'a\.bias'; use cov_weight"):
        _unit_bias(none, "P0", state)


def test_barycentre_alignment_passes_every_option_to_the_fusion(monkeypatch):
    import lmcot.fusion

    seen = {}
    monkeypatch.setattr(lmcot.fusion, "wasserstein_barycenter", lambda models, target, **options: seen.update(options))
    monkeypatch.setattr(lmcot.fusion, "permutations_from_fusion", lambda fusion: "perms")
    options = dict(solver="sinkhorn", epsilon=0.5, max_iterations=3, alpha_h=2.5, start="mean", input_transport="sum")
    options |= dict(couple_to="all")
    assert align("barycenter", "model a", "model b", **options) == "perms"
    assert seen == options


class _NoLayerInputs(torch.nn.Module):
    """Two linear layers and their permutation spec, but no ``layer_inputs()``."""

    def __init__(self):
        super().__init__()
        self.first, self.second = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.second(torch.relu(self.first(x)))

    def permutation_spec(self):
        return chain_spec(["first", "second"])


def test_covariance_matching_needs_the_layer_inputs():
    with pytest.raises(ValueError, match="_NoLayerInputs has no layer_inputs"):
        align("cov_weight_matching", _NoLayerInputs(), _NoLayerInputs(), torch.randn(8, 3))


@pytest.mark.parametrize("recurrent_iterations", [0, 1])
def test_covariance_matching_of_a_recurrent_layer_with_few_refinements(recurrent_iterations, generator):
    torch.manual_seed(0)
    model = build_model("rnn", (1, 12), 3, 6, 1).eval()
    planted = random_permutations(model.permutation_spec(), model.state_dict(), generator)
    found = align("cov_weight_matching", model, permuted_copy(model, planted), torch.randn(64, 1, 12),
                  recurrent_iterations=recurrent_iterations)  # fmt: skip
    assert all(torch.equal(found[k], v) for k, v in invert_permutations(planted).items())


def test_method_options_come_from_each_records_params_group():
    params = {
        "align": {"weight_matching": {"max_sweeps": 3}, "ot_emd": {"num_iter_max": 7}},
        "fuse": {"ot": {"solver": "emd", "start": "best"}},
    }
    assert method_options("weight_matching", params) == {"max_sweeps": 3}
    assert method_options("weight_matching_without_biases", params) == {"max_sweeps": 3}
    assert method_options("barycenter", params) == {"solver": "emd", "start": "best"}
    assert method_options("ot_sinkhorn", params) == {}  # no group in params: the function's defaults
    assert method_options("identity", params) == {}


def test_a_method_called_without_options_does_what_the_default_params_do():
    """A user calling a method from Python gets the pipeline's default study: each keyword default is the value
    that params.yaml's defaults give it, and every recurrent refinement stops after the same 20 iterations."""
    import inspect

    from lmcot.align.layerwise import layerwise
    from lmcot.config import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    recurrent_caps = {}
    for name, record in METHODS.items():
        defaults = {
            key: parameter.default
            for key, parameter in inspect.signature(record.function).parameters.items()
            if parameter.default is not inspect.Parameter.empty
        }
        for key, value in method_options(name, params).items():
            assert defaults[key] == value, (name, key)
        if "recurrent_iterations" in defaults:
            recurrent_caps[name] = defaults["recurrent_iterations"]
    # no params key sets this cap: the pipeline runs on the default, the same for every method
    assert set(recurrent_caps) >= {"naive_weight_matching", "cov_weight_matching", "ot_emd", "ot_sinkhorn"}
    assert set(recurrent_caps.values()) == {inspect.signature(layerwise).parameters["recurrent_iterations"].default}
    assert set(recurrent_caps.values()) == {20}


def test_defaults_reach_the_solvers_unchanged(monkeypatch):
    """The same promise, watched where the values are used: a method called without options hands its
    solver params.yaml's default values (signatures alone could hide a default that the body overrides)."""
    from lmcot import fusion
    from lmcot.align import covariance, layerwise, transport
    from lmcot.config import load_params

    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    seen = {}

    def spy(module, attr, keep):
        original = getattr(module, attr)

        def wrapper(*args, **kwargs):
            seen.setdefault(attr, set()).add(keep(*args, **kwargs))
            return original(*args, **kwargs)

        monkeypatch.setattr(module, attr, wrapper)

    spy(fusion, "barycenter_permutations", lambda a, b, **options: tuple(sorted(options.items())))
    spy(transport, "exact_permutation", lambda cost, num_iter_max, where: num_iter_max)
    spy(transport, "entropic_log_plan", lambda cost, *options: options)
    for module in (transport, covariance, layerwise):  # each method's call into the layer-by-layer solver
        spy(module, "layerwise", lambda a, b, score, solve=None, recurrent_iterations=None: recurrent_iterations)
    a, b = build_model("mlp", (6,), 3, 5, 2), build_model("mlp", (6,), 3, 5, 2)
    for name in ("barycenter", "ot_emd", "ot_sinkhorn", "naive_weight_matching", "cov_weight_matching"):
        align(name, a, b, torch.randn(16, 6))
    assert seen["barycenter_permutations"] == {tuple(sorted(method_options("barycenter", params).items()))}
    assert seen["exact_permutation"] == {params["align"]["ot_emd"]["num_iter_max"]}
    sinkhorn = params["align"]["ot_sinkhorn"]
    assert seen["entropic_log_plan"] == {(sinkhorn["epsilon"], sinkhorn["num_iter_max"], sinkhorn["stop_threshold"])}
    assert seen["layerwise"] == {20}  # ot_emd, ot_sinkhorn, naive and covariance matching alike
    seen.clear()  # and a cap that is given reaches the solver as given
    for name in ("ot_emd", "ot_sinkhorn", "naive_weight_matching", "cov_weight_matching"):
        align(name, a, b, torch.randn(16, 6), recurrent_iterations=3)
    assert seen["layerwise"] == {3}


def test_only_methods_that_need_data_see_it():
    a, b = build_model("mlp", (6,), 3, 5, 2), build_model("mlp", (6,), 3, 5, 2)
    with pytest.raises(ValueError, match="'cov_weight_matching' needs inputs"):
        align("cov_weight_matching", a, b)
    for name, record in METHODS.items():
        if not record.needs_data:  # the same permutations whether or not data is offered
            with_data = align(name, a, b, torch.randn(32, 6))
            assert all(torch.equal(with_data[k], v) for k, v in align(name, a, b).items()), name


def test_align_pairs_gives_one_checked_record_per_pair_and_method(trained_pair, digits, generator):
    model, other = trained_pair
    spec, state = model.permutation_spec(), model.state_dict()
    shuffled = permuted_copy(model, random_permutations(spec, state, generator))
    models = {3: model, 5: other, 8: shuffled}
    pairs = [(3, 5), (3, 8)]
    methods = ["identity", "weight_matching", "activation_matching"]
    records = align_pairs(models, pairs, methods, {}, digits.x_train[:500], digits.x_test)
    assert [(r["seed_a"], r["seed_b"], r["method"]) for r in records] == [(*p, m) for p in pairs for m in methods]
    identity = {k: v.tolist() for k, v in identity_permutations(spec, state).items()}
    for r in records:
        assert set(r) == {"seed_a", "seed_b", "method", "output_change", "permutations"}
        assert r["output_change"] < 1e-4 and set(r["permutations"]) == set(identity)
        assert all(sorted(p) == list(range(len(p))) for p in r["permutations"].values())  # permutations, as lists
        assert (r["permutations"] == identity) == (r["method"] == "identity")
    # a shuffled copy of model 3, aligned to it by weight matching, is model 3 again (activation matching cannot
    # tell apart units that never vary on the data, so it need not undo the shuffle of those)
    for r in records[4:5]:
        perms = {k: torch.tensor(v) for k, v in r["permutations"].items()}
        aligned = apply_permutations(spec, perms, shuffled.state_dict())
        assert all(torch.allclose(aligned[k], v) for k, v in state.items()), r["method"]


def test_align_pairs_stops_on_a_permutation_that_changes_the_function(trained_pair, digits, monkeypatch):
    monkeypatch.setattr(methods_module, "output_change", lambda model, perms, inputs: 0.5)
    with pytest.raises(RuntimeError, match="identity permutation changed model 1's outputs by 0.5: a bug"):
        align_pairs(dict(enumerate(trained_pair)), [(0, 1)], ["identity"], {}, None, digits.x_test)


def test_align_pairs_takes_each_methods_options_from_params(trained_pair, monkeypatch):
    seen = []

    def recording(model_a, model_b, inputs=None, **options):
        seen.append(options)
        return identity_permutations(model_a.permutation_spec(), model_a.state_dict())

    record = METHODS["weight_matching"]
    monkeypatch.setitem(METHODS, "weight_matching", type(record)(recording, record.options, record.needs_data))
    params = {"align": {"weight_matching": {"max_iter": 7}}}
    align_pairs(dict(enumerate(trained_pair)), [(0, 1)], ["weight_matching"], params, None, torch.zeros(1, 1, 8, 8))
    assert seen == [{"max_iter": 7}]


def test_align_pairs_logs_each_pair_and_method_with_its_time(trained_pair, digits, caplog, capsys):
    """The log says which run, which seeds, which method and how long (at most the call's own wall time), one line
    each, in that form; the progress bar names the run too, ``alignment`` unless told."""
    import logging
    import re
    import time

    models = dict(enumerate(trained_pair))
    with caplog.at_level(logging.INFO, logger="lmcot.align.methods"):
        start = time.perf_counter()
        align_pairs(models, [(0, 1)], ["identity", "weight_matching"], {}, None, digits.x_test[:8], desc="run-x")
        elapsed = time.perf_counter() - start
    lines = [r.getMessage() for r in caplog.records if r.name == "lmcot.align.methods"]
    assert len(lines) == 2
    assert re.fullmatch(r"run-x seeds 0-1 identity: \d+\.\d{3} s", lines[0]), lines
    assert re.fullmatch(r"run-x seeds 0-1 weight_matching: \d+\.\d{3} s", lines[1]), lines
    logged = [float(line.split(": ")[1].removesuffix(" s")) for line in lines]
    assert 0 <= sum(logged) <= elapsed + 2e-3  # the time of each alignment, within the call
    assert "run-x: 100%" in capsys.readouterr().err
    align_pairs(models, [(0, 1)], ["identity"], {}, None, digits.x_test[:8])
    assert "alignment: 100%" in capsys.readouterr().err


def test_ot_emd_stopped_early_names_the_layer_and_the_fix():
    """An iteration cap too low for the network simplex leaves a plan that is not a permutation: refused, naming
    the permutation and the option to raise."""
    import warnings

    from lmcot.align.transport import ot_emd

    torch.manual_seed(0)
    model_a, model_b = (build_model("mlp", (6,), 3, 8, 1) for _ in range(2))
    with warnings.catch_warnings(), pytest.raises(RuntimeError) as error:
        warnings.simplefilter("ignore")  # POT warns that it stopped at the cap
        ot_emd(model_a, model_b, num_iter_max=1)
    assert str(error.value) == "ot.emd returned a plan that is not a permutation at P0; raise num_iter_max"


def test_weight_matching_logs_its_sweeps_and_warns_at_the_cap(trained_pair, caplog):
    """The debug log says how many sweeps the descent took; as many sweeps as a cap converges without a word,
    one fewer stops at the cap with a warning. Zero weights converge at once (no gain is a gain of 0)."""
    import logging
    import re

    from lmcot.align.weight_matching import weight_matching

    with caplog.at_level(logging.DEBUG, logger="lmcot.align.weight_matching"):
        found = weight_matching(*trained_pair)
    (line,) = [r.getMessage() for r in caplog.records]
    sweeps = int(re.fullmatch(r"weight matching converged after (\d+) sweeps", line).group(1))
    assert sweeps >= 2  # the first sweep changes the identity; a second finds nothing left to change
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="lmcot.align.weight_matching"):
        capped = weight_matching(*trained_pair, max_sweeps=sweeps)
        assert [r.getMessage() for r in caplog.records] == [f"weight matching converged after {sweeps} sweeps"]
        caplog.clear()
        weight_matching(*trained_pair, max_sweeps=sweeps - 1)
    assert all(torch.equal(found[k], capped[k]) for k in found)
    warnings = [(r.levelname, r.getMessage()) for r in caplog.records if r.levelno >= logging.WARNING]
    assert warnings == [("WARNING", f"weight matching stopped at max_sweeps={sweeps - 1} before converging")]
    zeros = build_model("mlp", (6,), 3, 8, 2)
    for p in zeros.parameters():
        p.data.zero_()
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="lmcot.align.weight_matching"):
        weight_matching(zeros, zeros)
    assert [r.getMessage() for r in caplog.records] == ["weight matching converged after 1 sweeps"]


def test_weight_matching_orders_its_sweeps_from_seed_0_by_default(monkeypatch):
    """The sweep order is drawn from ``numpy.random.default_rng(seed)``; without a seed it is seed 0, as the
    params' default (the same call gives the same permutations on every run)."""
    import numpy as np

    from lmcot.align import weight_matching as weight_matching_module

    seeds, default_rng = [], np.random.default_rng

    def spy(seed=None):
        seeds.append(seed)
        return default_rng(seed)

    monkeypatch.setattr(weight_matching_module.np.random, "default_rng", spy)
    torch.manual_seed(0)
    model_a, model_b = (build_model("mlp", (1, 3), 2, 4, 2) for _ in range(2))
    weight_matching_module.weight_matching(model_a, model_b)
    weight_matching_module.weight_matching(model_a, model_b, seed=7)
    assert seeds == [0, 7]
