"""Command line for the user's own networks: ``python -m lmcot align A B --arch resnet18 --out B_aligned.pt``.

``align`` loads two checkpoints of one architecture (:func:`lmcot.any_network.load_network`), aligns B to A with a
method of :data:`lmcot.align.methods.METHODS` (its default options) through the model's own ``permutation_spec()``
or the one inferred from its graph, checks that the permutation keeps B's outputs, and writes B's permuted state
dict (same keys, ``torch.save``) atomically.

``fuse`` loads two or more checkpoints the same way and fuses them into one network: by the Wasserstein
barycentre (:func:`lmcot.fusion.wasserstein_barycenter` with params.yaml's ``fuse.ot`` options, as the pipeline
fuses; lmcot model files at any ``--width``), or by aligning every network to the anchor and averaging the
weights (``--method average``). A BatchNorm network's statistics are recomputed on ``--inputs`` when given, as
the pipeline does. It writes a state dict (or, from lmcot model files, an lmcot model file) atomically.

``barrier`` loads two checkpoints the same way, optionally aligns B to A first (``--align``), and evaluates loss
and accuracy along the linear path from A to B (optionally corrected, ``--correction reset`` or ``repair``) on
the user's data (a tensor file of inputs and labels, or an image folder: :mod:`lmcot.user_data`) or on the train
and test splits of a data set (a prepared data set file, or an offline one built by name with params.yaml's
``prepare.<name>`` options); it prints each split's barriers and endpoint values (``--json``: and the curves)
and writes them as CSV with ``--out``. Its path options (the alphas, the train samples, the batch size, the
samples a correction measures) are params.yaml's ``barrier`` group, the samples the data methods see
``align.num_samples``.

A user's error ends any command with one line on stderr and exit status 1.
"""

from __future__ import annotations

import argparse
import sys


def numbers(kind, count: tuple[int, ...] = (), example: str = "3,32,32"):
    """An argparse type: ``kind`` values (positive for int) separated by commas, as many as ``count`` allows."""

    def parse(text: str):
        try:
            values = tuple(kind(part) for part in text.split(","))
        except ValueError:
            values = ()
        if not values or (count and len(values) not in count) or (kind is int and min(values) < 1):
            what = "positive integers" if kind is int else "numbers"
            raise argparse.ArgumentTypeError(f"{text!r}: give {what} separated by commas, e.g. {example}")
        return values

    return parse


input_shape = numbers(int)


def at_least(minimum: int):
    """An argparse type: an integer of at least ``minimum``."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"{text!r}: give an integer of at least {minimum}")
        return value

    return parse


def add_architecture(command: argparse.ArgumentParser, shape_default: str = "lmcot model files: their own") -> None:
    """The arguments that say how to build the networks: ``--arch``, ``--num-classes``, ``--input-shape`` (whose
    help ends with ``shape_default``)."""
    command.add_argument(
        "--arch", help="torchvision model name or 'package.module:function'; omit for lmcot model files"
    )
    command.add_argument("--num-classes", type=int, help="a torchvision model's classes (default: from the file)")
    command.add_argument("--input-shape", type=input_shape, help=f"one input's shape, e.g. 3,32,32 ({shape_default})")


def add_networks(command: argparse.ArgumentParser, shape_default: str = "lmcot model files: their own") -> None:
    """The arguments naming networks A and B: the files and :func:`add_architecture`'s."""
    command.add_argument("a", help="network A: a state dict file (with --arch) or an lmcot model file")
    command.add_argument("b", help="network B, the one permuted: same kind of file as A")
    add_architecture(command, shape_default)


FUSIONS = ("barycenter", "average")


