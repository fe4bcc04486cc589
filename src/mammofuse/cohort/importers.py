"""Public mammography datasets as mammofuse cohorts, from each dataset's own published files.

`mammofuse import NAME ROOT --out COHORT` reads the description files that come with the download
(ROOT: the dataset's folder as downloaded) and writes COHORT/images.csv (path relative to ROOT, patient,
side, view), labels.csv (patient_id, side, label: one binary endpoint per breast), clinical.csv (what the
dataset has) and cohort.toml, which `mammofuse ingest` accepts; where the dataset marks its findings with
boxes, regions.csv (patient_id, side, view, x0, y0, x1, y1, finding), which `mammofuse explain --regions`
checks the Grad-CAM maps against. Every image row is listed, also views other
than CC and MLO: ingest writes down why it leaves them out. Nothing is downloaded.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.errors import InvalidDicomError

from mammofuse.cohort.images import files_under
from mammofuse.config import ClinicalConfig, Config, ImagesConfig, LabelsConfig, save_config
from mammofuse.problems import DataError
from mammofuse.ui import counted

CBIS_SERIES = re.compile(r"(Mass|Calc)-(Training|Test)_P_\d+_(LEFT|RIGHT)_(CC|MLO)")
CBIS_ROI = re.compile(rf"(?P<series>{CBIS_SERIES.pattern})_(?P<abnormality>\d+)")  # ROI mask and crop
CMMD_PATIENT = r"(?P<patient>D[12]-\d{4})"
CBIS_COLUMNS = (  # what the importer reads of each case-description CSV
    "patient_id",
    "breast_density",
    "left or right breast",
    "image view",
    "abnormality id",
    "abnormality type",
    "pathology",
    "image file path",
)
REGIONS = "regions.csv"  # findings marked with boxes, for `explain --regions`
UNREAD = "regions_unread.txt"  # the annotation files that could not be read, and why


@dataclass
class Imported:
    """What an importer found: one row per image, per labelled breast, per breast with clinical data."""

    images: pd.DataFrame | None  # path (relative to the root), patient_id, side (L/R), view; None: headers
    labels: pd.DataFrame  # patient_id, side, label (0/1)
    name: str  # the endpoint, as the terminal and the report name it
    positive: str
    negative: str
    clinical: pd.DataFrame | None = None  # patient_id, side, then the feature columns
    numeric: list[str] = field(default_factory=list)
    categorical: list[str] = field(default_factory=list)
    secondary_capture: bool = False  # the dataset's images are digitised film
    regions: pd.DataFrame | None = None  # patient_id, side, view, x0, y0, x1, y1, finding: boxed findings
    masks: pd.DataFrame | None = None  # patient_id, side, view, path, finding: findings drawn as mask images
    unread: list[str] = field(default_factory=list)  # annotation files that could not be read, and why
    left_out: list[str] = field(default_factory=list)  # rows of the description files not used, and why
    label_rule: str = ""  # what a label is read from, as the terminal says it


def _read(
    root: Path, *names: str, needs: Iterable[str] = (), aliases: dict[str, str] | None = None
) -> pd.DataFrame:
    """A description file of the dataset (CSV, or the Excel file CMMD publishes), as text; the first of
    `names` found below `root`. `aliases`: columns renamed (a dataset that spells one two ways); a column of
    `needs` missing is a DataError naming the file (a file of another version, or edited)."""
    hits = [path for name in names for path in sorted(root.rglob(name))]
    if not hits:
        raise DataError(f"{root}: no {' or '.join(names)} (the dataset's description file) below it")
    path = hits[0]
    if path.suffix.lower() == ".xlsx":
        try:
            table = pd.read_excel(path, dtype=str)
        except ImportError:
            raise DataError(f"{path}: reading Excel needs openpyxl (pip install openpyxl)") from None
    else:
        table = pd.read_csv(path, dtype=str)
    table = table.rename(columns=lambda c: str(c).strip()).rename(columns=aliases or {})
    missing = [c for c in needs if c not in table.columns]
    if missing:
        raise DataError(
            f"{path}: no column {', '.join(map(repr, missing))} (its columns: {', '.join(table.columns)}): "
            "the importer reads the file as the dataset publishes it"
        )
    return table


def _optional(root: Path, name: str, needs: Iterable[str] = ()) -> pd.DataFrame | None:
    """A description file the dataset may come without (a partial download): None where it is absent."""
    return _read(root, name, needs=needs) if next(root.rglob(name), None) is not None else None


def _breast_labels(
    rows: pd.DataFrame, value: pd.Series, positive: Iterable[str], negative: Iterable[str]
) -> pd.DataFrame:
    """patient_id, side, label per breast: 1 where any of its rows (an image, an abnormality) has a positive
    `value`, 0 where every row has a negative one, and no label where a row is blank or of a value the
    dataset does not define (not read as negative: ingest leaves such a breast out and says why). Values
    are compared stripped and upper case."""
    text = value.astype("string").str.strip().str.upper()
    rows = pd.DataFrame(
        {
            "patient_id": rows["patient_id"],
            "side": rows["side"],
            "hit": text.isin([v.upper() for v in positive]).to_numpy(),
            "known": text.isin([v.upper() for v in [*positive, *negative]]).to_numpy(),
        }
    )
    breast = rows.groupby(["patient_id", "side"]).agg(hit=("hit", "any"), known=("known", "all"))
    label = breast["hit"].astype("Int64").where(breast["hit"] | breast["known"])
    return label.rename("label").reset_index()


def _side(text: pd.Series) -> pd.Series:
    return text.str.strip().str.upper().str[0]  # LEFT / L / l -> L


def _sided(table: pd.DataFrame, column: str, left_out: list[str]) -> pd.DataFrame:
    """`table` with its `side` (L or R) read from `column`; a row of neither is counted in `left_out` and
    dropped (no breast to give it to)."""
    side = _side(table[column].fillna(""))
    bad = ~side.isin(["L", "R"])
    if bad.any():
        seen = ", ".join(repr(v) for v in table.loc[bad, column].fillna("").unique()[:3])
        rows = counted(int(bad.sum()), "row")
        left_out.append(f"{rows} whose {column!r} is neither left nor right ({seen}): left out")
    return table.assign(side=side)[~bad]


def cbis_ddsm(root: Path, label: str) -> Imported:
    """CBIS-DDSM: the four case-description CSVs (mass / calc, train / test), one row per abnormality.
    A breast is positive when any of its abnormalities is MALIGNANT (BENIGN and BENIGN_WITHOUT_CALLBACK
    are negative). The CSVs' `image file path` names UID folders that do not match a downloaded tree, a
    known quirk, so images are matched on their series folder (`Mass-Training_P_00001_LEFT_CC`); each
    abnormality's ROI mask, in the folder named after it (`..._CC_1`), becomes its region."""
    parts = [
        _read(
            root,
            f"{kind}_case_description_{split}_set.csv",
            needs=CBIS_COLUMNS,
            aliases={"breast density": "breast_density"},  # the calc CSVs' spelling
        )
        for kind in ("mass", "calc")
        for split in ("train", "test")
    ]
    left_out: list[str] = []
    cases = _sided(pd.concat(parts, ignore_index=True), "left or right breast", left_out)
    cases["series"] = cases["image file path"].str.split("/").str[0]
    found: dict[str, str] = {}  # series folder of a full mammogram -> its file
    rois: dict[tuple[str, int], list[Path]] = {}  # (series, abnormality id) -> its ROI mask and crop files
    for path in (p for p in files_under(root) if p.suffix == ".dcm"):  # linked folders too
        for part in path.parts:
            if CBIS_SERIES.fullmatch(part):
                found.setdefault(part, path.relative_to(root).as_posix())
            elif roi := CBIS_ROI.fullmatch(part):
                rois.setdefault((roi["series"], int(roi["abnormality"])), []).append(path)
    images = cases.drop_duplicates("series").rename(columns={"image view": "view"})
    images = images.assign(path=images["series"].map(found)).dropna(subset=["path"])
    breast = cases.groupby(["patient_id", "side"])
    labels = _breast_labels(cases, cases["pathology"], ["MALIGNANT"], ["BENIGN", "BENIGN_WITHOUT_CALLBACK"])
    clinical = breast.agg(
        density=("breast_density", "first"),
        abnormality=("abnormality type", lambda t: "+".join(sorted(set(t)))),
    ).reset_index()
    unread: list[str] = []
    masks = _cbis_masks(root, cases.rename(columns=lambda c: c.replace(" ", "_")), found, rois, unread)
    return Imported(
        images[["path", "patient_id", "side", "view"]],
        labels,
        "malignancy",
        "malignant",
        "benign",
        clinical,
        categorical=["density", "abnormality"],
        secondary_capture=True,
        masks=masks,
        unread=unread,
        left_out=left_out,
        label_rule="pathology MALIGNANT: positive; BENIGN, BENIGN_WITHOUT_CALLBACK: negative",
    )


