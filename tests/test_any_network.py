"""A network with no code of its own (torchvision's ResNet-18, and VGG-11 whose flatten gives a block axis) aligns
through the inferred spec: weight matching puts a planted permutation back exactly, keeps a network's function, a
network's path to itself has no barrier, a plain state dict file loads by architecture name with errors that name
the file or the architecture, and ``python -m lmcot align`` aligns two checkpoint files."""

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