def parser() -> argparse.ArgumentParser:
    from lmcot.align.methods import METHODS
    from lmcot.choices import NORM_CORRECTIONS

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

    fuse = commands.add_parser("fuse", help="fuse two or more networks of one architecture into one")
    fuse.add_argument(
        "networks", nargs="+", metavar="NETWORK", help="two or more state dict files (with --arch) or lmcot model files"
    )
    add_architecture(fuse)
    fuse.add_argument(
        "--method", default="barycenter", choices=FUSIONS,
        help="barycenter: the Wasserstein barycentre (params.yaml's fuse.ot); average: align every network to the "
        "anchor, then average the weights",
    )  # fmt: skip
    fuse.add_argument(
        "--align", choices=list(METHODS), help="--method average: the alignment method (default: weight_matching)"
    )
    fuse.add_argument(
        "--anchor", type=int, metavar="INDEX",
        help="index of a network (0: the first): average aligns the others to it; barycenter starts there "
        "(default: fuse.ot.start)",
    )  # fmt: skip
    fuse.add_argument(
        "--width", type=at_least(1), help="the fused network's width (lmcot model files, --method barycenter)"
    )
    fuse.add_argument(
        "--inputs",
        help="a torch.save'd tensor (samples, *input shape) of training inputs: for --align methods that need data, "
        "and to recompute a BatchNorm network's statistics",
    )
    fuse.add_argument("--out", required=True, help="where to write the fused state dict (or lmcot model file)")
    fuse.add_argument("--json", action="store_true", help="print the summary as JSON")

    barrier = commands.add_parser("barrier", help="loss and accuracy barriers on the linear path from A to B")
    add_networks(barrier, "default: the data's; lmcot model files: their own")
    barrier.add_argument(
        "--data", required=True,
        help="a torch.save'd file of inputs and labels, an image folder (root/<class>/<image>), a prepared data set "
        "file (data/prepared/<name>.safetensors) or mnist1d, digits",
    )  # fmt: skip
    barrier.add_argument("--labels", help="a torch.save'd integer tensor (N,) of labels, when --data holds inputs only")
    barrier.add_argument(
        "--image-size",
        type=numbers(int, (1, 2), "32 or 32,48"),
        help="image folder: resize every image to this size, a square (32) or height,width (32,48)",
    )
    barrier.add_argument("--mean", type=numbers(float, example="0.5,0.5,0.5"), help="image folder: channel means")
    barrier.add_argument("--std", type=numbers(float, example="0.25,0.25,0.25"), help="image folder: channel stds")
    barrier.add_argument("--grayscale", action="store_true", help="image folder: read one channel, not three")
    barrier.add_argument("--align", choices=list(METHODS), help="align B to A by this method first (default: none)")
    barrier.add_argument(
        "--correction", choices=list(NORM_CORRECTIONS),
        help="at every point: reset (recompute BatchNorm statistics) or repair (REPAIR), on the data's inputs",
    )  # fmt: skip
    barrier.add_argument(
        "--alphas",
        type=at_least(2),
        metavar="N",
        help="points evenly spaced from A to B (default: params.yaml's barrier.alphas)",
    )
    barrier.add_argument("--out", help="where to write the table as CSV")
    barrier.add_argument("--json", action="store_true", help="print the table and the curves as JSON")
    return main


def load_networks(args, paths) -> tuple[list, tuple[int, ...] | None]:
    """The networks at ``paths`` (eval mode, no spec yet), built as ``args`` says, and one input's shape:
    ``--input-shape``, else the first lmcot model file's own (None when neither gives it)."""
    from lmcot.any_network import load_network
    from lmcot.model_files import read_sidecar

    loaded = [load_network(path, args.arch, args.num_classes) for path in paths]
    shape = args.input_shape
    if shape is None and args.arch is None:
        shape = tuple(read_sidecar(paths[0]).get("config", {}).get("input_shape", ())) or None
    return loaded, shape


def needed_shape(shape):
    """``shape``, or a :class:`UserError` saying that ``--arch`` networks need ``--input-shape``."""
    from lmcot.errors import UserError

    if shape is None:
        raise UserError("--input-shape is needed with --arch (one input's shape, e.g. 3,32,32)")
    return shape


