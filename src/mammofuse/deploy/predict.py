"""`mammofuse predict BUNDLE`: score new breasts the same way the model was validated.

The bundle's preprocessing settings and clinical encoder are applied unchanged. The files are read with
the bundle's own reading rules (its [images], [labels] and [clinical] settings), or with another site's
cohort config (`--cohort`): another hospital's export names its columns, codes its values and lays out its
files its own way, but the model's features, endpoint and preprocessing are the model's.
One output row per breast: probability and label at the bundle's threshold, or the reason it could
not be scored (a missing view, an unreadable file, a clinical value the encoder does not know).
With a label CSV (`--labels`) each row also gets its true label, the clinical-only probability and the
CC image's manufacturer, and evaluation.external scores the bundle on them.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch

from mammofuse.cohort.images import find_images, pair_views, select_exams
from mammofuse.cohort.tables import Clinical, Labels, read_clinical, read_labels, unmatched_ids
from mammofuse.config import ClinicalConfig, ConfigError, ImagesConfig, LabelsConfig, load_config
from mammofuse.deploy import COHORT_LABELS
from mammofuse.deploy.bundle import Bundle, load_bundle
from mammofuse.deploy.profile import unlike
from mammofuse.domain import VIEWS, View
from mammofuse.explain.explain import CaseInput
from mammofuse.imaging.preprocess import PARTNER_UNUSED, preprocess_cohort
from mammofuse.models import positive_probability
from mammofuse.models.device import on_inference_device
from mammofuse.parallel import Progress
from mammofuse.problems import EXCLUDED, WARNING, DataError, Problems
from mammofuse.ui import counted
from mammofuse.units import UNITS, Unit, scale

OUTPUT_COLUMNS = ["row", "patient_id", "side", "probability", "spread", "label", "unlike_training", "reason"]
RECALIBRATED_COLUMNS = ["model_probability"]  # a recalibrated bundle: the model's own, before the site's map
LABELLED_COLUMNS = ["truth", "clinical_probability", "manufacturer"]  # added with a label CSV (subgroups)
BATCH = 16  # breasts through each member's network at once, as evaluation's loader batches them


@dataclass(frozen=True)
class NewBreasts:
    """Where the new breasts' files are, and how to read them: `images`, `clinical` and `labels` read with
    the bundle's own rules, or a site's `cohort` config, whose [images], [labels] and [clinical] settings
    (paths, column names, side and view patterns, rename, recode, label scale) say how that site writes its
    export; `labels` may then be COHORT_LABELS (its own label CSV) or another CSV read with its rules."""

    images: Path | None = None
    clinical: Path | None = None
    labels: Path | None = None
    cohort: Path | None = None

    def rules(self, bundle: Bundle) -> tuple[ImagesConfig, ClinicalConfig | None, LabelsConfig | None]:
        """The reading rules for `bundle`'s model: images, clinical (None when the model uses none) and
        labels (None: not validated). The model's features are the bundle's whichever site's rules read
        them; a site whose endpoint is another (another fraction threshold) is a ConfigError."""
        encoder = bundle.members[0].encoder
        features = {"numeric": encoder.numeric, "categorical": encoder.categorical, "use": True}
        if self.cohort is None:
            if self.images is None:
                raise ConfigError(
                    "give the new breasts' images (--images) or a site's cohort config (--cohort)"
                )
            own = bundle.config
            images = _images_config(bundle, self.images)
            clinical = own.clinical.model_copy(
                update={"path": self.clinical.resolve() if self.clinical else None}
            )
            labels = own.labels.model_copy(update={"path": self.labels.resolve()}) if self.labels else None
        else:
            site = load_config(self.cohort)
            images, labels = site.images, site.labels
            clinical = in_models_units(site.clinical, bundle.config.clinical.units, self.cohort)
            if self.labels is None:
                labels = None
            elif self.labels is not COHORT_LABELS:
                labels = labels.model_copy(update={"path": self.labels.resolve()})
            if labels is not None:
                _same_endpoint(bundle.config.labels, labels, self.cohort)
        if not encoder.numeric + encoder.categorical:
            return images, None, labels
        if clinical.path is None:
            where = f"{self.cohort} names no clinical CSV" if self.cohort else "give --clinical CSV"
            columns = ", ".join(encoder.numeric + encoder.categorical)
            raise DataError(f"this model uses clinical data ({columns}): {where}")
        return images, clinical.model_copy(update=features), labels


def in_models_units(site: ClinicalConfig, model: dict[str, Unit], cohort: Path) -> ClinicalConfig:
    """A site's clinical rules that read each number in the unit the model's feature is in (the bundle's
    clinical.units): a site that keeps a feature in another unit (its own `units` or `written_in`) has its
    plain numbers converted, and its `ranges`, written in its own unit, with them. A unit of another kind
    is a ConfigError; a bundle that names no units leaves the site's rules as they are."""
    units, written_in, ranges = dict(site.units), dict(site.written_in), dict(site.ranges)
    for column, unit in model.items():
        own = site.written_in.get(column, site.units.get(column, unit))
        if UNITS[own][0] != UNITS[unit][0]:
            raise ConfigError(
                f"{cohort}: clinical {column} in {own!r} (units, written_in), but the model's {column} is in "
                f"{unit!r}: another quantity"
            )
        if column in ranges:  # in the site's unit of the feature
            by = scale(site.units.get(column, unit), unit)
            ranges[column] = (ranges[column][0] * by, ranges[column][1] * by)
        units[column] = unit
        if own != unit:
            written_in[column] = own
    return site.model_copy(update={"units": units, "written_in": written_in, "ranges": ranges})


