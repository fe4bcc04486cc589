import os
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from mammofuse.cli import main
from mammofuse.cohort import synth
from mammofuse.cohort.synth import SynthOptions, synthesize
from mammofuse.config import PreprocessConfig, load_config
from mammofuse.domain import VIEWS, Side
from mammofuse.imaging import preprocess
from mammofuse.imaging.cache import Cache, display_path, load_entry, read_display
from mammofuse.imaging.dicomfile import read_reduced, reducible
from mammofuse.imaging.preprocess import preprocess_cohort, preprocess_file
from mammofuse.problems import Problems
from tests.cohort.helpers import edit_config

SMALL = PreprocessConfig(size=(64, 32), workers=1)


def ingested(cohort: Path) -> tuple[pd.DataFrame, Path]:
    work = cohort / "work"
    assert main(["ingest", str(cohort / "cohort.toml"), "--out", str(work)]) == 0
    return pd.read_csv(work / "manifest.csv", dtype={"patient_id": str}), work


class TestCompressedFiles:
    @pytest.mark.parametrize("compression", ["rle", "jpeg2000"])
    def test_every_synthetic_compression_decodes_to_the_same_array(self, tmp_path, compression):
        opts = SynthOptions(breasts=2, seed=7, image_size=(96, 80), workers=1)
        synthesize(tmp_path / "none", opts)
        synthesize(tmp_path / compression, SynthOptions(**{**opts.__dict__, "compression": compression}))
        plain = sorted((tmp_path / "none" / "dicom").rglob("*.dcm"))
        packed = sorted((tmp_path / compression / "dicom").rglob("*.dcm"))
        for a, b in zip(plain, packed):
            side = Side(pydicom.dcmread(a, stop_before_pixels=True).ImageLaterality)
            np.testing.assert_array_equal(
                preprocess_file(a, side, SMALL)[0], preprocess_file(b, side, SMALL)[0]
            )


class TestJpeg2000AtTheResolutionNeeded:
    SIZE = (128, 64)  # a 1024 x 832 image's breast needs 1/4 of its pixels a side, or fewer

    @pytest.fixture(scope="class")
    def files(self, tmp_path_factory) -> tuple[list[Path], list[Path]]:
        """The same two breasts' images, uncompressed and in JPEG 2000."""
        root = tmp_path_factory.mktemp("j2k")
        opts = SynthOptions(breasts=2, seed=7, image_size=(1024, 832), workers=1)
        synthesize(root / "none", opts)
        synthesize(root / "j2k", SynthOptions(**{**opts.__dict__, "compression": "jpeg2000"}))
        plain, packed = ((root / name / "dicom").rglob("*.dcm") for name in ("none", "j2k"))
        return sorted(plain), sorted(packed)

    def test_a_level_holds_the_stored_values_at_its_size(self, files):
        ds = pydicom.dcmread(files[1][0])
        assert reducible(ds) and not reducible(pydicom.dcmread(files[0][0]))
        np.testing.assert_array_equal(read_reduced(ds, 0), ds.pixel_array)  # 12 bits, as stored
        assert read_reduced(ds, 2).shape == (256, 208)

    def test_reduced_finds_the_breast_at_its_place_without_decoding_every_pixel(self, files, monkeypatch):
        full, reduced = PreprocessConfig(size=self.SIZE), PreprocessConfig(size=self.SIZE, jpeg2000="reduced")
        plain, packed = files
        made = [preprocess_file(path, None, full) for path in packed]
        as_before = [preprocess_file(path, None, reduced) for path in plain]  # uncompressed: as ever
        for a, b in zip(made, as_before):
            np.testing.assert_array_equal(a.image, b.image)
        monkeypatch.setattr(preprocess, "read_image", None)  # no full decode from here on
        for path, a in zip(packed, made):
            b = preprocess_file(path, None, reduced)
            assert b.geometry.original_shape == a.geometry.original_shape == (1024, 832)
            assert b.geometry.scale == pytest.approx(a.geometry.scale, rel=0.05)
            np.testing.assert_allclose(b.geometry.box, a.geometry.box, atol=30)  # original pixels
            assert np.corrcoef(a.image.ravel(), b.image.ravel())[0, 1] > 0.95
            assert b.display.shape == a.display.shape and b.laterality_disagrees == a.laterality_disagrees

    def test_the_setting_keys_the_cache_only_where_it_changes_the_arrays(self):
        as_before, reduced = PreprocessConfig().settings(), PreprocessConfig(jpeg2000="reduced").settings()
        assert "jpeg2000" not in as_before and reduced.pop("jpeg2000") == "reduced" and reduced == as_before


