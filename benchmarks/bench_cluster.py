"""Preprocessing on a Dask cluster: 1 against 2 workers, beside today's local process pool, side by side.

    python benchmarks/bench_cluster.py [--breasts 24] [--image-size 1536 1200] [--compression jpeg2000]

JPEG 2000 decoding dominates an archive's preprocessing (about 0.6 s an image at full size), so the
cohort is written in JPEG 2000 by default. Each setting builds the cache from scratch (a new cache
folder) with `preprocess_cohort`, as `mammofuse preprocess --cluster` does; the cluster start-up is
included. Prints seconds and images per second, and the speed-up of 2 workers over 1.
"""

from __future__ import annotations

import tempfile
from pathlib import Path

from _common import bench_parser, cohort, timed

from mammofuse.cohort.ingest import ingest
from mammofuse.config import load_config
from mammofuse.imaging.preprocess import preprocess_cohort
from mammofuse.problems import Problems


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=24)
    parser.add_argument("--image-size", type=int, nargs=2, default=[1536, 1200])
    parser.add_argument("--compression", default="jpeg2000", choices=["none", "rle", "jpeg2000"])
    args = parser.parse_args()
    root = cohort(args.root, args.breasts, tuple(args.image_size), args.compression)
    cfg = load_config(root / "cohort.toml")
    manifest = ingest(cfg, Problems()).manifest
    images = 2 * len(manifest)
    settings = {
        "local processes, 1": {"workers": 1},
        "local processes, 2": {"workers": 2},
        "dask local:1": {"cluster": "local:1"},
        "dask local:2": {"cluster": "local:2"},
    }
    seconds = {}
    for name, update in settings.items():
        pre = cfg.preprocess.model_copy(update=update)
        seconds[name] = timed(
            lambda pre=pre: preprocess_cohort(manifest, pre, Path(tempfile.mkdtemp()), Problems())
        )
        print(f"{name:20s} {seconds[name]:7.1f} s  {images / seconds[name]:6.1f} images/s")
    print(f"{images} images {args.image_size[0]}x{args.image_size[1]} ({args.compression})")
    print(f"dask 2 workers vs 1: {seconds['dask local:1'] / seconds['dask local:2']:.2f}x faster")
    print(
        f"dask 2 workers vs local processes 2: {seconds['local processes, 2'] / seconds['dask local:2']:.2f}x"
    )


if __name__ == "__main__":
    main()
