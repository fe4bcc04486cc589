"""What a model was trained on, and whether a new breast looks like it.

The bundle records the range of the original image sizes (pixels) and of the mean brightness of the
model's inputs over the training breasts; `predict` flags a breast outside them (a column and a summary
line) or, with --strict, leaves it unscored. A model fed images unlike its training data can be
confidently wrong: the demo model gave p >= 0.988 to every breast of a cohort generated at twice the
resolution. The ranges are wide on purpose (a margin around the training extremes): they catch another
kind of input, not an unusual breast.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict

from mammofuse.domain import VIEWS, View
from mammofuse.imaging.cache import entry_record, load_entry
from mammofuse.imaging.geometry import Geometry

SAMPLE = 300  # training breasts whose inputs are read for the brightness range
SIZE_MARGIN = 0.25  # relative margin around the training image sizes
BRIGHTNESS_MARGIN = 0.1  # absolute margin around the training brightness range (inputs are in [0, 1])


class Profile(BaseModel):
    model_config = ConfigDict(extra="forbid")

    rows: tuple[int, int]  # min, max original image height (pixels) in training
    columns: tuple[int, int]
    brightness: tuple[float, float]  # 1st and 99th percentile of the inputs' mean brightness
    breasts: int


def training_profile(train: pd.DataFrame, seed: int = 0) -> Profile:
    """The profile of training breasts (rows of a run's data.csv, with their cache entries)."""
    shapes = np.array(
        [
            entry_record(p)["geometry"]["original_shape"]
            for v in VIEWS
            for p in train[f"{v.value.lower()}_cache"]
        ]
    )
    sample = train.sample(min(SAMPLE, len(train)), random_state=seed)
    means = [float(load_entry(p).mean()) for v in VIEWS for p in sample[f"{v.value.lower()}_cache"]]
    low, high = np.percentile(means, [1, 99])
    return Profile(
        rows=(int(shapes[:, 0].min()), int(shapes[:, 0].max())),
        columns=(int(shapes[:, 1].min()), int(shapes[:, 1].max())),
        brightness=(float(low), float(high)),
        breasts=len(train),
    )


def unlike(profile: Profile, images: dict[View, np.ndarray], geometry: dict[View, Geometry]) -> str:
    """Why a breast's inputs fall outside what the model was trained on ('' when they do not)."""
    found: list[str] = []
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
