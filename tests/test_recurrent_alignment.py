"""Layer-by-layer matching of recurrent layers uses their hidden-to-hidden weights: the aligned model keeps its
function, a planted permutation that only ``weight_hh`` identifies is recovered, the result solves the assignment
built with its own recurrent rows, and layers without recurrent weights are solved exactly as before."""

import logging

import pytest
import torch

from lmcot.align.methods import align, output_change, permuted_copy
from lmcot.models import build_model
from lmcot.models.recurrent import GATES
from lmcot.ot import solve_lap
from lmcot.permutation import (
    check_permutations,
    identity_permutations,
    incoming_weights,
    invert_permutations,
    random_permutations,
)

# Sinkhorn's iterations take seconds on these layers: its cases are in the slow tier
SINKHORN = pytest.param("ot_sinkhorn", marks=pytest.mark.slow)
LAYERWISE = ("naive_weight_matching", "cov_weight_matching", "ot_emd", SINKHORN)
PLANTED = ("naive_weight_matching", "cov_weight_matching", "ot_emd")


def make(arch, width=8, depth=2, seed=0):
    torch.manual_seed(seed)
    return build_model(arch, (1, 40), 10, width, depth).eval()


@pytest.fixture(scope="module")
def x():
    return torch.randn(200, 1, 40, generator=torch.Generator().manual_seed(0))


def scores(method, model_a, x):
    """The score each method maximises, from rows ``(n, fan_in)``, written out (``Sigma`` over ``[x_t, h_{t-1}]``)."""
    if method == "cov_weight_matching":
        z = model_a.layer_inputs(x, with_state=True)
        sigma = {name: f.T.double() @ f.double() / len(x) for name, f in z.items()}
        return lambda name, w_a, w_b: w_a @ sigma[name][: w_a.shape[1], : w_a.shape[1]] @ w_b.T
    if method == "ot_emd":
        return lambda name, w_a, w_b: -(torch.cdist(w_a, w_b) ** 2)
    return lambda name, w_a, w_b: w_a @ w_b.T


def rows(model, name, perms, recurrent=True):
    """``(n, fan_in)`` float64 rows of permutation ``name``, its inputs and (``recurrent``) own columns by ``perms``."""
    spec = model.permutation_spec()
    state = {k: v.double() for k, v in model.state_dict().items()}
    return incoming_weights(spec, name, state, perms, spec.names[: spec.names.index(name)], recurrent)


def input_only_naive(model_a, model_b):
    """Frozen copy of the layer-by-layer naive matching before recurrent rows: each layer on its input weights."""
    spec = model_a.permutation_spec()
    unpermuted = identity_permutations(spec, model_a.state_dict())
    perms = dict(unpermuted)
    for name in spec.names:
        perms[name] = solve_lap(rows(model_a, name, unpermuted, False) @ rows(model_b, name, perms, False).T)
    return perms


@pytest.mark.parametrize("method", LAYERWISE)
@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_alignment_keeps_the_function(arch, method, x):
    model_a, model_b = make(arch, seed=0), make(arch, seed=1)
    perms = align(method, model_a, model_b, x)
    check_permutations(model_b.permutation_spec(), perms, model_b.state_dict())
    assert output_change(model_b, perms, x) < 1e-5


def tie_first_two_units(model):
    """Give units 0 and 1 of every layer the same input weights and biases (every gate): only their
    hidden-to-hidden weights tell them apart."""
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.startswith("layers.") and "weight_hh" not in name:
                p[1] = p[0]
    return model


