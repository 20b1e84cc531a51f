"""The hooks of an inferred model see what they claim: on networks whose in-place ReLUs and residual ``out += ...``
overwrite a module's output or input after it ran, ``hidden_activations`` and ``layer_inputs`` equal the values an
explicit forward pass computes, exactly, and so do REPAIR's statistics. On networks with attention head groups
(a user's network around lmcot's ``SelfAttention``, and lmcot's own ViT), every alignment method either keeps
model B's function or refuses with a one-line :class:`UserError` naming the permutation or head group."""

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from lmcot.align.methods import METHODS, align, output_change, permuted_copy
from lmcot.any_network import with_inferred_spec
from lmcot.errors import UserError
from lmcot.evaluation import output_statistics
from lmcot.models import build_model
from lmcot.models.transformer import SelfAttention
from lmcot.permutation import invert_permutations, random_permutations, run_permutation


def inplace_mlp() -> nn.Module:
    """Linear -> ReLU(inplace) twice, then a Linear: permutations '0' (6 units) and '2' (5 units)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 6), nn.ReLU(inplace=True), nn.Linear(6, 5), nn.ReLU(inplace=True),
                         nn.Linear(5, 3))  # fmt: skip


class InplaceResidual(nn.Module):
    """``conv1 -> bn1 -> relu_`` makes the stream; a branch ``conv2 -> relu_ -> conv3 -> bn3`` is added into it in
    place (``out += branch``, then ``relu_``), so that conv2's output and conv2's input are both overwritten after
    conv2 ran. Permutations: 'conv1' (the stream, 4 channels) and 'conv2' (3 channels)."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.conv1, self.bn1 = nn.Conv2d(3, 4, 3, padding=1), nn.BatchNorm2d(4)
        self.conv2, self.conv3, self.bn3 = nn.Conv2d(4, 3, 3, padding=1), nn.Conv2d(3, 4, 1), nn.BatchNorm2d(4)
        self.relu = nn.ReLU(inplace=True)
        self.fc = nn.Linear(4, 2)
        with torch.no_grad():  # statistics away from 0 and 1, so that BatchNorm matters
            for bn in (self.bn1, self.bn3):
                bn.running_mean.uniform_(-0.5, 0.5), bn.running_var.uniform_(0.5, 2.0), bn.bias.uniform_(-0.2, 0.2)

    def forward(self, x):
        out = self.relu(self.bn1(self.conv1(x)))
        out += self.bn3(self.conv3(self.relu(self.conv2(out))))
        return self.fc(self.relu(out).mean((2, 3)))


def batch_norm(bn: nn.BatchNorm2d, x: torch.Tensor) -> torch.Tensor:
    """``bn`` in eval mode, by hand."""
    return F.batch_norm(x, bn.running_mean, bn.running_var, bn.weight, bn.bias, False, 0.0, bn.eps)


def channels_last(t: torch.Tensor) -> torch.Tensor:
    """``(batch, channels, h, w)`` -> ``(batch * h * w, channels)``."""
    return t.permute(0, 2, 3, 1).reshape(-1, t.shape[1])


def test_hooks_on_an_mlp_with_in_place_relus_see_the_pre_activations():
    x = torch.randn(32, 4, generator=torch.Generator().manual_seed(1))
    model = with_inferred_spec(inplace_mlp(), x[:2])
    first, second = model[0], model[2]
    with torch.no_grad():
        h0 = F.linear(x, first.weight, first.bias)
        h1 = F.linear(h0.relu(), second.weight, second.bias)
    assert (h0 < 0).any() and (h1 < 0).any()  # an in-place ReLU would change them
    acts, inputs = model.hidden_activations(x), model.layer_inputs(x)
    assert list(acts) == list(inputs) == ["0", "2"]
    assert torch.equal(acts["0"], h0)
    assert torch.equal(acts["2"], h1)
    assert torch.equal(inputs["0"], x)
    assert torch.equal(inputs["2"], h0.relu())


def test_hooks_on_a_residual_network_with_in_place_ops_see_what_each_layer_saw():
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(2))
    model = with_inferred_spec(InplaceResidual(), x[:2])
    assert model.permutation_spec().names == ["conv1", "conv2"]
    with torch.no_grad():
        conv1 = F.conv2d(x, model.conv1.weight, model.conv1.bias, padding=1)
        stream = batch_norm(model.bn1, conv1).relu()
        conv2 = F.conv2d(stream, model.conv2.weight, model.conv2.bias, padding=1)
        assert (conv2 < 0).any()  # the in-place ReLU after conv2 would change it
        branch = batch_norm(model.bn3, F.conv2d(conv2.relu(), model.conv3.weight, model.conv3.bias))
        assert (branch != 0).any()  # out += branch would change conv2's input
        torch.testing.assert_close(model(x), model.fc((stream + branch).relu().mean((2, 3))), rtol=0, atol=0)
    acts, inputs = model.hidden_activations(x), model.layer_inputs(x)
    assert torch.equal(acts["conv1"], channels_last(conv1))
    assert torch.equal(acts["conv2"], channels_last(conv2))  # before the ReLU in place
    assert torch.equal(inputs["conv1"], F.unfold(x, 3, padding=1).transpose(1, 2).flatten(0, 1))
    assert torch.equal(inputs["conv2"], F.unfold(stream, 3, padding=1).transpose(1, 2).flatten(0, 1))  # before +=


