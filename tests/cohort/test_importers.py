"""Each public dataset's importer on a small fixture laid out as the dataset is downloaded (folders, file
names, description files with their real column names, written from the datasets' documentation), with
the images of a generated cohort: import -> ingest -> preprocess, and the labels come out as planted."""

import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mammofuse.cli import main
from mammofuse.cohort.synth import SynthOptions, synthesize
from mammofuse.explain.checks import read_regions
from mammofuse.problems import Problems
from tests.cohort.helpers import edit_dicom

VIEWS = ("cc", "mlo")


@pytest.fixture(scope="module")
def source(tmp_path_factory) -> Path:
    """8 breasts with both views, every clinical value present; label from the invasive fraction."""
    out = tmp_path_factory.mktemp("source") / "cohort"
    synthesize(out, SynthOptions(breasts=8, seed=21, image_size=(64, 48), workers=1, na_fraction=0.0))
    return out


def breasts(source: Path) -> pd.DataFrame:
    truth = pd.read_csv(source / "truth.csv", dtype={"patient_id": str})
    labels = pd.read_csv(source / "labels.csv", dtype={"patient_id": str})
    clinical = pd.read_csv(source / "clinical.csv", dtype={"patient_id": str})
    clinical["side"] = clinical["side"].str[0].str.upper()
    table = truth.merge(labels, on=["patient_id", "side"]).merge(clinical, on=["patient_id", "side"])
    table["label"] = (table["invasive_fraction"] < 75).astype(int)
    table["number"] = table["patient_id"].str[2:].astype(int)
    return table


def place(source: Path, rel: str, target: Path, edit=None) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(source / rel, target)
    if edit:
        edit_dicom(target, edit)


def run(dataset: str, root: Path, tmp_path: Path, capsys, *extra: str) -> tuple[str, pd.DataFrame]:
    cohort = tmp_path / "imported"
    assert main(["import", dataset, str(root), "--out", str(cohort), *extra]) == 0
    config = str(cohort / "cohort.toml")
    assert main(["ingest", config]) == 0
    assert main(["preprocess", config]) == 0
    out = capsys.readouterr().out
    assert "Traceback" not in out
    manifest = pd.read_csv(cohort / "work" / "manifest.csv", dtype={"patient_id": str})
    return out, manifest


def labels_of(manifest: pd.DataFrame) -> dict:
    return dict(zip(zip(manifest["patient_id"], manifest["side"]), manifest["label"]))


