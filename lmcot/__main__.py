"""Command line for the user's own networks: ``python -m lmcot align A B --arch resnet18 --out B_aligned.pt``.

``align`` loads two checkpoints of one architecture (:func:`lmcot.any_network.load_network`), aligns B to A with a
method of :data:`lmcot.align.methods.METHODS` (its default options) through the model's own ``permutation_spec()``
or the one inferred from its graph, checks that the permutation keeps B's outputs, and writes B's permuted state
dict (same keys, ``torch.save``) atomically. A user's error ends it with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys


def input_shape(text: str) -> tuple[int, ...]:
    try:
        shape = tuple(int(part) for part in text.split(","))
    except ValueError:
        shape = ()
    if not shape or min(shape) < 1:
        raise argparse.ArgumentTypeError(f"{text!r}: give positive integers separated by commas, e.g. 3,32,32")
    return shape


def parser() -> argparse.ArgumentParser:
    from lmcot.align.methods import METHODS

    main = argparse.ArgumentParser(prog="python -m lmcot", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    align = commands.add_parser("align", help="align network B to network A and write B's permuted state dict")
    align.add_argument("a", help="network A: a state dict file (with --arch) or an lmcot model file")
    align.add_argument("b", help="network B, the one permuted: same kind of file as A")
    align.add_argument("--arch", help="torchvision model name or 'package.module:function'; omit for lmcot model files")
    align.add_argument("--num-classes", type=int, help="a torchvision model's classes (default: from the file)")
    align.add_argument("--method", default="weight_matching", choices=list(METHODS), help="alignment method")
    align.add_argument(
        "--input-shape", type=input_shape, help="one input's shape, e.g. 3,32,32 (lmcot model files: their own)"
    )
    align.add_argument(
        "--inputs",
        help="a torch.save'd tensor (samples, *input shape) of training inputs, for the methods that need data",
    )
    align.add_argument("--out", required=True, help="where to write B's permuted state dict")
    return main


def align_command(args) -> str:
    """Run ``align``; returns the line it reports."""
    import torch

    from lmcot.align.methods import METHODS, align, output_change, permuted_copy
    from lmcot.any_network import load_network, read_tensor, with_spec
    from lmcot.errors import UserError
    from lmcot.io import atomic_path
    from lmcot.model_files import read_sidecar

    loaded = [load_network(path, args.arch, args.num_classes) for path in (args.a, args.b)]
    shape = args.input_shape
    if shape is None and args.arch is None:
        shape = tuple(read_sidecar(args.a).get("config", {}).get("input_shape", ())) or None
    if shape is None:
        raise UserError("--input-shape is needed with --arch (one input's shape, e.g. 3,32,32)")
    inputs = read_tensor(args.inputs, shape) if args.inputs is not None else None
    if METHODS[args.method].needs_data and inputs is None:
        raise UserError(f"method {args.method!r} needs --inputs (a tensor file of training inputs)")
    check = inputs[:64] if inputs is not None else torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    model_a, model_b = (with_spec(model, check) for model in loaded)
    if METHODS[args.method].needs_data and not hasattr(model_a, "hidden_activations"):
        free = ", ".join(name for name, record in METHODS.items() if not record.needs_data)
        raise UserError(
            f"method {args.method!r} reads the activations of each permutation's units, which only lmcot's own "
            f"architectures provide; for this model use a method without data: {free}"
        )
    perms = align(args.method, model_a, model_b, inputs)
    change = output_change(model_b, perms, check)
    with torch.no_grad():
        scale = model_b(check).abs().max().item()
    if not change <= 1e-4 * max(scale, 1.0):
        raise RuntimeError(f"the {args.method} permutation changed B's outputs by {change:.3g}: a bug")
    with atomic_path(args.out) as tmp:
        torch.save(permuted_copy(model_b, perms).state_dict(), tmp)
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
    units = sum(len(p) for p in perms.values())
    return (
        f"{args.out}: B aligned to A by {args.method}; {len(perms)} permutations, {moved} of {units} units moved; "
        f"largest output change {change:.2g}"
    )


def main(argv=None) -> None:
    from lmcot.errors import UserError

    args = parser().parse_args(argv)
    try:
        print(align_command(args))
    except UserError as error:
        sys.exit(f"lmcot {args.command}: {error}")


if __name__ == "__main__":
    main()
