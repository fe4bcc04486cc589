"""A realistic synthetic cohort: DICOM files, label and clinical CSVs, a ready config, and the truth.

The signal is planted on purpose and known: EIC positive goes with more extensive calcification
(visible in both views) and with some clinical variables (HER2 positive, younger age, grade 3, ER
negative). `truth.csv` holds the generator's own probability per breast and where it put each lesion,
for tests and benchmarks only: it is never read by the pipeline. `lesions.csv` marks each tumour on each
image as a study's annotations would (patient, side, view, a circle in the image's pixels): what
`mammofuse explain --regions` checks the Grad-CAM maps against.
"""

from __future__ import annotations

import hashlib
import re
import shutil
from dataclasses import dataclass
from datetime import date, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Literal

import numpy as np
import pandas as pd
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless, generate_uid

from mammofuse.cohort import DEFAULT_BREASTS
from mammofuse.cohort.phantom import BreastAnatomy, Lesion, add_film_edge, burn_in_marker, render_view
from mammofuse.config import Config, ImagesConfig, PreprocessConfig, save_config
from mammofuse.domain import VIEWS, Side, View
from mammofuse.parallel import parallel_map
from mammofuse.problems import DataError
from mammofuse.units import UNITS

Compression = Literal["none", "rle", "jpeg2000"]
Site = Literal["a", "b"]
_TRANSFER_SYNTAX = {"rle": RLELossless, "jpeg2000": JPEG2000Lossless}
LAST_EXAM = date(2025, 1, 1)  # the recruitment period ends here (every exam is on it with years = 0)
FIELD_OF_VIEW_MM = 240.0  # detector height (24 x 30 cm detectors; ~3,000 rows at 0.08 mm)
_FOLDER, _FILE = re.compile(r"S\d{5,}"), re.compile(r"IMG_[0-9a-f]{10}\.dcm")  # what synth writes in dicom/
LESIONS = "lesions.csv"  # each tumour marked on each image (patient, side, view, x, y, radius)
MAMMO_FOR_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.2"  # PS3.4 B.5, Digital Mammography X-Ray Image Storage
MAMMO_FOR_PROCESSING = "1.2.840.10008.5.1.4.1.1.1.2.1"
# What a unit's export holds beside a breast's two standard views (SynthOptions.extras): the raw detector
# image of each, a synthetic 2D of each (a tomosynthesis unit's C-View), a spot compression CC. Ingest leaves
# each out by default, with its reason (images.presentation_intent, synthetic_2d, view_modifiers).
EXTRAS = (
    (View.CC, "raw"),
    (View.MLO, "raw"),
    (View.CC, "synthetic 2D"),
    (View.MLO, "synthetic 2D"),
    (View.CC, "spot"),
)
NUMERIC = ["age", "tumour_size_mm", "ki67"]
CATEGORICAL = ["grade", "er", "pr", "her2", "density"]
MANUFACTURER = {"a": "mammofuse synthetic", "b": "mammofuse synthetic B"}
# Site B, another hospital: its own scanner (a brighter tone curve, and outside the collimated field
# padding pixels of stored value 0, which a MONOCHROME1 image shows white unless read as padding), its own
# export conventions (other column names and codes, `;`-separated Windows-1252 CSVs with decimal commas, as
# Excel saves them there, tumour sizes in centimetres, Ki-67 and the invasive fraction as 0-1) and a
# cohort.toml that reads them. The same seed gives the same breasts at either site: only the scanner and the
# files differ.
SITE_B_GAMMA = 0.8
SITE_B_PADDING = (0.02, 0.06)  # padded bands: top and bottom (share of the height), far side (of the width)
SITE_B_CLINICAL = {
    "patient_id": "MRN",
    "side": "Laterality",
    "age": "Age (years)",
    "tumour_size_mm": "Tumour Ø (cm)",  # not ASCII: the file's encoding matters; in centimetres there
    "ki67": "Ki-67 index",  # as a fraction there (0.23 for 23 %)
    "grade": "Grade",
    "er": "ER status",
    "pr": "PR status",
    "her2": "HER2 status",
    "density": "BI-RADS density",
}
SITE_B_CODES = {
    **{c: {"pos": "positive", "neg": "negative"} for c in ("er", "pr", "her2")},
    "grade": {f"G{g}": str(g) for g in (1, 2, 3)},
    "density": {d.upper(): d for d in "abcd"},
}
SITE_B_WRITTEN_IN = {"tumour_size_mm": "cm", "ki67": "fraction"}
SITE_B_LABEL = "Invasive share"
SITE_B_ENCODING = "cp1252"


