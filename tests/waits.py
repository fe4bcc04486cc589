"""Checking without a GPU that work never makes the CPU wait for one.

On the meta device: meta tensors have shapes but no data, so whatever reads a value back to the host
(`.item()`, an `if` on a tensor, a boolean selection, a copy to the CPU) raises there, as on a GPU it would
stall the queue of work. `FromTheCpu` also records the operations that take a tensor from the CPU (a copy
to a GPU from memory that is not pinned waits too); 0-d tensors are left out: torch passes them to a kernel
as plain numbers. Where the meta device cannot go (a whole `mammofuse train` under Lightning), `HostReads`
counts the reads on the CPU."""

from __future__ import annotations

import os
import sys
from types import FrameType

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_leaves


class FromTheCpu(TorchDispatchMode):
    def __init__(self) -> None:
        super().__init__()
        self.ops: list[str] = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        tensors = [t for t in tree_leaves((args, kwargs, out)) if isinstance(t, torch.Tensor)]
        if any(t.device.type == "cpu" and t.dim() > 0 for t in tensors):
            self.ops.append(str(func))
        return out


class HostReads(TorchDispatchMode):
    """Counts, while `counting` is on, the operations that read a tensor's value back to the host: free on the
    CPU, a wait for every queued kernel on a GPU. Torch's optimizers are left out: what they read on the CPU
    are their step counters, which a GPU's fused optimizer (training.module.fused_on) keeps on the GPU."""

    READS = {"aten._local_scalar_dense.default", "aten.nonzero.default", "aten.masked_select.default"}

    def __init__(self) -> None:
        super().__init__()
        self.counting, self.reads = False, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        if self.counting and self._reads(func, args) and not _by_optimizer(sys._getframe(1)):
            self.reads += 1
        return func(*args, **(kwargs or {}))

    def _reads(self, func, args) -> bool:
        if str(func) in self.READS:
            return True
        return str(func).startswith("aten.index.") and any(  # a boolean mask's selection
            isinstance(t, torch.Tensor) and t.dtype == torch.bool for t in tree_leaves(args)
        )


def _by_optimizer(frame: FrameType | None) -> bool:
    """Whether the line that asked for the operation is torch's optimizers' own, past torch's wrappers (the
    training step itself runs inside `optimizer.step`, so only the nearest caller outside them tells)."""
    while frame is not None:
        name = frame.f_code.co_filename
        if f"torch{os.sep}optim{os.sep}" in name:
            return True
        if f"{os.sep}torch{os.sep}" not in name:
            return False
        frame = frame.f_back
    return False
