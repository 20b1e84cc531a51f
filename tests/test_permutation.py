"""The permutation mechanism: applying, checking and inverting permutations through a PermutationSpec."""

import pytest
import torch

from lmcot.models import build_model
from lmcot.permutation import (
    PermutationSpec,
    apply_permutations,
    block_indices,
    chain_spec,
    check_permutations,
    identity_permutations,
    incoming_matrices,
    invert_permutations,
    permute_tensor,
    random_permutations,
    unit_parameters,
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


# --- block axes: unit j of n occupies indices [j*b, (j+1)*b) ---------------------------------------------------

BLOCK_SPEC = PermutationSpec(
    {"P": (("a.weight", 0), ("a.bias", 0), ("b.weight", 1))}, blocks={("b.weight", 1): 2}
)  # a: 3 units; b reads them as 3 blocks of 2 inputs


def block_state():
    return {
        "a.weight": torch.arange(6.0).reshape(3, 2),
        "a.bias": torch.tensor([10.0, 11.0, 12.0]),
        "b.weight": torch.arange(12.0).reshape(2, 6),
    }


def test_a_block_axis_moves_whole_contiguous_blocks():
    state = block_state()
    assert BLOCK_SPEC.sizes(state) == {"P": 3}
    assert BLOCK_SPEC.block("b.weight", 1) == 2 and BLOCK_SPEC.block("a.weight", 0) == 1
    permuted = apply_permutations(BLOCK_SPEC, {"P": torch.tensor([2, 0, 1])}, state)
    # block i of the result is block perm[i]: columns [4, 5, 0, 1, 2, 3]
    assert torch.equal(permuted["b.weight"], torch.tensor([[4.0, 5, 0, 1, 2, 3], [10, 11, 6, 7, 8, 9]]))
    assert torch.equal(permuted["a.weight"], torch.tensor([[4.0, 5], [0, 1], [2, 3]]))
    assert torch.equal(permuted["a.bias"], torch.tensor([12.0, 10, 11]))
    assert torch.equal(block_indices(torch.tensor([1, 0]), 3), torch.tensor([3, 4, 5, 0, 1, 2]))


def test_block_permutations_are_checked_in_units_and_invert(generator):
    state = block_state()
    assert [len(p) for p in identity_permutations(BLOCK_SPEC, state).values()] == [3]
    perms = random_permutations(BLOCK_SPEC, state, generator)
    assert sorted(perms["P"].tolist()) == [0, 1, 2]
    back = apply_permutations(BLOCK_SPEC, invert_permutations(perms), apply_permutations(BLOCK_SPEC, perms, state))
    assert all(torch.equal(back[k], v) for k, v in state.items())
    with pytest.raises(ValueError, match="not a permutation of 3 units"):
        check_permutations(BLOCK_SPEC, {"P": torch.arange(6)}, state)
    with pytest.raises(ValueError, match=r"18 entries, not a multiple of its block size 4"):
        PermutationSpec(BLOCK_SPEC.axes, {("b.weight", 1): 4}).sizes({**state, "b.weight": torch.zeros(2, 18)})
    with pytest.raises(ValueError, match=r"different sizes \(3 and 4 at 'b.weight'\)"):
        BLOCK_SPEC.sizes({**state, "b.weight": torch.zeros(2, 8)})
    with pytest.raises(ValueError, match="which no permutation acts on"):
        PermutationSpec(BLOCK_SPEC.axes, {("c.weight", 1): 2})
    with pytest.raises(ValueError, match="positive integer"):
        PermutationSpec(BLOCK_SPEC.axes, {("b.weight", 1): 0})


def test_one_row_per_unit_consumers_refuse_a_block_axis_0():
    spec = PermutationSpec(BLOCK_SPEC.axes, {("a.weight", 0): 1, ("a.bias", 0): 2})
    with pytest.raises(ValueError, match=r"block axes are not supported by layer-by-layer .* 'a.bias' has blocks"):
        unit_parameters(spec, "P", solved=[])
    with pytest.raises(ValueError, match=r"block axes are not supported by incoming_matrices yet: .*'a.bias'"):
        incoming_matrices(spec, "P", block_state())


def test_the_barycentre_transport_carries_blocks_whole():
    from lmcot.fusion import transport_tensor

    perm = torch.tensor([2, 0, 1])
    coupling = torch.zeros(3, 3, dtype=torch.float64)
    coupling[torch.arange(3), perm] = 1 / 3  # a permutation's coupling: target unit i is model unit perm[i]
    w = block_state()["b.weight"].double()
    carried = transport_tensor(BLOCK_SPEC, {"P": coupling}, "b.weight", w)
    assert torch.equal(carried, permute_tensor(BLOCK_SPEC, {"P": perm}, "b.weight", w))


class BlockReader(torch.nn.Module):
    """One weight whose axis 1 holds 5 units in blocks of 4 (no other tensor tells the units apart)."""

    def __init__(self, weight):
        super().__init__()
        self.w = torch.nn.Parameter(weight)

    def permutation_spec(self):
        return PermutationSpec({"P": (("w", 1),)}, blocks={("w", 1): 4})


def test_weight_matching_scores_a_unit_on_its_whole_block():
    from lmcot.align.weight_matching import weight_matching

    model_a = BlockReader(torch.randn(3, 20, generator=torch.Generator().manual_seed(0)))
    planted = {"P": torch.tensor([3, 0, 4, 1, 2])}
    model_b = BlockReader(apply_permutations(model_a.permutation_spec(), planted, model_a.state_dict())["w"])
    assert torch.equal(weight_matching(model_a, model_b)["P"], invert_permutations(planted)["P"])


def test_a_spec_that_does_not_fit_the_state_is_named_exactly():
    """Each way a spec can miss the tensors it names, with its whole message; a negative axis counts from the end."""
    state = {"w": torch.zeros(3, 4), "v": torch.zeros(5)}
    assert PermutationSpec({"P": (("w", -2),)}).sizes(state) == {"P": 3}  # -2 is axis 0 of a 2-D tensor
    assert PermutationSpec({"P": (("w", -1), ("v", -1))}).sizes({"w": torch.zeros(3, 5), "v": torch.zeros(5)}) == {
        "P": 5
    }
    cases = [
        ({"P": ()}, "permutation 'P' acts on no tensor"),
        ({"P": (("x", 0),)}, "\"permutation 'P' names parameter 'x', which the model lacks\""),
        ({"P": (("w", 2),)}, "permutation 'P': 'w' has 2 axes, no axis 2"),
        ({"P": (("w", -3),)}, "permutation 'P': 'w' has 2 axes, no axis -3"),
        ({"P": (("w", 1), ("v", 0))}, "permutation 'P' acts on axes of different sizes (4 and 5 at 'v')"),
    ]
    for axes, message in cases:
        with pytest.raises((ValueError, KeyError)) as refused:
            PermutationSpec(axes).sizes(state)
        assert str(refused.value) == message


def test_a_head_group_that_does_not_fit_is_named_exactly():
    state = {"q": torch.zeros(6, 2), "v": torch.zeros(8, 2)}
    axes = {"qk": (("q", 0),), "vo": (("v", 0),)}
    cases = [
        ({"qk": ("heads", 4)}, "permutation 'qk' has 6 units, not a multiple of its run size 4"),
        (
            {"qk": ("heads", 3), "vo": ("heads", 2)},
            "the permutations of group 'heads' (qk, vo) have different run counts",
        ),
    ]
    for groups, message in cases:
        with pytest.raises(ValueError) as refused:
            PermutationSpec(axes, groups=groups).sizes(state)
        assert str(refused.value) == message
    assert PermutationSpec(axes, groups={"qk": ("heads", 3), "vo": ("heads", 4)}).sizes(state) == {"qk": 6, "vo": 8}
    with pytest.raises(ValueError, match="^group 'heads' names permutation 'ko', which the spec lacks$"):
        PermutationSpec(axes, groups={"ko": ("heads", 3)})
    with pytest.raises(ValueError, match="^run size of permutation 'qk' must be a positive integer, not 0$"):
        PermutationSpec(axes, groups={"qk": ("heads", 0)})


def test_a_random_group_move_uses_each_members_run_size_and_only_the_given_generator():
    """Three heads of 3 query/key and 4 value/output dimensions: both members move the same whole heads, each
    within its own runs; the draw depends on the generator alone, not on torch's global seed."""
    state = {"q": torch.zeros(9, 2), "v": torch.zeros(12, 2)}
    spec = PermutationSpec({"qk": (("q", 0),), "vo": (("v", 0),)}, groups={"qk": ("heads", 3), "vo": ("heads", 4)})
    draws = []
    for global_seed in (0, 1):
        torch.manual_seed(global_seed)
        draws.append(random_permutations(spec, state, torch.Generator().manual_seed(5)))
    assert {n: p.tolist() for n, p in draws[0].items()} == {n: p.tolist() for n, p in draws[1].items()}
    perms = draws[0]
    check_permutations(spec, perms, state)
    qk_heads = [perms["qk"][3 * h].item() // 3 for h in range(3)]
    vo_heads = [perms["vo"][4 * h].item() // 4 for h in range(3)]
    assert sorted(qk_heads) == [0, 1, 2] and qk_heads == vo_heads


def test_a_permutation_of_biases_alone_has_no_incoming_matrices():
    spec = PermutationSpec({"P": (("a.bias", 0),)})
    with pytest.raises(ValueError) as refused:
        incoming_matrices(spec, "P", {"a.bias": torch.zeros(3)})
    assert str(refused.value) == "permutation 'P' permutes no weight matrix's output axis whose inputs are aligned"


def test_a_recurrent_tensor_waits_for_its_other_input_permutations():
    """``h`` (axes P, P, Q) reads P's own units and Q's: it is recurrent for P only once Q is solved, like ``v``
    (P, Q) becomes an input; ``w`` (P alone) is an input at once."""
    spec = PermutationSpec({"P": (("w", 0), ("v", 0), ("h", 0), ("h", 1)), "Q": (("v", 1), ("h", 2))})
    assert unit_parameters(spec, "P", solved=[]) == (["w"], [])
    assert unit_parameters(spec, "P", solved=["Q"]) == (["w", "v"], ["h"])
