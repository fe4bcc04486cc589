import hashlib
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammofuse.cohort.synth import EXTRAS, SynthOptions, synthesize
from mammofuse.config import load_config
from mammofuse.domain import VIEWS, Side
from mammofuse.problems import DataError, Problems
from tests.cohort.helpers import run_ingest


def dicoms(cohort: Path) -> list[Path]:
    return sorted((cohort / "dicom").rglob("*.dcm"))


class TestWrittenAgain:
    def test_a_cohort_written_over_another_replaces_it_and_a_foreign_file_stops_it(self, tmp_path):
        out = tmp_path / "cohort"
        synthesize(out, SynthOptions(breasts=6, seed=1, image_size=(64, 52), workers=1))
        synthesize(out, SynthOptions(breasts=4, seed=2, image_size=(64, 52), workers=1))
        truth = pd.read_csv(out / "truth.csv")
        written = [p.relative_to(out).as_posix() for p in dicoms(out)]
        assert written == sorted([*truth["cc_path"], *truth["mlo_path"]])  # nothing of the first is left
        foreign = out / "dicom" / "S00001" / "notes.txt"
        foreign.write_text("a reader's notes")
        with pytest.raises(DataError, match=r"notes.txt: not written by `mammofuse synth`"):
            synthesize(out, SynthOptions(breasts=4, seed=3, image_size=(64, 52), workers=1))
        assert foreign.is_file() and len(dicoms(out)) == 8  # nothing removed


class TestExtras:
    def test_an_export_with_the_units_other_images_ingests_to_the_same_breasts_each_extra_left_out(
        self, tmp_path, capsys
    ):
        """Half the breasts' exports also hold their raw images, synthetic 2Ds and a spot CC: the cohort is
        the same, and ingest keeps the same images of the same breasts, listing each extra with its reason."""
        options = SynthOptions(breasts=16, seed=5, image_size=(32, 26), workers=1, na_fraction=0.0)
        synthesize(tmp_path / "clean", options)
        counts = synthesize(tmp_path / "export", SynthOptions(**{**options.__dict__, "extras": 0.5}))
        breasts = counts["extra images"] // len(EXTRAS)  # whose export holds the extras
        assert counts["extra images"] == len(EXTRAS) * breasts and 0 < breasts < 16
        assert len(dicoms(tmp_path / "export")) == 32 + len(EXTRAS) * breasts
        for name in ("labels.csv", "clinical.csv", "truth.csv"):
            assert (tmp_path / "export" / name).read_text() == (tmp_path / "clean" / name).read_text()
        kept = {}
        for name in ("clean", "export"):
            code, _, manifest, exclusions = run_ingest(tmp_path / name, capsys)
            assert code == 0
            for column in ("cc_path", "mlo_path"):
                manifest[column] = [Path(path).relative_to(tmp_path / name) for path in manifest[column]]
            kept[name] = manifest[["patient_id", "side", "cc_path", "mlo_path"]]
        pd.testing.assert_frame_equal(kept["clean"], kept["export"])
        left_out = exclusions["category"].value_counts().to_dict()
        expected = {"for processing": 2, "synthetic 2D": 2, "additional view": 1}  # per breast (EXTRAS)
        assert left_out == {category: n * breasts for category, n in expected.items()}


class TestExamDates:
    def test_exams_follow_the_patient_numbers_over_the_years_and_change_nothing_else(self, tmp_path):
        options = SynthOptions(breasts=12, seed=4, image_size=(32, 26), workers=1, na_fraction=0.0)
        synthesize(tmp_path / "spread", SynthOptions(**{**options.__dict__, "years": 3.0}))
        synthesize(tmp_path / "one-day", options)
        dates = {}
        for folder in ("spread", "one-day"):
            found = [pydicom.dcmread(f) for f in dicoms(tmp_path / folder)]
            dates[folder] = {(d.PatientID, d.ViewPosition): d.StudyDate for d in found}
            pixels = {(d.PatientID, d.ViewPosition): d.PixelData for d in found}
        assert set(dates["one-day"].values()) == {"20250101"}  # years = 0: as synth always wrote
        by_patient = sorted({pid: day for (pid, _), day in dates["spread"].items()}.items())
        assert [day for _, day in by_patient] == sorted(day for _, day in by_patient)
        assert by_patient[0][1] == "20220101" and by_patient[-1][1] == "20250101"
        again = {
            (d.PatientID, d.ViewPosition): d.PixelData
            for d in map(pydicom.dcmread, dicoms(tmp_path / "spread"))
        }
        assert again == pixels  # the same images
        for name in ("labels.csv", "clinical.csv", "truth.csv"):
            truth = pd.read_csv(tmp_path / "spread" / name).drop(
                columns=["cc_path", "mlo_path"], errors="ignore"
            )
            assert truth.equals(
                pd.read_csv(tmp_path / "one-day" / name).drop(
                    columns=["cc_path", "mlo_path"], errors="ignore"
                )
            )

    def test_a_scanner_change_images_the_later_exams_on_site_bs_scanner(self, tmp_path):
        options = SynthOptions(breasts=12, seed=4, image_size=(32, 26), workers=1, na_fraction=0.0, years=3.0)
        synthesize(tmp_path / "before", options)
        synthesize(tmp_path / "changed", SynthOptions(**{**options.__dict__, "scanner_change": "20240101"}))
        images = {}
        for folder in ("before", "changed"):
            found = map(pydicom.dcmread, dicoms(tmp_path / folder))
            images[folder] = {(d.PatientID, d.ViewPosition): d for d in found}
        later = 0
        for key, was in images["before"].items():
            now = images["changed"][key]
            if now.StudyDate >= "20240101":
                later += 1
                assert now.Manufacturer == "mammofuse synthetic B" and now.PixelData != was.PixelData
            else:
                assert now.Manufacturer == was.Manufacturer == "mammofuse synthetic"
                assert now.PixelData == was.PixelData
        assert 0 < later < len(images["before"])
        assert (tmp_path / "changed" / "clinical.csv").read_text() == (
            tmp_path / "before" / "clinical.csv"
        ).read_text()