class TestAHeaderWithoutItsPolarity:
    """A header without PhotometricInterpretation was read as MONOCHROME2: a MONOCHROME1 image came out as its
    negative (white background, dark breast), which the crop and the orientation then took for the breast.
    The pixels say which way round an image is: its background is its darkest part."""

    @pytest.mark.parametrize(
        ("site", "compression"), [("a", "none"), ("a", "rle"), ("b", "none")]
    )  # b: padded outside its collimated field, other windows
    @pytest.mark.parametrize("voi", ["window", "none"])
    def test_each_image_reads_as_with_its_header_s_polarity(self, tmp_path, site, compression, voi):
        opts = SynthOptions(breasts=10, seed=3, image_size=(160, 128), workers=1, site=site)
        synthesize(tmp_path, SynthOptions(**{**opts.__dict__, "compression": compression}))
        cfg = PreprocessConfig(size=(64, 32), workers=1, voi=voi)
        said = set()
        for path in sorted((tmp_path / "dicom").rglob("*.dcm")):
            ds = pydicom.dcmread(path)
            side, photometric = Side(ds.ImageLaterality), ds.PhotometricInterpretation
            expected = preprocess_file(path, side, cfg)
            del ds.PhotometricInterpretation
            ds.save_as(path)
            got = preprocess_file(path, side, cfg)
            assert got.photometric_from_pixels == photometric, path
            np.testing.assert_array_equal(got.image, expected.image)
            assert expected.photometric_from_pixels == ""  # the header said it
            said.add(photometric)
        assert said == {"MONOCHROME1", "MONOCHROME2"}

    def test_the_guess_is_written_down_with_the_breast_kept(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        path = Path(manifest.loc[0, "mlo_path"])
        ds = pydicom.dcmread(path)
        photometric = ds.PhotometricInterpretation
        del ds.PhotometricInterpretation
        ds.save_as(path)
        problems = Problems()
        table, _, _ = preprocess_cohort(manifest, SMALL, work / "cache", problems)
        assert len(table) == len(manifest)
        [warned] = problems.items
        assert (warned.category, warned.path, warned.severity) == (
            "polarity from the pixels",
            str(path),
            "warning",
        )
        assert f"no PhotometricInterpretation in the header: read as {photometric}" in warned.reason


class TestPaddingPixels:
    def test_a_padded_export_is_cropped_as_its_unpadded_twin(self, tmp_path, monkeypatch):
        """Site B pads outside its collimated field with 0, which MONOCHROME1 shows white: read as padding,
        the breast's crop is the one the same breast gets without the padding (before: the whole image)."""
        opts = SynthOptions(breasts=8, seed=5, image_size=(192, 156), workers=1, site="b")
        synthesize(tmp_path / "b", opts)
        with monkeypatch.context() as m:
            m.setattr(synth, "_collimate", lambda stored, side: stored)
            synthesize(tmp_path / "a", opts)
        plain = sorted((tmp_path / "a" / "dicom").rglob("*.dcm"))
        padded = sorted((tmp_path / "b" / "dicom").rglob("*.dcm"))
        monochrome1 = 0
        for a, b in zip(plain, padded, strict=True):
            header = pydicom.dcmread(b, stop_before_pixels=True)
            assert header.PixelPaddingValue == 0
            monochrome1 += header.PhotometricInterpretation == "MONOCHROME1"
            side = Side(header.ImageLaterality)
            box_a, box_b = (preprocess_file(f, side, SMALL)[1].box for f in (a, b))
            np.testing.assert_allclose(box_b, box_a, atol=0.03 * 192)
        assert monochrome1 >= 3  # the case that went wrong is among them


class TestCache:
    def test_a_rerun_on_an_unchanged_cohort_decodes_nothing(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        _, first, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        table, again, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        assert first.decoded == 2 * len(manifest) and again.decoded == 0 and again.reused == 2 * len(manifest)
        assert load_entry(table.loc[0, "cc_cache"]).shape == (64, 32)

    def test_each_entry_keeps_a_display_copy_that_figures_use_without_decoding(
        self, tiny_cohort, monkeypatch
    ):
        """The overlays draw each map on the whole original image too: preprocessing, which decodes it
        anyway, keeps a small copy beside the entry (black outside the breast), so that a figure decodes
        nothing; an entry made before copies were kept is decoded again, to the same image."""
        from mammofuse.explain import explain

        manifest, work = ingested(tiny_cohort)
        table, _, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        row = table.iloc[0]
        case = explain.CaseInput.of(
            {v: row[v.column("cache")] for v in VIEWS}, [], {v: row[v.column("path")] for v in VIEWS}
        )

        def no_decoding(*args):
            raise AssertionError("decoded again")

        with monkeypatch.context() as patched:
            patched.setattr(explain, "display_file", no_decoding)
            kept = {v: explain.original_image(case, v, voi=True) for v in VIEWS}
        for view in VIEWS:
            original = pydicom.dcmread(row[view.column("path")])
            assert kept[view].shape == (original.Rows, original.Columns)  # small originals: not shrunk
            assert kept[view].dtype == np.float32 and 0.2 < kept[view].max() <= 1.0
            assert (kept[view] == 0).mean() > 0.2  # the background
            display_path(row[view.column("cache")]).unlink()  # as a cache made before copies were kept
            np.testing.assert_array_equal(explain.original_image(case, view, voi=True), kept[view])
        _, again, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        assert again.decoded == 0  # a rerun does not decode an entry again for its copy

    def test_a_changed_setting_builds_new_entries(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        table_a, _, cache_a = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        other = SMALL.model_copy(update={"margin": 0.1})
        table_b, stats, cache_b = preprocess_cohort(manifest, other, work / "cache", Problems())
        assert stats.decoded == 2 * len(manifest) and cache_a.dir != cache_b.dir
        assert not set(table_a["cc_cache"]) & set(table_b["cc_cache"])

    def test_images_enlarged_beyond_their_stored_pixels_are_counted_and_said(self, tiny_cohort, capsys):
        manifest, work = ingested(tiny_cohort)
        _, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        assert stats.enlarged == 0 and stats.enlarged_text((64, 32)) is None  # smaller than the export
        large = SMALL.model_copy(update={"size": (640, 320)})  # some 8x the tiny cohort's pixels
        _, stats, _ = preprocess_cohort(manifest, large, work / "cache", Problems())
        assert stats.enlarged == 2 * len(manifest) and stats.largest_scale > 5
        edit_config(tiny_cohort, preprocess={"size": [640, 320], "workers": 1})
        assert main(["preprocess", str(tiny_cohort / "cohort.toml"), "--work", str(work)]) == 0
        out = " ".join(capsys.readouterr().out.split())
        assert f"{2 * len(manifest)} images were enlarged to fit 640x320 (up to" in out
        assert "no finer detail than the export holds" in out

    def test_workers_do_not_change_the_settings_key(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        _, stats, _ = preprocess_cohort(
            manifest, SMALL.model_copy(update={"workers": 2}), work / "cache", Problems()
        )
        assert stats.decoded == 0

    def test_a_damaged_entry_is_detected_and_rebuilt(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        table, _, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        good = load_entry(table.loc[0, "cc_cache"])
        entry = Path(table.loc[0, "cc_cache"])
        data = bytearray(entry.read_bytes())
        data[-50:] = b"\xff" * 50
        entry.write_bytes(bytes(data))
        Path(table.loc[1, "mlo_cache"]).write_bytes(b"junk")
        _, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        assert stats.decoded == 1 and stats.rebuilt == 1  # a wrong size is always caught
        table, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems(), verify=True)
        assert stats.decoded == 1 and stats.rebuilt == 1  # flipped bytes are caught by the checksum
        np.testing.assert_array_equal(load_entry(table.loc[0, "cc_cache"]), good)
        shown = display_path(table.loc[2, "cc_cache"])  # the figures' copy of an image, damaged
        data = bytearray(shown.read_bytes())
        data[len(data) // 2] ^= 0xFF
        shown.write_bytes(bytes(data))
        assert read_display(table.loc[2, "cc_cache"]) is None
        _, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems(), verify=True)
        assert stats.decoded == 1 and stats.rebuilt == 1  # made again, its copy too
        assert read_display(table.loc[2, "cc_cache"]) is not None

    def test_a_ctrl_c_while_an_entry_is_read_is_not_turned_into_another_error(self, tiny_cohort, monkeypatch):
        """np.load checks isinstance(file, os.PathLike) inside np.fromfile and, when a KeyboardInterrupt is
        raised there (from the ABC's Python hook), raises a TypeError instead: a Ctrl-C during a batch then
        stopped training with a traceback. Entries are read without that check."""
        manifest, work = ingested(tiny_cohort)
        table, _, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        entry = table.loc[0, "cc_cache"]

        def interrupted(cls, subclass):
            raise KeyboardInterrupt

        with monkeypatch.context() as patch:
            patch.setattr(os.PathLike, "__subclasshook__", classmethod(interrupted))
            os.PathLike._abc_caches_clear()  # the hook runs on the next isinstance check
            try:
                assert load_entry(entry).shape == (64, 32)  # the hook never runs: nothing to interrupt
            finally:
                os.PathLike._abc_caches_clear()

    def test_a_changed_file_gets_a_new_entry(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        path = Path(manifest.loc[0, "cc_path"])
        ds = pydicom.dcmread(path)
        ds.save_as(path)  # rewritten: new modification time
        _, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        assert stats.decoded == 1

    def test_the_index_records_how_to_map_back(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        _, _, cache = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        reloaded = Cache(work / "cache", SMALL.settings())
        record = reloaded.index[cache.key(manifest.loc[0, "cc_path"])]
        assert record["geometry"]["original_shape"] == [96, 80] and record["shape"] == [64, 32]


class TestBadPixels:
    def test_undecodable_pixels_leave_the_breast_out_and_the_rest_go_on(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        path = Path(manifest.loc[0, "mlo_path"])
        ds = pydicom.dcmread(path)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"  # claims JPEG 2000, holds raw bytes
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        ds.save_as(path)
        problems = Problems()
        table, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", problems)
        assert stats.failed == 1 and len(table) == len(manifest) - 1
        [problem] = problems.items
        assert problem.category == "undecodable pixels" and str(path) in problem.reason
        partner = manifest.loc[0, "cc_path"]  # decoded, but of no use alone: written down, not lost
        assert problem.reason.endswith(f"other view is not used without it: CC image {partner}")

    def test_a_breast_whose_two_images_fail_lists_each_with_its_own_error(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        paths = [Path(manifest.loc[0, column]) for column in ("cc_path", "mlo_path")]
        paths[0].write_bytes(paths[0].read_bytes()[:-500])  # pixels cut short
        ds = pydicom.dcmread(paths[1])
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        ds.save_as(paths[1])
        problems = Problems()
        table, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", problems)
        assert stats.failed == 2 and len(table) == len(manifest) - 1
        assert [p.path for p in problems.items] == [str(p) for p in paths]
        assert problems.items[0].reason != problems.items[1].reason
        assert not any("not used" in p.reason for p in problems.items)

    def test_a_blank_image_leaves_its_breast_out_with_that_reason(self, tiny_cohort):
        """An export's blank image (every pixel one value) decodes, and was kept: the crop then took the whole
        image for the breast, and the model trained on nothing."""
        manifest, work = ingested(tiny_cohort)
        path = Path(manifest.loc[0, "cc_path"])
        ds = pydicom.dcmread(path)
        ds.PixelData = np.zeros_like(ds.pixel_array).tobytes()
        ds.save_as(path)
        problems = Problems()
        table, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", problems)
        assert stats.failed == 1 and len(table) == len(manifest) - 1
        [left_out] = problems.items
        assert (left_out.category, left_out.path) == ("blank image", str(path))
        assert left_out.reason.startswith(f"{path}: every pixel shows as brightness ")
        assert left_out.reason.endswith(
            f"the breast's other view is not used without it: MLO image {manifest.loc[0, 'mlo_path']}"
        )

    def test_a_side_tag_that_contradicts_the_pixels_is_oriented_by_the_pixels_and_reported(self, tiny_cohort):
        manifest, work = ingested(tiny_cohort)
        path = Path(manifest.loc[0, "cc_path"])
        ds = pydicom.dcmread(path)
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
        ds.save_as(path)
        problems = Problems()
        table, stats, _ = preprocess_cohort(manifest, SMALL, work / "cache", problems)
        assert len(table) == len(manifest)
        assert [(p.category, p.path, p.severity) for p in problems.items] == [
            ("laterality disagrees with pixels", str(path), "warning")  # kept: not an exclusion
        ]
        img = load_entry(table.loc[0, "cc_cache"])
        assert img[:, :4].mean() > img[:, -4:].mean()  # chest wall still on the left

    def test_warnings_are_shown_and_written_apart_from_exclusions(self, tiny_cohort, capsys):
        manifest, work = ingested(tiny_cohort)
        flipped = Path(manifest.loc[0, "cc_path"])
        ds = pydicom.dcmread(flipped)
        ds.PixelData = np.ascontiguousarray(ds.pixel_array[:, ::-1]).tobytes()
        ds.save_as(flipped)
        broken = Path(manifest.loc[1, "mlo_path"])
        ds = pydicom.dcmread(broken)
        ds.file_meta.TransferSyntaxUID = "1.2.840.10008.1.2.4.90"
        ds.PixelData = pydicom.encaps.encapsulate([b"\x00" * 64])
        ds.save_as(broken)
        capsys.readouterr()
        assert main(["preprocess", str(tiny_cohort / "cohort.toml")]) == 0
        out = capsys.readouterr().out
        left_out, warned = out.index("left out: reason"), out.index("kept, with a warning")
        assert out.index("undecodable pixels") < warned < out.index("laterality disagrees with pixels")
        assert left_out < warned
        written = pd.read_csv(work / "preprocess_problems.csv").set_index("category")["severity"]
        assert written.to_dict() == {
            "undecodable pixels": "excluded",
            "laterality disagrees with pixels": "warning",
        }


class TestCommands:
    def test_preprocess_and_split_commands_write_their_files(self, tiny_cohort, capsys):
        _, work = ingested(tiny_cohort)
        config = str(tiny_cohort / "cohort.toml")
        argv = ["preprocess", config, "--work", str(work), "--preview", "2", "--workers", "1"]
        assert main(argv) == 0
        first = capsys.readouterr().out
        assert main(argv) == 0 and main(["split", config, "--work", str(work)]) == 0
        second = capsys.readouterr().out
        table = pd.read_csv(work / "preprocessed.csv")
        images = 2 * len(table)
        assert f"{images} images: {images} decoded" in first
        assert f"{images} images: 0 decoded (0 damaged entries rebuilt), {images} reused" in second
        assert (work / "preview.png").stat().st_size > 1000
        splits = pd.read_csv(work / "splits.csv")
        assert set(splits["split"]) == {"train", "val", "test"} and len(splits) == len(table)
        size = tuple(load_config(tiny_cohort / "cohort.toml").preprocess.size)
        cached = table["cc_cache"].tolist() + table["mlo_cache"].tolist()
        assert all(load_entry(p).shape == size for p in cached)


class TestIndexSaves:
    def test_concurrent_index_saves_never_collide(self, tmp_path):
        from concurrent.futures import ThreadPoolExecutor

        caches = [Cache(tmp_path, {"mode": "breast"}) for _ in range(8)]
        for i, cache in enumerate(caches):
            cache.record(f"k{i}", {"bytes": i})
        with ThreadPoolExecutor(8) as pool:
            list(pool.map(lambda c: [c.save_index() for _ in range(40)], caches))
        assert len(Cache(tmp_path, {"mode": "breast"}).index) == 1  # one whole index, whoever saved last
        assert not list(tmp_path.rglob("*.tmp"))

    def test_temporary_files_of_a_dead_writer_are_removed_and_a_live_one_s_kept(self, tmp_path):
        import os

        cache = Cache(tmp_path, {"mode": "breast"})
        (cache.dir / "ab").mkdir(parents=True)
        dead = [  # no such process: an entry, its display copy and the index, as `replaced` names them
            cache.dir / "ab" / ".abc.npy.999999999-1.tmp",
            cache.dir / "ab" / ".abc.png.999999999-1.tmp",
            cache.dir / ".index.json.999999999-1.tmp",
            cache.dir / "ab" / "abc.tmp999999999.npy",  # and as versions before 2026-11-29 did
            cache.dir / "ab" / "abc.tmp999999999.png",
            cache.dir / ".index.json.999999999.140000000000000.tmp",
            cache.dir / "ab" / ".abe.npy.99999999999-1.tmp",  # digits no process id can be: no process
        ]
        live = [
            cache.dir / "ab" / f".abd.npy.{os.getpid()}-1.tmp",
            cache.dir / "ab" / f"abd.tmp{os.getpid()}.npy",
        ]
        for path in dead + live:
            path.write_bytes(b"half")
        assert cache.remove_leftovers() == len(dead)
        assert not any(p.exists() for p in dead) and all(p.exists() for p in live)


class TestChecksumOnRead:
    def test_training_refuses_an_array_damaged_after_preprocessing(self, ready, capsys):
        from mammofuse.cli import main

        table = pd.read_csv(ready / "work" / "preprocessed.csv", dtype={"patient_id": str})
        splits = pd.read_csv(ready / "work" / "splits.csv", dtype={"patient_id": str})
        train = table.merge(splits[splits["split"] == "train"], on=["patient_id", "side"])
        cached = Path(train["cc_cache"].iloc[0])  # in the fixture's master copy: the same entry in this one
        entry = ready / "work" / "cache" / cached.relative_to(cached.parents[2])
        data = bytearray(entry.read_bytes())
        data[-100] ^= 0x10  # one bit, same size: only the checksum sees it
        entry.write_bytes(bytes(data))
        config, preset = str(ready / "cohort.toml"), str(ready.parent / "fast.toml")
        assert main(["train", config, "--preset", preset]) == 2
        out = capsys.readouterr().out
        assert f"{entry}: the cached array differs from what preprocessing wrote" in out
        assert "It is removed: run the command again" in out and "Traceback" not in out
        assert not entry.exists()  # so that the rerun makes it again, whichever command reads it
        assert main(["train", config, "--preset", preset]) == 0
        assert "1 images decoded into" in " ".join(capsys.readouterr().out.split())
        data = bytearray(entry.read_bytes())
        data[-100] ^= 0x10
        entry.write_bytes(bytes(data))
        assert main(["preprocess", config, "--verify"]) == 0  # or found before any command reads it
        assert "1 damaged entries rebuilt" in capsys.readouterr().out

    def test_an_array_its_index_does_not_list_is_named_with_the_way_to_rebuild_it(self, tiny_cohort):
        from mammofuse.imaging.cache import DamagedEntry

        manifest, work = ingested(tiny_cohort)
        table, _, cache = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        cache.index_path.write_text("{", encoding="utf-8")  # cut short by another tool
        with pytest.raises(DamagedEntry, match=r"does not list it .*`mammofuse preprocess` rebuilds"):
            load_entry(table.loc[0, "cc_cache"])


class TestPixelSpacing:
    def test_an_image_without_a_spacing_is_fitted_and_warned_about(self, tiny_cohort, capsys):
        manifest, work = ingested(tiny_cohort)
        path = Path(manifest.loc[0, "cc_path"])
        ds = pydicom.dcmread(path)
        del ds.ImagerPixelSpacing
        ds.save_as(path)
        edit_config(tiny_cohort, preprocess={"spacing_mm": 2.0})
        assert main(["preprocess", str(tiny_cohort / "cohort.toml")]) == 0
        written = pd.read_csv(work / "preprocess_problems.csv")
        assert written[["category", "path", "severity"]].values.tolist() == [
            ["no pixel spacing", str(path), "warning"]
        ]
        assert "instead of resampled to 2 mm per pixel" in capsys.readouterr().out


class TestCluster:
    def test_a_local_dask_cluster_builds_the_same_cache_and_a_rerun_reuses_it(self, tiny_cohort, tmp_path):
        manifest, work = ingested(tiny_cohort)
        here, _, _ = preprocess_cohort(manifest, SMALL, tmp_path / "here", Problems())
        config, elsewhere = str(tiny_cohort / "cohort.toml"), work / "cache"
        edit_config(tiny_cohort, preprocess={"size": [64, 32], "cache_dir": str(elsewhere)})
        assert main(["preprocess", config, "--work", str(work), "--cluster", "local:2"]) == 0
        table = pd.read_csv(work / "preprocessed.csv", dtype={"patient_id": str})
        assert len(table) == len(here)
        for a, b in zip(
            here["cc_cache"].tolist() + here["mlo_cache"].tolist(),
            table["cc_cache"].tolist() + table["mlo_cache"].tolist(),
        ):
            np.testing.assert_array_equal(load_entry(a), load_entry(b))
        _, again, _ = preprocess_cohort(manifest, SMALL, elsewhere, Problems())
        assert again.decoded == 0  # the cluster's entries are this machine's cache

    def test_a_bad_cluster_address_is_refused_by_the_command_line(self, tiny_cohort, capsys):
        with pytest.raises(SystemExit):
            main(["preprocess", str(tiny_cohort / "cohort.toml"), "--cluster", "spark://x"])
        assert "expected dask://HOST:PORT or local:N" in capsys.readouterr().err

    def test_the_preview_shows_the_images_a_warning_names_first(self, tiny_cohort):
        from mammofuse.imaging.preview import contact_sheet

        manifest, work = ingested(tiny_cohort)
        table, _, _ = preprocess_cohort(manifest, SMALL, work / "cache", Problems())
        last = table.iloc[-1]
        fig = contact_sheet(table, 2, {last["mlo_path"]: "polarity from the pixels"})
        titles = [ax.get_title() for ax in fig.axes if ax.get_title()]
        assert len(titles) == 4  # two breasts, two views each: the flagged one among them
        assert (
            f"row {len(table)} {last['side']} MLO  label {last['label']}\npolarity from the pixels" in titles
        )
        assert (
            f"row {len(table)} {last['side']} CC  label {last['label']}" in titles
        )  # its other view: no note
