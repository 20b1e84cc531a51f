"""How fast can several LSTM seeds train? The recurrent kernels lmcot could run, measured in one run.

lmcot's stacked LSTM runs PyTorch's fused kernel (oneDNN on the CPU, cuDNN on CUDA) once per seed, its gates'
tensors concatenated (:func:`lmcot.models.recurrent.recurrent_layer`). A loop of ``nn.LSTM`` runs the same
kernel, so the pipeline can only gain what it saves around the kernel. This script measures that ceiling:

- the share of the pipeline's LSTM training spent inside the fused kernel (forward and backward), from
  ``torch.profiler``: if it is ``s``, no change around the kernel can make training more than ``1 / (1 - s)``
  times faster, and a loop of ``nn.LSTM`` pays at least the same kernel time;
- forward plus backward of one recurrent layer for ``K`` seeds, by three kernels:
  ``per seed`` (today: one fused call per seed), ``block-diagonal`` (one fused call of width ``K * width``,
  each seed's weights a diagonal block: fewer launches, ``K`` times the matmul work), and ``batched steps``
  (one batched matmul per time step for all seeds, backward through time written by hand);
  each checked against ``per seed`` (outputs and gradients, relative error).

    python benchmarks/lstm_kernels.py [--device auto|cpu|cuda] [--out FILE.json]  (the table also in FILE.md)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from lmcot.data import make_mnist1d, standardise  # noqa: E402
from lmcot.device import resolve_device  # noqa: E402
from lmcot.io import write_json, write_text  # noqa: E402
from lmcot.models.recurrent import recurrent_layer  # noqa: E402
from lmcot.training import Recipe, train_models  # noqa: E402


def _bench_suite():
    """benchmarks/run.py, loaded from its file: a module named ``run`` may already be another one."""
    spec = importlib.util.spec_from_file_location("lmcot_benchmark_suite", Path(__file__).with_name("run.py"))
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHAPES = [(3, 32), (3, 64), (3, 128), (10, 32), (3, 512)]  # (seeds, width)
KERNEL_OPS = ("rnn", "lstm")  # profiler names of the fused kernel, forward and backward, on either device


def per_seed(seq, w_ih, w_hh, bias):
    """``seq`` ``(K, batch, steps, features)``, weights ``(K, 4 * width, ...)`` -> ``(K, batch, steps, width)``."""
    return torch.stack([recurrent_layer(seq[k], w_ih[k], w_hh[k], bias[k], True) for k in range(len(seq))])


def block_diagonal(seq, w_ih, w_hh, bias):
    """The same, as one fused call of width ``K * width``: gate ``g`` of seed ``k`` in rows ``g * K * width +
    k * width + (0..width)``, each seed's inputs in its own columns."""
    seeds, batch, steps, features = seq.shape
    width = w_hh.shape[2]

    def blocks(weights):  # (K, 4 * width, n) -> (4 * K * width, K * n), gate-major
        return torch.cat([torch.block_diag(*weights[:, g * width : (g + 1) * width]) for g in range(4)])

    x = seq.permute(1, 2, 0, 3).reshape(batch, steps, seeds * features)
    b = bias.view(seeds, 4, width).transpose(0, 1).reshape(-1)
    out = recurrent_layer(x, blocks(w_ih), blocks(w_hh), b, True)
    return out.view(batch, steps, seeds, width).permute(2, 0, 1, 3)


