"""`mammofuse predict BUNDLE ... --labels CSV`: a model bundle scored on labelled breasts it never saw.

External validation (another hospital or scanner) or temporal validation (a later period): the breasts
are scored exactly as `predict` scores any new breast, and nothing is fitted on them. The figures are
those of `evaluate`: the AUC with a 95 % patient bootstrap interval, calibration (a model that ranks
well can still be miscalibrated at a new site: intercept and slope say how), Brier, and sensitivity ...
NPV at the bundle's own threshold (chosen on the training cohort's validation breasts). Beside them the
clinical-only regression that travelled with the bundle, on the same breasts, paired: what the images
add there. The internal figure the bundle was validated with is shown for comparison.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from mammofuse.cohort.tables import Clinical
from mammofuse.deploy.bundle import Bundle
from mammofuse.deploy.predict import Predicted
from mammofuse.evaluation import metrics, plots
from mammofuse.evaluation.result import (
    BASELINE,
    IMAGE_ONLY,
    MODEL,
    ExternalValidation,
    OneClassValidation,
)
from mammofuse.problems import DataError
from mammofuse.report.clinical import SUBGROUPS, subgroups


def labelled(table: pd.DataFrame) -> pd.DataFrame:
    """predict's rows that were scored and have a valid label: the breasts of every validation figure."""
    return table[(table["reason"] == "") & table["truth"].notna()]


def validate(
    predicted: Predicted,
    bundle_dir: Path,
    seed: int = 0,
    versus: tuple[Path, Predicted] | None = None,
) -> ExternalValidation | OneClassValidation:
    """The bundle's figures on the scored breasts of predict's output that have a valid label, and by
    subgroup (manufacturer, and density, age and tumour size where the clinical data has them); where they
    are all of one class, the one rate that class has (`OneClassValidation`); a DataError where none has a
    label. `versus`: another bundle's folder and what predict gave with it on the same breasts, compared
    paired."""
    table, bundle, labels = predicted.table, predicted.bundle, predicted.labels
    assert labels is not None, "validate needs predict's output with labels"
    scored = table[table["reason"] == ""]
    used = labelled(table)
    y = used["truth"].to_numpy(dtype=int)
    if not len(used):
        raise DataError(
            f"{labels.name}: none of the {len(scored)} scored breasts has a valid label: no figure can be "
            "computed. Are the labels keyed by the same patient IDs and sides as the images?"
        )
    if len(np.unique(y)) < 2:
        return _one_class(predicted, bundle_dir, used, seed, versus)
    groups = used["patient_id"].to_numpy()
    model_probs = used["probability"].to_numpy(dtype=float)
    result: dict = {
        **_described(predicted, bundle_dir, used),
        "model": metrics.summary(y, model_probs, bundle.threshold, groups, seed),
        "internal_auc": bundle.info.get("test_auc") or bundle.info.get("cv_auc"),
        "internal": "pooled out-of-fold" if bundle.info.get("cv_auc") else "test split",
    }
    profile = bundle.profile
    if profile is not None and profile.positives is not None:
        result["training_prevalence"] = profile.positives / profile.breasts
    if (threshold := _baseline_threshold(bundle)) is not None:
        clinical = used["clinical_probability"].to_numpy(dtype=float)
        result["baseline"] = metrics.summary(y, clinical, threshold, groups, seed)
        result["comparison"] = metrics.paired_auc_difference(y, model_probs, clinical, groups, seed=seed)
    model = result["model"]
    warnings = _warnings(predicted, used) + [
        metrics.small_sample_warning(int(y.sum()), int((y == 0).sum()), "the labelled set"),
        metrics.target_missed(bundle.operating_point, model["at_youden"], model["at_youden_ci"], "here"),
    ]
    result["warnings"] = [w for w in warnings if w]
    with_clinical = _with_clinical(used, predicted.clinical)
    result["subgroups"] = subgroups(with_clinical.assign(label=y), "probability")
    if versus is not None:
        result["versus"] = _versus(used, *versus, seed)
    return ExternalValidation.model_validate(result)


