"""`mammofuse explain RUN_DIR`: Grad-CAM overlays for the test breasts that matter most.

Highest and lowest scores, and the largest errors at the validation-chosen threshold (false
positives with the highest scores, false negatives with the lowest). Cases are named by their row
number in the run's data.csv, never by patient.
"""

from __future__ import annotations

import json
from functools import lru_cache
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import torch

from mammofuse.data.clinical import ClinicalEncoder
from mammofuse.domain import VIEWS, View
from mammofuse.explain.gradcam import gradcam
from mammofuse.explain.overlays import case_figure
from mammofuse.imaging.cache import load_entry
from mammofuse.imaging.decode import decode, meta_from_dataset
from mammofuse.imaging.geometry import Geometry, map_to_original
from mammofuse.models import TwoViewNet
from mammofuse.problems import DataError
from mammofuse.training.run import load_net, load_run_config

EXPLAIN = "explain"


def select_cases(pred: pd.DataFrame, threshold: float, n: int) -> list[tuple[str, int]]:
    """(category, index into pred) for the breasts worth looking at, each at most once per category."""
    by_score = pred.sort_values("probability", kind="stable")
    fp = by_score[(by_score["label"] == 0) & (by_score["probability"] >= threshold)]
    fn = by_score[(by_score["label"] == 1) & (by_score["probability"] < threshold)]
    groups = {
        "highest": by_score.index[::-1][:n],
        "lowest": by_score.index[:n],
        "false-positive": fp.index[::-1][:n],
        "false-negative": fn.index[:n],
    }
    return [(name, int(i)) for name, idx in groups.items() for i in idx]


@lru_cache(maxsize=4)
def _cache_index(index_path: Path) -> dict:
    return json.loads(index_path.read_text(encoding="utf-8"))["entries"]


def geometry_of(cache_path: str) -> Geometry:
    """The geometry recorded in the cache index for one entry (the index is read once per run)."""
    path = Path(cache_path)
    return Geometry.from_dict(_cache_index(path.parent.parent / "index.json")[path.stem]["geometry"])


def original_image(path: str, voi: bool) -> np.ndarray:
    ds = pydicom.dcmread(path)
    return decode(ds.pixel_array, meta_from_dataset(ds), voi)


def explain_breast(
    net: TwoViewNet, pre: dict[View, np.ndarray], clinical: np.ndarray
) -> dict[View, np.ndarray]:
    """Grad-CAM maps of one breast at the preprocessed resolution."""
    x = {v: torch.from_numpy(pre[v])[None, None] for v in VIEWS}  # (1, 1, H, W)
    maps = gradcam(net, x[View.CC], x[View.MLO], torch.from_numpy(clinical)[None])
    return {v: maps[v][0] for v in VIEWS}


def case_maps(net, row: pd.Series, clinical: np.ndarray, voi: bool, with_original: bool = True):
    """(preprocessed images, maps, original images, maps on the original geometry) of one breast."""
    pre = {v: load_entry(row[f"{v.value.lower()}_cache"]) for v in VIEWS}
    cams = explain_breast(net, pre, clinical)
    if not with_original:
        return pre, cams, None, None
    original = {v: original_image(row[f"{v.value.lower()}_path"], voi) for v in VIEWS}
    back = {v: map_to_original(cams[v], geometry_of(row[f"{v.value.lower()}_cache"])) for v in VIEWS}
    return pre, cams, original, back


def explain_run(run_dir: Path, n: int = 3) -> pd.DataFrame:
    """Write RUN_DIR/explain/*.png and explain/index.csv; return the index."""
    if not (run_dir / "predictions.csv").is_file():
        raise DataError(f"{run_dir}: no predictions.csv; run `mammofuse evaluate` first")
    cfg = load_run_config(run_dir)
    data = pd.read_csv(run_dir / "data.csv", dtype={"patient_id": str, "side": str})
    data["key"] = data["patient_id"] + "/" + data["side"]
    encoder = ClinicalEncoder.load(run_dir / "encoder.json")
    net = load_net(run_dir, len(encoder.feature_names))
    pred = pd.read_csv(run_dir / "predictions.csv")
    pred = pred[pred["split"] == "test"].reset_index(drop=True)
    threshold = json.loads((run_dir / "metrics.json").read_text())["model"]["test"]["at_youden"]["threshold"]
    row_of = {key: i for i, key in enumerate(data["key"])}

    out = run_dir / EXPLAIN
    out.mkdir(exist_ok=True)
    records = []
    for rank, (category, i) in enumerate(select_cases(pred, threshold, n)):
        p = pred.loc[i]
        r = row_of[p["key"]]
        row = data.loc[r]
        pre, cams, original, back = case_maps(
            net, row, encoder.transform(data.loc[[r]])[0], cfg.preprocess.voi == "window"
        )
        title = f"{category}: row {r + 1}, label {int(p['label'])}, probability {p['probability']:.2f}"
        name = f"{category}-{rank:02d}-row{r + 1}.png"
        case_figure(pre, cams, original, back, title).savefig(out / name, dpi=100)
        records.append(
            {
                "file": name,
                "category": category,
                "row": r + 1,
                "label": int(p["label"]),
                "probability": float(p["probability"]),
            }
        )
    index = pd.DataFrame(records)
    index.to_csv(out / "index.csv", index=False)
    return index
