from pathlib import Path

import numpy as np
import pytest

from mammofuse.imaging.decode import (
    PixelMeta,
    apply_voi,
    decode,
    fill_padding,
    lookup_table,
    meta_from_dataset,
    pixel_spacing,
    to_unit,
)


class TestBitsStoredScaling:
    def test_twelve_bit_maximum_is_white(self):
        assert to_unit(np.array([4095]), PixelMeta(bits_stored=12))[0] == pytest.approx(1.0)

    def test_sixteen_bit_range_is_not_assumed_for_twelve_bit_data(self):
        twelve = to_unit(np.array([2048]), PixelMeta(bits_stored=12))[0]
        sixteen = to_unit(np.array([2048]), PixelMeta(bits_stored=16))[0]
        assert twelve == pytest.approx(2048 / 4095, rel=1e-5)
        assert sixteen == pytest.approx(2048 / 65535, rel=1e-5)

    def test_bits_above_bits_stored_are_masked(self):
        meta = PixelMeta(bits_stored=12)
        overlay = np.array([[0x1000 | 100]], np.uint16)  # bit 12 set by an overlay
        assert decode(overlay, meta)[0, 0] == pytest.approx(100 / 4095, rel=1e-5)

    def test_signed_data_spans_its_own_range(self):
        meta = PixelMeta(bits_stored=12, signed=True)
        out = decode(np.array([-2048, 0, 2047], np.int16), meta)
        np.testing.assert_allclose(out, [0.0, 2048 / 4095, 1.0], rtol=1e-5)


class TestMonochrome1:
    def test_minimum_stored_value_is_white(self):
        meta = PixelMeta(bits_stored=12, photometric="MONOCHROME1")
        np.testing.assert_allclose(to_unit(np.array([0, 4095]), meta), [1.0, 0.0])

    def test_inversion_comes_after_the_window(self):
        meta = PixelMeta(bits_stored=12, photometric="MONOCHROME1", window_center=1000, window_width=200)
        # far below the window is black before inversion, so white after
        assert to_unit(np.array([10]), meta)[0] == pytest.approx(1.0)


class TestPadding:
    def test_padding_is_black_whatever_the_pipeline_makes_of_its_value(self):
        meta = PixelMeta(bits_stored=12, photometric="MONOCHROME1", padding=(0, 0))
        np.testing.assert_allclose(to_unit(np.array([0, 1, 4095]), meta), [0.0, 4094 / 4095, 0.0], atol=1e-6)
        np.testing.assert_allclose(decode(np.array([0, 1], np.uint16), meta), [0.0, 4094 / 4095], atol=1e-6)

    def test_a_range_limit_marks_every_value_between(self):
        meta = PixelMeta(bits_stored=12, photometric="MONOCHROME1", padding=(0, 9))
        assert not decode(np.arange(0, 10, dtype=np.uint16), meta).any()
        assert decode(np.array([10], np.uint16), meta)[0] > 0.99

    def test_headers_give_the_value_and_the_range_either_way_round(self, tiny_cohort_master):
        import pydicom

        ds = pydicom.dcmread(next((tiny_cohort_master / "dicom").rglob("*.dcm")))
        assert meta_from_dataset(ds).padding is None
        ds.add_new("PixelPaddingValue", "US", 4095)
        assert meta_from_dataset(ds).padding == (4095, 4095)
        ds.add_new("PixelPaddingRangeLimit", "US", 4000)  # MONOCHROME1's order: the value is the top
        assert meta_from_dataset(ds).padding == (4000, 4095)

    def test_padding_pixels_take_the_darkest_real_value_before_resizing(self):
        meta = PixelMeta(bits_stored=12, photometric="MONOCHROME1", padding=(0, 0))
        table, offset = lookup_table(meta)
        raw = np.array([[0, 0, 4000, 100]], np.uint16)
        np.testing.assert_array_equal(fill_padding(raw, meta, table, offset), [[4095, 4095, 4000, 100]])
        unpadded = np.array([[5, 4000]], np.uint16)
        assert fill_padding(unpadded, meta, table, offset) is unpadded

    def test_a_padding_value_outside_the_stored_range_marks_nothing(self):
        meta = PixelMeta(bits_stored=12, padding=(-20, -10))
        raw = np.array([[0, 7]], np.uint16)
        assert fill_padding(raw, meta, *lookup_table(meta)) is raw and decode(raw, meta)[0, 1] > 0


class TestWindow:
    def test_linear_window_clips_and_is_linear_inside(self):
        meta = PixelMeta(bits_stored=12, window_center=2000, window_width=1001)
        out = apply_voi(np.array([1000.0, 1499.5, 2000.0, 2500.5, 3000.0]), meta)
        np.testing.assert_allclose(out, [0.0, 0.0, 0.5005, 1.0, 1.0], atol=1e-3)

    def test_sigmoid_window_is_half_at_the_centre(self):
        meta = PixelMeta(bits_stored=12, window_center=2000, window_width=400, voi_function="SIGMOID")
        out = apply_voi(np.array([2000.0, 1000.0, 3000.0]), meta)
        assert out[0] == pytest.approx(0.5) and out[1] < 0.01 and out[2] > 0.99

    def test_voi_lut_table_takes_precedence_over_the_window(self):
        meta = PixelMeta(
            bits_stored=12,
            window_center=1,
            window_width=2,
            voi_lut=(0, 100, 255),
            voi_lut_first=10,
            voi_lut_bits=8,
        )
        np.testing.assert_allclose(apply_voi(np.array([0.0, 10, 11, 12, 99]), meta), [0, 0, 100 / 255, 1, 1])

    def test_no_window_means_full_range(self):
        assert apply_voi(np.array([1.0]), PixelMeta(bits_stored=12)) is None

    def test_window_can_be_turned_off(self):
        meta = PixelMeta(bits_stored=12, window_center=100, window_width=10)
        assert to_unit(np.array([4095]), meta, use_voi=False)[0] == pytest.approx(1.0)
        assert to_unit(np.array([200]), meta, use_voi=True)[0] == pytest.approx(1.0)


