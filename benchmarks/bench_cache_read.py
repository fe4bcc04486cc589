"""What the checksum on every training read costs: reading a cached array with and without its crc32
check, for the study's sizes; and what a memory-mapped read would save (the crc32 touches every byte, so
the map is read whole anyway), beside the raw read the device path makes (uint16, no conversion).

Goal: the check costs a small fraction of the read (it is on by default; `preprocess --verify` is no
longer the only guard against bits flipped on disk). The last column is the most breasts (two views) one
loader process can serve on the device path: how many processes keep a GPU fed.

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
    print(
        f"{'array':>12}  {'np.load':>9}  {'crc32':>9}  {'load_entry':>10}  crc32 / load_entry  "
        f"{'mmap+crc32':>10}  {'raw entry':>9}  breasts/s per process (raw)"
    )
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
            mapped = timed(lambda ps=paths: [mapped_read(p) for p in ps], repeat=5) / args.n
            raw = timed(lambda ps=paths: [cache.load_entry(p, raw=True) for p in ps], repeat=5) / args.n
            print(
                f"{shape[0]:>5}x{shape[1]:<6}  {plain * 1e3:7.3f}ms  {crc * 1e3:7.3f}ms  {full * 1e3:8.3f}ms"
                f"  {crc / full:18.1%}  {mapped * 1e3:8.3f}ms  {raw * 1e3:7.3f}ms  {1 / (2 * raw):8.0f}"
            )


def mapped_read(path) -> np.ndarray:
    """A memory-mapped entry, checked and copied out (a batch needs its own memory)."""
    arr = np.load(path, mmap_mode="r")
    cache.checksum(arr)
    return np.array(arr)


if __name__ == "__main__":
    main()