class BatchedSteps(torch.autograd.Function):
    """All seeds' step ``t`` as one batched matmul and a few elementwise operations; backward through time by
    hand (no autograd graph per step). Gates in PyTorch's order i, f, g, o."""

    @staticmethod
    def forward(ctx, seq, w_ih, w_hh, bias):
        seeds, batch, steps, features = seq.shape
        width = w_hh.shape[2]
        projected = torch.baddbmm(bias[:, None], seq.reshape(seeds, -1, features), w_ih.transpose(1, 2))
        projected = projected.view(seeds, batch, steps, 4 * width)
        gates = seq.new_empty(steps, seeds, batch, 4 * width)  # after their nonlinearity
        cells = seq.new_zeros(steps + 1, seeds, batch, width)
        hidden = seq.new_zeros(steps + 1, seeds, batch, width)
        tanh_cells = seq.new_empty(steps, seeds, batch, width)
        g_slice = slice(2 * width, 3 * width)
        for t in range(steps):
            pre = torch.baddbmm(projected[:, :, t], hidden[t], w_hh.transpose(1, 2))
            torch.sigmoid(pre, out=gates[t])
            torch.tanh(pre[..., g_slice], out=gates[t][..., g_slice])
            i, f, g, o = gates[t].split(width, -1)
            torch.addcmul(f * cells[t], i, g, out=cells[t + 1])
            torch.tanh(cells[t + 1], out=tanh_cells[t])
            torch.mul(o, tanh_cells[t], out=hidden[t + 1])
        ctx.save_for_backward(seq, w_ih, w_hh, gates, cells, hidden, tanh_cells)
        return hidden[1:].permute(1, 2, 0, 3)

    @staticmethod
    def backward(ctx, grad_out):
        seq, w_ih, w_hh, gates, cells, hidden, tanh_cells = ctx.saved_tensors
        seeds, batch, steps, features = seq.shape
        width = w_hh.shape[2]
        grad_out = grad_out.permute(2, 0, 1, 3)  # (steps, K, batch, width)
        grad_pre = torch.empty_like(gates)
        dh, dc = torch.zeros_like(hidden[0]), torch.zeros_like(cells[0])
        for t in reversed(range(steps)):
            i, f, g, o = gates[t].split(width, -1)
            dh = dh + grad_out[t]
            di, df, dg, do = grad_pre[t].split(width, -1)
            torch.mul(dh, tanh_cells[t], out=do)
            dc = torch.addcmul(dc, dh * o, 1 - tanh_cells[t] * tanh_cells[t])
            torch.mul(dc, g, out=di)
            torch.mul(dc, cells[t], out=df)
            torch.mul(dc, i, out=dg)
            dc = dc * f
            slope = gates[t] * (1 - gates[t])  # sigmoid' for i, f, o; tanh' = 1 - g^2 for g
            slope[..., 2 * width : 3 * width] = 1 - g * g
            grad_pre[t].mul_(slope)
            dh = torch.bmm(grad_pre[t], w_hh)
        by_sample = grad_pre.permute(1, 2, 0, 3).reshape(seeds, -1, 4 * width)  # (K, batch * steps, 4 * width)
        previous = hidden[:-1].permute(1, 2, 0, 3).reshape(seeds, -1, width)
        grad_w_hh = torch.bmm(by_sample.transpose(1, 2), previous)
        grad_w_ih = torch.bmm(by_sample.transpose(1, 2), seq.reshape(seeds, -1, features))
        grad_seq = torch.bmm(by_sample, w_ih).view_as(seq)
        return grad_seq, grad_w_ih, grad_w_hh, by_sample.sum(1)


KERNELS = {"per seed": per_seed, "block-diagonal": block_diagonal, "batched steps": BatchedSteps.apply}


def sync(device):
    if device.type == "cuda":
        torch.cuda.synchronize()


def best_seconds(fn, device, repeat=10, budget=3.0):
    """Best wall time of up to ``repeat`` calls, at least 3, stopping once ``budget`` seconds are spent."""
    fn()  # warm-up: kernel primitives are created on the first call
    times = []
    while len(times) < repeat and (len(times) < 3 or sum(times) < budget):
        sync(device)
        start = time.perf_counter()
        fn()
        sync(device)
        times.append(time.perf_counter() - start)
    return min(times)


def compare_kernels(device, seeds, width, batch=128, steps=40, features=1):
    """Seconds of forward plus backward of one layer by each kernel, and each one's largest relative error
    against ``per seed`` over the outputs and the four gradients."""
    g = torch.Generator().manual_seed(0)
    shapes = [(seeds, batch, steps, features), (seeds, 4 * width, features), (seeds, 4 * width, width)]
    tensors = [torch.randn(s, generator=g) for s in shapes] + [torch.randn(seeds, 4 * width, generator=g)]
    tensors[2] /= width**0.5
    inputs = [t.to(device).requires_grad_() for t in tensors]
    upstream = torch.randn(seeds, batch, steps, width, generator=g).to(device)

    def outputs(kernel):
        out = kernel(*inputs)
        return [out, *torch.autograd.grad((out * upstream).sum(), inputs)]

    reference = outputs(per_seed)
    row = {"seeds": seeds, "width": width}
    for name, kernel in KERNELS.items():
        got = outputs(kernel)
        row[f"{name} error"] = max(
            ((a - b).abs().max() / b.abs().max()).item() for a, b in zip(got, reference, strict=True)
        )
        row[f"{name} ms"] = 1000 * best_seconds(lambda k=kernel: outputs(k), device)
    return row