def example_inputs(inputs, shape):
    """The inputs the spec is inferred on and permutations are checked on: the first 64 of ``inputs``, else 8
    random ones of ``shape`` (seeded)."""
    import torch

    if inputs is not None:
        return inputs[:64]
    return torch.randn(8, *shape, generator=torch.Generator().manual_seed(0))


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


def moved_units(perms) -> tuple[int, int]:
    """How many units ``perms`` move, and how many units they act on."""
    import torch

    moved = sum(int((p != torch.arange(len(p))).sum()) for p in perms.values())
    return moved, sum(len(p) for p in perms.values())


def read_inputs(args, method: str | None, shape):
    """``--inputs`` read as a tensor ``(samples, *shape)`` (None when not given); a :class:`UserError` when alignment
    ``method`` needs data and none is given."""
    from lmcot.align.methods import METHODS
    from lmcot.any_network import read_tensor
    from lmcot.errors import UserError

    inputs = read_tensor(args.inputs, shape) if args.inputs is not None else None
    if method is not None and METHODS[method].needs_data and inputs is None:
        raise UserError(f"method {method!r} needs --inputs (a tensor file of training inputs)")
    return inputs


def align_command(args) -> str:
    """Run ``align``; returns the line it reports."""
    import torch

    from lmcot.align.methods import permuted_copy
    from lmcot.any_network import with_spec
    from lmcot.io import atomic_path

    loaded, shape = load_networks(args, [args.a, args.b])
    shape = needed_shape(shape)
    inputs = read_inputs(args, args.method, shape)
    check = example_inputs(inputs, shape)
    model_a, model_b = (with_spec(model, check) for model in loaded)
    perms, change = aligned_permutations(args.method, model_a, model_b, inputs, check)
    with atomic_path(args.out) as tmp:
        torch.save(permuted_copy(model_b, perms).state_dict(), tmp)
    moved, units = moved_units(perms)
    return (
        f"{args.out}: B aligned to A by {args.method}; {len(perms)} permutations, {moved} of {units} units moved; "
        f"largest output change {change:.2g}"
    )


# --- fuse -----------------------------------------------------------------------------------------------------

BUILD_KEYS = ("arch", "input_shape", "num_classes", "width", "depth", "heads")  # an lmcot model file's architecture


def check_fuse_options(args) -> None:
    """A :class:`UserError` naming the option when ``fuse``'s options do not go together (reads nothing)."""
    from pathlib import Path

    from lmcot.errors import UserError

    count = len(args.networks)
    if count < 2:
        raise UserError(f"give two or more networks to fuse, not {count}")
    if args.anchor is not None and not 0 <= args.anchor < count:
        raise UserError(f"--anchor {args.anchor}: give the index of one of the {count} networks, 0 to {count - 1}")
    if args.align is not None and args.method != "average":
        raise UserError(f"--align goes with --method average; --method {args.method} couples the networks itself")
    if args.width is not None and args.arch is not None:
        raise UserError(
            f"--width {args.width}: arch {args.arch!r} is built by a function that takes no width, so the fused "
            "network keeps the networks' widths; --width applies to lmcot model files, built at any width"
        )
    if args.width is not None and args.method == "average":
        raise UserError(
            f"--width {args.width}: --method average averages aligned units one to one and keeps the networks' "
            "width; give --method barycenter for another width"
        )
    lmcot_file = Path(args.out).suffix == ".safetensors"
    if args.arch is None and not lmcot_file:
        raise UserError(
            f"--out {args.out}: lmcot model files fuse into an lmcot model file; give a path ending in .safetensors "
            "(its .json sidecar is written beside it)"
        )
    if args.arch is not None and lmcot_file:
        raise UserError(
            f"--out {args.out}: .safetensors is for lmcot model files; give a state dict path, e.g. fused.pt"
        )


