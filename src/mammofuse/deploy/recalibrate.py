"""`mammofuse recalibrate BUNDLE ... --labels --out NEW_BUNDLE`: the bundle's probabilities fitted to a site.

A model that ranks well at a new site can still be miscalibrated there (another scanner, another
population): its probabilities are not that site's risks, and the bundle's threshold calls another share
of the breasts positive. Recalibration keeps the networks and refits only the map from the bundle's
probability to the site's: logit(p') = a + b logit(p) ("logistic"), or a alone ("intercept": steadier
with few events). The threshold stays the bundle's, now read as a risk at this site, unless an operating
point is given: then the site's threshold is chosen on its recalibrated probabilities by that rule (a
target sensitivity, say), and the check chooses it in each fold on the other patients' breasts too, so
the cross-fitted sensitivity shows whether the target holds on breasts that did not choose it.

It is checked on the same breasts without fooling itself by cross-fitting: each breast's recalibrated
probability comes from a fit on the other patients' breasts (patient-grouped, label-stratified folds),
and those are compared with the bundle's own. The new bundle keeps the fit on all of them, with the
check, in recalibration.json; `predict` with it gives the recalibrated probability and, beside it, the
model's own (`model_probability`).
"""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from mammofuse.config import ConfigError
from mammofuse.deploy.bundle import CARD, RECALIBRATION, load_bundle, write_sums
from mammofuse.deploy.predict import Predicted
from mammofuse.evaluation import metrics
from mammofuse.evaluation.result import OperatingPoint, SplitMetrics
from mammofuse.models import ModelError
from mammofuse.models.stacking import ClinicalRecalibration, LogitMap, Recalibration, RecalibrationMethod
from mammofuse.problems import DataError
from mammofuse.storage import replace_text

FOLDS = 5


def cross_fitted(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    method: RecalibrationMethod,
    folds: int,
    seed: int = 0,
    point: OperatingPoint | None = None,
) -> tuple[np.ndarray, np.ndarray | None]:
    """Each breast's recalibrated probability from a recalibration fitted on the other folds' patients,
    and with `point`, the threshold that fold's fit chose on those other breasts (else None)."""
    out, cuts = np.empty(len(labels)), np.empty(len(labels))
    split = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    for fit_on, held_out in split.split(probs, labels, groups):
        fitted = Recalibration.fit(labels[fit_on], probs[fit_on], method, site="")
        out[held_out] = fitted.apply(probs[held_out])
        if point is not None:
            cuts[held_out] = metrics.choose_threshold(labels[fit_on], fitted.apply(probs[fit_on]), point)
    return out, cuts if point is not None else None


def check_folders(bundle_dir: Path, out: Path) -> None:
    """Before any work: a bundle recalibrated already is refused (the map would be fitted to a map), and so
    is an `out` that is the bundle or a folder holding anything but a recalibrated bundle (it is replaced)."""
    if (bundle_dir / RECALIBRATION).is_file():
        raise ModelError(
            f"{bundle_dir}: recalibrated already ({RECALIBRATION}); recalibrate the bundle it was made from"
        )
    if out.resolve() == bundle_dir.resolve():
        raise ConfigError(f"{out}: the bundle itself; the recalibrated copy needs another --out folder")
    if out.exists() and any(out.iterdir()) and not (out / RECALIBRATION).is_file():
        raise ConfigError(
            f"{out}: exists and is not a recalibrated bundle (it would be replaced): choose another --out"
        )


