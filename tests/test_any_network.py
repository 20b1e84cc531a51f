"""A network with no code of its own (torchvision's ResNet-18, and VGG-11 whose flatten gives a block axis) aligns
through the inferred spec: weight matching puts a planted permutation back exactly, keeps a network's function, a
network's path to itself has no barrier, a plain state dict file loads by architecture name with errors that name
the file or the architecture, and ``python -m lmcot align`` aligns two checkpoint files. The methods that read data
see an inferred model's producer outputs and layer inputs (refused where a permutation has several incoming layers),
and ``python -m lmcot barrier`` reports the barriers of the path between two checkpoint files on a data set."""

import copy
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torchvision.models import resnet18, vgg11_bn

from lmcot.align.methods import align, output_change, permuted_copy
from lmcot.any_network import load_network, with_inferred_spec
from lmcot.barrier import barrier_summary, interpolation_curve
from lmcot.errors import UserError
from lmcot.model_files import save_model
from lmcot.models import build_model
from lmcot.permutation import invert_permutations, random_permutations

SHAPE = (3, 32, 32)


def random_resnet18(seed: int) -> torch.nn.Module:
    """ResNet-18 for 10 classes with random positive BatchNorm statistics (so that they matter), in eval mode."""
    torch.manual_seed(seed)
    return random_statistics(resnet18(weights=None, num_classes=10))


def random_statistics(model: torch.nn.Module) -> torch.nn.Module:
    """``model`` with random positive BatchNorm statistics and affine parameters, in eval mode."""
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()


@pytest.fixture(scope="module")
def inputs():
    return torch.randn(4, *SHAPE, generator=torch.Generator().manual_seed(1))


@pytest.fixture(scope="module")
def model_a(inputs):
    return with_inferred_spec(random_resnet18(0), inputs)


def test_the_copy_has_the_spec_and_the_models_own_keys(model_a, inputs):
    original = random_resnet18(0)
    assert not hasattr(original, "permutation_spec")  # the user's model and class are untouched
    assert list(model_a.state_dict()) == list(original.state_dict())
    assert len(model_a.permutation_spec().names) == 12
    assert copy.deepcopy(model_a).permutation_spec() == model_a.permutation_spec()  # permuted_copy keeps it
    with torch.no_grad():
        assert torch.equal(model_a(inputs), original(inputs))


def test_weight_matching_recovers_a_planted_permutation(model_a, inputs):
    spec = model_a.permutation_spec()
    planted = random_permutations(spec, model_a.state_dict(), torch.Generator().manual_seed(2))
    model_b = permuted_copy(model_a, planted)
    perms = align("weight_matching", model_a, model_b)
    # B's unit perm[i] plays A's unit i: B = A permuted by planted, so perm is planted's inverse
    truth = invert_permutations(planted)
    recovered = sum((perms[n] == truth[n]).sum().item() for n in spec.names)
    total = sum(len(truth[n]) for n in spec.names)
    assert recovered / total == 1.0
    aligned = permuted_copy(model_b, perms)
    with torch.no_grad():
        assert torch.allclose(aligned(inputs), model_a(inputs), atol=1e-4)
    assert all(torch.equal(v, model_a.state_dict()[k]) for k, v in aligned.state_dict().items())


@pytest.mark.slow
def test_weight_matching_recovers_a_planted_permutation_of_vgg11_bn(inputs):
    """VGG-11's last convolution permutes its classifier's inputs in blocks of 49 (7 x 7 positions per channel):
    weight matching scores those units on their whole blocks and puts every unit back."""
    torch.manual_seed(5)
    model_a = with_inferred_spec(random_statistics(vgg11_bn(weights=None, num_classes=10)), inputs[:2])
    spec = model_a.permutation_spec()
    assert spec.blocks == {("classifier.0.weight", 1): 49}
    planted = random_permutations(spec, model_a.state_dict(), torch.Generator().manual_seed(6))
    model_b = permuted_copy(model_a, planted)
    perms = align("weight_matching", model_a, model_b)
    truth = invert_permutations(planted)
    recovered = sum((perms[n] == truth[n]).sum().item() for n in spec.names)
    assert recovered == sum(len(truth[n]) for n in spec.names) == 10944
    aligned = permuted_copy(model_b, perms)
    assert all(torch.equal(v, model_a.state_dict()[k]) for k, v in aligned.state_dict().items())


