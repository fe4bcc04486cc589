import re
import shutil
import zipfile
from pathlib import Path

import numpy as np
import openpyxl
import pandas as pd
import pydicom
import pytest
from pydicom import uid
from pydicom.dataset import Dataset

from mammofuse.config import load_config
from mammofuse.domain import Side
from mammofuse.problems import WARNING, Problems
from tests.cohort.helpers import edit_config, edit_dicom, image_path, run_ingest, truth


def keys(df: pd.DataFrame) -> set[tuple[str, str]]:
    return set(zip(df["patient_id"], df["side"]))


def kept_row(cohort, capsys) -> tuple[pd.DataFrame, int]:
    """The manifest of the undamaged cohort and the truth row of its first kept breast."""
    _, _, manifest, _ = run_ingest(cohort, capsys)
    t = truth(cohort)
    return manifest, int(t.index[[k in keys(manifest) for k in zip(t["patient_id"], t["side"])]][0])


class TestManifest:
    def test_rows_labels_and_na_drops_agree_with_the_csvs(self, tiny_cohort, capsys):
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype={"patient_id": str})
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype={"patient_id": str})
        clinical["side"] = clinical["side"].map({"left": "L", "right": "R"})
        complete = clinical.dropna()
        expected = labels.merge(complete[["patient_id", "side"]], on=["patient_id", "side"])
        assert keys(manifest) == keys(expected)
        merged = manifest.merge(expected, on=["patient_id", "side"])
        assert (merged["label"] == (merged["invasive_fraction"] < 75).astype(int)).all()
        assert len(exclusions) == len(labels) - len(expected)
        assert set(exclusions["category"]) == {"missing clinical value"}
        assert f"kept {len(expected)} breasts" in out

    def test_each_row_pairs_the_cc_and_mlo_of_one_breast(self, tiny_cohort, capsys):
        _, _, manifest, _ = run_ingest(tiny_cohort, capsys)
        t = truth(tiny_cohort).assign(cc=lambda d: d["cc_path"].map(lambda p: str(tiny_cohort / p)))
        pairs = manifest.merge(t, on=["patient_id", "side"])
        assert (pairs["cc_path_x"] == pairs["cc"]).all()
        assert (pairs["mlo_path_x"] == [str(tiny_cohort / p) for p in pairs["mlo_path_y"]]).all()

    def test_a_tree_of_links_into_an_archive_reads_as_if_copied(self, tiny_cohort, capsys):
        """A cohort assembled by links to the archive's folders: every image found through its link, a
        folder reached twice (a second link, a link loop) read once, a link to nothing written down."""
        _, _, copied, _ = run_ingest(tiny_cohort, capsys)
        dicom, archive = tiny_cohort / "dicom", tiny_cohort / "archive"
        dicom.rename(archive)
        dicom.mkdir()
        folders = sorted(p for p in archive.iterdir() if p.is_dir())
        for folder in folders:
            (dicom / folder.name).symlink_to(folder, target_is_directory=True)
        (dicom / "zz-again").symlink_to(folders[0], target_is_directory=True)
        (dicom / folders[1].name / "loop").symlink_to(dicom, target_is_directory=True)
        (dicom / "moved.dcm").symlink_to(tiny_cohort / "nowhere.dcm")
        code, out, linked, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        assert keys(linked) == keys(copied) and len(copied) > 5
        real = linked["cc_path"].str.replace("/archive/", "/dicom/")  # it names the files linked to
        assert real.tolist() == copied["cc_path"].tolist()
        gone = exclusions[exclusions["reason"].str.contains("moved.dcm")]
        assert len(gone) == 1 and "No such file" in gone.iloc[0]["reason"]
        assert "duplicate" not in " ".join(exclusions["category"])

    def test_no_identifying_tag_reaches_any_output(self, tiny_cohort, capsys):
        _, out, _, _ = run_ingest(tiny_cohort, capsys, "--out", str(tiny_cohort / "work"))
        written = "".join(p.read_text() for p in (tiny_cohort / "work").iterdir() if p.is_file())
        for text in (out, written):
            assert "Synthetic^" not in text and "Example Street" not in text
            assert "PatientName" not in text and "BirthDate" not in text


class TestImageFallbacks:
    def test_side_from_laterality_and_view_from_patient_orientation(self, tiny_cohort, capsys):
        before, row = kept_row(tiny_cohort, capsys)

        def strip(ds):
            ds.Laterality = ds.ImageLaterality
            del ds.ImageLaterality, ds.ViewPosition, ds.SeriesDescription

        edit_dicom(image_path(tiny_cohort, row, "cc"), strip)
        edit_dicom(image_path(tiny_cohort, row, "mlo"), strip)
        _, _, after, _ = run_ingest(tiny_cohort, capsys)
        pd.testing.assert_frame_equal(after, before)


def cbis_ddsm_shaped(cohort):
    """Secondary Capture, side only in Laterality, view only in PatientOrientation, a PatientID per image."""
    t = truth(cohort)
    for _, row in t.iterrows():
        for view in ("cc", "mlo"):
            path = cohort / row[f"{view}_path"]

            def reshape(ds, view=view, row=row):
                ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.7"
                ds.Laterality = ds.ImageLaterality
                ds.PatientOrientation = view.upper()
                ds.PatientID = f"Calc-Training_{row['patient_id']}_{row['side']}_{view.upper()}"
                del ds.ImageLaterality, ds.ViewPosition, ds.SeriesDescription

            edit_dicom(path, reshape)
            target = (
                cohort
                / "dicom"
                / f"Calc-Training_{row['patient_id']}_{row['side']}_{view.upper()}"
                / "1-1.dcm"
            )
            target.parent.mkdir()
            path.rename(target)


def rsna_shaped(cohort):
    """No Modality, no ViewPosition or other view hint; the view and pairing only in an image table."""
    rows = []
    for _, row in truth(cohort).iterrows():
        for view in ("cc", "mlo"):
            path = cohort / row[f"{view}_path"]

            def strip(ds):
                del ds.Modality, ds.ViewPosition, ds.PatientOrientation, ds.SeriesDescription

            edit_dicom(path, strip)
            rows.append(
                {
                    "image": str(path.relative_to(cohort / "dicom")),
                    "patient": row["patient_id"],
                    "laterality": row["side"],
                    "view": view.upper(),
                }
            )
    pd.DataFrame(rows).to_csv(cohort / "images.csv", index=False)
    edit_config(
        cohort,
        images={
            "source": "table",
            "table": "images.csv",
            "table_columns": {"path": "image", "patient": "patient", "side": "laterality", "view": "view"},
        },
    )


class TestRealExportShapes:
    def test_cbis_ddsm_shaped_export_with_patient_from_the_folder_name(self, tiny_cohort, capsys):
        _, _, expected, _ = run_ingest(tiny_cohort, capsys)
        cbis_ddsm_shaped(tiny_cohort)
        edit_config(tiny_cohort, images={"patient_pattern": r"Calc-Training_(?P<patient>MF\d+)_"})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "no breast is left" in out  # digitised film is refused unless accepted
        assert "a Secondary Capture image" in out and "images.accept_secondary_capture = true" in out
        excluded = pd.read_csv(tiny_cohort / "work" / "exclusions.csv")  # written although nothing is left
        assert set(excluded["path"].dropna()) == {str(p) for p in (tiny_cohort / "dicom").rglob("*.dcm")}
        assert not (tiny_cohort / "work" / "manifest.csv").exists()
        edit_config(tiny_cohort, images={"accept_secondary_capture": True})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        assert set(manifest["cc_sop_class"]) == {"SecondaryCaptureImageStorage"}
        assert keys(manifest) == keys(expected)
        assert (manifest["label"].to_numpy() == expected["label"].to_numpy()).all()
        assert manifest["cc_path"].str.endswith("_CC/1-1.dcm").all()
        assert manifest["mlo_path"].str.endswith("_MLO/1-1.dcm").all()

    def test_rsna_shaped_export_paired_through_an_image_table(self, tmp_path, capsys):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        cohort = tmp_path / "rsna"
        synthesize(
            cohort,
            SynthOptions(
                breasts=6, seed=9, image_size=(64, 48), compression="jpeg2000", workers=1, na_fraction=0.0
            ),
        )
        rsna_shaped(cohort)
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        assert code == 0, out
        assert len(manifest) == 6 and exclusions.empty
        t = truth(cohort)
        assert sorted(manifest["cc_path"]) == sorted(str(cohort / p) for p in t["cc_path"])

    def test_table_rows_with_bad_values_are_recorded(self, tmp_path, capsys):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        cohort = tmp_path / "rsna"
        synthesize(cohort, SynthOptions(breasts=3, seed=9, image_size=(64, 48), workers=1, na_fraction=0.0))
        rsna_shaped(cohort)
        table = pd.read_csv(cohort / "images.csv")
        table.loc[0, "view"] = "ML"
        table.loc[1, "image"] = "nowhere.dcm"
        table.to_csv(cohort / "images.csv", index=False)
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        assert code == 0 and len(manifest) == 2  # both bad rows belong to the first breast
        assert "images.csv line 2, column 'view': view 'ML' is neither CC nor MLO" in out
        assert "images.csv line 3: " in out and "nowhere.dcm does not exist" in out

    def test_an_image_table_written_on_windows(self, tmp_path, capsys):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        cohort = tmp_path / "rsna"
        synthesize(cohort, SynthOptions(breasts=3, seed=9, image_size=(64, 48), workers=1, na_fraction=0.0))
        rsna_shaped(cohort)
        _, _, expected, _ = run_ingest(cohort, capsys)
        table = pd.read_csv(cohort / "images.csv")
        table["image"] = table["image"].str.replace("/", "\\")  # S00001\IMG_1.dcm
        table.loc[0, "image"] = "D:\\export\\" + table.loc[0, "image"]
        table.to_csv(cohort / "images.csv", index=False)
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, expected.iloc[1:].reset_index(drop=True))
        assert "images.csv line 2: D:\\export\\" in out and "a Windows path with a drive" in out

    def test_a_clinical_table_of_one_row_per_patient_holds_for_both_breasts(self, tiny_cohort, capsys):
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        first = clinical.drop_duplicates("patient_id").drop(columns="side")  # one row per patient
        clinical[["side"]].join(clinical[["patient_id"]]).merge(first, on="patient_id").to_csv(
            tiny_cohort / "clinical.csv", index=False
        )  # the same values, a row per breast
        code, out, expected, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        assert (clinical["patient_id"].value_counts() == 2).any()  # a patient with both breasts
        first.to_csv(tiny_cohort / "clinical.csv", index=False)
        edit_config(tiny_cohort, clinical={"side_column": ""})
        code, out, manifest, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, expected)

    def test_another_sites_export_read_with_its_own_cohort_config_gives_the_same_breasts(
        self, tmp_path, capsys
    ):
        from mammofuse.cohort.synth import SITE_B_CLINICAL, SynthOptions, synthesize

        manifests = {}
        for site in "ab":  # the same seed: the same breasts, written by two hospitals' exports
            cohort = tmp_path / site
            synthesize(cohort, SynthOptions(breasts=30, seed=4, image_size=(64, 52), workers=1, site=site))
            code, out, manifests[site], _ = run_ingest(cohort, capsys)
            assert code == 0, out
        b = tmp_path / "b"
        clinical, labels = (b / "clinical.csv").read_bytes(), (b / "labels.csv").read_text()
        with pytest.raises(UnicodeDecodeError):
            clinical.decode()  # Windows-1252, as Excel saves it there: not UTF-8
        clinical = clinical.decode("cp1252")
        header = clinical.splitlines()[0]
        assert header.split(";") == list(SITE_B_CLINICAL.values())  # ';'-separated, its own names
        assert (
            re.search(r";\d+,\d;", clinical) and ";G2;" in clinical and ";pos;" in clinical
        )  # its own codes
        sizes = [line.split(";")[3] for line in clinical.splitlines()[1:]]
        assert max(float(s.replace(",", ".")) for s in sizes if s) < 10  # centimetres: read as the mm of A
        assert re.search(r";0,\d+\n", labels)  # the invasive fraction as 0-1, with a decimal comma
        read = [c for c in manifests["a"].columns if not c.endswith(("_path", "_manufacturer", "_uid"))]
        pd.testing.assert_frame_equal(manifests["a"][read], manifests["b"][read])  # labels, clinical values
        assert set(manifests["b"]["cc_manufacturer"]) == {"mammofuse synthetic B"}
        a_image = pydicom.dcmread(tmp_path / "a" / manifests["a"].loc[0, "cc_path"]).pixel_array
        b_image = pydicom.dcmread(tmp_path / "b" / manifests["b"].loc[0, "cc_path"]).pixel_array
        assert a_image.shape == b_image.shape and not (a_image == b_image).all()  # another scanner

    def test_a_renamed_column_missing_from_the_file_is_named_as_the_file_would_write_it(
        self, tiny_cohort, capsys
    ):
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        clinical.rename(columns={"age": "Alter"}).to_csv(tiny_cohort / "clinical.csv", index=False)
        edit_config(tiny_cohort, clinical={"rename": {"Age (years)": "age"}})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0 and "age" not in manifest.columns
        assert (
            "column 'Age (years)' named in [clinical] is not in the file (found: patient_id, side, Alter"
            in (" ".join(out.split()))
        )


