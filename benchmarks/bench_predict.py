"""`mammofuse predict` on new full-size mammograms: images decoded by 1 process against every core, a
rerun with its preprocessed cache kept (`--cache`), breasts scored one at a time against BATCH at once,
and `--explain`'s overlays drawn by 1 process against every core.

Prints the wall time of scoring the same cohort with 1 worker and with every core, side by side, their
ratio (goal: close to the number of cores, as preprocessing), then a second run into a kept cache
against the first (goal: it decodes nothing), and checks that every run gave the same table; then, from
the kept cache, scoring 1 breast at a time against BATCH (the same table), and the overlays of every
scored breast (Grad-CAM, the original shown from the cache's display copy, the figure drawn) with 1 process
and with every core, and with every core again with the originals decoded (a cache without display copies).
The bundle is the tiny demo model (one epoch, seconds to train); decoding the full-size images is what is
measured, as on a new site's export.

    python benchmarks/bench_predict.py [--breasts 24] [--image-size 2048 1664] [--compression jpeg2000]
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path

import pandas as pd
from _common import bench_parser, cohort, timed

from mammofuse.cli import main as mammofuse
from mammofuse.demo import run_demo
from mammofuse.deploy import predict
from mammofuse.deploy.predict import NewBreasts, predict_breasts
from mammofuse.explain.explain import explain_cases


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=24)
    parser.add_argument("--image-size", type=int, nargs=2, default=[2048, 1664])
    parser.add_argument("--compression", default="jpeg2000", choices=["none", "rle", "jpeg2000"])
    args = parser.parse_args()

    root = cohort(args.root, args.breasts, tuple(args.image_size), args.compression, seed=1)
    demo = args.root / "predict-bundle"
    bundle = demo / "work" / "runs" / "demo_cpu" / "bundle"
    if not (bundle / "bundle.json").is_file():
        assert run_demo(demo, mammofuse, breasts=60, epochs=1, image_size=(64, 52)) == 0
    tables: dict[str, pd.DataFrame] = {}

    def scored(workers: int, cache: Path | None = None, name: str = "") -> None:
        breasts = NewBreasts(root / "dicom", root / "clinical.csv")
        tables[name or str(workers)] = predict_breasts(bundle, breasts, workers=workers, cache=cache).table

    cores = os.cpu_count() or 1
    one, every = timed(lambda: scored(1)), timed(lambda: scored(0))
    cache = Path(tempfile.mkdtemp())
    cold, warm = timed(lambda: scored(0, cache, "cold")), timed(lambda: scored(0, cache, "warm"))
    for other in ("0", "cold", "warm"):
        pd.testing.assert_frame_equal(tables["1"], tables[other])
    n = int((tables["1"]["reason"] == "").sum())
    size = f"{args.image_size[0]} x {args.image_size[1]} px, {args.compression}"
    print(f"predict, {len(tables['1'])} breasts ({n} scored) of {size}:")
    print(f"  1 process {one:.1f} s, {cores} processes {every:.1f} s: {one / every:.2f}x")
    print(f"  into a kept cache {cold:.1f} s, again from it {warm:.1f} s: {cold / warm:.1f}x")
    print("  the same table from all four runs")

    batch = predict.BATCH
    predict.BATCH = 1
    alone = timed(lambda: scored(0, cache, "alone"))
    predict.BATCH = batch
    pd.testing.assert_frame_equal(tables["warm"], tables["alone"], atol=1e-5)
    print(
        f"  from the cache, 1 breast at a time {alone:.1f} s, {batch} at once {warm:.1f} s: "
        f"{alone / warm:.2f}x"
    )

    breasts = NewBreasts(root / "dicom", root / "clinical.csv")
    kept = predict_breasts(bundle, breasts, cache=cache)  # its inputs point into the kept cache
    voi = kept.bundle.config.preprocess.voi == "window"

    def drawn(workers: int) -> None:
        explain_cases(kept.bundle.nets, kept.inputs, voi, cache / f"explain{workers}", workers=workers)

    one, every = timed(lambda: drawn(1)), timed(lambda: drawn(0))
    print(
        f"  --explain, {len(kept.inputs)} overlays: 1 process {one:.1f} s, {cores} processes {every:.1f} s: "
        f"{one / every:.2f}x"
    )
    for copy in cache.rglob("*.png"):  # as a cache made before display copies were kept
        if copy.with_suffix(".npy").is_file():  # not an overlay
            copy.unlink()
    decoding = timed(lambda: drawn(0))
    print(
        f"  --explain, the originals decoded again {decoding:.1f} s, from the cache's display copies "
        f"{every:.1f} s: {decoding / every:.2f}x"
    )
    shutil.rmtree(cache)


if __name__ == "__main__":
    main()
