"""Every classification model of torchvision through spec inference: ``python benchmarks/torchvision_zoo.py
[--out FILE.jsonl] [--only NAME ...] [--max-parameters N]`` builds each model of
``torchvision.models.list_models(module=torchvision.models)`` (random weights, 10 classes, BatchNorm statistics from
one batch), infers its permutation spec and, where it is accepted, checks that a random permutation keeps its
function (the largest change of the outputs over their largest entry; again in float64 where float32 gives over
1e-4, as random weights can blow activations up), plants one and times weight matching
and layer-by-layer matching (``naive_weight_matching``) putting it back. Each model's row is printed (and appended to
``--out`` as JSON) as soon as it is done, smallest models first; the README's table is :func:`markdown` of them.
All 80 models take hours on 2 cores; ``--max-parameters`` leaves the largest out of the weight matching."""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch
import torchvision

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from lmcot.align.methods import align, permuted_copy  # noqa: E402
from lmcot.any_network import with_inferred_spec  # noqa: E402
from lmcot.permutation import invert_permutations, random_permutations  # noqa: E402
from lmcot.spec_inference import SpecInferenceError  # noqa: E402


def input_size(name: str) -> int:
    """A small square input each family takes: ViTs and Swin/MaxViT's windows want 224, Inception's auxiliary
    classifier (run in training mode, for the BatchNorm statistics) its 299."""
    if any(family in name for family in ("vit", "swin", "maxvit")):
        return 224
    return 299 if "inception" in name else 64


def random_model(name: str, x: torch.Tensor) -> torch.nn.Module:
    """``name`` with its initial weights moved by noise (so that no two units are alike: zero-initialised layers
    would make any permutation a match) and BatchNorm statistics from ``x``; in eval mode."""
    torch.manual_seed(0)
    model = torchvision.models.get_model(name, weights=None, num_classes=10)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.05 * torch.randn_like(p))
        model.train()(x)
    return model.eval()


def row(name: str, max_parameters: float) -> dict:
    x = torch.randn(4, 3, input_size(name), input_size(name))
    model = random_model(name, x)
    result = {"model": name, "parameters": sum(p.numel() for p in model.parameters())}
    start = time.perf_counter()
    try:
        model = with_inferred_spec(model, x)
    except SpecInferenceError as refusal:
        return result | {"accepted": False, "reason": str(refusal)}
    spec = model.permutation_spec()
    result |= {"accepted": True, "inference_s": time.perf_counter() - start, "permutations": len(spec.names)}
    result |= {"head_groups": len(spec.head_groups()), "sectioned": len(spec.sections)}
    state = model.state_dict()
    planted = random_permutations(spec, state, torch.Generator().manual_seed(1))
    moved = permuted_copy(model, planted)
    with torch.no_grad():
        out = model(x)
        result["relative_change"] = ((moved(x) - out).abs().max() / out.abs().max()).item()
        if result["relative_change"] > 1e-4:  # random weights can blow activations up: float32 rounding, or a bug?
            out = model.double()(x.double())
            change = (moved.double()(x.double()) - out).abs().max() / out.abs().max()
            result["relative_change_float64"] = change.item()
            model.float(), moved.float()
    if result["parameters"] > max_parameters:
        return result
    expected = invert_permutations(planted)
    result["units"] = sum(len(p) for p in expected.values())
    for method in ("weight_matching", "naive_weight_matching"):  # all at once; layer by layer from the input
        start = time.perf_counter()
        found = align(method, model, moved)
        result[f"{method}_s"] = time.perf_counter() - start
        result[f"{method}_recovered"] = sum(int((found[n] == expected[n]).sum()) for n in spec.names)
    return result


def markdown(rows: list[dict]) -> str:
    """The README's table: one line per model, accepted ones first."""
    lines = [
        "| model | parameters | permutations (head groups, sectioned tensors) | output change | planted units put "
        "back: weight matching (time) | layer by layer (time) |",
        "|---|---:|---|---:|---:|---:|",
    ]
    for r in sorted(rows, key=lambda r: (not r["accepted"], r["model"])):
        millions = f"{r['parameters'] / 1e6:.1f} M"
        if not r["accepted"]:
            reason = r["reason"].removeprefix("cannot infer the permutation spec at ").split(". Write")[0]
            lines.append(f"| {r['model']} | {millions} | refused: {reason} | | | |")
            continue
        structure = f"{r['permutations']} ({r['head_groups']}, {r['sectioned']})"
        found = [
            f"{r[f'{m}_recovered']} / {r['units']} ({r[f'{m}_s']:.1f} s)" if "units" in r else "not run"
            for m in ("weight_matching", "naive_weight_matching")
        ]
        change = f"{r['relative_change']:.0e}"
        if "relative_change_float64" in r:
            change = f"{change}; {r['relative_change_float64']:.0e} in float64"
        lines.append(f"| {r['model']} | {millions} | {structure} | {change} | {' | '.join(found)} |")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, help="append each model's row as a JSON line; rows there are skipped")
    parser.add_argument("--only", nargs="*", help="these models only")
    parser.add_argument("--max-parameters", type=float, default=float("inf"), help="no weight matching above")
    parser.add_argument("--table", action="store_true", help="print the markdown table of --out's rows and stop")
    args = parser.parse_args(argv)
    done = [json.loads(line) for line in args.out.read_text().splitlines()] if args.out and args.out.exists() else []
    if args.table:
        print(markdown(done))
        return
    names = args.only or torchvision.models.list_models(module=torchvision.models)
    sizes = {n: sum(p.numel() for p in torchvision.models.get_model(n, weights=None).parameters()) for n in names}
    for name in sorted(set(names) - {r["model"] for r in done}, key=sizes.get):
        result = row(name, args.max_parameters)
        print(json.dumps(result), flush=True)
        if args.out:
            with args.out.open("a") as out:
                out.write(json.dumps(result) + "\n")
    print(markdown(done + []))


if __name__ == "__main__":
    main()
