"""`mammofuse predict BUNDLE`: score new breasts the same way the model was validated.

The bundle's ingestion rules, preprocessing settings and clinical encoder are applied unchanged.
One output row per breast: probability and label at the bundle's threshold, or the reason it could
not be scored (a missing view, an unreadable file, a clinical value the encoder does not know).
With a label CSV (`--labels`) each row also gets its true label, the clinical-only probability and the
CC image's manufacturer, and evaluation.external scores the bundle on them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammofuse.cohort.images import find_images, pair_views, select_exams
from mammofuse.cohort.tables import read_clinical, read_labels
from mammofuse.deploy.bundle import Bundle, load_bundle
from mammofuse.deploy.profile import unlike
from mammofuse.domain import VIEWS, View
from mammofuse.explain.explain import CaseInput
from mammofuse.imaging.cache import entry_record, load_entry
from mammofuse.imaging.geometry import Geometry
from mammofuse.imaging.preprocess import UNDECODABLE, preprocess_cohort
from mammofuse.models import positive_probability
from mammofuse.parallel import Progress
from mammofuse.problems import DataError, Problems

OUTPUT_COLUMNS = ["row", "patient_id", "side", "probability", "spread", "label", "unlike_training", "reason"]
LABELLED_COLUMNS = ["truth", "clinical_probability", "manufacturer"]  # added with a label CSV (subgroups)


def _images_config(bundle: Bundle, images: Path):
    cfg = bundle.config.images
    if images.is_file():
        return cfg.model_copy(
            update={"source": "table", "table": images.resolve(), "root": images.resolve().parent}
        )
    return cfg.model_copy(update={"source": "dicom", "root": images.resolve()})


def _unknown_reason(bundle: Bundle, frame: pd.DataFrame) -> str | None:
    """Why a clinical row cannot be encoded by every member (None when it can)."""
    for member in bundle.members:
        unknown = member.encoder.unknown_values(frame)
        if not unknown:
            continue
        _, column, value = unknown[0]
        if value == "missing":
            return f"clinical '{column}' is missing (the model was trained with na_policy = 'drop')"
        known = ", ".join(member.encoder.categories[column])
        return f"clinical '{column}' value '{value}' is outside what the model knows (known: {known})"
    return None


def score(
    bundle: Bundle, images: dict[View, np.ndarray], frame: pd.DataFrame
) -> tuple[list[float], list[np.ndarray]]:
    """Every member's probability of label 1 for one breast, and the clinical vector each was given."""
    x = {v: torch.from_numpy(images[v])[None, None] for v in VIEWS}  # (1, 1, H, W)
    probabilities, clinical = [], []
    for member in bundle.members:
        vector = member.encoder.transform(frame)  # (1, F)
        with torch.no_grad():
            logits = member.net(x[View.CC], x[View.MLO], torch.from_numpy(vector))
        probability = positive_probability(logits).numpy()
        if member.stacker is not None:  # late fusion: the clinical data joins here
            probability = member.stacker.apply(probability, vector)
        probabilities.append(float(probability[0]))
        clinical.append(vector[0])
    return probabilities, clinical


@contextmanager
def cache_folder(cache: Path | None) -> Iterator[Path]:
    """The given cache folder, or a temporary one removed afterwards."""
    if cache is not None:
        yield cache
        return
    with tempfile.TemporaryDirectory(prefix="mammofuse-predict-") as folder:
        yield Path(folder)


