"""Shared helpers for the benchmarks: a cohort made once per settings, and a timer."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path

from mammofuse.cohort.synth import SynthOptions, synthesize


def cohort(root: Path, breasts: int, size: tuple[int, int], compression: str = "none", seed: int = 0) -> Path:
    """A synthetic cohort under `root`, reused when it already exists with these settings."""
    out = root / f"cohort-{breasts}-{size[0]}x{size[1]}-{compression}-{seed}"
    if not (out / "cohort.toml").is_file():
        synthesize(out, SynthOptions(breasts=breasts, seed=seed, image_size=size, compression=compression))
    return out


def timed(fn: Callable[[], object], repeat: int = 1) -> float:
    """Best wall time of `repeat` calls, in seconds."""
    best = float("inf")
    for _ in range(repeat):
        start = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - start)
    return best
