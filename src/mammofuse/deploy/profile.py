"""What a model was trained on, and whether a new breast looks like it.

The bundle records the range of the original image sizes (pixels), of the pixel spacing (mm), the
manufacturers, and the range of the mean brightness of the model's inputs over the training breasts;
`predict` flags a breast outside them (a column and a summary line) or, with --strict, leaves it
unscored. It also records the distribution of the scores of held-out breasts (test split, or out of
fold), and `predict` warns when a batch's scores are shifted against it.

A model fed images unlike its training data can be confidently wrong: the demo model gave p >= 0.988
to every breast of a cohort generated at twice the resolution. The ranges are wide on purpose (a margin
around the training extremes): they catch another kind of input, not an unusual breast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mammofuse.domain import VIEWS, View
from mammofuse.imaging.cache import entry_record, load_entry
from mammofuse.imaging.geometry import Geometry

SCORE_QUANTILES = (1, 5, 25, 50, 75, 95, 99)
SAMPLE = 300  # training breasts whose inputs are read for the brightness range
SIZE_MARGIN = 0.25  # relative margin around the training image sizes and pixel spacings
BRIGHTNESS_MARGIN = 0.1  # absolute margin around the training brightness range (inputs are in [0, 1])


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: tuple[int, int]  # min, max original image height (pixels) in training
    columns: tuple[int, int]
    brightness: tuple[float, float]  # 1st and 99th percentile of the inputs' mean brightness
    breasts: int
    positives: int | None = None  # training breasts of label 1 (bundles before it: None)
    spacing_mm: tuple[float, float] | None = None  # min, max pixel spacing, where the headers give it
    manufacturers: list[str] | None = None
    scores: list[float] | None = None  # SCORE_QUANTILES of the probabilities of held-out breasts


def training_profile(train: pd.DataFrame, held_out_scores: np.ndarray, seed: int = 0) -> Profile:
    """The profile of training breasts (rows of a run's data.csv, with their cache entries and what
    ingest read from the headers) and of the scores of held-out breasts."""
    shapes = np.array(
        [entry_record(p)["geometry"]["original_shape"] for v in VIEWS for p in train[v.column("cache")]]
    )
    sample = train.sample(min(SAMPLE, len(train)), random_state=seed)
    means = [float(load_entry(p).mean()) for v in VIEWS for p in sample[v.column("cache")]]
    low, high = np.percentile(means, [1, 99])
    spacing = _header_values(train, "spacing_mm").astype(float).dropna()
    makers = _header_values(train, "manufacturer").fillna("").astype(str)
    return Profile(
        rows=(int(shapes[:, 0].min()), int(shapes[:, 0].max())),
        columns=(int(shapes[:, 1].min()), int(shapes[:, 1].max())),
        brightness=(float(low), float(high)),
        breasts=len(train),
        positives=int(train["label"].sum()),
        spacing_mm=(float(spacing.min()), float(spacing.max())) if len(spacing) else None,
        manufacturers=sorted(set(makers) - {""}) or None,
        scores=[float(q) for q in np.percentile(held_out_scores, SCORE_QUANTILES)],
    )


def _header_values(table: pd.DataFrame, field: str) -> pd.Series:
    columns = [v.column(field) for v in VIEWS if v.column(field) in table]
    return pd.concat([table[c] for c in columns]) if columns else pd.Series([], dtype=object)


def unlike(
    profile: Profile,
    images: dict[View, np.ndarray],
    geometry: dict[View, Geometry],
    headers: dict[View, tuple[float, str]] | None = None,
) -> str:
    """Why a breast's inputs fall outside what the model was trained on ('' when they do not).
    `headers`: each view's pixel spacing (mm, NaN if unknown) and manufacturer."""
    found: list[str] = []
    for view, (spacing, maker) in (headers or {}).items():
        if profile.spacing_mm and not np.isnan(spacing):
            lo, hi = profile.spacing_mm
            if not lo * (1 - SIZE_MARGIN) <= spacing <= hi * (1 + SIZE_MARGIN):
                found.append(f"{view.value} pixel spacing {spacing:g} mm (training {lo:g}-{hi:g})")
        if profile.manufacturers and maker and maker not in profile.manufacturers:
            known = ", ".join(profile.manufacturers)
            found.append(f"{view.value} manufacturer {maker!r} (training: {known})")
    for view in VIEWS:
        h, w = geometry[view].original_shape
        for name, value, (lo, hi) in (("height", h, profile.rows), ("width", w, profile.columns)):
            if not lo * (1 - SIZE_MARGIN) <= value <= hi * (1 + SIZE_MARGIN):
                found.append(f"{view.value} image {name} {value} px (training {lo}-{hi})")
        mean = float(images[view].mean())
        lo_b, hi_b = profile.brightness
        if not lo_b - BRIGHTNESS_MARGIN <= mean <= hi_b + BRIGHTNESS_MARGIN:
            found.append(f"{view.value} mean brightness {mean:.2f} (training {lo_b:.2f}-{hi_b:.2f})")
    return "; ".join(found)


def score_shift(profile: Profile, probabilities: np.ndarray) -> str:
    """A warning when most of a batch scores outside the middle 90 % of the held-out breasts' scores
    ('' otherwise, or with fewer than 10 scored breasts): a sign of inputs unlike the training data
    that no single check caught (or of a very different case mix)."""
    if profile.scores is None or len(probabilities) < 10:
        return ""
    q = dict(zip(SCORE_QUANTILES, profile.scores, strict=True))
    outside = float(np.mean((probabilities < q[5]) | (probabilities > q[95])))
    if outside <= 0.5:
        return ""
    return (
        f"{outside:.0%} of these breasts score outside the middle 90 % of held-out breasts' scores "
        f"({q[5]:.2f}-{q[95]:.2f}; median here {np.median(probabilities):.2f}, there {q[50]:.2f}): "
        "check that these images are like the training data"
    )
