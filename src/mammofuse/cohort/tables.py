"""Label and clinical CSVs: read with line numbers, validate every cell, record what is wrong.

A problem names the file, the line, the column, what was found and what was expected. A missing key
or label column makes the table unusable and stops the run; a bad row or cell is recorded and skipped.
"""

from __future__ import annotations

import codecs
import csv
import difflib
import io
import itertools
import math
import re
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path

import numpy as np

from mammofuse.config import ClinicalConfig, LabelsConfig
from mammofuse.domain import Side, parse_side, spelling_key
from mammofuse.problems import DataError, Problems
from mammofuse.ui import counted
from mammofuse.units import FEW, UNITS, Spread, Unit, scale, unit_slip

NA_TOKENS = {"", "na", "n/a", "nan", "null", "none", "-", ".", "?", "missing", "unknown"}
BreastKey = tuple[str, Side]


@dataclass(frozen=True)
class Row:
    line: int  # 1-based line number in the file (the header is line 1)
    values: dict[str, str]


def read_rows(
    path: Path,
    required: list[str],
    problems: Problems,
    what: str,
    encoding: str = "auto",
    setting: str | None = None,
    sheet: tuple[str, str] | None = None,
) -> tuple[list[str], list[Row]]:
    """Read a CSV (comma, semicolon or tab separated) or an Excel workbook's sheet (.xlsx, .xlsm) as
    strings, keeping line numbers (a sheet's row numbers); malformed rows are recorded and skipped.
    `encoding` is a CSV's text encoding, or "auto" (see `decode`); `setting` is the config key that sets
    it, for messages. `sheet`: a workbook's sheet to read ('': the first with the `required` columns) and
    the config key that names it."""
    if not path.is_file():
        raise DataError(f"{path}: {what} not found")
    if path.suffix.lower() == ".xls":
        raise DataError(f"{path}: an Excel 97-2003 workbook: save it as .xlsx (or CSV) to read it")
    if path.suffix.lower() in EXCEL:
        lines = _sheet_lines(path, required, problems, *(sheet or ("", None)))
        spans = [(n, n) for n in range(1, len(lines) + 1)]
    else:
        text = decode(path, path.read_bytes(), encoding, problems, setting)
        lines, spans = _csv_lines(text, _delimiter(text, required), path)
    if not lines:
        raise DataError(f"{path}: {what} is empty (expected a header row with {', '.join(required)})")
    at = header_line(lines, required) or 0
    if at:
        above = " / ".join(filter(None, (", ".join(filter(None, map(str.strip, c))) for c in lines[:at])))
        problems.warn(
            "header below line 1",
            f"{path.name}: the header ({', '.join(required)}) is on line {spans[at][0]}; the {at} line"
            f"{'s' if at > 1 else ''} above it {'are' if at > 1 else 'is'} not read ({above!r})",
            path=str(path),
        )
    header = [h.strip() for h in lines[at]]
    missing = [c for c in required if c not in header]
    if missing:
        raise DataError(
            f"{path}: missing column(s) {', '.join(repr(c) for c in missing)} "
            f"(found columns: {', '.join(header)})"
        )
    if twice := duplicated(header, required):
        raise DataError(f"{path}: {twice[0]}")
    rows = []
    for (number, end), cells in zip(spans[at + 1 :], lines[at + 1 :], strict=True):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            quote = ""
            if end > number:  # a quoted cell ran over lines: a quote opened and closed only at `end`
                closed = "closes only at the file's end" if end == spans[-1][1] else f"closes on line {end}"
                quote = (
                    f'; a quote (") opened on line {number} {closed}: lines {number}-{end} read as one row'
                )
            problems.add(
                "malformed CSV row",
                f"{path.name} line {number}: {len(cells)} fields, expected {len(header)} "
                f"({', '.join(header)}){quote}",
                path=str(path),
            )
            continue
        rows.append(Row(number, {h: c.strip() for h, c in zip(header, cells)}))
    return header, rows


def _csv_lines(text: str, delimiter: str, path: Path) -> tuple[list[list[str]], list[tuple[int, int]]]:
    """A CSV text's rows, and the lines of the file each spans (first, last): a quoted cell may hold a line
    break (a comment typed over two lines), so a row's line in the file is not its index."""
    reader = csv.reader(io.StringIO(text), delimiter=delimiter)
    lines: list[list[str]] = []
    spans: list[tuple[int, int]] = []
    try:
        for cells in reader:
            first = spans[-1][1] + 1 if spans else 1
            lines.append(cells)
            spans.append((first, reader.line_num))
    except csv.Error as exc:
        raise DataError(f"{path}: cannot be read as a CSV file ({exc})") from None
    return lines, spans


HEADER_SEARCH = 10  # lines a table's header is looked for in: spreadsheets put a title or a date above it


def header_line(lines: list[list[str]], required: list[str]) -> int | None:
    """The index of the first of the top lines that names every `required` column (None: none does; the
    first line is then taken for the header, and the missing columns are named)."""
    for i, cells in enumerate(lines[:HEADER_SEARCH]):
        if set(required) <= {c.strip() for c in cells}:
            return i
    return None


def duplicated(header: list[str], used: list[str]) -> list[str]:
    """For each of the `used` columns that the header names more than once, why it cannot be read: which of
    them holds the values is not clear (a reader would silently take one)."""
    said = []
    for name in dict.fromkeys(used):
        where = [str(i + 1) for i, h in enumerate(header) if h == name]
        if len(where) > 1:
            said.append(
                f"column {name!r} appears {len(where)} times (columns {', '.join(where)}): which one holds "
                "the values is not clear; rename or remove all but one"
            )
    return said