@pytest.mark.parametrize("method", PLANTED)
@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_planted_permutation_is_recovered_where_only_the_recurrent_weights_tell_units_apart(arch, method, x):
    model = tie_first_two_units(make(arch))
    spec = model.permutation_spec()
    planted = random_permutations(spec, model.state_dict(), torch.Generator().manual_seed(3))
    # the same shuffle with A's tied units 0 and 1 exchanged: B's layer-0 input weights are the same in both,
    # so a matching on input weights alone (the old one) gets P0 wrong for one of the two
    swapped = {name: torch.where(p == 0, 1, torch.where(p == 1, 0, p)) for name, p in planted.items()}
    input_only_right = []
    for shuffle in (planted, swapped):
        shuffled = permuted_copy(model, shuffle)
        expected = invert_permutations(shuffle)
        found = align(method, model, shuffled, x)
        for name in spec.names:
            assert torch.equal(found[name], expected[name]), (name, found[name], expected[name])
        input_only = align(method, model, shuffled, x, recurrent_iterations=0)
        input_only_right.append(torch.equal(input_only["P0"], expected["P0"]))
    assert not all(input_only_right)


def test_lstm_methods_no_longer_coincide(x):
    """An LSTM reading one value per step: on input weights alone Sigma is a scalar per gate, so naive,
    covariance-aware and exact-OT matching agree; with the recurrent rows (Sigma over ``[x_t, h_{t-1}]``)
    covariance-aware matching differs. Exact OT still equals naive matching: permuting a row's columns keeps
    its norm, so ``|a - b|^2`` and ``-2 a.b`` rank the same (see the reference's equivalences)."""
    model_a, model_b = make("lstm", width=16, depth=1, seed=0), make("lstm", width=16, depth=1, seed=1)
    methods = ("naive_weight_matching", "cov_weight_matching", "ot_emd")
    before = [align(m, model_a, model_b, x, recurrent_iterations=0)["P0"] for m in methods]
    assert all(torch.equal(before[0], p) for p in before)
    after = {m: align(m, model_a, model_b, x)["P0"] for m in methods}
    assert not torch.equal(after["naive_weight_matching"], before[0])
    assert not torch.equal(after["cov_weight_matching"], after["naive_weight_matching"])
    assert torch.equal(after["ot_emd"], after["naive_weight_matching"])


@pytest.mark.parametrize("method", PLANTED)
@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_result_solves_the_assignment_built_with_its_own_recurrent_rows(arch, method, x, caplog):
    """B is a shuffled, noisy copy of A: the iteration settles (no message), and re-solving the LAP with B's
    recurrent columns permuted by the result returns the result."""
    model = make(arch, width=12)
    spec = model.permutation_spec()
    noisy = permuted_copy(model, random_permutations(spec, model.state_dict(), torch.Generator().manual_seed(5)))
    with torch.no_grad():
        for p in noisy.parameters():
            p.add_(0.5 * p.std() * torch.randn(p.shape, generator=torch.Generator().manual_seed(p.numel())))
    with caplog.at_level(logging.INFO, logger="lmcot.align.layerwise"):
        found = align(method, model, noisy, x)
    assert not [r for r in caplog.records if "fixed point" in r.getMessage()]
    score = scores(method, model, x)
    unpermuted = identity_permutations(spec, model.state_dict())
    for name in spec.names:
        again = solve_lap(score(name, rows(model, name, unpermuted), rows(noisy, name, found)))
        assert torch.equal(again, found[name]), name


@pytest.mark.parametrize(("seeds", "width"), [((2, 3), 8), ((4, 5), 16)], ids=["cycles", "wanders"])
def test_an_unsettled_iteration_says_so_and_keeps_its_best_iterate(seeds, width, caplog):
    """Two unrelated random LSTMs: the alternating iteration, replayed here, cycles or does not settle in 20
    steps; the method returns the iterate whose LAP score on its own recurrent rows is largest, the input-only
    answer included (not the last one: the iteration does not ascend)."""
    model_a, model_b = (make("lstm", width=width, depth=1, seed=seed) for seed in seeds)
    w_a = rows(model_a, "P0", identity_permutations(model_a.permutation_spec(), model_a.state_dict())).float()

    def score(perm):
        return w_a @ rows(model_b, "P0", {"P0": perm}).float().T

    perm, iterates = input_only_naive(model_a, model_b)["P0"], []
    for _ in range(20):
        iterates.append(perm)
        perm = solve_lap(score(perm))
        assert not torch.equal(perm, iterates[-1])  # the case means something: no fixed point
        if any(torch.equal(perm, p) for p in iterates):
            message = "recurrent fixed point at P0 cycles; keeping the iterate of best objective"
            break
    else:
        iterates.append(perm)
        message = "recurrent fixed point at P0 unsettled after 20 iterations; keeping the best"
    objectives = [score(p).double()[torch.arange(len(p)), p].sum().item() for p in iterates]
    best = max(range(len(iterates)), key=objectives.__getitem__)
    assert best < len(iterates) - 1
    with caplog.at_level(logging.INFO, logger="lmcot.align.layerwise"):
        found = align("naive_weight_matching", model_a, model_b)["P0"]
    assert message in caplog.messages
    assert torch.equal(found, iterates[best])


