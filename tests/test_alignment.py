"""Alignment methods: they keep the aligned model's function, recover planted permutations, and improve
the matching objective over no alignment."""

import pytest
import torch

from lmcot.alignment import METHODS, align, output_change, permuted_copy
from lmcot.permutation import apply_permutations, invert_permutations, random_permutations


@pytest.mark.parametrize("method", sorted(METHODS))
def test_alignment_keeps_the_function(method, trained_pair, digits):
    model_a, model_b = trained_pair
    perms = align(method, model_a, model_b, digits.x_train)
    assert output_change(model_b, perms, digits.x_test) < 1e-4


@pytest.mark.parametrize("method", ["weight_matching", "activation_matching"])
def test_planted_permutation_is_recovered_exactly(method, trained_pair, digits, generator):
    model = trained_pair[0]
    spec = model.permutation_spec()
    planted = random_permutations(spec, model.state_dict(), generator)
    shuffled = permuted_copy(model, planted)
    found = align(method, model, shuffled, digits.x_train)
    # aligning the shuffled copy back onto the original must undo the planted permutation
    expected = invert_permutations(planted)
    for name in spec.names:
        assert torch.equal(found[name], expected[name]), name
    restored = apply_permutations(spec, found, shuffled.state_dict())
    assert all(torch.equal(restored[k], v) for k, v in model.state_dict().items())


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