class TestModalityLut:
    def test_rescale_is_applied_before_the_window(self):
        meta = PixelMeta(bits_stored=12, slope=2.0, intercept=-100, window_center=300, window_width=101)
        # stored 200 -> 300 in modality units: the window's centre
        assert to_unit(np.array([200]), meta)[0] == pytest.approx(0.5, abs=0.01)

    def test_a_modality_lut_sequence_replaces_the_rescale(self, tiny_cohort_master):
        import pydicom
        from pydicom.dataset import Dataset

        ds = pydicom.dcmread(next((tiny_cohort_master / "dicom").rglob("*.dcm")))
        del ds.WindowCenter, ds.WindowWidth
        ds.PhotometricInterpretation = "MONOCHROME2"
        item = Dataset()
        item.LUTDescriptor = [4, 10, 16]  # 4 entries, the first for stored value 10
        item.LUTData = [1000, 3000, 2000, 0]  # not monotonic: no slope and intercept could do this
        item.ModalityLUTType = "OD"
        ds.ModalityLUTSequence = [item]
        meta = meta_from_dataset(ds)
        out = to_unit(np.array([0, 10, 11, 12, 13, 99]), meta)
        np.testing.assert_allclose(out, [1 / 3, 1 / 3, 1, 2 / 3, 0, 0], atol=1e-6)
        np.testing.assert_allclose(decode(np.array([11], np.uint16), meta), [1.0], atol=1e-6)


class TestLookupTableDecode:
    def test_table_decode_equals_the_direct_pipeline(self):
        rng = np.random.default_rng(0)
        raw = rng.integers(0, 2**14, (40, 30)).astype(np.uint16)
        meta = PixelMeta(bits_stored=14, photometric="MONOCHROME1", window_center=9000, window_width=6000)
        np.testing.assert_allclose(decode(raw, meta), to_unit(raw, meta), atol=1e-6)


def with_values(source: Path, out: Path, **values: bytes) -> Path:
    """A copy of the DICOM file `source` with some of its DS elements' values written as given (the bytes
    of the file replaced: no DICOM writer would write what real exports sometimes do)."""
    import struct

    from pydicom.datadict import tag_for_keyword

    data = bytearray(source.read_bytes())
    for keyword, text in values.items():
        tag = tag_for_keyword(keyword)
        at = data.find(struct.pack("<HH", tag >> 16, tag & 0xFFFF) + b"DS")  # explicit VR little endian
        assert at >= 0
        length = struct.unpack("<H", data[at + 6 : at + 8])[0]
        padded = text.ljust(len(text) + len(text) % 2, b" ")  # even, as every value
        data[at + 6 : at + 8 + length] = struct.pack("<H", len(padded)) + padded
    out.write_bytes(bytes(data))
    return out


class TestMetaFromDataset:
    def test_a_window_that_is_not_a_number_is_named(self, tiny_cohort_master, tmp_path):
        """pydicom's own error said "could not convert string to float: 'abc'", not which tag."""
        import pydicom

        source = next((tiny_cohort_master / "dicom").rglob("*.dcm"))
        for written in (b"abc", b"1,2,3", b"1,5.0"):
            path = with_values(source, tmp_path / "window.dcm", WindowCenter=written)
            with pytest.raises(ValueError, match=f"WindowCenter '{written.decode()}' is not a number"):
                meta_from_dataset(pydicom.dcmread(path))

    def test_decimal_commas_are_read_as_points(self, tiny_cohort_master, tmp_path):
        """Software set to a language with a decimal comma writes "2047,5" into DS elements, against the
        standard: the window and the pixel spacing are read, not the breast left out or its scale lost."""
        import pydicom

        source = next((tiny_cohort_master / "dicom").rglob("*.dcm"))
        values = {
            "WindowCenter": b"2047,5\\1000",
            "WindowWidth": b"4095,25",
            "ImagerPixelSpacing": b"0,07\\0,07",
        }
        meta = meta_from_dataset(pydicom.dcmread(with_values(source, tmp_path / "comma.dcm", **values)))
        assert (meta.window_center, meta.window_width, meta.spacing_mm) == (2047.5, 4095.25, 0.07)

    @pytest.mark.parametrize("written", [b"0.07", b"0,07", b"0.07,0.07", b"0.07\\0.07"])
    def test_a_pixel_spacing_written_with_one_value_or_commas_between_values_is_read(
        self, written, tiny_cohort_master, tmp_path
    ):
        """One value where the standard wants two (rows, columns), or a comma where a backslash belongs:
        the spacing is read, not lost (a resampling to spacing_mm would fall back to fitting the breast)."""
        import pydicom

        source = next((tiny_cohort_master / "dicom").rglob("*.dcm"))
        path = with_values(source, tmp_path / "spacing.dcm", ImagerPixelSpacing=written)
        assert pixel_spacing(pydicom.dcmread(path)) == 0.07

    def test_reads_the_synthetic_headers(self, tiny_cohort_master):
        import pydicom

        ds = pydicom.dcmread(next((tiny_cohort_master / "dicom").rglob("*.dcm")))
        meta = meta_from_dataset(ds)
        assert meta.bits_stored == ds.BitsStored and meta.photometric == ds.PhotometricInterpretation
        assert meta.window_center == float(ds.WindowCenter) and meta.slope == 1.0
