"""Scoring and Grad-CAM on the CPU and on `inference_device` (the GPU where there is one), side by side:
what `mammofuse evaluate` (scores of every split and the inputs' contributions), `explain`'s checks and
`compare --regions` (Grad-CAM of the trained and of a re-drawn network for every breast) and `predict` spend
their time on. The network is the configured one with random weights (the speed is the same); the breasts are
random tissue-like images already in memory, so the network alone is measured.

Prints breasts per second on each device and their ratio, and how far the GPU's scores and maps lie from the
CPU's (about 1e-3: cuDNN sums in another order and convolves in TF32). Without a GPU it prints the CPU's.

    python benchmarks/bench_inference.py [--breasts 32] [--size 512 256] [--batch 16] [--backbone resnet18]
                                         [--kind whole|patches]
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from typing import TypeVar

import numpy as np
import torch
from _common import bench_parser

from mammofuse.config import ModelConfig
from mammofuse.domain import VIEWS
from mammofuse.explain.gradcam import gradcam
from mammofuse.models import create_model
from mammofuse.models.device import VARIABLE
from mammofuse.training.module import predict

T = TypeVar("T")


def clocked(fn: Callable[[], T]) -> tuple[T, float]:
    """fn's result and its wall time in seconds."""
    start = time.perf_counter()
    result = fn()
    return result, time.perf_counter() - start


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=32)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--kind", default="whole", choices=["whole", "patches"])
    args = parser.parse_args()

    torch.manual_seed(0)
    cfg = ModelConfig(backbone=args.backbone, pretrained="none", grey="adapt", kind=args.kind, tile=64)
    net = create_model(cfg, 8)
    height, width = args.size
    x = 0.3 + 0.4 * torch.rand(args.breasts, 2, 1, height, width)
    x[..., :, width * 3 // 4 :] = 0  # air beside the breast, as after the crop
    clinical = torch.rand(args.breasts, 8)
    batches = []
    for start in range(0, args.breasts, args.batch):
        part = slice(start, start + args.batch)
        n = len(x[part])
        batches.append({"cc": x[part, 0], "mlo": x[part, 1], "clinical": clinical[part]})
        batches[-1] |= {"label": torch.zeros(n, dtype=torch.long), "key": [str(start + i) for i in range(n)]}

    def scores(first: int | None = None) -> np.ndarray:
        return predict(net, batches[:first])[0]

    def cams(first: int | None = None) -> dict:
        maps = [gradcam(net, b["cc"], b["mlo"], b["clinical"]) for b in batches[:first]]
        return {v: np.concatenate([m[v] for m in maps]) for v in VIEWS}

    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    speed, results = {}, {}
    for device in devices:
        os.environ[VARIABLE] = device
        scores(1), cams(1)  # warm-up: cuDNN picks its kernels, the allocator fills
        (probabilities, scoring), (maps, drawing) = clocked(scores), clocked(cams)
        results[device] = (probabilities, maps)
        speed[device] = (args.breasts / scoring, args.breasts / drawing)
    what = f"{args.kind} {args.backbone}, two views {height} x {width}, batch {args.batch}"
    print(f"inference, {what}, {args.breasts} breasts; CPU: {torch.get_num_threads()} torch threads")
    for device in devices:
        name = torch.cuda.get_device_name() if device == "cuda" else "CPU"
        rates = speed[device]
        print(f"  {name:>24}: scoring {rates[0]:8.1f} breasts/s, Grad-CAM {rates[1]:7.1f} breasts/s")
    if "cuda" not in speed:
        print("  no GPU here: the CPU is the inference device")
        return
    (cpu_p, cpu_m), (gpu_p, gpu_m) = results["cpu"], results["cuda"]
    ratio = [g / c for g, c in zip(speed["cuda"], speed["cpu"])]
    print(f"  GPU / CPU: scoring {ratio[0]:.1f}x, Grad-CAM {ratio[1]:.1f}x")
    gap = max(np.abs(gpu_m[v] - cpu_m[v]).max() for v in VIEWS)
    print(f"  largest difference GPU - CPU: probability {np.abs(gpu_p - cpu_p).max():.1e}, map {gap:.1e}")


if __name__ == "__main__":
    main()