def architecture_of(args, models) -> dict | None:
    """The sidecar config of the first lmcot model file (None for ``--arch`` networks), once every network is
    checked to have the first's architecture: the same build keys, the same tensors of the same shapes."""
    from lmcot.errors import UserError
    from lmcot.model_files import read_sidecar

    first = args.networks[0]
    config = None
    if args.arch is None:
        configs = [read_sidecar(path).get("config", {}) for path in args.networks]
        config = configs[0]
        for path, other in zip(args.networks[1:], configs[1:], strict=True):
            for key in BUILD_KEYS:
                if other.get(key) != config.get(key):
                    raise UserError(
                        f"{path}: its {key} is {other.get(key)!r} but {first}'s is {config.get(key)!r}; fuse networks "
                        "of one architecture"
                    )
    reference = {k: list(v.shape) for k, v in models[0].state_dict().items()}
    for path, model in zip(args.networks[1:], models[1:], strict=True):
        state = {k: list(v.shape) for k, v in model.state_dict().items()}
        if state != reference:
            key = next(k for k in [*reference, *state] if reference.get(k) != state.get(k))
            found = f"its tensor {key} is {state[key]}" if key in state else f"it has no tensor {key}"
            theirs = f"{first}'s is {reference[key]}" if key in reference else f"{first} has none"
            raise UserError(f"{path}: {found} but {theirs}; fuse networks of one architecture and width")
    return config


def barycenter_fusion(args, models, config: dict | None):
    """The Wasserstein barycentre of ``models`` (params.yaml's ``fuse.ot`` options, ``--anchor``: its start) at the
    networks' width or ``--width`` (lmcot model files, ``config``); and its summary."""
    from copy import deepcopy

    from lmcot.align.methods import method_options
    from lmcot.errors import UserError
    from lmcot.fusion import wasserstein_barycenter
    from lmcot.models import build_model

    spec = models[0].permutation_spec()
    if spec.groups:
        raise UserError(
            f"--method barycenter couples units one at a time and may split an attention head "
            f"({', '.join(spec.head_groups())}); give --method average"
        )
    params = command_params()
    ot = method_options("barycenter", params)  # fuse.ot
    if args.anchor is not None:
        ot["start"] = args.anchor
    target = models[0]
    if config is not None and args.width is not None:
        shape, heads = config["input_shape"], config.get("heads")
        target = build_model(config["arch"], shape, config["num_classes"], args.width, config["depth"], heads)
    fusion = wasserstein_barycenter(models, target, **ot)
    fused = deepcopy(target)
    fused.load_state_dict(fusion.state)
    start = fusion.start
    if start != "mean":  # "model <i>"
        index = int(start.split()[-1])
        start = f"network {index} ({args.networks[index]})"
    return fused.eval(), {"start": start, "cost": fusion.cost, "ot": ot}


def aligned_average(args, models, method: str, inputs, check):
    """Every network aligned to the anchor (``--anchor``, default the first) by alignment ``method`` (each
    permutation checked to keep the network's outputs on ``check``), then their weights averaged; and its
    summary."""
    from lmcot.align.methods import permuted_copy
    from lmcot.fusion import vanilla_average

    anchor = args.anchor or 0
    aligned, moved, units = [], 0, 0
    for index, model in enumerate(models):
        if index != anchor:
            perms, _ = aligned_permutations(method, models[anchor], model, inputs, check)
            model = permuted_copy(model, perms)
            moved_here, units_here = moved_units(perms)
            moved, units = moved + moved_here, units + units_here
        aligned.append(model)
    summary = {"aligned_by": method, "anchor": f"network {anchor} ({args.networks[anchor]})"}
    return vanilla_average(aligned), summary | {"units_moved": moved, "units": units}


