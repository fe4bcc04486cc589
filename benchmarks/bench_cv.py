"""Cross-validation against single runs: wall time and how much narrower the AUC interval becomes.

On one generated cohort (ingested, preprocessed and split once), with the demo_cpu preset:
- `mammofuse cv` with K folds against K runs of `mammofuse train` + `evaluate` of the same epochs
  (goal: within 1.1x; the cache is shared, nothing is decoded again);
- the width of the test-split AUC interval of the single run against the pooled out-of-fold interval
  (goal: at least 1.7x narrower), both from the patient-level bootstrap.
"""

from __future__ import annotations

import shutil
import time

from _common import bench_parser, cohort

from mammofuse.cli import main
from mammofuse.runs import Run


def run(argv: list[str]) -> float:
    start = time.perf_counter()
    assert main(argv) == 0, argv
    return time.perf_counter() - start


def width(low: float, high: float) -> float:
    return high - low


def bench() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=1112, help="cohort size (default: the demo's 1,112)")
    parser.add_argument("--size", type=int, nargs=2, default=[256, 208], metavar=("H", "W"))
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=3)
    args = parser.parse_args()
    source = cohort(args.root, args.breasts, tuple(args.size))
    work = source / "work"
    shutil.rmtree(work, ignore_errors=True)
    config = str(source / "cohort.toml")
    for stage in ("ingest", "preprocess", "split"):
        run([stage, config])
    epochs = ["--preset", "demo_cpu", "--epochs", str(args.epochs)]

    single = 0.0
    for k in range(args.folds):
        single += run(["train", config, *epochs, "--run", f"single-{k}"])
        single += run(["evaluate", str(work / "runs" / f"single-{k}")])
    cv = run(["cv", config, *epochs, "--folds", str(args.folds)])

    test = Run(work / "runs" / "single-0").read_evaluation().model.test
    pooled = Run(work / "runs" / "demo_cpu-cv").read_cv_evaluation().model.auc
    single_width, pooled_width = width(test.auc.low, test.auc.high), width(pooled.low, pooled.high)
    print(
        f"\ncohort: {args.breasts} breasts at {args.size[0]} x {args.size[1]}, demo_cpu, {args.epochs} epochs"
    )
    print(
        f"{args.folds} x (train + evaluate): {single:.1f} s   cv: {cv:.1f} s   cv / single {cv / single:.2f}"
    )
    split = f"{test.n} breasts, {test.positives} positive"
    print(f"test-split AUC {test.auc.text} ({split}): width {single_width:.3f}")
    print(f"pooled out-of-fold AUC {pooled.text}: width {pooled_width:.3f}")
    print(f"the out-of-fold interval is {single_width / pooled_width:.2f}x narrower")


if __name__ == "__main__":
    bench()