def test_cbis_ddsm(source, tmp_path, capsys):
    root, rows = tmp_path / "CBIS-DDSM-download", []
    for i, b in breasts(source).iterrows():
        kind, split = ("Mass", "Calc")[i % 2], ("Training", "Test")[i // 2 % 2]
        patient, side = f"P_{b['number']:05d}", {"L": "LEFT", "R": "RIGHT"}[b["side"]]
        for view in VIEWS:
            series = f"{kind}-{split}_{patient}_{side}_{view.upper()}"

            def film(ds, series=series):  # digitised film as Secondary Capture, a PatientID per image
                ds.SOPClassUID, ds.PatientID = "1.2.840.10008.5.1.4.1.1.7", series
                del ds.ImageLaterality, ds.ViewPosition, ds.SeriesDescription, ds.PatientOrientation

            dicom = root / "CBIS-DDSM" / series / "08-07-2016-DDSM-74994" / "1.000000-full mammogram-24515"
            place(source, b[f"{view}_path"], dicom / "1-1.dcm", film)
            # the abnormality's folder: a crop of the lesion and its ROI mask, the full image's size
            roi = root / "CBIS-DDSM" / f"{series}_1" / "08-07-2016-DDSM-12345" / "1.000000-ROI mask images-1"
            x, y, r = (int(b[f"{view}_{c}"]) for c in ("x", "y", "radius"))

            def crop(ds, x=x, y=y, r=r):
                ds.set_pixel_data(
                    ds.pixel_array[y - r : y + r, max(x - r, 0) : x + r].copy(), "MONOCHROME2", 16
                )

            def mask(ds, x=x, y=y, r=r):
                marked = np.zeros((ds.Rows, ds.Columns), np.uint8)
                marked[y - r : y + r + 1, max(x - r, 0) : x + r + 1] = 255
                ds.set_pixel_data(marked, "MONOCHROME2", 8)

            place(source, b[f"{view}_path"], roi / "1-1.dcm", crop)  # neither is a full mammogram: not listed
            place(source, b[f"{view}_path"], roi / "1-2.dcm", mask)
            rows.append(
                {
                    "patient_id": patient,
                    "breast_density": str(b["density"]),
                    "left or right breast": side,
                    "image view": view.upper(),
                    "abnormality id": 1,
                    "abnormality type": kind.lower(),
                    "pathology": "MALIGNANT" if b["label"] else ("BENIGN", "BENIGN_WITHOUT_CALLBACK")[i % 2],
                    # the published paths name UID folders that the downloaded tree does not have
                    "image file path": f"{series}/1.3.6.1.4.1.9590.100.1.2.{i}/1.3.6.1.4.1.9590.2.{i}/0.dcm",
                    "kind": kind.lower(),
                    "split": split,
                }
            )
    cases = pd.DataFrame(rows)
    for kind in ("mass", "calc"):
        for split in ("Training", "Test"):
            part = cases[(cases["kind"] == kind) & (cases["split"] == split)].drop(columns=["kind", "split"])
            if kind == "calc":
                part = part.rename(columns={"breast_density": "breast density"})
            name = f"{kind}_case_description_{'train' if split == 'Training' else 'test'}_set.csv"
            part.to_csv(root / name, index=False)
    first = breasts(source).iloc[0]  # Mass-Training, as drawn above; its MLO mask damaged: the import goes on
    damaged = f"Mass-Training_P_{first['number']:05d}_{'LEFT' if first['side'] == 'L' else 'RIGHT'}_MLO_1"
    roi = root / "CBIS-DDSM" / damaged / "08-07-2016-DDSM-12345" / "1.000000-ROI mask images-1"
    (roi / "1-2.dcm").write_bytes(b"not a DICOM file")
    out, manifest = run("cbis-ddsm", root, tmp_path, capsys)
    expected = {(f"P_{b['number']:05d}", b["side"]): b["label"] for _, b in breasts(source).iterrows()}
    assert labels_of(manifest) == expected
    assert manifest["cc_sop_class"].eq("SecondaryCaptureImageStorage").all()
    assert not manifest["cc_path"].str.contains("_CC_1/").any()
    # every abnormality's ROI mask read into a box around its marked pixels, named by its type and pathology
    regions = pd.read_csv(tmp_path / "imported" / "regions.csv").set_index(["patient_id", "side", "view"])
    assert len(regions) == 2 * len(breasts(source)) - 1
    assert "1 annotation files could not be read" in out and "1-2.dcm: not a readable DICOM image" in out
    assert "1-2.dcm" in (tmp_path / "imported" / "regions_unread.txt").read_text()
    for i, b in breasts(source).iterrows():
        for view in VIEWS:
            key = (f"P_{b['number']:05d}", b["side"], view.upper())
            if i == breasts(source).index[0] and view == "mlo":
                assert key not in regions.index  # the damaged mask
                continue
            x, y, r = (int(b[f"{view}_{c}"]) for c in ("x", "y", "radius"))
            box = regions.loc[key]
            assert tuple(box[["x0", "y0", "x1", "y1"]]) == (max(x - r, 0), y - r, x + r + 1, y + r + 1)
            pathology = "malignant" if b["label"] else ("benign", "benign_without_callback")[i % 2]
            assert box["finding"] == f"{('mass', 'calc')[i % 2]} ({pathology})"


def test_cmmd_malignant_and_luminal(source, tmp_path, capsys):
    root, rows = tmp_path / "CMMD-download", []
    for i, b in breasts(source).iterrows():
        patient = f"D{1 + i % 2}-{b['number']:04d}"
        series = root / "CMMD" / patient / "07-18-2010-NA-NA-79377" / f"1.00000{i}-NA-70244"
        for j, view in enumerate(VIEWS):
            place(source, b[f"{view}_path"], series / f"1-{j + 1 + 2 * (b['side'] == 'R')}.dcm")
        malignant = bool(b["label"])
        rows.append(
            {
                "ID1": patient,
                "LeftRight": b["side"],
                "Age": b["age"],
                "number": 1,
                "abnormality": ("calcification", "mass", "both")[i % 3],
                "classification": "Malignant" if malignant else "Benign",
                "subtype": ("Luminal A", "HER2-enriched", "Luminal B", "TNBC")[i % 4] if malignant else None,
            }
        )
    pd.DataFrame(rows).to_excel(root / "CMMD_clinicaldata_revision.xlsx", index=False)  # as published
    _, manifest = run("cmmd", root, tmp_path / "malignant", capsys)
    expected = {(r["ID1"], r["LeftRight"]): int(r["classification"] == "Malignant") for r in rows}
    assert labels_of(manifest) == expected
    _, manifest = run("cmmd", root, tmp_path / "luminal", capsys, "--label", "luminal")
    luminal = {(r["ID1"], r["LeftRight"]): int("Luminal" in r["subtype"]) for r in rows if r["subtype"]}
    assert labels_of(manifest) == luminal


def test_vindr_mammo(source, tmp_path, capsys):
    root, rows = tmp_path / "vindr-mammo-download", []
    for i, b in breasts(source).iterrows():
        study = f"{b['number']:032x}"
        for view in VIEWS:
            image = f"{i:02d}{view}{b['number']:028x}"
            place(source, b[f"{view}_path"], root / "images" / study / f"{image}.dicom")
            rows.append(
                {
                    "study_id": study,
                    "series_id": f"{i:032x}",
                    "image_id": image,
                    "laterality": b["side"],
                    "view_position": view.upper(),
                    "height": 64,
                    "width": 48,
                    "breast_birads": "BI-RADS 4" if b["label"] else "BI-RADS 2",
                    "breast_density": f"DENSITY {str(b['density']).upper()}",
                    "split": "training",
                }
            )
    pd.DataFrame(rows).to_csv(root / "breast-level_annotations.csv", index=False)
    findings = []  # the radiologists' boxes around each positive breast's tumour; "No Finding" without one
    for row, (_, b) in zip(rows, breasts(source).loc[breasts(source).index.repeat(2)].iterrows()):
        view = row["view_position"].lower()
        x, y, r = b[f"{view}_x"], b[f"{view}_y"], b[f"{view}_radius"]
        box = {"xmin": x - r, "ymin": y - r, "xmax": x + r, "ymax": y + r} if b["label"] else {}
        findings.append(row | box | {"finding_categories": "['Mass']" if box else "['No Finding']"})
    pd.DataFrame(findings).to_csv(root / "finding_annotations.csv", index=False)
    out, manifest = run("vindr-mammo", root, tmp_path, capsys)
    expected = {(f"{b['number']:032x}", b["side"]): b["label"] for _, b in breasts(source).iterrows()}
    assert labels_of(manifest) == expected
    problems = Problems()
    regions = read_regions(tmp_path / "imported" / "regions.csv", problems)
    positives = {key for key, label in expected.items() if label}
    assert not problems.items and {(p, s.value) for p, s, _ in regions} == positives
    assert len(regions) == 2 * len(positives) and f"{2 * len(positives)} findings marked with boxes" in out


def rsna_download(source: Path, root: Path) -> list[dict]:
    """RSNA's train.csv rows and images; the first breast has a third view (AT)."""
    rows = []
    for i, b in breasts(source).iterrows():
        for j, view in enumerate((*VIEWS, "at") if i == 0 else VIEWS):
            image = 1000 * b["number"] + j
            path = root / "train_images" / str(b["number"]) / f"{image}.dcm"
            place(source, b["cc_path" if view == "at" else f"{view}_path"], path)
            rows.append(
                {
                    "site_id": 1,
                    "patient_id": b["number"],
                    "image_id": image,
                    "laterality": b["side"],
                    "view": view.upper(),
                    "age": b["age"],
                    "cancer": b["label"],
                    "biopsy": b["label"],
                    "invasive": b["label"],
                    "BIRADS": "",
                    "implant": 0,
                    "density": str(b["density"]).upper(),
                    "machine_id": 49,
                    "difficult_negative_case": False,
                }
            )
    return rows


def test_rsna_with_a_view_other_than_cc_and_mlo(source, tmp_path, capsys):
    root = tmp_path / "rsna-download"
    pd.DataFrame(rsna_download(source, root)).to_csv(root / "train.csv", index=False)
    out, manifest = run("rsna", root, tmp_path, capsys)
    expected = {(str(b["number"]), b["side"]): b["label"] for _, b in breasts(source).iterrows()}
    assert labels_of(manifest) == expected
    assert "view 'AT' is neither CC nor MLO" in out  # listed by the importer, written down by ingest


def test_a_blank_label_is_no_label_and_a_row_without_a_side_is_left_out_saying_so(source, tmp_path, capsys):
    """A breast whose `cancer` cell is blank is not imported as cancer-free: it has no label, and ingest
    leaves it out with its reason; a row of no side is counted, not silently dropped."""
    root = tmp_path / "rsna-download"
    table = pd.DataFrame(rsna_download(source, root)).astype(str)
    first = table["patient_id"] == table["patient_id"].iloc[0]
    table.loc[first, "cancer"] = ""  # as a half-filled export writes it
    table.loc[len(table)] = table.iloc[-1].to_dict() | {"laterality": "", "image_id": "1"}
    table.to_csv(root / "train.csv", index=False)
    out, manifest = run("rsna", root, tmp_path, capsys)
    shown = " ".join(out.split())
    assert "1 breast has no label (cancer 1: positive; 0: negative; a blank or another value" in shown
    assert "1 row whose 'laterality' is neither left nor right (''): left out" in shown
    unlabelled = (str(table["patient_id"].iloc[0]), table["laterality"].iloc[0])
    expected = {(str(b["number"]), b["side"]): b["label"] for _, b in breasts(source).iterrows()}
    assert labels_of(manifest) == {k: v for k, v in expected.items() if k != unlabelled}
    exclusions = pd.read_csv(tmp_path / "imported" / "work" / "exclusions.csv", dtype=str)
    assert exclusions["patient_id"].eq(unlabelled[0]).any()
    table.drop(columns=["cancer"]).to_csv(root / "train.csv", index=False)  # another release's columns
    assert main(["import", "rsna", str(root), "--out", str(tmp_path / "again")]) == 2
    assert "train.csv: no column 'cancer' (its columns: site_id, patient_id," in capsys.readouterr().out


def test_an_unknown_label_is_a_clear_error(tmp_path, capsys):
    assert main(["import", "rsna", str(tmp_path), "--out", str(tmp_path / "o"), "--label", "density"]) == 2
    assert "rsna: unknown label 'density' (known: cancer)" in capsys.readouterr().out


def test_a_cbis_mammogram_with_several_abnormalities_is_read_once_and_noted_once(source, tmp_path):
    """CBIS-DDSM lists a mammogram once per abnormality (up to six): its header is read once, and where it
    cannot be read, the problem list says so once, not once per abnormality."""
    from mammofuse.cohort.importers import _cbis_masks

    full = tmp_path / "full.dcm"
    full.write_bytes(b"not a DICOM file")
    rois = {}
    for number in (1, 2, 3):
        mask = tmp_path / f"mask{number}.dcm"
        shutil.copy(source / breasts(source).iloc[0]["cc_path"], mask)
        rois[("Mass-Training_P_1_LEFT_CC", number)] = [mask]
    cases = pd.DataFrame(
        {
            "series": "Mass-Training_P_1_LEFT_CC",
            "abnormality_id": [1, 2, 3],
            "patient_id": "P_1",
            "side": "L",
            "image_view": "CC",
            "abnormality_type": "mass",
            "pathology": "MALIGNANT",
        }
    )
    unread: list[str] = []
    assert _cbis_masks(tmp_path, cases, {"Mass-Training_P_1_LEFT_CC": "full.dcm"}, rois, unread) is None
    assert len(unread) == 1 and "full.dcm: not a readable DICOM image" in unread[0]