EXCEL = (".xlsx", ".xlsm")


def _sheet_lines(
    path: Path, required: list[str], problems: Problems, name: str = "", setting: str | None = None
) -> list[list[str]]:
    """An Excel workbook's sheet `name`, or its first sheet whose header has the `required` columns (a
    workbook often opens on a legend or a summary; a warning names any later sheet that has them too), as
    a CSV's lines, one per sheet row: each cell as the text a person reads in it (see `_cell_text`), each
    row as wide as the header (empty cells past it dropped). No such sheet: a DataError naming each
    sheet's columns and `setting`, the config key that chooses one."""
    import openpyxl

    try:
        book = openpyxl.load_workbook(path, read_only=True, data_only=True)
    except Exception as exc:  # zipfile.BadZipFile, KeyError, InvalidFileException: not a workbook
        raise DataError(
            f"{path}: cannot be read as an Excel workbook ({type(exc).__name__}: {exc})"
        ) from None

    def text(row: tuple) -> list[str]:
        return [_cell_text(c.value, getattr(c, "number_format", "")) for c in row]

    try:
        headers, lines = {}, None
        for sheet in book.worksheets:  # a sheet not read: its top rows alone, where its header is
            rows = sheet.iter_rows()
            top = [text(row) for row in itertools.islice(rows, HEADER_SEARCH)] or [[]]
            at = header_line(top, required) or 0
            headers[sheet.title] = [h.strip() for h in top[at] if h.strip()]
            chosen = sheet.title == name if name else all(c in headers[sheet.title] for c in required)
            if chosen and lines is None:
                lines, read, header_at = [*top, *map(text, rows)], sheet.title, at
        found = "; ".join(f"sheet {title!r}: {', '.join(cols) or 'empty'}" for title, cols in headers.items())
        choose = f" (set {setting} to the one to read)" if setting else ""
        if lines is None and name:
            raise DataError(f"{path}: no sheet named {name!r}{f' ({setting})' if setting else ''}; {found}")
        if lines is None:
            raise DataError(f"{path}: no sheet has the columns {', '.join(required)}{choose}; {found}")
        also = [t for t, cols in headers.items() if t != read and all(c in cols for c in required)]
        if also and not name:
            problems.warn(
                "several data sheets",
                f"{path}: read sheet {read!r}, the first with the columns {', '.join(required)}; "
                f"{', '.join(map(repr, also))} {'has' if len(also) == 1 else 'have'} them too{choose}",
                path=str(path),
            )
    finally:
        book.close()
    width = len(lines[header_at])
    while width and not lines[header_at][width - 1]:
        width -= 1
    for cells in lines:
        cells.extend([""] * (width - len(cells)))
        while len(cells) > width and not cells[-1]:
            cells.pop()
    return lines


def _cell_text(value: object, number_format: str) -> str:
    """A cell as text: an integral number without ".0" (an ID 123, not 123.0), a cell formatted as a
    percentage with its sign (0.45 is "45 %"), a date as YYYY-MM-DD (a time after it)."""
    if value is None:
        return ""
    if isinstance(value, bool):
        return str(int(value))
    if isinstance(value, int | float):
        if "%" in number_format:
            return f"{round(value * 100, 10):g} %"
        return str(int(value)) if float(value).is_integer() else repr(float(value))
    if isinstance(value, datetime):
        return value.isoformat(sep=" ")
    if isinstance(value, date):
        return value.isoformat()
    return str(value)


BOMS = (  # UTF-32's little-endian mark begins with UTF-16's: longest first
    (codecs.BOM_UTF32_LE, "utf-32"),
    (codecs.BOM_UTF32_BE, "utf-32"),
    (codecs.BOM_UTF8, "utf-8-sig"),
    (codecs.BOM_UTF16_LE, "utf-16"),  # Excel's "Unicode Text"
    (codecs.BOM_UTF16_BE, "utf-16"),
)
FALLBACK = "cp1252"  # what Excel's "CSV" writes on a Western-European Windows


def decode(path: Path, data: bytes, encoding: str, problems: Problems, setting: str | None) -> str:
    """A CSV's text. "auto": the encoding its byte-order mark names, else UTF-8, else Windows-1252 (kept
    with a warning naming the first line that is not UTF-8); another encoding is taken as given. Bytes
    the encoding cannot read stop the run with the file, the line and what to set."""
    how = f"set {setting} to the encoding it was saved in" if setting else "save it as UTF-8"
    if encoding != "auto":
        try:
            return data.decode(encoding).removeprefix("\ufeff")
        except UnicodeDecodeError as exc:
            raise DataError(
                f"{path}: not {encoding} text ({_where(data, exc)}): {how} (e.g. 'utf-8', 'cp1252', "
                "'shift_jis')"
            ) from None
    for bom, name in BOMS:
        if data.startswith(bom):
            return decode(path, data, name, problems, setting)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        not_utf8 = _where(data, exc)
    try:
        text = data.decode(FALLBACK)
    except UnicodeDecodeError:
        raise DataError(
            f"{path}: neither UTF-8 nor Windows-1252 text (UTF-8 fails at {not_utf8}): {how} (e.g. "
            "'shift_jis', 'gb18030', 'cp1250')"
        ) from None
    note = f" (another encoding: set {setting})" if setting else ""
    problems.warn(
        "CSV not UTF-8",
        f"{path}: not UTF-8 ({not_utf8}): read as Windows-1252, what Excel writes on a Western-European "
        f"Windows{note}",
        path=str(path),
    )
    return text