@pytest.mark.parametrize("arch", ["mlp", "cnn", "resnet", "resnet_bn"])
@pytest.mark.parametrize("method", LAYERWISE)
def test_layers_without_recurrent_weights_are_solved_as_before(arch, method):
    torch.manual_seed(0)
    model_a, model_b = (build_model(arch, (1, 8, 8), 10, 8, 2).eval() for _ in range(2))
    x = torch.randn(100, 1, 8, 8)
    found = align(method, model_a, model_b, x)
    input_only = align(method, model_a, model_b, x, recurrent_iterations=0)
    assert all(torch.equal(found[k], input_only[k]) for k in found)
    if method in ("naive_weight_matching", "ot_emd"):  # equal assignments (see the reference's equivalences)
        frozen = input_only_naive(model_a, model_b)
        assert all(torch.equal(found[k], frozen[k]) for k in found)


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_recurrent_iterations_0_is_the_input_only_matching(arch):
    model_a, model_b = make(arch, seed=0), make(arch, seed=1)
    found = align("naive_weight_matching", model_a, model_b, recurrent_iterations=0)
    frozen = input_only_naive(model_a, model_b)
    assert all(torch.equal(found[k], frozen[k]) for k in found)


@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_layer_inputs_with_state_give_the_preactivations(arch, x):
    """``[x_t, h_{t-1}]`` times the rows with their recurrent columns, plus the bias, rebuilds every hidden
    state; without the state the columns are today's ``layer_inputs``."""
    model = make(arch)
    x = x[:5]
    plain, full = model.layer_inputs(x), model.layer_inputs(x, with_state=True)
    hidden = model.hidden_activations(x)
    unpermuted = identity_permutations(model.permutation_spec(), model.state_dict())
    for d, name in enumerate(model.permutation_spec().names):
        w = rows(model, name, unpermuted).float()
        assert full[name].shape == (len(plain[name]), w.shape[1])
        assert torch.equal(full[name][:, : plain[name].shape[1]], plain[name])
        gates = GATES if arch == "lstm" else ("",)
        bias = torch.stack([model.layers[d][f"bias_{g}" if g else "bias"] for g in gates])
        pre = (full[name] @ w.T).reshape(len(gates), len(x), 40, -1) + bias[:, None, None, :]
        if arch == "rnn":
            states = torch.tanh(pre[0])
        else:
            c, states = 0, []
            for t in range(40):
                i, f, g, o = pre[:, :, t]
                c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
                states.append(torch.sigmoid(o) * torch.tanh(c))
            states = torch.stack(states, 1)
        torch.testing.assert_close(states.flatten(0, 1), hidden[name], atol=1e-5, rtol=1e-5)


def test_the_solver_is_told_which_permutation_it_solves(x):
    """``solve(name, score)`` gets the name of the permutation being solved, in every refinement too (a
    solver's errors name the layer, e.g. ``ot_emd``'s capped simplex)."""
    from lmcot.align.layerwise import layerwise

    model_a, model_b = make("rnn", seed=0), make("rnn", seed=1)
    names = []

    def solve(name, score):
        names.append(name)
        return solve_lap(score)

    layerwise(model_a, model_b, lambda name, w_a, w_b: w_a @ w_b.T, solve)
    spec_names = list(model_a.permutation_spec().names)
    assert list(dict.fromkeys(names)) == spec_names  # in the spec's order, no other name
    assert all(names.count(name) >= 2 for name in spec_names)  # the input-only answer, then each refinement