def _shape(path: Path, unread: list[str]) -> tuple[int, int] | None:
    """An image's (rows, columns) from its header; None, written down in `unread`, where it has none."""
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    except (InvalidDicomError, OSError, AttributeError, ValueError) as exc:
        unread.append(f"{path}: not a readable DICOM image ({exc})")
        return None


def _cbis_masks(
    root: Path,
    cases: pd.DataFrame,
    found: dict[str, str],
    rois: dict[tuple[str, int], list[Path]],
    unread: list[str],
) -> pd.DataFrame | None:
    """Each abnormality's ROI mask: of the files in its `..._CC_1` folder, the one the size of its full
    mammogram (the other is a crop of the lesion), with the abnormality's type and pathology. Each header is
    read once, and an unreadable one written down once, however many abnormalities share it."""
    masks = []
    shape = functools.cache(lambda path: _shape(path, unread))  # a mammogram of several abnormalities: once
    for case in cases.itertuples():
        files = rois.get((str(case.series), int(str(case.abnormality_id))), [])
        if str(case.series) not in found or not files:
            continue
        full = shape(root / found[str(case.series)])
        mask = next((f for f in files if full is not None and shape(f) == full), None)
        if mask is not None:
            finding = f"{case.abnormality_type} ({str(case.pathology).lower()})"
            masks.append(
                (case.patient_id, case.side, case.image_view, mask.relative_to(root).as_posix(), finding)
            )
    columns = ["patient_id", "side", "view", "path", "finding"]
    return pd.DataFrame(masks, columns=columns) if masks else None