def kernel_share(device, seeds=3, width=32):
    """One epoch of the pipeline's LSTM training (``seeds`` seeds, MNIST-1D, batch 128) and of the loop over one
    ``nn.LSTM`` per seed that ``make bench`` compares it with (seconds, best of 2), and the share of the
    pipeline's time inside the fused kernel's forward and backward, from the profiler (self time on the CPU,
    the device's time on CUDA). Both pay at least the kernel's time, so ``naive / (share * pipeline)`` bounds
    the speedup over the loop that any change around the kernel can reach."""
    data = standardise(make_mnist1d(6000, 0.2, 42)).to(device)
    recipe = Recipe(lr=0.05, epochs=1, batch_size=128)

    def pipeline():
        train_models(data, "lstm", width, 1, recipe, list(range(seeds)), device, progress=False)

    plain_lstm_training = _bench_suite().plain_lstm_training

    def naive():
        for seed in range(seeds):
            plain_lstm_training(data, width, recipe, seed, device)

    pipeline_seconds = best_seconds(pipeline, device, repeat=2, budget=0)
    naive_seconds = best_seconds(naive, device, repeat=2, budget=0)
    activities = [torch.profiler.ProfilerActivity.CPU]
    if device.type == "cuda":
        activities.append(torch.profiler.ProfilerActivity.CUDA)
    with torch.profiler.profile(activities=activities) as profile:
        pipeline()
        sync(device)
    events = profile.key_averages()
    attribute = "self_device_time_total" if device.type == "cuda" else "self_cpu_time_total"
    total = sum(getattr(e, attribute) for e in events)
    inside = sum(getattr(e, attribute) for e in events if any(op in e.key.lower() for op in KERNEL_OPS))
    share = inside / total
    return {
        "seeds": seeds,
        "width": width,
        "pipeline_seconds": pipeline_seconds,
        "naive_seconds": naive_seconds,
        "kernel_share": share,
        "speedup_vs_naive": naive_seconds / pipeline_seconds,
        "speedup_ceiling": naive_seconds / (share * pipeline_seconds),
    }


def markdown(result) -> str:
    p = result["pipeline"]
    lines = [
        f"# Recurrent kernels for several seeds ({result['device']})",
        "",
        f"One epoch of LSTM training ({p['seeds']} seeds, width {p['width']}, MNIST-1D, batch 128): the pipeline "
        f"{p['pipeline_seconds']:.2f} s, a loop of `nn.LSTM` {p['naive_seconds']:.2f} s "
        f"({p['speedup_vs_naive']:.2f}x). The pipeline spends {p['kernel_share']:.0%} of its time inside the "
        f"fused kernel, which the loop also runs, so no change around that kernel can take the speedup past "
        f"{p['speedup_ceiling']:.2f}x.",
        "",
        "Forward plus backward of one layer (batch 128, 40 steps), best of 3 to 10 runs; error: largest relative "
        "difference from `per seed` over the outputs and gradients.",
        "",
        "| seeds | width | "
        + " | ".join(f"{k} (ms)" for k in KERNELS)
        + " | "
        + " | ".join(f"{k} error" for k in list(KERNELS)[1:])
        + " |",
        "|---:|---:|" + "---:|" * (2 * len(KERNELS) - 1),
    ]
    for r in result["kernels"]:
        times = " | ".join(f"{r[f'{k} ms']:.1f}" for k in KERNELS)
        errors = " | ".join(f"{r[f'{k} error']:.1e}" for k in list(KERNELS)[1:])
        lines.append(f"| {r['seeds']} | {r['width']} | {times} | {errors} |")
    return "\n".join(lines) + "\n"


def main():
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    parser.add_argument("--out", type=Path, help="default: reports/lstm_kernels.json (lstm_kernels_cuda.json on a GPU)")
    args = parser.parse_args()
    device = resolve_device(args.device)
    out = args.out or ROOT / "reports" / ("lstm_kernels_cuda.json" if device.type == "cuda" else "lstm_kernels.json")
    result = {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"}
    result["pipeline"] = kernel_share(device)
    result["kernels"] = [compare_kernels(device, seeds, width) for seeds, width in SHAPES]
    print(markdown(result), end="")
    write_json(out, result)
    write_text(out.with_suffix(".md"), markdown(result))


if __name__ == "__main__":
    main()