@dataclass(frozen=True)
class SynthOptions:
    breasts: int = DEFAULT_BREASTS
    seed: int = 0
    image_size: tuple[int, int] = (512, 416)
    compression: Compression = "none"
    prevalence: float = 0.26
    signal: float = 1.0  # scales every planted effect; 0 gives labels unrelated to images and clinic
    na_fraction: float = 0.10  # share of breasts with one missing clinical value
    bilateral_fraction: float = 0.08  # share of patients with both breasts in the cohort
    site: Site = "a"  # "b": another hospital's scanner and export conventions (see SITE_B_*)
    years: float = 0.0  # exams spread over this many years up to LAST_EXAM, in patient-number order
    scanner_change: str | None = None  # YYYYMMDD: exams from then on made on site B's scanner (A's export)
    # share of breasts whose export also holds the unit's other images (EXTRAS), as a real export does;
    # the breasts, their standard views and every table are the same whatever the share
    extras: float = 0.0
    workers: int = 0


def _patients(n_breasts: int, bilateral: float, rng: np.random.Generator) -> list[tuple[str, Side]]:
    rows: list[tuple[str, Side]] = []
    i = 0
    while len(rows) < n_breasts:
        i += 1
        pid = f"MF{i:05d}"
        if rng.random() < bilateral and len(rows) + 2 <= n_breasts:
            rows += [(pid, Side.LEFT), (pid, Side.RIGHT)]
        else:
            rows.append((pid, Side.LEFT if rng.random() < 0.5 else Side.RIGHT))
    return rows


def _clinical(keys: list[tuple[str, Side]], rng: np.random.Generator) -> pd.DataFrame:
    n = len(keys)
    age_by_patient = {pid: float(np.clip(rng.normal(57, 11), 28, 90)) for pid, _ in keys}
    er = rng.random(n) < 0.78
    return pd.DataFrame(
        {
            "patient_id": [k[0] for k in keys],
            "side": [k[1].value for k in keys],
            "age": [round(age_by_patient[k[0]]) for k in keys],
            "tumour_size_mm": np.round(np.clip(rng.lognormal(np.log(18), 0.5, n), 3, 120), 1),
            "ki67": np.round(np.clip(rng.beta(1.6, 5.0, n) * 100, 1, 95)).astype(int),
            "grade": rng.choice([1, 2, 3], n, p=[0.2, 0.45, 0.35]),
            "er": np.where(er, "positive", "negative"),
            "pr": np.where(er & (rng.random(n) < 0.8), "positive", "negative"),
            "her2": np.where(rng.random(n) < 0.18, "positive", "negative"),
            "density": rng.choice(list("abcd"), n, p=[0.1, 0.4, 0.4, 0.1]),
        }
    )


def _probability(clin: pd.DataFrame, extent: np.ndarray, prevalence: float, signal: float) -> np.ndarray:
    """The generator's true P(EIC positive): a logistic model with a planted image and clinical part."""
    clinical_part = (
        0.9 * (clin["her2"] == "positive")
        - 0.035 * (clin["age"] - 57)
        + 0.35 * (clin["grade"] == 3)
        - 0.3 * (clin["er"] == "positive")
    ).to_numpy(float)
    score = signal * (1.6 * extent + clinical_part)
    lo, hi = -10.0, 10.0  # intercept that gives the wanted prevalence on this cohort
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if np.mean(1 / (1 + np.exp(-(mid + score)))) < prevalence else (lo, mid)
    return 1 / (1 + np.exp(-(lo + score)))


