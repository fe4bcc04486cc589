"""Models side by side on one high-resolution cohort and one split: test AUC beside the oracle's.

    python benchmarks/highres.py [--breasts 400] [--image-size 640 512] [--presets demo_cpu highres]
                                 [--epochs N] [--root DIR]

A cohort is generated at --image-size (calcifications a few pixels wide), ingested, preprocessed at the
cohort config's size (640 x 320 from 640 x 512) and split once; every preset then trains on that split
and is evaluated. The oracle is the generator's own probability (truth.csv, p_true) on the same test
breasts: the best any model can do. Printed per preset: test AUC [95 % CI], its fraction of the oracle's,
the clinical-only AUC, and the training time. Presets are names or TOML files (relative to the cwd).
"""

from __future__ import annotations

import json
import time
from pathlib import Path

import pandas as pd
from _common import bench_parser, cohort

from mammofuse.cli import main
from mammofuse.evaluation.metrics import auc


def prepare(root: Path, breasts: int, size: tuple[int, int]) -> Path:
    folder = cohort(root, breasts, size)
    config = folder / "cohort.toml"
    if not (folder / "work" / "splits.csv").is_file():
        for stage in ("ingest", "preprocess", "split"):
            assert main([stage, str(config)]) == 0, stage
    return config


def measure(config: Path, preset: str, epochs: int | None) -> dict[str, object]:
    name = Path(preset).stem
    extra = ["--epochs", str(epochs)] if epochs else []
    start = time.perf_counter()
    assert main(["train", str(config), "--preset", preset, "--run", name, "--force", *extra]) == 0
    seconds = time.perf_counter() - start
    run = config.parent / "work" / "runs" / name
    assert main(["evaluate", str(run)]) == 0
    metrics = json.loads((run / "metrics.json").read_text())
    pred = pd.read_csv(run / "predictions.csv")
    test = pred[pred["split"] == "test"]
    truth = pd.read_csv(config.parent / "truth.csv", dtype={"patient_id": str})
    truth["key"] = truth["patient_id"] + "/" + truth["side"]
    oracle = auc(*test.merge(truth, on="key")[["label_x", "p_true"]].to_numpy().T)
    model = metrics["model"]["test"]["auc"]
    return {
        "preset": name,
        "test AUC": f"{model['auc']:.3f} [{model['low']:.3f}, {model['high']:.3f}]",
        "oracle AUC": round(oracle, 3),
        "fraction of oracle": round(model["auc"] / oracle, 3),
        "clinical only": round(metrics["baseline"]["test"]["auc"]["auc"], 3),
        "train s": round(seconds, 1),
    }


def main_() -> None:
    parser = bench_parser(__doc__)
    parser.add_argument("--breasts", type=int, default=400)
    parser.add_argument("--image-size", type=int, nargs=2, default=(640, 512))
    parser.add_argument("--presets", nargs="+", default=["demo_cpu", "highres"])
    parser.add_argument("--epochs", type=int, help="override every preset's epochs")
    args = parser.parse_args()
    config = prepare(args.root, args.breasts, tuple(args.image_size))
    rows = [measure(config, preset, args.epochs) for preset in args.presets]
    print(pd.DataFrame(rows).to_string(index=False))


if __name__ == "__main__":
    main_()
