"""Checking without a GPU that work never makes the CPU wait for one: run it on the meta device.

Meta tensors have shapes but no data, so whatever reads a value back to the host (`.item()`, an `if` on a
tensor, a boolean selection, a copy to the CPU) raises there, as on a GPU it would stall the queue of work.
`FromTheCpu` also records the operations that take a tensor from the CPU (a copy to a GPU from memory that is
not pinned waits too); 0-d tensors are left out: torch passes them to a kernel as plain numbers."""

from __future__ import annotations

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