class TestSynthesizedFiles:
    def test_writes_the_cohort_layout(self, tiny_cohort_master):
        for name in ("labels.csv", "clinical.csv", "truth.csv", "cohort.toml"):
            assert (tiny_cohort_master / name).is_file()
        assert len(dicoms(tiny_cohort_master)) == 2 * 16
        assert load_config(tiny_cohort_master / "cohort.toml").images.root == tiny_cohort_master / "dicom"

    def test_file_names_do_not_reveal_the_view(self, tiny_cohort_master):
        for path in dicoms(tiny_cohort_master):
            rel = path.relative_to(tiny_cohort_master / "dicom").as_posix()
            assert re.fullmatch(r"S\d{5}/IMG_[0-9a-f]{10}\.dcm", rel), rel

    def test_dicom_headers_are_varied_like_a_real_export(self, tiny_cohort_master):
        headers = [pydicom.dcmread(p) for p in dicoms(tiny_cohort_master)]
        assert {h.Modality for h in headers} == {"MG"}
        assert {h.PhotometricInterpretation for h in headers} == {"MONOCHROME1", "MONOCHROME2"}
        assert len({h.BitsStored for h in headers}) >= 2
        for h in headers:
            assert h.ImageLaterality in ("L", "R") and h.ViewPosition in ("CC", "MLO")
            assert h.pixel_array.max() < 2**h.BitsStored
            assert "WindowCenter" in h and "SOPInstanceUID" in h and "PatientName" in h

    def test_the_same_seed_gives_the_same_cohort(self, tmp_path, tiny_cohort_master):
        from tests.conftest import TINY

        synthesize(tmp_path / "again", TINY)

        def digest(root: Path) -> str:
            files = [*dicoms(root), root / "labels.csv", root / "clinical.csv", root / "truth.csv"]
            return hashlib.sha1(b"".join(f.read_bytes() for f in files)).hexdigest()

        assert digest(tmp_path / "again") == digest(tiny_cohort_master)

    @pytest.mark.parametrize("compression", ["rle", "jpeg2000"])
    def test_compressed_pixels_read_back_identical(self, tmp_path, compression):
        opts = SynthOptions(breasts=2, seed=5, image_size=(64, 48), workers=1)
        synthesize(tmp_path / "raw", opts)
        synthesize(tmp_path / "packed", SynthOptions(**{**opts.__dict__, "compression": compression}))
        for raw, packed in zip(dicoms(tmp_path / "raw"), dicoms(tmp_path / "packed")):
            ds = pydicom.dcmread(packed)
            assert ds.file_meta.TransferSyntaxUID.is_compressed
            np.testing.assert_array_equal(ds.pixel_array, pydicom.dcmread(raw).pixel_array)


class TestPlantedSignal:
    def test_labels_follow_the_fraction_threshold_and_prevalence(self, tmp_path):
        synthesize(tmp_path, SynthOptions(breasts=400, seed=2, image_size=(32, 24), workers=1))
        truth, labels = pd.read_csv(tmp_path / "truth.csv"), pd.read_csv(tmp_path / "labels.csv")
        np.testing.assert_array_equal(truth["label"], (labels["invasive_fraction"] < 75).astype(int))
        assert 0.18 < truth["label"].mean() < 0.34
        # the generator's own probability separates the classes: the signal is there to learn
        from sklearn.metrics import roc_auc_score

        assert roc_auc_score(truth["label"], truth["p_true"]) > 0.75
        clinical = pd.read_csv(tmp_path / "clinical.csv")
        assert 0.05 < clinical.isna().any(axis=1).mean() < 0.16
        assert set(clinical["side"].dropna()) <= {"left", "right"}

    def test_lesion_sits_at_the_same_depth_in_both_views(self, tiny_cohort_master):
        truth = pd.read_csv(tiny_cohort_master / "truth.csv")
        width = 80
        depth_cc = np.where(truth["side"] == "L", truth["cc_x"], width - 1 - truth["cc_x"])
        depth_mlo = np.where(truth["side"] == "L", truth["mlo_x"], width - 1 - truth["mlo_x"])
        assert np.all(np.abs(depth_cc - depth_mlo) < 0.05 * width)

    def test_lesions_csv_marks_each_tumour_on_each_image_as_explain_reads_it(self, tiny_cohort_master):
        from mammofuse.explain.checks import Region, read_regions

        truth = pd.read_csv(tiny_cohort_master / "truth.csv", dtype={"patient_id": str})
        problems = Problems()
        regions = read_regions(tiny_cohort_master / "lesions.csv", problems)
        assert not problems.items and len(regions) == 2 * len(truth)
        for row in truth.itertuples():
            for view in VIEWS:
                x, y, r = (getattr(row, f"{view.value.lower()}_{c}") for c in ("x", "y", "radius"))
                assert regions[(row.patient_id, Side(row.side), view)] == [
                    Region(y - r, x - r, y + r, x + r, True)
                ]

    def test_more_extensive_calcification_spreads_wider(self, tmp_path):
        synthesize(tmp_path, SynthOptions(breasts=60, seed=4, image_size=(128, 104), workers=1))
        truth = pd.read_csv(tmp_path / "truth.csv")
        assert np.corrcoef(truth["calc_extent"], truth["cc_radius"])[0, 1] > 0.4
