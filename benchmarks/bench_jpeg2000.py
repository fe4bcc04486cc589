"""JPEG 2000 preprocessed at the resolution the output needs (preprocess.jpeg2000 = 'reduced') against every
pixel decoded ('full') and a bare pydicom decode, side by side on the same files.

    python benchmarks/bench_jpeg2000.py [--breasts 3] [--image-size 4096 3328] [--sizes 1024x512 512x256]

An archive's JPEG 2000 decoding is most of its preprocessing (about 0.6 s an image at full size on one
core); a wavelet level a side coarser decodes about 4x faster. Prints seconds per image and the speed-up,
and how far the two settings' model inputs differ (brightness 0-1): the breast box is found on another
resolution, so the inputs can sit a pixel or two apart; the correlation is taken as they are.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pydicom
from _common import bench_parser, cohort, timed

from mammofuse.config import PreprocessConfig
from mammofuse.imaging.preprocess import preprocess_file


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=3)
    parser.add_argument("--image-size", type=int, nargs=2, default=[4096, 3328])
    parser.add_argument("--sizes", nargs="+", default=["1024x512", "512x256"], help="output sizes, HxW")
    args = parser.parse_args()
    root = cohort(args.root, args.breasts, tuple(args.image_size), "jpeg2000")
    files = sorted(Path(root, "dicom").rglob("*.dcm"))
    bare = np.mean([timed(lambda f=f: pydicom.dcmread(f).pixel_array) for f in files])
    h0, w0 = args.image_size
    print(f"{len(files)} JPEG 2000 images {h0}x{w0}: a bare pydicom decode {bare:.3f} s each")
    for size in args.sizes:
        h, w = (int(v) for v in size.split("x"))
        seconds, made = {}, {}
        for kind in ("full", "reduced"):
            cfg = PreprocessConfig(size=(h, w), jpeg2000=kind)
            start = time.perf_counter()
            made[kind] = [preprocess_file(f, None, cfg).image.astype(np.float64) / 65535 for f in files]
            seconds[kind] = (time.perf_counter() - start) / len(files)
        pairs = list(zip(made["full"], made["reduced"]))
        gap = np.mean([np.abs(a - b).mean() for a, b in pairs])
        least = min(np.corrcoef(a.ravel(), b.ravel())[0, 1] for a, b in pairs)
        full, reduced = seconds["full"], seconds["reduced"]
        print(
            f"output {h}x{w}: full {full:.3f} s ({full / bare:.2f}x a bare decode), reduced {reduced:.3f} s "
            f"({reduced / bare:.2f}x): {full / reduced:.1f}x faster; the inputs differ by {gap:.4f} on "
            f"average, correlation {least:.3f} at the least"
        )


if __name__ == "__main__":
    main()