def test_weight_matching_of_two_networks_keeps_b_s_function(model_a, inputs):
    model_b = with_inferred_spec(random_resnet18(1), inputs)
    perms = align("weight_matching", model_a, model_b)
    assert any(not torch.equal(p, torch.arange(len(p))) for p in perms.values())  # it moved some units
    scale = model_b(inputs).abs().max().item()
    assert output_change(model_b, perms, inputs) < 1e-5 * max(scale, 1.0)


def test_the_path_from_a_network_to_itself_has_no_barrier(model_a):
    generator = torch.Generator().manual_seed(3)
    x, y = torch.randn(16, *SHAPE, generator=generator), torch.randint(0, 10, (16,), generator=generator)
    state = {k: v.clone() for k, v in model_a.state_dict().items()}
    alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
    container = copy.deepcopy(model_a)
    rows = interpolation_curve(container, state, state, alphas, {"test": (x, y)})
    for metric in ("loss", "error"):
        values = [r["value"] for r in rows if r["metric"] == metric]
        summary = barrier_summary(alphas, values)
        assert summary["barrier"] == pytest.approx(0.0, abs=1e-6), metric
    # a permuted copy of A is the same network: weight matching puts it back, and the path has no barrier either
    planted = random_permutations(model_a.permutation_spec(), state, generator)
    permuted = permuted_copy(model_a, planted)
    aligned = permuted_copy(permuted, align("weight_matching", model_a, permuted)).state_dict()
    rows = interpolation_curve(container, state, aligned, alphas, {"test": (x, y)})
    assert barrier_summary(alphas, [r["value"] for r in rows if r["metric"] == "loss"])["barrier"] == pytest.approx(
        0.0, abs=1e-6
    )


def test_a_state_dict_file_loads_by_architecture_name(tmp_path, inputs):
    model = random_resnet18(4)
    path = tmp_path / "net.pt"
    torch.save(model.state_dict(), path)
    loaded = load_network(path, "resnet18")
    assert not loaded.training
    with torch.no_grad():
        assert torch.equal(loaded(inputs), model(inputs))
    torch.save({"epoch": 3, "state_dict": {f"module.{k}": v for k, v in model.state_dict().items()}}, path)
    with torch.no_grad():  # a training script's checkpoint of a DataParallel model
        assert torch.equal(load_network(path, "resnet18")(inputs), model(inputs))


