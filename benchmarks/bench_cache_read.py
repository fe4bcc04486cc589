"""What the checksum on every training read costs: reading a cached array with and without its crc32
check, beside decoding the DICOM it replaces, for the study's sizes.

Goal: the check costs a small fraction of the read (it is on by default; `preprocess --verify` is no
longer the only guard against bits flipped on disk).

    python benchmarks/bench_cache_read.py [--n 200]
"""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np
from _common import bench_parser, timed

from mammofuse.imaging import cache


def main() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--n", type=int, default=200, help="arrays per size")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"{'array':>12}  {'np.load':>9}  {'crc32':>9}  {'load_entry':>10}  crc32 / load_entry")
    with tempfile.TemporaryDirectory() as tmp:
        for shape in [(256, 208), (1024, 512), (2048, 1024)]:
            store = cache.Cache(Path(tmp), {"shape": list(shape)})
            paths = []
            for i in range(args.n):
                key = f"{i:024x}"
                arr = cache.quantize(rng.random(shape, dtype=np.float32))
                store.record(key, cache.write_entry(store.path(key), arr))
                paths.append(store.path(key))
            store.save_index()
            arrays = [np.load(p, allow_pickle=False) for p in paths]  # the files are in the page cache
            plain = timed(lambda ps=paths: [np.load(p, allow_pickle=False) for p in ps], repeat=5) / args.n
            crc = timed(lambda arrs=arrays: [cache.checksum(a) for a in arrs], repeat=5) / args.n
            full = timed(lambda ps=paths: [cache.load_entry(p) for p in ps], repeat=5) / args.n
            print(
                f"{shape[0]:>5}x{shape[1]:<6}  {plain * 1e3:7.3f}ms  {crc * 1e3:7.3f}ms  {full * 1e3:8.3f}ms"
                f"  {crc / full:6.1%}"
            )


if __name__ == "__main__":
    main()
