"""The units a clinical number can be declared in (clinical.units, written_in), and the rule that says when
one number of a column looks written in another unit of its kind than the others."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal, NamedTuple, cast

import numpy as np

# each unit's quantity and its size in that quantity's smallest unit
UNITS: dict[str, tuple[str, int]] = {
    "mm": ("length", 1),
    "cm": ("length", 10),
    "years": ("age", 1),
    "percent": ("share", 1),  # Ki-67 20
    # Ki-67 0.2: a site's export, or a spreadsheet's percent cell read as a number
    "fraction": ("share", 100),
}
Unit = Literal["mm", "cm", "years", "percent", "fraction"]
UNLIKE = 0.8  # a number is written unlike a column's when this share of them are written the other way
FEW = 20  # fewer values than this: no quartiles to judge a column's values by


def scale(unit: str, to: str) -> float:
    """How many `to` one `unit` is (cm to mm: 10), of one quantity."""
    return UNITS[unit][1] / UNITS[to][1]


class Spread(NamedTuple):
    """A column of numbers, as `unit_slip` judges one of them: its 10th, 25th, 75th and 90th percentiles (in
    the feature's unit) and the share of its numbers written whole (without decimals)."""

    p10: float
    q1: float
    q3: float
    p90: float
    whole: float

    @classmethod
    def of(cls, numbers: Sequence[float], whole: float) -> Spread:
        p10, q1, q3, p90 = (float(p) for p in np.percentile(numbers, [10, 25, 75, 90]))
        return cls(p10, q1, q3, p90, whole)


def unit_slip(
    number: float, is_whole: bool | None, unit: Unit, written: Unit, column: Spread
) -> tuple[Unit, float] | None:
    """The unit `number` may have been written in instead of `written` (the unit it was read in), and what it
    would be then in `unit`: 2.3 among tumour sizes of 10-50 mm is 23 mm in cm. It must lie far from the
    column's values (beyond a third of their lower quartile or three times their upper one), among them once
    read in the other unit (between their 10th and 90th percentiles), and be written unlike at least UNLIKE of
    the column's numbers, with decimals or without (`is_whole`): "2.3" among whole millimetres, "23" among
    centimetres with a decimal, never a real 2 mm tumour written "2" among whole millimetres (`is_whole`
    None: a form not comparable with the column's, not judged by it). Else None."""
    unlike = column.whole >= UNLIKE and is_whole is False or column.whole <= 1 - UNLIKE and is_whole is True
    if not (unlike or is_whole is None) or column.q1 / 3 <= number <= column.q3 * 3:
        return None
    as_written = number * scale(unit, written)
    for other in [u for u, (kind, _) in UNITS.items() if kind == UNITS[unit][0] and u != written]:
        read = as_written * scale(other, unit)
        if column.p10 <= read <= column.p90:
            return cast(Unit, other), read
    return None