def _one_class(
    predicted: Predicted,
    bundle_dir: Path,
    used: pd.DataFrame,
    seed: int,
    versus: tuple[Path, Predicted] | None,
) -> OneClassValidation:
    """The labelled breasts all of one class: each model's share of them its threshold calls right
    (specificity of negatives, sensitivity of positives), with its interval; the other bundle's on the
    breasts both scored."""
    bundle = predicted.bundle
    y, groups = used["truth"].to_numpy(dtype=int), used["patient_id"].to_numpy()
    result: dict = {
        **_described(predicted, bundle_dir, used),
        "label": int(y[0]),
        "model": _rate(y, used["probability"], bundle.threshold, groups, seed),
        "warnings": [w for w in _warnings(predicted, used) if w],
    }
    if (threshold := _baseline_threshold(bundle)) is not None:
        result["baseline"] = _rate(y, used["clinical_probability"], threshold, groups, seed)
    if versus is not None:
        other_dir, other = versus
        both = _both_scored(used, other)
        if not len(both):
            raise DataError(f"{other_dir}: it scored none of the labelled breasts this bundle scored")
        result["versus_bundle"] = str(other_dir)
        y_both, patients = both["truth"].to_numpy(dtype=int), both["patient_id"].to_numpy()
        result["versus"] = _rate(y_both, both["probability_other"], other.bundle.threshold, patients, seed)
    return OneClassValidation.model_validate(result)


def _rate(y: np.ndarray, probs: pd.Series, threshold: float, groups: np.ndarray, seed: int) -> dict:
    """The one rate of breasts all of class y[0] at `threshold` (OneClassRate's fields)."""
    probs_ = probs.to_numpy(dtype=float)
    name = "sensitivity" if y[0] == 1 else "specificity"
    at = metrics.at_threshold(y, probs_, threshold)
    low, high = metrics.rates_with_ci(y, probs_, threshold, groups, seed=seed)[name]
    hits = at["confusion"]["tp" if name == "sensitivity" else "tn"]  # type: ignore[index]
    return {
        "name": name,
        "hits": hits,
        "n": len(y),
        "value": at[name],
        "low": low,
        "high": high,
        "threshold": threshold,
    }


def _described(predicted: Predicted, bundle_dir: Path, used: pd.DataFrame) -> dict:
    """What every validation names: the bundle, the label file, how many breasts, where the threshold was
    chosen."""
    table, bundle, labels = predicted.table, predicted.bundle, predicted.labels
    assert labels is not None
    recalibrated = bundle.recalibration
    described = {
        "bundle": str(bundle_dir),
        "kind": bundle.info["kind"],
        "operating_point": bundle.operating_point,
        "labels": labels.name,
        "model_name": MODEL if bundle.members[0].encoder.feature_names else IMAGE_ONLY,
        "listed": len(table),
        "scored": int((table["reason"] == "").sum()),
        "labelled": len(used),
    }
    if recalibrated is not None and recalibrated.threshold is not None:
        clinical_on = (
            "the clinical-only model's too, by the same rule"
            if recalibrated.clinical is not None
            else "the clinical-only model's: its training cohort's validation breasts"
        )
        described["chosen_on"] = f"the breasts it was recalibrated on ({recalibrated.site}; {clinical_on})"
    return described


def _baseline_threshold(bundle: Bundle) -> float | None:
    """The threshold of the clinical-only regression that travels with the bundle (a recalibration's, by
    the model's rule on the site, where there is one); None where the bundle carries none."""
    if not bundle.baselines:
        return None
    recalibrated = bundle.recalibration
    if recalibrated is not None and recalibrated.clinical and recalibrated.clinical.threshold is not None:
        return recalibrated.clinical.threshold  # the site's, chosen by the model's rule
    return float(np.mean([b.threshold for b in bundle.baselines]))


def _warnings(predicted: Predicted, used: pd.DataFrame) -> list[str | None]:
    """What every validation warns of: no baseline, a recalibrated bundle, breasts left out."""
    table, bundle, labels = predicted.table, predicted.bundle, predicted.labels
    assert labels is not None
    warnings: list[str | None] = []
    if not bundle.baselines and bundle.members[0].encoder.feature_names:
        warnings.append(
            "this bundle carries no clinical-only regression (written before mammofuse kept one), so no "
            "baseline is beside the model; evaluate the run again (or run cv on it again) to write one"
        )
    recalibrated = bundle.recalibration
    if recalibrated is not None:
        warnings.append(
            f"this bundle is recalibrated to {recalibrated.site} ({recalibrated.breasts} breasts): on the "
            "breasts it was fitted on, its calibration is flattered; validate it on others"
        )
        if recalibrated.clinical is None and bundle.baselines:
            warnings.append(
                "the clinical-only model beside it is not recalibrated (the bundle was recalibrated before "
                "mammofuse refitted both): its calibration, Brier, operating point and net benefit do not "
                "compare with the model's; recalibrate the original bundle again to refit both"
            )
    unlabelled = int((table["reason"] == "").sum()) - len(used)
    if unlabelled:
        warnings.append(
            f"{unlabelled} scored breasts have no valid label in {labels.name}: left out of the figures"
        )
    not_scored = int(table.loc[table["reason"] != "", "truth"].notna().sum())
    if not_scored:
        warnings.append(
            f"{not_scored} labelled breasts could not be scored (their reason column says why): left out "
            "of the figures"
        )
    return warnings


