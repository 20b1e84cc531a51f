"""Command line for the user's own networks: ``python -m lmcot align A B --arch resnet18 --out B_aligned.pt``.

``align`` loads two checkpoints of one architecture (:func:`lmcot.any_network.load_network`), aligns B to A with a
method of :data:`lmcot.align.methods.METHODS` (its default options) through the model's own ``permutation_spec()``
or the one inferred from its graph, checks that the permutation keeps B's outputs, and writes B's permuted state
dict (same keys, ``torch.save``) atomically.

``barrier`` loads two checkpoints the same way, optionally aligns B to A first (``--align``), and evaluates loss
and accuracy along the linear path from A to B on the train and test splits of a data set (a prepared data set
file, or an offline one built by name with params.yaml's ``prepare.<name>`` options); it prints each split's
barriers and endpoint values and writes them as CSV with ``--out``. Its path options (the alphas, the train
samples, the batch size) are params.yaml's ``barrier`` group, the samples the data methods see ``align.num_samples``.

A user's error ends either with one line on stderr and exit status 1.
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


def add_networks(command: argparse.ArgumentParser, shape_default: str = "lmcot model files: their own") -> None:
    """The arguments naming networks A and B: the files, ``--arch``, ``--num-classes``, ``--input-shape`` (whose
    help ends with ``shape_default``)."""
    command.add_argument("a", help="network A: a state dict file (with --arch) or an lmcot model file")
    command.add_argument("b", help="network B, the one permuted: same kind of file as A")
    command.add_argument(
        "--arch", help="torchvision model name or 'package.module:function'; omit for lmcot model files"
    )
    command.add_argument("--num-classes", type=int, help="a torchvision model's classes (default: from the file)")
    command.add_argument("--input-shape", type=input_shape, help=f"one input's shape, e.g. 3,32,32 ({shape_default})")


def parser() -> argparse.ArgumentParser:
    from lmcot.align.methods import METHODS

    main = argparse.ArgumentParser(prog="python -m lmcot", description=__doc__.splitlines()[0])
    commands = main.add_subparsers(dest="command", required=True)
    align = commands.add_parser("align", help="align network B to network A and write B's permuted state dict")
    add_networks(align)
    align.add_argument("--method", default="weight_matching", choices=list(METHODS), help="alignment method")
    align.add_argument(
        "--inputs",
        help="a torch.save'd tensor (samples, *input shape) of training inputs, for the methods that need data",
    )
    align.add_argument("--out", required=True, help="where to write B's permuted state dict")
    barrier = commands.add_parser("barrier", help="loss and accuracy barriers on the linear path from A to B")
    add_networks(barrier, "default: the data's; lmcot model files: their own")
    barrier.add_argument(
        "--data", required=True, help="a prepared data set file (data/prepared/<name>.safetensors) or mnist1d, digits"
    )
    barrier.add_argument("--align", choices=list(METHODS), help="align B to A by this method first (default: none)")
    barrier.add_argument("--out", help="where to write the table as CSV")
    return main


def load_networks(args) -> tuple[list, tuple[int, ...] | None]:
    """Networks A and B of ``args`` (eval mode, no spec yet) and one input's shape: ``--input-shape``, else an
    lmcot model file's own (None when neither gives it)."""
    from lmcot.any_network import load_network
    from lmcot.model_files import read_sidecar

    loaded = [load_network(path, args.arch, args.num_classes) for path in (args.a, args.b)]
    shape = args.input_shape
    if shape is None and args.arch is None:
        shape = tuple(read_sidecar(args.a).get("config", {}).get("input_shape", ())) or None
    return loaded, shape


def aligned_permutations(method: str, model_a, model_b, inputs, check) -> tuple[dict, float]:
    """The permutations of B's units that ``method`` aligns to A (``inputs``: training samples, for the methods
    that need data), checked to keep B's outputs on ``check``; and the largest output change."""
    import torch

    from lmcot.align.methods import align, output_change

    perms = align(method, model_a, model_b, inputs)
    change = output_change(model_b, perms, check)
    with torch.no_grad():
        scale = model_b(check).abs().max().item()
    if not change <= 1e-4 * max(scale, 1.0):
        raise RuntimeError(f"the {method} permutation changed B's outputs by {change:.3g}: a bug")
    return perms, change


def align_command(args) -> str:
    """Run ``align``; returns the line it reports."""
    import torch

    from lmcot.align.methods import METHODS, permuted_copy
    from lmcot.any_network import read_tensor, with_spec
    from lmcot.errors import UserError
    from lmcot.io import atomic_path

    loaded, shape = load_networks(args)
    if shape is None:
        raise UserError("--input-shape is needed with --arch (one input's shape, e.g. 3,32,32)")
    inputs = read_tensor(args.inputs, shape) if args.inputs is not None else None
    if METHODS[args.method].needs_data and inputs is None:
        raise UserError(f"method {args.method!r} needs --inputs (a tensor file of training inputs)")
    check = inputs[:64] if inputs is not None else torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))
    model_a, model_b = (with_spec(model, check) for model in loaded)
    perms, change = aligned_permutations(args.method, model_a, model_b, inputs, check)
    with atomic_path(args.out) as tmp:
        torch.save(permuted_copy(model_b, perms).state_dict(), tmp)
    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
    units = sum(len(p) for p in perms.values())
    return (
        f"{args.out}: B aligned to A by {args.method}; {len(perms)} permutations, {moved} of {units} units moved; "
        f"largest output change {change:.2g}"
    )