def _lesion(extent: float, rng: np.random.Generator) -> Lesion:
    s = 1 / (1 + np.exp(-1.8 * extent))  # 0..1: how extensive the calcification is
    n = int(round(2 + 30 * s**1.5))
    offsets = rng.normal(0, 0.5, (n, 3)).clip(-1, 1)
    return Lesion(
        depth=float(rng.uniform(0.25, 0.75)),
        offset_ml=float(rng.uniform(-0.7, 0.7)),
        offset_si=float(rng.uniform(-0.7, 0.7)),
        mass_radius=float(rng.uniform(0.015, 0.04)) if rng.random() < 0.85 else 0.0,
        n_calcs=n,
        calc_spread=float(0.015 + 0.07 * s),
        calc_offsets=offsets,
    )


@dataclass(frozen=True)
class _BreastJob:
    index: int
    patient_id: str
    side: Side
    density: str
    extent: float
    seed_entropy: tuple[int, ...]
    age: int
    out_dir: Path
    image_size: tuple[int, int]
    compression: Compression
    site: Site  # whose scanner made the images (the tables are written by SynthOptions.site's conventions)
    exam_date: str  # StudyDate, YYYYMMDD
    extras: bool = False  # the export also holds this breast's EXTRAS


def exam_dates(patients: list[str], years: float) -> dict[str, str]:
    """Each patient's exam date (YYYYMMDD): the patients in their numbers' order, evenly over `years`
    up to LAST_EXAM (as a hospital's accession numbers follow the calendar); no random draw, so the
    images and every other value of a seed stay as they are."""
    order = sorted(set(patients))
    step = years * 365.25 / max(1, len(order) - 1)
    last = len(order) - 1
    return {
        pid: (LAST_EXAM - timedelta(days=round((last - k) * step))).strftime("%Y%m%d")
        for k, pid in enumerate(order)
    }


def scanner(options: SynthOptions, exam_date: str) -> Site:
    """The site whose scanner images an exam of `exam_date`: the cohort's own, or site B's from
    `options.scanner_change` on (a hospital that replaced its mammography unit)."""
    if options.scanner_change is not None and exam_date >= options.scanner_change:
        return "b"
    return options.site


def _write_breast(job: _BreastJob) -> dict[str, object]:
    rng = np.random.default_rng(np.random.SeedSequence(job.seed_entropy))
    anatomy = BreastAnatomy(
        depth=float(rng.uniform(0.55, 0.8)),
        half_height=float(rng.uniform(0.34, 0.44)),
        density=job.density,
        lesion=_lesion(job.extent, rng),
        seed=int(rng.integers(2**31)),
    )
    chest_wall_left = job.side is Side.LEFT
    row: dict[str, object] = {}
    images = {}
    folder = job.out_dir / f"S{job.index // 2 + 1:05d}"  # the names _FOLDER and _FILE match
    folder.mkdir(parents=True, exist_ok=True)
    for view in VIEWS:
        img, place = render_view(anatomy, view, job.image_size, rng)
        if job.site == "b":  # another scanner's tone curve: the same anatomy, brighter soft tissue
            img = img**SITE_B_GAMMA
        x = place.x
        if not chest_wall_left:  # right breast: chest wall on the right edge of the image
            img, x = img[:, ::-1], job.image_size[1] - 1 - place.x
        img = burn_in_marker(img, f"{job.side.value} {view.value}", chest_wall_left, rng)
        if rng.random() < 0.25:
            img = add_film_edge(img, chest_wall_left)
        uid = generate_uid(entropy_srcs=[*map(str, job.seed_entropy), view.value])
        path = folder / _file_name(uid)
        _write_dicom(path, img, job, view, uid, rng)
        images[view] = img
        key = view.value.lower()
        row.update({f"{key}_path": str(path.relative_to(job.out_dir.parent)), f"{key}_x": round(x, 1)})
        row.update({f"{key}_y": round(place.y, 1), f"{key}_radius": round(place.radius, 1)})
    if job.extras:  # drawn from a stream of their own: the standard views are the same without them
        extra_rng = np.random.default_rng(np.random.SeedSequence([*job.seed_entropy, 1]))
        for view, kind in EXTRAS:
            uid = generate_uid(entropy_srcs=[*map(str, job.seed_entropy), view.value, kind])
            _write_dicom(folder / _file_name(uid), images[view], job, view, uid, extra_rng, kind)
    return row