def _where(data: bytes, exc: UnicodeDecodeError) -> str:
    """Where decoding failed, as a person finds it in the file: the line and the byte."""
    line = data[: exc.start].count(b"\n") + 1
    return f"line {line}, byte 0x{data[exc.start]:02x}"


def _delimiter(text: str, required: list[str]) -> str:
    """The field separator an export used: the one that splits one of the top lines into the `required`
    columns (',', ';' from spreadsheets set to a decimal comma, or a tab); where none does, ',' unless the
    first line has more ';' or tabs."""
    top = text.splitlines()[:HEADER_SEARCH] or [""]
    for sep in SEPARATORS:
        if header_line([next(csv.reader([line], delimiter=sep), []) for line in top], required) is not None:
            return sep
    return max(SEPARATORS, key=top[0].count)  # a tie (a one-column header) is ','


SEPARATORS = (",", ";", "\t")


ROUNDED_ID = re.compile(r"\d(?:[.,]\d+)?E\+\d+", re.IGNORECASE)  # 1.23457E+15: Excel's long numbers


def with_zeros(pid: str, width: int) -> str:
    """An all-digit patient ID padded with leading zeros to `width` digits (0: as written): what a
    spreadsheet that took the ID for a number dropped."""
    return pid.zfill(width) if width and pid.isascii() and pid.isdigit() else pid


def unmatched_ids(
    section: str, path: Path, written: set[str], imaged: set[str], problems: Problems, where: str = ""
) -> None:
    """Warn where a CSV's patient IDs name no imaged patient as written but would once written alike: with
    the images' leading zeros put back (a spreadsheet took the IDs for numbers; says the setting that puts
    them back, `where` naming the config it goes in where that is not the one being read), or compared
    without case, spaces, hyphens and other separators. One warning per CSV, with an example."""
    missing = sorted(written - imaged)
    digits = {pid for pid in imaged if pid.isascii() and pid.isdigit()}
    zeros = {pid.lstrip("0"): pid for pid in digits if pid.startswith("0")}
    found = {pid: zeros[pid] for pid in missing if pid in zeros}
    if found:
        widths = {len(pid) for pid in digits}
        fix = (
            f"set {section}.patient_id_width = {widths.pop()}{where}"
            if len(widths) == 1
            else "the images' IDs have different lengths: save the CSV with its ID column as text"
        )
        how = "with leading zeros put back"
        why = f"as a spreadsheet that took the IDs for numbers writes them: {fix}"
    else:
        alike = {_plain(pid): pid for pid in imaged}
        found = {pid: alike[_plain(pid)] for pid in missing if _plain(pid) in alike}
        how = "compared without case and separators"
        why = "write them in the CSV as the images write them (or take the patient from the file path)"
    if not found:
        return
    short, full = next(iter(found.items()))
    problems.warn(
        "patient IDs written otherwise",
        f"{path.name}: {len(found)} patient IDs name no imaged patient as written but do {how} (e.g. "
        f"{short!r} is {full!r} in the images), {why}",
        path=str(path),
    )


def _plain(pid: str) -> str:
    """An ID without case and separators ("mf-00 1" -> "MF001")."""
    return re.sub(r"[\W_]+", "", pid).upper()


def _keyed(
    rows: list[Row],
    patient_col: str,
    side_col: str,
    path: Path,
    problems: Problems,
    width: int,
    used: list[str],
) -> tuple[dict[BreastKey, Row], set[BreastKey]]:
    """Key rows by (patient, side); unknown sides are recorded and left out. A key written more than once
    is read once where its rows agree in the `used` columns (a row pasted twice), with a warning, and
    left out where they do not, naming the column. `width`: all-digit IDs padded with leading zeros to
    that many digits. No `side_col` (""): a row per patient, keying both breasts. Returns the keyed rows
    and the keys left out for rows that disagree."""
    by_key: dict[BreastKey, list[Row]] = defaultdict(list)
    for row in rows:
        pid, raw_side = with_zeros(row.values[patient_col], width), row.values.get(side_col, "")
        side = parse_side(raw_side) if side_col else None
        sides = (side,) if side else (Side.LEFT, Side.RIGHT)  # a per-patient table: both breasts
        if not pid:
            problems.add(
                "invalid row",
                f"{path.name} line {row.line}, column '{patient_col}': empty patient ID",
                path=str(path),
            )
        elif ROUNDED_ID.fullmatch(pid):
            problems.add(
                "invalid row",
                f"{path.name} line {row.line}, column '{patient_col}': patient ID {pid!r} is a number in "
                "scientific notation: a spreadsheet took a long ID for a number and rounded it, so it names "
                "no one (save the CSV again with the ID column as text)",
                path=str(path),
            )
        elif side_col and side is None:
            problems.add(
                "unknown side",
                f"{path.name} line {row.line}, column '{side_col}': unknown side value {raw_side!r} "
                "(expected L/R, left/right, ...)",
                patient_id=pid,
                side=raw_side,
                path=str(path),
            )
        else:
            for side in sides:
                by_key[(pid, side)].append(row)
    out, twice = {}, set()
    for key, found in by_key.items():
        if len(found) > 1:
            ids = {"patient_id": key[0], "side": key[1].value, "path": str(path)}
            lines = ", ".join(str(r.line) for r in found)
            written = f"{path.name} lines {lines}: {len(found)} rows for patient {key[0]} side {key[1].value}"
            differ = [c for c in used if len({r.values.get(c, "") for r in found}) > 1]
            if differ:
                twice.add(key)
                said = ", ".join(repr(r.values.get(differ[0], "")) for r in found)
                problems.add(
                    "duplicate key",
                    f"{written} (expected one), which differ in '{differ[0]}' ({said}); the breast is left "
                    "out",
                    **ids,
                )
                continue
            problems.warn("duplicate rows", f"{written}, alike in every column read: read once", **ids)
        out[key] = found[0]
    return out, twice


