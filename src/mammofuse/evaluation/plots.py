"""Figures: each function returns a matplotlib Figure and leaves saving to the caller."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, TypeVar

import matplotlib
import numpy as np
import pandas as pd
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator
from scipy.special import expit
from sklearn.metrics import precision_recall_curve, roc_curve

from mammofuse.evaluation import metrics
from mammofuse.evaluation.result import AtThreshold

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


def operating_point(at: AtThreshold) -> tuple[float, float]:
    """Where a threshold's calls sit on the ROC plane: (1 - specificity, sensitivity)."""
    return 1 - at.specificity, at.sensitivity


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
def decision_figure(curves: Curves, where: str = "test", groups: np.ndarray | None = None) -> Figure:
    """Net benefit against the threshold probability for each model, beside treating every breast as
    positive and treating none (Vickers & Elkin 2006); with `groups` (each breast's patient), each model's
    95 % patient-bootstrap band, so that a gap no wider than the bands is not read as a benefit."""
    thresholds = np.linspace(0.01, 0.8, 80)
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    prevalence = float(np.mean(next(iter(curves.values()))[0]))
    for i, (name, (y, p)) in enumerate(curves.items()):
        ax.plot(thresholds, metrics.net_benefit(y, p, thresholds), lw=2, c=f"C{i}", label=name)
        if groups is not None:
            low, high = metrics.net_benefit_band(y, p, thresholds, groups)
            ax.fill_between(thresholds, low, high, color=f"C{i}", alpha=0.15, lw=0)
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
        title=f"Decision curve ({where})" + (", 95 % bands" if groups is not None else ""),
    )
    ax.legend(fontsize=10)
    return fig


@legible
def pr_figure(curves: Curves, groups: np.ndarray | None = None) -> Figure:
    """Precision against recall, drawn as steps: between two thresholds precision does not change
    linearly, and the straight lines of a plain plot would show precision no threshold gives (Davis &
    Goadrich 2006). Each model's average precision (the area under its steps) with its 95 % bootstrap
    interval (`groups`: each breast's patient) in the legend, beside the prevalence a random ranking gets."""
    fig = Figure(figsize=(5, 5.7), layout="constrained")
    ax = fig.subplots()
    for name, (y, p) in curves.items():
        precision, recall, _ = precision_recall_curve(y, p)
        ap, low, high = metrics.average_precision_with_ci(y, p, groups)
        interval = f" [{low:.2f}, {high:.2f}]" if np.isfinite(low) else ""
        ax.plot(recall, precision, drawstyle="steps-post", label=f"{name} (AP {ap:.2f}{interval})")
        prevalence = float(np.mean(y))
    ax.axhline(prevalence, ls=":", c="grey", label=f"prevalence {prevalence:.2f} (AP of a random ranking)")
    ax.set(xlabel="recall (sensitivity)", ylabel="precision (PPV)", title="Precision-recall (test)")
    ax.legend(fontsize=10, loc="upper center", bbox_to_anchor=(0.5, -0.14))  # below: the steps fill the axes
    return fig


@legible
def calibration_figure(
    curves: Curves, bins: int = 5, where: str = "test", groups: np.ndarray | None = None
) -> Figure:
    """Observed against predicted in quantile bins, each with its 95 % patient-bootstrap interval (`groups`:
    each breast's patient; None: each breast its own), so that a bin of twenty breasts off the diagonal is
    not read as miscalibration; and each model's logistic recalibration line over the range it predicts
    (the line whose slope evaluate reports: below 1, predictions too extreme)."""
    fig = Figure(figsize=(5, 5), layout="constrained")
    ax = fig.subplots()
    for i, (name, (y, p)) in enumerate(curves.items()):
        binned = metrics.binned_calibration(y, p, groups, bins)
        observed = binned["observed"]
        below, above = observed - binned["low"], binned["high"] - observed
        ax.errorbar(binned["predicted"], observed, yerr=[below, above], fmt="o", c=f"C{i}", capsize=3)
        intercept, slope = metrics.logistic_fit(np.asarray(y, float), metrics.logit(p))
        grid = np.linspace(float(np.min(p)), float(np.max(p)), 100)
        fitted = expit(intercept + slope * metrics.logit(grid))
        ax.plot(grid, fitted, c=f"C{i}", lw=1.5, label=f"{name} (slope {slope:.2f})")
    ax.plot([0, 1], [0, 1], ls=":", c="grey", label="ideal")
    ax.plot([], [], "o", c="grey", label=f"{bins} bins of breasts, 95 % intervals")
    ax.set(
        xlim=(-0.02, 1.02),
        ylim=(-0.02, 1.02),  # a bin with no positive shows whole
        xlabel="predicted probability",
        ylabel="observed fraction positive",
        title=f"Calibration ({where})",
    )
    ax.legend(fontsize=9, loc="upper left")
    return fig


