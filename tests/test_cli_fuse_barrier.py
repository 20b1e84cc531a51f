"""``python -m lmcot fuse`` and ``python -m lmcot barrier`` on the user's own checkpoints and data.

fuse: a network fused with copies of itself is that network (barycentre and aligned average); the aligned average of
a network and a permuted copy of it is the network; lmcot model files fuse at another width into what
:func:`lmcot.fusion.wasserstein_barycenter` gives; BatchNorm statistics are recomputed on ``--inputs``. barrier:
on a tensor file (three layouts) or an image folder, the path from a network to itself is flat, and the command
reports what :func:`lmcot.barrier.interpolation_curve` and :func:`lmcot.barrier.barrier_summary` give, with an
alignment or a correction too. Every bad input ends with one line naming the file or option.
"""

import copy
import json
import re

import numpy as np
import pytest
import torch
from cli_networks import seeded, tiny_bn_cnn, tiny_mlp

from lmcot.__main__ import main
from lmcot.align.methods import align, method_options, permuted_copy
from lmcot.any_network import load_network, with_inferred_spec
from lmcot.barrier import barrier_summary, interpolation_curve
from lmcot.config import PROJECT_PARAMS, load_params
from lmcot.design import evaluation_grid
from lmcot.evaluation import reset_batchnorm
from lmcot.fusion import wasserstein_barycenter
from lmcot.model_files import read_sidecar, save_model
from lmcot.models import build_model
from lmcot.permutation import apply_permutations, random_permutations
from lmcot.user_data import read_image_folder

MLP = ["--arch", "cli_networks:tiny_mlp", "--input-shape", "3,4"]
CNN = ["--arch", "cli_networks:tiny_bn_cnn", "--input-shape", "3,8,8"]


def saved(model, path) -> str:
    torch.save(model.state_dict(), path)
    return str(path)


def run(capsys, *argv) -> str:
    """What ``main(argv)`` prints."""
    main([str(a) for a in argv])
    return capsys.readouterr().out


def same_state(a: dict, b: dict, atol: float = 0.0) -> bool:
    return a.keys() == b.keys() and all(torch.allclose(a[k].double(), b[k].double(), atol=atol, rtol=0) for k in a)


# --- fuse ---------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("method", ["barycenter", "average"])
def test_a_network_fused_with_copies_of_itself_is_that_network(tmp_path, capsys, method):
    model = seeded(tiny_mlp, 0)
    path = saved(model, tmp_path / "a.pt")
    out = tmp_path / "out" / "fused.pt"
    printed = run(capsys, "fuse", path, path, path, *MLP, "--method", method, "--out", out)
    fused = load_network(out, "cli_networks:tiny_mlp")
    assert same_state(fused.state_dict(), model.state_dict(), atol=1e-6)
    assert [p.name for p in out.parent.iterdir()] == ["fused.pt"]  # written atomically: no temporary left
    how = "the Wasserstein barycentre (start " if method == "barycenter" else "averaging, each aligned to network 0"
    assert printed.startswith(f"{out}: 3 networks fused by {how}") and printed.count("\n") == 1


def test_the_average_of_a_network_and_its_permuted_copy_is_the_network(tmp_path, capsys):
    x = torch.randn(16, 3, 4, generator=torch.Generator().manual_seed(1))
    model = with_inferred_spec(seeded(tiny_mlp, 1), x)
    planted = random_permutations(model.permutation_spec(), model.state_dict(), torch.Generator().manual_seed(2))
    permuted = permuted_copy(model, planted)
    assert not same_state(permuted.state_dict(), model.state_dict(), atol=1e-3)
    paths = [saved(model, tmp_path / "a.pt"), saved(permuted, tmp_path / "b.pt")]
    # B first, aligned to A (--anchor 1): the average is A's state dict
    printed = run(capsys, "fuse", paths[1], paths[0], *MLP, "--method", "average", "--anchor", 1, "--json", "--out",
                  tmp_path / "avg.pt")  # fmt: skip
    summary = json.loads(printed)
    assert summary["method"] == "average" and summary["anchor"] == f"network 1 ({paths[0]})"
    assert summary["aligned_by"] == "weight_matching" and summary["units_moved"] > 0 and summary["units"] == 24
    assert summary["width"] is None and summary["batchnorm_statistics"] is None
    averaged = torch.load(tmp_path / "avg.pt", weights_only=True)
    assert same_state(averaged, model.state_dict(), atol=1e-6)
    # the barycentre finds the same matching: a network that computes A's function
    run(capsys, "fuse", *paths, *MLP, "--out", tmp_path / "bary.pt")
    fused = load_network(tmp_path / "bary.pt", "cli_networks:tiny_mlp")
    with torch.no_grad():
        assert torch.allclose(fused(x), model(x), atol=1e-5)


