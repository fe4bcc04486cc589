"""`mammofuse demo`: the whole pipeline on a generated cohort, on a fresh machine, CPU only."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

from mammofuse.cohort import DEFAULT_BREASTS
from mammofuse.cohort.synth import LESIONS
from mammofuse.runs import Work
from mammofuse.ui import console

DEMO_IMAGE_SIZE = (256, 208)
DEMO_PRESET = "demo_cpu"
DEMO_RECORD = "demo.json"  # the options of the cohort in the output folder, once it is whole


def run_demo(
    out: Path,
    run: Callable[[list[str]], int],
    breasts: int = DEFAULT_BREASTS,
    seed: int = 0,
    epochs: int | None = None,
    image_size: tuple[int, int] = DEMO_IMAGE_SIZE,
) -> int:
    """synth -> ingest -> preprocess -> split -> train -> evaluate -> explain -> report, each through `run`
    (one command line, as a user would type it); stop at the first failure."""
    start = time.perf_counter()
    cohort = out / "cohort"
    config = str(cohort / "cohort.toml")
    work = Work(out / "work")
    run_dir = work.run(DEMO_PRESET)
    h, w = image_size
    synth = [
        "synth",
        str(cohort),
        "--breasts",
        str(breasts),
        "--seed",
        str(seed),
        "--image-size",
        str(h),
        str(w),
    ]
    train = ["train", config, "--work", str(work.dir), "--preset", DEMO_PRESET]
    train += ["--epochs", str(epochs)] if epochs else []
    wanted = {"breasts": breasts, "seed": seed, "image_size": [h, w]}
    record = out / DEMO_RECORD
    before = json.loads(record.read_text()) if record.is_file() else None
    if before is not None and before != wanted:  # the run's model was trained on that other cohort
        console.print(
            f"{out} held the demo of another cohort ({_options(before)}): its model is trained again"
        )
        train.append("--force")
    kept = before == wanted and Path(config).is_file()  # a rerun keeps its cohort, and so the cache's entries
    if kept:
        console.print(f"cohort: {cohort}, generated before ({_options(wanted)})")
    lesions = cohort / LESIONS  # where the generator drew each tumour: do the maps point at them?
    regions = ["--regions", str(lesions)] if not kept or lesions.is_file() else []
    steps = [
        *([] if kept else [synth]),
        ["ingest", config, "--out", str(work.dir)],
        ["preprocess", config, "--work", str(work.dir), "--preview", "8"],
        ["split", config, "--work", str(work.dir)],
        train,
        ["evaluate", str(run_dir.dir)],
        ["explain", str(run_dir.dir), "--n", "2", *regions],
        ["report", str(run_dir.dir)],
    ]
    for argv in steps:
        if argv is train:  # the cohort is whole: this folder now holds its demo
            record.write_text(json.dumps(wanted), encoding="utf-8")
        console.rule(f"mammofuse {argv[0]}")
        code = run(argv)
        if code:
            return code
    console.rule("done")
    console.print(f"outputs in {out} ({time.perf_counter() - start:.0f} s)")
    console.print(f"model run: {run_dir.dir} (metrics.json, predictions.csv, figures/, explain/, bundle/)")
    console.print(f"[bold]open the report: {run_dir.report}[/]")
    console.print(f"look at the inputs: {work.preview}")
    site2 = out / "site2"
    console.print(
        "next, the model at another hospital, on breasts it never saw (its own scanner and export, read with "
        f"its own cohort.toml): mammofuse synth {site2} --site b --seed {seed + 1} --breasts 300 "
        f"--image-size {h} {w} && mammofuse predict {run_dir.bundle} --cohort {site2 / 'cohort.toml'} "
        f"--labels --out {site2 / 'predictions.csv'}",
        soft_wrap=True,  # one line for the terminal to fold: it copies as one command
    )
    console.print(
        f"would more breasts help? mammofuse curve {config} --work {work.dir} --preset demo_cpu "
        f"(a learning curve); how many would a validation need? mammofuse samplesize {run_dir.dir}",
        soft_wrap=True,
    )
    return 0


def _options(options: dict) -> str:
    h, w = options["image_size"]
    return f"--breasts {options['breasts']} --seed {options['seed']} --image-size {h} {w}"