class TestBadInput:
    """Each problem: a clear line naming the file or row, the breast left out, the run goes on (exit 0)."""

    def excluded(self, cohort, capsys, category: str):
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        assert code == 0, out
        assert "Traceback" not in out
        hits = exclusions[exclusions["category"] == category]
        assert len(hits), f"no '{category}' in {exclusions['category'].tolist()}"
        assert len(exclusions) <= 15  # every line is printed, so each reason must show
        assert hits.iloc[0]["reason"] in out
        return manifest, exclusions, hits

    def test_truncated_dicom(self, tiny_cohort, capsys):
        before, row = kept_row(tiny_cohort, capsys)
        path = image_path(tiny_cohort, row, "cc")
        path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
        manifest, exclusions, hits = self.excluded(tiny_cohort, capsys, "truncated pixel data")
        assert hits.iloc[0]["path"] == str(path) and "cut short" in hits.iloc[0]["reason"]
        breast = tuple(truth(tiny_cohort).loc[row, ["patient_id", "side"]])
        assert breast in keys(before) and breast not in keys(manifest)
        assert len(manifest) == len(before) - 1

    @pytest.mark.parametrize("cut", [True, False])
    def test_compressed_pixel_data_cut_short_or_followed_by_padding(self, tmp_path, capsys, cut):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        cohort = tmp_path / "rle"
        synthesize(cohort, SynthOptions(breasts=6, seed=9, image_size=(64, 48), compression="rle", workers=1))
        path = image_path(cohort, 0, "cc")
        data = path.read_bytes()
        # cut inside the fragments, or trailing padding (FFFC,FFFC) after the delimiter (PS3.5 7.5): valid
        padding = bytes.fromhex("FCFFFCFF") + b"OB\0\0" + (4).to_bytes(4, "little") + b"\0" * 4
        path.write_bytes(data[: len(data) - 200] if cut else data + padding)
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        hits = exclusions[exclusions["path"] == str(path)]
        if cut:
            assert hits["category"].tolist() == ["truncated pixel data"] and "cut short" in out
        else:
            assert hits.empty and str(path) in set(manifest["cc_path"])

    def test_truncated_header(self, tiny_cohort, capsys):
        path = image_path(tiny_cohort, 1, "cc")
        path.write_bytes(path.read_bytes()[:300])
        _, _, hits = self.excluded(tiny_cohort, capsys, "no pixel data")
        assert str(path) in hits.iloc[0]["reason"] and "truncated" in hits.iloc[0]["reason"]

    def test_non_dicom_file_in_the_tree(self, tiny_cohort, capsys):
        (tiny_cohort / "dicom" / "README.txt").write_text("exported by PACS")
        _, _, hits = self.excluded(tiny_cohort, capsys, "not DICOM")
        assert "README.txt" in hits.iloc[0]["reason"]

    @pytest.mark.parametrize("implicit", [True, False])
    def test_a_bare_data_set_without_the_file_header_reads_as_its_file(self, tiny_cohort, capsys, implicit):
        """No preamble, no "DICM", no File Meta header: as some archives and anonymisers write a file."""
        from mammofuse.imaging.preprocess import preprocess_file

        config = load_config(tiny_cohort / "cohort.toml")
        _, _, expected, _ = run_ingest(tiny_cohort, capsys)
        path = Path(expected.loc[0, "cc_path"])
        before = preprocess_file(path, Side(expected.loc[0, "side"]), config.preprocess)
        ds = pydicom.dcmread(path)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=implicit, little_endian=True, enforce_file_format=False)
        assert path.read_bytes()[128:132] != b"DICM"
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, expected)
        after = preprocess_file(path, Side(expected.loc[0, "side"]), config.preprocess)
        assert np.array_equal(after[0], before[0]) and after[1] == before[1]  # pixels, geometry

    def test_a_dicomdir_is_named_as_the_exports_index(self, tiny_cohort, capsys):
        from pydicom.fileset import FileSet

        export = FileSet()  # a CD export: DICOMDIR, and the images in folders of extensionless files
        image = pydicom.dcmread(image_path(tiny_cohort, 0, "cc"))
        image.update({"StudyTime": "120000", "StudyID": "1", "SeriesNumber": 1, "InstanceNumber": 1})
        export.add(image)
        export.write(tiny_cohort / "dicom" / "cd")
        _, _, hits = self.excluded(tiny_cohort, capsys, "DICOMDIR")
        assert "cd/DICOMDIR: a DICOMDIR, the index of a media export, not an image" in hits.iloc[0]["reason"]

    def test_a_bare_data_set_of_compressed_pixels_is_left_out_saying_why(self, tiny_cohort, capsys):
        path = image_path(tiny_cohort, 0, "cc")
        ds = pydicom.dcmread(path)
        ds.compress(uid.RLELossless)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        _, _, hits = self.excluded(tiny_cohort, capsys, "undecodable pixels")
        assert hits.iloc[0]["path"] == str(path)
        assert "a bare data set (no File Meta header) with compressed pixel data" in hits.iloc[0]["reason"]

    def test_an_archive_in_the_tree_is_named_as_one(self, tiny_cohort, capsys):
        with zipfile.ZipFile(tiny_cohort / "dicom" / "export_2.zip", "w") as archive:
            archive.write(image_path(tiny_cohort, 0, "cc"), "IMG_1.dcm")
        _, _, hits = self.excluded(tiny_cohort, capsys, "archive, not unpacked")
        assert (
            "export_2.zip: a ZIP archive, not a DICOM file: unpack it below images.root"
            in hits.iloc[0]["reason"]
        )

    @pytest.mark.parametrize(
        ("sop_class", "modality", "said"),
        [
            ("1.2.840.10008.5.1.4.1.1.2", "CT", "SOP class CT Image Storage, Modality CT: not a mammogram"),
            ("1.2.840.10008.5.1.4.1.1.1", "CR", "SOP class Computed Radiography Image Storage, Modality CR"),
            ("1.2.840.10008.5.1.4.1.1.7", "OT", "a Secondary Capture image"),
        ],
    )
    def test_an_image_that_is_not_a_mammogram(self, tiny_cohort, capsys, sop_class, modality, said):
        path = image_path(tiny_cohort, 1, "mlo")

        def other_kind(ds):
            ds.SOPClassUID, ds.Modality = sop_class, modality

        edit_dicom(path, other_kind)
        _, _, hits = self.excluded(tiny_cohort, capsys, "not a mammogram")
        assert hits.iloc[0]["path"] == str(path) and said in hits.iloc[0]["reason"]

    @pytest.mark.parametrize(
        ("edit", "category", "said"),
        [
            (
                {"PhotometricInterpretation": "PALETTE COLOR"},
                "not grayscale",
                "PhotometricInterpretation PALETTE COLOR with 1 sample(s) per pixel",
            ),
            ({"PhotometricInterpretation": "RGB", "SamplesPerPixel": 3}, "not grayscale", "3 sample(s)"),
            ({"NumberOfFrames": 40}, "several frames", "40 frames (tomosynthesis"),
            # read in full it was an OverflowError at preprocessing
            ({"BitsStored": 20}, "inconsistent header", "BitsStored 20 with BitsAllocated 16"),
        ],
    )
    def test_pixels_that_are_not_one_grayscale_frame_are_refused_from_the_header(
        self, tiny_cohort, capsys, edit, category, said
    ):
        path = image_path(tiny_cohort, 1, "cc")
        edit_dicom(path, lambda ds: [setattr(ds, k, v) for k, v in edit.items()])
        _, _, hits = self.excluded(tiny_cohort, capsys, category)
        assert hits.iloc[0]["path"] == str(path) and said in hits.iloc[0]["reason"]

    def test_a_header_without_its_bit_layout_is_completed_with_a_warning(self, tiny_cohort, capsys):
        before, row = kept_row(tiny_cohort, capsys)
        cc, mlo = image_path(tiny_cohort, row, "cc"), image_path(tiny_cohort, row, "mlo")
        bits = int(pydicom.dcmread(cc, stop_before_pixels=True).BitsStored)
        edit_dicom(cc, lambda ds: ds.__delattr__("BitsStored"))
        edit_dicom(mlo, lambda ds: ds.__delattr__("PixelRepresentation"))
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0 and keys(manifest) == keys(before)
        assert manifest.loc[manifest["cc_path"] == str(cc), "cc_bits_stored"].item() == bits
        warned = exclusions[exclusions["category"] == "header completed"].set_index("path")
        assert (warned["severity"] == "warning").all() and set(warned.index) == {str(cc), str(mlo)}
        assert (
            f"BitsStored missing: taken as {bits} (HighBit {bits - 1} + 1)" in warned.loc[str(cc), "reason"]
        )
        assert "PixelRepresentation missing: taken as 0" in warned.loc[str(mlo), "reason"]

    def test_a_header_that_says_neither_bits_stored_nor_high_bit_is_refused(self, tiny_cohort, capsys):
        path = image_path(tiny_cohort, 1, "cc")

        def strip(ds):
            del ds.BitsStored, ds.HighBit

        edit_dicom(path, strip)
        _, _, hits = self.excluded(tiny_cohort, capsys, "incomplete header")
        assert hits.iloc[0]["path"] == str(path)
        assert "BitsStored (0028,0101) and HighBit (0028,0102) are both missing" in hits.iloc[0]["reason"]

    def test_a_radiograph_with_modality_mg_and_the_bit_depth_are_recorded(self, tiny_cohort, capsys):
        _, row = kept_row(tiny_cohort, capsys)
        path = image_path(tiny_cohort, row, "mlo")
        edit_dicom(path, lambda ds: setattr(ds, "SOPClassUID", "1.2.840.10008.5.1.4.1.1.1.1"))
        code, out, manifest, _ = run_ingest(tiny_cohort, capsys)
        kept = manifest[manifest["mlo_path"] == str(path)].iloc[0]
        assert kept["mlo_sop_class"] == "DigitalXRayImageStorageForPresentation"
        assert kept["cc_sop_class"] == "DigitalMammographyXRayImageStorageForPresentation"
        bits = {int(pydicom.dcmread(p, stop_before_pixels=True).BitsStored) for p in manifest["cc_path"]}
        assert set(manifest["cc_bits_stored"]) == bits

    def test_dicom_without_pixel_data(self, tiny_cohort, capsys):
        edit_dicom(image_path(tiny_cohort, 2, "mlo"), lambda ds: ds.__delattr__("PixelData"))
        _, _, hits = self.excluded(tiny_cohort, capsys, "no pixel data")
        assert "Pixel Data" in hits.iloc[0]["reason"]

    def test_missing_side_that_no_fallback_supplies(self, tiny_cohort, capsys):
        edit_dicom(image_path(tiny_cohort, 3, "cc"), lambda ds: ds.__delattr__("ImageLaterality"))
        _, _, hits = self.excluded(tiny_cohort, capsys, "missing side")
        assert "ImageLaterality" in hits.iloc[0]["reason"]

    def test_missing_view_that_no_fallback_supplies(self, tiny_cohort, capsys):
        def strip(ds):
            del ds.ViewPosition, ds.PatientOrientation, ds.SeriesDescription

        edit_dicom(image_path(tiny_cohort, 3, "mlo"), strip)
        _, _, hits = self.excluded(tiny_cohort, capsys, "missing view")
        assert "ViewPosition" in hits.iloc[0]["reason"]

    def test_unknown_side_value_in_the_header(self, tiny_cohort, capsys):
        edit_dicom(image_path(tiny_cohort, 3, "cc"), lambda ds: setattr(ds, "ImageLaterality", "B"))
        _, _, hits = self.excluded(tiny_cohort, capsys, "unknown side")
        assert "'B'" in hits.iloc[0]["reason"]

    def test_breast_with_only_one_view(self, tiny_cohort, capsys):
        image_path(tiny_cohort, 4, "mlo").unlink()
        manifest, _, hits = self.excluded(tiny_cohort, capsys, "missing view")
        row = truth(tiny_cohort).loc[4]
        assert hits.iloc[0]["patient_id"] == row["patient_id"] and "no usable MLO" in hits.iloc[0]["reason"]
        assert (row["patient_id"], row["side"]) not in keys(manifest)

    @pytest.mark.parametrize("policy, kept", [("first", True), ("error", False)])
    def test_two_cc_images_for_one_breast(self, tiny_cohort, capsys, policy, kept):
        _, index = kept_row(tiny_cohort, capsys)
        src = image_path(tiny_cohort, index, "cc")
        shutil.copy(src, src.with_name("IMG_zzzzzzzzzz.dcm"))
        edit_config(tiny_cohort, images={"duplicate_policy": policy})
        manifest, _, hits = self.excluded(tiny_cohort, capsys, "duplicate view")
        row = truth(tiny_cohort).loc[index]
        assert ((row["patient_id"], row["side"]) in keys(manifest)) == kept
        if kept:
            assert manifest.set_index("patient_id").loc[row["patient_id"], "cc_path"] == str(src)

    def test_a_copy_of_one_name_in_another_folder_is_told_apart_by_its_folder(self, tiny_cohort, capsys):
        _, index = kept_row(tiny_cohort, capsys)
        src = image_path(tiny_cohort, index, "cc")
        copy = src.parent.parent / "A_copy" / src.name  # sorts first: the kept one under 'first'
        copy.parent.mkdir()
        shutil.copy(src, copy)
        _, _, hits = self.excluded(tiny_cohort, capsys, "duplicate view")
        assert hits.iloc[0]["path"] == str(src)
        assert f"; kept A_copy/{src.name} (images.duplicate_policy" in hits.iloc[0]["reason"]

    def extra_views(self, cohort, capsys) -> tuple[int, Path, Path, Path]:
        """Beside a kept breast's CC: its raw (FOR PROCESSING) image, larger and named to sort first, and a
        spot compression view named to sort last, as a mammography unit exports them."""
        _, index = kept_row(cohort, capsys)
        cc = image_path(cohort, index, "cc")
        raw, spot = cc.with_name("IMG_0000_raw.dcm"), cc.with_name("IMG_zzzz_spot.dcm")
        shutil.copy(cc, raw)
        shutil.copy(cc, spot)

        def for_processing(ds):
            ds.SOPClassUID = uid.DigitalMammographyXRayImageStorageForProcessing
            ds.PresentationIntentType = "FOR PROCESSING"
            ds.Rows = ds.Rows * 2  # the header alone is read: 'largest' would take it

        def spot_compression(ds):
            view, modifier = Dataset(), Dataset()
            modifier.CodeValue, modifier.CodingSchemeDesignator = "R-102D2", "SRT"
            modifier.CodeMeaning = "Spot Compression"
            view.CodeValue, view.CodingSchemeDesignator, view.CodeMeaning = "R-10242", "SRT", "cranio-caudal"
            view.ViewModifierCodeSequence = [modifier]
            ds.ViewCodeSequence = [view]

        edit_dicom(raw, for_processing)
        edit_dicom(spot, spot_compression)
        return index, cc, raw, spot

    @pytest.mark.parametrize("policy", ["first", "last", "largest"])
    def test_a_raw_image_and_a_spot_view_are_left_out_before_the_duplicate_policy(
        self, tiny_cohort, capsys, policy
    ):
        index, cc, raw, spot = self.extra_views(tiny_cohort, capsys)
        edit_config(tiny_cohort, images={"duplicate_policy": policy})
        _, _, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        row = truth(tiny_cohort).loc[index]
        assert manifest.set_index("patient_id").loc[row["patient_id"], "cc_path"] == str(cc)
        reasons = exclusions.set_index("path")
        assert reasons.loc[str(raw), "category"] == "for processing"
        assert "a FOR PROCESSING image (the detector's raw data" in reasons.loc[str(raw), "reason"]
        assert reasons.loc[str(spot), "category"] == "additional view"
        assert "a spot compression view, not a standard one" in reasons.loc[str(spot), "reason"]
        assert "duplicate view" not in set(exclusions["category"])

    def test_with_any_intent_and_modifiers_kept_they_are_duplicates_again(self, tiny_cohort, capsys):
        index, cc, raw, spot = self.extra_views(tiny_cohort, capsys)
        edit_config(tiny_cohort, images={"presentation_intent": "any", "view_modifiers": "keep"})
        _, _, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        row = truth(tiny_cohort).loc[index]
        assert manifest.set_index("patient_id").loc[row["patient_id"], "cc_path"] == str(raw)  # first by path
        duplicates = exclusions[exclusions["category"] == "duplicate view"]
        assert set(duplicates["path"]) == {str(cc), str(spot)}

    def test_an_export_of_raw_images_alone_is_read_with_the_processing_intent(self, tiny_cohort, capsys):
        for path in (tiny_cohort / "dicom").rglob("*.dcm"):
            edit_dicom(path, lambda ds: setattr(ds, "PresentationIntentType", "FOR PROCESSING"))
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "for processing" in out  # every image left out, and why
        edit_config(tiny_cohort, images={"presentation_intent": "processing"})
        code, _, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0 and len(manifest) > 0 and "for processing" not in set(exclusions["category"])

    @pytest.mark.parametrize("policy", ["first", "largest"])
    def test_a_synthetic_2d_image_beside_the_mammogram_is_left_out_before_the_duplicate_policy(
        self, tiny_cohort, capsys, policy
    ):
        """A tomosynthesis unit's export: beside each mammogram its synthetic 2D (C-View), here named to
        sort first and with more pixels, so 'first' and 'largest' would both take it."""
        _, index = kept_row(tiny_cohort, capsys)
        cc = image_path(tiny_cohort, index, "cc")
        synthetic = cc.with_name("IMG_0000_cview.dcm")
        shutil.copy(cc, synthetic)

        def c_view(ds):
            ds.SeriesDescription = f"{ds.ImageLaterality} CC C-View"
            ds.Rows = ds.Rows * 2

        edit_dicom(synthetic, c_view)
        edit_config(tiny_cohort, images={"duplicate_policy": policy})
        _, _, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        row = truth(tiny_cohort).loc[index]
        assert manifest.set_index("patient_id").loc[row["patient_id"], "cc_path"] == str(cc)
        reason = exclusions.set_index("path").loc[str(synthetic)]
        assert reason["category"] == "synthetic 2D" and "duplicate view" not in set(exclusions["category"])
        assert f"a synthetic 2D image (SeriesDescription '{row['side']} CC C-View')" in reason["reason"]
        edit_config(tiny_cohort, images={"duplicate_policy": "first", "synthetic_2d": "keep"})
        _, _, manifest, exclusions = run_ingest(tiny_cohort, capsys)  # kept: a duplicate, first by path
        assert manifest.set_index("patient_id").loc[row["patient_id"], "cc_path"] == str(synthetic)
        assert exclusions.set_index("path").loc[str(cc), "category"] == "duplicate view"

    @pytest.mark.parametrize(
        "text, synthetic",
        [
            ("L CC C-View", True),
            ("R MLO CView", True),
            ("V-Preview RCC", True),
            ("Insight 2D L MLO", True),
            ("S-View", True),
            ("synthesized 2D", True),
            ("R CC Tomosynthesis", False),  # the scan itself (multi-frame: left out as such)
            ("L MLO", False),
            ("Previews", False),
            ("R CC reviewed", False),
        ],
    )
    def test_what_the_default_pattern_takes_for_a_synthetic_2d_image(self, text, synthetic):
        from mammofuse.cohort.images import synthetic_2d
        from mammofuse.config import ImagesConfig

        ds = Dataset()
        ds.ProtocolName = text
        assert bool(synthetic_2d(ds, ImagesConfig().synthetic_2d_pattern)) == synthetic

    def test_a_breast_with_an_implant_is_left_out_with_its_reason_unless_kept(self, tiny_cohort, capsys):
        _, index = kept_row(tiny_cohort, capsys)

        def implant(ds):
            ds.BreastImplantPresent = "YES"

        for view in ("cc", "mlo"):
            edit_dicom(image_path(tiny_cohort, index, view), implant)
        row = truth(tiny_cohort).loc[index]
        _, _, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert (row["patient_id"], row["side"]) not in keys(manifest)
        implant = exclusions[exclusions["category"] == "breast implant"]
        assert set(implant["path"]) == {str(image_path(tiny_cohort, index, v)) for v in ("cc", "mlo")}
        assert "BreastImplantPresent YES, a breast with an implant" in implant.iloc[0]["reason"]
        edit_config(tiny_cohort, images={"implants": "keep"})
        _, _, manifest, _ = run_ingest(tiny_cohort, capsys)
        assert (row["patient_id"], row["side"]) in keys(manifest)

    @pytest.mark.parametrize(
        ("table", "column"), [("labels.csv", "invasive_fraction"), ("clinical.csv", "age")]
    )
    def test_a_breast_written_twice_in_a_table_is_left_out_once_where_its_rows_differ(
        self, tiny_cohort, capsys, table, column
    ):
        rows = pd.read_csv(tiny_cohort / table, dtype=str)
        again = rows.iloc[[0]].assign(**{column: "42"})  # the same breast, written again otherwise
        pd.concat([rows, again]).to_csv(tiny_cohort / table, index=False)
        _, exclusions, hits = self.excluded(tiny_cohort, capsys, "duplicate key")
        reason = hits.iloc[0]["reason"]
        assert f"lines 2, {len(rows) + 2}: 2 rows for patient" in reason
        assert f"which differ in '{column}' ({rows.loc[0, column]!r}, '42'); the breast is left out" in reason
        breast = tuple(hits.iloc[0][["patient_id", "side"]])
        # not also "no row in labels.csv": the rows are there, twice
        same = (exclusions["patient_id"] == breast[0]) & (exclusions["side"] == breast[1])
        assert exclusions.loc[same, "category"].tolist() == ["duplicate key"]

    @pytest.mark.parametrize("table", ["labels.csv", "clinical.csv"])
    def test_a_row_pasted_twice_is_read_once_with_a_warning(self, tiny_cohort, capsys, table):
        """Both rows say the same: the breast was left out, losing what they agree on."""
        _, _, before, _ = run_ingest(tiny_cohort, capsys)
        lines = (tiny_cohort / table).read_text().splitlines()
        (tiny_cohort / table).write_text("\n".join([*lines, lines[1]]) + "\n")
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        pd.testing.assert_frame_equal(manifest, before)
        [warned] = exclusions.loc[exclusions["category"] == "duplicate rows", "reason"]
        assert (
            warned.endswith(", alike in every column read: read once")
            and f"lines 2, {len(lines) + 1}" in warned
        )

    @pytest.mark.parametrize("bad", ["140", "abc"])
    def test_invasive_fraction_out_of_range_or_not_a_number(self, tiny_cohort, capsys, bad):
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels.loc[0, "invasive_fraction"] = bad
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        _, _, hits = self.excluded(tiny_cohort, capsys, "invalid label")
        reason = hits.iloc[0]["reason"]
        assert (
            "line 2" in reason
            and "invasive_fraction" in reason
            and f"'{bad}'" in reason
            and "0 to 100" in reason
        )

    def test_unknown_side_value_in_the_label_csv(self, tiny_cohort, capsys):
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels.loc[2, "side"] = "middle"
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        _, _, hits = self.excluded(tiny_cohort, capsys, "unknown side")
        assert "line 4" in hits.iloc[0]["reason"] and "'middle'" in hits.iloc[0]["reason"]

    def test_missing_clinical_column_goes_on_without_it(self, tiny_cohort, capsys):
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str).drop(columns="ki67")
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        manifest, _, hits = self.excluded(tiny_cohort, capsys, "missing column")
        assert "'ki67'" in hits.iloc[0]["reason"] and "ki67" not in manifest.columns

    def test_a_clinical_column_written_twice_goes_on_without_it(self, tiny_cohort, capsys):
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        clinical.insert(len(clinical.columns), "ki67 again", "5")
        written = clinical.to_csv(index=False).replace("ki67 again", "ki67", 1)
        (tiny_cohort / "clinical.csv").write_text(written)
        manifest, _, hits = self.excluded(tiny_cohort, capsys, "duplicate column")
        columns = f"(columns {clinical.columns.get_loc('ki67') + 1}, {len(clinical.columns)})"
        assert f"column 'ki67' appears 2 times {columns}" in hits.iloc[0]["reason"]
        assert "ki67" not in manifest.columns and "age" in manifest.columns

    def test_clinical_value_that_is_not_a_number(self, tiny_cohort, capsys):
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        row = int(clinical.index[clinical.notna().all(axis=1) & (clinical.index > 0)][0])
        clinical.loc[0, "age"], clinical.loc[row, "tumour_size_mm"] = "sixty", "2.3 cm"
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        manifest, exclusions, hits = self.excluded(tiny_cohort, capsys, "invalid clinical value")
        breast = (clinical.loc[row, "patient_id"], clinical.loc[row, "side"][0].upper())
        assert manifest.set_index(["patient_id", "side"]).loc[breast, "tumour_size_mm"] == 23  # synth: in mm
        edit_config(tiny_cohort, clinical={"units": {}})  # no unit said: not a number, and what would read it
        manifest, exclusions, hits = self.excluded(tiny_cohort, capsys, "invalid clinical value")
        assert hits.iloc[0]["reason"].endswith(
            "line 2, column 'age': 'sixty' is not a number (treated as missing)"
        )
        assert hits.iloc[1]["reason"].endswith(
            f"line {row + 2}, column 'tumour_size_mm': '2.3 cm' is not a number (a number with a unit, 'cm': "
            'clinical.units = { tumour_size_mm = "mm" or "cm" } reads it) (treated as missing)'
        )
        first = (clinical.loc[0, "patient_id"], clinical.loc[0, "side"][0].upper())
        assert first not in keys(manifest) and breast not in keys(manifest)

    def test_malformed_csv_row(self, tiny_cohort, capsys):
        with (tiny_cohort / "labels.csv").open("a") as fh:
            fh.write("MF99999,L,50,extra\n")
        _, _, hits = self.excluded(tiny_cohort, capsys, "malformed CSV row")
        assert "4 fields, expected 3" in hits.iloc[0]["reason"]

    def test_a_quote_never_closed_is_named_with_the_lines_it_took(self, tiny_cohort, capsys):
        """A stray quote makes the rest of the file one cell: the breasts after it had only "no row in
        labels.csv", and the one line about it said "1 fields, expected 3"."""
        lines = (tiny_cohort / "labels.csv").read_text().splitlines()
        at = len(lines) - 2  # the third line from the end (counted from 1): it and the two after it
        lines[at - 1] = '"' + lines[at - 1]
        (tiny_cohort / "labels.csv").write_text("\n".join(lines) + "\n")
        manifest, exclusions, hits = self.excluded(tiny_cohort, capsys, "malformed CSV row")
        assert hits.iloc[0]["reason"] == (
            f'labels.csv line {at}: 1 fields, expected 3 (patient_id, side, invasive_fraction); a quote (") '
            f"opened on line {at} closes only at the file's end: lines {at}-{at + 2} read as one row"
        )

    def test_a_cell_written_over_two_lines_keeps_the_files_line_numbers(self, tiny_cohort, capsys):
        """A comment typed over two lines (a quoted cell with a line break, as Excel saves one) made every
        message after it name the line above the one meant."""
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        clinical["comment"] = ""
        clinical.loc[0, "comment"] = "seen twice,\nsecond opinion"
        row = int(clinical.index[clinical.notna().all(axis=1) & (clinical.index > 0)][0])
        clinical.loc[row, "age"] = "sixty"
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        _, _, hits = self.excluded(tiny_cohort, capsys, "invalid clinical value")
        # the header on line 1, the first row on lines 2-3: row `row` on line row + 3
        assert f"clinical.csv line {row + 3}, column 'age': 'sixty' is not a number" in hits.iloc[0]["reason"]


