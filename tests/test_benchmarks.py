"""The benchmark suite runs end to end (small sizes) and writes the promised keys."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from lmcot.align.methods import METHODS

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow  # the whole suite at small sizes, in a subprocess: about 10 s
def test_quick_benchmark_writes_every_headline_key(tmp_path):
    out = tmp_path / "benchmarks.json"
    cmd = [
        sys.executable,
        str(ROOT / "benchmarks/run.py"),
        "--quick",
        "--skip-repro",
        "--device",
        "cpu",
        "--out",
        str(out),
    ]
    subprocess.run(cmd, check=True, capture_output=True, text=True)
    result = json.loads(out.read_text())
    assert result["matmul_gflops"] > 0
    for key in ("train_speedup_vs_naive_w128", "barrier_cost_per_point_ratio", "reset_cost_per_point_ratio",
                "repair_cost_per_point_ratio", "lstm_train_speedup_vs_naive"):  # fmt: skip
        assert result[key] > 0
    assert [r["arch"] for r in result["corrections"]] == ["resnet_bn", "mlp"]
    assert set(result["startup_seconds"]) == {"check_params", "train"}
    assert all(0 < s < 60 for s in result["startup_seconds"].values())
    assert {r["method"] for r in result["alignment"]} == set(METHODS)
    assert set(result["targets"]) >= {
        "train_flops_fraction_w1024",
        "weight_matching_seconds_w4096",
        "repro_noop_seconds",
        "startup_fraction_of_repro",
    }
    assert (tmp_path / "benchmarks.md").read_text().startswith("# Benchmarks")
    # the peer, a port of Git Re-Basin's weight matching, solves the same problem: the same objective
    assert [r["width"] for r in result["rebasin_port"]] == [64, 256]
    for r in result["rebasin_port"]:
        assert r["port_objective"] == pytest.approx(r["lmcot_objective"], rel=1e-6)
    assert "rebasin_port_over_lmcot_w4096" in result["targets"]


def test_the_torchvision_zoo_table_accepts_or_refuses_each_model_and_counts_what_matching_puts_back(tmp_path):
    """Two small models of the zoo script: SqueezeNet (concatenations) accepted, its function kept and a planted
    permutation put back layer by layer; ShuffleNet refused naming the channel shuffle; the table has both."""
    out = tmp_path / "rows.jsonl"
    cmd = [sys.executable, str(ROOT / "benchmarks/torchvision_zoo.py"), "--out", str(out), "--only"]
    subprocess.run([*cmd, "squeezenet1_1", "shufflenet_v2_x0_5"], check=True, capture_output=True, text=True)
    rows = {r["model"]: r for r in map(json.loads, out.read_text().splitlines())}
    squeezenet, shufflenet = rows["squeezenet1_1"], rows["shufflenet_v2_x0_5"]
    assert squeezenet["accepted"] and squeezenet["sectioned"] == 8 and squeezenet["relative_change"] < 1e-5
    assert squeezenet["naive_weight_matching_recovered"] == squeezenet["units"] == 2944
    assert not shufflenet["accepted"] and "it merges a concatenated axis 1 with other axes" in shufflenet["reason"]
    table = subprocess.run([*cmd[:-1], "--table"], check=True, capture_output=True, text=True).stdout
    assert "| squeezenet1_1 | 0.7 M | 25 (0, 8) |" in table and "2944 / 2944" in table
    assert "| shufflenet_v2_x0_5 | 0.4 M | refused: node 'view' (method .view()): it merges" in table


def lstm_kernels():
    """benchmarks/lstm_kernels.py, loaded from its file."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("lmcot_lstm_kernels", ROOT / "benchmarks/lstm_kernels.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("kernel", ["block-diagonal", "batched steps"])
def test_each_lstm_kernel_gives_the_outputs_and_gradients_of_one_fused_call_per_seed(kernel):
    import torch

    bench = lstm_kernels()
    g = torch.Generator().manual_seed(0)
    seeds, batch, steps, features, width = 3, 4, 5, 2, 3
    shapes = [
        (seeds, batch, steps, features),
        (seeds, 4 * width, features),
        (seeds, 4 * width, width),
        (seeds, 4 * width),
    ]
    inputs = [torch.randn(s, generator=g, dtype=torch.float64).requires_grad_() for s in shapes]
    upstream = torch.randn(seeds, batch, steps, width, generator=g, dtype=torch.float64)
    results = []
    for run in (bench.per_seed, bench.KERNELS[kernel]):
        out = run(*inputs)
        results.append([out, *torch.autograd.grad((out * upstream).sum(), inputs)])
    for got, want in zip(*results, strict=True):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-10)