def test_repair_statistics_of_layers_whose_output_is_overwritten_in_place():
    """REPAIR reduces a layer's output to its moments inside the hook, before a later op can touch it."""
    x = torch.randn(4, 3, 6, 6, generator=torch.Generator().manual_seed(3))
    model = InplaceResidual().eval()
    with torch.no_grad():
        stream = batch_norm(model.bn1, model.conv1(x)).relu()
        conv2 = model.conv2(stream)
    ((mean, std),) = output_statistics(model, [model.conv2], x)
    samples = channels_last(conv2).double()
    torch.testing.assert_close(mean, samples.mean(0))
    torch.testing.assert_close(std, samples.std(0, correction=0))


class AttentionNet(nn.Module):
    """Tokens ``(batch, 5, 4)`` embedded to 8 channels, a residual ``SelfAttention`` of 2 heads, a ReLU MLP, the
    mean over tokens: permutations 'embed' (the stream), 'attn.qk' and 'attn.vo' (head group 'attn.heads'),
    'fc'."""

    def __init__(self, seed: int):
        super().__init__()
        torch.manual_seed(seed)
        self.embed, self.attn = nn.Linear(4, 8), SelfAttention(8, 2)
        self.fc, self.out = nn.Linear(8, 16), nn.Linear(16, 3)

    def forward(self, x):
        h = self.embed(x)
        h = h + self.attn(h)
        return self.out(torch.relu(self.fc(h)).mean(1))


def vit(seed: int) -> nn.Module:
    torch.manual_seed(seed)
    return build_model("vit", (1, 40), 10, 16, 2, 4).eval()


NETWORKS = {
    "attention_net": (lambda seed, x: with_inferred_spec(AttentionNet(seed), x[:4]), (5, 4)),
    "vit": (lambda seed, x: vit(seed), (1, 40)),
}
# the methods that refuse a head group, and a word of why
REFUSED = {"barycenter": "split an attention head", "cov_weight_matching_with_biases": "one incoming weight matrix"}


@pytest.mark.parametrize("network", NETWORKS)
@pytest.mark.parametrize(  # Sinkhorn on every pair of heads' blocks takes seconds: in the slow tier
    "method", [pytest.param(m, marks=pytest.mark.slow) if m == "ot_sinkhorn" else m for m in METHODS]
)
def test_every_method_keeps_the_function_of_a_network_with_head_groups_or_says_why_not(network, method):
    build, shape = NETWORKS[network]
    x = torch.randn(64, *shape, generator=torch.Generator().manual_seed(4))
    model_a, model_b = build(0, x), build(1, x)
    spec = model_a.permutation_spec()
    assert spec.groups
    if method not in REFUSED:
        perms = align(method, model_a, model_b, x)
        assert output_change(model_b, perms, x) < 1e-4
        return
    with pytest.raises(UserError) as refusal:
        align(method, model_a, model_b, x)
    message = str(refusal.value)
    assert "\n" not in message and REFUSED[method] in message and "instead" in message
    assert any(name in message for name in [*spec.names, *spec.head_groups()])


@pytest.mark.parametrize("method", ["activation_matching", "activation_covariance", "cov_weight_matching"])
def test_data_methods_recover_a_planted_permutation_of_a_users_attention(method):
    """The inner permutations' activations and inputs come from the attention itself: a planted permutation,
    heads swapped included, is put back exactly."""
    x = torch.randn(128, 5, 4, generator=torch.Generator().manual_seed(5))
    model_a = with_inferred_spec(AttentionNet(0), x[:4])
    planted = random_permutations(model_a.permutation_spec(), model_a.state_dict(), torch.Generator().manual_seed(7))
    assert run_permutation(planted["attn.qk"], 4).tolist() == [1, 0]  # the plant swaps the heads
    model_b = permuted_copy(model_a, planted)
    perms = align(method, model_a, model_b, x)
    truth = invert_permutations(planted)
    assert {n: p.tolist() for n, p in perms.items()} == {n: p.tolist() for n, p in truth.items()}


def test_an_attentions_inner_permutations_read_its_own_activations_and_inputs():
    x = torch.randn(3, 5, 4, generator=torch.Generator().manual_seed(7))
    model = with_inferred_spec(AttentionNet(0), x[:2])
    with torch.no_grad():
        h = model.embed(x)
        parts = model.attn.parts(h)
    acts, inputs = model.hidden_activations(x), model.layer_inputs(x)
    assert list(acts) == list(inputs) == ["embed", "attn.qk", "attn.vo", "fc"]
    assert torch.equal(acts["attn.qk"], torch.cat([parts["q"], parts["k"]], 1).reshape(-1, 8))  # 2 * 15 samples
    assert torch.equal(acts["attn.vo"], parts["mixed"].reshape(-1, 8))
    tokens, zeros = h.reshape(-1, 8), torch.zeros(15, 8)
    assert torch.equal(inputs["attn.qk"], torch.cat([torch.cat([tokens, zeros], 1), torch.cat([zeros, tokens], 1)]))
    assert torch.equal(inputs["attn.vo"], tokens)


def test_an_attention_that_cannot_say_its_activations_is_refused_in_one_line():
    class Bare(SelfAttention):
        hidden_activations = layer_inputs = None

    model = AttentionNet(0)
    model.attn = Bare(8, 2)
    x = torch.randn(16, 5, 4)
    model = with_inferred_spec(model, x[:2])
    for method, words in [("activation_matching", "no hidden_activations(x, prefix)"),
                          ("cov_weight_matching", "2 incoming weight matrices")]:  # fmt: skip
        with pytest.raises(UserError) as refusal:
            align(method, model, model, x)
        message = str(refusal.value)
        assert "\n" not in message and "'attn.qk'" in message and words in message, message
