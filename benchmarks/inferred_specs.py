"""What spec inference finds and whether weight matching undoes a planted permutation: ``python
benchmarks/inferred_specs.py`` prints, for torchvision's resnet18 and vgg11_bn (random weights, 3x32x32 inputs) and
lmcot's vit-d2-w64-h4, the permutations by kind, the units, and how many planted units (and head groups) weight
matching puts back. Takes about a minute on 2 cores."""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path

import torch
from torch import nn
from torchvision.models import resnet18, vgg11_bn

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmcot.align.methods import align, permuted_copy  # noqa: E402
from lmcot.any_network import with_inferred_spec  # noqa: E402
from lmcot.models import build_model  # noqa: E402
from lmcot.permutation import invert_permutations, random_permutations, run_permutation  # noqa: E402

PRODUCERS = (nn.Linear, nn.Conv1d, nn.Conv2d)


def kinds(model: nn.Module, spec) -> Counter:
    """Permutations by kind: a residual stream (several layers write it), conv channels, Linear units, or an
    attention's within-head dimensions; and the head groups and block axes."""
    modules, counts = dict(model.named_modules()), Counter()
    for name, pairs in spec.axes.items():
        if name in spec.groups:
            counts[f"attention {name.rsplit('.', 1)[-1]} within heads"] += 1
            continue
        weights = [p for p, axis in pairs if axis == 0 and p.endswith(".weight")]
        writers = [p for p in weights if isinstance(modules.get(p.rsplit(".", 1)[0]), PRODUCERS)]
        if len(writers) > 1:
            counts["residual stream"] += 1
        else:
            conv = isinstance(modules[writers[0].rsplit(".", 1)[0]], nn.Conv1d | nn.Conv2d)
            counts["conv channels" if conv else "linear units"] += 1
    counts["head groups"], counts["block axes"] = len(spec.head_groups()), len(spec.blocks)
    return counts


def recovery(model: nn.Module) -> tuple[int, int, int, int]:
    """(units put back, units, head groups put back, head groups) after weight matching a planted permutation."""
    spec = model.permutation_spec()
    planted = random_permutations(spec, model.state_dict(), torch.Generator().manual_seed(1))
    found, expected = align("weight_matching", model, permuted_copy(model, planted)), invert_permutations(planted)
    units = sum(int((found[n] == expected[n]).sum()) for n in spec.names)
    heads = sum(
        torch.equal(run_permutation(found[n], size), run_permutation(expected[n], size))
        for n, (_, size) in spec.groups.items()
    )
    return units, sum(len(p) for p in expected.values()), heads, len(spec.groups)


def main() -> None:
    torch.manual_seed(0)
    networks = [
        ("torchvision resnet18", resnet18(num_classes=10), (3, 32, 32)),
        ("torchvision vgg11_bn", vgg11_bn(num_classes=10), (3, 32, 32)),
        ("vit-d2-w64-h4 (mnist1d)", build_model("vit", (1, 40), 10, 64, 2, 4), (1, 40)),
    ]
    for label, network, shape in networks:
        model = with_inferred_spec(network.eval(), torch.randn(2, *shape))
        spec = model.permutation_spec()
        units, total, heads, groups = recovery(model)
        print(f"{label}: {len(spec.names)} permutations, {dict(kinds(model, spec))}, {total} units")
        print(f"  weight matching puts back {units} of {total} planted units, {heads} of {groups} head-group members")


if __name__ == "__main__":
    main()
