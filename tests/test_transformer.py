"""The transformer's permutation symmetries: every permutation of its spec (whole heads included) keeps its
function, a structured permutation never splits a head, and the alignment methods put a planted permutation,
head swaps included, back exactly."""

import pytest
import torch

from lmcot.align.assignment import assign, assign_heads, lap
from lmcot.align.methods import METHODS, align, permuted_copy
from lmcot.choices import HEADS_UNSUPPORTED
from lmcot.models import build_model
from lmcot.permutation import (
    PermutationSpec,
    apply_permutations,
    check_permutations,
    compose_runs,
    invert_permutations,
    random_permutations,
    run_permutation,
)

SHAPES = {"mnist1d": (1, 40), "digits": (1, 8, 8)}


def vit(shape=(1, 40), width=16, depth=2, heads=4, seed=0):
    torch.manual_seed(seed)
    model = build_model("vit", shape, 10, width, depth, heads).eval()
    with torch.no_grad():  # LayerNorm weights and biases away from 1 and 0, so that their permutation matters
        for name, p in model.named_parameters():
            if "norm" in name:
                p.add_(torch.randn_like(p) * 0.3)
    return model


def planted(model, seed=1):
    """A copy of ``model`` with random permutations of every kind applied, and those permutations."""
    spec = model.permutation_spec()
    perms = random_permutations(spec, model.state_dict(), torch.Generator().manual_seed(seed))
    return permuted_copy(model, perms), perms


def test_the_spec_counts_every_symmetry():
    spec = vit(width=16, depth=2, heads=4).permutation_spec()
    assert spec.names == [
        "embed",
        "blocks.0.attn.qk",
        "blocks.0.attn.vo",
        "blocks.0.fc1",
        "blocks.1.attn.qk",
        "blocks.1.attn.vo",
        "blocks.1.fc1",
    ]
    assert spec.groups == {
        f"blocks.{i}.attn.{kind}": (f"blocks.{i}.attn.heads", 4) for i in (0, 1) for kind in "qk vo".split()
    }
    sizes = spec.sizes(vit(width=16, depth=2, heads=4).state_dict())
    assert sizes == {
        "embed": 16,
        **{f"blocks.{i}.{k}": n for i in (0, 1) for k, n in [("attn.qk", 16), ("attn.vo", 16), ("fc1", 32)]},
    }
    # the residual stream's permutation reaches every block, the position embedding and the classifier
    assert ("position", 1) in spec.axes["embed"] and ("head.weight", 1) in spec.axes["embed"]
    assert {("blocks.1.attn.o.weight", 0), ("blocks.1.fc2.weight", 0), ("blocks.0.attn.q.weight", 1)} <= set(
        spec.axes["embed"]
    )


@pytest.mark.parametrize("shape", SHAPES.values(), ids=SHAPES.keys())
def test_every_permutation_of_the_spec_keeps_the_function(shape):
    model = vit(shape)
    x = torch.randn(32, *shape)
    for seed in range(3):
        permuted, perms = planted(model, seed)
        assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())
        with torch.no_grad():
            torch.testing.assert_close(permuted(x), model(x), atol=1e-5, rtol=1e-5)


def test_splitting_a_head_changes_the_function_and_is_refused():
    """A permutation that moves one query dimension to another head is not a symmetry: the check refuses it."""
    model = vit()
    spec = model.permutation_spec()
    perms = {name: torch.arange(n) for name, n in spec.sizes(model.state_dict()).items()}
    perms["blocks.0.attn.qk"] = torch.arange(16)
    perms["blocks.0.attn.qk"][[0, 4]] = perms["blocks.0.attn.qk"][[4, 0]]  # head 0's first unit <-> head 1's
    with pytest.raises(ValueError, match="splits runs of 4 units"):
        check_permutations(spec, perms, model.state_dict())
    unchecked = PermutationSpec(spec.axes, spec.blocks)  # the same axes without the head groups
    state = apply_permutations(unchecked, perms, model.state_dict())
    other = vit()
    other.load_state_dict(state)
    x = torch.randn(8, 1, 40)
    with torch.no_grad():
        assert (other(x) - model(x)).abs().max() > 1e-3


def test_the_heads_of_a_group_move_alike():
    model = vit()
    spec = model.permutation_spec()
    perms = random_permutations(spec, model.state_dict(), torch.Generator().manual_seed(3))
    qk, vo = perms["blocks.0.attn.qk"], perms["blocks.0.attn.vo"]
    assert torch.equal(run_permutation(qk, 4), run_permutation(vo, 4))
    perms["blocks.0.attn.vo"] = compose_runs(run_permutation(vo, 4).roll(1), torch.arange(4).repeat(4, 1))
    with pytest.raises(ValueError, match="move the runs differently"):
        check_permutations(spec, perms, model.state_dict())


