"""Reading a DICOM file's pixels: uncompressed pixels straight from the file, everything else through
pydicom, with the same values either way."""

from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRBigEndian, ExplicitVRLittleEndian, ImplicitVRLittleEndian, RLELossless

from mammofuse.imaging.dicomfile import complete_pixel_module, read_image


def image(tmp_path: Path, rows: int = 120, columns: int = 100, bits: int = 12) -> tuple[Path, Dataset]:
    """A 16-bit grey image whose high bits, above BitsStored, carry an overlay (PS3.5 8.1.1)."""
    rng = np.random.default_rng(0)
    values = rng.integers(0, 2**bits, (rows, columns), dtype=np.uint16)
    if bits < 16:
        values[:10, :10] |= np.uint16(1 << bits)  # the overlay's bit: not part of the value
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.1.2"
    ds.SOPInstanceUID = "1.2.3.4"
    ds.Rows, ds.Columns = rows, columns
    ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, bits, bits - 1
    ds.SamplesPerPixel, ds.PixelRepresentation = 1, 0
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelData = values.tobytes()
    path = tmp_path / "image.dcm"
    write(ds, path)
    return path, ds


def write(ds: Dataset, path: Path, syntax: str = ExplicitVRLittleEndian) -> None:
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    ds.save_as(path, enforce_file_format=True)


def pydicoms(path: Path) -> np.ndarray:
    return pydicom.dcmread(path).pixel_array


class TestSameValuesAsPydicom:
    @pytest.mark.parametrize("bits", [12, 14, 16])
    @pytest.mark.parametrize("syntax", [ExplicitVRLittleEndian, ImplicitVRLittleEndian])
    def test_uncompressed_pixels_are_read_from_the_file_as_pydicom_decodes_them(
        self, tmp_path, monkeypatch, syntax, bits
    ):
        path, ds = image(tmp_path, bits=bits)
        write(ds, path, syntax)
        expected = pydicoms(path)
        monkeypatch.setattr(Dataset, "pixel_array", property(lambda _: pytest.fail("decoded by pydicom")))
        _, raw = read_image(path)
        assert raw.dtype == np.uint16 and raw.flags.writeable
        np.testing.assert_array_equal(raw, expected)  # the overlay's bit cleared, as pydicom clears it

    def test_a_bare_data_set_reads_the_same(self, tmp_path):
        path, ds = image(tmp_path)
        expected = pydicoms(path)
        ds.preamble = None
        del ds.file_meta
        ds.save_as(path, implicit_vr=True, little_endian=True, enforce_file_format=False)
        np.testing.assert_array_equal(read_image(path)[1], expected)

    @pytest.mark.parametrize(
        "change",
        [
            pytest.param(
                lambda ds, path: ds.compress(RLELossless) or write(ds, path, RLELossless), id="compressed"
            ),
            pytest.param(lambda ds, path: write(ds, path, ExplicitVRBigEndian), id="big-endian"),
            pytest.param(
                lambda ds, path: setattr(ds, "PixelRepresentation", 1) or write(ds, path), id="signed"
            ),
        ],
    )
    def test_other_pixels_go_through_pydicom(self, tmp_path, change):
        path, ds = image(tmp_path)
        change(ds, path)
        np.testing.assert_array_equal(read_image(path)[1], pydicoms(path))

    def test_a_file_cut_short_fails_as_pydicom_fails(self, tmp_path):
        path, _ = image(tmp_path)
        path.write_bytes(path.read_bytes()[:-100])
        with pytest.raises(ValueError, match="pixel data"):
            pydicoms(path)
        with pytest.raises(ValueError, match="pixel data"):
            read_image(path)

    def test_a_voi_lut_table_in_the_header_reads_as_pydicom_reads_it(self, tmp_path):
        """Values longer than a few kB are read from the file when used: a LUT table inside a sequence too."""
        from pydicom.sequence import Sequence

        from mammofuse.imaging.decode import meta_from_dataset

        path, ds = image(tmp_path)
        item = Dataset()
        item.LUTDescriptor = [4096, 0, 16]
        item.add_new(0x00283006, "OW", np.arange(0, 65536, 16, dtype=np.uint16).tobytes())  # 8 kB
        ds.VOILUTSequence = Sequence([item])
        write(ds, path)
        header, _ = read_image(path)
        ours, theirs = meta_from_dataset(header), meta_from_dataset(pydicom.dcmread(path))
        assert len(ours.voi_lut) == 4096 and np.array_equal(ours.voi_lut, theirs.voi_lut)


class TestAHeaderWithoutItsBitLayout:
    """De-identification tools and hand-made exports drop Type 1 elements of the Image Pixel module; what
    the DX and mammography image modules fix (PS3.3 C.8.11.7) is filled in, to the values the whole file
    gives."""

    @pytest.mark.parametrize(
        "missing",
        [
            ("BitsStored",),
            ("HighBit",),
            ("BitsAllocated",),
            ("PixelRepresentation",),
            ("BitsStored", "BitsAllocated"),
        ],
    )
    @pytest.mark.parametrize("compressed", [False, True], ids=["uncompressed", "RLE"])
    def test_the_pixels_read_as_the_whole_header_gives_them(self, tmp_path, missing, compressed):
        path, ds = image(tmp_path, bits=12)
        if compressed:
            ds.compress(RLELossless)
            write(ds, path, RLELossless)
        expected = pydicoms(path)
        for keyword in missing:
            delattr(ds, keyword)
        write(ds, path, RLELossless if compressed else ExplicitVRLittleEndian)
        if missing != ("HighBit",):  # pydicom does without that one
            with pytest.raises(AttributeError):
                pydicoms(path)
        header, raw = read_image(path)
        np.testing.assert_array_equal(raw, expected)  # the overlay bit above BitsStored 12 cleared too
        assert (header.BitsStored, header.BitsAllocated, header.PixelRepresentation) == (12, 16, 0)

    def test_what_was_filled_in_is_said(self):
        ds = Dataset()
        ds.HighBit = 13
        assert complete_pixel_module(ds) == [
            "BitsStored missing: taken as 14 (HighBit 13 + 1)",
            "BitsAllocated missing: taken as 16 (BitsStored 14)",
            "PixelRepresentation missing: taken as 0 (unsigned)",
        ]
        ds.BitsStored = 8
        del ds.BitsAllocated
        assert complete_pixel_module(ds) == ["BitsAllocated missing: taken as 8 (BitsStored 8)"]
        assert ds.BitsAllocated == 8 and complete_pixel_module(ds) == []

    def test_an_empty_value_counts_as_missing(self):
        ds = Dataset()
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, None, 11, None
        assert len(complete_pixel_module(ds)) == 2 and (ds.BitsStored, ds.PixelRepresentation) == (12, 0)

    def test_without_bits_stored_or_high_bit_no_value_is_guessed(self, tmp_path):
        path, ds = image(tmp_path)
        del ds.BitsStored, ds.HighBit
        write(ds, path)
        with pytest.raises(
            ValueError, match=r"BitsStored \(0028,0101\) and HighBit \(0028,0102\) are both missing"
        ):
            read_image(path)
