"""Preprocessing speed and memory on full-size synthetic mammograms, measured side by side.

Prints: time per image against a bare pydicom decode of the same files (goal: within 1.3x), the
speed-up from 1 to 2 worker processes, a second run on the unchanged cohort against the first
(goal: at least 50x faster), and peak memory for two cohort sizes (goal: flat).

    python benchmarks/bench_preprocess.py [--breasts 12] [--image-size 3000 2400] [--compression none]
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pydicom
from _common import bench_parser, cohort, timed

from mammofuse.cohort.ingest import ingest
from mammofuse.config import load_config
from mammofuse.domain import Side
from mammofuse.imaging.cache import write_display, write_entry
from mammofuse.imaging.preprocess import preprocess_cohort, preprocess_file
from mammofuse.problems import Problems

CHILD = """
import json, resource, sys
from pathlib import Path
import pandas as pd
from mammofuse.config import PreprocessConfig
from mammofuse.imaging.preprocess import preprocess_cohort
from mammofuse.problems import Problems
manifest = pd.read_csv(sys.argv[1]).head(int(sys.argv[2]))
preprocess_cohort(manifest, PreprocessConfig(workers=int(sys.argv[4])), Path(sys.argv[3]), Problems())
usage = [resource.getrusage(who).ru_maxrss for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
peak = max(usage)
print(json.dumps({"peak_mib": peak / 1024}))
"""


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=12)
    parser.add_argument("--image-size", type=int, nargs=2, default=[3000, 2400])
    parser.add_argument("--compression", default="none", choices=["none", "rle", "jpeg2000"])
    args = parser.parse_args()

    root = cohort(args.root, args.breasts, tuple(args.image_size), args.compression)
    cfg = load_config(root / "cohort.toml")
    cfg.preprocess.size = (1024, 512)
    manifest = ingest(cfg, Problems()).manifest
    files = [(p, Side(s)) for col in ("cc_path", "mlo_path") for p, s in zip(manifest[col], manifest["side"])]
    n = len(files)
    out = Path(tempfile.mkdtemp()) / "entry.npy"

    def bare() -> None:
        for path, _ in files:
            pydicom.dcmread(path).pixel_array  # noqa: B018

    def ours() -> None:
        for path, side in files:
            made = preprocess_file(path, side, cfg.preprocess)
            write_display(out, made.display)  # as preprocess writes each entry: with its display copy
            write_entry(out, made.image)

    bare()  # warm the page cache and the decoders
    t_bare, t_ours = timed(bare, repeat=3), timed(ours, repeat=3)
    print(
        f"{n} images {args.image_size[0]}x{args.image_size[1]}, compression {args.compression}, "
        f"output {cfg.preprocess.size[0]}x{cfg.preprocess.size[1]}"
    )
    print(f"bare pydicom decode:            {1000 * t_bare / n:8.1f} ms/image")
    print(
        f"mammofuse preprocess (+ write): {1000 * t_ours / n:8.1f} ms/image   ratio {t_ours / t_bare:.2f}x "
        "(goal <= 1.3x)"
    )

    cache = Path(tempfile.mkdtemp())
    times = {}
    for workers in (1, 2):
        shutil.rmtree(cache, ignore_errors=True)
        cfg.preprocess.workers = workers
        times[workers] = timed(lambda: preprocess_cohort(manifest, cfg.preprocess, cache, Problems()))
    rerun = timed(lambda: preprocess_cohort(manifest, cfg.preprocess, cache, Problems()), repeat=3)
    print(f"first run, 1 worker:            {times[1]:8.2f} s")
    print(f"first run, 2 workers:           {times[2]:8.2f} s   speed-up {times[1] / times[2]:.2f}x")
    print(f"second run, unchanged cohort:   {rerun:8.3f} s   {times[2] / rerun:.0f}x faster (goal >= 50x)")

    table = cache / "manifest.csv"
    manifest.to_csv(table, index=False)
    for rows in (len(manifest) // 2, len(manifest)):
        fresh = Path(tempfile.mkdtemp())
        result = subprocess.run(
            [sys.executable, "-c", CHILD, str(table), str(rows), str(fresh), "2"],
            capture_output=True,
            text=True,
            check=True,
        )
        peak = json.loads(result.stdout.strip().splitlines()[-1])["peak_mib"]
        print(f"peak memory, {2 * rows:4d} images:       {peak:8.0f} MiB")
        shutil.rmtree(fresh)
    shutil.rmtree(cache)


if __name__ == "__main__":
    main()