def recalibrate(
    predicted: Predicted,
    bundle_dir: Path,
    out: Path,
    method: RecalibrationMethod,
    site: str,
    seed: int = 0,
    point: OperatingPoint | None = None,
) -> Recalibration:
    """Fit the bundle's recalibration on predict's labelled, scored breasts (`site`: where they come from,
    in words), with `point` the site's threshold too, check both by cross-fitting, and write the bundle
    with them to `out`."""
    table, bundle = predicted.table, predicted.bundle
    used = table[(table["reason"] == "") & table["truth"].notna()]
    y = used["truth"].to_numpy(dtype=int)
    probs = used["probability"].to_numpy(dtype=float)
    groups = used["patient_id"].to_numpy()
    positives, negatives = int(y.sum()), int((y == 0).sum())
    folds = min(FOLDS, positives, negatives, len(np.unique(groups)))
    if folds < 2:
        raise DataError(
            f"{len(used)} labelled breasts scored, {positives} positive: a recalibration needs at least two "
            "of each class (and far more to be worth it)"
        )

    def checked(scored: np.ndarray, threshold: float) -> tuple[dict[str, Any], dict[str, Any]]:
        """A model's probabilities `scored`: their figures as shipped (at `threshold`) and cross-fitted."""
        crossed, cuts = cross_fitted(y, scored, groups, method, folds, seed, point)
        shipped_cut = np.full(len(y), threshold)
        return (
            _figures(y, scored, shipped_cut, groups, seed),
            _figures(y, crossed, shipped_cut if cuts is None else cuts, groups, seed),
        )

    shipped, recalibrated = checked(probs, bundle.threshold)
    fitted = Recalibration.fit(y, probs, method, site)
    fitted.check = {"folds": folds, "shipped": shipped, "recalibrated": recalibrated}
    if point is not None:
        fitted.operating_point = point
        fitted.threshold = metrics.choose_threshold(y, fitted.apply(probs), point)
    # the clinical-only model beside it (where the bundle has one), refitted and checked alike
    baselines = bundle.baselines or []
    if baselines and "clinical_probability" in used and used["clinical_probability"].notna().all():
        clinical = used["clinical_probability"].to_numpy(dtype=float)
        fitted.clinical = ClinicalRecalibration(**LogitMap.fitted(y, clinical, method))
        if point is not None:
            fitted.clinical.threshold = metrics.choose_threshold(y, fitted.clinical.apply(clinical), point)
        threshold = float(np.mean([b.threshold for b in baselines]))
        fitted.check["clinical_shipped"], fitted.check["clinical_recalibrated"] = checked(clinical, threshold)
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle_dir, out)
    replace_text(out / RECALIBRATION, fitted.model_dump_json(indent=2))
    with (out / CARD).open("a", encoding="utf-8") as card:
        card.write(_card_paragraph(fitted, shipped, recalibrated, bundle.threshold))
    write_sums(out)
    load_bundle(out)  # as predict will read it: checksums, schema
    return fitted


def _figures(
    labels: np.ndarray, probs: np.ndarray, cuts: np.ndarray, groups: np.ndarray, seed: int
) -> dict[str, Any]:
    """`evaluate`'s figures of one set of probabilities, each breast called at its own threshold in `cuts`
    (its fold's, or the bundle's for all), JSON-ready (validated as SplitMetrics)."""
    found = metrics.summary(labels, probs, cuts, groups, seed)
    return SplitMetrics.model_validate(found).model_dump(mode="json", by_alias=True)


def _card_paragraph(fitted: Recalibration, shipped: dict, crossed: dict, threshold: float) -> str:
    """The model card's word on the recalibration (a paragraph, as the card's others)."""
    before, after = shipped["calibration"], crossed["calibration"]
    kept = (
        f"The networks and the threshold ({threshold:.3f}, now read as a risk at that site) are the bundle's"
    )
    if fitted.operating_point is not None:
        at = crossed["at_youden"]
        kept = (
            f"The networks are the bundle's; the threshold is the site's, {fitted.threshold:.3f}, chosen on "
            f"these breasts' recalibrated probabilities for {fitted.operating_point.text} (cross-fitted, "
            f"each fold's threshold chosen on the other folds: sensitivity {at['sensitivity']:.2f}, "
            f"specificity {at['specificity']:.2f})"
        )
    return (
        f"\n**Recalibration.** Probabilities refitted to {fitted.site}: logit(p') = "
        f"{fitted.intercept:+.3f} + {fitted.slope:.3f} x logit(p) ({fitted.method}), fitted on "
        f"{fitted.breasts} labelled breasts ({fitted.positives} positive). Cross-fitted on those breasts "
        f"({fitted.check['folds']} patient-grouped folds): calibration intercept {before['intercept']:+.2f} "
        f"-> {after['intercept']:+.2f}, slope {before['slope']:.2f} -> {after['slope']:.2f}, Brier "
        f"{shipped['brier']:.3f} -> {crossed['brier']:.3f}. {kept}; `predict` gives the model's own "
        "probability beside the recalibrated one (`model_probability`). Figures on the breasts it was "
        f"fitted on flatter it: validate it on others.{_clinical_words(fitted)}\n"
    )


def _clinical_words(fitted: Recalibration) -> str:
    """The card's sentence on the clinical-only model's own recalibration ('' where there is none)."""
    if (clinical := fitted.clinical) is None:
        return ""
    before, after = fitted.check["clinical_shipped"], fitted.check["clinical_recalibrated"]
    cut = (
        ""
        if clinical.threshold is None
        else f", its threshold chosen by the same rule: {clinical.threshold:.3f}"
    )
    return (
        f" The clinical-only model beside it is refitted to the same breasts alike (logit(p') = "
        f"{clinical.intercept:+.3f} + {clinical.slope:.3f} x logit(p){cut}; cross-fitted, Brier "
        f"{before['brier']:.3f} -> {after['brier']:.3f}), so that a validation compares like with like."
    )