def lmcot_files(tmp_path, widths=(6, 6), depth=2) -> list[str]:
    """lmcot model files of MLPs on 1x8x8 inputs, 10 classes, one per width of ``widths`` (seeds 0, 1, ...)."""
    paths = []
    for seed, width in enumerate(widths):
        torch.manual_seed(seed)
        model = build_model("mlp", (1, 8, 8), 10, width, depth)
        config = {"arch": "mlp", "input_shape": [1, 8, 8], "num_classes": 10, "width": width, "depth": depth}
        save_model(model, tmp_path / f"m{seed}.safetensors", config, {})
        paths.append(str(tmp_path / f"m{seed}.safetensors"))
    return paths


def test_lmcot_model_files_fuse_at_another_width(tmp_path, capsys):
    """``--width 9`` from two width-6 MLPs: an lmcot model file of width 9 holding what wasserstein_barycenter
    gives with params.yaml's fuse.ot options."""
    paths = lmcot_files(tmp_path)
    out = tmp_path / "fused.safetensors"
    printed = run(capsys, "fuse", *paths, "--width", 9, "--out", out)
    assert printed.startswith(f"{out}: 2 networks fused by the Wasserstein barycentre (start ")
    assert printed.rstrip().endswith("; width 9")
    fused = load_network(out)  # an lmcot model file, its sidecar beside it
    config = read_sidecar(out)["config"]
    assert config["width"] == 9 and config["fusion"]["networks"] == paths and config["fusion"]["method"] == "barycenter"
    ot = method_options("barycenter", load_params(PROJECT_PARAMS))
    assert config["fusion"]["ot"] == ot
    models = [load_network(p) for p in paths]
    direct = wasserstein_barycenter(models, build_model("mlp", (1, 8, 8), 10, 9, 2), **ot)
    assert same_state(fused.state_dict(), direct.state, atol=0.0)
    assert fused.state_dict()["layers.0.weight"].shape == (9, 64)


def test_batchnorm_statistics_are_recomputed_on_the_inputs(tmp_path, capsys):
    x = torch.randn(32, 3, 8, 8, generator=torch.Generator().manual_seed(3))
    torch.save(x, tmp_path / "x.pt")
    models = [with_inferred_spec(seeded(tiny_bn_cnn, seed), x[:4]) for seed in (4, 5)]
    paths = [saved(m, tmp_path / f"m{i}.pt") for i, m in enumerate(models)]
    common = ["fuse", *paths, *CNN, "--method", "average"]
    averaged_line = run(capsys, *common, "--out", tmp_path / "plain.pt")
    assert averaged_line.rstrip().endswith("; BatchNorm statistics averaged (give --inputs to recompute them)")
    recomputed_line = run(capsys, *common, "--inputs", tmp_path / "x.pt", "--out", tmp_path / "reset.pt")
    assert recomputed_line.rstrip().endswith("; BatchNorm statistics recomputed on 32 inputs")
    expected = load_network(tmp_path / "plain.pt", "cli_networks:tiny_bn_cnn")
    reset_batchnorm(expected, x)
    written = torch.load(tmp_path / "reset.pt", weights_only=True)
    assert same_state(written, expected.state_dict(), atol=1e-6)
    assert not same_state(written, torch.load(tmp_path / "plain.pt", weights_only=True), atol=1e-3)


def one_line_error(argv, pattern: str) -> None:
    with pytest.raises(SystemExit) as ended:
        main([str(a) for a in argv])
    message = str(ended.value.code)
    assert "\n" not in message and re.match(pattern, message), (pattern, message)


