"""Hugging Face ``transformers`` models built from small configs offline (GPT-2, BERT, ViT), read by spec
inference through the trace on the example input: the permutations keep the logits, and weight matching puts a
planted permutation back. GPT-2 packs queries, keys and values in one Conv1D whose outputs are split: its
sections become permutations of their own."""

import os

import pytest
import torch

os.environ.setdefault("HF_HUB_OFFLINE", "1")  # built from configs: nothing to download
transformers = pytest.importorskip("transformers")

from lmcot.align.methods import align, permuted_copy  # noqa: E402
from lmcot.any_network import with_inferred_spec  # noqa: E402
from lmcot.permutation import invert_permutations, random_permutations  # noqa: E402

SMALL = dict(num_hidden_layers=2, hidden_size=32, num_attention_heads=4, intermediate_size=48)


def gpt2():
    config = transformers.GPT2Config(n_layer=2, n_embd=32, n_head=4, vocab_size=50, n_positions=16, use_cache=False)
    return transformers.GPT2LMHeadModel(config), torch.randint(0, 50, (3, 8))


def bert():
    config = transformers.BertConfig(**SMALL, vocab_size=50, max_position_embeddings=16, num_labels=3)
    return transformers.BertForSequenceClassification(config), torch.randint(0, 50, (3, 8))


def vit():
    config = transformers.ViTConfig(**SMALL, image_size=16, patch_size=4, num_labels=3)
    return transformers.ViTForImageClassification(config), torch.randn(3, 3, 16, 16)


MODELS = {"gpt2": gpt2, "bert": bert, "vit": vit}


@pytest.fixture(params=["eager", "sdpa"])
def attention(request):
    return request.param


@pytest.mark.parametrize("name", MODELS)
def test_transformers_models_keep_their_logits_and_a_planted_permutation_is_put_back(name, attention):
    torch.manual_seed(0)
    network, x = MODELS[name]()
    network.config._attn_implementation = attention
    with torch.no_grad():
        for p in network.parameters():  # LayerNorms start at 1 and 0: move them so that no two units are alike
            p.add_(0.05 * torch.randn_like(p))
    model = with_inferred_spec(network.eval(), x)
    spec = model.permutation_spec()
    heads = {n for n in spec.groups}
    assert len(heads) == 2 * 2  # two layers: queries with keys, values with the output, in 4 heads of 8
    assert {size for _, size in spec.groups.values()} == {8}
    planted = random_permutations(spec, model.state_dict(), torch.Generator().manual_seed(1))
    moved = permuted_copy(model, planted)
    with torch.no_grad():
        torch.testing.assert_close(moved(x).logits, model(x).logits, atol=1e-5, rtol=1e-5)
    found, expected = align("weight_matching", model, moved), invert_permutations(planted)
    assert {n: found[n].tolist() for n in spec.names} == {n: expected[n].tolist() for n in spec.names}


def test_gpt2s_packed_projection_is_cut_into_query_key_and_value_sections():
    network, x = gpt2()
    spec = with_inferred_spec(network.eval(), x).permutation_spec()
    assert spec.sections["transformer.h.0.attn.c_attn.weight"] == (1, (0, 32, 64, 96))
    assert spec.sections["transformer.h.0.attn.c_attn.bias"] == (0, (0, 32, 64, 96))
    qk = spec.axes["transformer.h.0.attn.c_attn[0:32]"]
    assert {("transformer.h.0.attn.c_attn.weight[0:32]", 1), ("transformer.h.0.attn.c_attn.weight[32:64]", 1)} < set(qk)
    value = spec.axes["transformer.h.0.attn.c_attn[64:96]"]
    assert ("transformer.h.0.attn.c_proj.weight", 0) in value  # GPT-2's Conv1D weight is (in, out)
