"""Data problems: every excluded file, row or breast is written down with its reason.

Stages call `Problems.add`; in strict mode the first problem stops the run (exit code 2),
otherwise the run goes on and the list becomes exclusions.csv and the summary.
"""

from __future__ import annotations

import csv
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

EXCLUSION_COLUMNS = ("patient_id", "side", "path", "category", "reason", "severity")
EXCLUDED, WARNING = "excluded", "warning"  # left out, or kept with something to know


class DataError(Exception):
    """A data problem that stops the run (strict mode, or nothing usable is left)."""


class ModelError(RuntimeError):
    """A model cannot be built or loaded as configured (weights missing, file mismatched, wrong format)."""


@dataclass(frozen=True)
class Problem:
    category: str  # short, countable: "unreadable DICOM", "missing view", ...
    reason: str  # the full line: where (file / row / column), what was found, what was expected
    patient_id: str = ""
    side: str = ""
    path: str = ""
    severity: str = EXCLUDED


@dataclass
class Problems:
    strict: bool = False
    items: list[Problem] = field(default_factory=list)

    def add(
        self, category: str, reason: str, *, patient_id: str = "", side: str = "", path: str = ""
    ) -> None:
        """Record a problem; in strict mode, stop at it."""
        self.add_by_policy(category, reason, patient_id=patient_id, side=side, path=path)
        if self.strict:
            raise DataError(reason)

    def add_by_policy(
        self, category: str, reason: str, *, patient_id: str = "", side: str = "", path: str = ""
    ) -> None:
        """Record a breast left out by a configured policy doing its job (na_policy = 'drop' and a missing
        clinical value): written down like any problem, but never a reason for strict mode to stop."""
        self.items.append(Problem(category, reason, str(patient_id), str(side), str(path)))

    def warn(
        self, category: str, reason: str, *, patient_id: str = "", side: str = "", path: str = ""
    ) -> None:
        """Record something to know about a breast that is kept (never a reason for strict mode to stop)."""
        self.items.append(Problem(category, reason, str(patient_id), str(side), str(path), WARNING))

    def of(self, severity: str) -> list[Problem]:
        return [p for p in self.items if p.severity == severity]

    def counts(self, severity: str = EXCLUDED) -> Counter[str]:
        return Counter(p.category for p in self.of(severity))

    def write_csv(self, path: Path) -> None:
        """exclusions.csv or preprocess_problems.csv, written whole or not at all."""
        from mammofuse.storage import replaced  # storage imports this module

        path.parent.mkdir(parents=True, exist_ok=True)
        with replaced(path) as tmp, tmp.open("w", newline="", encoding="utf-8") as fh:
            writer = csv.writer(fh)
            writer.writerow(EXCLUSION_COLUMNS)
            for p in self.items:
                writer.writerow([p.patient_id, p.side, p.path, p.category, p.reason, p.severity])
