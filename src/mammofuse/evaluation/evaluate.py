"""`mammofuse evaluate RUN_DIR`: the best checkpoint on the test split, beside the clinical-only baseline.

Writes the run's predictions.csv (key, split, label, probability, baseline probability, for the
training, validation and test breasts), metrics.json (an `Evaluation`) and figures/*.png. The decision
threshold is chosen on validation (by the operating point: Youden's J unless a target sensitivity or
specificity is given) and then applied to test unchanged.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammofuse.config import Config
from mammofuse.data.clinical import ClinicalEncoder
from mammofuse.data.dataset import BreastDataset
from mammofuse.data.splits import TEST, TRAIN, VAL
from mammofuse.domain import VIEWS, View
from mammofuse.evaluation import metrics, plots
from mammofuse.evaluation.result import BASELINE, IMAGE_ONLY, MODEL, Evaluation, OperatingPoint, SplitMetrics
from mammofuse.models import TwoViewNet
from mammofuse.models.stacking import ClinicalBaseline, Stacker
from mammofuse.problems import DataError
from mammofuse.runs import Run, kept_epoch
from mammofuse.storage import replace_text, write_table
from mammofuse.training.module import predict
from mammofuse.training.run import loader


def clinical_baseline(
    encoder: ClinicalEncoder, data: pd.DataFrame, seed: int, point: OperatingPoint
) -> tuple[ClinicalBaseline, dict[str, np.ndarray]] | None:
    """Logistic regression on the same encoded clinical data and split: what do the images add? The
    fitted regression, its threshold chosen on validation by `point` (the model's rule: both are
    compared at one operating point), and its training, validation and test probabilities."""
    if not encoder.feature_names:
        return None
    part = {s: data[data["split"] == s] for s in (TRAIN, VAL, TEST)}
    fitted = ClinicalBaseline.fit(encoder.transform(part[TRAIN]), part[TRAIN]["label"].to_numpy(), seed)
    probabilities = {s: fitted.apply(encoder.transform(part[s])) for s in (TRAIN, VAL, TEST)}
    threshold = metrics.choose_threshold(part[VAL]["label"].to_numpy(), probabilities[VAL], point)
    return fitted.model_copy(update={"threshold": threshold}), probabilities


def write_baseline(run: Run, point: OperatingPoint) -> tuple[ClinicalBaseline, dict[str, np.ndarray]] | None:
    """Fit the run's clinical-only baseline and keep it in baseline.json, which travels in the bundle so
    that `predict --labels` scores new breasts with it too (no file where the run uses no clinical data)."""
    fitted = clinical_baseline(run.read_encoder(), run.read_data(), run.read_config().train.seed, point)
    if fitted is None:
        run.baseline.unlink(missing_ok=True)
    else:
        replace_text(run.baseline, fitted[0].model_dump_json(indent=2))
    return fitted


def unseen_scanners(data: pd.DataFrame) -> str | None:
    """A warning where test breasts were imaged on a manufacturer's unit no training breast was (a temporal
    split after a scanner change, say): the test then measures the new scanner as well as the model."""
    column = VIEWS[0].column("manufacturer")
    if column not in data:
        return None
    made = data[column].fillna("unknown").astype(str)
    test, seen = made[data["split"] == TEST], set(made[data["split"] == TRAIN])
    new = test[~test.isin(seen)]
    if new.empty:
        return None
    return (
        f"{len(new)} of {len(test)} test breasts were imaged on a unit no training "
        f"breast was ({', '.join(sorted(set(new)))}): the test measures the new scanner as well as the model "
        "(look at the calibration)"
    )


def contributions(
    net: TwoViewNet,
    test: pd.DataFrame,
    clinical: np.ndarray,
    as_trained: np.ndarray,
    train_mean: np.ndarray,
    cfg: Config,
    stacker: Stacker | None = None,
) -> dict[str, dict[str, object]]:
    """What each input contributes, measured on the test breasts: the model's AUC as trained (`as_trained`:
    its probabilities, in `test`'s order), with one view's image shuffled across breasts (the other view
    and the clinical data as they are: does the model use both views, or has one carried the label?), with
    both images shuffled (both views of a breast together), with the clinical vector set to its training
    mean, and with both. An input the model ignores costs nothing when removed."""
    seed, labels = cfg.train.seed, test["label"].to_numpy()
    mean = np.repeat(train_mean, len(test), axis=0)
    order = np.random.default_rng(seed).permutation(len(test))

    def shuffle(*views: View) -> pd.DataFrame:
        return test.assign(**{c: test[c].to_numpy()[order] for c in (v.column("cache") for v in views)})

    shuffled = shuffle(*VIEWS)
    cases = {f"{view.value} shuffled": (shuffle(view), clinical) for view in VIEWS}
    cases["images shuffled"] = (shuffled, clinical)
    if clinical.shape[1]:
        cases["clinical at its training mean"] = (test, mean)
        cases["both"] = (shuffled, mean)
    probabilities = {"as trained": as_trained}
    for name, (table, vectors) in cases.items():
        probs, _, _ = predict(net, loader(BreastDataset(table, vectors), cfg))
        probabilities[name] = probs if stacker is None else stacker.apply(probs, vectors)
    groups = test["patient_id"].to_numpy()
    return {name: metrics.auc_with_ci(labels, p, groups, seed=seed) for name, p in probabilities.items()}


EARLY = 0.2  # a kept epoch within the first fifth of a run's epochs is an early one
FEWEST_EPOCHS = 5  # in shorter runs every epoch is early


def kept_early(epochs: pd.DataFrame | None, keep: str) -> pd.Series | None:
    """The kept epoch's row (epochs.csv) where the best validation AUC (`train.checkpoint` 'best') kept an
    early epoch of a longer run; else None."""
    if epochs is None or keep != "best" or len(epochs) < FEWEST_EPOCHS:
        return None
    kept = kept_epoch(epochs, keep)
    return kept if int(kept["epoch"]) <= EARLY * len(epochs) else None


def early_epoch(epochs: pd.DataFrame | None, keep: str, validation: int) -> str | None:
    """A warning where the run kept an early epoch (`kept_early`): the model evaluated is barely trained,
    chosen by the AUC of `validation` breasts, which noise can move more than the later epochs' training
    did."""
    kept = kept_early(epochs, keep)
    if epochs is None or kept is None:
        return None
    last = epochs.iloc[-1]["val_auc"]
    return (
        f"the kept checkpoint is epoch {int(kept['epoch'])} of {len(epochs)}, the best validation AUC "
        f"({kept['val_auc']:.3f} on {validation} breasts; {last:.3f} at the last epoch): an early, "
        "barely trained model chosen by a figure that noise on so few breasts can move; "
        "train.checkpoint = 'last' keeps the last epoch, and a cross-validation (mammofuse cv) shows how "
        "much the choice varies"
    )


def _apparent(labels: np.ndarray, probabilities: np.ndarray) -> float | None:
    """The AUC on the training breasts (None where they hold one class)."""
    value = metrics.auc(labels, probabilities)
    return None if np.isnan(value) else value


def evaluate_run(run_dir: Path, point: OperatingPoint | None = None) -> Evaluation:
    """The run's best (or last) checkpoint on its test split, thresholds chosen on validation by `point`
    (Youden's J when not given). The training breasts are scored as well, as the model scores new ones
    (unaugmented, eval mode): the apparent AUC beside the test AUC shows how far the model overfits."""
    point = point or OperatingPoint()
    run = Run(run_dir)
    cfg = run.read_config()
    data = run.cached_data()
    encoder = run.read_encoder()
    net = run.read_net()

    parts = {split: data[data["split"] == split].reset_index(drop=True) for split in (TRAIN, VAL, TEST)}
    vectors = {split: encoder.transform(part) for split, part in parts.items()}
    preds: dict[str, tuple[np.ndarray, np.ndarray, list[str]]] = {
        split: predict(net, loader(BreastDataset(part, vectors[split]), cfg)) for split, part in parts.items()
    }
    patients = parts[TEST]["patient_id"].to_numpy()  # in the loader's order
    fitted = write_baseline(run, point)  # the regression and its validation and test probabilities, or None
    baseline = fitted[1] if fitted is not None else None

    stacker = None
    if cfg.model.fusion == "late":  # the images' logit and the clinical data, fitted on validation only
        p, y, _ = preds[VAL]
        stacker = Stacker.fit(p, vectors[VAL], y, cfg.train.seed)
        replace_text(run.stacker, stacker.model_dump_json(indent=2))
        preds = {split: (stacker.apply(p, vectors[split]), y, k) for split, (p, y, k) in preds.items()}
    else:
        run.stacker.unlink(missing_ok=True)
    (train_p, train_y, _), (val_p, val_y, _), (test_p, test_y, _) = preds[TRAIN], preds[VAL], preds[TEST]
    if len(np.unique(test_y)) < 2:
        raise DataError("the test split has only one class: no AUC can be computed")
    threshold = metrics.choose_threshold(val_y, val_p, point)
    result: dict = {
        "run": str(run.dir),
        "operating_point": point,
        "model": {
            "test": metrics.summary(test_y, test_p, threshold, patients),
            "val_auc": metrics.auc(val_y, val_p),
            "train_auc": _apparent(train_y, train_p),
        },
    }
    test = result["model"]["test"]
    warnings = [
        metrics.small_sample_warning(int(test_y.sum()), int((test_y == 0).sum()), "the test split"),
        metrics.chosen_on_few(val_y, val_p, threshold, point),
        metrics.target_missed(point, test["at_youden"], test["at_youden_ci"], "the test split"),
        unseen_scanners(data),
        early_epoch(run.read_epochs(), cfg.train.checkpoint, len(val_y)),
    ]
    result["warnings"] = [w for w in warnings if w]
    rows = []
    for split, (p, y, keys) in preds.items():
        for i, (key, label, prob) in enumerate(zip(keys, y, p)):
            row = {"key": key, "split": split, "label": int(label), "probability": float(prob)}
            if baseline is not None:
                row["baseline_probability"] = float(baseline[split][i])
            rows.append(row)
    write_table(pd.DataFrame(rows), run.predictions)

    curves = {MODEL if baseline is not None else IMAGE_ONLY: (test_y, test_p)}
    if fitted is not None:
        regression, probabilities = fitted
        result["baseline"] = {
            "test": metrics.summary(test_y, probabilities[TEST], regression.threshold, patients),
            "val_auc": metrics.auc(val_y, probabilities[VAL]),
            "train_auc": _apparent(train_y, probabilities[TRAIN]),
        }
        result["comparison"] = metrics.paired_auc_difference(test_y, test_p, probabilities[TEST], patients)
        curves[BASELINE] = (test_y, probabilities[TEST])
    train_mean = encoder.transform(data[data["split"] == TRAIN]).mean(axis=0, keepdims=True)
    result["contributions"] = contributions(net, parts[TEST], vectors[TEST], test_p, train_mean, cfg, stacker)
    evaluation = Evaluation.model_validate(result)
    run.write_evaluation(evaluation)
    _figures(run, evaluation, curves, patients)
    return evaluation


def split_row(name: str, split: SplitMetrics) -> dict[str, str]:
    """One model's figures on one set of breasts, formatted (at its validation-chosen threshold)."""
    return {
        "name": name,
        "auc": split.auc.text,
        "brier": f"{split.brier:.3f}",
        **{k: metrics.rate_text(getattr(split.at_youden, k)) for k in metrics.RATES},
    }


def metric_rows(result: Evaluation) -> list[dict[str, str]]:
    """The model and the clinical-only baseline as formatted rows (terminal table and report)."""
    parts = ((result.model_name, result.model), (BASELINE, result.baseline))
    return [
        {
            **split_row(name, part.test),
            "val_auc": f"{part.val_auc:.3f}",
            "train_auc": "" if part.train_auc is None else f"{part.train_auc:.3f}",
        }
        for name, part in parts
        if part is not None
    ]


def _figures(run: Run, result: Evaluation, curves: plots.Curves, patients: np.ndarray) -> None:
    run.figures.mkdir(exist_ok=True)
    aucs = {result.model_name: result.model.test.auc.text}
    if result.baseline is not None:
        aucs[BASELINE] = result.baseline.test.auc.text
    operating = {result.model_name: plots.operating_point(result.model.test.at_youden)}
    if result.baseline is not None:
        operating[BASELINE] = plots.operating_point(result.baseline.test.at_youden)
    figures = {
        "roc": plots.roc_figure(curves, aucs, operating=operating),
        "pr": plots.pr_figure(curves, groups=patients),
        "calibration": plots.calibration_figure(curves, groups=patients),
        "decision": plots.decision_figure(curves, groups=patients),
    }
    epochs, kept, apparent = run.read_epochs(), run.kept_epoch(), result.model.train_auc
    if epochs is not None:
        marked = None if kept is None or apparent is None else (int(kept["epoch"]), apparent)
        figures["training"] = plots.training_figure(epochs, marked)
    for name, fig in figures.items():
        fig.savefig(run.figures / f"{name}.png", dpi=110)
