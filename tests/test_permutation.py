"""The permutation mechanism: applying, checking and inverting permutations through a PermutationSpec."""

import pytest
import torch

from lmcot.models import build_model
from lmcot.permutation import (
    PermutationSpec,
    apply_permutations,
    chain_spec,
    check_permutations,
    identity_permutations,
    invert_permutations,
    random_permutations,
)


@pytest.mark.parametrize("depth", [1, 2, 4])
def test_random_permutation_keeps_the_function(depth, generator):
    torch.manual_seed(depth)
    model = build_model("mlp", (1, 8, 8), 10, width=32, depth=depth).eval()
    spec = model.permutation_spec()
    assert spec.names == [f"P{i}" for i in range(depth)]
    perms = random_permutations(spec, model.state_dict(), generator)
    permuted = build_model("mlp", (1, 8, 8), 10, width=32, depth=depth).eval()
    permuted.load_state_dict(apply_permutations(spec, perms, model.state_dict()))
    x = torch.randn(64, 1, 8, 8)
    assert torch.allclose(model(x), permuted(x), atol=1e-5)
    # and the weights really moved
    assert not torch.equal(model.state_dict()["layers.0.weight"], permuted.state_dict()["layers.0.weight"])


def test_inverse_restores_the_weights(generator):
    model = build_model("mlp", (40,), 10, width=16, depth=3)
    spec, state = model.permutation_spec(), model.state_dict()
    perms = random_permutations(spec, state, generator)
    restored = apply_permutations(spec, invert_permutations(perms), apply_permutations(spec, perms, state))
    assert all(torch.equal(restored[k], state[k]) for k in state)


def test_identity_changes_nothing():
    model = build_model("mlp", (40,), 10, width=16, depth=2)
    state = model.state_dict()
    out = apply_permutations(model.permutation_spec(), identity_permutations(model.permutation_spec(), state), state)
    assert all(torch.equal(out[k], state[k]) for k in state)


def test_spec_sizes_of_mlp():
    model = build_model("mlp", (40,), 10, width=16, depth=2)
    assert model.permutation_spec().sizes(model.state_dict()) == {"P0": 16, "P1": 16}


@pytest.mark.parametrize(
    "bad, message",
    [
        ({"P0": torch.tensor([0, 0, 1, 2])}, "not a permutation"),  # repeated unit
        ({"P0": torch.arange(5)}, "not a permutation"),  # wrong size
        ({}, "missing"),
        ({"P0": torch.arange(4), "P9": torch.arange(4)}, "unexpected"),
    ],
)
def test_invalid_permutations_are_rejected(bad, message):
    model = build_model("mlp", (3,), 2, width=4, depth=1)
    with pytest.raises(ValueError, match=message):
        check_permutations(model.permutation_spec(), bad, model.state_dict())


def test_spec_that_does_not_fit_the_model_is_rejected():
    state = {"a.weight": torch.zeros(4, 3), "b.weight": torch.zeros(2, 5)}
    with pytest.raises(ValueError, match="different sizes"):
        PermutationSpec({"P0": (("a.weight", 0), ("b.weight", 1))}).sizes(state)
    with pytest.raises(KeyError, match="c.weight"):
        PermutationSpec({"P0": (("c.weight", 0),)}).sizes(state)


def test_random_permutations_follow_the_generator():
    spec = chain_spec(["a", "b"])
    state = {"a.weight": torch.zeros(50, 3), "a.bias": torch.zeros(50), "b.weight": torch.zeros(2, 50)}
    draws = [random_permutations(spec, state, torch.Generator().manual_seed(7))["P0"] for _ in range(2)]
    assert torch.equal(draws[0], draws[1])
    assert not torch.equal(draws[0], random_permutations(spec, state, torch.Generator().manual_seed(8))["P0"])