def test_a_callable_architecture(tmp_path, monkeypatch, inputs):
    model = random_resnet18(5)
    path = tmp_path / "net.pt"
    torch.save(model.state_dict(), path)
    (tmp_path / "my_networks.py").write_text(
        "import torchvision\n\ndef small():\n    return torchvision.models.resnet18(num_classes=10)\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with torch.no_grad():
        assert torch.equal(load_network(path, "my_networks:small")(inputs), model(inputs))


def test_load_errors_name_the_file_or_the_architecture(tmp_path):
    path = tmp_path / "net.pt"
    cases = [("resnet18", {}, r"net\.pt: no such file")]
    errors = [catch(path, "resnet18")]
    torch.save(random_resnet18(0).state_dict(), path)
    cases += [
        ("resnet_18", {}, r"unknown arch 'resnet_18': valid are .*resnet18"),
        ("no_such_module:f", {}, r"arch 'no_such_module:f': cannot import 'f' from module 'no_such_module'"),
        ("torch.nn:Linear", {}, r"arch 'torch.nn:Linear': calling it with no arguments failed"),
        ("resnet34", {}, r"net\.pt: the state dict does not fit arch 'resnet34' \(\d+ missing: .* and \d+ more"),
        ("resnet18", {"num_classes": 100}, r"net\.pt: .* \(2 wrong shape .*: fc.weight \[10, 512\] vs \[100"),
    ]
    errors += [catch(path, arch, **options) for arch, options, _ in cases[1:]]
    path.write_bytes(b"not a checkpoint")
    cases.append(("resnet18", {}, r"net\.pt: cannot read it as a PyTorch state dict"))
    errors.append(catch(path, "resnet18"))
    for (_, _, pattern), error in zip(cases, errors, strict=True):
        assert isinstance(error, UserError), pattern
        assert "\n" not in str(error), str(error)  # one line
        assert re.search(pattern, str(error)), (pattern, str(error))


def catch(path, arch, **options) -> Exception | None:
    try:
        load_network(path, arch, **options)
    except Exception as error:  # the test checks its type and message
        return error
    return None


@pytest.mark.slow
def test_the_align_command_writes_b_aligned_to_a(tmp_path, inputs):
    """``python -m lmcot align`` on two state dict files: the file it writes is B, permuted (B's function)."""
    model_a, model_b = random_resnet18(6), random_resnet18(7)
    torch.save(model_a.state_dict(), tmp_path / "a.pt")
    torch.save(model_b.state_dict(), tmp_path / "b.pt")
    command = [sys.executable, "-m", "lmcot", "align", "a.pt", "b.pt", "--arch", "resnet18", "--input-shape", "3,32,32"]
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1])}
    done = subprocess.run(
        [*command, "--out", "out/b_aligned.pt"], cwd=tmp_path, env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    assert re.fullmatch(r"out/b_aligned\.pt: B aligned to A by weight_matching; 12 permutations, \d+ of 2880 units "
                        r"moved; largest output change \S+\n", done.stdout)  # fmt: skip
    aligned = load_network(tmp_path / "out" / "b_aligned.pt", "resnet18")
    with torch.no_grad():
        assert torch.allclose(aligned(inputs), model_b(inputs), atol=1e-4)
    assert not torch.equal(aligned.state_dict()["conv1.weight"], model_b.state_dict()["conv1.weight"])
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["b_aligned.pt"]  # no temporary file left
    failed = subprocess.run([*command, "--method", "activation_matching", "--out", "x.pt"], cwd=tmp_path, env=env,
                            capture_output=True, text=True)  # fmt: skip
    assert failed.returncode == 1 and not (tmp_path / "x.pt").exists()
    assert (
        failed.stderr.startswith("lmcot align: method 'activation_matching' needs --inputs")
        and failed.stderr.count("\n") == 1
    )


def test_the_align_command_on_lmcot_model_files(tmp_path, capsys):
    """lmcot's own architectures keep their hand-written spec, so the methods that read activations work too."""
    from lmcot.__main__ import main

    paths = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        model = build_model("cnn", (1, 8, 8), 10, 6, 2)
        save_model(model, tmp_path / f"m{seed}.safetensors", {"arch": "cnn", "input_shape": [1, 8, 8],
                   "num_classes": 10, "width": 6, "depth": 2}, {})  # fmt: skip
        paths.append(str(tmp_path / f"m{seed}.safetensors"))
    x = torch.randn(64, 1, 8, 8)
    torch.save(x, tmp_path / "x.pt")
    main(["align", *paths, "--method", "activation_matching", "--inputs", str(tmp_path / "x.pt"), "--out",
          str(tmp_path / "out.pt")])  # fmt: skip
    assert "B aligned to A by activation_matching" in capsys.readouterr().out
    model_b = load_network(paths[1])
    aligned = build_model("cnn", (1, 8, 8), 10, 6, 2).eval()
    aligned.load_state_dict(torch.load(tmp_path / "out.pt", weights_only=True))
    with torch.no_grad():
        assert torch.allclose(aligned(x), model_b(x), atol=1e-5)
    with pytest.raises(SystemExit, match=r"^lmcot align: .*nope\.pt: no such file"):
        main(["align", str(tmp_path / "nope.pt"), paths[0], "--arch", "resnet18", "--out", str(tmp_path / "o.pt")])


# --- data methods on inferred models: hidden_activations and layer_inputs read with forward hooks ----------------


def small_mlp(seed: int = 0) -> torch.nn.Module:
    """A Sequential MLP on (3, 4) inputs: permutations '1' (16 units) and '3' (8 units), named after their Linear."""
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def small_cnn(seed: int = 0) -> torch.nn.Module:
    """Convolutions with stride and padding, then global pooling and a Linear: permutations '0' and '2'."""
    torch.manual_seed(seed)
    nn = torch.nn
    return nn.Sequential(
        nn.Conv2d(3, 5, 3, padding=1), nn.ReLU(), nn.Conv2d(5, 7, 3, stride=2, padding=1), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(7, 4),
    )  # fmt: skip


def test_hidden_activations_are_the_producers_outputs(model_a, inputs):
    acts = model_a.hidden_activations(inputs[:2])
    spec = model_a.permutation_spec()
    assert list(acts) == spec.names
    side = {64: 8, 128: 4, 256: 2, 512: 1}  # channels -> side of the map, after the stem's stride 2 and max pool
    assert {n: tuple(a.shape) for n, a in acts.items()} == {
        n: (2 * (16 * 16 if n == "conv1" else side[c] ** 2), c) for n, c in spec.sizes(model_a.state_dict()).items()
    }
    with torch.no_grad():
        conv1 = model_a.conv1(inputs[:2])  # (2, 64, 16, 16), before BatchNorm and ReLU
    assert torch.equal(acts["conv1"], conv1.permute(0, 2, 3, 1).reshape(-1, 64))  # channels last, positions as samples
    mlp = with_inferred_spec(small_mlp(), torch.randn(5, 3, 4))
    x = torch.randn(6, 3, 4)
    with torch.no_grad():
        hidden = mlp[1](x.flatten(1))
        assert torch.equal(mlp.hidden_activations(x)["1"], hidden)  # pre-activation
        assert torch.equal(mlp.hidden_activations(x)["3"], mlp[3](hidden.relu()))
    clone = copy.deepcopy(mlp)  # the copy's hooks go on the copy's modules
    assert clone.hidden_activations.model is clone and clone.layer_inputs.model is clone


@pytest.mark.parametrize("build", [small_mlp, small_cnn])
def test_layer_inputs_are_what_each_layer_multiplies(build):
    """For every permutation, ``layer_inputs @ weight.flatten(1).T + bias`` is its producer's output, exactly the
    rows and columns of ``incoming_weights``."""
    shape = (3, 4) if build is small_mlp else (3, 9, 9)
    model = with_inferred_spec(build(), torch.randn(2, *shape))
    x = torch.randn(5, *shape)
    inputs, acts = model.layer_inputs(x), model.hidden_activations(x)
    assert list(inputs) == list(acts) == model.permutation_spec().names
    for name, h in inputs.items():
        layer = model.get_submodule(name)
        assert torch.allclose(h @ layer.weight.flatten(1).T + layer.bias, acts[name], atol=1e-5), name
    if build is small_cnn:  # 3x3 patches of 3 channels at 81 positions, then of 5 channels at 25 (stride 2)
        assert {n: tuple(h.shape) for n, h in inputs.items()} == {"0": (5 * 81, 27), "2": (5 * 25, 45)}


def test_layer_inputs_refuse_the_residual_streams_of_resnet18(model_a, inputs):
    with pytest.raises(UserError) as refusal:
        model_a.layer_inputs(inputs)
    assert str(refusal.value) == (
        "layer inputs (covariance-aware matching): permutation 'layer2.0.conv2' has 2 incoming weight matrices "
        "(layer2.0.conv2.weight, layer2.0.downsample.0.weight), not one layer's: the layers writing to it see "
        "different inputs; use a method that does not read them"
    )
    nn = torch.nn
    dilated = nn.Sequential(nn.Conv2d(3, 4, 3, dilation=2), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                            nn.Linear(4, 3))  # fmt: skip
    x = torch.randn(2, 3, 9, 9)
    with pytest.raises(UserError, match=r"permutation '0': Conv2d '0' has dilation \(2, 2\), 1 groups, padding"):
        with_inferred_spec(dilated, x).layer_inputs(x)


@pytest.mark.parametrize("method", ["activation_matching", "activation_covariance", "cov_weight_matching"])
def test_data_methods_recover_a_planted_permutation_of_an_inferred_mlp(method):
    x = torch.randn(256, 3, 4, generator=torch.Generator().manual_seed(8))
    model_a = with_inferred_spec(small_mlp(), x[:4])
    planted = random_permutations(model_a.permutation_spec(), model_a.state_dict(), torch.Generator().manual_seed(9))
    model_b = permuted_copy(model_a, planted)
    perms = align(method, model_a, model_b, x)
    truth = invert_permutations(planted)
    assert all(torch.equal(perms[n], truth[n]) for n in truth)
    aligned = permuted_copy(model_b, perms)
    assert all(torch.equal(v, model_a.state_dict()[k]) for k, v in aligned.state_dict().items())


def test_the_align_command_by_activation_matching_on_resnet18(tmp_path, model_a, capsys):
    """B is a permuted copy of A: activation matching on the producers' outputs puts every unit back, so the file
    written is A's state dict exactly."""
    from lmcot.__main__ import main

    planted = random_permutations(model_a.permutation_spec(), model_a.state_dict(), torch.Generator().manual_seed(10))
    torch.save(model_a.state_dict(), tmp_path / "a.pt")
    torch.save(permuted_copy(model_a, planted).state_dict(), tmp_path / "b.pt")
    torch.save(torch.randn(8, *SHAPE, generator=torch.Generator().manual_seed(11)), tmp_path / "x.pt")
    main([str(tmp_path / f) for f in ("a.pt", "b.pt")][:0] + ["align", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"),
          "--arch", "resnet18", "--input-shape", "3,32,32", "--method", "activation_matching", "--inputs",
          str(tmp_path / "x.pt"), "--out", str(tmp_path / "out.pt")])  # fmt: skip
    assert "B aligned to A by activation_matching; 12 permutations, " in capsys.readouterr().out
    written = torch.load(tmp_path / "out.pt", weights_only=True)
    assert all(torch.equal(v, model_a.state_dict()[k]) for k, v in written.items())
    with pytest.raises(SystemExit, match=r"^lmcot align: layer inputs \(covariance-aware matching\): permutation "):
        main(["align", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--arch", "resnet18", "--input-shape",
              "3,32,32", "--method", "cov_weight_matching", "--inputs", str(tmp_path / "x.pt"), "--out",
              str(tmp_path / "cov.pt")])  # fmt: skip
    assert not (tmp_path / "cov.pt").exists()


# --- python -m lmcot barrier -------------------------------------------------------------------------------------

BARRIER_COLUMNS = ["split", "loss_barrier", "accuracy_barrier", "loss_a", "loss_b", "accuracy_a", "accuracy_b"]


USER_NETWORKS = """from torch import nn


def tiny_cnn():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.ReLU(), nn.Conv2d(8, 8, 3, stride=2), nn.ReLU(),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 10))


def digits_mlp():
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 16), nn.ReLU(), nn.Linear(16, 10))
"""


@pytest.fixture
def user_networks(tmp_path, monkeypatch):
    """The module ``user_networks`` of the user's own architectures (``--arch user_networks:tiny_cnn``)."""
    (tmp_path / "user_networks.py").write_text(USER_NETWORKS)
    monkeypatch.syspath_prepend(str(tmp_path))
    import user_networks

    yield user_networks
    sys.modules.pop("user_networks")


def tiny_dataset(path: Path, model: torch.nn.Module, shape=SHAPE) -> None:
    """A prepared data set file (the format the prepare stage writes) of 20 random inputs labelled by ``model``'s
    predictions (12 train, 8 test), 10 classes."""
    from lmcot.data import Dataset

    x = torch.randn(20, *shape, generator=torch.Generator().manual_seed(12))
    with torch.no_grad():
        y = model(x).argmax(1)
    Dataset("tiny", x[:12], y[:12], x[12:], y[12:], [str(c) for c in range(10)]).save(path)


def barriers(path) -> list[float]:
    """The loss and accuracy barriers of both splits in a table the barrier command wrote."""
    import pandas as pd

    return pd.read_csv(path)[["loss_barrier", "accuracy_barrier"]].to_numpy().flatten().tolist()


def test_the_barrier_command_on_a_network_and_itself(tmp_path, model_a, capsys):
    """From A to A the path is flat: both barriers are 0 (up to the round-off of barrier_summary's chord,
    ``(1 - a) v + a v``), in the table printed and in the CSV written."""
    import pandas as pd

    from lmcot.__main__ import main
    from lmcot.data import Dataset
    from lmcot.evaluation import evaluate

    tiny_dataset(tmp_path / "tiny.safetensors", model_a)
    torch.save(model_a.state_dict(), tmp_path / "a.pt")
    data = str(tmp_path / "tiny.safetensors")
    main(["barrier", *[str(tmp_path / "a.pt")] * 2, "--arch", "resnet18", "--data", data, "--out",
          str(tmp_path / "out" / "self.csv")])  # fmt: skip
    printed = capsys.readouterr().out.splitlines()
    assert (
        printed[0]
        == f"linear path from {tmp_path / 'a.pt'} to {tmp_path / 'a.pt'} (B as it is), 11 points, data {data}:"
    )
    assert printed[1].split() == BARRIER_COLUMNS and [line.split()[0] for line in printed[2:]] == ["train", "test"]
    table = pd.read_csv(tmp_path / "out" / "self.csv")
    assert list(table.columns) == BARRIER_COLUMNS and list(table["split"]) == ["train", "test"]
    assert max(abs(b) for b in barriers(tmp_path / "out" / "self.csv")) <= 1e-15
    assert [p.name for p in (tmp_path / "out").iterdir()] == ["self.csv"]  # written atomically: no temporary left
    loaded = Dataset.load(tmp_path / "tiny.safetensors")
    test = evaluate(model_a, loaded.x_test, loaded.y_test)
    assert table.loc[1, "loss_a"] == table.loc[1, "loss_b"] == pytest.approx(test["loss"], rel=1e-5)
    assert table.loc[1, "accuracy_a"] == test["accuracy"] == 1.0  # the labels are A's predictions


def test_the_barrier_command_aligns_b_first(tmp_path, user_networks, capsys):
    """B is a permuted copy of A: its path from A has barriers, until ``--align weight_matching`` puts it back."""
    from lmcot.__main__ import main

    torch.manual_seed(14)
    model_a = with_inferred_spec(user_networks.tiny_cnn(), torch.randn(2, 3, 9, 9))
    with torch.no_grad():
        model_a[-1].weight.mul_(30)  # confident predictions: a loss that the permuted path's midpoint raises
    tiny_dataset(tmp_path / "tiny.safetensors", model_a, (3, 9, 9))
    planted = random_permutations(model_a.permutation_spec(), model_a.state_dict(), torch.Generator().manual_seed(15))
    torch.save(model_a.state_dict(), tmp_path / "a.pt")
    torch.save(permuted_copy(model_a, planted).state_dict(), tmp_path / "b.pt")
    command = ["barrier", str(tmp_path / "a.pt"), str(tmp_path / "b.pt"), "--arch", "user_networks:tiny_cnn",
               "--data", str(tmp_path / "tiny.safetensors"), "--input-shape", "3,9,9"]  # fmt: skip
    main([*command, "--out", str(tmp_path / "permuted.csv")])
    loss_train, _, loss_test, _ = barriers(tmp_path / "permuted.csv")
    assert min(loss_train, loss_test) > 0.1
    main([*command, "--align", "weight_matching", "--out", str(tmp_path / "aligned.csv")])
    assert "(B aligned to A by weight_matching)" in capsys.readouterr().out.splitlines()[-4]
    assert max(abs(b) for b in barriers(tmp_path / "aligned.csv")) <= 1e-15


def test_the_barrier_command_builds_digits_by_name(tmp_path, user_networks, capsys):
    """``--data digits`` builds the data set with params.yaml's prepare.digits options (standardised 1x8x8)."""
    import pandas as pd

    from lmcot.__main__ import main
    from lmcot.config import PROJECT_PARAMS, load_params
    from lmcot.data import prepare
    from lmcot.evaluation import evaluate

    for seed in (0, 1):
        torch.manual_seed(seed)
        torch.save(user_networks.digits_mlp().state_dict(), tmp_path / f"m{seed}.pt")
    main(["barrier", str(tmp_path / "m0.pt"), str(tmp_path / "m1.pt"), "--arch", "user_networks:digits_mlp",
          "--data", "digits", "--align", "activation_matching", "--out", str(tmp_path / "t.csv")])  # fmt: skip
    assert "(B aligned to A by activation_matching), 11 points, data digits:" in capsys.readouterr().out
    table = pd.read_csv(tmp_path / "t.csv")
    params = load_params(PROJECT_PARAMS)
    data = prepare("digits", params["prepare"]["digits"])
    model = load_network(tmp_path / "m0.pt", "user_networks:digits_mlp")
    for split, row in zip(("train", "test"), table.itertuples(), strict=True):
        x, y = data.split(split)
        n = params["barrier"]["train_samples"] if split == "train" else len(x)
        assert row.split == split
        assert row.loss_a == pytest.approx(evaluate(model, x[:n], y[:n])["loss"], rel=1e-5)


def test_barrier_command_errors_are_one_line_naming_the_value(tmp_path, model_a):
    from lmcot.__main__ import main

    tiny_dataset(tmp_path / "tiny.safetensors", model_a)
    torch.save(model_a.state_dict(), tmp_path / "a.pt")
    networks = ["barrier", str(tmp_path / "a.pt"), str(tmp_path / "a.pt"), "--arch", "resnet18"]
    cases = [
        (["--data", "cifar"], r"lmcot barrier: unknown data set 'cifar'; valid names: mnist1d, digits \(or the path"),
        (["--data", str(tmp_path / "nope.safetensors")], r"lmcot barrier: \S+nope\.safetensors: no such file; "),
        (["--data", str(tmp_path / "tiny.safetensors"), "--input-shape", "3,16,16"],
         r"lmcot barrier: --input-shape 3,16,16 does not match data set '\S+tiny\.safetensors', whose inputs are "
         r"3,32,32$"),
    ]  # fmt: skip
    for options, pattern in cases:
        with pytest.raises(SystemExit) as ended:
            main([*networks, *options, "--out", str(tmp_path / "t.csv")])
        assert "\n" not in str(ended.value.code) and re.match(pattern, ended.value.code), (pattern, ended.value.code)
    assert not (tmp_path / "t.csv").exists()