def read_cells(folder: Path, cells: dict[str, list[str]], **settings) -> tuple[list[dict], Problems]:
    """`cells` (column -> its cells, a row for each of patients P0, P1, ..., left breast) written as a
    ';'-separated clinical.csv and read with [clinical] `settings`: each row's values, and the problems."""
    from mammofuse.cohort.tables import read_clinical
    from mammofuse.config import ClinicalConfig

    rows = len(next(iter(cells.values())))
    table = pd.DataFrame({"patient_id": [f"P{i}" for i in range(rows)], "side": "L", **cells})
    table.to_csv(folder / "clinical.csv", index=False, sep=";")
    cfg = ClinicalConfig(path=folder / "clinical.csv", **{"numeric": [], "categorical": [], **settings})
    clinical = read_clinical(cfg, problems := Problems())
    assert clinical is not None
    return [clinical.values[(f"P{i}", Side.LEFT)] for i in range(rows)], problems


class TestClinicalTypos:
    """Typos of a clinical spreadsheet (age 560 for 56, a minus sign, Ki-67 250 %, 'Positive' beside
    'positive', 'positve') went into the features unseen. `clinical.ranges` says what a column can hold: a
    value outside is invalid, written down and treated as missing; without a range, a value far from its
    column's others is warned about, kept. A category spelt another way but for case is read as the usual
    spelling; a rare one like a frequent one is warned about."""

    def typed(self, cohort: Path) -> tuple[pd.DataFrame, tuple[str, str]]:
        clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
        row = clinical.index[clinical.notna().all(axis=1)][0]
        clinical.loc[row, "age"] = "560"
        clinical.to_csv(cohort / "clinical.csv", index=False)
        return clinical, (clinical.loc[row, "patient_id"], clinical.loc[row, "side"][0].upper())

    def test_a_value_outside_its_range_is_treated_as_missing(self, tiny_cohort, capsys):
        clinical, breast = self.typed(tiny_cohort)
        edit_config(tiny_cohort, clinical={"ranges": {"age": [18, 110]}})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0 and breast not in keys(manifest)
        [hit] = exclusions.loc[exclusions["category"] == "invalid clinical value", "reason"]
        line = int(np.flatnonzero(clinical["age"] == "560")[0]) + 2
        said = "'560' lies outside 18 to 110 (clinical.ranges) (treated as missing)"
        assert hit == f"clinical.csv line {line}, column 'age': {said}"
        assert hit in out
        edit_config(tiny_cohort, clinical={"na_policy": "impute"})
        _, _, imputed, _ = run_ingest(tiny_cohort, capsys)
        kept = imputed.set_index(["patient_id", "side"]).loc[breast]
        assert np.isnan(kept["age"])  # imputed from the training split, with its missing indicator

    def test_a_range_must_name_a_numeric_feature_and_hold_a_value(self, tmp_path):
        from mammofuse.config import ConfigError

        for ranges, said in [
            ("{ grade = [1, 3] }", "ranges: ['grade'] not among the numeric features"),
            ("{ age = [110, 18] }", "ranges: age = [110, 18] holds no value (lowest first)"),
        ]:
            (tmp_path / "c.toml").write_text(f"[clinical]\nranges = {ranges}\n")
            with pytest.raises(ConfigError, match=re.escape(said)):
                load_config(tmp_path / "c.toml")

    def test_without_a_range_a_far_value_is_warned_about_and_kept(self, tmp_path):
        from mammofuse.cohort.tables import read_clinical
        from mammofuse.config import ClinicalConfig
        from mammofuse.problems import Problems

        rng = np.random.default_rng(0)
        ages, sizes = rng.normal(57, 10, 40).round(), rng.lognormal(3, 0.5, 40).round(1)
        ages[4], sizes[7], sizes[9] = 560, -3, 80  # 80 mm: a large tumour, not far enough to warn
        table = pd.DataFrame({"patient_id": [f"P{i}" for i in range(40)], "side": "L", "age": ages})
        table.assign(tumour_size_mm=sizes).to_csv(tmp_path / "clinical.csv", index=False)
        cfg = ClinicalConfig(
            path=tmp_path / "clinical.csv", numeric=["age", "tumour_size_mm"], categorical=[]
        )
        problems = Problems()
        clinical = read_clinical(cfg, problems)
        assert clinical is not None and clinical.values[("P4", Side.LEFT)]["age"] == 560  # kept
        warned = [(p.category, p.severity, p.patient_id, p.reason) for p in problems.items]
        assert [w[:3] for w in warned] == [
            ("implausible clinical value", "warning", "P4"),
            ("implausible clinical value", "warning", "P7"),
        ]
        assert warned[0][3].startswith(
            "clinical.csv line 6, column 'age': 560 lies far from the column's other"
        )
        assert "clinical.ranges = { age = [lowest, highest] }" in warned[0][3]
        assert (
            "line 9, column 'tumour_size_mm': -3 is the column's only value below 0: a typo?" in warned[1][3]
        )

    def test_a_number_written_as_a_bound_is_read_as_the_bound(self, tiny_cohort, capsys):
        """Pathology writes Ki-67 near 0 as '<1 %': it was 'not a number', and the breast left out."""
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        rows = clinical.index[clinical.notna().all(axis=1)][:2]
        clinical.loc[rows, "ki67"] = ["<1 %", "≥ 90"]
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        read = manifest.set_index(["patient_id", "side"])["ki67"]
        assert [read[(clinical.loc[r, "patient_id"], clinical.loc[r, "side"][0].upper())] for r in rows] == [
            1,
            90,
        ]
        [warned] = exclusions.loc[exclusions["category"] == "bound read as its value", "reason"]
        assert warned == (
            f"clinical.csv, column 'ki67': 2 values written as a bound, read as the bound: '<1 %' (line "
            f"{rows[0] + 2}), '≥ 90' (line {rows[1] + 2})"
        )

    def test_a_number_with_a_unit_is_read_in_the_features_unit_and_a_plain_one_as_the_file_writes_it(
        self, tmp_path
    ):
        """Pathology spreadsheets write '2.3 cm' beside '23 mm': such a cell was not a number, its breast left
        out. `units` says what unit a feature is in, and reads cells that write one of its kind in it;
        `written_in`, the unit of a file's plain numbers (another site's centimetres)."""
        sizes = ["23", "2.3 cm", "23mm", "2,37 CM.", "<5 mm", "2.3 kg", "56 years"]
        ages = ["56", "56 y", "56 Years", "56 yrs", "56", "56", "56"]
        units = {"size": "mm", "age": "years"}
        read, problems = read_cells(
            tmp_path, {"size": sizes, "age": ages}, numeric=["size", "age"], units=units
        )
        assert [r["size"] for r in read] == [23, 23, 23, 23.7, 5, None, None]  # 2.37 cm is 23.7 mm exactly
        assert {r["age"] for r in read} == {56}
        invalid = [p.reason for p in problems.items if p.category == "invalid clinical value"]
        assert invalid == [
            "clinical.csv line 7, column 'size': '2.3 kg' is not a number in \"mm\" or \"cm\" (its unit "
            "'kg'; clinical.units: size in mm) (treated as missing)",
            "clinical.csv line 8, column 'size': '56 years' is not a number in \"mm\" or \"cm\" (its unit "
            "'years'; clinical.units: size in mm) (treated as missing)",
        ]
        centimetres = {"written_in": {"size": "cm"}, "ranges": {"size": (0, 30)}}  # a range in mm, as units
        read, _ = read_cells(
            tmp_path, {"size": sizes[:5]}, numeric=["size"], units={"size": "mm"}, **centimetres
        )
        assert [r["size"] for r in read] == [None, 23, 23, 23.7, 5]  # plain numbers in cm

    def test_a_number_that_looks_written_in_another_unit_is_warned_about(self, tmp_path):
        """A file of millimetres with a few sizes typed in centimetres ('2.3' for 23 mm) read them as 2.3 mm
        without a word: inside any range, and not far from the others by the far-value rule."""
        typical = [str(v) for v in range(10, 40)]  # whole millimetres
        sizes = typical + ["2.3", "2", "2.3 cm", "7.5"]
        read, problems = read_cells(tmp_path, {"size": sizes}, numeric=["size"], units={"size": "mm"})
        assert [r["size"] for r in read][-4:] == [2.3, 2, 23, 7.5]  # kept as read
        warned = [(p.patient_id, p.reason) for p in problems.items if p.category == "clinical unit"]
        assert warned == [  # not '2' (a real tumour of 2 mm, written as the others are), nor '7.5' (not far)
            (
                "P30",
                "clinical.csv line 32, column 'size': 2.3, read as 2.3 mm, lies far below the column's "
                "other values (quartiles 15.25 and 30.75 mm); read in cm, it would be 23 mm, among them: "
                "written in cm? (kept; '2.3 cm' is read in cm)",
            )
        ]
        centimetres = [f"{v / 10:.1f}" for v in range(10, 40)] + ["23", "2.0"]  # another site's file
        read, problems = read_cells(
            tmp_path, {"size": centimetres}, numeric=["size"], units={"size": "mm"}, written_in={"size": "cm"}
        )
        warned = [p.reason for p in problems.items if p.category == "clinical unit"]
        assert len(warned) == 1 and warned[0].startswith(
            "clinical.csv line 32, column 'size': 23, read as 230 mm, lies far above"
        )
        assert warned[0].endswith("written in mm? (kept; '23 mm' is read in mm)")
        _, problems = read_cells(tmp_path, {"size": sizes}, numeric=["size"])  # no unit: nothing to say
        assert not [p for p in problems.items if p.category == "clinical unit"]

    def test_a_share_is_read_as_a_percent_or_a_fraction_as_its_unit_says(self, tmp_path):
        """Ki-67 is 20 at one site and 0.2 at another (or in a spreadsheet's percent cell read as a number):
        a site's fractions could only be warned about (their median 0.01 x the training one), never read."""
        ki67 = [str(v) for v in range(5, 45, 2)] + ["20 %", "<1 %", "10-20 %", "ca. 15%", "0.2"]
        read, problems = read_cells(tmp_path, {"ki67": ki67}, numeric=["ki67"], units={"ki67": "percent"})
        assert [r["ki67"] for r in read][-5:] == [20, 1, 15, 15, 0.2]
        (warned,) = [p.reason for p in problems.items if p.category == "clinical unit"]
        assert "0.2, read as 0.2 percent, lies far below" in warned and "written in fraction?" in warned
        fractions = ["0.2", "0,35", "20 %", "0.05"]  # another site's export: plain numbers are fractions
        site = {"units": {"ki67": "percent"}, "written_in": {"ki67": "fraction"}}
        read, _ = read_cells(tmp_path, {"ki67": fractions}, numeric=["ki67"], **site)
        assert [r["ki67"] for r in read] == [20, 35, 20, 5]
        read, _ = read_cells(tmp_path, {"ki67": fractions}, numeric=["ki67"], units={"ki67": "fraction"})
        assert [r["ki67"] for r in read] == [0.2, 0.35, 0.2, 0.05]  # a model whose Ki-67 is a fraction
        read, _ = read_cells(tmp_path, {"ki67": ["20 %", "0.2"]}, numeric=["ki67"])  # no unit: as before
        assert [r["ki67"] for r in read] == [20, 0.2]

    def test_a_unit_must_be_of_a_numeric_feature_and_written_in_of_its_kind(self, tmp_path):
        from mammofuse.config import ConfigError

        for clinical, said in [
            ('units = { grade = "mm" }', "units: ['grade'] not among the numeric features"),
            ('units = { age = "inches" }', "units.age"),
            ('written_in = { age = "cm" }', "written_in: age needs the unit the feature itself is in"),
            ('units = { ki67 = "percent" }\nwritten_in = { ki67 = "mm" }', "measures length"),
            (
                'units = { age = "years" }\nwritten_in = { age = "cm" }',
                "written_in: age = 'cm' measures length, the feature's unit 'years' (units) age",
            ),
        ]:
            (tmp_path / "c.toml").write_text(f"[clinical]\n{clinical}\n")
            with pytest.raises(ConfigError, match=re.escape(said)):
                load_config(tmp_path / "c.toml")

    def test_an_approximate_number_is_read_as_the_number(self, tmp_path):
        """Pathology writes 'ca. 2,5 cm' or '~25mm': not a number, and its breast was left out."""
        sizes = ["ca. 2,5 cm", "~25mm", "≈ 25", "approx. 25", "Circa 25", "25", "ca.", "<30"]
        read, problems = read_cells(tmp_path, {"size": sizes}, numeric=["size"], units={"size": "mm"})
        read = [r["size"] for r in read]
        assert read == [25, 25, 25, 25, 25, 25, None, 30]
        said = {p.category: p.reason for p in problems.items}
        assert said["approximate value read as its number"] == (
            "clinical.csv, column 'size': 5 values written as approximate, read as its number: "
            "'ca. 2,5 cm' (line 2), '~25mm' (line 3), '≈ 25' (line 4), ..."
        )
        assert said["bound read as its value"].endswith(
            "1 value written as a bound, read as the bound: '<30' (line 9)"
        )
        assert "line 8, column 'size': 'ca.' is not a number" in said["invalid clinical value"]

    def test_a_range_is_read_as_its_midpoint(self, tmp_path):
        """Pathology writes Ki-67 as '10-20 %', a size as '1,5-2 cm': not numbers, their breasts left out."""
        ki67 = ["10-20 %", "10–20%", "15 to 20", "20-10", "15", "15", "15"]
        sizes = ["1,5-2 cm", "15 - 20 mm", "17.5", "17.5", "17.5", "2024-05-01", "17.5"]
        both = {"numeric": ["ki67", "size"], "units": {"size": "mm"}}
        read, problems = read_cells(tmp_path, {"ki67": ki67, "size": sizes}, **both)
        assert [r["ki67"] for r in read] == [15, 15, 17.5, None, 15, 15, 15]
        assert [r["size"] for r in read] == [17.5, 17.5, 17.5, 17.5, 17.5, None, 17.5]
        ranges = [p.reason for p in problems.items if p.category == "range read as its midpoint"]
        assert ranges == [
            "clinical.csv, column 'ki67': 3 values written as a range, read as its midpoint: '10-20 %' "
            "(line 2), '10–20%' (line 3), '15 to 20' (line 4)",
            "clinical.csv, column 'size': 2 values written as a range, read as its midpoint: '1,5-2 cm' "
            "(line 2), '15 - 20 mm' (line 3)",
        ]
        invalid = [p.reason for p in problems.items if p.category == "invalid clinical value"]
        assert "'20-10' is not a number" in invalid[0] and "'2024-05-01' is not a number" in invalid[1]

    def test_a_category_spelt_another_way_is_read_as_the_usual_spelling(self, tiny_cohort, capsys):
        _, _, before, _ = run_ingest(tiny_cohort, capsys)
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        row = int(np.flatnonzero((clinical["er"] == "positive") & clinical.notna().all(axis=1))[0])
        clinical.loc[row, "er"] = "Positive"
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        pd.testing.assert_frame_equal(manifest, before)  # before: a category of its own, 'Positive'
        [warned] = exclusions.loc[exclusions["category"] == "category spelt several ways", "reason"]
        assert warned.startswith(
            f"clinical.csv, column 'er': 'Positive' (line {row + 2}) read as 'positive' ("
        )
        assert warned in out

    def test_a_whole_number_saved_as_a_decimal_is_read_as_the_number(self, tmp_path):
        grade = ["1", "2", "3"] * 13 + ["3.0"]
        read, problems = read_cells(tmp_path, {"grade": grade}, categorical=["grade"])
        assert read[39]["grade"] == "3"
        [warned] = problems.items
        assert warned.category == "category spelt several ways"
        assert "'3.0' (line 41) read as '3'" in warned.reason

    def test_a_recode_matches_without_case_or_spaces(self, tmp_path):
        from mammofuse.cohort.tables import read_clinical
        from mammofuse.config import ClinicalConfig
        from mammofuse.problems import Problems

        table = pd.DataFrame({"patient_id": ["P1", "P2", "P3"], "side": "L", "er": ["pos", "POS", " Neg"]})
        table.to_csv(tmp_path / "clinical.csv", index=False)
        recode = {"er": {"pos": "positive", "neg": "negative"}}
        cfg = ClinicalConfig(path=tmp_path / "clinical.csv", numeric=[], categorical=["er"], recode=recode)
        clinical = read_clinical(cfg, problems := Problems())
        assert clinical is not None and not problems.items
        assert [clinical.values[(p, Side.LEFT)]["er"] for p in ("P1", "P2", "P3")] == [
            "positive",
            "positive",
            "negative",
        ]

    def test_a_rare_category_like_a_frequent_one_is_warned_about_and_kept(self, tmp_path):
        from mammofuse.cohort.tables import read_clinical
        from mammofuse.config import ClinicalConfig
        from mammofuse.problems import Problems

        er = ["positive"] * 30 + ["negative"] * 9 + ["positve"]
        grade = ["1", "2", "3", "x"] * 10  # short values: none is like another
        table = pd.DataFrame(
            {"patient_id": [f"P{i}" for i in range(40)], "side": "L", "er": er, "grade": grade}
        )
        table.to_csv(tmp_path / "clinical.csv", index=False)
        cfg = ClinicalConfig(path=tmp_path / "clinical.csv", numeric=[], categorical=["er", "grade"])
        problems = Problems()
        clinical = read_clinical(cfg, problems)
        assert clinical is not None and clinical.values[("P39", Side.LEFT)]["er"] == "positve"  # kept
        [warned] = problems.items
        assert (warned.category, warned.severity) == ("rare category", "warning")
        assert warned.reason == (
            "clinical.csv, column 'er': 'positve' (line 41) beside 'positive' (30 rows, lines 2, 3, 4, ...): "
            "a typo? (kept as a category of its own; recode = { er = { 'positve' = 'positive' } } reads it "
            "as the other)"
        )