def fuse_command(args) -> str:
    """Run ``fuse``; returns the line (or, with ``--json``, the JSON) it reports."""
    import json

    import torch

    from lmcot.any_network import with_spec
    from lmcot.evaluation import batchnorm_layers, reset_batchnorm
    from lmcot.io import atomic_path
    from lmcot.model_files import save_model

    check_fuse_options(args)
    loaded, shape = load_networks(args, args.networks)
    shape = needed_shape(shape)
    config = architecture_of(args, loaded)
    method = (args.align or "weight_matching") if args.method == "average" else None  # the alignment, if any
    inputs = read_inputs(args, method, shape)
    check = example_inputs(inputs, shape)
    models = [with_spec(model, check) for model in loaded]
    if args.method == "barycenter":
        fused, details = barycenter_fusion(args, models, config)
    else:
        fused, details = aligned_average(args, models, method, inputs, check)
    batchnorm = None
    if batchnorm_layers(fused):  # the fused statistics describe none of the networks: recomputed, as the pipeline does
        batchnorm = "averaged (give --inputs to recompute them)"
        if inputs is not None:
            reset_batchnorm(fused, inputs)
            batchnorm = f"recomputed on {len(inputs)} inputs"
    width = None if config is None else args.width or config["width"]
    summary = {"out": args.out, "method": args.method, "networks": args.networks, "width": width}
    summary |= {"batchnorm_statistics": batchnorm, **details}
    if config is None:
        with atomic_path(args.out) as tmp:
            torch.save(fused.state_dict(), tmp)
    else:
        built = {key: config[key] for key in BUILD_KEYS if key in config} | {"width": width}
        save_model(fused, args.out, built | {"fusion": summary}, {})
    if args.json:
        return json.dumps(summary, indent=2)
    how = (
        f"the Wasserstein barycentre (start {details['start']}, cost {details['cost']:.4g})"
        if args.method == "barycenter"
        else f"averaging, each aligned to {details['anchor']} by {details['aligned_by']} "
        f"({details['units_moved']} of {details['units']} units moved)"
    )
    line = f"{args.out}: {len(models)} networks fused by {how}; {f'width {width}' if width else 'their widths kept'}"
    return line + (f"; BatchNorm statistics {batchnorm}" if batchnorm else "")


# --- barrier --------------------------------------------------------------------------------------------------


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


def check_data_options(args, kind: str) -> None:
    """A :class:`UserError` naming the option when an option of ``barrier`` does not apply to ``--data`` of
    :func:`lmcot.user_data.data_kind` ``kind`` (reads nothing)."""
    from lmcot.errors import UserError

    what = {"images": "an image folder", "tensors": "a tensor file", "dataset": "a data set"}[kind]
    image_options = {"--image-size": args.image_size, "--mean": args.mean, "--std": args.std}
    image_options["--grayscale"] = args.grayscale or None
    if args.labels is not None and kind != "tensors":
        raise UserError(f"--labels goes with a tensor file of inputs alone; --data {args.data} is {what}")
    for option, value in image_options.items():
        if value is not None and kind != "images":
            raise UserError(f"{option} goes with an image folder; --data {args.data} is {what}")


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
            outputs = network(data.inputs[:8]).shape[-1]
    except RuntimeError as error:  # the inputs do not fit the network's first layer
        first = str(error).splitlines()[0]
        raise UserError(
            f"network {args.a} cannot read the inputs of data set {args.data!r}, of shape {dims}: {first}"
        ) from None
    if outputs < data.num_classes:
        raise UserError(
            f"the networks have {outputs} outputs but data set {args.data!r} has {data.num_classes} classes"
        )


def curve_points(curves) -> list[dict]:
    """``curves`` (rows of :func:`lmcot.barrier.interpolation_curve`) as one record per split and alpha: the loss
    and the accuracy there."""
    points = {}
    for row in curves.itertuples():
        point = points.setdefault((row.split, row.alpha), {"split": row.split, "alpha": row.alpha})
        point.update({"loss": row.value} if row.metric == "loss" else {"accuracy": 1 - row.value})
    return list(points.values())


# What the commands read from params.yaml, for an installed lmcot, which has none: the project's values (a test
# checks they are); the barycentre's options default to fuse.ot's in its signature.
INSTALLED_PARAMS = {
    "align": {"num_samples": 4000},
    "barrier": {
        "alphas": [0.0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1.0],
        "batch_size": 4096,
        "train_samples": 2000,
        "norm_samples": 500,
    },
}