def barrier_frame(curves):
    """One row per split of :func:`lmcot.barrier.interpolation_curve`'s ``curves`` (a table): the loss barrier
    (nats), the accuracy barrier (the error curve's barrier: the largest drop of accuracy below the line between
    the endpoints'), and the endpoints' losses and accuracies."""
    import pandas as pd

    from lmcot.barrier import barrier_table

    summary = barrier_table(curves, ["split", "metric"]).set_index(["split", "metric"])
    rows = []
    for split in dict.fromkeys(curves["split"]):
        loss, error = summary.loc[(split, "loss")], summary.loc[(split, "error")]
        rows.append(
            {
                "split": split,
                "loss_barrier": loss["barrier"],
                "accuracy_barrier": error["barrier"],
                "loss_a": loss["value_a"],
                "loss_b": loss["value_b"],
                "accuracy_a": 1 - error["value_a"],
                "accuracy_b": 1 - error["value_b"],
            }
        )
    return pd.DataFrame(rows)


def check_data_fits(args, network, shape, data) -> None:
    """A :class:`UserError` naming the value unless ``network`` (A) reads ``data``'s inputs and has an output per
    class: ``shape`` (``--input-shape`` or the model file's, or None) must be the data's input shape."""
    import torch

    from lmcot.errors import UserError

    dims = ",".join(map(str, data.input_shape))
    if shape is not None and tuple(shape) != data.input_shape:
        given = "--input-shape" if args.input_shape is not None else f"{args.a}'s input shape"
        raise UserError(
            f"{given} {','.join(map(str, shape))} does not match data set {args.data!r}, whose inputs are {dims}"
        )
    try:
        with torch.no_grad():
            outputs = network(data.x_train[:8]).shape[-1]
    except RuntimeError as error:  # the inputs do not fit the network's first layer
        first = str(error).splitlines()[0]
        raise UserError(
            f"network {args.a} cannot read the inputs of data set {args.data!r}, of shape {dims}: {first}"
        ) from None
    if outputs < data.num_classes:
        raise UserError(
            f"the networks have {outputs} outputs but data set {args.data!r} has {data.num_classes} classes"
        )


def barrier_command(args) -> str:
    """Run ``barrier``; returns the table it reports."""
    import copy

    import numpy as np
    import pandas as pd

    from lmcot.any_network import with_spec
    from lmcot.barrier import NonFinitePathError, interpolation_curve
    from lmcot.config import PROJECT_PARAMS, load_params
    from lmcot.data import dataset_source, open_dataset
    from lmcot.design import evaluation_grid
    from lmcot.io import write_csv
    from lmcot.permutation import apply_permutations

    source = dataset_source(args.data)
    params = load_params(PROJECT_PARAMS)
    loaded, shape = load_networks(args)
    data = open_dataset(source, params["prepare"])
    check_data_fits(args, loaded[0], shape, data)
    check = data.x_train[:64]
    model_a, model_b = (with_spec(model, check) for model in loaded)
    state_b = model_b.state_dict()
    if args.align is not None:
        inputs = data.x_train[: params["align"]["num_samples"]]
        perms, _ = aligned_permutations(args.align, model_a, model_b, inputs, check)
        state_b = apply_permutations(model_b.permutation_spec(), perms, state_b)
    options = params["barrier"]
    splits = {"train": tuple(t[: options["train_samples"]] for t in data.split("train")), "test": data.split("test")}
    alphas = evaluation_grid(options["alphas"])
    rows = interpolation_curve(
        copy.deepcopy(model_a), model_a.state_dict(), state_b, alphas, splits, options["batch_size"]
    )
    curves = pd.DataFrame(rows)
    if not np.isfinite(curves["value"]).all():
        bad = curves[~np.isfinite(curves["value"])].iloc[0]
        raise NonFinitePathError(
            f"the {bad['split']} {bad['metric']} is not finite at alpha = {bad['alpha']}: the networks are broken"
        )
    table = barrier_frame(curves)
    if args.out is not None:
        write_csv(args.out, table)
    path = f"B aligned to A by {args.align}" if args.align else "B as it is"
    heading = f"linear path from {args.a} to {args.b} ({path}), {len(alphas)} points, data {args.data}:"
    return "\n".join([heading, table.to_string(index=False, float_format="%.4f")])


COMMANDS = {"align": align_command, "barrier": barrier_command}


def main(argv=None) -> None:
    from lmcot.errors import UserError

    args = parser().parse_args(argv)
    try:
        print(COMMANDS[args.command](args))
    except UserError as error:
        sys.exit(f"lmcot {args.command}: {error}")


if __name__ == "__main__":
    main()