def test_fuse_errors_are_one_line_naming_the_option_or_file(tmp_path):
    from torchvision.models import resnet18

    a = saved(seeded(tiny_mlp, 0), tmp_path / "a.pt")
    classes = [saved(resnet18(num_classes=n), tmp_path / f"resnet{n}.pt") for n in (10, 5)]
    lmcot_paths = lmcot_files(tmp_path)
    (tmp_path / "deep").mkdir()
    (tmp_path / "wider").mkdir()
    deeper = lmcot_files(tmp_path / "deep", (6,), depth=3)[0]
    widths = lmcot_files(tmp_path / "wider", (6, 7))
    torch.save(torch.randn(4, 3, 4), tmp_path / "x.pt")
    out = tmp_path / "out.pt"
    cases = [
        (["fuse", a, *MLP], r"lmcot fuse: give two or more networks to fuse, not 1$"),
        (["fuse", a, a, *MLP, "--anchor", 2],
         r"lmcot fuse: --anchor 2: give the index of one of the 2 networks, 0 to 1$"),
        (["fuse", a, a, *MLP, "--width", 8],
         r"lmcot fuse: --width 8: arch 'cli_networks:tiny_mlp' is built by a function that takes no width, so the "
         r"fused network keeps the networks' widths"),
        (["fuse", *lmcot_paths, "--method", "average", "--width", 8, "--out", tmp_path / "f.safetensors"],
         r"lmcot fuse: --width 8: --method average averages aligned units one to one"),
        (["fuse", a, a, *MLP, "--align", "weight_matching"], r"lmcot fuse: --align goes with --method average; "),
        (["fuse", *lmcot_paths], r"lmcot fuse: --out \S+out\.pt: lmcot model files fuse into an lmcot model file; "),
        (["fuse", a, a, *MLP, "--out", tmp_path / "f.safetensors"],
         r"lmcot fuse: --out \S+f\.safetensors: \.safetensors is for lmcot model files"),
        (["fuse", *classes, "--arch", "resnet18", "--input-shape", "3,32,32"],
         r"lmcot fuse: \S+resnet5\.pt: its tensor fc\.weight is \[5, 512\] but \S+resnet10\.pt's is "
         r"\[10, 512\]; fuse networks of one architecture and width$"),
        (["fuse", *widths, "--out", tmp_path / "f.safetensors"],
         r"lmcot fuse: \S+m1\.safetensors: its width is 7 but \S+m0\.safetensors's is 6; fuse networks of one"),
        (["fuse", lmcot_paths[0], deeper, "--out", tmp_path / "f.safetensors"],
         r"lmcot fuse: \S+m0\.safetensors: its depth is 3 but \S+m0\.safetensors's is 2; fuse networks of one"),
        (["fuse", a, a, *MLP, "--method", "average", "--align", "activation_matching"],
         r"lmcot fuse: method 'activation_matching' needs --inputs"),
        (["fuse", a, a, "--arch", "cli_networks:tiny_mlp"], r"lmcot fuse: --input-shape is needed with --arch"),
        (["fuse", a, tmp_path / "nope.pt", *MLP], r"lmcot fuse: \S+nope\.pt: no such file"),
        (["fuse", a, a, *MLP, "--inputs", tmp_path / "a.pt"],
         r"lmcot fuse: \S+a\.pt: holds OrderedDict, not a tensor of"),
    ]  # fmt: skip
    for argv, pattern in cases:
        one_line_error(argv if "--out" in argv else [*argv, "--out", out], pattern)
    assert not out.exists() and not (tmp_path / "f.safetensors").exists()


def test_the_barycentre_refuses_attention_heads(tmp_path):
    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("vit", (1, 8, 8), 10, 8, 1, 2)
        config = {"arch": "vit", "input_shape": [1, 8, 8], "num_classes": 10, "width": 8, "depth": 1, "heads": 2}
        save_model(model, tmp_path / f"v{seed}.safetensors", config, {})
        paths.append(tmp_path / f"v{seed}.safetensors")
    one_line_error(["fuse", *paths, "--out", tmp_path / "f.safetensors"],
                   r"lmcot fuse: --method barycenter couples units one at a time and may split an attention head "
                   r"\(.*\); give --method average$")  # fmt: skip
    main([str(p) for p in ["fuse", *paths, "--method", "average", "--out", tmp_path / "f.safetensors"]])
    assert load_network(tmp_path / "f.safetensors").permutation_spec().groups


# --- barrier ------------------------------------------------------------------------------------------------------


def labelled(n: int = 24, seed: int = 6) -> tuple[torch.Tensor, torch.Tensor]:
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 4, generator=generator), torch.randint(0, 3, (n,), generator=generator)