class TestAsSpreadsheetsSaveThem:
    """Tables as spreadsheets save them: Excel's "CSV" on a Western-European Windows (Windows-1252,
    semicolons, decimal commas), its "Unicode Text" (UTF-16 with a byte-order mark, tabs), a Japanese export
    (Shift-JIS), percent signs, Excel workbooks. Each reads to the breasts and values its UTF-8 CSV gives."""

    def french_clinical(self, cohort) -> pd.DataFrame:
        clinical = pd.read_csv(cohort / "clinical.csv", dtype=str)
        clinical["er"] = clinical["er"].replace({"positive": "positivé"})
        return clinical

    def test_excel_on_western_windows_reads_as_its_utf8_copy_with_a_warning(self, tiny_cohort, capsys):
        clinical = self.french_clinical(tiny_cohort)
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        _, _, as_utf8, _ = run_ingest(tiny_cohort, capsys)
        excel = clinical.assign(tumour_size_mm=clinical["tumour_size_mm"].str.replace(".", ","))
        excel.to_csv(tiny_cohort / "clinical.csv", index=False, sep=";", encoding="cp1252")
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, as_utf8)
        assert "positivé" in set(manifest["er"])
        warned = exclusions[exclusions["category"] == "CSV not UTF-8"]
        first = int((clinical["er"] == "positivé").to_numpy().argmax()) + 2  # the header is line 1
        assert len(warned) == 1 and warned.iloc[0]["severity"] == "warning"
        assert f"line {first}, byte 0xe9" in warned.iloc[0]["reason"]
        assert "read as Windows-1252" in warned.iloc[0]["reason"]

    def test_unicode_text_with_a_byte_order_mark_and_tabs(self, tiny_cohort, capsys):
        clinical = self.french_clinical(tiny_cohort)
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False)
        _, _, as_utf8, _ = run_ingest(tiny_cohort, capsys)
        clinical.to_csv(tiny_cohort / "clinical.csv", index=False, sep="\t", encoding="utf-16")
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, as_utf8)
        assert "CSV not UTF-8" not in set(exclusions["category"])

    def test_shift_jis_stops_naming_the_line_and_the_setting_then_reads_with_it(self, tiny_cohort, capsys):
        _, _, as_utf8, _ = run_ingest(tiny_cohort, capsys)
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels["備考"] = ""
        labels.loc[3, "備考"] = "乳管内成分あり"  # a note: not a column the cohort reads
        labels.to_csv(tiny_cohort / "labels.csv", index=False, encoding="shift_jis")
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "Traceback" not in out
        assert "labels.csv: neither UTF-8 nor Windows-1252" in out and "line 1" in out
        assert "set labels.encoding" in out
        edit_config(tiny_cohort, labels={"encoding": "shift_jis"})
        code, out, manifest, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, as_utf8)

    def test_percent_signs_of_cells_formatted_as_percentages(self, tiny_cohort, capsys):
        _, _, plain, _ = run_ingest(tiny_cohort, capsys)
        for name, column in (("labels.csv", "invasive_fraction"), ("clinical.csv", "ki67")):
            table = pd.read_csv(tiny_cohort / name, dtype=str)
            table[column] = table[column].where(table[column].isna(), table[column] + " %")
            table.to_csv(tiny_cohort / name, index=False)
        for scale in ("percent", "fraction"):  # a percent sign says the scale whatever labels.scale says
            edit_config(tiny_cohort, labels={"scale": scale})
            code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
            assert code == 0, out
            pd.testing.assert_frame_equal(manifest, plain)

    def test_excel_workbooks_read_as_their_csvs(self, tiny_cohort, capsys):
        """Numbers as numbers (the fraction a percentage cell), IDs and codes as text, gaps empty."""
        _, _, plain, _ = run_ingest(tiny_cohort, capsys)
        for name, numeric in (
            ("labels", ["invasive_fraction"]),
            ("clinical", ["age", "tumour_size_mm", "ki67"]),
        ):
            table = pd.read_csv(tiny_cohort / f"{name}.csv", dtype=str)
            book = openpyxl.Workbook()
            book.active.title = "Legend"  # a workbook that opens on its legend, the data on the next sheet
            book.active.append(["er", "oestrogen receptor status"])
            sheet = book.create_sheet("Data")
            sheet.append(list(table.columns))
            for values in table.itertuples(index=False):
                cells = [
                    None if pd.isna(v) else float(v) if c in numeric else v for c, v in zip(table, values)
                ]
                if name == "labels" and cells[2] is not None:
                    cells[2] /= 100  # 45 % as Excel stores a percentage
                sheet.append(cells)
                if name == "labels":
                    sheet.cell(sheet.max_row, 3).number_format = "0%"
            book.save(tiny_cohort / f"{name}.xlsx")
        edit_config(tiny_cohort, labels={"path": "labels.xlsx"}, clinical={"path": "clinical.xlsx"})
        code, out, manifest, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, plain)
        edit_config(tiny_cohort, labels={"column": "fraction"})
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "labels.xlsx: no sheet has the columns patient_id, side, fraction" in out
        assert "(set labels.sheet to the one to read); sheet 'Legend': er, oestrogen receptor status; " in out
        assert "sheet 'Data': patient_id, side, " in out
        edit_config(tiny_cohort, labels={"column": "invasive_fraction"})
        (tiny_cohort / "labels.xls").write_bytes(b"\xd0\xcf\x11\xe0")  # an old binary workbook
        edit_config(tiny_cohort, labels={"path": "labels.xls"})
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "labels.xls: an Excel 97-2003 workbook: save it as .xlsx" in out

    def test_a_title_above_the_header_is_passed_over_and_said(self, tiny_cohort, capsys):
        """As a spreadsheet exports a table: a title and a date above the header, semicolons; the rows'
        line numbers still those of the file."""
        _, _, plain, _ = run_ingest(tiny_cohort, capsys)
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels.loc[1, "invasive_fraction"] = "abc"  # file line 6: below a three-line title and the header
        written = labels.to_csv(index=False, sep=";")
        (tiny_cohort / "labels.csv").write_text(f"EIC study;;\nexported 2024-03-01\n\n{written}")
        clinical = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        book = openpyxl.Workbook()
        book.active.append(["Clinical data, EIC study"])
        book.active.append(list(clinical.columns))
        for values in clinical.itertuples(index=False):
            book.active.append([None if pd.isna(v) else v for v in values])
        book.save(tiny_cohort / "clinical.xlsx")
        edit_config(tiny_cohort, clinical={"path": "clinical.xlsx"})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        said = exclusions[exclusions["category"] == "header below line 1"].set_index("path")["reason"]
        assert said[str(tiny_cohort / "labels.csv")] == (
            "labels.csv: the header (patient_id, side, invasive_fraction) is on line 4; the 3 lines above "
            "it are not read ('EIC study / exported 2024-03-01')"
        )
        assert said[str(tiny_cohort / "clinical.xlsx")].startswith(
            "clinical.xlsx: the header (patient_id, side) is on line 2; the 1 line above it is not read "
            "('Clinical data, EIC study')"
        )
        [bad] = exclusions[exclusions["category"] == "invalid label"]["reason"]
        assert bad.startswith("labels.csv line 6, column 'invasive_fraction': 'abc'")
        lost = (plain["patient_id"] == labels.loc[1, "patient_id"]) & (plain["side"] == labels.loc[1, "side"])
        pd.testing.assert_frame_equal(manifest, plain[~lost].reset_index(drop=True))

    def test_a_workbook_with_several_data_sheets_says_which_it_read_and_reads_the_one_named(
        self, tiny_cohort, capsys
    ):
        _, _, plain, _ = run_ingest(tiny_cohort, capsys)
        table = pd.read_csv(tiny_cohort / "clinical.csv", dtype=str)
        book = openpyxl.Workbook()
        book.active.title = "raw"  # before cleaning: every age written as 99
        for sheet, ages in ((book.active, "99"), (book.create_sheet("cleaned"), None)):
            sheet.append(list(table.columns))
            for values in table.assign(age=ages or table["age"]).itertuples(index=False):
                sheet.append([None if pd.isna(v) else v for v in values])
        book.save(tiny_cohort / "clinical.xlsx")
        edit_config(tiny_cohort, clinical={"path": "clinical.xlsx"})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        assert set(manifest["age"]) == {99}  # the first sheet with the columns, as before; but said:
        [warning] = exclusions[exclusions["category"] == "several data sheets"]["reason"]
        assert "read sheet 'raw'" in warning and "'cleaned' has them too (set clinical.sheet" in warning
        edit_config(tiny_cohort, clinical={"sheet": "cleaned"})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, plain)
        assert "several data sheets" not in set(exclusions["category"])
        edit_config(tiny_cohort, clinical={"sheet": "Cleaned"})
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "clinical.xlsx: no sheet named 'Cleaned' (clinical.sheet); sheet 'raw': " in out

    def test_an_encoding_python_does_not_know_is_a_config_error(self, tiny_cohort, capsys):
        edit_config(tiny_cohort, clinical={"encoding": "utf9"})
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "clinical.encoding" in out and "unknown text encoding 'utf9'" in out


