"""`mammofuse recalibrate BUNDLE ... --labels --out NEW_BUNDLE`: the bundle's probabilities fitted to a site.

A model that ranks well at a new site can still be miscalibrated there (another scanner, another
population): its probabilities are not that site's risks, and the bundle's threshold calls another share
of the breasts positive. Recalibration keeps the networks and refits only the map from the bundle's
probability to the site's: logit(p') = a + b logit(p) ("logistic"), or a alone ("intercept": steadier
with few events). The threshold stays the bundle's, now read as a risk at this site.

It is checked on the same breasts without fooling itself by cross-fitting: each breast's recalibrated
probability comes from a fit on the other patients' breasts (patient-grouped, label-stratified folds),
and those are compared with the bundle's own. The new bundle keeps the fit on all of them, with the
check, in recalibration.json; `predict` with it gives the recalibrated probability and, beside it, the
model's own (`model_probability`).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
from sklearn.model_selection import StratifiedGroupKFold

from mammofuse.deploy.bundle import RECALIBRATION, load_bundle, write_sums
from mammofuse.deploy.predict import Predicted
from mammofuse.evaluation import metrics
from mammofuse.evaluation.result import SplitMetrics
from mammofuse.models import ModelError
from mammofuse.models.stacking import Recalibration, RecalibrationMethod
from mammofuse.problems import DataError

FOLDS = 5


def cross_fitted(
    labels: np.ndarray,
    probs: np.ndarray,
    groups: np.ndarray,
    method: RecalibrationMethod,
    folds: int,
    seed: int = 0,
) -> np.ndarray:
    """Each breast's recalibrated probability from a recalibration fitted on the other folds' patients."""
    out = np.empty(len(labels))
    split = StratifiedGroupKFold(folds, shuffle=True, random_state=seed)
    for fit_on, held_out in split.split(probs, labels, groups):
        fitted = Recalibration.fit(labels[fit_on], probs[fit_on], method, site="")
        out[held_out] = fitted.apply(probs[held_out])
    return out


def refuse_recalibrated(bundle_dir: Path) -> None:
    """A bundle recalibrated already is refused (the map would be fitted to a map): before any work."""
    if (bundle_dir / RECALIBRATION).is_file():
        raise ModelError(
            f"{bundle_dir}: recalibrated already ({RECALIBRATION}); recalibrate the bundle it was made from"
        )


def recalibrate(
    predicted: Predicted,
    bundle_dir: Path,
    out: Path,
    method: RecalibrationMethod,
    site: str,
    seed: int = 0,
) -> Recalibration:
    """Fit the bundle's recalibration on predict's labelled, scored breasts (`site`: where they come from,
    in words), check it by cross-fitting, and write the bundle with it to `out`."""
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
    crossed = cross_fitted(y, probs, groups, method, folds, seed)
    check = {
        "folds": folds,
        "shipped": metrics.summary(y, probs, bundle.threshold, groups, seed),
        "recalibrated": metrics.summary(y, crossed, bundle.threshold, groups, seed),
    }
    fitted = Recalibration.fit(y, probs, method, site)
    fitted = fitted.model_copy(update={"check": {k: _plain(v) for k, v in check.items()}})
    if out.exists():
        shutil.rmtree(out)
    shutil.copytree(bundle_dir, out)
    (out / RECALIBRATION).write_text(fitted.model_dump_json(indent=2), encoding="utf-8")
    write_sums(out)
    load_bundle(out)  # as predict will read it: checksums, schema
    return fitted


def _plain(value: object) -> object:
    """A summary's figures as JSON-ready values (validated as the report's SplitMetrics)."""
    if isinstance(value, dict):
        return SplitMetrics.model_validate(value).model_dump(mode="json", by_alias=True)
    return value