def _same_endpoint(model: LabelsConfig, site: LabelsConfig, cohort: Path) -> None:
    """A site's labels must define the model's endpoint: the same fraction threshold where both give the
    fraction (a 0/1 column is taken as the same endpoint, decided by that site)."""
    if model.kind == site.kind == "fraction" and model.threshold != site.threshold:
        raise ConfigError(
            f"{cohort}: labels.threshold = {site.threshold:g} %, but the model's endpoint is "
            f"{model.definition}: another threshold is another endpoint (set it to the model's to validate "
            "this one)"
        )


@dataclass
class Predicted:
    """predict's result: one row per breast (`table`), what was wrong with the input, the bundle, and what
    was read that validation uses again: the clinical values and the label CSV's path."""

    table: pd.DataFrame
    problems: Problems
    bundle: Bundle
    inputs: dict[int, CaseInput] = field(default_factory=dict)  # row -> its input, in the given cache
    clinical: Clinical | None = None
    labels: Path | None = None


def _images_config(bundle: Bundle, images: Path) -> ImagesConfig:
    cfg = bundle.config.images
    if images.is_file():
        return cfg.model_copy(
            update={"source": "table", "table": images.resolve(), "root": images.resolve().parent}
        )
    return cfg.model_copy(update={"source": "dicom", "root": images.resolve()})


def _unknown_reasons(bundle: Bundle, frame: pd.DataFrame, invalid: list[dict[str, str]]) -> list[str]:
    """Why each clinical row cannot be encoded by every member ('' where it can): the first value that
    the first member to refuse the row does not know. `invalid`: per row, why a feature's cell could not
    be read (read_clinical's `invalid`), said for a value missing so."""
    reasons = [""] * len(frame)
    for member in bundle.members:
        for i, column, value in member.encoder.unknown_values(frame):
            if reasons[i]:
                continue
            if value == "missing":
                why = f" ({invalid[i][column]})" if column in invalid[i] else ""
                reasons[i] = (
                    f"clinical '{column}' is missing{why} (the model was trained with na_policy = 'drop')"
                )
            else:
                known = ", ".join(member.encoder.categories[column])
                reasons[i] = (
                    f"clinical '{column}' value '{value}' is outside what the model knows (known: {known})"
                )
    return reasons