def predict_breasts(
    bundle_dir: Path,
    images: Path,
    clinical: Path | None,
    progress: Callable[[str], Progress] | None = None,
    strict: bool = False,
    labels: Path | None = None,
    workers: int = 0,
    cache: Path | None = None,
    keep_inputs: bool = False,
):
    """(predictions, problems, bundle, preprocessed inputs of the scored rows: kept for Grad-CAM with
    `keep_inputs` alone, since on a large export they would fill memory). A breast unlike the training
    data is flagged in `unlike_training`; with `strict` it is not scored. With `labels` (a label CSV as
    the bundle's config describes it) the rows gain `truth`, `clinical_probability` and the CC image's
    `manufacturer`. Images are decoded by `workers` processes (0: every core) into the preprocessed cache
    under `cache` (kept; default: a temporary folder); `progress` makes a progress bar of a description."""
    bundle = load_bundle(bundle_dir)
    problems = Problems()
    images_cfg = _images_config(bundle, images)
    found = find_images(images_cfg, problems, progress("reading headers") if progress else None)
    truth = None
    if labels is not None:
        truth = read_labels(bundle.config.labels.model_copy(update={"path": labels.resolve()}), problems)
    policy = images_cfg.exam_policy
    if policy == "before_label_date" and not (truth and truth.date):
        policy = "latest"  # new breasts have no label date
    dates = truth.date if truth else {}
    pairs = pair_views(select_exams(found, policy, dates, problems), images_cfg.duplicate_policy, problems)
    columns = bundle.members[0].encoder.numeric + bundle.members[0].encoder.categorical
    if clinical is None and columns:
        raise DataError(f"this model uses clinical data ({', '.join(columns)}): give --clinical CSV")
    table = None
    if clinical is not None and columns:
        clin_cfg = bundle.config.clinical.model_copy(update={"path": clinical.resolve(), "use": True})
        table = read_clinical(clin_cfg, problems)
    values = table.values if table else {}
    rows: list[dict] = []
    waiting: dict[int, tuple[dict, pd.DataFrame]] = {}  # row number -> its image records and clinical row
    labelled = set(truth.label) if truth is not None else set()
    for key in sorted(set(pairs) | set(values) | labelled):  # a breast known from any source is listed
        pid, side = key
        row: dict[str, Any] = {
            "row": len(rows) + 1,
            "patient_id": pid,
            "side": side.value,
            "probability": np.nan,
            "spread": np.nan,
            "label": None,
            "unlike_training": "",
            "reason": "",
        }
        if truth is not None:
            row["truth"] = truth.label.get(key)
        records = pairs.get(key, {})
        missing = [v.value for v in VIEWS if v not in records]
        frame = pd.DataFrame([values.get(key, {})], columns=columns)
        if missing:
            row["reason"] = f"no usable {' or '.join(missing)} image"
        elif key not in values and columns:
            row["reason"] = f"no row in {clinical.name if clinical else 'the clinical CSV'}"
        else:
            row["reason"] = _unknown_reason(bundle, frame) or ""
        if truth is not None:
            row["manufacturer"] = records[View.CC].manufacturer if View.CC in records else ""
        if not row["reason"]:
            waiting[row["row"]] = (records, frame)
        rows.append(row)
    # decoded as in training: into a preprocessed cache (given: kept, so a rerun or another bundle with the
    # same preprocessing decodes nothing again; else a temporary one), on every core
    cfg = bundle.config.preprocess.model_copy(update={"workers": workers, "cluster": None})
    breasts = pd.DataFrame(
        [
            {"patient_id": rows[n - 1]["patient_id"], "side": rows[n - 1]["side"]}
            | {v.column("path"): str(records[v].path) for v in VIEWS}
            for n, (records, _) in waiting.items()
        ],
        columns=["patient_id", "side", *(v.column("path") for v in VIEWS)],
    )
    inputs: dict[int, CaseInput] = {}
    with cache_folder(cache) as root:
        decoding = Problems()
        bar = progress("decoding") if progress else None
        found, _, _ = preprocess_cohort(breasts, cfg, root, decoding, bar)
        entries = {(e["patient_id"], e["side"]): e for e in found.to_dict("records")}
        undecodable = {  # the reason without the file's path, as the other reasons
            (p.patient_id, p.side): p.reason.removeprefix(f"{p.path}: ")
            for p in decoding.items
            if p.category == UNDECODABLE
        }
        problems.items += [p for p in decoding.items if p.category != UNDECODABLE]  # warnings, breast kept
        for number, (records, frame) in waiting.items():
            row = rows[number - 1]
            key = (row["patient_id"], row["side"])
            if key not in entries:
                row["reason"] = undecodable.get(key, "pixels cannot be decoded")
                continue
            cached = {v: entries[key][v.column("cache")] for v in VIEWS}
            pre = {v: load_entry(cached[v]) for v in VIEWS}
            geometry = {v: Geometry.from_dict(entry_record(cached[v])["geometry"]) for v in VIEWS}
            if bundle.profile is not None:
                headers = {v: (records[v].spacing_mm, records[v].manufacturer) for v in VIEWS}
                row["unlike_training"] = unlike(bundle.profile, pre, geometry, headers)
                if strict and row["unlike_training"]:
                    row["reason"] = f"unlike the training data (--strict): {row['unlike_training']}"
                    continue
            probabilities, clinical_vectors = score(bundle, pre, frame)
            row["probability"] = float(np.mean(probabilities))
            row["spread"] = float(np.std(probabilities))
            row["label"] = int(row["probability"] >= bundle.threshold)
            if truth is not None and bundle.baselines:
                row["clinical_probability"] = float(
                    np.mean([b.apply(v[None])[0] for b, v in zip(bundle.baselines, clinical_vectors)])
                )
            if keep_inputs:
                paths = {v: str(records[v].path) for v in VIEWS}
                inputs[number] = CaseInput(pre, clinical_vectors, paths, geometry)
    out = pd.DataFrame(rows, columns=OUTPUT_COLUMNS + (LABELLED_COLUMNS if truth is not None else []))
    if truth is not None:
        out["truth"] = out["truth"].astype("Int64")
    out["label"] = out["label"].astype("Int64")  # 0 or 1, empty when not scored (never "1.0")
    return out, problems, bundle, inputs
