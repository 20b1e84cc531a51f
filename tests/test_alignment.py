"""Alignment methods: they keep the aligned model's function, recover planted permutations, and improve
the matching objective over no alignment."""

import pytest
import torch

from lmcot.alignment import METHODS, align, incoming_weights, output_change, permuted_copy, solve_lap
from lmcot.permutation import apply_permutations, identity_permutations, invert_permutations, random_permutations


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
    with pytest.raises(ValueError, match="weight_matching"):
        align("weight_matchin", *trained_pair)


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


def test_sinkhorn_rounds_to_a_permutation_close_to_exact_ot(trained_pair):
    model_a, model_b = trained_pair
    exact = align("ot_emd", model_a, model_b)
    soft = align("ot_sinkhorn", model_a, model_b, epsilon=1e-3)
    agreement = sum((exact[k] == soft[k]).float().mean().item() for k in exact) / len(exact)
    assert agreement > 0.8