def score(
    bundle: Bundle, images: list[dict[View, np.ndarray]], frame: pd.DataFrame
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Every member's probability of label 1 for these breasts, (members, breasts), in one pass of each
    member's network (on `inference_device`, the GPU where there is one), and the clinical vectors each
    member was given, (breasts, features) each. `frame`: their clinical rows, in the same order."""
    x = [torch.from_numpy(np.stack([breast[v] for breast in images]))[:, None] for v in VIEWS]  # (N, 1, H, W)
    probabilities, clinical = [], []
    for member in bundle.members:
        vectors = member.encoder.transform(frame)  # (N, F)
        net, inputs = on_inference_device(member.net, *x, torch.from_numpy(vectors))
        with torch.no_grad():
            probability = positive_probability(net(*inputs)).cpu().numpy()
        if member.stacker is not None:  # late fusion: the clinical data joins here
            probability = member.stacker.apply(probability, vectors)
        probabilities.append(probability)
        clinical.append(vectors)
    return np.stack(probabilities), clinical


def _fill(
    row: dict, bundle: Bundle, probabilities: np.ndarray, vectors: list[np.ndarray], labelled: bool
) -> None:
    """One breast's output row from its members' probabilities and clinical vectors: their mean and
    spread, the site's map of the mean where the bundle has one, the label at the bundle's threshold, and
    (`labelled`) the clinical-only model's probability (through the site's map of it too)."""
    row["probability"] = float(probabilities.mean())
    row["spread"] = float(probabilities.std())  # the members' disagreement, on the model's scale
    if bundle.recalibration is not None:
        row["model_probability"] = row["probability"]
        row["probability"] = float(bundle.recalibration.apply(np.array([row["probability"]]))[0])
    row["label"] = int(row["probability"] >= bundle.threshold)
    if labelled and bundle.baselines:
        clinical = np.mean([b.apply(v[None])[0] for b, v in zip(bundle.baselines, vectors)])
        if bundle.recalibration is not None and bundle.recalibration.clinical is not None:
            clinical = bundle.recalibration.clinical.apply(np.array([clinical]))[0]
        row["clinical_probability"] = float(clinical)


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
    breasts: NewBreasts,
    progress: Callable[[str], Progress] | None = None,
    strict: bool = False,
    workers: int = 0,
    cache: Path | None = None,
) -> Predicted:
    """Score `breasts` with the bundle, BATCH breasts at once. A breast unlike the training data is flagged
    in `unlike_training`; with `strict` it is not scored. With labels the rows gain `truth`,
    `clinical_probability` and the CC image's `manufacturer`. Images are decoded by `workers` processes (0:
    every core) into the preprocessed cache under `cache` (kept; default: a temporary folder); where a cache
    is given, `inputs` points into it for each scored row (Grad-CAM reads them back while the folder is
    there). `progress` makes a progress bar of a description."""
    bundle = load_bundle(bundle_dir)
    images_cfg, clin_cfg, labels_cfg = breasts.rules(bundle)
    problems = Problems()
    found = find_images(images_cfg, problems, progress("reading headers") if progress else None)
    truth: Labels | None = read_labels(labels_cfg, problems) if labels_cfg else None
    policy = images_cfg.exam_policy
    if policy == "before_label_date" and not (truth and truth.date):
        policy = "latest"  # new breasts have no label date
    dates = truth.date if truth else {}
    pairs = pair_views(select_exams(found, policy, dates, problems), images_cfg.duplicate_policy, problems)
    images_left_out: dict[tuple[str, str], list[str]] = {}  # breast -> why its images were left out
    for problem in problems.of(EXCLUDED):
        if problem.patient_id and problem.side:
            images_left_out.setdefault((problem.patient_id, problem.side), []).append(problem.reason)
    columns = bundle.members[0].encoder.numeric + bundle.members[0].encoder.categorical
    table = read_clinical(clin_cfg, problems) if clin_cfg else None
    values = table.values if table else {}
    imaged, where = {pid for pid, _ in pairs}, "" if breasts.cohort else " in a cohort config for --cohort"
    if truth is not None and labels_cfg is not None:
        unmatched_ids("labels", labels_cfg.path, {pid for pid, _ in truth.raw}, imaged, problems, where)
    if clin_cfg is not None and clin_cfg.path is not None:
        unmatched_ids("clinical", clin_cfg.path, {pid for pid, _ in values}, imaged, problems, where)
    rows: list[dict] = []
    waiting: dict[int, dict] = {}  # row number -> its image records
    labelled = set(truth.label) if truth is not None else set()
    keys = sorted(set(pairs) | set(values) | labelled)  # a breast known from any source is listed
    frame = pd.DataFrame([values.get(key, {}) for key in keys], columns=columns)  # row number - 1
    unknown = _unknown_reasons(bundle, frame, [table.invalid.get(key, {}) if table else {} for key in keys])
    encoder = bundle.members[0].encoder
    beyond = encoder.beyond_training(frame)
    slips = [""] * len(keys)
    if table is not None and clin_cfg is not None:
        plain = {col: [cells.get(key) for key in keys] for col, cells in table.plain.items()}
        slips = encoder.unit_slips(frame, clin_cfg.units, clin_cfg.written_in, plain)
    for col, here, trained in encoder.unit_shifts(frame):
        unit = bundle.config.clinical.units.get(col)
        problems.warn(
            "clinical unit",
            f"clinical '{col}': these breasts' median is {here:g}, {here / trained:.2g} x the training "
            f"breasts' {trained:g}{f' {unit}' if unit else ''}: written in another unit? (clinical.units and "
            "written_in in a cohort config for --cohort convert it)",
        )
    for key in keys:
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
        if missing:
            why = images_left_out.get((pid, side.value), [])
            more = f"; {counted(len(why) - 1, 'more problem')} with its images" if len(why) > 1 else ""
            row["reason"] = f"no usable {' or '.join(missing)} image" + (f" ({why[0]}{more})" if why else "")
        elif key not in values and columns:
            clinical_csv = clin_cfg.path.name if clin_cfg and clin_cfg.path else "the clinical CSV"
            twice = table is not None and key in table.duplicated
            row["reason"] = f"{'more than one row' if twice else 'no row'} in {clinical_csv}"
        else:
            row["reason"] = unknown[len(rows)]
        if truth is not None:
            row["manufacturer"] = records[View.CC].manufacturer if View.CC in records else ""
        if not row["reason"]:
            waiting[row["row"]] = records
        rows.append(row)
    # decoded as in training: into a preprocessed cache (given: kept, so a rerun or another bundle with the
    # same preprocessing decodes nothing again; else a temporary one), on every core
    cfg = bundle.config.preprocess.model_copy(update={"workers": workers, "cluster": None})
    breasts = pd.DataFrame(
        [
            {"patient_id": rows[n - 1]["patient_id"], "side": rows[n - 1]["side"]}
            | {v.column("path"): str(records[v].path) for v in VIEWS}
            for n, records in waiting.items()
        ],
        columns=["patient_id", "side", *(v.column("path") for v in VIEWS)],
    )
    inputs: dict[int, CaseInput] = {}
    with cache_folder(cache) as root:
        decoding = Problems()
        bar = progress("decoding") if progress else None
        found, _, _ = preprocess_cohort(breasts, cfg, root, decoding, bar)
        entries = {(e["patient_id"], e["side"]): e for e in found.to_dict("records")}
        undecodable = {  # an image left out (undecodable, blank): the reason without its path, as the others
            (p.patient_id, p.side): p.reason.removeprefix(f"{p.path}: ").split(PARTNER_UNUSED)[0]
            for p in decoding.items
            if p.severity != WARNING
        }
        problems.items += decoding.of(WARNING)  # the breast kept
        numbers = list(waiting)
        batches = [numbers[i : i + BATCH] for i in range(0, len(numbers), BATCH)]
        for batch in (
            progress(f"scoring, {BATCH} breasts at once")(batches, len(batches)) if progress else batches
        ):
            ready: list[tuple[int, dict[View, np.ndarray], CaseInput]] = []  # row number, images, input
            for number in batch:
                row, records = rows[number - 1], waiting[number]
                key = (row["patient_id"], row["side"])
                if key not in entries:
                    row["reason"] = undecodable.get(key, "pixels cannot be decoded")
                    continue
                paths = {v: str(records[v].path) for v in VIEWS}
                case = CaseInput.of({v: entries[key][v.column("cache")] for v in VIEWS}, [], paths)
                pre = case.read_images()
                odd = [beyond[number - 1], slips[number - 1]]
                if bundle.profile is not None:
                    headers = {v: (records[v].spacing_mm, records[v].manufacturer) for v in VIEWS}
                    odd.insert(0, unlike(bundle.profile, pre, case.geometry, headers))
                row["unlike_training"] = "; ".join(reason for reason in odd if reason)
                if strict and row["unlike_training"]:
                    row["reason"] = f"unlike the training data (--strict): {row['unlike_training']}"
                    continue
                ready.append((number, pre, case))
            if not ready:
                continue
            their = frame.iloc[[number - 1 for number, _, _ in ready]].reset_index(drop=True)
            probabilities, clinical_vectors = score(bundle, [pre for _, pre, _ in ready], their)
            for i, (number, _, case) in enumerate(ready):
                vectors = [v[i] for v in clinical_vectors]
                _fill(rows[number - 1], bundle, probabilities[:, i], vectors, truth is not None)
                if cache is not None:
                    inputs[number] = replace(case, clinical=vectors)
    written = OUTPUT_COLUMNS + (RECALIBRATED_COLUMNS if bundle.recalibration is not None else [])
    out = pd.DataFrame(rows, columns=written + (LABELLED_COLUMNS if truth is not None else []))
    if truth is not None:
        out["truth"] = out["truth"].astype("Int64")
    out["label"] = out["label"].astype("Int64")  # 0 or 1, empty when not scored (never "1.0")
    return Predicted(out, problems, bundle, inputs, table, labels_cfg.path if labels_cfg else None)
