"""Figures: each function returns a matplotlib Figure and leaves saving to the caller."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from sklearn.calibration import calibration_curve
from sklearn.metrics import precision_recall_curve, roc_curve

from mammofuse.evaluation import metrics

Curves = dict[str, tuple[np.ndarray, np.ndarray]]  # name -> (labels, probabilities)
FONT: dict[str, Any] = {"font.size": 12, "axes.titlesize": 13, "legend.fontsize": 10}  # legible in the report
F = TypeVar("F", bound=Callable[..., Figure])


def legible(make: F) -> F:
    """Make the figure with fonts that stay readable when the report shows it at its column's width."""

    @functools.wraps(make)
    def wrapped(*args: Any, **kwargs: Any) -> Figure:
        with matplotlib.rc_context(FONT):  # type: ignore[arg-type]
            return make(*args, **kwargs)

    return wrapped  # type: ignore[return-value]


@legible
def roc_figure(
    curves: Curves,
    aucs: dict[str, str],
    where: str = "test",
    operating: dict[str, tuple[float, float]] | None = None,
) -> Figure:
    """ROC curves; `operating`: name -> (1 - specificity, sensitivity) at the chosen threshold, marked."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    for i, (name, (y, p)) in enumerate(curves.items()):
        fpr, tpr, _ = roc_curve(y, p)
        ax.plot(fpr, tpr, lw=2, c=f"C{i}", label=f"{name} {aucs.get(name, '')}")
        if operating and name in operating:
            ax.plot(*operating[name], "o", ms=9, mfc="white", mew=2, c=f"C{i}")
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(xlabel="1 - specificity", ylabel="sensitivity", title=f"ROC ({where})")
    if operating:
        ax.plot(
            [], [], "o", mfc="white", mew=2, c="grey", label="operating point (threshold from validation)"
        )
    ax.legend(loc="lower right", fontsize=10)
    return fig


@legible
def decision_figure(curves: Curves, where: str = "test") -> Figure:
    """Net benefit against the threshold probability for each model, beside treating every breast as
    positive and treating none (Vickers & Elkin 2006)."""
    thresholds = np.linspace(0.01, 0.8, 80)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    prevalence = float(np.mean(next(iter(curves.values()))[0]))
    for name, (y, p) in curves.items():
        ax.plot(thresholds, metrics.net_benefit(y, p, thresholds), lw=2, label=name)
    ax.plot(
        thresholds,
        prevalence - (1 - prevalence) * thresholds / (1 - thresholds),
        c="grey",
        ls="--",
        label="treat all as positive",
    )
    ax.axhline(0, c="black", lw=1, label="treat none")
    ax.set(
        xlabel="threshold probability",
        ylabel="net benefit",
        ylim=(-0.05, max(prevalence, 0.05) * 1.15),
        title=f"Decision curve ({where})",
    )
    ax.legend(fontsize=10)
    return fig


@legible
def pr_figure(curves: Curves) -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ax.plot(recall, precision, label=name)
        prevalence = float(np.mean(y))
    ax.axhline(prevalence, ls=":", c="grey", label=f"prevalence {prevalence:.2f}")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall (test)")
    ax.legend(fontsize=10)
    return fig


@legible
def calibration_figure(curves: Curves, bins: int = 5, where: str = "test") -> Figure:
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        frac, mean = calibration_curve(y, p, n_bins=bins, strategy="quantile")
        ax.plot(mean, frac, marker="o", label=name)
    ax.plot([0, 1], [0, 1], ls=":", c="grey")
    ax.set(
        xlabel="predicted probability", ylabel="observed fraction positive", title=f"Calibration ({where})"
    )
    ax.legend(fontsize=10)
    return fig


@legible
def overfitting_figure(runs: dict[str, list[pd.DataFrame]]) -> Figure:
    """Train (dashed) and validation (solid) AUC per epoch, one colour per setup, one line per fold:
    the gap between them is the overfitting."""
    fig = Figure(figsize=(6.5, 4), layout="constrained")
    ax = fig.subplots()
    for i, (name, folds) in enumerate(runs.items()):
        colour = f"C{i}"
        for j, epochs in enumerate(folds):
            label = name if j == 0 else None
            if "train_auc" in epochs:
                ax.plot(epochs["epoch"], epochs["train_auc"], ls="--", c=colour, alpha=0.6)
            ax.plot(epochs["epoch"], epochs["val_auc"], c=colour, alpha=0.8, label=label)
    ax.axhline(0.5, ls=":", c="grey")
    ax.set(xlabel="epoch", ylabel="AUC", ylim=(0.3, 1.0), title="Train (dashed) and validation AUC per fold")
    ax.legend(fontsize=10)
    return fig


@legible
def training_figure(epochs: pd.DataFrame) -> Figure:
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss, acc = fig.subplots(1, 2)
    loss.plot(epochs["epoch"], epochs["train_loss"], label="train")
    loss.plot(epochs["epoch"], epochs["val_loss"], label="validation")
    loss.set(xlabel="epoch", ylabel="loss", title="Loss")
    acc.plot(epochs["epoch"], epochs["train_acc"], label="train accuracy")
    acc.plot(epochs["epoch"], epochs["val_acc"], label="validation accuracy")
    if "train_auc" in epochs:
        acc.plot(epochs["epoch"], epochs["train_auc"], ls="--", label="train AUC")
    acc.plot(epochs["epoch"], epochs["val_auc"], label="validation AUC")
    acc.set(xlabel="epoch", ylim=(0, 1), title="Accuracy and AUC")
    for ax in (loss, acc):
        ax.legend(fontsize=10)
    return fig