def boxes_from_masks(
    root: Path,
    masks: pd.DataFrame,
    unread: list[str],
    progress: Callable[[Iterable, int], Iterator] | None = None,
) -> pd.DataFrame:
    """The box around each mask image's marked pixels (x0, y0, x1, y1 in the image's pixels); a mask with
    nothing marked gives no box, one that cannot be decoded is written down in `unread`."""
    rows = masks.itertuples()
    boxes = []
    for m in progress(rows, len(masks)) if progress else rows:
        try:
            ys, xs = np.nonzero(pydicom.dcmread(root / str(m.path)).pixel_array)
        except (InvalidDicomError, OSError, AttributeError, ValueError, RuntimeError) as exc:
            unread.append(f"{root / str(m.path)}: the ROI mask cannot be decoded ({exc})")
            continue
        if len(ys):
            box = {"x0": xs.min(), "y0": ys.min(), "x1": xs.max() + 1, "y1": ys.max() + 1}
            boxes.append(
                {"patient_id": m.patient_id, "side": m.side, "view": m.view} | box | {"finding": m.finding}
            )
    return pd.DataFrame(boxes, columns=["patient_id", "side", "view", "x0", "y0", "x1", "y1", "finding"])


def cmmd(root: Path, label: str) -> Imported:
    """CMMD: the clinical file (CMMD_clinicaldata_revision, .xlsx as published or a .csv export) with one
    row per patient and breast (ID1, LeftRight, Age, abnormality, classification, subtype); images in
    CMMD/<ID1>/<study>/<series>/1-N.dcm, side and view read from each header. `label`: 'malignant'
    (Malignant vs Benign) or 'luminal' (Luminal A/B vs other subtypes, malignant breasts only)."""
    needs = ["ID1", "LeftRight", "Age", "abnormality", "classification"]
    needs += ["subtype"] if label == "luminal" else []
    table = _read(root, "CMMD_clinicaldata_revision.xlsx", "CMMD_clinicaldata_revision.csv", needs=needs)
    left_out: list[str] = []
    table = _sided(table.assign(patient_id=table["ID1"].str.strip()), "LeftRight", left_out)
    if label == "luminal":
        table = table[table["subtype"].notna()]  # malignant breasts only: a benign one has no subtype
        luminal = table["subtype"].str.contains("Luminal", case=False).map({True: "yes", False: "no"})
        labels = _breast_labels(table, luminal, ["yes"], ["no"])
        names = ("luminal subtype", "luminal", "non-luminal")
        rule = "subtype Luminal A or B: positive; another subtype: negative; no subtype: not imported"
    else:
        labels = _breast_labels(table, table["classification"], ["malignant"], ["benign"])
        names = ("malignancy", "malignant", "benign")
        rule = "classification Malignant: positive; Benign: negative"
    clinical = table[["patient_id", "side", "Age", "abnormality"]].rename(columns={"Age": "age"})
    return Imported(
        None,  # ingest reads side and view from the headers, the patient from the folder (CMMD_PATIENT)
        labels[["patient_id", "side", "label"]],
        *names,
        clinical,
        numeric=["age"],
        categorical=["abnormality"],
        left_out=left_out,
        label_rule=rule,
    )


