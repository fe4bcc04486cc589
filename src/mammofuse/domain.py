"""The vocabulary of the study: sides, views, and how real exports spell them."""

from __future__ import annotations

import re
from datetime import datetime
from enum import StrEnum


class Side(StrEnum):
    """Laterality of a breast (DICOM ImageLaterality / Laterality, PS3.3 C.8.11.7 and C.7.3.1)."""

    LEFT = "L"
    RIGHT = "R"


class View(StrEnum):
    """The two standard screening projections used by the study."""

    CC = "CC"
    MLO = "MLO"

    def column(self, field: str) -> str:
        """The name of this view's `field` in the work folder's tables: "cc_path", "mlo_cache", ..."""
        return f"{self.value.lower()}_{field}"


VIEWS: tuple[View, ...] = (View.CC, View.MLO)
LABEL_DATE = "label_date"  # a breast's label date (labels.date_column, YYYYMMDD) in the work folder's tables

# English; German and Dutch (li, re); French; Spanish; Italian (sx, dx); Portuguese; Latin; Japanese, Chinese
_LEFT = "l left lt lft links li g gauche izquierda izq sinistra sx esquerda esq sin sinister 左"
_RIGHT = "r right rt rgt rechts re d droite derecha der destra dx direita dir dex dexter 右"
_SIDE_SPELLINGS = {Side.LEFT: set(_LEFT.split(" ")), Side.RIGHT: set(_RIGHT.split(" "))}

# ViewPosition values (PS3.3 C.8.11.7 defined terms) and the words exports use in free text.
_VIEW_SPELLINGS = {
    View.CC: {"cc", "craniocaudal", "cranio-caudal", "cranio caudal"},
    View.MLO: {"mlo", "mediolateral oblique", "medio-lateral oblique", "medio lateral oblique", "oblique"},
}
# Codes from CID 4014 "View for Mammography" (SNOMED RT and SNOMED CT forms).
_VIEW_CODES = {
    "R-10242": View.CC,
    "399162004": View.CC,
    "R-10226": View.MLO,
    "399368009": View.MLO,
}


def parse_side(value: object) -> Side | None:
    """Normalise a laterality spelling ("L", "LEFT", "Lt", "left", ...); None when unrecognised."""
    text = str(value).strip().lower().rstrip(".")
    for side, spellings in _SIDE_SPELLINGS.items():
        if text in spellings:
            return side
    return None


def parse_view(value: object) -> View | None:
    """Normalise a view spelling ("CC", "MLO", "cranio-caudal", a CID 4014 code); None when unrecognised."""
    text = str(value).strip()
    if text in _VIEW_CODES:
        return _VIEW_CODES[text]
    low = text.lower().replace("_", " ")
    for view, spellings in _VIEW_SPELLINGS.items():
        if low in spellings:
            return view
    return None


def find_view_in_text(text: str) -> View | None:
    """Find a view named as a word inside free text such as a SeriesDescription ("R MLO 2D")."""
    tokens = re.split(r"[^a-z]+", text.lower())
    found = {parse_view(t) for t in tokens if t} - {None}
    if not found:
        low = re.sub(r"[-_]", " ", text.lower())
        found = {v for v, spellings in _VIEW_SPELLINGS.items() for s in spellings if " " in s and s in low}
    return found.pop() if len(found) == 1 else None


def view_from_patient_orientation(value: object) -> View | None:
    """Infer the view from PatientOrientation (PS3.3 C.7.6.1.1.1).

    CBIS-DDSM-style exports write the view itself here ("CC", "MLO"). Standard mammography writes
    two direction codes: for CC the column direction is purely left/right ("A\\R"); for MLO it is
    oblique and carries a foot/head component ("A\\FR").
    """
    if value is None:
        return None
    values = [value] if isinstance(value, str) else list(value)  # type: ignore[call-overload]
    parts = [str(p).strip().upper() for p in values]
    parts = [p for part in parts for p in part.split("\\") if p]
    joined = " ".join(parts)
    direct = find_view_in_text(joined)
    if direct is not None:
        return direct
    if len(parts) == 2 and all(set(p) <= set("APLRHF") for p in parts):
        column = parts[1]
        if set(column) & {"H", "F"} and set(column) & {"L", "R"}:
            return View.MLO
        if set(column) <= {"L", "R"}:
            return View.CC
    return None


def dicom_date(value: object) -> str:
    """A DA value (StudyDate) as YYYYMMDD: the standard's form, or the "yyyy.mm.dd" of ACR-NEMA and of
    DICOM before 1993, which readers are to accept still (PS3.5 6.2); "" where it is no date."""
    text = str(value or "").strip()
    if re.fullmatch(r"\d{4}\.\d{2}\.\d{2}", text):
        text = text.replace(".", "")
    try:
        datetime.strptime(text, "%Y%m%d")
    except ValueError:
        return ""
    return text


INTEGRAL = re.compile(r"[-+]?\d+\.0+")  # "3.0": a whole number as a float column writes it


def spelling_key(text: str) -> str:
    """What two spellings of one category share: 'Positive' and 'positive', or 'ER  positive' and 'er
    positive', differ only in case or spaces, which say nothing in a clinical table; '3' and '3.0' (grade 3
    in a table saved with a gap in its column, which makes it a float column) only in how it was saved."""
    key = " ".join(text.split()).casefold()
    return key.partition(".")[0] if INTEGRAL.fullmatch(key) else key