class TestSpreadsheetIds:
    """A hospital's all-digit patient IDs (00001), which a spreadsheet took for numbers (1)."""

    @pytest.fixture
    def digit_ids(self, tiny_cohort, capsys):
        """The patient IDs 5 digits with leading zeros, in the headers and the CSVs; the manifest that
        gives."""
        for path in (tiny_cohort / "dicom").rglob("*.dcm"):
            edit_dicom(path, lambda ds: setattr(ds, "PatientID", ds.PatientID.removeprefix("MF")))
        for name in ("labels.csv", "clinical.csv"):
            table = pd.read_csv(tiny_cohort / name, dtype=str)
            table["patient_id"] = table["patient_id"].str.removeprefix("MF")
            table.to_csv(tiny_cohort / name, index=False)
        code, out, manifest, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0 and manifest["patient_id"].str.fullmatch(r"0\d{4}").all(), out
        return manifest

    def test_ids_without_their_zeros_are_named_with_the_setting_that_puts_them_back(
        self, tiny_cohort, digit_ids, capsys
    ):
        for name in ("labels.csv", "clinical.csv"):
            table = pd.read_csv(tiny_cohort / name, dtype=str)
            table["patient_id"] = table["patient_id"].astype(int)  # what Excel saves
            table.to_csv(tiny_cohort / name, index=False)
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "no breast is left" in out
        exclusions = pd.read_csv(tiny_cohort / "work" / "exclusions.csv", dtype=str)
        warned = exclusions[exclusions["category"] == "patient IDs written otherwise"]
        assert list(warned["path"].map(lambda p: Path(p).name)) == ["labels.csv", "clinical.csv"]
        patients = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)["patient_id"].nunique()
        assert f"labels.csv: {patients} patient IDs" in out and "set labels.patient_id_width = 5" in out
        edit_config(tiny_cohort, labels={"patient_id_width": 5}, clinical={"patient_id_width": 5})
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        pd.testing.assert_frame_equal(manifest, digit_ids)
        assert "patient IDs written otherwise" not in set(exclusions["category"])

    def test_ids_written_in_another_case_or_with_separators_are_named(self, tiny_cohort, capsys):
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels["patient_id"] = labels["patient_id"].str.replace("MF", "mf-")  # MF00001 -> mf-00001
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "no breast is left" in out
        patients = labels["patient_id"].nunique()
        assert f"labels.csv: {patients} patient IDs name no imaged patient as written but do compared" in out
        assert "(e.g. 'mf-00001' is 'MF00001' in the images)" in out

    def test_a_long_id_rounded_to_scientific_notation_is_named_as_such(self, tiny_cohort, capsys):
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels.loc[1, "patient_id"] = "1.23457E+15"  # 1234567890123456 as Excel shows and saves it
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        code, out, _, exclusions = run_ingest(tiny_cohort, capsys)
        assert code == 0, out
        rounded = exclusions[exclusions["reason"].str.contains("scientific notation")]
        assert len(rounded) == 1 and "labels.csv line 3, column 'patient_id'" in rounded.iloc[0]["reason"]