def parse_number(text: str) -> float | None:
    """A number as exports write it ("12.5", "12,5", " 7 "); None when it is not one."""
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        return None
    return value if value == value else None  # NaN is not a number here


# how a clinical cell may write a unit (clinical.units), any case, a full stop after it or not
UNIT_SPELLINGS = {
    "mm": "mm",
    "cm": "cm",
    **dict.fromkeys(("y", "yr", "yrs", "year", "years"), "years"),
    **dict.fromkeys(("%", "percent"), "percent"),
}


def _measure(text: str, col: str, unit: str | None, written_in: str | None) -> tuple[float | None, str]:
    """A numeric cell's value in its feature's `unit` (clinical.units): a plain number as written in
    `written_in` (else `unit`), or a number with a unit of the same kind ("2.3 cm" for millimetres), each
    converted; (None, why it is not one, for the message) where it is not a number."""
    if (number := parse_number(text)) is not None:
        return (_convert(text, written_in, unit) if unit and written_in else number), ""
    if not (with_unit := WITH_UNIT.fullmatch(text.strip())):
        return None, ""
    its_unit = with_unit[2]
    said = UNIT_SPELLINGS.get(its_unit.lower().rstrip("."))
    if unit and said and UNITS[said][0] == UNITS[unit][0]:
        return _convert(with_unit[1], said, unit), ""
    if known := unit or said:  # the units of the feature's kind, or of the cell's
        kind = " or ".join(f'"{u}"' for u, (quantity, _) in UNITS.items() if quantity == UNITS[known][0])
        if unit:
            return None, f" in {kind} (its unit {its_unit!r}; clinical.units: {col} in {unit})"
        return (
            None,
            f" (a number with a unit, {its_unit!r}: clinical.units = {{ {col} = {kind} }} reads it)",
        )
    return None, f" (a number with a unit, {its_unit!r}: write its numbers alone, all in one unit)"


def _convert(number: str, unit: str, to: str) -> float:
    """`number` (as written: "2,3" or "2.3") in `unit`, in `to`: in decimal, so 2.3 cm is 23 mm exactly."""
    return float(Decimal(number.strip().replace(",", ".")) * UNITS[unit][1] / UNITS[to][1])


DATE_FORMS = "YYYY-MM-DD, YYYYMMDD, DD.MM.YYYY, DD/MM/YYYY, MM/DD/YYYY or a spreadsheet's day number"
SLASHED = re.compile(r"(\d{1,2})/(\d{1,2})/\d{4}")


def _day(text: str) -> str:
    """The date part of a cell (a time of day after it, as a spreadsheet's date-time cell writes it, is
    ignored)."""
    return text.strip().replace("T", " ").partition(" ")[0]


EXCEL_EPOCH = datetime(1899, 12, 30)  # day 0 of a spreadsheet's date numbers (Excel's, LibreOffice's)


def parse_date(text: str, month_first: bool = False) -> str | None:
    """A date as exports write it (DATE_FORMS: a slashed date day first unless `month_first`; a 5-digit
    day number from 1970 on, what a spreadsheet shows of a date whose cell lost its date format: 45473 is
    2024-06-30), as YYYYMMDD (DICOM's DA); None when it is not one."""
    if re.fullmatch(r"\d{5}", _day(text)):
        day = EXCEL_EPOCH + timedelta(days=int(_day(text)))
        return day.strftime("%Y%m%d") if 1970 <= day.year < 2100 else None  # digital mammography's years
    slashed = "%m/%d/%Y" if month_first else "%d/%m/%Y"
    for form in ("%Y-%m-%d", "%Y%m%d", "%d.%m.%Y", slashed):
        try:
            return datetime.strptime(_day(text), form).strftime("%Y%m%d")
        except ValueError:
            continue
    return None


@dataclass
class Labels:
    label: dict[BreastKey, int] = field(default_factory=dict)
    raw: dict[BreastKey, str] = field(default_factory=dict)  # every keyed row's text, valid or not
    value: dict[BreastKey, float] = field(default_factory=dict)  # valid invasive fractions, as written
    date: dict[BreastKey, str] = field(default_factory=dict)  # labels.date_column as YYYYMMDD
    duplicated: set[BreastKey] = field(default_factory=set)  # written twice: left out, the reason given