def tensor_file(tmp_path, layout: str) -> list[str]:
    """``--data`` (and ``--labels``) for :func:`labelled`'s samples saved in ``layout``."""
    x, y = labelled()
    if layout == "dict":
        torch.save({"inputs": x, "labels": y}, tmp_path / "data.pt")
    elif layout == "tuple":
        torch.save((x, y), tmp_path / "data.pt")
    else:
        torch.save(x, tmp_path / "data.pt")
        torch.save(y.int(), tmp_path / "labels.pt")
        return ["--data", str(tmp_path / "data.pt"), "--labels", str(tmp_path / "labels.pt")]
    return ["--data", str(tmp_path / "data.pt")]


@pytest.mark.parametrize("layout", ["dict", "tuple", "labels"])
def test_the_path_from_a_network_to_itself_is_flat_on_a_tensor_file(tmp_path, capsys, layout):
    a = saved(seeded(tiny_mlp, 0), tmp_path / "a.pt")
    printed = run(capsys, "barrier", a, a, *MLP, *tensor_file(tmp_path, layout), "--out", tmp_path / "t.csv")
    lines = printed.splitlines()
    assert lines[0] == f"linear path from {a} to {a} (B as it is), 11 points, data {tmp_path / 'data.pt'}:"
    assert [line.split()[0] for line in lines[2:]] == ["data"]  # one split: the file's samples
    report = json.loads(run(capsys, "barrier", a, a, *MLP, *tensor_file(tmp_path, layout), "--json"))
    (row,) = report["barriers"]
    assert abs(row["loss_barrier"]) <= 1e-12 and abs(row["accuracy_barrier"]) <= 1e-12
    assert row["loss_a"] == row["loss_b"] and len(report["curves"]) == 11


def direct_barriers(model_a, state_b, splits, alphas, correction=None, norm_inputs=None) -> tuple[dict, list]:
    """What lmcot.barrier gives for the path from ``model_a`` to ``state_b``: per split the loss and accuracy
    barriers, and the rows of the curve."""
    rows = interpolation_curve(copy.deepcopy(model_a), model_a.state_dict(), state_b, alphas, splits, 4096,
                               correction, norm_inputs)  # fmt: skip
    barriers = {}
    for split in splits:
        curve = {m: [r["value"] for r in rows if r["split"] == split and r["metric"] == m] for m in ("loss", "error")}
        barriers[split] = [barrier_summary(alphas, curve[m])["barrier"] for m in ("loss", "error")]
    return barriers, rows


def reported(report) -> dict:
    """Per split, the loss and accuracy barriers of a ``--json`` report."""
    return {r["split"]: [r["loss_barrier"], r["accuracy_barrier"]] for r in report["barriers"]}


def confident(model):
    """``model`` with its classifier's weights scaled up: confident predictions, so that a path has a loss barrier."""
    with torch.no_grad():
        model[-1].weight.mul_(20)
    return model


def test_the_barrier_command_reports_what_lmcot_barrier_gives(tmp_path, capsys):
    """A, and B a permuted copy of A with noise; labels A's predictions. With B as it is (a loss barrier) and aligned
    to A by weight matching, on 5 points: the barriers and curves that interpolation_curve and barrier_summary give
    called directly."""
    x, _ = labelled()
    model_a = with_inferred_spec(confident(seeded(tiny_mlp, 7)), x[:4])
    planted = random_permutations(model_a.permutation_spec(), model_a.state_dict(), torch.Generator().manual_seed(8))
    model_b = permuted_copy(model_a, planted)
    with torch.no_grad():
        for tensor in model_b.parameters():
            tensor.add_(0.1 * torch.randn(tensor.shape, generator=torch.Generator().manual_seed(9)))
        y = model_a(x).argmax(1)
    torch.save({"inputs": x, "labels": y}, tmp_path / "data.pt")
    paths = [saved(model_a, tmp_path / "a.pt"), saved(model_b, tmp_path / "b.pt")]
    command = ["barrier", *paths, *MLP, "--data", tmp_path / "data.pt", "--alphas", 5, "--json"]
    alphas = evaluation_grid(np.linspace(0, 1, 5))
    loss_barriers = []
    for method in (None, "weight_matching"):
        report = json.loads(run(capsys, *command, *(["--align", method] if method else [])))
        state_b = model_b.state_dict()
        if method:
            perms = align(method, model_a, model_b)
            state_b = apply_permutations(model_b.permutation_spec(), perms, state_b)
        barriers, rows = direct_barriers(model_a, state_b, {"data": (x, y)}, alphas)
        assert report["alphas"] == alphas == [0.0, 0.25, 0.5, 0.75, 1.0] and report["align"] == method
        assert reported(report).keys() == {"data"}
        assert reported(report)["data"] == pytest.approx(barriers["data"], abs=1e-12)
        losses = [r["value"] for r in rows if r["metric"] == "loss"]
        assert [p["loss"] for p in report["curves"]] == pytest.approx(losses, abs=1e-12)
        loss_barriers.append(barriers["data"][0])
    assert loss_barriers[0] > 0.1 and abs(loss_barriers[1]) < loss_barriers[0] / 10, loss_barriers