class TestFatalProblems:
    def test_missing_label_column_stops_with_a_clear_message(self, tiny_cohort, capsys):
        labels = pd.read_csv(tiny_cohort / "labels.csv").rename(columns={"invasive_fraction": "fraction"})
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2
        assert (
            "missing column(s) 'invasive_fraction'" in out
            and "found columns" in out
            and "Traceback" not in out
        )

    def test_a_label_column_written_twice_stops_with_a_clear_message(self, tiny_cohort, capsys):
        """Two columns of one name: a reader takes one of them silently (the last: every breast from a second
        fraction column of 50 % was EIC positive)."""
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str).assign(second="50")
        (tiny_cohort / "labels.csv").write_text(
            labels.to_csv(index=False).replace("second", "invasive_fraction", 1)
        )
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        out = " ".join(out.split())
        assert code == 2 and "Traceback" not in out
        assert "labels.csv: column 'invasive_fraction' appears 2 times (columns 3, 4)" in out

    def test_strict_stops_at_the_first_problem_with_exit_2(self, tiny_cohort, capsys):
        (tiny_cohort / "dicom" / "README.txt").write_text("not an image")
        code, out, _, _ = run_ingest(tiny_cohort, capsys, "--strict")
        assert code == 2 and "README.txt" in out and "Traceback" not in out

    def test_strict_does_not_stop_at_the_na_policy_doing_its_job(self, tiny_cohort, capsys):
        code, out, manifest, exclusions = run_ingest(tiny_cohort, capsys, "--strict")
        assert code == 0, out
        assert set(exclusions["category"]) == {"missing clinical value"} and len(manifest) > 0


