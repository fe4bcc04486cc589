"""Finding images: read DICOM headers (never pixels) or an image table, and pair views per breast.

Side: ImageLaterality, else Laterality, else a filename pattern. View: ViewPosition, else
ViewCodeSequence, else PatientOrientation, else SeriesDescription, else a filename pattern.
Patient: PatientID, or a pattern. No tag is required that a fallback or the table can supply.
"""

from __future__ import annotations

import os
import re
import struct
from collections import defaultdict
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path, PureWindowsPath

from pydicom import uid
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError

from mammofuse.cohort.tables import BreastKey, read_rows
from mammofuse.config import ImagesConfig
from mammofuse.domain import (
    Side,
    View,
    dicom_date,
    find_view_in_text,
    parse_side,
    parse_view,
    view_from_patient_orientation,
)
from mammofuse.imaging.decode import pixel_spacing
from mammofuse.imaging.dicomfile import complete_pixel_module, read_dicom
from mammofuse.parallel import parallel_map
from mammofuse.problems import DataError, Problems

PIXEL_GROUP = 0x7FE0
_LONG_VRS = {b"OB", b"OW", b"OF", b"OD", b"OL", b"OV", b"UN", b"SQ", b"UC", b"UR", b"UT"}


MAMMOGRAPHY = {
    uid.DigitalMammographyXRayImageStorageForPresentation,
    uid.DigitalMammographyXRayImageStorageForProcessing,
}
RADIOGRAPHY = {  # mammograms from older systems, when their Modality is MG
    uid.ComputedRadiographyImageStorage,
    uid.DigitalXRayImageStorageForPresentation,
    uid.DigitalXRayImageStorageForProcessing,
}
SECONDARY_CAPTURE = {
    uid.SecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleByteSecondaryCaptureImageStorage,
    uid.MultiFrameGrayscaleWordSecondaryCaptureImageStorage,
}


@dataclass(frozen=True)
class ImageRecord:
    path: Path
    patient_id: str
    side: Side
    view: View
    pixels: int  # Rows x Columns, for the 'largest' duplicate policy
    sop_class: str  # its keyword (DigitalMammographyXRayImageStorageForPresentation, ...), or the UID
    bits_stored: int
    spacing_mm: float  # ImagerPixelSpacing (the detector's), else PixelSpacing; NaN when absent
    manufacturer: str
    exam_uid: str = ""  # StudyInstanceUID
    exam_date: str = ""  # StudyDate, YYYYMMDD ("" where it has none, or none that is a date)
    filled: tuple[str, ...] = ()  # what of the bit layout was filled in (`complete_pixel_module`)

    @property
    def exam(self) -> str:
        return self.exam_uid or self.exam_date

    @classmethod
    def of(
        cls, path: Path, patient_id: str, side: Side, view: View, ds: Dataset, filled: list[str]
    ) -> ImageRecord:
        sop = uid.UID(str(ds.get("SOPClassUID", "") or ""))
        return cls(
            path,
            patient_id,
            side,
            view,
            pixels=int(ds.get("Rows", 0)) * int(ds.get("Columns", 0)),
            sop_class=sop.keyword or str(sop),
            bits_stored=int(ds.get("BitsStored", 0) or 0),
            spacing_mm=pixel_spacing(ds),
            manufacturer=_text(ds, "Manufacturer"),
            exam_uid=_text(ds, "StudyInstanceUID"),
            exam_date=dicom_date(ds.get("StudyDate")),
            filled=tuple(filled),
        )


FOR_PROCESSING = {
    uid.DigitalMammographyXRayImageStorageForProcessing,
    uid.DigitalXRayImageStorageForProcessing,
}