def _file_name(sop_uid: str) -> str:
    """A name _FILE matches that says nothing of the view (a hash of the image's UID)."""
    return "IMG_" + hashlib.sha1(sop_uid.encode()).hexdigest()[:10] + ".dcm"


def _write_dicom(
    path: Path,
    img: np.ndarray,
    job: _BreastJob,
    view: View,
    sop_uid: str,
    rng: np.random.Generator,
    kind: str = "standard",
) -> None:
    """One image as the unit exports it: `kind` "standard" (FOR PRESENTATION), or one of EXTRAS' kinds (their
    headers say what they are; their pixels are the standard view's, as ingest never decodes them)."""
    bits = int(rng.choice([12, 14, 16]))
    maxv = 2**bits - 1
    mono1 = rng.random() < 0.35
    stored = img * 0.9 + 0.05
    stored = np.round((1 - stored if mono1 else stored) * maxv).astype(np.uint16)
    if job.site == "b":
        stored = _collimate(stored, job.side)

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(MAMMO_FOR_PRESENTATION)
    meta.MediaStorageSOPInstanceUID = UID(sop_uid)
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = MAMMO_FOR_PRESENTATION
    ds.SOPInstanceUID = sop_uid
    ds.StudyInstanceUID = generate_uid(entropy_srcs=[job.patient_id, "study"])
    ds.SeriesInstanceUID = generate_uid(entropy_srcs=[job.patient_id, job.side.value, "series"])
    ds.Modality = "MG"
    ds.Manufacturer = MANUFACTURER[job.site]
    # Fake identifying tags, present so that tests can prove they never leak into outputs.
    ds.PatientName = f"Synthetic^Patient{job.patient_id[2:]}"
    ds.PatientBirthDate = f"{2026 - job.age}0{1 + job.index % 9}1{job.index % 9}"
    ds.PatientAddress = f"{job.index} Example Street"
    ds.PatientID = job.patient_id
    ds.StudyDate = job.exam_date
    ds.ImageLaterality = job.side.value
    ds.ViewPosition = view.value
    ds.PatientOrientation = ["A", "R" if job.side is Side.LEFT else "L"]
    if view is View.MLO:
        ds.PatientOrientation = ["A", "FR" if job.side is Side.LEFT else "FL"]
    ds.SeriesDescription = f"{job.side.value} {view.value}"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME1" if mono1 else "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    spacing = round(FIELD_OF_VIEW_MM / stored.shape[0], 4)  # one physical field of view at every size
    ds.ImagerPixelSpacing = [spacing, spacing]
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, bits, bits - 1, 0
    ds.WindowCenter = round(0.5 * maxv)
    ds.WindowWidth = round(0.98 * maxv)
    ds.RescaleSlope, ds.RescaleIntercept, ds.RescaleType = 1, 0, "US"
    if job.site == "b":
        ds.add_new("PixelPaddingValue", "US", 0)
    _mark(ds, kind)
    ds.PixelData = stored.tobytes()
    if job.compression != "none":
        ds.compress(_TRANSFER_SYNTAX[job.compression], stored)
    ds.save_as(path, enforce_file_format=True)


def _collimate(stored: np.ndarray, side: Side) -> np.ndarray:
    """Site B's unit: padding (0) where its collimator left no image, along the top and bottom edges and the
    edge away from the chest wall (a left breast's chest wall is on the image's left)."""
    h, w = stored.shape
    rows, cols = (max(1, round(share * n)) for share, n in zip(SITE_B_PADDING, (h, w), strict=True))
    out = stored.copy()
    out[:rows] = out[-rows:] = 0
    if side is Side.LEFT:
        out[:, -cols:] = 0
    else:
        out[:, :cols] = 0
    return out


