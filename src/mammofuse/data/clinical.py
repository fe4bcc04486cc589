"""The clinical encoder: scaling, one-hot, and (NA policy 'impute') imputation + missing indicators.

Fitted on the training split only, and saved as plain JSON (no pickle): a model bundle can carry it
and anyone can read what the model was given.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import TypeAdapter, ValidationError

from mammofuse.domain import spelling_key
from mammofuse.storage import replace_text
from mammofuse.units import FEW, Spread, Unit, unit_slip


def as_category(value: object) -> str | None:
    """One spelling per category: 1, 1.0 and "1" are all "1"; NA is None."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    text = str(value).strip()
    return text or None


RANGE_MARGIN = 0.25  # of the training range, beyond either end: a value out there is unlike the training data
UNIT_RATIO = 5.0  # a column's median this many times the training one, or as many times less: another unit?
UNIT_MIN_ROWS = 10  # values a column's median needs for that


@dataclass
class ClinicalEncoder:
    numeric: list[str]
    categorical: list[str]
    impute: bool
    medians: dict[str, float] = field(default_factory=dict)
    means: dict[str, float] = field(default_factory=dict)
    stds: dict[str, float] = field(default_factory=dict)
    categories: dict[str, list[str]] = field(default_factory=dict)
    modes: dict[str, str] = field(default_factory=dict)
    ranges: dict[str, tuple[float, float]] = field(default_factory=dict)  # training min, max (before: {})
    spreads: dict[str, Spread] = field(default_factory=dict)  # FEW training values at least (before: {})

    @classmethod
    def fit(
        cls, train: pd.DataFrame, numeric: list[str], categorical: list[str], impute: bool
    ) -> ClinicalEncoder:
        """Learn medians, means, scales and categories from the training rows only."""
        enc = cls(list(numeric), list(categorical), impute)
        for col in numeric:
            values = pd.to_numeric(train[col], errors="coerce")
            enc.medians[col] = float(values.median()) if values.notna().any() else 0.0
            filled = values.fillna(enc.medians[col])
            enc.means[col] = float(filled.mean())
            enc.stds[col] = float(filled.std(ddof=0)) or 1.0
            if values.notna().any():
                enc.ranges[col] = (float(values.min()), float(values.max()))
            if values.notna().sum() >= FEW:
                numbers = values.dropna().to_numpy(float)
                enc.spreads[col] = Spread.of(numbers, float(np.mean(numbers == np.round(numbers))))
        for col in categorical:
            values = train[col].map(as_category).dropna()
            enc.categories[col] = sorted(values.unique().tolist())
            enc.modes[col] = str(values.mode().iloc[0]) if len(values) else ""
        return enc

    @property
    def feature_names(self) -> list[str]:
        names = list(self.numeric)
        if self.impute:
            names += [f"{c}_missing" for c in self.numeric + self.categorical]
        return names + [f"{c}={v}" for c in self.categorical for v in self.categories[c]]

    def unknown_values(self, df: pd.DataFrame) -> list[tuple[int, str, str]]:
        """(row position, column, value) of every value the encoder cannot represent."""
        found = []
        for col in self.categorical:
            for i, v in enumerate(self._categories_of(df, col)):  # NA: None, or NaN in a column of strings
                if not pd.isna(v) and v not in self.categories[col]:
                    found.append((i, col, v))
                elif pd.isna(v) and not self.impute:
                    found.append((i, col, "missing"))
        for col in self.numeric:
            values = pd.to_numeric(df[col], errors="coerce")
            if not self.impute:
                found += [(int(i), col, "missing") for i in np.flatnonzero(values.isna().to_numpy())]
        return found

    def beyond_training(self, df: pd.DataFrame) -> list[str]:
        """Per row, the numeric values far outside the training values ('' where none is): more than
        RANGE_MARGIN of the training range beyond its ends (age 560 where training held 28-90). The model
        extrapolates there, often to a confident probability."""
        found: list[list[str]] = [[] for _ in range(len(df))]
        for col, (lo, hi) in self.ranges.items():
            margin = RANGE_MARGIN * (hi - lo)
            values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            for i in np.flatnonzero((values < lo - margin) | (values > hi + margin)):
                found[i].append(f"clinical '{col}' {values[i]:g} (training {lo:g}-{hi:g})")
        return ["; ".join(reasons) for reasons in found]

    def unit_slips(
        self,
        df: pd.DataFrame,
        units: dict[str, Unit],
        written: dict[str, Unit],
        plain: dict[str, list[bool | None]],
    ) -> list[str]:
        """Per row, each numeric value that looks written in another unit than the others ('' where none):
        "2.3" for a tumour of 23 mm, read as 2.3 mm, inside the training range. Ingest's rule for a column's
        values (units.unit_slip), with the training values as the column: a few new breasts have too few
        values of their own. `units`: the features' units; `written`: the units they were read in, where
        another (written_in); `plain`: per feature, each row's cell as written, True where whole, None where
        it carried its unit (not judged). The training values' form is their own in the feature's unit (a
        column of whole millimetres, or one with decimals): a site that writes another unit has its own
        (decimals in cm), so its numbers are judged by their distance alone ("23", 230 mm: written in mm?)."""
        found: list[list[str]] = [[] for _ in range(len(df))]
        for col, column in self.spreads.items():
            if col not in units or col not in plain:
                continue
            unit, said = units[col], written.get(col, units[col])
            values = pd.to_numeric(df[col], errors="coerce").to_numpy(float)
            for i, is_whole in enumerate(plain[col]):
                if is_whole is None or np.isnan(values[i]):
                    continue
                form = is_whole if said == unit else None
                if slip := unit_slip(float(values[i]), form, unit, said, column):
                    other, read = slip
                    quartiles = f"{column.q1:g}-{column.q3:g} {unit}"
                    found[i].append(
                        f"clinical '{col}' {values[i]:g} {unit} (training quartiles {quartiles}): written in "
                        f"{other} ({read:g} {unit})?"
                    )
        return ["; ".join(reasons) for reasons in found]

    def unit_shifts(self, df: pd.DataFrame) -> list[tuple[str, float, float]]:
        """(column, its median here, the training median) for each numeric column whose median over `df`'s
        rows (UNIT_MIN_ROWS values at least) is UNIT_RATIO times the training median or more, or as many
        times less: a whole column in another unit (cm for mm, a fraction for a percent), which no single
        value's distance from the training range shows (2.3 cm read as 2.3 mm lies inside it)."""
        found = []
        for col in self.numeric:
            values = pd.to_numeric(df[col], errors="coerce").dropna()
            here, trained = float(values.median()) if len(values) else 0.0, self.medians[col]
            positive = len(values) >= UNIT_MIN_ROWS and here > 0 and trained > 0
            if positive and max(here / trained, trained / here) >= UNIT_RATIO:
                found.append((col, here, trained))
        return found

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """(N, F) float32. Missing values take the training median / mode; unknown categories encode as
        all zeros (check `unknown_values` first where that matters)."""
        parts, indicators = [], []
        for col in self.numeric:
            values = pd.to_numeric(df[col], errors="coerce")
            indicators.append(values.isna().to_numpy(np.float32))
            parts.append(
                ((values.fillna(self.medians[col]) - self.means[col]) / self.stds[col]).to_numpy(np.float32)
            )
        onehots = []
        for col in self.categorical:
            values = self._categories_of(df, col)
            indicators.append(values.isna().to_numpy(np.float32))
            values = values.fillna(self.modes[col])
            onehots += [(values == v).to_numpy(np.float32) for v in self.categories[col]]
        columns = parts + (indicators if self.impute else []) + onehots
        if not columns:
            return np.zeros((len(df), 0), np.float32)
        return np.stack(columns, axis=1).astype(np.float32)

    def _categories_of(self, df: pd.DataFrame, col: str) -> pd.Series:
        """A column's values as the training categories spell them: 'Positive' at another site is the
        training data's 'positive' (the same but for case or spaces); anything else as written."""
        categories = self.categories[col]
        known = {spelling_key(c): c for c in categories}

        def spelt(written: object) -> str | None:
            value = as_category(written)
            if value is None or value in categories:
                return value
            return known.get(spelling_key(value), value)

        return df[col].map(spelt)

    def save(self, path: Path) -> None:
        replace_text(path, json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, path: Path) -> ClinicalEncoder:
        """Read an encoder; any key or value it does not define is a ValueError naming the file."""
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, json.JSONDecodeError) as exc:
            raise ValueError(f"{path}: not a readable encoder ({exc})") from None
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known) if isinstance(data, dict) else []
        if unknown:
            raise ValueError(
                f"{path}: unknown key(s) {', '.join(unknown)} (an encoder has {', '.join(sorted(known))})"
            )
        try:
            return TypeAdapter(cls).validate_python(data)
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"])
            raise ValueError(f"{path}: {where or 'the file'}: {first['msg']}") from None