def test_compose_runs_by_hand():
    """Run 0 <- B's run 2 in the order (1, 0); run 1 <- run 0 as is; run 2 <- run 1 reversed."""
    heads, within = torch.tensor([2, 0, 1]), torch.tensor([[1, 0], [0, 1], [1, 0]])
    assert compose_runs(heads, within).tolist() == [5, 4, 0, 1, 3, 2]
    assert run_permutation(torch.tensor([5, 4, 0, 1, 3, 2]), 2).tolist() == [2, 0, 1]


def test_nested_assignment_is_the_best_structured_permutation():
    """Against brute force over every head-preserving permutation of 2 groups of 2 heads x 2 units."""
    import itertools

    generator = torch.Generator().manual_seed(0)
    scores = {"qk": (torch.randn(4, 4, generator=generator), 2), "vo": (torch.randn(4, 4, generator=generator), 2)}
    best = assign_heads(scores)
    orders = list(itertools.permutations(range(2)))
    total = {}
    for heads in orders:
        for a in itertools.product(orders, repeat=2):
            for b in itertools.product(orders, repeat=2):
                pq = compose_runs(torch.tensor(heads), torch.tensor(a))
                pv = compose_runs(torch.tensor(heads), torch.tensor(b))
                value = sum(
                    s[torch.arange(4), p].sum().item() for (s, _), p in zip(scores.values(), (pq, pv), strict=True)
                )
                total[(tuple(pq.tolist()), tuple(pv.tolist()))] = value
    found = (tuple(best["qk"].tolist()), tuple(best["vo"].tolist()))
    assert total[found] == pytest.approx(max(total.values()))


def test_assign_refuses_half_a_group():
    spec = vit().permutation_spec()
    with pytest.raises(ValueError, match="must be solved together"):
        assign(spec, {"blocks.0.attn.qk": torch.randn(16, 16)})


# Sinkhorn on every pair of heads' blocks takes seconds: in the slow tier
SINKHORN = pytest.param("ot_sinkhorn", marks=pytest.mark.slow)
DATA_FREE = ["weight_matching", "weight_matching_without_biases", "naive_weight_matching", "ot_emd", SINKHORN]
WITH_DATA = ["activation_matching", "activation_covariance", "cov_weight_matching"]


@pytest.mark.parametrize("method", DATA_FREE + WITH_DATA)
def test_a_planted_permutation_is_recovered_exactly(method):
    """B is A with every kind of permutation applied, heads swapped included: aligning B to A undoes it."""
    model_a = vit(width=16, heads=4)
    model_b, perms = planted(model_a)
    heads = run_permutation(perms["blocks.0.attn.qk"], 4)
    assert not torch.equal(heads, torch.arange(4))  # the plant swaps heads
    inputs = torch.randn(256, 1, 40, generator=torch.Generator().manual_seed(2))
    found = align(method, model_a, model_b, inputs if METHODS[method].needs_data else None)
    inverse = invert_permutations(perms)
    assert {name: p.tolist() for name, p in found.items()} == {name: p.tolist() for name, p in inverse.items()}
    aligned = permuted_copy(model_b, found)
    for key, value in model_a.state_dict().items():
        torch.testing.assert_close(aligned.state_dict()[key], value, atol=0, rtol=0)


@pytest.mark.parametrize("method", sorted(HEADS_UNSUPPORTED))
def test_methods_that_would_split_heads_say_so(method):
    model_a = vit()
    with pytest.raises(ValueError, match="head"):
        align(method, model_a, planted(model_a)[0], None)


def test_the_planes_of_a_transformer_use_weight_matching_and_its_average():
    """The barycentre could split a head: the plane stage permutes model 2 by weight matching (same function) and
    puts the mean of model 1 and the permuted model 2 where the fused model goes."""
    from lmcot.plane import fusion_planes

    model_1, model_2 = vit(seed=0), vit(seed=1)
    planes = fusion_planes(model_1, model_2, ot={})
    _, permuted, labels = planes["permutation"]
    moved = vit(seed=2)
    moved.load_state_dict(permuted)
    x = torch.randn(16, 1, 40)
    with torch.no_grad():
        torch.testing.assert_close(moved(x), model_2(x), atol=1e-5, rtol=1e-5)
    _, fused, labels = planes["fusion"]
    assert labels["second"] == "weight-matching average"
    for key, value in model_1.state_dict().items():
        torch.testing.assert_close(fused[key], (value + permuted[key]) / 2)


@pytest.mark.parametrize("biases", [True, False])
def test_weight_matching_of_unrelated_transformers_moves_whole_heads(biases):
    """Two independently initialised ViTs share no planted answer, so only the head groups keep the result from
    splitting a head: with or without the bias terms, every head moves whole."""
    from lmcot.align.weight_matching import weight_matching

    model_a, model_b = vit(seed=0), vit(seed=1)
    perms = weight_matching(model_a, model_b, biases=biases)
    check_permutations(model_a.permutation_spec(), perms, model_a.state_dict())