def _mark(ds: Dataset, kind: str) -> None:
    """The header of an extra image: the raw detector image, a synthetic 2D, a spot compression view."""
    if kind == "raw":
        ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = UID(MAMMO_FOR_PROCESSING)
        ds.PresentationIntentType = "FOR PROCESSING"
    elif kind == "synthetic 2D":
        ds.SeriesDescription += " C-View"
    elif kind == "spot":  # of a CC (EXTRAS)
        view, modifier = Dataset(), Dataset()
        view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "R-10242", "SRT", "cranio-caudal"
        modifier.CodeValue, modifier.CodingSchemeDesignator = "R-102D2", "SRT"
        modifier.CodeMeaning = "Spot Compression"
        view.ViewModifierCodeSequence = [modifier]
        ds.ViewCodeSequence = [view]
        ds.SeriesDescription += " spot"
    elif kind != "standard":
        raise ValueError(f"unknown kind of image: {kind}")


def synthesize(out: Path, options: SynthOptions, progress=None) -> dict[str, int]:
    """Write a cohort to `out`; return counts. Deterministic for options.seed (any worker count). A cohort
    synth wrote there before is replaced, never mixed with this one: its file names differ by seed."""
    out.mkdir(parents=True, exist_ok=True)
    _remove_previous(out / "dicom")
    rng = np.random.default_rng(options.seed)
    keys = _patients(options.breasts, options.bilateral_fraction, rng)
    clin = _clinical(keys, rng)
    extent = rng.standard_normal(len(keys))
    p_true = _probability(clin, extent, options.prevalence, options.signal)
    label = (rng.random(len(keys)) < p_true).astype(int)
    fraction = np.where(label == 1, rng.integers(5, 75, len(keys)), rng.integers(75, 101, len(keys)))

    seeds = np.random.SeedSequence(options.seed).spawn(len(keys))
    dates = exam_dates([pid for pid, _ in keys], options.years)
    extras = np.random.default_rng([options.seed, 1]).random(len(keys)) < options.extras  # its own stream
    jobs = [
        _BreastJob(
            i,
            pid,
            side,
            str(clin.at[i, "density"]),
            float(extent[i]),
            tuple(s.generate_state(4)),
            int(clin.at[i, "age"]),
            out / "dicom",
            options.image_size,
            options.compression,
            scanner(options, dates[pid]),
            dates[pid],
            bool(extras[i]),
        )
        for i, ((pid, side), s) in enumerate(zip(keys, seeds))
    ]
    placements = list(parallel_map(_write_breast, jobs, options.workers, progress, chunksize=8))

    truth = pd.DataFrame(placements)
    truth.insert(0, "patient_id", clin["patient_id"])
    truth.insert(1, "side", clin["side"])
    truth.insert(2, "label", label)
    truth.insert(3, "p_true", np.round(p_true, 4))
    truth.insert(4, "calc_extent", np.round(extent, 4))
    truth.to_csv(out / "truth.csv", index=False)
    lesions = pd.concat(
        pd.DataFrame(
            {"patient_id": truth["patient_id"], "side": truth["side"], "view": v.value}
            | {c: truth[f"{v.value.lower()}_{c}"] for c in ("x", "y", "radius")}
        )
        for v in VIEWS
    )
    lesions.sort_values(["patient_id", "side", "view"], kind="stable").to_csv(out / LESIONS, index=False)

    labels = pd.DataFrame(
        {"patient_id": clin["patient_id"], "side": clin["side"], "invasive_fraction": fraction}
    )
    # Clinical export as hospitals write it: sides spelled out, a few empty cells.
    clinical = clin.copy()
    clinical["side"] = clinical["side"].map({"L": "left", "R": "right"})
    clinical = clinical.astype(object)
    for i in np.flatnonzero(rng.random(len(clinical)) < options.na_fraction):
        clinical.at[i, rng.choice(NUMERIC + CATEGORICAL)] = None
    if options.site == "b":
        _write_site_b_tables(labels, clinical, out)
    else:
        labels.to_csv(out / "labels.csv", index=False)
        clinical.to_csv(out / "clinical.csv", index=False)
    save_config(cohort_config(options.image_size, options.site), out / "cohort.toml")
    return {
        "breasts": len(keys),
        "patients": len(set(clin["patient_id"])),
        "positives": int(label.sum()),
        "images": 2 * len(keys) + len(EXTRAS) * int(extras.sum()),
        "extra images": len(EXTRAS) * int(extras.sum()),
    }


