"""Header scan speed: `mammofuse ingest`'s header reading against a full pixel read of the same files.

python benchmarks/bench_ingest.py [--breasts 100] [--image-size 2048 1664] [--compression none]
"""

from __future__ import annotations

import pydicom
from _common import bench_parser, cohort, timed

from mammofuse.cohort.images import read_header


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=100)
    parser.add_argument("--image-size", type=int, nargs=2, default=[2048, 1664])
    parser.add_argument("--compression", default="none", choices=["none", "rle", "jpeg2000"])
    args = parser.parse_args()

    root = cohort(args.root, args.breasts, tuple(args.image_size), args.compression)
    files = sorted((root / "dicom").rglob("*.dcm"))
    timed(lambda: [p.read_bytes() for p in files])  # warm the page cache so both sides read from memory
    headers = timed(lambda: [read_header(p) for p in files], repeat=3)
    pixels = timed(lambda: [pydicom.dcmread(p).pixel_array for p in files], repeat=1)
    n = len(files)
    print(f"{n} files, {args.image_size[0]}x{args.image_size[1]}, compression {args.compression}")
    print(f"header scan (mammofuse read_header): {n / headers:10.0f} files/s")
    print(f"full pixel read (pydicom):           {n / pixels:10.0f} files/s")
    print(f"ratio header scan / full read:       {pixels / headers:10.1f}x faster")


if __name__ == "__main__":
    main()
