"""`mammofuse demo`: the whole pipeline on a generated cohort, on a fresh machine, CPU only."""

from __future__ import annotations

import time
from pathlib import Path

from mammofuse.cli import main as cli
from mammofuse.cohort.synth import DEFAULT_BREASTS
from mammofuse.ui import console

DEMO_IMAGE_SIZE = (256, 208)
DEMO_PRESET = "demo_cpu"


def run_demo(out: Path, breasts: int = DEFAULT_BREASTS, seed: int = 0) -> int:
    """synth -> ingest -> preprocess -> split -> train -> evaluate -> explain -> report; stop at the first
    failure."""
    start = time.perf_counter()
    cohort = out / "cohort"
    config = str(cohort / "cohort.toml")
    work = str(out / "work")
    h, w = DEMO_IMAGE_SIZE
    run_dir = out / "work" / "runs" / DEMO_PRESET
    steps = [
        [
            "synth",
            str(cohort),
            "--breasts",
            str(breasts),
            "--seed",
            str(seed),
            "--image-size",
            str(h),
            str(w),
        ],
        ["ingest", config, "--out", work],
        ["preprocess", config, "--work", work, "--preview", "8"],
        ["split", config, "--work", work],
        ["train", config, "--work", work, "--preset", DEMO_PRESET],
        ["evaluate", str(run_dir)],
        ["explain", str(run_dir), "--n", "2"],
        ["report", str(run_dir)],
    ]
    for argv in steps:
        console.rule(f"mammofuse {argv[0]}")
        code = cli(argv)
        if code:
            return code
    console.rule("done")
    console.print(f"outputs in {out} ({time.perf_counter() - start:.0f} s)")
    console.print(f"model run: {run_dir} (metrics.json, predictions.csv, figures/, explain/, bundle/)")
    console.print(f"[bold]open the report: {run_dir / 'report.html'}[/]")
    console.print(f"look at the inputs: {out / 'work' / 'preview.png'}")
    return 0