def check_image(ds: Dataset, rel: str, cfg: ImagesConfig) -> list[str]:
    """Refuse, from the header alone, an image that is not a mammogram by its SOP class (and Modality):
    a CT slice or an ultrasound frame in the export (a Secondary Capture only with
    images.accept_secondary_capture); of the other presentation intent than images.presentation_intent;
    an additional view (a view modifier: spot compression, magnification, ...; images.view_modifiers);
    a synthetic 2D image (images.synthetic_2d); of a breast with an implant (images.implants); or whose
    pixels are not one 2D grayscale frame (colour, palette, several frames), or whose bit layout is unknown:
    before preprocessing decodes it in full. Returns what of the bit layout it filled in where the header
    lacks it (`complete_pixel_module`), as preprocessing will."""
    _check_kind(ds, rel, cfg)
    _check_intent(ds, rel, cfg.presentation_intent)
    if cfg.view_modifiers == "exclude" and (modifiers := view_modifiers(ds)):
        raise HeaderError(
            "additional view",
            f"{rel}: a {' and '.join(modifiers)} view, not a standard one (images.view_modifiers = 'keep' "
            "uses it as its view)",
        )
    if cfg.synthetic_2d == "exclude" and (said := synthetic_2d(ds, cfg.synthetic_2d_pattern)):
        raise HeaderError(
            "synthetic 2D",
            f"{rel}: a synthetic 2D image ({said}), computed from a tomosynthesis scan, not a full-field "
            "digital mammogram (images.synthetic_2d = 'keep' uses it as its view)",
        )
    if cfg.implants == "exclude" and _text(ds, "BreastImplantPresent").upper() == "YES":
        raise HeaderError(
            "breast implant",
            f"{rel}: BreastImplantPresent YES, a breast with an implant (images.implants = 'keep' uses it)",
        )
    photometric = _text(ds, "PhotometricInterpretation").upper() or "MONOCHROME2"
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise HeaderError(
            "not grayscale",
            f"{rel}: PhotometricInterpretation {photometric} with {samples} sample(s) per pixel: a colour or "
            "palette image, not a grayscale mammogram",
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise HeaderError(
            "several frames",
            f"{rel}: {frames} frames (tomosynthesis or a multi-frame export): one 2D mammogram per file "
            "is expected",
        )
    try:
        filled = complete_pixel_module(ds)
    except ValueError as exc:
        raise HeaderError("incomplete header", f"{rel}: {exc}, so its pixel values cannot be read") from None
    allocated, stored = (int(ds.get(k, 0) or 0) for k in ("BitsAllocated", "BitsStored"))
    if not 1 <= stored <= allocated:
        raise HeaderError(
            "inconsistent header",
            f"{rel}: BitsStored {stored} with BitsAllocated {allocated}: the header contradicts itself (the "
            "stored bits lie within the allocated ones), so its pixel values cannot be read",
        )
    return filled


def _check_kind(ds: Dataset, rel: str, cfg: ImagesConfig) -> None:
    sop = uid.UID(str(ds.get("SOPClassUID", "") or ""))
    modality = _text(ds, "Modality").upper()
    if sop in MAMMOGRAPHY or (sop in RADIOGRAPHY and modality == "MG"):
        return
    if sop in SECONDARY_CAPTURE:
        if cfg.accept_secondary_capture:
            return
        raise HeaderError(
            "not a mammogram",
            f"{rel}: a Secondary Capture image (digitised film or a screenshot), not a mammogram as "
            "acquired; images.accept_secondary_capture = true accepts it (e.g. for CBIS-DDSM)",
        )
    if not sop and modality in ("", "MG"):
        return  # no SOP class (not valid DICOM, but seen in research exports): nothing says otherwise
    what = f"SOP class {sop.name or sop}" if sop else ""
    what = ", ".join(filter(None, [what, f"Modality {modality}" if modality else ""]))
    raise HeaderError("not a mammogram", f"{rel}: {what}: not a mammogram")


def _check_intent(ds: Dataset, rel: str, wanted: str) -> None:
    """Refuse an image of the other presentation intent than `wanted` (by PresentationIntentType, else
    by its SOP class; an image that says neither is taken as FOR PRESENTATION)."""
    said = _text(ds, "PresentationIntentType").upper()
    raw = said == "FOR PROCESSING" or (not said and uid.UID(str(ds.get("SOPClassUID", ""))) in FOR_PROCESSING)
    if wanted == "any" or raw == (wanted == "processing"):
        return
    if raw:
        raise HeaderError(
            "for processing",
            f"{rel}: a FOR PROCESSING image (the detector's raw data, before the unit's processing for "
            "reading), not the image a radiologist reads; images.presentation_intent = 'processing' uses "
            "these instead",
        )
    raise HeaderError(
        "for presentation",
        f"{rel}: a FOR PRESENTATION image, and images.presentation_intent = 'processing' asks for raw ones",
    )


def view_modifiers(ds: Dataset) -> list[str]:
    """The modifiers of an image's view (ViewModifierCodeSequence, inside ViewCodeSequence or beside it),
    by their CodeMeaning (lower case) or, without one, their CodeValue."""
    items = list(ds.get("ViewModifierCodeSequence") or [])
    for view in ds.get("ViewCodeSequence") or []:
        items += list(view.get("ViewModifierCodeSequence") or [])
    names = [_text(item, "CodeMeaning").lower() or f"code {_text(item, 'CodeValue')}" for item in items]
    return list(dict.fromkeys(names))


def synthetic_2d(ds: Dataset, pattern: str) -> str:
    """What marks an image as a synthetic 2D one ("SeriesDescription 'L CC C-View'"), or '' where neither
    SeriesDescription nor ProtocolName matches `pattern` (case-insensitive)."""
    for keyword in ("SeriesDescription", "ProtocolName"):
        if re.search(pattern, text := _text(ds, keyword), re.IGNORECASE):
            return f"{keyword} {text!r}"
    return ""


class HeaderError(Exception):
    """Why a file cannot be used: (category, message)."""

    def __init__(self, category: str, message: str) -> None:
        super().__init__(message)
        self.category = category
        self.ds: Dataset | None = None  # the header, where it was read before the problem was found


def read_header(path: Path) -> Dataset:
    """Read a DICOM header, stopping before the pixels; check the pixel data is present and whole.

    The pixel check reads only the Pixel Data element header (PS3.5 7.1) and, for encapsulated
    data, the final sequence delimiter (PS3.5 A.4), so a truncated file is caught without decoding.
    """
    try:
        with path.open("rb") as fp:
            ds = read_dicom(fp, stop_before_pixels=True)
            if ds.file_meta.get("MediaStorageSOPClassUID") == uid.MediaStorageDirectoryStorage:
                raise HeaderError(
                    "DICOMDIR",
                    f"{path}: a DICOMDIR, the index of a media export, not an image (its files are read)",
                )
            try:
                encapsulated = _check_pixel_element(fp, ds, path.stat().st_size)
            except HeaderError as err:  # the header says whose image it is: a breast without it says why
                err.ds = ds
                raise
            if encapsulated and ds.preamble is None:  # read by read_dicom as a bare data set
                raise HeaderError(
                    "undecodable pixels",
                    f"{path}: a bare data set (no File Meta header) with compressed pixel data: nothing says "
                    "how they were compressed",
                )
    except InvalidDicomError:
        archive = _archive_kind(path)
        if archive:
            raise HeaderError(
                "archive, not unpacked",
                f"{path}: a {archive} archive, not a DICOM file: unpack it below images.root (ingest reads "
                "files, not archives)",
            ) from None
        raise HeaderError("not DICOM", f"{path}: not a DICOM file (no DICM preamble)") from None
    except HeaderError:
        raise
    except Exception as exc:  # pydicom raises many kinds on a damaged header
        raise HeaderError(
            "unreadable DICOM", f"{path}: DICOM header cannot be read ({type(exc).__name__}: {exc})"
        ) from None
    return ds


ARCHIVES = {b"PK\x03\x04": "ZIP", b"\x1f\x8b": "gzip", b"7z\xbc\xaf\x27\x1c": "7-Zip", b"Rar!": "RAR"}


def _archive_kind(path: Path) -> str | None:
    """The kind of archive a file is, by its first bytes (a tar by its magic at 257); None if none."""
    with path.open("rb") as fp:
        head = fp.read(262)
    if head[257:262] == b"ustar":
        return "tar"
    return next((kind for magic, kind in ARCHIVES.items() if head.startswith(magic)), None)


def _check_pixel_element(fp, ds: Dataset, size: int) -> bool:
    """Check the Pixel Data element is there and whole; whether it is encapsulated (compressed)."""
    start = fp.tell()
    head = fp.read(12)
    if len(head) < 8:
        raise HeaderError(
            "no pixel data",
            f"{fp.name}: no Pixel Data element (7FE0,0010): the file ends after "
            "the header (truncated, or not an image)",
        )
    syntax = getattr(
        ds.file_meta, "TransferSyntaxUID", None
    )  # absent: implicit VR little endian (PS3.5 10.1)
    little = syntax is None or syntax.is_little_endian
    implicit = syntax is None or syntax.is_implicit_VR
    order = "<" if little else ">"
    group, _ = struct.unpack(order + "HH", head[:4])
    if group != PIXEL_GROUP:
        raise HeaderError("no pixel data", f"{fp.name}: DICOM file has no Pixel Data element (7FE0,0010)")
    if implicit:
        (length,), header_len = struct.unpack(order + "L", head[4:8]), 8
    elif head[4:6] in _LONG_VRS:
        (length,), header_len = struct.unpack(order + "L", head[8:12]), 12
    else:
        (length,), header_len = struct.unpack(order + "H", head[6:8]), 8
    if length == 0xFFFFFFFF:  # encapsulated: items, then a Sequence Delimitation Item (PS3.5 A.4)
        _check_fragments(fp, start + header_len, order, size)
        return True
    if length == 0:
        raise HeaderError("no pixel data", f"{fp.name}: Pixel Data element is empty")
    if start + header_len + length > size:
        raise HeaderError(
            "truncated pixel data",
            f"{fp.name}: pixel data is cut short ({size - start - header_len} of {length} bytes present)",
        )
    return False


def _check_fragments(fp, pos: int, order: str, size: int) -> None:
    """Walk the item headers of encapsulated pixel data (8 bytes each, seeking over the fragments) to
    its sequence delimiter: a file cut short ends before it. Elements after the pixel data (trailing
    padding) are allowed."""
    while True:
        fp.seek(pos)
        head = fp.read(8)
        if len(head) < 8:
            raise HeaderError(
                "truncated pixel data",
                f"{fp.name}: compressed pixel data is cut short (the file ends before its delimiter)",
            )
        group, element, length = struct.unpack(order + "HHL", head)
        if (group, element) == (0xFFFE, 0xE0DD):
            return
        if (group, element) != (0xFFFE, 0xE000) or pos + 8 + length > size:
            raise HeaderError(
                "truncated pixel data",
                f"{fp.name}: compressed pixel data is cut short or damaged (an item at byte {pos} runs past "
                "the end of the file or is not an item)",
            )
        pos += 8 + length


def _match(pattern: str | None, rel: str, group: str) -> str | None:
    if not pattern:
        return None
    m = re.search(pattern, rel)
    return m.group(group) if m and m.group(group) else None


def _text(ds: Dataset, keyword: str) -> str:
    value = ds.get(keyword)
    return "" if value is None else str(value).strip()


def identify(ds: Dataset, rel: str, cfg: ImagesConfig) -> tuple[str, Side, View]:
    """Patient, side and view of one image from its header, with the fallbacks in the module docstring."""
    patient, side = _breast_of(ds, rel, cfg)
    return patient, side, _view(ds, rel, cfg)


def _breast_of(ds: Dataset, rel: str, cfg: ImagesConfig) -> tuple[str, Side]:
    """Patient and side of one image from its header (identify's first two)."""
    patient = _match(cfg.patient_pattern, rel, "patient") if cfg.patient_pattern else _text(ds, "PatientID")
    if not patient:
        raise HeaderError("missing patient", f"{rel}: no PatientID and images.patient_pattern does not match")

    for source, raw in (
        ("ImageLaterality", _text(ds, "ImageLaterality")),
        ("Laterality", _text(ds, "Laterality")),
        ("images.side_pattern", _match(cfg.side_pattern, rel, "side") or ""),
    ):
        if raw:
            side = parse_side(raw)
            if side is None:
                raise HeaderError(
                    "unknown side",
                    f"{rel}: unknown side value {raw!r} in {source} (expected L or R, LEFT/RIGHT, ...)",
                )
            break
    else:
        raise HeaderError(
            "missing side",
            f"{rel}: no side in ImageLaterality or Laterality, and no images.side_pattern match",
        )
    return patient, side


def _view(ds: Dataset, rel: str, cfg: ImagesConfig) -> View:
    position = _text(ds, "ViewPosition")
    if position:
        view = parse_view(position)
        if view is None:
            raise HeaderError("other view", f"{rel}: ViewPosition {position!r} is neither CC nor MLO")
        return view
    seq = ds.get("ViewCodeSequence")
    if seq:
        item = seq[0]
        view = parse_view(_text(item, "CodeValue")) or parse_view(_text(item, "CodeMeaning"))
        if view is not None:
            return view
    for view in (
        view_from_patient_orientation(ds.get("PatientOrientation")),
        find_view_in_text(_text(ds, "SeriesDescription")),
        parse_view(_match(cfg.view_pattern, rel, "view") or ""),
    ):
        if view is not None:
            return view
    raise HeaderError(
        "missing view",
        f"{rel}: no view in ViewPosition, ViewCodeSequence, PatientOrientation "
        "or SeriesDescription, and no images.view_pattern match",
    )


SCAN_CHUNK = 256  # files per task on a cluster: a task's overhead spread over many header reads


# an image left out: category, message, and the patient and side its header names ("": unknown)
Unusable = tuple[str, str, str, str]


def _read_one(path: Path, cfg: ImagesConfig) -> ImageRecord | Unusable:
    """One file's record, or why it cannot be used, with the breast its header names where it can be read
    (a breast left without that view then says why)."""
    rel = path.relative_to(cfg.root).as_posix()
    ds: Dataset | None = None
    try:
        ds = read_header(path)
        filled = check_image(ds, rel, cfg)
        pid, side, view = identify(ds, rel, cfg)
    except HeaderError as err:
        header = err.ds if ds is None else ds
        try:
            patient, of_side = _breast_of(header, rel, cfg) if header is not None else ("", None)
        except HeaderError:
            patient, of_side = "", None
        return err.category, str(err), patient, of_side.value if of_side else ""
    return ImageRecord.of(path, pid, side, view, ds, filled)


def _read_chunk(job: tuple[list[Path], ImagesConfig]) -> list[ImageRecord | Unusable]:
    files, cfg = job
    return [_read_one(path, cfg) for path in files]


def files_under(root: Path) -> list[Path]:
    """Every file under `root`, sorted, hidden files left out. Links to folders are followed, so a cohort
    assembled by links into an archive reads as if copied; a folder reached twice (a second link to it, a
    link loop) is read where it is first reached. A link to nothing is listed, to be written down as
    unreadable rather than passed over."""
    files: list[Path] = []
    seen: set[str] = set()
    for folder, subfolders, names in os.walk(root, followlinks=True):
        subfolders.sort()  # the same folder first reached on every machine
        real = os.path.realpath(folder)
        if real in seen:
            subfolders.clear()
            continue
        seen.add(real)
        paths = (Path(folder, name) for name in names if not name.startswith("."))
        files += [path for path in paths if path.is_file() or path.is_symlink()]  # not a FIFO or socket
    return sorted(files)


def _scan_tree(
    cfg: ImagesConfig, problems: Problems, progress: ProgressFn | None, cluster: str | None = None
) -> list[ImageRecord]:
    """Every file under images.root, read in order here, or in chunks on a Dask cluster (`cluster`,
    as `parallel_map` takes it): the same records and problems, in the same order, either way."""
    if not cfg.root.is_dir():
        raise DataError(f"{cfg.root}: image folder not found (images.root)")
    files = files_under(cfg.root)
    found: Iterable[ImageRecord | Unusable]
    if cluster:
        jobs = [(files[i : i + SCAN_CHUNK], cfg) for i in range(0, len(files), SCAN_CHUNK)]
        found = (
            r for chunk in parallel_map(_read_chunk, jobs, progress=progress, cluster=cluster) for r in chunk
        )
    else:
        found = (_read_one(path, cfg) for path in (progress(files, len(files)) if progress else files))
    records = []
    for path, result in zip(files, found):
        if isinstance(result, ImageRecord):
            records.append(result)
        else:
            category, message, patient, side = result
            problems.add(category, message, path=str(path), patient_id=patient, side=side)
    return records


def _scan_table(cfg: ImagesConfig, problems: Problems, progress: ProgressFn | None) -> list[ImageRecord]:
    assert cfg.table is not None
    cols = cfg.table_columns
    required = [cols.path, cols.patient, cols.side, cols.view]
    _, rows = read_rows(
        cfg.table, required, problems, "image table", cfg.table_encoding, "images.table_encoding"
    )
    records = []
    for row in progress(rows, len(rows)) if progress else rows:
        v = row.values
        where = f"{cfg.table.name} line {row.line}"
        path = _table_path(v[cols.path])
        if path is None:
            problems.add(
                "file not found",
                f"{where}: {v[cols.path]} is a Windows path with a drive, which this machine cannot open: "
                f"write the table's paths relative to images.root ({cfg.root})",
                patient_id=v[cols.patient],
                side=v[cols.side],
                path=v[cols.path],
            )
            continue
        path = path if path.is_absolute() else cfg.root / path
        if not cfg.allow_outside_root and not path.resolve().is_relative_to(cfg.root.resolve()):
            problems.add(
                "path outside the image folder",
                f"{where}: {v[cols.path]} resolves to {path.resolve()}, outside images.root {cfg.root} "
                "(images.allow_outside_root = true accepts it)",
                patient_id=v[cols.patient],
                side=v[cols.side],
                path=str(path),
            )
            continue
        side, view = parse_side(v[cols.side]), parse_view(v[cols.view])
        ids = {"patient_id": v[cols.patient], "side": v[cols.side], "path": str(path)}
        if side is None:
            problems.add(
                "unknown side",
                f"{where}, column '{cols.side}': unknown side value {v[cols.side]!r} "
                "(expected L or R, LEFT/RIGHT, ...)",
                **ids,
            )
            continue
        if view is None:
            problems.add(
                "other view",
                f"{where}, column '{cols.view}': view {v[cols.view]!r} is neither CC nor MLO",
                **ids,
            )
            continue
        if not path.is_file():
            problems.add("file not found", f"{where}: {path} does not exist", **ids)
            continue
        try:
            ds = read_header(path)
            filled = check_image(ds, str(path), cfg)
        except HeaderError as err:
            problems.add(err.category, f"{where}: {err}", **ids)
            continue
        disagreement = _header_disagrees(ds, v[cols.patient], side, view, cfg)
        if disagreement:
            problems.add("header disagrees with the table", f"{where}: {path}: {disagreement}", **ids)
            continue
        records.append(ImageRecord.of(path, v[cols.patient], side, view, ds, filled))
    return records


def _table_path(written: str) -> Path | None:
    """An image table's path as this machine opens it: a table written on Windows (dicom\\S1\\a.dcm) has
    its backslashes read as folders; None for a Windows path with a drive (D:\\export\\a.dcm) or a share
    (\\\\server\\share), which only that machine knows."""
    if os.name == "nt":
        return Path(written)
    windows = PureWindowsPath(written)
    if windows.drive:
        return None
    return Path(windows.as_posix()) if "\\" in written else Path(written)


def _header_disagrees(ds: Dataset, patient: str, side: Side, view: View, cfg: ImagesConfig) -> str | None:
    """What a file's own header says against its image-table row (patient, side, view), where it says it."""
    header_patient = str(ds.get("PatientID", "") or "").strip()
    if cfg.check_patient_id and header_patient and header_patient != patient:
        return (
            f"the header's PatientID is {header_patient!r}, the table says {patient!r} "
            "(images.check_patient_id = false where the table uses its own IDs)"
        )
    header_side = parse_side(ds.get("ImageLaterality", "") or ds.get("Laterality", "") or "")
    if header_side is not None and header_side is not side:
        return f"the header says side {header_side.value}, the table {side.value}"
    header_view = parse_view(ds.get("ViewPosition", "") or "")
    if header_view is not None and header_view is not view:
        return f"the header says view {header_view.value}, the table {view.value}"
    return None


ProgressFn = Callable[[Iterable, int], Iterable]


def find_images(
    cfg: ImagesConfig, problems: Problems, progress: ProgressFn | None = None, cluster: str | None = None
) -> list[ImageRecord]:
    """Every usable image, from a header scan (on a Dask cluster with `cluster`) or the image table;
    unusable files go to `problems`, and a warning to each whose bit layout was filled in."""
    if cfg.source == "table":
        records = _scan_table(cfg, problems, progress)
    else:
        records = _scan_tree(cfg, problems, progress, cluster)
    for r in records:
        if r.filled:
            problems.warn(
                "header completed",
                f"{r.path}: {'; '.join(r.filled)}, as PS3.3 C.8.11.7 fixes it for a mammogram",
                patient_id=r.patient_id,
                side=r.side.value,
                path=str(r.path),
            )
    return records


def select_exams(
    records: list[ImageRecord], policy: str, dates: dict[BreastKey, str], problems: Problems
) -> list[ImageRecord]:
    """One exam per breast (both views from it): a breast imaged at several exams (StudyInstanceUID,
    dated by StudyDate) keeps the one `policy` picks; the other exams' images are written down. With
    'before_label_date', the latest exam on or before the breast's date in `dates` (YYYYMMDD)."""
    by_breast: dict[BreastKey, dict[str, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        by_breast[(rec.patient_id, rec.side)][rec.exam].append(rec)
    _one_id_for_many(records, problems)
    kept: list[ImageRecord] = []
    for (pid, side), exams in by_breast.items():
        if len(exams) == 1 and policy != "before_label_date":
            kept += next(iter(exams.values()))
            continue
        dated = sorted(exams, key=lambda exam: (exams[exam][0].exam_date, exam))  # undated sort first
        ids = {"patient_id": pid, "side": side.value}
        if policy == "before_label_date":
            limit = dates.get((pid, side))
            dated = [e for e in dated if limit and exams[e][0].exam_date and exams[e][0].exam_date <= limit]
            if not dated:
                for rec in (r for recs in exams.values() for r in recs):
                    problems.add_by_policy(
                        "no exam before the label date",
                        f"{rec.path}: patient {pid} side {side.value} has no dated exam on or before "
                        f"{limit or 'its label date (none given)'} (exam_policy = 'before_label_date')",
                        path=str(rec.path),
                        **ids,
                    )
                continue
        chosen = dated[0] if policy == "earliest" else dated[-1]
        when = exams[chosen][0].exam_date or "an undated exam"
        for exam, recs in exams.items():
            if exam == chosen:
                kept += recs
                continue
            for rec in recs:
                same = " (another exam of that day)" if rec.exam_date and rec.exam_date == when else ""
                problems.add_by_policy(
                    "other exam",
                    f"{rec.path}: exam of {rec.exam_date or 'no date'} of patient {pid} side {side.value}; "
                    f"kept the exam of {when}{same} (images.exam_policy = '{policy}')",
                    path=str(rec.path),
                    **ids,
                )
    return kept


MANY_EXAMS = 10  # exams under one patient ID from which _one_id_for_many may doubt it


def _one_id_for_many(records: list[ImageRecord], problems: Problems) -> None:
    """Warn where one patient ID holds many of the export's exams (at least MANY_EXAMS and a fifth of all):
    most likely a de-identification that gave every patient one ID, which pairs strangers' images."""
    exams: dict[str, set[str]] = defaultdict(set)
    for rec in records:
        exams[rec.patient_id].add(rec.exam)
    if not exams:
        return
    pid, held = max(exams.items(), key=lambda item: len(item[1]))
    total = sum(len(e) for e in exams.values())
    if len(held) >= MANY_EXAMS and len(held) >= total / 5:
        problems.warn(
            "one patient ID, many exams",
            f"patient ID {pid!r} holds {len(held)} of the export's {total} exams: more than one person's, "
            "as when de-identification gives every patient one ID? Breasts are told apart by patient ID: "
            "take it from the file path (images.patient_pattern) or an image table (images.source = 'table')",
            patient_id=pid,
        )


def _told_apart(records: list[ImageRecord]) -> list[str]:
    """The records' paths from their deepest common folder: the file names where they share a folder, a
    folder more where two folders hold files of one name (an export's copy of a series)."""
    if len({r.path for r in records}) < 2:
        return [r.path.name for r in records]
    common = os.path.commonpath([str(r.path) for r in records])
    return [os.path.relpath(r.path, common) for r in records]


def pair_views(
    records: list[ImageRecord], policy: str, problems: Problems
) -> dict[BreastKey, dict[View, ImageRecord]]:
    """Group images by breast and view; more than one image for a view is resolved by `policy`."""
    groups: dict[BreastKey, dict[View, list[ImageRecord]]] = defaultdict(lambda: defaultdict(list))
    for rec in records:
        groups[(rec.patient_id, rec.side)][rec.view].append(rec)
    out: dict[BreastKey, dict[View, ImageRecord]] = {}
    for key, views in groups.items():
        ids = {"patient_id": key[0], "side": key[1].value}
        extra = {view: sorted(recs, key=lambda r: str(r.path)) for view, recs in views.items()}
        if policy == "error" and any(len(recs) > 1 for recs in extra.values()):
            for view, recs in extra.items():
                if len(recs) > 1:
                    names = ", ".join(_told_apart(recs))
                    problems.add(
                        "duplicate view",
                        f"patient {key[0]} side {key[1].value}: {len(recs)} {view.value} "
                        f"images ({names}); images.duplicate_policy = 'error' leaves the breast out",
                        path=str(recs[0].path),
                        **ids,
                    )
            continue
        chosen: dict[View, ImageRecord] = {}
        for view, recs in extra.items():
            keep = {"first": recs[0], "last": recs[-1]}.get(policy) or max(recs, key=lambda r: r.pixels)
            for rec in recs:
                if rec is not keep:
                    problems.add(
                        "duplicate view",
                        f"{rec.path}: another {view.value} image of patient {key[0]} side "
                        f"{key[1].value}; kept {_told_apart([keep, rec])[0]} (images.duplicate_policy = "
                        f"'{policy}')",
                        path=str(rec.path),
                        **ids,
                    )
            chosen[view] = keep
        out[key] = chosen
    return out