def test_runs_of_one_unit_and_the_default_name_of_a_split_run():
    assert run_permutation(torch.tensor([2, 0, 1]), 1).tolist() == [2, 0, 1]  # every unit is its own run
    with pytest.raises(ValueError) as error:
        run_permutation(torch.tensor([0, 2, 1, 3]), 2)  # units 0 and 2 in one run: run 0 is split
    assert str(error.value) == "the permutation splits runs of 2 units (an attention head's dimensions)"


def test_a_head_group_is_assigned_on_the_sum_over_its_members():
    """Two heads of one unit each. Member ``qk`` gains 20 by swapping the heads, member ``vo`` 2 by keeping them:
    the group swaps (20 > 2), though ``vo`` alone would not."""
    from lmcot.align.assignment import assign_heads

    scores = {
        "qk": (torch.tensor([[0.0, 10.0], [10.0, 0.0]]), 1),
        "vo": (torch.tensor([[1.0, 0.0], [0.0, 1.0]]), 1),
    }
    perms = assign_heads(scores)
    assert perms["qk"].tolist() == perms["vo"].tolist() == [1, 0]
    assert assign_heads({"vo": scores["vo"]})["vo"].tolist() == [0, 1]


class RunsMLP(torch.nn.Module):
    """``3 -> 4 -> 2`` whose hidden units move in runs of 2: a head group of one permutation."""

    def __init__(self):
        super().__init__()
        self.fc1, self.fc2 = torch.nn.Linear(3, 4), torch.nn.Linear(4, 2)

    def forward(self, x):
        return self.fc2(torch.relu(self.fc1(x)))

    def permutation_spec(self):
        axes = {"hidden": (("fc1.weight", 0), ("fc1.bias", 0), ("fc2.weight", 1))}
        return PermutationSpec(axes, groups={"hidden": ("runs", 2)})


def test_a_head_group_of_one_permutation_is_solved_layer_by_layer():
    """A group may have a single member (units that move in runs): layer-by-layer matching solves it too,
    and undoes a planted swap of the two runs."""
    from lmcot.align.layerwise import naive_weight_matching

    torch.manual_seed(0)
    model_a = RunsMLP()
    plant = {"hidden": torch.tensor([2, 3, 0, 1])}  # the runs swap; units stay in order within them
    model_b = permuted_copy(model_a, plant)
    found = naive_weight_matching(model_a, model_b)
    assert found["hidden"].tolist() == invert_permutations(plant)["hidden"].tolist() == [2, 3, 0, 1]


def test_the_solver_is_told_every_member_of_a_head_group():
    """Layer by layer, a head group is solved by the caller's ``solve`` too (an OT method's rounding), which is
    told each member's name."""
    from lmcot.align.layerwise import layerwise
    from lmcot.ot import solve_lap

    names = []

    def solve(name, score):
        names.append(name)
        return solve_lap(score)

    model_a = vit(width=8, depth=1, heads=2)
    layerwise(model_a, planted(model_a)[0], lambda name, w_a, w_b: w_a @ w_b.T, solve)
    assert (
        set(names)
        == set(model_a.permutation_spec().names)
        == {"embed", "blocks.0.attn.qk", "blocks.0.attn.vo", "blocks.0.fc1"}
    )


def test_assign_tells_the_solver_each_name_and_names_every_missing_member():
    """A plain permutation and each member of a group reach ``solve`` by name; a group given only in part is
    refused with all its missing members named."""
    axes = {"P0": (("a", 0),), "qk": (("q", 0),), "vo": (("v", 0),), "ff": (("f", 0),)}
    spec = PermutationSpec(axes, groups={"qk": ("heads", 1), "vo": ("heads", 1), "ff": ("heads", 1)})
    names = []

    def solve(name, score):
        names.append(name)
        return lap(name, score)

    score = torch.tensor([[0.0, 1.0], [1.0, 0.0]])
    found = assign(spec, {"P0": score, "qk": score, "vo": score, "ff": score}, solve)
    assert set(names) == {"P0", "qk", "vo", "ff"} and found["P0"].tolist() == [1, 0]
    with pytest.raises(ValueError) as refused:
        assign(spec, {"qk": score}, solve)
    assert str(refused.value) == "group 'heads' must be solved together; no scores for vo, ff"


def test_a_group_that_splits_a_head_or_moves_its_members_apart_is_named_exactly():
    state = {"q": torch.zeros(4, 2), "v": torch.zeros(4, 2)}
    spec = PermutationSpec({"qk": (("q", 0),), "vo": (("v", 0),)}, groups={"qk": ("heads", 2), "vo": ("heads", 2)})
    cases = [
        (
            {"qk": torch.tensor([0, 2, 1, 3]), "vo": torch.arange(4)},
            "qk splits runs of 2 units (an attention head's dimensions)",
        ),
        (
            {"qk": torch.tensor([2, 3, 0, 1]), "vo": torch.arange(4)},
            "the permutations of group 'heads' (qk, vo) move the runs differently",
        ),
    ]
    for perms, message in cases:
        with pytest.raises(ValueError) as refused:
            check_permutations(spec, perms, state)
        assert str(refused.value) == message