@dataclass
class AuxiliaryTargets:
    """Clinical columns the network learns to predict from the images, as extra training targets
    (multitask learning, as Tsai et al. 2024 did for EIC): a categorical column as class indices, a
    numeric one standardised, both learnt from the training rows only. Missing values are NaN (left out
    of the loss). These columns are then not inputs: the clinical encoder leaves them out."""

    weights: dict[str, float]
    categories: dict[str, list[str]] = field(default_factory=dict)  # categorical targets
    means: dict[str, float] = field(default_factory=dict)  # numeric targets
    stds: dict[str, float] = field(default_factory=dict)

    @classmethod
    def fit(cls, train: pd.DataFrame, weights: dict[str, float], numeric: list[str]) -> AuxiliaryTargets:
        aux = cls(dict(weights))
        for col in weights:
            if col in numeric:
                values = pd.to_numeric(train[col], errors="coerce")
                aux.means[col], aux.stds[col] = float(values.mean()), float(values.std(ddof=0)) or 1.0
            else:
                aux.categories[col] = sorted(train[col].map(as_category).dropna().unique().tolist())
        return aux

    def outputs(self, col: str) -> int:
        """Outputs of the column's head: one per category, or one value."""
        return len(self.categories[col]) if col in self.categories else 1

    def transform(self, df: pd.DataFrame) -> np.ndarray:
        """(N, K) float32: class index or standardised value per target column, NaN when missing (or a
        category the training rows did not have)."""
        columns = []
        for col in self.weights:
            if col in self.categories:
                index = {v: float(i) for i, v in enumerate(self.categories[col])}
                columns.append(df[col].map(as_category).map(index).astype(float).to_numpy(np.float32))
            else:
                values = pd.to_numeric(df[col], errors="coerce")
                columns.append(((values - self.means[col]) / self.stds[col]).to_numpy(np.float32))
        return np.stack(columns, axis=1) if columns else np.zeros((len(df), 0), np.float32)