def read_labels(cfg: LabelsConfig, problems: Problems) -> Labels:
    """Labels per breast: binary, or 1 (positive) when the invasive fraction < threshold."""
    columns = [
        cfg.patient_column,
        cfg.side_column,
        cfg.column,
        *([cfg.date_column] if cfg.date_column else []),
    ]
    _, rows = read_rows(
        cfg.path, columns, problems, "label CSV", cfg.encoding, "labels.encoding", (cfg.sheet, "labels.sheet")
    )
    out = Labels()
    used = [cfg.column, *([cfg.date_column] if cfg.date_column else [])]
    keyed, out.duplicated = _keyed(
        rows, cfg.patient_column, cfg.side_column, cfg.path, problems, cfg.patient_id_width, used
    )
    month_first = (
        _month_first(cfg, [row.values[cfg.date_column] for row in rows]) if cfg.date_column else False
    )
    recode = {spelling_key(written): read for written, read in cfg.recode.items()}
    if cfg.kind == "binary":  # the classes' names read as their labels, unless recoded otherwise
        recode = {spelling_key(cfg.positive): "1", spelling_key(cfg.negative): "0", **recode}
    qualified: dict[str, list[tuple[str, int]]] = {kind: [] for kind in QUALIFIED}  # as written, line
    shares: list[tuple[str, int]] = []  # percentages below 1 that read as shares would change their label
    for key, row in keyed.items():
        raw = row.values[cfg.column]
        out.raw[key] = raw  # the row exists, valid or not: ingest must not say it is missing
        raw = recode.get(spelling_key(raw), raw)
        where = f"{cfg.path.name} line {row.line}, column '{cfg.column}'"
        ids = {"patient_id": key[0], "side": key[1].value, "path": str(cfg.path)}
        if cfg.date_column:
            date = parse_date(row.values[cfg.date_column], month_first)
            if date is None:
                problems.add(
                    "invalid date",
                    f"{cfg.path.name} line {row.line}, column '{cfg.date_column}': "
                    f"{row.values[cfg.date_column]!r} is not a date ({DATE_FORMS})",
                    **ids,
                )
                continue
            out.date[key] = date
        if raw.lower() in NA_TOKENS:
            problems.add("missing label", f"{where}: no value (expected {_expected(cfg)})", **ids)
            continue
        if cfg.kind == "fraction":
            read = _fraction(raw, cfg)
            if isinstance(read, str):
                problems.add("invalid label", f"{where}: {read}", **ids)
                continue
            out.label[key], out.value[key] = read
            if kind := _unqualified(raw)[0]:
                qualified[kind].append((raw, row.line))
            elif _flips_as_share(raw, read[1], cfg):
                shares.append((raw, row.line))
        else:
            value = parse_number(raw)
            if value not in (0.0, 1.0):
                problems.add(
                    "invalid label",
                    f"{where}: {raw!r} is not a binary label (expected {_expected(cfg)}; labels.recode = "
                    f'{{ {raw!r} = "1" }} reads another word)',
                    **ids,
                )
                continue
            out.label[key] = int(value)
    _warn_qualified(f"{cfg.path.name}, column '{cfg.column}'", qualified, problems, cfg.path)
    _check_scale(cfg, out)
    _warn_shares(cfg, out, shares, problems)
    return out


def _flips_as_share(raw: str, value: float, cfg: LabelsConfig) -> bool:
    """Whether an invasive fraction read as a percentage below 1 ("0.8": 0.8 %) would take the other label
    read as a share of 1 (80 %): written with decimals and no percent sign, at or above threshold / 100."""
    plain = cfg.scale == "percent" and "%" not in raw and not WHOLE.fullmatch(raw.strip())
    return plain and cfg.threshold / 100 <= value < 1


def _warn_shares(
    cfg: LabelsConfig, labels: Labels, shares: list[tuple[str, int]], problems: Problems
) -> None:
    """One warning where a column of percentages (4 in 5 of its values above 1) holds values below 1 whose
    label turns on the reading ("0.8": 0.8 %, EIC positive, or 80 % typed as a share, negative): kept as
    read, named with their lines."""
    values = list(labels.value.values())
    if not shares or sum(v > 1 for v in values) < 0.8 * len(values):
        return
    shown = ", ".join(f"{raw!r} (line {line})" for raw, line in shares[:3]) + (
        ", ..." if len(shares) > 3 else ""
    )
    problems.warn(
        "fraction typed as a share?",
        f"{cfg.path.name}, column '{cfg.column}': {counted(len(shares), 'value')} below 1 in a column of "
        f"percentages: {shown}; read as percent ({cfg.positive}: below {cfg.threshold:g} %), but typed as "
        f"shares of 1 (0.8 for 80 %) they would be {cfg.negative}: if so, write them as percent",
        path=str(cfg.path),
    )


WHOLE = re.compile(r"[-+]?\d+")  # "23", a number written without decimals ("23.0" has one)
WITH_UNIT = re.compile(r"([-+]?\d+(?:[.,]\d+)?)\s*(%|[^\W\d_]+\.?)")  # "2.3 cm", "45 years", "12mm", "20 %"
BOUND = re.compile(r"(<=?|>=?|≤|≥)\s*(.*)")  # "<5", "> 90 %": a fraction near 0 or 100 as reports write it
# a number written with a qualifier, read as the number with one warning per column: (category, written as,
# read as)
QUALIFIED = {
    "bound": ("bound read as its value", "a bound", "the bound"),
    "approximate": ("approximate value read as its number", "approximate", "its number"),
    "range": ("range read as its midpoint", "a range", "its midpoint"),
}
APPROXIMATE = re.compile(r"(~|≈|ca\.?|circa|approx\.?|approximately)\s*(\d.*)", re.IGNORECASE)  # "ca. 2,5 cm"
SPAN = re.compile(r"(\d+(?:[.,]\d+)?)\s*(?:-|–|to)\s*(\d+(?:[.,]\d+)?)(\D*)")  # Ki-67 "10-20 %", "1,5-2 cm"


def _warn_qualified(
    column: str, qualified: dict[str, list[tuple[str, int]]], problems: Problems, path: Path
) -> None:
    """One warning for each QUALIFIED kind of cell a column held (`qualified`: kind -> its cells as written,
    with their lines), naming the first three."""
    for kind, found in qualified.items():
        if not found:
            continue
        category, written_as, read_as = QUALIFIED[kind]
        shown = ", ".join(f"{raw!r} (line {line})" for raw, line in found[:3])
        problems.warn(
            category,
            f"{column}: {counted(len(found), 'value')} written as {written_as}, read as {read_as}: {shown}"
            + (", ..." if len(found) > 3 else ""),
            path=str(path),
        )