class TestDoneWhen:
    def test_synth_120_breasts_then_ingest_agrees_with_the_csvs(self, tmp_path, capsys):
        from mammofuse.cli import main

        cohort, work = tmp_path / "c", tmp_path / "m"
        argv = [
            "synth",
            str(cohort),
            "--breasts",
            "120",
            "--seed",
            "1",
            "--image-size",
            "48",
            "40",
            "--workers",
            "1",
        ]
        assert main(argv) == 0
        assert main(["ingest", str(cohort / "cohort.toml"), "--out", str(work)]) == 0
        manifest = pd.read_csv(work / "manifest.csv", dtype={"patient_id": str})
        labels = pd.read_csv(cohort / "labels.csv", dtype={"patient_id": str})
        clinical = pd.read_csv(cohort / "clinical.csv", dtype={"patient_id": str})
        clinical["side"] = clinical["side"].str[0].str.upper()
        complete = labels.merge(clinical.dropna(), on=["patient_id", "side"])
        assert len(manifest) == len(complete) and keys(manifest) == keys(complete)
        merged = manifest.merge(complete, on=["patient_id", "side"], suffixes=("", "_csv"))
        assert (merged["label"] == (merged["invasive_fraction"] < 75)).all()
        assert (merged["age"] == merged["age_csv"]).all()
        exclusions = pd.read_csv(work / "exclusions.csv")
        assert len(exclusions) == 120 - len(manifest) and set(exclusions["category"]) == {
            "missing clinical value"
        }


class TestEndpointNames:
    def test_the_summary_names_the_classes_as_the_config_does(self, tiny_cohort, capsys):
        edit_config(
            tiny_cohort, labels={"name": "DCIS upstaging", "positive": "upstaged", "negative": "pure DCIS"}
        )
        code, out, manifest, _ = run_ingest(tiny_cohort, capsys)
        pos = int(manifest["label"].sum())
        assert code == 0 and f"{pos} upstaged (label 1), {len(manifest) - pos} pure DCIS (label 0)" in out


class TestFractionsAsReportsWriteThem:
    @pytest.mark.parametrize("scale", ["percent", "fraction"])
    def test_a_bound_is_read_where_it_decides_the_side_of_the_threshold(self, tmp_path, scale):
        from mammofuse.cohort.tables import read_labels
        from mammofuse.config import LabelsConfig
        from mammofuse.problems import Problems

        written = {"P1": "<5", "P2": "> 90 %", "P3": "≤ 74", "P4": "<80", "P5": ">=75", "P6": "<=75"}
        if scale == "fraction":  # the same fractions as 0-1 (a percent sign still says percent)
            written = {p: re.sub(r"(\d+)$", lambda m: str(int(m[1]) / 100), w) for p, w in written.items()}
        rows = "".join(f"{p},L,{w}\n" for p, w in written.items())
        (tmp_path / "labels.csv").write_text("patient_id,side,invasive_fraction\n" + rows)
        problems = Problems()
        labels = read_labels(LabelsConfig(path=tmp_path / "labels.csv", scale=scale), problems)
        assert {p: v for (p, _), v in labels.label.items()} == {"P1": 1, "P2": 0, "P3": 1, "P5": 0}
        reasons = [p.reason for p in problems.items if p.category == "invalid label"]
        assert len(reasons) == 2 and all(
            "does not say on which side of the threshold (75 %)" in r for r in reasons
        )
        (said,) = [p.reason for p in problems.items if p.category == "bound read as its value"]
        assert said.startswith("labels.csv, column 'invasive_fraction': 4 values written as a bound")

    def test_a_range_is_read_where_both_ends_lie_on_one_side_and_an_approximate_value_as_written(
        self, tmp_path
    ):
        """Pathology writes '60-70 %' and 'ca. 80 %': not fractions, their breasts (and labels) left out."""
        from mammofuse.cohort.tables import read_labels
        from mammofuse.config import LabelsConfig
        from mammofuse.problems import Problems

        written = {"P1": "60-70 %", "P2": "80 - 90", "P3": "70-80 %", "P4": "70-75", "P5": "ca. 80 %"}
        written |= {"P6": "~ 40", "P7": "90-80", "P8": "60-170"}
        rows = "".join(f"{p};L;{w}\n" for p, w in written.items())
        (tmp_path / "labels.csv").write_text("patient_id;side;invasive_fraction\n" + rows)
        labels = read_labels(LabelsConfig(path=tmp_path / "labels.csv"), problems := Problems())
        assert {p: v for (p, _), v in labels.label.items()} == {"P1": 1, "P2": 0, "P5": 0, "P6": 1}
        assert [labels.value[(p, Side.LEFT)] for p in ("P1", "P2", "P5", "P6")] == [65, 85, 80, 40]
        reasons = {p.patient_id: p.reason for p in problems.items}
        assert reasons["P3"].endswith(
            "'70-80 %' does not say on which side of the threshold (75 %) the fraction lies"
        )
        assert "does not say on which side" in reasons["P4"]  # 75 is EIC negative, 70 positive
        assert "'90-80' is not an invasive fraction" in reasons["P7"]
        assert "'60-170' is not an invasive fraction" in reasons["P8"]
        warned = {p.category: p.reason for p in problems.items if p.severity == WARNING}
        assert warned == {  # the value kept beside the label is an estimate: said once for each kind
            "range read as its midpoint": "labels.csv, column 'invasive_fraction': 2 values written as "
            "a range, read as its midpoint: '60-70 %' (line 2), '80 - 90' (line 3)",
            "approximate value read as its number": "labels.csv, column 'invasive_fraction': 2 values "
            "written as approximate, read as its number: 'ca. 80 %' (line 6), '~ 40' (line 7)",
        }

    def test_a_share_of_1_among_percentages_that_would_change_the_label_is_warned_about(self, tmp_path):
        """'0.8' among percentages: 0.8 % (EIC positive) as read, 80 % (negative) if typed as a share."""
        from mammofuse.cohort.tables import read_labels
        from mammofuse.config import LabelsConfig
        from mammofuse.problems import Problems

        written = {f"P{i}": str(v) for i, v in enumerate([40, 90, 15, 80, 60, 35, 95, 20, 70, 85] * 2)}
        written |= {"S1": "0.8", "S2": "0.3", "S3": "0.95 %", "S4": "1"}  # only S1 turns on the reading
        rows = "".join(f"{p},L,{w}\n" for p, w in written.items())
        (tmp_path / "labels.csv").write_text("patient_id,side,invasive_fraction\n" + rows)
        labels = read_labels(LabelsConfig(path=tmp_path / "labels.csv"), problems := Problems())
        assert labels.label[("S1", Side.LEFT)] == 1  # kept as read
        (said,) = [p.reason for p in problems.items if p.category == "fraction typed as a share?"]
        assert said == (
            "labels.csv, column 'invasive_fraction': 1 value below 1 in a column of percentages: '0.8' "
            "(line 22); read as percent (EIC positive: below 75 %), but typed as shares of 1 (0.8 for 80 %) "
            "they would be EIC negative: if so, write them as percent"
        )
        (tmp_path / "labels.csv").write_text(
            "patient_id,side,invasive_fraction\nP1,L,0.8\nP2,L,0.5\nP3,L,40\n"
        )
        read_labels(LabelsConfig(path=tmp_path / "labels.csv"), problems := Problems())
        assert not problems.items  # a column mostly below 1 is no column of percentages to judge by


