"""Is loading ever the bottleneck? Training batches/s from the cache (with augmentation) against the
model's own training step at the same batch size, measured side by side.

    python benchmarks/bench_loader.py [--size 512 256] [--batch 16] [--backbone resnet18]
"""

from __future__ import annotations

import time

import torch
from _common import bench_parser, prepared_data, train_step
from torch.utils.data import DataLoader


def batches_per_second(loader: DataLoader, n: int) -> float:
    n = min(n, len(loader) - 1)
    it = iter(loader)
    next(it)  # workers started, first batch ready
    start = time.perf_counter()
    for _ in range(n):
        next(it)
    return n / (time.perf_counter() - start)


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--size", type=int, nargs=2, default=[512, 256])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--backbone", default="resnet18")
    parser.add_argument("--batches", type=int, default=8)
    args = parser.parse_args()

    cfg, data = prepared_data(args.root, 160, (1024, 832), {"size": tuple(args.size)})
    cfg.model.backbone, cfg.model.pretrained = args.backbone, "none"
    step = train_step(cfg, len(data.encoder.feature_names))
    batch = next(iter(DataLoader(data.train, batch_size=args.batch, shuffle=True)))
    step(batch)
    start = time.perf_counter()
    for _ in range(3):
        step(batch)
    model_rate = 3 / (time.perf_counter() - start)

    print(
        f"{args.backbone}, {args.size[0]}x{args.size[1]}, batch {args.batch}, augmentation on, "
        f"{torch.get_num_threads()} torch threads, {'GPU' if torch.cuda.is_available() else 'CPU'}"
    )
    print(f"model training step:            {model_rate:8.2f} batches/s")
    for workers in (0, 2):
        loader = DataLoader(
            data.train,
            batch_size=args.batch,
            shuffle=True,
            num_workers=workers,
            persistent_workers=workers > 0,
        )
        rate = batches_per_second(loader, args.batches)
        print(
            f"loader from cache, {workers} workers:   {rate:8.2f} batches/s   "
            f"{rate / model_rate:6.1f}x the model's rate (goal > 1)"
        )


if __name__ == "__main__":
    main()