def _unqualified(raw: str) -> tuple[str | None, str]:
    """A numeric cell's QUALIFIED kind (None for a plain one) and the number it is read as, as text with
    what followed it (a unit, a percent sign): a bound's, an approximate value's, a range's midpoint."""
    if bound := BOUND.fullmatch(raw):  # Ki-67 "<1 %", as pathology reports write one near 0 or 100
        return "bound", bound[2]
    if approximate := APPROXIMATE.fullmatch(raw):
        return "approximate", approximate[2]
    if span := SPAN.fullmatch(raw.strip()):
        low, high = (Decimal(n.replace(",", ".")) for n in span.group(1, 2))
        if low < high:  # "20-10" is no range: not a number
            return "range", f"{(low + high) / 2}{span[3]}"
    return None, raw


def _fraction(raw: str, cfg: LabelsConfig) -> tuple[int, float] | str:
    """An invasive fraction as written -> (label, the value in labels.scale), or why it is none. "45 %" is
    a percentage whatever the scale says; an approximate one ("ca. 80 %") is read as its number; a bound
    ("<5", ">90") and a range ("60-70 %", read as its midpoint) where they decide the side of the
    threshold."""
    read: tuple[int, float] | str | None
    if span := SPAN.fullmatch(raw.strip()):
        low, high = (_read_fraction(f"{end}{span[3]}", cfg) for end in span.group(1, 2))
        if not isinstance(low, tuple) or not isinstance(high, tuple) or low[1] >= high[1]:
            read = None
        else:
            read = (low[0], (low[1] + high[1]) / 2) if low[0] == high[0] else UNDECIDED
    else:
        approximate = APPROXIMATE.fullmatch(raw)
        read = _read_fraction(approximate[2] if approximate else raw, cfg)
    if read is None:
        return f"{raw!r} is not an invasive fraction (expected {_expected(cfg)})"
    if read == UNDECIDED:
        return f"{raw!r} does not say on which side of the threshold ({cfg.threshold:g} %) the fraction lies"
    return read


UNDECIDED = "undecided"  # a bound or range with the threshold inside it


def _read_fraction(text: str, cfg: LabelsConfig) -> tuple[int, float] | str | None:
    """A number or bound of an invasive fraction -> (label, value in labels.scale), UNDECIDED, or None
    where it is not one."""
    top = 100 if cfg.scale == "percent" else 1
    bound = BOUND.fullmatch(text)
    number = bound[2] if bound else text
    value = parse_number(number.removesuffix("%"))
    if value is not None and number.endswith("%"):  # as a spreadsheet writes a cell formatted as a percentage
        value = value * top / 100
    if value is None or not 0 <= value <= top:
        return None
    share = value * 100 / top
    if bound is None:
        return int(share < cfg.threshold), value
    below, strict = bound[1] in ("<", "<=", "≤"), bound[1] in ("<", ">")
    if below and (share < cfg.threshold or strict and share == cfg.threshold):
        return 1, value
    if not below and share >= cfg.threshold:
        return 0, value
    return UNDECIDED


def _month_first(cfg: LabelsConfig, written: list[str]) -> bool:
    """Whether the date column's slashed dates (03/04/2024) put the month first: as labels.date_order says,
    or ("auto") as a date with a first number over 12 (day first: 25/03/2024) or a second one over 12
    (month first: 03/25/2024) shows. A column that shows both, or neither, stops the run: read the wrong
    way, every date would move."""
    if cfg.date_order != "auto":
        return cfg.date_order == "month_first"
    slashed = [m for m in (SLASHED.fullmatch(_day(text)) for text in written) if m]
    day_first = next((m[0] for m in slashed if int(m[1]) > 12), None)
    month_first = next((m[0] for m in slashed if int(m[2]) > 12), None)
    where = f"{cfg.path.name}, column '{cfg.date_column}'"
    if day_first and month_first:
        raise DataError(
            f"{where}: {day_first} puts the day first, {month_first} the month: one order per column, please"
        )
    if slashed and not day_first and not month_first:
        raise DataError(
            f"{where}: in every slashed date ({slashed[0][0]}, ...) both numbers could be the month: set "
            "labels.date_order = 'day_first' (25/03/2024) or 'month_first' (03/25/2024)"
        )
    return month_first is not None


def _check_scale(cfg: LabelsConfig, labels: Labels) -> None:
    """Stop when every invasive fraction read as percent lies in [0, 1]: almost surely fractions (0.75 for
    75 %), which would make every breast positive."""
    values = list(labels.value.values())
    if cfg.kind == "fraction" and cfg.scale == "percent" and len(values) >= 5 and max(values) <= 1:
        raise DataError(
            f"{cfg.path.name}: all {len(values)} values of '{cfg.column}' lie between 0 and 1, but "
            f"labels.scale is 'percent' (0-100), so every breast would fall below the threshold "
            f"{cfg.threshold:g} and be labelled positive. Are they fractions (0.75 for 75 %)? Then set "
            "labels.scale = 'fraction'."
        )


def _expected(cfg: LabelsConfig) -> str:
    if cfg.kind == "binary":
        return f"0 or 1, or {cfg.positive!r} or {cfg.negative!r}"
    return "a number from 0 to 100 (percent)" if cfg.scale == "percent" else "a number from 0 to 1 (fraction)"