def vindr_mammo(root: Path, label: str) -> Imported:
    """VinDr-Mammo: breast-level_annotations.csv (study_id, image_id, laterality, view_position,
    breast_birads, breast_density, split); images in images/<study_id>/<image_id>.dicom. One study is one
    patient. Positive: BI-RADS 4 or 5 (suspicious), negative: BI-RADS 1-3. The radiologists' boxes of
    finding_annotations.csv (xmin, ymin, xmax, ymax in the image's pixels), where it was downloaded, are
    the regions."""
    needs = ["study_id", "image_id", "laterality", "view_position", "breast_birads", "breast_density"]
    left_out: list[str] = []
    table = _sided(_read(root, "breast-level_annotations.csv", needs=needs), "laterality", left_out)
    table = table.assign(patient_id=table["study_id"])
    images = table.assign(
        path=[f"images/{s}/{i}.dicom" for s, i in zip(table["study_id"], table["image_id"])],
        view=table["view_position"],
    )
    birads = table["breast_birads"].str.extract(r"^\s*(?:BI-?RADS)?\s*([1-5])\s*$", flags=re.I)[0]
    breast = table.groupby(["patient_id", "side"])
    labels = _breast_labels(table, birads, ["4", "5"], ["1", "2", "3"])
    clinical = breast.agg(density=("breast_density", "first")).reset_index()
    clinical["density"] = clinical["density"].str.replace("DENSITY ", "", regex=False)
    boxes = ["study_id", "laterality", "view_position", "xmin", "ymin", "xmax", "ymax", "finding_categories"]
    findings = _optional(root, "finding_annotations.csv", needs=boxes)
    regions = None
    if findings is not None:  # "No Finding" rows carry no box
        boxed = findings.dropna(subset=["xmin", "ymin", "xmax", "ymax"])
        regions = pd.DataFrame(
            {
                "patient_id": boxed["study_id"],
                "side": _side(boxed["laterality"]),
                "view": boxed["view_position"],
                "x0": boxed["xmin"],
                "y0": boxed["ymin"],
                "x1": boxed["xmax"],
                "y1": boxed["ymax"],
                "finding": boxed["finding_categories"],
            }
        )
    return Imported(
        images[["path", "patient_id", "side", "view"]],
        labels,
        "BI-RADS 4-5",
        "BI-RADS 4-5",
        "BI-RADS 1-3",
        clinical,
        categorical=["density"],
        regions=regions,
        left_out=left_out,
        label_rule="breast_birads 4 or 5: positive; 1 to 3: negative",
    )


