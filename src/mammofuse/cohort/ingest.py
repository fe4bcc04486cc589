"""Ingest: images + labels + clinical -> manifest.csv (one row per breast) and exclusions.csv.

A breast is kept when it has one CC and one MLO image, a valid label and (unless the NA policy is
'impute') complete clinical values. Everything left out is written down with its reason.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass

import pandas as pd

from mammofuse.cohort.images import ProgressFn, find_images, pair_views, select_exams
from mammofuse.cohort.tables import read_clinical, read_labels, unmatched_ids
from mammofuse.config import Config
from mammofuse.domain import LABEL_DATE, VIEWS
from mammofuse.problems import DataError, Problems
from mammofuse.runs import Work
from mammofuse.storage import replace_text, write_table

KEY_COLUMNS = ["patient_id", "side"]
IMAGE_FIELDS = ["sop_class", "bits_stored", "spacing_mm", "manufacturer", "exam_uid", "exam_date"]
IMAGE_COLUMNS = [v.column(field) for field in IMAGE_FIELDS for v in VIEWS]


@dataclass
class IngestResult:
    manifest: pd.DataFrame
    problems: Problems
    numeric: list[str]
    categorical: list[str]

    @property
    def dropped(self) -> Counter[str]:
        return self.problems.counts()


def ingest(
    cfg: Config, problems: Problems, progress: ProgressFn | None = None, cluster: str | None = None
) -> IngestResult:
    """Build the manifest; every problem goes to `problems` (which raises in strict mode). `cluster`:
    read the headers on a Dask cluster (dask://HOST:PORT or local:N)."""
    images = find_images(cfg.images, problems, progress, cluster)
    labels = read_labels(cfg.labels, problems)
    images = select_exams(images, cfg.images.exam_policy, labels.date, problems)
    pairs = pair_views(images, cfg.images.duplicate_policy, problems)
    clinical = read_clinical(cfg.clinical, problems)
    clinical_csv = cfg.clinical.path.name if cfg.clinical.path else ""
    numeric = clinical.numeric if clinical else []
    categorical = clinical.categorical if clinical else []

    rows = []
    for key in sorted(set(pairs) | set(labels.label) | set(labels.raw)):
        pid, side = key
        ids = {"patient_id": pid, "side": side.value}
        views = pairs.get(key, {})
        missing = [v.value for v in VIEWS if v not in views]
        if len(missing) == 2:
            problems.add(
                "no images",
                f"patient {pid} side {side.value}: has a label but no usable CC or MLO image",
                **ids,
            )
            continue
        if missing:
            present = next(iter(views.values())).path
            problems.add(
                "missing view",
                f"patient {pid} side {side.value}: no usable {missing[0]} image (only {present.name})",
                path=str(present),
                **ids,
            )
            continue
        if key not in labels.label:
            if key not in labels.raw and key not in labels.duplicated:  # else read_labels said why
                problems.add(
                    "no label", f"patient {pid} side {side.value}: no row in {cfg.labels.path.name}", **ids
                )
            continue
        row: dict[str, object] = {
            **ids,
            **{v.column("path"): str(views[v].path) for v in VIEWS},
            "label": labels.label[key],
            **{v.column(field): getattr(views[v], field) for field in IMAGE_FIELDS for v in VIEWS},
        }
        if cfg.labels.date_column:  # the label's date (e.g. the surgery): what split.date = "label" orders by
            row[LABEL_DATE] = labels.date.get(key)
        if clinical is not None:
            if key not in clinical.values:
                if key not in clinical.duplicated:  # else read_clinical said why
                    problems.add(
                        "no clinical row",
                        f"patient {pid} side {side.value}: no row in {clinical_csv}",
                        **ids,
                    )
                continue
            if cfg.clinical.na_policy == "drop" and key in clinical.na_reason:
                problems.add_by_policy(
                    "missing clinical value",
                    f"{clinical.na_reason[key]} (clinical.na_policy = 'drop')",
                    **ids,
                )
                continue
            row.update(clinical.values[key])
        rows.append(row)
    imaged = {pid for pid, _ in pairs}
    unmatched_ids("labels", cfg.labels.path, {pid for pid, _ in labels.raw}, imaged, problems)
    if clinical is not None and cfg.clinical.path is not None:
        unmatched_ids("clinical", cfg.clinical.path, {pid for pid, _ in clinical.values}, imaged, problems)
    paths = [v.column("path") for v in VIEWS]
    dated = [LABEL_DATE] if cfg.labels.date_column else []
    columns = [*KEY_COLUMNS, *paths, "label", *dated, *IMAGE_COLUMNS, *numeric, *categorical]
    return IngestResult(pd.DataFrame(rows, columns=columns), problems, numeric, categorical)


def write_outputs(result: IngestResult, cfg: Config, work: Work) -> None:
    """manifest.csv, exclusions.csv, ingest.json (feature columns, counts) and the cohort record. When
    no breast is left, only exclusions.csv (every file's reason), and a DataError."""
    work.dir.mkdir(parents=True, exist_ok=True)
    result.problems.write_csv(work.exclusions)
    if result.manifest.empty:
        work.manifest.unlink(missing_ok=True)  # an older manifest would pass for this ingest's
        raise DataError(f"no breast is left after ingestion: every reason is in {work.exclusions}")
    write_table(result.manifest, work.manifest)
    info = {
        "breasts": len(result.manifest),
        "positives": int(result.manifest["label"].sum()),
        "patients": int(result.manifest["patient_id"].nunique()),
        "numeric": result.numeric,
        "categorical": result.categorical,
        "problems": dict(result.dropped),
    }
    replace_text(work.ingest_info, json.dumps(info, indent=2))
    work.record_cohort(cfg)