class TestLabelScale:
    def fractions(self, cohort) -> pd.DataFrame:
        labels = pd.read_csv(cohort / "labels.csv", dtype={"patient_id": str})
        labels["invasive_fraction"] = labels["invasive_fraction"] / 100
        labels.to_csv(cohort / "labels.csv", index=False)
        return labels

    def test_fractions_read_as_percent_stop_with_a_question(self, tiny_cohort, capsys):
        self.fractions(tiny_cohort)
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "lie between 0 and 1" in out and "labels.scale = 'fraction'" in out

    def test_fractions_with_the_fraction_scale_give_the_same_labels(self, tiny_cohort, capsys):
        _, _, before, _ = run_ingest(tiny_cohort, capsys)
        self.fractions(tiny_cohort)
        edit_config(tiny_cohort, labels={"scale": "fraction"})
        code, _, after, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0 and after["label"].tolist() == before["label"].tolist()

    def test_an_invalid_label_has_one_reason_not_two(self, tiny_cohort, capsys):
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        labels.loc[0, "invasive_fraction"] = "abc"
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        _, _, _, exclusions = run_ingest(tiny_cohort, capsys)
        mine = exclusions[exclusions["patient_id"] == labels.loc[0, "patient_id"]]
        assert mine["category"].tolist() == ["invalid label"]


class TestLabelWords:
    """A label column written in words ('yes' / 'no', the classes' names) left every breast out as 'not a
    binary label'; `labels.recode` reads words as labels, and a binary column reads the classes' names."""

    def as_words(self, cohort, words: dict[int, str]) -> pd.DataFrame:
        labels = pd.read_csv(cohort / "labels.csv", dtype={"patient_id": str})
        labels["eic"] = (labels["invasive_fraction"] < 75).astype(int).map(words)
        labels.drop(columns="invasive_fraction").to_csv(cohort / "labels.csv", index=False)
        return labels

    def test_the_class_names_and_recoded_words_read_as_the_labels_they_name(self, tiny_cohort, capsys):
        _, _, before, _ = run_ingest(tiny_cohort, capsys)
        labels = self.as_words(tiny_cohort, {1: "EIC Positive", 0: "eic negative"})
        edit_config(tiny_cohort, labels={"kind": "binary", "column": "eic"})
        code, out, after, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0 and after["label"].tolist() == before["label"].tolist()
        labels["eic"] = labels["eic"].map({"EIC Positive": "Ja", "eic negative": "Nein"})
        labels.drop(columns="invasive_fraction").to_csv(tiny_cohort / "labels.csv", index=False)
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "'Nein' is not a binary label" in out
        assert """labels.recode = { 'Nein' = "1" } reads another word""" in out
        edit_config(tiny_cohort, labels={"recode": {"ja": "1", "nein": "0"}})
        code, out, after, _ = run_ingest(tiny_cohort, capsys)
        assert code == 0 and after["label"].tolist() == before["label"].tolist()

    def test_a_fraction_column_reads_a_recoded_word(self, tiny_cohort, capsys):
        before, _ = kept_row(tiny_cohort, capsys)
        breast = before.loc[before["label"] == 0, ["patient_id", "side"]].iloc[0].tolist()
        labels = pd.read_csv(tiny_cohort / "labels.csv", dtype=str)
        row = (labels["patient_id"] == breast[0]) & (labels["side"] == breast[1])
        labels.loc[row, "invasive_fraction"] = "pure DCIS"  # no invasive part: 0 %, EIC positive
        labels.to_csv(tiny_cohort / "labels.csv", index=False)
        edit_config(tiny_cohort, labels={"recode": {"Pure DCIS": "0"}})
        _, _, after, exclusions = run_ingest(tiny_cohort, capsys)
        assert after.set_index(["patient_id", "side"]).loc[tuple(breast), "label"] == 1
        assert len(after) == len(before) and "invalid label" not in set(exclusions["category"])


class TestImageTableChecks:
    @pytest.fixture
    def table_cohort(self, tmp_path):
        from mammofuse.cohort.synth import SynthOptions, synthesize

        cohort = tmp_path / "rsna"
        synthesize(cohort, SynthOptions(breasts=4, seed=9, image_size=(64, 48), workers=1, na_fraction=0.0))
        rsna_shaped(cohort)
        return cohort

    def test_a_path_outside_the_image_folder_is_refused(self, table_cohort, capsys):
        table = pd.read_csv(table_cohort / "images.csv")
        outside = table_cohort / "elsewhere.dcm"
        shutil.copy(table_cohort / "dicom" / table.loc[0, "image"], outside)
        table.loc[0, "image"] = "../elsewhere.dcm"
        table.to_csv(table_cohort / "images.csv", index=False)
        code, out, manifest, exclusions = run_ingest(table_cohort, capsys)
        assert code == 0 and len(manifest) == 3
        assert "../elsewhere.dcm resolves to" in out and "outside images.root" in out

    def test_an_image_of_another_patient_or_side_is_refused(self, table_cohort, capsys):
        table = pd.read_csv(table_cohort / "images.csv", dtype=str)
        first, other = table.loc[0], table[table["patient"] != table.loc[0, "patient"]].iloc[0]
        table.loc[0, "image"] = other["image"]  # another patient's image listed under the first
        table.to_csv(table_cohort / "images.csv", index=False)
        code, out, manifest, exclusions = run_ingest(table_cohort, capsys)
        assert code == 0 and first["patient"] not in set(manifest["patient_id"])
        assert f"the header's PatientID is {other['patient']!r}, the table says {first['patient']!r}" in out


@pytest.mark.filterwarnings("ignore:Invalid value for VR DA")  # pydicom, writing the old form
class TestSeveralExams:
    @pytest.fixture(params=["20240101", "2024.01.01"])
    def two_exams(self, request, tiny_cohort, capsys):
        """The first kept breast imaged again a year earlier (both views, another StudyInstanceUID), its
        StudyDate as the standard writes it, or as ACR-NEMA and DICOM before 1993 did (PS3.5 6.2)."""
        _, row = kept_row(tiny_cohort, capsys)
        prior = {}
        for view in ("cc", "mlo"):
            path = image_path(tiny_cohort, row, view)
            copy = path.with_name("prior_" + path.name)
            shutil.copy(path, copy)

            def earlier(ds):
                ds.StudyInstanceUID, ds.StudyDate = "1.2.3.4.2024", request.param
                ds.SOPInstanceUID = "1.2.3.4.2024." + ("1" if ds.ViewPosition == "CC" else "2")

            edit_dicom(copy, earlier)
            prior[view] = str(copy)
        return tiny_cohort, row, prior

    @pytest.mark.parametrize("policy", ["latest", "earliest"])
    def test_one_exam_per_breast_by_policy_and_the_other_written_down(self, two_exams, capsys, policy):
        cohort, row, prior = two_exams
        edit_config(cohort, images={"exam_policy": policy})
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        assert code == 0, out
        breast = truth(cohort).loc[row, ["patient_id", "side"]].tolist()
        kept = manifest[(manifest["patient_id"] == breast[0]) & (manifest["side"] == breast[1])].iloc[0]
        assert kept["cc_exam_date"] == kept["mlo_exam_date"] == (20250101 if policy == "latest" else 20240101)
        assert (kept["cc_path"] == prior["cc"]) == (policy == "earliest")
        other = exclusions[exclusions["category"] == "other exam"]
        assert len(other) == 2 and f"(images.exam_policy = '{policy}')" in other.iloc[0]["reason"]

    # as exports write it (a US one month first), as a spreadsheet writes a date-time cell, and as it shows
    # a date whose cell lost its date format (its day number)
    @pytest.mark.parametrize(
        "written",
        ["2024-06-30", "30.06.2024", "06/30/2024", "2024-06-30 00:00:00", "30/06/2024 14:05", "45473"],
    )
    def test_the_latest_exam_before_the_label_date(self, two_exams, capsys, written):
        cohort, row, prior = two_exams
        labels = pd.read_csv(cohort / "labels.csv", dtype=str)
        labels["surgery_date"] = written  # after the prior exam, before the later one
        labels.to_csv(cohort / "labels.csv", index=False)
        edit_config(
            cohort, images={"exam_policy": "before_label_date"}, labels={"date_column": "surgery_date"}
        )
        code, out, manifest, exclusions = run_ingest(cohort, capsys)
        assert code == 0, out
        assert list(manifest["cc_path"]) == [prior["cc"]]  # every other breast's one exam is after the date
        assert manifest["label_date"].astype(str).tolist() == ["20240630"]  # kept for split.date = "label"
        late = exclusions[exclusions["category"] == "no exam before the label date"]
        assert "no dated exam on or before 20240630" in late.iloc[0]["reason"]
        assert len(set(zip(late["patient_id"], late["side"]))) == len(truth(cohort)) - 1  # all the others

    def test_slashed_dates_that_could_be_either_order_stop_until_the_order_is_set(self, two_exams, capsys):
        cohort, _, prior = two_exams
        labels = pd.read_csv(cohort / "labels.csv", dtype=str)
        labels["surgery_date"] = "06/05/2024"  # 6 May or June 5: either lies between the two exams
        labels.to_csv(cohort / "labels.csv", index=False)
        edit_config(
            cohort, images={"exam_policy": "before_label_date"}, labels={"date_column": "surgery_date"}
        )
        code, out, _, _ = run_ingest(cohort, capsys)
        assert code == 2 and "labels.csv, column 'surgery_date': in every slashed date (06/05/2024" in out
        assert "set labels.date_order" in out
        for order, read in (("day_first", "20240506"), ("month_first", "20240605")):
            edit_config(cohort, labels={"date_order": order})
            code, out, manifest, _ = run_ingest(cohort, capsys)
            assert code == 0, out
            assert list(manifest["cc_path"]) == [prior["cc"]]
            assert manifest["label_date"].astype(str).tolist() == [read]
        labels.loc[:1, "surgery_date"] = ["25/03/2024", "03/25/2024"]  # two orders in one column
        labels.to_csv(cohort / "labels.csv", index=False)
        edit_config(cohort, labels={"date_order": "auto"})
        code, out, _, _ = run_ingest(cohort, capsys)
        assert code == 2 and "25/03/2024 puts the day first, 03/25/2024 the month" in out

    def test_one_patient_id_for_every_exam_is_doubted(self, tiny_cohort, capsys):
        """De-identification that wrote one ID into every image: each breast is then every breast."""
        for path in (tiny_cohort / "dicom").rglob("*.dcm"):
            edit_dicom(path, lambda ds: setattr(ds, "PatientID", "ANONYMOUS"))
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "1 warning\n" in out
        exams = len({pydicom.dcmread(p).StudyInstanceUID for p in (tiny_cohort / "dicom").rglob("*.dcm")})
        assert f"patient ID 'ANONYMOUS' holds {exams} of the export's {exams} exams" in out
        assert "images.patient_pattern" in out
        assert "kept the exam of 20250101 (another exam of that day)" in out

    def test_before_label_date_without_a_date_column_is_a_config_error(self, tiny_cohort, capsys):
        edit_config(tiny_cohort, images={"exam_policy": "before_label_date"})
        code, out, _, _ = run_ingest(tiny_cohort, capsys)
        assert code == 2 and "needs labels.date_column" in out


class TestCluster:
    def test_headers_read_on_a_local_dask_cluster_give_the_same_manifest_and_exclusions(
        self, tiny_cohort, capsys, monkeypatch
    ):
        (tiny_cohort / "dicom" / "README.txt").write_text("exported by PACS")  # one problem among the files
        path = image_path(tiny_cohort, 1, "cc")
        path.write_bytes(path.read_bytes()[:300])
        _, _, here, left_out = run_ingest(tiny_cohort, capsys)
        monkeypatch.setattr("mammofuse.cohort.images.SCAN_CHUNK", 7)  # several chunks, in order
        code, _, there, left_out_there = run_ingest(tiny_cohort, capsys, "--cluster", "local:2")
        assert code == 0 and len(left_out) >= 2
        pd.testing.assert_frame_equal(here, there)
        pd.testing.assert_frame_equal(left_out, left_out_there)