def rsna(root: Path, label: str) -> Imported:
    """RSNA Screening Mammography: train.csv (site_id, patient_id, image_id, laterality, view, age, cancer,
    biopsy, invasive, BIRADS, implant, density, machine_id, ...); images in
    train_images/<patient_id>/<image_id>.dcm. Positive: cancer = 1."""
    needs = [
        "patient_id",
        "image_id",
        "laterality",
        "view",
        "age",
        "cancer",
        "implant",
        "density",
        "machine_id",
    ]
    left_out: list[str] = []
    table = _sided(_read(root, "train.csv", needs=needs), "laterality", left_out)
    paths = [f"train_images/{p}/{i}.dcm" for p, i in zip(table["patient_id"], table["image_id"])]
    images = table.assign(path=paths)
    breast = table.groupby(["patient_id", "side"])
    labels = _breast_labels(table, table["cancer"], ["1"], ["0"])
    clinical = breast.agg(
        age=("age", "first"),
        density=("density", "first"),
        implant=("implant", "first"),
        machine=("machine_id", "first"),
    ).reset_index()
    return Imported(
        images[["path", "patient_id", "side", "view"]],
        labels,
        "cancer",
        "cancer",
        "no cancer",
        clinical,
        numeric=["age"],
        categorical=["density", "implant", "machine"],
        left_out=left_out,
        label_rule="cancer 1: positive; 0: negative",
    )


IMPORTERS: dict[str, tuple[Callable[[Path, str], Imported], tuple[str, ...]]] = {
    "cbis-ddsm": (cbis_ddsm, ("malignant",)),
    "cmmd": (cmmd, ("malignant", "luminal")),
    "vindr-mammo": (vindr_mammo, ("birads45",)),
    "rsna": (rsna, ("cancer",)),
}


def import_dataset(
    name: str,
    root: Path,
    out: Path,
    label: str | None = None,
    progress: Callable[[Iterable, int], Iterator] | None = None,
) -> tuple[Imported, Path]:
    """Write COHORT/images.csv, labels.csv, clinical.csv and cohort.toml for a public dataset, and
    regions.csv where it marks its findings (boxes, or mask images: their pixels read, with `progress`)."""
    if name not in IMPORTERS:
        raise DataError(f"unknown dataset {name!r} (known: {', '.join(IMPORTERS)})")
    reader, endpoints = IMPORTERS[name]
    label = label or endpoints[0]
    if label not in endpoints:
        raise DataError(f"{name}: unknown label {label!r} (known: {', '.join(endpoints)})")
    if not root.is_dir():
        raise DataError(f"{root}: not a folder (the dataset as downloaded)")
    root = root.resolve()
    imported = reader(root, label)
    if imported.masks is not None:
        boxes = boxes_from_masks(root, imported.masks, imported.unread, progress)
        imported.regions = pd.concat([imported.regions, boxes])
    out.mkdir(parents=True, exist_ok=True)
    on_table = imported.images is not None
    if imported.images is not None:
        imported.images.to_csv(out / "images.csv", index=False)
    imported.labels.to_csv(out / "labels.csv", index=False)
    if imported.regions is not None:
        imported.regions.to_csv(out / REGIONS, index=False)
    if imported.unread:
        (out / UNREAD).write_text("\n".join(imported.unread) + "\n", encoding="utf-8")
    has_clinical = imported.clinical is not None and bool(imported.numeric or imported.categorical)
    if has_clinical:
        assert imported.clinical is not None
        imported.clinical.to_csv(out / "clinical.csv", index=False)
    cfg = Config(
        work_dir=Path("work"),
        images=ImagesConfig(
            source="table" if on_table else "dicom",
            root=root,
            table=Path("images.csv") if on_table else None,
            patient_pattern=None if on_table else CMMD_PATIENT,
            check_patient_id=False,  # the dataset's own table maps files to patients
            accept_secondary_capture=imported.secondary_capture,
        ),
        labels=LabelsConfig(
            kind="binary",
            column="label",
            name=imported.name,
            positive=imported.positive,
            negative=imported.negative,
        ),
        clinical=ClinicalConfig(
            use=has_clinical, numeric=imported.numeric, categorical=imported.categorical, na_policy="impute"
        ),
    )
    save_config(cfg, out / "cohort.toml")
    return imported, out / "cohort.toml"
