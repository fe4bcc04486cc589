"""Where a trained network scores and explains breasts (evaluation, Grad-CAM and its checks, `predict`):
the GPU where there is one, as training does, else the CPU. `MAMMOFUSE_DEVICE` names another (`cpu` keeps
them off a GPU that other work holds; `cuda:1` picks a card). On a GPU the scores agree with the CPU's to
about 1e-3 (cuDNN's kernels sum in another order, and convolutions take TF32), not to the last digit."""

from __future__ import annotations

import os
from typing import TypeVar

import torch
from torch import nn

from mammofuse.config import ConfigError

VARIABLE = "MAMMOFUSE_DEVICE"


def inference_device() -> torch.device:
    """The device named by MAMMOFUSE_DEVICE, or the GPU where there is one, or the CPU."""
    name = os.environ.get(VARIABLE, "").strip()
    if not name:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"{VARIABLE}={name!r} names no device (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"{VARIABLE}={name!r}: this machine has no CUDA GPU (unset it, or set it to cpu)")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"{VARIABLE}={name!r}: mammofuse runs networks on cpu or cuda only")
    return device


M = TypeVar("M", bound=nn.Module)


def on_inference_device(net: M, *tensors: torch.Tensor) -> tuple[M, list[torch.Tensor]]:
    """The network in eval mode and `tensors`, on `inference_device` (a no-op where they already are)."""
    device = inference_device()
    return net.eval().to(device), [t.to(device) for t in tensors]
