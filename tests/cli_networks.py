"""Small networks of a user's own, for the command line tests: ``--arch cli_networks:tiny_mlp`` (tests/ is on the
path under pytest). Each function takes no arguments, as ``--arch`` calls it; seed torch first."""

import torch
from torch import nn


def tiny_mlp() -> nn.Module:
    """Inputs (3, 4), 3 classes; hidden layers of 16 and 8 units."""
    return nn.Sequential(nn.Flatten(), nn.Linear(12, 16), nn.ReLU(), nn.Linear(16, 8), nn.ReLU(), nn.Linear(8, 3))


def tiny_bn_cnn() -> nn.Module:
    """Images (3, 8, 8), 3 classes; two convolutions with BatchNorm."""
    return nn.Sequential(
        nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6), nn.ReLU(),
        nn.Conv2d(6, 8, 3, stride=2, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 3),
    )  # fmt: skip


def seeded(build, seed: int) -> nn.Module:
    """``build()`` after seeding torch with ``seed``, its BatchNorm statistics random (so that they matter), in eval
    mode."""
    torch.manual_seed(seed)
    model = build()
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    return model.eval()