@dataclass
class Clinical:
    numeric: list[str]
    categorical: list[str]
    values: dict[BreastKey, dict[str, float | str | None]] = field(default_factory=dict)
    na_reason: dict[BreastKey, str] = field(default_factory=dict)  # the first missing or invalid cell
    invalid: dict[BreastKey, dict[str, str]] = field(default_factory=dict)  # feature -> why it was unreadable
    duplicated: set[BreastKey] = field(default_factory=set)  # written twice: left out, the reason given
    # feature -> its numbers written without a unit, each True where written whole (without decimals)
    plain: dict[str, dict[BreastKey, bool]] = field(default_factory=dict)


def read_clinical(cfg: ClinicalConfig, problems: Problems) -> Clinical | None:
    """Clinical features per breast; invalid cells are recorded and become missing (NA policy decides)."""
    if cfg.path is None:
        return None
    required = [cfg.patient_column, *([cfg.side_column] if cfg.side_column else [])]
    header, rows = read_rows(
        cfg.path,
        required,
        problems,
        "clinical CSV",
        cfg.encoding,
        "clinical.encoding",
        (cfg.sheet, "clinical.sheet"),
    )
    written = header
    # feature -> the file's name for it
    as_written = {new: old for old, new in cfg.rename.items() if old in header and old != new}
    clash = sorted(set(as_written) & set(header))
    if clash:
        raise DataError(
            f"{cfg.path}: [clinical] rename gives a column the name {clash[0]!r}, which the file has already"
        )
    if as_written:  # the export's column names -> the features' names
        header = [cfg.rename.get(h, h) for h in header]
        rows = [Row(r.line, {cfg.rename.get(h, h): v for h, v in r.values.items()}) for r in rows]
    for reason in duplicated(header, cfg.numeric + cfg.categorical):
        reason = f"{cfg.path.name}: {reason}; continuing without it"
        problems.add("duplicate column", reason, path=str(cfg.path))
    present = {h for h, n in Counter(header).items() if n == 1}  # a column written twice is not read
    for col in [c for c in cfg.numeric + cfg.categorical if c not in header]:
        named = next((k for k, v in cfg.rename.items() if v == col), col)  # as the file would write it
        problems.add(
            "missing column",
            f"{cfg.path.name}: column {named!r} named in [clinical] is not in the file "
            f"(found: {', '.join(written)}); continuing without it",
            path=str(cfg.path),
        )
    out = Clinical([c for c in cfg.numeric if c in present], [c for c in cfg.categorical if c in present])
    keyed, out.duplicated = _keyed(
        rows,
        cfg.patient_column,
        cfg.side_column,
        cfg.path,
        problems,
        cfg.patient_id_width,
        out.numeric + out.categorical,
    )
    recode = {col: {spelling_key(k): v for k, v in codes.items()} for col, codes in cfg.recode.items()}
    cells: dict[str, list[tuple[float, str, BreastKey]]] = {col: [] for col in out.numeric}
    # the cells written without a unit: True for one written without decimals
    plain = out.plain = {col: {} for col in out.numeric}
    qualified: dict[str, dict[str, list[tuple[str, int]]]] = {  # QUALIFIED's kind -> as written, line
        col: {kind: [] for kind in QUALIFIED} for col in out.numeric
    }
    spellings: dict[str, dict[str, list[int]]] = {col: defaultdict(list) for col in out.categorical}
    for key, row in keyed.items():
        values: dict[str, float | str | None] = {}
        for col in out.numeric + out.categorical:
            raw = row.values[col]
            if codes := recode.get(col):
                raw = codes.get(spelling_key(raw), raw)
            where = f"{cfg.path.name} line {row.line}, column '{as_written.get(col, col)}'"
            if raw.lower() in NA_TOKENS:
                values[col] = None
                out.na_reason.setdefault(key, f"{where}: missing value")
            elif col in out.numeric:
                kind, text = _unqualified(raw)
                unit = cfg.units.get(col)
                text = text.strip()
                if unit is None or UNITS[unit][0] != "share":  # "20 %" is 20; a share reads its unit
                    text = text.removesuffix("%")
                number, unit_said = _measure(text, col, unit, cfg.written_in.get(col))
                if kind and number is not None:
                    qualified[col][kind].append((raw, row.line))
                low, high = cfg.ranges.get(col, (-math.inf, math.inf))
                values[col] = number if number is not None and low <= number <= high else None
                if number is not None and values[col] is not None:
                    cells[col].append((number, where, key))
                    if parse_number(text) is not None:  # no unit written
                        plain[col][key] = WHOLE.fullmatch(text) is not None
                    continue
                wrong = (
                    f"is not a number{unit_said}" if number is None else f"lies outside {low:g} to {high:g}"
                )
                reason = f"{where}: {raw!r} {wrong}" + ("" if number is None else " (clinical.ranges)")
                out.na_reason.setdefault(key, reason)
                out.invalid.setdefault(key, {})[col] = reason
                problems.add(
                    "invalid clinical value",
                    f"{reason} (treated as missing)",
                    patient_id=key[0],
                    side=key[1].value,
                    path=str(cfg.path),
                )
            else:
                values[col] = raw
                spellings[col][raw].append(row.line)
        out.values[key] = values
    column = {col: f"{cfg.path.name}, column '{as_written.get(col, col)}'" for col in cells | spellings}
    for col, read in cells.items():
        if col not in cfg.ranges:
            _warn_far_values(col, read, problems, cfg.path)
        if col in cfg.units:
            unit = cfg.units[col]
            _warn_other_units(unit, cfg.written_in.get(col, unit), plain[col], read, problems, cfg.path)
        _warn_qualified(column[col], qualified[col], problems, cfg.path)
    for col, lines in spellings.items():
        if respelt := _one_spelling(col, column[col], lines, problems, cfg.path):
            for values in out.values.values():
                if isinstance(value := values[col], str):
                    values[col] = respelt.get(value, value)
    return out


