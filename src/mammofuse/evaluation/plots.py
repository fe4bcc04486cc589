"""Figures: each function returns a matplotlib Figure and leaves saving to the caller."""

from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (labels, probabilities)


def roc_figure(curves: Curves, aucs: dict[str, str]) -> Figure:
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, label=f"{name} {aucs.get(name, '')}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title="ROC (test)")
    ax.legend(loc="lower right", fontsize=8)
    return fig


def pr_figure(curves: Curves) -> Figure:
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
        prevalence = float(np.mean(y))
    ax.axhline(prevalence, ls=":", c="grey", label=f"prevalence {prevalence:.2f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall (test)")
    ax.legend(fontsize=8)
    return fig


def calibration_figure(curves: Curves, bins: int = 5) -> Figure:
    fig = Figure(figsize=(4.5, 4.5), layout="constrained")
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        frac, mean = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="predicted probability", ylabel="observed fraction positive", title="Calibration (test)")
    ax.legend(fontsize=8)
    return fig


def training_figure(epochs: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss, acc = fig.subplots(1, 2)
    loss.plot(epochs["epoch"], epochs["train_loss"], label="train")
    loss.plot(epochs["epoch"], epochs["val_loss"], label="validation")
    loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc.plot(epochs["epoch"], epochs["train_acc"], label="train accuracy")
    acc.plot(epochs["epoch"], epochs["val_acc"], label="validation accuracy")
    acc.plot(epochs["epoch"], epochs["val_auc"], label="validation AUC")
    acc.set(xlabel="epoch", ylim=(0, 1), title="Accuracy and AUC")
    for ax in (loss, acc):
        ax.legend(fontsize=8)
    return fig