def command_params() -> dict:
    """The project's params.yaml where lmcot runs from its checkout, else :data:`INSTALLED_PARAMS`."""
    from lmcot.config import PROJECT_PARAMS, load_params

    return load_params(PROJECT_PARAMS) if PROJECT_PARAMS.is_file() else INSTALLED_PARAMS


def barrier_command(args) -> str:
    """Run ``barrier``; returns the table (or, with ``--json``, the JSON) it reports."""
    import copy
    import json

    import numpy as np
    import pandas as pd

    from lmcot.any_network import with_spec
    from lmcot.barrier import NonFinitePathError, interpolation_curve
    from lmcot.design import evaluation_grid
    from lmcot.errors import UserError
    from lmcot.evaluation import correction_refusal
    from lmcot.io import write_csv
    from lmcot.permutation import apply_permutations
    from lmcot.user_data import data_kind, labelled_data

    kind = data_kind(args.data)
    check_data_options(args, kind)
    params = command_params()
    if kind == "dataset" and "prepare" not in params:
        raise UserError(
            f"--data {args.data}: a data set by name needs the project's params.yaml (its prepare group), which an "
            "installed lmcot lacks; give a tensor file or an image folder"
        )
    loaded, shape = load_networks(args, [args.a, args.b])
    images = {"image_size": args.image_size, "mean": args.mean, "std": args.std, "grayscale": args.grayscale}
    data = labelled_data(args.data, kind, params, args.labels, **images)
    check_data_fits(args, loaded[0], shape, data)
    check = data.inputs[:64]
    model_a, model_b = (with_spec(model, check) for model in loaded)
    if args.correction is not None and (why := correction_refusal(model_a, args.correction)):
        raise UserError(f"--correction {args.correction}: {why}")
    state_b = model_b.state_dict()
    if args.align is not None:
        inputs = data.inputs[: params["align"]["num_samples"]]
        perms, _ = aligned_permutations(args.align, model_a, model_b, inputs, check)
        state_b = apply_permutations(model_b.permutation_spec(), perms, state_b)
    options = params["barrier"]
    alphas = evaluation_grid(options["alphas"] if args.alphas is None else np.linspace(0, 1, args.alphas))
    norm_inputs = data.inputs[: options["norm_samples"]]
    rows = interpolation_curve(
        copy.deepcopy(model_a), model_a.state_dict(), state_b, alphas, data.splits, options["batch_size"],
        args.correction, norm_inputs,
    )  # fmt: skip
    curves = pd.DataFrame(rows)
    if not np.isfinite(curves["value"]).all():
        bad = curves[~np.isfinite(curves["value"])].iloc[0]
        raise NonFinitePathError(
            f"the {bad['split']} {bad['metric']} is not finite at alpha = {bad['alpha']}: the networks are broken"
        )
    table = barrier_frame(curves)
    if args.out is not None:
        write_csv(args.out, table)
    if args.json:
        report = {"a": args.a, "b": args.b, "align": args.align, "correction": args.correction, "data": args.data}
        report |= {"alphas": alphas, "barriers": table.to_dict("records"), "curves": curve_points(curves)}
        return json.dumps(report, indent=2)
    path = f"B aligned to A by {args.align}" if args.align else "B as it is"
    path += f", {args.correction} at every point" if args.correction else ""
    heading = f"linear path from {args.a} to {args.b} ({path}), {len(alphas)} points, data {args.data}:"
    return "\n".join([heading, table.to_string(index=False, float_format="%.4f")])


COMMANDS = {"align": align_command, "fuse": fuse_command, "barrier": barrier_command}


def main(argv=None) -> None:
    from lmcot.errors import UserError

    args = parser().parse_args(argv)
    try:
        print(COMMANDS[args.command](args))
    except UserError as error:
        sys.exit(f"lmcot {args.command}: {error}")


if __name__ == "__main__":
    main()