def _one_spelling(
    col: str, where: str, lines: dict[str, list[int]], problems: Problems, path: Path
) -> dict[str, str]:
    """A categorical column's values that differ only in case or spaces ('Positive' and 'positive') are one
    category, spelt as most of its rows spell it: returns the respellings, each warned about. A value of at
    most RARE rows that looks like a frequent one ('positve' beside 'positive') is warned about as a likely
    typo and kept (`recode` reads it as the other). `lines`: each value's line numbers."""
    groups: dict[str, list[str]] = defaultdict(list)
    for value in sorted(lines):
        groups[spelling_key(value)].append(value)
    respelt = {}
    for variants in groups.values():
        main = max(variants, key=lambda v: len(lines[v]))
        for value in [v for v in variants if v != main]:
            respelt[value] = main
            problems.warn(
                "category spelt several ways",
                f"{where}: {value!r} ({_lines(lines[value])}) read as {main!r} ({_lines(lines[main])}), the "
                "same but for case or spaces",
                path=str(path),
            )
            lines[main] = sorted(lines[main] + lines.pop(value))
    total = sum(len(rows) for rows in lines.values())
    frequent = [value for value, rows in lines.items() if len(rows) > RARE * 10]
    for value, rows in lines.items():
        like = difflib.get_close_matches(value, frequent, n=1, cutoff=0.75)
        if len(rows) <= RARE and total >= FEW and like:
            problems.warn(
                "rare category",
                f"{where}: {value!r} ({_lines(rows)}) beside {like[0]!r} ({_lines(lines[like[0]])}): a "
                f"typo? (kept as a category of its own; recode = {{ {col} = {{ {value!r} = {like[0]!r} }} }} "
                "reads it as the other)",
                path=str(path),
            )
    return respelt


def _lines(rows: list[int]) -> str:
    """'line 7', or '12 rows, lines 3, 8, 9, ...'."""
    if len(rows) == 1:
        return f"line {rows[0]}"
    return f"{len(rows)} rows, lines {', '.join(map(str, rows[:3]))}{', ...' if len(rows) > 3 else ''}"


FAR = 5.0  # interquartile ranges beyond a quartile: a value there is warned about as a likely typo
RARE = 2  # rows: a category this rare beside a frequent one spelt alike is warned about


def _warn_far_values(
    col: str, cells: list[tuple[float, str, BreastKey]], problems: Problems, path: Path
) -> None:
    """Warn about each value of a numeric column without a range that is far from the others (more than FAR
    interquartile ranges beyond a quartile: age 560 for 56, Ki-67 250), or negative where every other is
    not: the usual typos of a clinical spreadsheet. The breast is kept: only `clinical.ranges` says what
    a column cannot hold."""
    if len(cells) < FEW:
        return
    numbers = np.array([c[0] for c in cells])
    q1, q3 = np.percentile(numbers, [25, 75])
    low, high = q1 - FAR * (q3 - q1), q3 + FAR * (q3 - q1)
    negatives = np.count_nonzero(numbers < 0)
    for number, where, key in cells:
        if number < 0 and negatives == 1:
            said = "is the column's only value below 0"
        elif not low <= number <= high:
            said = f"lies far from the column's other values (quartiles {q1:g} and {q3:g})"
        else:
            continue
        problems.warn(
            "implausible clinical value",
            f"{where}: {number:g} {said}: a typo? (kept; clinical.ranges = {{ {col} = [lowest, highest] }} "
            "reads one outside as missing)",
            patient_id=key[0],
            side=key[1].value,
            path=str(path),
        )


def _warn_other_units(
    unit: Unit,
    written: Unit,
    plain: dict[BreastKey, bool],
    cells: list[tuple[float, str, BreastKey]],
    problems: Problems,
    path: Path,
) -> None:
    """Warn about each number written without a unit that looks written in another unit of its kind: 2.3
    among tumour sizes of 10-50 mm (centimetres in a file of millimetres), 23 among sizes of 1-5 cm, which
    neither a range nor the far-value rule catches. `cells`: the column's values in `unit`, the file's plain
    numbers read as `written`; `plain`: the cells without a unit, each True where written without decimals.
    Such a number must lie far from the column's values (beyond a third of its lower quartile or three times
    its upper one), among them as if written in the other unit (between their 10th and 90th percentiles),
    and be written unlike at least 4 in 5 of the column's plain numbers, with decimals or without ("2.3"
    among whole millimetres, "23" among centimetres with a decimal): a real 2 mm tumour in a file of
    millimetres is not warned about. Kept as read."""
    if len(cells) < FEW:
        return
    column = Spread.of([c[0] for c in cells], sum(plain.values()) / max(len(plain), 1))
    for number, where, key in [c for c in cells if c[2] in plain]:
        if slip := unit_slip(number, plain[key], unit, written, column):
            other, read = slip
            as_written = number * scale(unit, written)
            problems.warn(
                "clinical unit",
                f"{where}: {as_written:g}, read as {number:g} {unit}, lies far "
                f"{'below' if number < column.q1 else 'above'} the column's other values (quartiles "
                f"{column.q1:g} and {column.q3:g} {unit}); read in {other}, it would be {read:g} {unit}, "
                f"among them: written in {other}? (kept; '{as_written:g} {other}' is read in {other})",
                patient_id=key[0],
                side=key[1].value,
                path=str(path),
            )