def image_folder(root, sizes=((10, 10),) * 6) -> None:
    """PNGs of random colours in ``root/cat`` and ``root/dog`` (alternately), one per size of ``sizes``."""
    from PIL import Image

    generator = np.random.default_rng(9)
    for i, (height, width) in enumerate(sizes):
        folder = root / ("cat", "dog")[i % 2]
        folder.mkdir(parents=True, exist_ok=True)
        pixels = generator.integers(0, 256, (height, width, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(folder / f"{i}.png")


def test_an_image_folder_is_read_resized_and_normalised(tmp_path):
    from PIL import Image

    image_folder(tmp_path / "images", [(10, 10), (12, 9), (10, 10), (8, 8)])
    x, y, classes = read_image_folder(tmp_path / "images", (8,), (0.5,), (0.25,))  # one size: a square
    assert classes == ["cat", "dog"] and y.tolist() == [0, 0, 1, 1] and x.shape == (4, 3, 8, 8)
    files = sorted((tmp_path / "images" / "cat").glob("*.png")) + sorted((tmp_path / "images" / "dog").glob("*.png"))
    for image, file in zip(x, files, strict=True):
        pixels = np.asarray(Image.open(file).convert("RGB").resize((8, 8), Image.BILINEAR), dtype=np.float32) / 255
        assert torch.allclose(image, (torch.from_numpy(pixels).permute(2, 0, 1) - 0.5) / 0.25, atol=1e-6)
    grey, _, _ = read_image_folder(tmp_path / "images", (8, 8), grayscale=True)
    assert grey.shape == (4, 1, 8, 8) and 0 <= grey.min() and grey.max() <= 1


@pytest.mark.parametrize("correction", [None, "reset", "repair"])
def test_the_barrier_command_on_an_image_folder(tmp_path, capsys, correction):
    """A BatchNorm network and another on an image folder, as it is or corrected at every point: what
    interpolation_curve gives on the images (the corrections measure on them too)."""
    image_folder(tmp_path / "images")
    x, y, _ = read_image_folder(tmp_path / "images", (8, 8), (0.5, 0.5, 0.5), (0.25, 0.25, 0.25))
    model_a, model_b = (with_inferred_spec(confident(seeded(tiny_bn_cnn, seed)), x[:4]) for seed in (10, 11))
    paths = [saved(model_a, tmp_path / "a.pt"), saved(model_b, tmp_path / "b.pt")]
    options = ["--data", tmp_path / "images", "--image-size", 8, "--mean", "0.5,0.5,0.5", "--std", "0.25"]
    fix = ["--correction", correction] if correction else []
    report = json.loads(run(capsys, "barrier", *paths, *CNN, *options, *fix, "--json"))
    alphas = evaluation_grid(load_params(PROJECT_PARAMS)["barrier"]["alphas"])
    barriers, _ = direct_barriers(model_a, model_b.state_dict(), {"data": (x, y)}, alphas, correction, x)
    assert report["correction"] == correction and reported(report).keys() == {"data"}
    assert reported(report)["data"] == pytest.approx(barriers["data"], abs=1e-12)
    if correction:
        printed = run(capsys, "barrier", *paths, *CNN, *options, *fix)
        assert f"(B as it is, {correction} at every point), 11 points, data " in printed.splitlines()[0]


def test_barrier_errors_on_the_users_data_are_one_line(tmp_path):
    a = saved(seeded(tiny_mlp, 0), tmp_path / "a.pt")
    x, y = labelled()
    files = {
        "dict.pt": {"inputs": x, "labels": y},
        "inputs.pt": x,
        "short.pt": y[:5],
        "floats.pt": y.float(),
        "negative.pt": {"inputs": x, "labels": y - 1},
        "ints.pt": {"inputs": x.long(), "labels": y},
        "keys.pt": {"x": x, "y": y},
    }
    for name, value in files.items():
        torch.save(value, tmp_path / name)
    (tmp_path / "junk.pt").write_bytes(b"not a tensor file")
    image_folder(tmp_path / "sizes", [(10, 10), (12, 9)])
    (tmp_path / "empty").mkdir()
    image_folder(tmp_path / "images")
    net = ["barrier", a, a, *MLP]
    cases = [
        (["--data", tmp_path / "dict.pt", "--labels", tmp_path / "inputs.pt"],
         r"lmcot barrier: --labels \S+inputs\.pt: \S+dict\.pt holds its own labels; give --labels only with inputs"),
        (["--data", tmp_path / "inputs.pt"], r"lmcot barrier: \S+inputs\.pt: holds inputs only \(a float32 tensor of "
         r"shape \[24, 3, 4\]\); give their labels with --labels FILE$"),
        (["--data", tmp_path / "inputs.pt", "--labels", tmp_path / "short.pt"],
         r"lmcot barrier: \S+short\.pt: its labels are a int64 tensor of shape \[5\]; give an integer tensor \(24,\)"),
        (["--data", tmp_path / "inputs.pt", "--labels", tmp_path / "floats.pt"],
         r"lmcot barrier: \S+floats\.pt: its labels are a float32 tensor"),
        (["--data", tmp_path / "inputs.pt", "--labels", tmp_path / "nope.pt"],
         r"lmcot barrier: \S+nope\.pt: no such file; give a torch.save'd integer tensor of labels"),
        (["--data", tmp_path / "negative.pt"], r"lmcot barrier: \S+negative\.pt: a label is -1; class indices start"),
        (["--data", tmp_path / "ints.pt"], r"lmcot barrier: \S+ints\.pt: its inputs are a int64 tensor of shape "
         r"\[24, 3, 4\]; give a float tensor"),
        (["--data", tmp_path / "keys.pt"], r"lmcot barrier: \S+keys\.pt: holds a dict with keys 'x', 'y'; give a "
         r"torch.save'd dict \{'inputs'"),
        (["--data", tmp_path / "junk.pt"], r"lmcot barrier: \S+junk\.pt: cannot read it with torch.load; give "),
        (["--data", tmp_path / "nope"], r"lmcot barrier: \S+nope: no such file; give a prepared data set file .*, "
         r"a torch.save'd file of inputs and labels, an image folder"),
        (["--data", tmp_path / "dict.pt", "--image-size", 8],
         r"lmcot barrier: --image-size goes with an image folder; --data \S+dict\.pt is a tensor file$"),
        (["--data", tmp_path / "images", "--labels", tmp_path / "short.pt"],
         r"lmcot barrier: --labels goes with a tensor file of inputs alone; --data \S+images is an image folder$"),
        (["--data", tmp_path / "sizes"], r"lmcot barrier: \S+1\.png: is \(12, 9\) \(height, width\) but \S+0\.png is "
         r"\(10, 10\); give --image-size"),
        (["--data", tmp_path / "empty"], r"lmcot barrier: \S+empty: not an image folder \(.*\); give a folder of "),
        (["--data", tmp_path / "images", "--mean", "0.5,0.5"], r"lmcot barrier: --mean and --std: give both"),
        (["--data", tmp_path / "images", "--mean", "0.5,0.5", "--std", "1"],
         r"lmcot barrier: --mean: 2 values for images of 3 channels; give 1 or 3$"),
        (["--data", tmp_path / "images", "--image-size", 8],
         r"lmcot barrier: --input-shape 3,4 does not match data set '\S+images', whose inputs are 3,8,8$"),
        (["--data", tmp_path / "dict.pt", "--correction", "reset"],
         r"lmcot barrier: --correction reset: BN reset recomputes BatchNorm statistics and Sequential has no "),
    ]  # fmt: skip
    for options, pattern in cases:
        one_line_error([*net, *options, "--out", tmp_path / "t.csv"], pattern)
    assert not (tmp_path / "t.csv").exists()