def _remove_previous(dicom: Path) -> None:
    """Remove the DICOM folder of a cohort synth wrote before (a finished or an interrupted one); refuse a
    folder that holds anything synth does not write, naming it."""
    if not dicom.exists():
        return
    for path in dicom.rglob("*"):
        if not (
            path.is_dir() and _FOLDER.fullmatch(path.name) or path.is_file() and _FILE.fullmatch(path.name)
        ):
            raise DataError(
                f"{path}: not written by `mammofuse synth`; it writes {dicom} whole, so that folder may hold "
                "nothing else: choose another output folder"
            )
    shutil.rmtree(dicom)


def _write_site_b_tables(labels: pd.DataFrame, clinical: pd.DataFrame, out: Path) -> None:
    """Site B's label and clinical CSVs: its own column names, codes and units, `;`-separated, decimal
    commas, Windows-1252."""
    coded = clinical.copy()
    coded["side"] = clinical["side"].str[0].str.upper()
    for column, codes in SITE_B_CODES.items():
        as_written = {value: code for code, value in codes.items()}
        coded[column] = [None if v is None else as_written[str(v)] for v in clinical[column]]
    for column in NUMERIC:  # decimal commas
        coded[column] = [None if v is None else str(v).replace(".", ",") for v in clinical[column]]
    for column, unit in SITE_B_WRITTEN_IN.items():  # in its own units, in decimal (23.7 mm: 2.37 cm)
        size = Decimal(UNITS[unit][1]) / UNITS[UNITS_OF[column]][1]
        written = (None if v is None else str(Decimal(str(v)) / size) for v in clinical[column])
        coded[column] = [None if v is None else v.replace(".", ",") for v in written]
    coded = coded.rename(columns=SITE_B_CLINICAL)
    coded.to_csv(out / "clinical.csv", index=False, sep=";", encoding=SITE_B_ENCODING)
    share = labels.assign(side=coded["Laterality"], share=labels["invasive_fraction"] / 100)
    share = share[["patient_id", "side", "share"]].rename(
        columns={"patient_id": "MRN", "side": "Laterality", "share": SITE_B_LABEL}
    )
    share.to_csv(out / "labels.csv", index=False, sep=";", decimal=",", encoding=SITE_B_ENCODING)


# what each numeric feature can hold, as a study would write it down: a value outside is a typo
RANGES = {"age": (18.0, 110.0), "tumour_size_mm": (0.0, 300.0), "ki67": (0.0, 100.0)}
UNITS_OF = {"age": "years", "tumour_size_mm": "mm", "ki67": "percent"}  # the features' units (clinical.units)


def cohort_config(image_size: tuple[int, int], site: Site = "a") -> Config:
    """A ready config for a synthetic cohort, with an output size that suits its images (and, for site B,
    the settings that read its export)."""
    h = image_size[0]
    size = (min(1024, h), min(512, max(8, h // 2)))
    config = Config(
        work_dir=Path("work"),
        description="A synthetic cohort written by `mammofuse synth`: generated images and data with a "
        "planted signal, not patients.",
        images=ImagesConfig(root=Path("dicom")),
        preprocess=PreprocessConfig(size=size),
    )
    config.clinical = config.clinical.model_copy(update={"ranges": RANGES, "units": UNITS_OF})
    if site == "b":
        key = {
            "patient_column": SITE_B_CLINICAL["patient_id"],
            "side_column": SITE_B_CLINICAL["side"],
            "encoding": SITE_B_ENCODING,
        }
        features = {k: v for k, v in SITE_B_CLINICAL.items() if k in NUMERIC + CATEGORICAL}
        config.description = (
            "A synthetic cohort written by `mammofuse synth --site b`: another hospital's scanner and export "
            "conventions, generated images and data with a planted signal, not patients."
        )
        config.labels = config.labels.model_copy(update={**key, "column": SITE_B_LABEL, "scale": "fraction"})
        config.clinical = config.clinical.model_copy(
            update={
                **key,
                "rename": {v: k for k, v in features.items()},
                "recode": SITE_B_CODES,
                "written_in": SITE_B_WRITTEN_IN,
            }
        )
    return config
