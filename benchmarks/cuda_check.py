"""Device check of REPAIR (with and without normalisation), barycentre fusion and recurrent alignment: each
result on the device is compared with the same computation on the CPU, and a plain and a repaired path point
are timed (ms). Writes $OUT/cuda_check.json (default /tmp); exits 1 if a check fails.

Run: python benchmarks/cuda_check.py [cuda|cpu]   (default: cuda where PyTorch sees a GPU)"""

import copy
import json
import os
import sys
import time

import torch

from lmcot.align.methods import align
from lmcot.barrier import interpolation_curve
from lmcot.evaluation import output_statistics, repair, repair_layers
from lmcot.fusion import wasserstein_barycenter
from lmcot.models import build_model

device = sys.argv[1] if len(sys.argv) > 1 else ("cuda" if torch.cuda.is_available() else "cpu")
out = os.environ.get("OUT", "/tmp")
report = {"device": device, "name": torch.cuda.get_device_name() if device == "cuda" else "cpu", "checks": {}}
torch.manual_seed(0)
SHAPE = (1, 40)
x = torch.randn(2000, *SHAPE)
y = torch.randint(0, 10, (2000,))


def pair(arch, width, depth):
    torch.manual_seed(1)
    a = build_model(arch, SHAPE, 10, width, depth)
    torch.manual_seed(2)
    b = build_model(arch, SHAPE, 10, width, depth)
    if arch == "resnet_bn":  # BatchNorm statistics
        for m in (a, b):
            m.train()
            with torch.no_grad():
                m(x[:500])
    return a.eval(), b.eval()


failures = []


def check(name, ok, detail):
    report["checks"][name] = {"ok": bool(ok), "detail": detail}
    print(("PASS " if ok else "FAIL ") + name, detail, flush=True)
    if not ok:
        failures.append(name)


alphas = [0.0, 0.25, 0.5, 0.75, 1.0]
for arch, width, depth in [("mlp", 512, 2), ("cnn", 32, 3), ("resnet", 16, 2), ("resnet_bn", 16, 2)]:
    a, b = pair(arch, width, depth)
    results = {}
    for where in ("cpu", device):
        container = copy.deepcopy(a).to(where)
        splits = {"train": (x[:1000].to(where), y[:1000].to(where))}
        sa = {k: v.to(where) for k, v in a.state_dict().items()}
        sb = {k: v.to(where) for k, v in b.state_dict().items()}
        rows = interpolation_curve(container, sa, sb, alphas, splits, 4096, "repair", x[:500].to(where))
        results[where] = [r["value"] for r in rows]
    diff = max(abs(p - q) for p, q in zip(results["cpu"], results[device], strict=True))
    check(f"repair_curve_{arch}", diff < 1e-3, f"max |cpu - {device}| = {diff:.2e}")
    # goal reached on the device at alpha = 0.3
    model = copy.deepcopy(a).to(device)
    inputs = x[:500].to(device)
    layers = repair_layers(model)
    stats_a = output_statistics(model, layers, inputs)
    model.load_state_dict(b.state_dict())
    stats_b = output_statistics(model, repair_layers(model), inputs)
    mixed = {
        k: torch.lerp(va.to(device), vb.to(device), 0.3) if va.is_floating_point() else va.to(device)
        for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values(), strict=True)
    }
    model.load_state_dict(mixed)
    goal = [
        ((0.7 * ma + 0.3 * mb), (0.7 * sa_ + 0.3 * sb_)) for (ma, sa_), (mb, sb_) in zip(stats_a, stats_b, strict=True)
    ]
    repair(model, goal, inputs)
    after = output_statistics(model, repair_layers(model), inputs)
    err = max(float((s - g[1]).abs().max() / g[1].abs().max()) for (_, s), g in zip(after, goal, strict=True))
    check(f"repair_goal_{arch}", err < 1e-3, f"max relative std error {err:.2e}")
    # timing: a plain and a repaired path point
    container = copy.deepcopy(a).to(device)
    sa = {k: v.to(device) for k, v in a.state_dict().items()}
    sb = {k: v.to(device) for k, v in b.state_dict().items()}
    splits = {"train": (x.to(device), y.to(device))}
    timing = {}
    for correction in (None, "repair"):
        interpolation_curve(container, sa, sb, alphas, splits, 4096, correction, inputs)  # warm-up
        if device == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(3):
            interpolation_curve(container, sa, sb, alphas, splits, 4096, correction, inputs)
        if device == "cuda":
            torch.cuda.synchronize()
        timing[str(correction)] = (time.perf_counter() - start) / (3 * len(alphas)) * 1e3
    report.setdefault("ms_per_path_point", {})[arch] = timing
    print(f"{arch}: ms per path point {timing}", flush=True)

# fusion of models that live on the device: the same state as on the CPU
for arch in ("mlp", "cnn", "lstm"):
    models = []
    for s in range(3):
        torch.manual_seed(10 + s)
        models.append(build_model(arch, SHAPE, 10, 16, 2).eval())
    cpu = wasserstein_barycenter(models, build_model(arch, SHAPE, 10, 16, 2))
    gpu = wasserstein_barycenter(
        [copy.deepcopy(m).to(device) for m in models], build_model(arch, SHAPE, 10, 16, 2).to(device)
    )
    diff = max(float((cpu.state[k] - gpu.state[k].cpu()).abs().max()) for k in cpu.state)
    check(
        f"fusion_{arch}",
        diff < 1e-5 and cpu.start == gpu.start,
        f"start {gpu.start}, max |cpu - {device}| = {diff:.2e}",
    )

# recurrent alignment with the hidden-to-hidden rows (cov needs layer inputs with the state, on the device)
for method in ("naive_weight_matching", "cov_weight_matching", "ot_emd"):
    torch.manual_seed(20)
    a = build_model("lstm", SHAPE, 10, 16, 2).eval()
    torch.manual_seed(21)
    b = build_model("lstm", SHAPE, 10, 16, 2).eval()
    cpu = align(method, a, b, x[:300])
    gpu = align(method, copy.deepcopy(a).to(device), copy.deepcopy(b).to(device), x[:300].to(device))
    same = all(torch.equal(cpu[k], gpu[k].cpu()) for k in cpu)
    check(f"lstm_{method}", same, "permutations equal to the CPU's" if same else "permutations differ from the CPU's")

with open(os.path.join(out, "cuda_check.json"), "w") as f:
    json.dump(report, f, indent=1)
print("FAILURES:", failures)
sys.exit(1 if failures else 0)
