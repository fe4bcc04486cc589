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
from mammofuse.deploy.predict import Predicted
from mammofuse.evaluation import metrics, plots
from mammofuse.evaluation.result import BASELINE, IMAGE_ONLY, MODEL, ExternalValidation
from mammofuse.problems import DataError
from mammofuse.report.clinical import SUBGROUPS, subgroups


def validate(
    predicted: Predicted,
    bundle_dir: Path,
    seed: int = 0,
    versus: tuple[Path, Predicted] | None = None,
) -> ExternalValidation:
    """The bundle's figures on the scored breasts of predict's output with labels that have a valid label,
    and by subgroup (manufacturer, and density, age and tumour size where the clinical data has them); a
    DataError where they hold one class only. `versus`: another bundle's folder and what predict gave with
    it on the same breasts, compared paired."""
    table, bundle, labels = predicted.table, predicted.bundle, predicted.labels
    assert labels is not None, "validate needs predict's output with labels"
    scored = table[table["reason"] == ""]
    used = scored[scored["truth"].notna()]
    y = used["truth"].to_numpy(dtype=int)
    if len(np.unique(y)) < 2:
        raise DataError(
            f"{labels.name}: the {len(used)} scored breasts with a label are all of one class (or none "
            "has a label): no AUC can be computed. Are the labels keyed by the same patient IDs and sides "
            "as the images?"
        )
    groups = used["patient_id"].to_numpy()
    model_probs = used["probability"].to_numpy(dtype=float)
    uses_clinical = bool(bundle.members[0].encoder.feature_names)
    result: dict = {
        "bundle": str(bundle_dir),
        "kind": bundle.info["kind"],
        "operating_point": bundle.operating_point,
        "labels": labels.name,
        "model_name": MODEL if uses_clinical else IMAGE_ONLY,
        "listed": len(table),
        "scored": len(scored),
        "labelled": len(used),
        "model": metrics.summary(y, model_probs, bundle.threshold, groups, seed),
        "internal_auc": bundle.info.get("test_auc") or bundle.info.get("cv_auc"),
        "internal": "pooled out-of-fold" if bundle.info.get("cv_auc") else "test split",
    }
    profile = bundle.profile
    if profile is not None and profile.positives is not None:
        result["training_prevalence"] = profile.positives / profile.breasts
    warnings: list[str | None] = []
    recalibrated = bundle.recalibration
    if bundle.baselines:
        clinical = used["clinical_probability"].to_numpy(dtype=float)
        threshold = float(np.mean([b.threshold for b in bundle.baselines]))
        if recalibrated is not None and recalibrated.clinical and recalibrated.clinical.threshold is not None:
            threshold = recalibrated.clinical.threshold  # the site's, chosen by the model's rule
        result["baseline"] = metrics.summary(y, clinical, threshold, groups, seed)
        result["comparison"] = metrics.paired_auc_difference(y, model_probs, clinical, groups, seed=seed)
    elif uses_clinical:
        warnings.append(
            "this bundle carries no clinical-only regression (written before mammofuse kept one), so no "
            "baseline is beside the model; evaluate the run again (or run cv on it again) to write one"
        )
    if recalibrated is not None:
        if recalibrated.threshold is not None:
            clinical_on = (
                "the clinical-only model's too, by the same rule"
                if recalibrated.clinical is not None
                else "the clinical-only model's: its training cohort's validation breasts"
            )
            result["chosen_on"] = f"the breasts it was recalibrated on ({recalibrated.site}; {clinical_on})"
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
    unlabelled = len(scored) - len(used)
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
    model = result["model"]
    warnings += [
        metrics.small_sample_warning(int(y.sum()), int((y == 0).sum()), "the labelled set"),
        metrics.target_missed(bundle.operating_point, model["at_youden"], model["at_youden_ci"], "here"),
    ]
    result["warnings"] = [w for w in warnings if w]
    with_clinical = _with_clinical(used, predicted.clinical)
    result["subgroups"] = subgroups(with_clinical.assign(label=y), "probability")
    if versus is not None:
        result["versus"] = _versus(used, *versus, seed)
    return ExternalValidation.model_validate(result)


def _versus(used: pd.DataFrame, other_dir: Path, other: Predicted, seed: int) -> dict:
    """This bundle against another on the labelled breasts both scored: each AUC and the paired difference."""
    table = other.table
    theirs = table.loc[table["reason"] == "", ["patient_id", "side", "probability"]]
    both = used.merge(theirs, on=["patient_id", "side"], suffixes=("", "_other"))
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
    used = table[(table["reason"] == "") & table["truth"].notna()]
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