def test_a_cycle_of_equally_good_iterates_keeps_the_first(caplog):
    """Ties between iterates go to the earliest, the input-only answer (never an error from comparing them)."""
    from lmcot.align.layerwise import _fixed_point

    start, swapped = torch.tensor([0, 1]), torch.tensor([1, 0])
    scored = []

    def score_of(perm):
        scored.append(perm)
        return torch.ones(2, 2)  # every permutation scores 2

    def solve(name, score):  # always the other permutation: a 2-cycle
        return swapped if torch.equal(scored[-1], start) else start

    with caplog.at_level(logging.INFO, logger="lmcot.align.layerwise"):
        assert torch.equal(_fixed_point("P0", start, score_of, solve, max_iterations=20), start)
    assert caplog.messages == ["recurrent fixed point at P0 cycles; keeping the iterate of best objective"]


def test_layerwise_called_directly_caps_the_recurrent_iteration_at_20(monkeypatch):
    """``layerwise``'s own default cap (a caller that passes none, e.g. a new method) is the documented 20."""
    import lmcot.align.layerwise as layerwise_module

    caps = []
    fixed_point = layerwise_module._fixed_point

    def spy(name, perm, score_of, solve, max_iterations):
        caps.append(max_iterations)
        return fixed_point(name, perm, score_of, solve, max_iterations)

    monkeypatch.setattr(layerwise_module, "_fixed_point", spy)
    model_a, model_b = make("rnn", seed=0), make("rnn", seed=1)
    layerwise_module.layerwise(model_a, model_b, lambda name, w_a, w_b: w_a @ w_b.T)
    assert caps == [20, 20]  # both recurrent layers
    caps.clear()
    layerwise_module.layerwise(model_a, model_b, lambda name, w_a, w_b: w_a @ w_b.T, recurrent_iterations=1)
    assert caps == [1, 1]  # one refinement is still a refinement


def test_a_spec_that_lists_the_recurrent_weights_first_gives_the_same_matching(x):
    """The recurrent columns follow the input columns whatever order the spec lists a layer's matrices in, in
    A's rows and in B's alike: reversing each layer's listing changes nothing."""
    from lmcot.align.layerwise import layerwise
    from lmcot.permutation import PermutationSpec

    model_a, model_b = make("rnn", seed=0), make("rnn", seed=1)
    score = lambda name, w_a, w_b: w_a @ w_b.T  # noqa: E731
    expected = layerwise(model_a, model_b, score)
    spec = model_a.permutation_spec()
    reordered = PermutationSpec({name: tuple(reversed(pairs)) for name, pairs in spec.axes.items()})
    assert [p for p, axis in reordered.axes["P0"] if axis == 0][0] == "layers.0.weight_hh"
    model_a.permutation_spec = lambda: reordered
    found = layerwise(model_a, model_b, score)
    assert {n: p.tolist() for n, p in found.items()} == {n: p.tolist() for n, p in expected.items()}
    assert any(not torch.equal(p, torch.arange(len(p))) for p in found.values())


@pytest.mark.parametrize("depth", [1, 2])
@pytest.mark.parametrize("arch", ["rnn", "lstm"])
def test_weight_matching_recovers_a_planted_permutation_of_a_recurrent_network(arch, depth, generator):
    """MNIST-1D's one feature per step gives each unit a single input weight, which the hidden-to-hidden terms
    scored at the identity used to swamp (22% of an RNN's units recovered at depth 1, 38% of an LSTM's): the
    descent now starts from the input-only assignment and re-solves a permutation whose own score it changed."""
    torch.manual_seed(0)
    model = build_model(arch, (1, 40), 10, 32, depth).eval()
    planted = random_permutations(model.permutation_spec(), model.state_dict(), generator)
    found = align("weight_matching", model, permuted_copy(model, planted))
    expected = invert_permutations(planted)
    assert all(torch.equal(found[name], expected[name]) for name in expected)