@legible
def scores_figure(scores: dict[str, tuple[np.ndarray, float]], breasts: str) -> Figure:
    """Each model's probabilities on breasts of one class (`scores`: name -> (probabilities, threshold)), a
    histogram over [0, 1] with its threshold dashed: how far the calls the rate counts lie from it."""
    fig = Figure(figsize=(6, 4), layout="constrained")
    ax = fig.subplots()
    bins = np.linspace(0, 1, 41)
    for i, (name, (p, threshold)) in enumerate(scores.items()):
        ax.hist(p, bins=list(bins), histtype="step", lw=2, color=f"C{i}", label=name)
        ax.axvline(threshold, ls="--", lw=1.5, color=f"C{i}")
    ax.plot([], [], ls="--", c="grey", label="threshold")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set(xlim=(0, 1), xlabel="predicted probability", ylabel="breasts", title=f"Probabilities of {breasts}")
    ax.legend(fontsize=9)
    return fig


def _marks(epochs: pd.DataFrame, train: bool = False) -> dict[str, Any]:
    """Points as well as lines for a run of one or two epochs (a line of one point is not drawn); a
    training curve's points are open."""
    if len(epochs) >= 3:
        return {}
    return {"marker": "o", "ms": 4} | ({"mfc": "none"} if train else {})


def _by_epoch(ax: Axes, last: int) -> None:
    """An epoch axis with whole-number ticks (not 0.96, 0.98, ... for a run of one epoch)."""
    ax.set_xlabel("epoch")
    ax.set_xlim(0.5, max(last, 1) + 0.5)
    if last <= 10:
        ax.set_xticks(range(1, max(last, 1) + 1))
    else:
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))


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
            x = epochs["epoch"]
            if "train_auc" in epochs:
                ax.plot(x, epochs["train_auc"], ls="--", c=colour, alpha=0.6, **_marks(epochs, train=True))
            ax.plot(x, epochs["val_auc"], c=colour, alpha=0.8, label=label, **_marks(epochs))
    ax.axhline(0.5, ls=":", c="grey")
    ax.set(ylabel="AUC", ylim=(0.3, 1.0), title="Train (dashed) and validation AUC per fold")
    _by_epoch(ax, max((int(e["epoch"].max()) for folds in runs.values() for e in folds if len(e)), default=1))
    ax.legend(fontsize=10)
    return fig


@legible
def training_figure(epochs: pd.DataFrame, apparent: tuple[int, float] | None = None) -> Figure:
    """Loss, accuracy and AUC per epoch as logged while training (the training figures on augmented breasts,
    dropout on); `apparent`: (the kept epoch, the kept model's AUC on its training breasts as it scores new
    ones), drawn as a star."""
    fig = Figure(figsize=(9, 3.5), layout="constrained")
    loss, acc = fig.subplots(1, 2)
    train, val = _marks(epochs, train=True), _marks(epochs)
    loss.plot(epochs["epoch"], epochs["train_loss"], label="train", **train)
    loss.plot(epochs["epoch"], epochs["val_loss"], label="validation", **val)
    loss.set(ylabel="loss", title="Loss")
    acc.plot(epochs["epoch"], epochs["train_acc"], label="train accuracy", **train)
    acc.plot(epochs["epoch"], epochs["val_acc"], label="validation accuracy", **val)
    if "train_auc" in epochs:  # the training breasts' AUC in one colour: as logged, and the star
        logged = {"ls": "--", "c": "C2", "label": "train AUC (as logged)"}
        acc.plot(epochs["epoch"], epochs["train_auc"], **logged, **train)
    acc.plot(epochs["epoch"], epochs["val_auc"], c="C3", label="validation AUC", **val)
    if apparent is not None:
        acc.plot(*apparent, ls="", marker="*", ms=12, c="C2", label="apparent AUC (kept epoch)")
    acc.set(ylim=(0, 1), title="Accuracy and AUC")
    for ax in (loss, acc):
        _by_epoch(ax, int(epochs["epoch"].max()) if len(epochs) else 1)
        ax.legend(fontsize=10)
    return fig


