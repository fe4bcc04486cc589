"""`mammofuse evaluate RUN_DIR`: the best checkpoint on the test split, beside the clinical-only baseline.

Writes RUN_DIR/predictions.csv (key, split, label, probability, baseline probability),
RUN_DIR/metrics.json and RUN_DIR/figures/*.png. The decision threshold is chosen on validation
(Youden) and then applied to test unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn.linear_model import LogisticRegression

from mammofuse.bundle import write_bundle
from mammofuse.data.clinical import ClinicalEncoder
from mammofuse.data.dataset import BreastDataset
from mammofuse.data.splits import TEST, TRAIN, VAL
from mammofuse.evaluation import metrics, plots
from mammofuse.problems import DataError
from mammofuse.training.module import predict
from mammofuse.training.run import EPOCHS, load_net, load_run_config, loader

MODEL, BASELINE = "image + clinical", "clinical only"


def clinical_baseline(
    encoder: ClinicalEncoder, data: pd.DataFrame, seed: int
) -> dict[str, np.ndarray] | None:
    """Logistic regression on the same encoded clinical data and split: what do the images add?"""
    if not encoder.feature_names:
        return None
    train = data[data["split"] == TRAIN]
    model = LogisticRegression(max_iter=2000, random_state=seed).fit(encoder.transform(train), train["label"])
    return {s: model.predict_proba(encoder.transform(data[data["split"] == s]))[:, 1] for s in (VAL, TEST)}


def evaluate_run(run_dir: Path) -> dict:
    cfg = load_run_config(run_dir)
    data = pd.read_csv(run_dir / "data.csv", dtype={"patient_id": str, "side": str})
    encoder = ClinicalEncoder.load(run_dir / "encoder.json")
    if not (run_dir / "checkpoints" / "best.ckpt").is_file():
        raise DataError(f"{run_dir}: no checkpoints/best.ckpt; train first (mammofuse train)")
    net = load_net(run_dir, len(encoder.feature_names))

    preds: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {}
    for split in (VAL, TEST):
        part = data[data["split"] == split].reset_index(drop=True)
        preds[split] = predict(net, loader(BreastDataset(part, encoder.transform(part)), cfg))
    baseline = clinical_baseline(encoder, data, cfg.train.seed)

    (val_p, val_y, _), (test_p, test_y, _) = preds[VAL], preds[TEST]
    if len(np.unique(test_y)) < 2:
        raise DataError("the test split has only one class: no AUC can be computed")
    threshold = metrics.youden_threshold(val_y, val_p)
    result: dict = {
        "run": str(run_dir),
        "model": {"test": metrics.summary(test_y, test_p, threshold), "val_auc": metrics.auc(val_y, val_p)},
    }
    rows = []
    for split, (p, y, keys) in preds.items():
        for i, (key, label, prob) in enumerate(zip(keys, y, p)):
            row = {"key": key, "split": split, "label": int(label), "probability": float(prob)}
            if baseline is not None:
                row["baseline_probability"] = float(baseline[split][i])
            rows.append(row)
    pd.DataFrame(rows).to_csv(run_dir / "predictions.csv", index=False)

    curves = {MODEL: (test_y, test_p)}
    if baseline is not None:
        base_threshold = metrics.youden_threshold(val_y, baseline[VAL])
        result["baseline"] = {
            "test": metrics.summary(test_y, baseline[TEST], base_threshold),
            "val_auc": metrics.auc(val_y, baseline[VAL]),
        }
        result["comparison"] = metrics.paired_auc_difference(test_y, test_p, baseline[TEST])
        curves[BASELINE] = (test_y, baseline[TEST])
    (run_dir / "metrics.json").write_text(json.dumps(result, indent=2), encoding="utf-8")
    _figures(run_dir, result, curves)
    write_bundle(run_dir, net, result)
    return result


def auc_text(summary: dict) -> str:
    return metrics.ci_text(summary["auc"])


def metric_rows(result: dict) -> list[dict[str, str]]:
    """The model and the clinical-only baseline as formatted rows (terminal table and report)."""
    rows = []
    for name, key in ((MODEL, "model"), (BASELINE, "baseline")):
        if key in result:
            test = result[key]["test"]
            at = test["at_youden"]
            rows.append(
                {
                    "name": name,
                    "auc": auc_text(test),
                    "val_auc": f"{result[key]['val_auc']:.3f}",
                    "brier": f"{test['brier']:.3f}",
                    **{k: f"{at[k]:.2f}" for k in ("sensitivity", "specificity", "ppv", "npv", "accuracy")},
                }
            )
    return rows


def _figures(run_dir: Path, result: dict, curves: plots.Curves) -> None:
    out = run_dir / "figures"
    out.mkdir(exist_ok=True)
    aucs = {MODEL: auc_text(result["model"]["test"])}
    if "baseline" in result:
        aucs[BASELINE] = auc_text(result["baseline"]["test"])
    figures = {
        "roc": plots.roc_figure(curves, aucs),
        "pr": plots.pr_figure(curves),
        "calibration": plots.calibration_figure(curves),
    }
    if (run_dir / EPOCHS).is_file():
        figures["training"] = plots.training_figure(pd.read_csv(run_dir / EPOCHS))
    for name, fig in figures.items():
        fig.savefig(out / f"{name}.png", dpi=110)
