"""How long training stops for a checkpoint: written in place (as before) vs in a thread (AtomicCheckpointIO).

The checkpoint is what `mammofuse train` writes every epoch: two view backbones with the clinical head and
the AdamW state. Printed: the time the training loop waits per checkpoint each way, and the time until the
file is on disk. On a GPU the tensors are cloned there (the write's copy to the host then runs in the thread).
"""

from __future__ import annotations

import tempfile
import time
from pathlib import Path

import torch
from _common import bench_parser
from lightning.pytorch.plugins.io import TorchCheckpointIO

from mammofuse.config import ModelConfig
from mammofuse.models import create_model
from mammofuse.storage import replaced
from mammofuse.training.run import AtomicCheckpointIO


def checkpoint(backbone: str, device: torch.device) -> dict:
    net = create_model(ModelConfig(backbone=backbone, pretrained="none"), 10).to(device)
    optimizer = torch.optim.AdamW(net.parameters())
    x = torch.rand(2, 1, 64, 32, device=device)
    net(x, x, torch.rand(2, 10, device=device))[:, 1].sum().backward()
    optimizer.step()  # the optimizer state exists, as after an epoch
    return {"epoch": 0, "state_dict": net.state_dict(), "optimizer_states": [optimizer.state_dict()]}


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    state = checkpoint(args.backbone, device)
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "last.ckpt"
        plain, threaded, on_disk = [], [], []
        for _ in range(args.repeats):
            start = time.perf_counter()
            with replaced(path) as tmp:
                TorchCheckpointIO().save_checkpoint(state, tmp)
            plain.append(time.perf_counter() - start)

            io = AtomicCheckpointIO()
            start = time.perf_counter()
            io.save_checkpoint(state, path)
            threaded.append(time.perf_counter() - start)
            io.teardown()
            on_disk.append(time.perf_counter() - start)
        size = path.stat().st_size / 2**20
    # the least disturbed of the repeats, each way
    waits, queued, written = min(plain), min(threaded), min(on_disk)
    print(f"{device}; {args.backbone} pair with AdamW state: a {size:.0f} MiB checkpoint")
    print(
        f"training waits {waits * 1000:.0f} ms written in place vs {queued * 1000:.0f} ms written in a "
        f"thread ({waits / queued:.1f}x less); on disk after {written * 1000:.0f} ms"
    )


if __name__ == "__main__":
    main()