@legible
def curve_figure(table: pd.DataFrame, model: str) -> Figure:
    """Learning curves (`evaluation.curve`): each setup's pooled out-of-fold AUC with its interval against the
    training breasts per fold, its apparent AUC (dashed), and the clinical-only regression (of the first)."""
    fig = Figure(figsize=(8.5, 4), layout="constrained")
    ax = fig.subplots()
    names = list(dict.fromkeys(table["preset"]))

    def with_interval(rows: pd.DataFrame, prefix: str, colour: str, label: str) -> None:
        centre = rows["auc" if prefix == "auc" else f"{prefix}_auc"]
        yerr = [centre - rows[f"{prefix}_low"], rows[f"{prefix}_high"] - centre]
        ax.errorbar(rows["train_breasts"], centre, yerr=yerr, c=colour, marker="o", capsize=3, label=label)

    for i, name in enumerate(names):
        rows, colour, label = table[table["preset"] == name], f"C{i}", model if len(names) == 1 else name
        with_interval(rows, "auc", colour, label)
        if rows["train_auc"].notna().any():
            apparent = f"{label}, apparent (its training breasts)"
            style: dict[str, Any] = {"ls": "--", "c": colour, "alpha": 0.6, "marker": "o", "mfc": "none"}
            ax.plot(rows["train_breasts"], rows["train_auc"], label=apparent, **style)
    if "clinical_auc" in table:
        with_interval(table[table["preset"] == names[0]], "clinical", "C7", "clinical only")
    ax.axhline(0.5, ls=":", c="grey")
    ax.set(
        xlabel="training breasts per fold",
        ylabel="AUC",
        ylim=(0.3, 1.0),
        title="Out-of-fold AUC by training size (95 % CI)",
    )
    ax.legend(fontsize=9, loc="center left", bbox_to_anchor=(1.01, 0.5))  # beside: the curves fill the axes
    return fig


@legible
def cascade_figure(cascade: pd.DataFrame, doubt: float) -> Figure:
    """The cascading randomisation (`explain.cascade_table`): per view, the median |rank correlation| of each
    stage's maps with the model's over every draw of the random weights, its quartiles as a band, and each
    draw's median (thin lines); the stages from the top down as the table orders its `cascade_*` columns;
    `doubt`: the median from which maps are doubted."""
    columns = [c for c in cascade if c.startswith("cascade_")]
    names = [c.removeprefix("cascade_").replace("block", "block ") for c in columns]  # head, block 4, ...
    fig = Figure(figsize=(max(8.5, 4.5 + 0.9 * len(columns)), 4), layout="constrained")
    ax = fig.subplots()
    x = np.arange(len(columns))
    for i, (view, maps) in enumerate(cascade.groupby("view")):
        rho = maps[columns].abs()
        q1, median, q3 = (rho.quantile(q).to_numpy(float) for q in (0.25, 0.5, 0.75))
        ax.plot(x, median, marker="o", c=f"C{i}", label=f"{view} (median, quartiles)")
        ax.fill_between(x, q1, q3, color=f"C{i}", alpha=0.2)
        for j, (_, draw) in enumerate(rho.groupby(maps["draw"])):
            label = f"{view}, each draw's median" if j == 0 else None
            ax.plot(x, draw.median().to_numpy(float), lw=0.8, alpha=0.6, c=f"C{i}", label=label)
    ax.axhline(doubt, ls=":", c="grey", label=f"{doubt:g}: read with care above")
    ax.set_xticks(x, names)
    breasts = len(cascade.drop_duplicates(["patient", "side"]))
    ax.set(
        xlabel="weights redrawn, from the top down (each stage with those left of it)",
        ylabel="|Spearman| with the model's maps",
        ylim=(0.0, 1.05),
        title=f"Cascading randomisation ({breasts} breasts, {cascade['draw'].nunique()} draws)",
    )
    ax.legend(fontsize=8, loc="center left", bbox_to_anchor=(1.01, 0.5))
    return fig