def _both_scored(used: pd.DataFrame, other: Predicted) -> pd.DataFrame:
    """The labelled breasts this bundle scored that the other scored too, its score as probability_other."""
    theirs = other.table.loc[other.table["reason"] == "", ["patient_id", "side", "probability"]]
    return used.merge(theirs, on=["patient_id", "side"], suffixes=("", "_other"))


def _versus(used: pd.DataFrame, other_dir: Path, other: Predicted, seed: int) -> dict:
    """This bundle against another on the labelled breasts both scored: each AUC and the paired difference."""
    both = _both_scored(used, other)
    y, groups = both["truth"].to_numpy(dtype=int), both["patient_id"].to_numpy()
    if len(np.unique(y)) < 2:
        raise DataError(f"{other_dir}: it scored no breasts of both classes that this bundle scored too")
    mine, others = both["probability"].to_numpy(dtype=float), both["probability_other"].to_numpy(dtype=float)
    return {
        "bundle": str(other_dir),
        "kind": other.bundle.info["kind"],
        "n": len(both),
        "positives": int(y.sum()),
        "auc": metrics.auc_with_ci(y, mine, groups, seed=seed),
        "other_auc": metrics.auc_with_ci(y, others, groups, seed=seed),
        "comparison": metrics.paired_auc_difference(y, mine, others, groups, seed=seed),
    }


def write_figures(result: ExternalValidation, table: pd.DataFrame, out: Path) -> None:
    """ROC (operating points at the bundle's thresholds), calibration and decision curve into `out`."""
    used = labelled(table)
    y = used["truth"].to_numpy(dtype=int)
    curves = {result.model_name: (y, used["probability"].to_numpy(dtype=float))}
    aucs = {result.model_name: result.model.auc.text}
    operating = {result.model_name: plots.operating_point(result.model.at_youden)}
    if result.baseline is not None:
        curves[BASELINE] = (y, used["clinical_probability"].to_numpy(dtype=float))
        aucs[BASELINE] = result.baseline.auc.text
        operating[BASELINE] = plots.operating_point(result.baseline.at_youden)
    where, patients = "new labelled breasts", used["patient_id"].to_numpy()
    figures = {
        "roc": plots.roc_figure(curves, aucs, where=where, operating=operating),
        "calibration": plots.calibration_figure(curves, where=where, groups=patients),
        "decision": plots.decision_figure(curves, where=where, groups=patients),
    }
    out.mkdir(parents=True, exist_ok=True)
    for name, fig in figures.items():
        fig.savefig(out / f"{name}.png", dpi=110)


def write_one_class_figure(result: OneClassValidation, predicted: Predicted, named: str, out: Path) -> None:
    """OUT/scores.png: each model's probabilities on the labelled breasts, all of one class (`named`: the
    class's name), with its threshold; the other bundle's (--versus) are not drawn."""
    used = labelled(predicted.table)
    scores = {result.model_name: (used["probability"].to_numpy(dtype=float), result.model.threshold)}
    if result.baseline is not None:
        scores[BASELINE] = (used["clinical_probability"].to_numpy(dtype=float), result.baseline.threshold)
    out.mkdir(parents=True, exist_ok=True)
    figure = plots.scores_figure(scores, f"the {result.labelled} labelled breasts, all {named}")
    figure.savefig(out / "scores.png", dpi=110)


def _with_clinical(used: pd.DataFrame, table: Clinical | None) -> pd.DataFrame:
    """The scored breasts with their CC manufacturer and clinical values (as predict read them), for the
    subgroup table."""
    frame = used.rename(columns={"manufacturer": "cc_manufacturer"})
    if table is None or not table.values:
        return frame
    values = pd.DataFrame(
        [{"patient_id": pid, "side": side.value, **row} for (pid, side), row in table.values.items()]
    )
    columns = [c for c in SUBGROUPS if c in values]  # the manufacturer is the images
    return frame.merge(values[["patient_id", "side", *columns]], on=["patient_id", "side"], how="left")
