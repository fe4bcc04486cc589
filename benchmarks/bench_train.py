"""Training throughput through the real loader (cache + augmentation) against in-memory tensors, for the
same model and batch, side by side (goal: within 10 %). resnet18 at the study's 200x200 (seed parity)
and at 512x256 (breast crop).

    python benchmarks/bench_train.py [--batch 16] [--steps 3] [--backbone resnet18]
"""

from __future__ import annotations

import itertools
import time

import torch
from _common import bench_parser, prepared_data, train_step
from torch.utils.data import DataLoader

SETTINGS = {
    "200x200 (seed parity)": {"mode": "seed_parity", "parity_resize": 256, "parity_crop": 200},
    "512x256 (breast)": {"mode": "breast", "size": (512, 256)},
}


def samples_per_second(step, batches, n: int, batch: int) -> float:
    step(next(batches))  # warm-up: allocator, kernels, loader workers
    start = time.perf_counter()
    for _ in range(n):
        step(next(batches))
    return n * batch / (time.perf_counter() - start)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--workers", type=int, nargs="+", default=[0, 2], help="loader processes to compare")
    args = parser.parse_args()
    device = "GPU" if torch.cuda.is_available() else "CPU"
    threads = torch.get_num_threads()
    print(f"{args.backbone}, batch {args.batch}, {args.steps} steps, {device}, {threads} torch threads")
    for name, settings in SETTINGS.items():
        cfg, data = prepared_data(args.root, 160, (1024, 832), settings)
        cfg.model.backbone, cfg.model.pretrained = args.backbone, "none"
        step = train_step(cfg, len(data.encoder.feature_names))
        fixed = next(iter(DataLoader(data.train, batch_size=args.batch)))
        memory = samples_per_second(step, itertools.repeat(fixed), args.steps, args.batch)
        for workers in args.workers:
            loader = DataLoader(
                data.train,
                batch_size=args.batch,
                shuffle=True,
                drop_last=True,
                num_workers=workers,
                persistent_workers=workers > 0,
            )
            real = samples_per_second(
                step, itertools.chain.from_iterable(itertools.repeat(loader)), args.steps, args.batch
            )
            print(
                f"{name:24s} {workers} loader workers: real loader {real:7.2f} samples/s | in-memory "
                f"{memory:7.2f} samples/s | ratio {real / memory:.2f} (goal >= 0.90)"
            )


if __name__ == "__main__":
    main()
