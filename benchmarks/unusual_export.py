"""Every file accounted for: ingest + preprocess of an export written with deliberately unusual
conventions, and of pydicom's own test corpus; prints files tried / kept / left out with a reason /
not accounted for / tracebacks.

    python benchmarks/unusual_export.py [--root DIR]

The unusual export is a generated cohort (RLE-compressed, MONOCHROME1 and 2 mixed) whose files are then
rewritten: side only in Laterality or as 'left' / 'R '; view only in ViewCodeSequence, in PatientOrientation
or in SeriesDescription; prior exams; nested folders; one image as a bare data set (no preamble, no File
Meta header); headers without BitsStored, PixelRepresentation and PhotometricInterpretation (as some
de-identification tools leave them); and planted problems: a CT slice, an ultrasound frame, a palette-colour
image, a multi-frame file, a Secondary Capture, a truncated file, a header-only file, a text file, an empty
file, a ZIP of images, a CD export's DICOMDIR, a bare data set of compressed pixels, an image whose
compressed pixels are zeros (its breast's other view is then not used). Its tables are as spreadsheets save
them: the labels an Excel workbook whose fractions are percentage cells, the clinical CSV Windows-1252 with
semicolons and decimal commas.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import traceback
from pathlib import Path

import openpyxl
import pandas as pd
import pydicom
from _common import bench_parser
from pydicom.dataset import Dataset
from pydicom.fileset import FileSet

from mammofuse.cli import main
from mammofuse.cohort.synth import SynthOptions, synthesize


def edit(path: Path, change) -> None:
    ds = pydicom.dcmread(path)
    change(ds)
    ds.save_as(path)


def unusual(root: Path) -> Path:
    out = root / "unusual"
    shutil.rmtree(out, ignore_errors=True)
    options = SynthOptions(
        breasts=120, seed=31, image_size=(128, 104), compression="rle", workers=2, na_fraction=0
    )
    synthesize(out, options)
    truth = pd.read_csv(out / "truth.csv", dtype={"patient_id": str})
    files = [out / p for p in [*truth["cc_path"], *truth["mlo_path"]]]

    def laterality_only(ds):
        ds.Laterality = ds.ImageLaterality
        del ds.ImageLaterality

    def words(ds):
        ds.ImageLaterality = {"L": "left", "R": "R "}[ds.ImageLaterality]

    def view_code(ds):
        item = Dataset()
        item.CodeValue, item.CodeMeaning = (
            ("R-10242", "cranio-caudal")
            if ds.ViewPosition == "CC"
            else (
                "R-10226",
                "medio-lateral oblique",
            )
        )
        ds.ViewCodeSequence = [item]
        del ds.ViewPosition

    def orientation_only(ds):
        del ds.ViewPosition, ds.SeriesDescription

    def description_only(ds):
        del ds.ViewPosition, ds.PatientOrientation

    def anonymised(ds):  # a de-identification tool that dropped elements it should keep
        del ds.BitsStored, ds.PixelRepresentation, ds.PhotometricInterpretation

    for i, path in enumerate(files):
        edit(
            path,
            (laterality_only, words, view_code, orientation_only, description_only, lambda ds: None)[i % 6],
        )
        if i % 11 == 5:
            edit(path, anonymised)
        if i % 7 == 0:  # a nested folder, as PACS exports write
            target = path.parent / "study" / "series" / path.name
            target.parent.mkdir(parents=True, exist_ok=True)
            path.rename(target)
    dicom = out / "dicom"
    source = next(dicom.rglob("*.dcm"))
    prior = dicom / "prior" / "exam.dcm"  # an earlier exam of one breast (its other view is not there)
    prior.parent.mkdir()
    shutil.copy(source, prior)
    edit(prior, lambda ds: (setattr(ds, "StudyInstanceUID", "1.2.3.9"), setattr(ds, "StudyDate", "20200101")))
    planted = {
        "ct.dcm": lambda ds: (
            setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.2"),
            setattr(ds, "Modality", "CT"),
        ),
        "us.dcm": lambda ds: (
            setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.6.1"),
            setattr(ds, "Modality", "US"),
        ),
        "palette.dcm": lambda ds: setattr(ds, "PhotometricInterpretation", "PALETTE COLOR"),
        "frames.dcm": lambda ds: setattr(ds, "NumberOfFrames", 12),
        "screenshot.dcm": lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.7"),
    }
    for name, change in planted.items():
        shutil.copy(source, dicom / name)
        edit(dicom / name, change)
    data = source.read_bytes()
    (dicom / "truncated.dcm").write_bytes(data[: len(data) // 2])
    (dicom / "header_only.dcm").write_bytes(data[:400])
    (dicom / "notes.txt").write_text("exported by PACS")
    (dicom / "empty.dcm").write_bytes(b"")
    shutil.make_archive(str(dicom / "resent"), "zip", source.parent)
    cd = FileSet()
    image = pydicom.dcmread(source)
    image.update({"StudyTime": "120000", "StudyID": "1", "SeriesNumber": 1, "InstanceNumber": 1})
    cd.add(image)
    cd.write(dicom / "cd")  # DICOMDIR and a copy of the image: a second image of that view
    for path, compressed in ((files[-1], False), (dicom / "bare_rle.dcm", True)):
        bare = pydicom.dcmread(source if compressed else path)
        if not compressed:
            bare.decompress()  # as a bare data set is written: nothing could say how it was compressed
        bare.preamble = None
        del bare.file_meta
        bare.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
    # an image whose header is sound but whose compressed pixels are not: found only when decoded
    damaged = next(path for path in reversed(files[:-1]) if path.is_file())  # not moved to a nested folder
    edit(damaged, lambda ds: setattr(ds, "PixelData", pydicom.encaps.encapsulate([b"\x00" * 64])))
    _as_spreadsheets_save_them(out)
    return out / "cohort.toml"


def _as_spreadsheets_save_them(out: Path) -> None:
    """labels.xlsx, the fractions percentage cells; clinical.csv in Windows-1252, ';', decimal commas."""
    labels = pd.read_csv(out / "labels.csv", dtype=str)
    book = openpyxl.Workbook()
    sheet = book.active
    sheet.append(list(labels.columns))
    for pid, side, fraction in labels.itertuples(index=False):
        sheet.append([pid, side, float(fraction) / 100])
        sheet.cell(sheet.max_row, 3).number_format = "0%"
    book.save(out / "labels.xlsx")
    clinical = pd.read_csv(out / "clinical.csv", dtype=str).rename(
        columns={"tumour_size_mm": "Tumour Ø (mm)"}
    )
    clinical["Tumour Ø (mm)"] = clinical["Tumour Ø (mm)"].str.replace(".", ",")
    clinical.to_csv(out / "clinical.csv", index=False, sep=";", encoding="cp1252")
    text = (out / "cohort.toml").read_text(encoding="utf-8")
    text = text.replace('path = "labels.csv"', 'path = "labels.xlsx"')
    text = text.replace("[clinical.rename]\n", '[clinical.rename]\n"Tumour Ø (mm)" = "tumour_size_mm"\n')
    (out / "cohort.toml").write_text(text, encoding="utf-8")


def corpus(root: Path) -> Path:
    import pydicom.data

    out = root / "pydicom-corpus"
    out.mkdir(parents=True, exist_ok=True)
    (out / "labels.csv").write_text("patient_id,side,invasive_fraction\nX,L,50\n")
    files = Path(pydicom.data.__file__).parent / "test_files"
    (out / "cohort.toml").write_text(
        f'work_dir = "work"\n[images]\nroot = "{files}"\n[labels]\npath = "labels.csv"\n'
        "[clinical]\nuse = false\n"
    )
    return out / "cohort.toml"


def account(config: Path) -> dict[str, object]:
    """Run ingest and preprocess; count what became of every file under images.root."""
    from mammofuse.config import load_config

    cfg = load_config(config)
    shutil.rmtree(cfg.work_dir, ignore_errors=True)
    text, tracebacks = io.StringIO(), 0
    for stage in ("ingest", "preprocess"):
        with contextlib.redirect_stdout(text):
            try:
                code = main([stage, str(config)])
            except Exception:
                traceback.print_exc(file=text)
                code = -1
        tracebacks += text.getvalue().count("Traceback")
        if code != 0:
            break
    files = {str(p) for p in cfg.images.root.rglob("*") if p.is_file() and not p.name.startswith(".")}
    work = cfg.work_dir
    kept = set()
    if (work / "preprocessed.csv").is_file():
        table = pd.read_csv(work / "preprocessed.csv")
        kept = set(table["cc_path"]) | set(table["mlo_path"])
    listed = set()
    for name in ("exclusions.csv", "preprocess_problems.csv"):
        if (work / name).is_file():
            problems = pd.read_csv(work / name, dtype=str)
            listed |= set(problems["path"].dropna())
            reasons = " ".join(problems["reason"].dropna())  # names the partner of a failed image
            listed |= {f for f in files if f in reasons}
    return {
        "files": len(files),
        "kept": len(files & kept),
        "left out with a reason": len((files & listed) - kept),
        "not accounted for": len(files - kept - listed),
        "tracebacks": tracebacks,
    }


def main_() -> None:
    parser = bench_parser(__doc__)
    args = parser.parse_args()
    args.root.mkdir(parents=True, exist_ok=True)
    rows = {"unusual export": account(unusual(args.root)), "pydicom test corpus": account(corpus(args.root))}
    print(pd.DataFrame(rows).T.to_string())


if __name__ == "__main__":
    main_()
