"""Reading a DICOM file, including one written without the DICOM File Format's wrapper.

PS3.10 wraps a data set in a 128-byte preamble, "DICM" and a File Meta header naming the transfer syntax.
Some archives, older modalities and de-identification tools write the bare data set instead. pydicom
refuses such a file unless forced; forced, it reads anything at all as some data set. Here a bare file is
taken when what it reads as names a SOP class, and its transfer syntax is the encoding it was read in (a
bare data set is never compressed: only the File Meta header could say so).

Uncompressed pixels, as many exports write mammograms, are read from the file straight into their array.
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from pydicom import uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError

NATIVE = (uid.ExplicitVRLittleEndian, uid.ImplicitVRLittleEndian)  # uncompressed, in this machine's order
DEFER_BYTES = 4096  # values longer than this (the pixels) are read when used, not with the header

ENCODINGS: dict[tuple[bool | None, bool | None], uid.UID] = {  # (implicit VR, little endian) -> syntax
    (True, True): uid.ImplicitVRLittleEndian,
    (False, True): uid.ExplicitVRLittleEndian,
    (False, False): uid.ExplicitVRBigEndian,
}


def read_dicom(
    source: str | Path | BinaryIO, stop_before_pixels: bool = False, defer_size: int | None = None
) -> Dataset:
    """pydicom.dcmread, and a bare data set (no preamble, no File Meta header) read the same way.
    InvalidDicomError where the file is neither."""
    try:
        return pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, defer_size=defer_size)
    except InvalidDicomError:
        if not isinstance(source, str | Path):
            source.seek(0)
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, defer_size=defer_size, force=True)
        sop = str(ds.get("SOPClassUID", ""))
    except Exception:  # forced, pydicom stumbles over a file that is not DICOM in many ways
        sop = ""
    syntax = ENCODINGS.get(ds.original_encoding) if sop else None
    if syntax is None or not uid.UID(sop).is_valid or "." not in sop:
        raise InvalidDicomError("neither a DICOM file nor a bare DICOM data set (no SOP class)")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds


def read_image(path: str | Path) -> tuple[Dataset, np.ndarray]:
    """A file's data set and its pixels' stored values, as pydicom's `pixel_array` gives them. One frame
    of unsigned 16-bit uncompressed pixels is read from the file straight into its array: pydicom reads
    them into bytes first, then copies them into a masked array (benchmarks/bench_preprocess.py: the
    whole preprocessing of such a 3000 x 2400 image takes less than pydicom's decode alone)."""
    ds = read_dicom(path, defer_size=DEFER_BYTES)
    raw = _native_pixels(path, ds)
    return ds, raw if raw is not None else ds.pixel_array


def _native_pixels(path: str | Path, ds: Dataset) -> np.ndarray | None:
    """The stored values of one grey frame of unsigned 16-bit uncompressed pixels; None for any other
    kind (or a file cut short: pydicom then says how)."""
    elem = ds.get_item("PixelData", keep_deferred=True)
    if (
        ds.file_meta.get("TransferSyntaxUID") not in NATIVE
        or not isinstance(elem, RawDataElement)
        or elem.value is not None  # read with the header: small, nothing to gain
        or "Rows" not in ds
        or "Columns" not in ds
        or [ds.get(k, 1) for k in ("BitsAllocated", "PixelRepresentation", "SamplesPerPixel")] != [16, 0, 1]
        or int(ds.get("NumberOfFrames") or 1) != 1
    ):
        return None
    shape = (int(ds.Rows), int(ds.Columns))
    count = shape[0] * shape[1]
    if elem.length < 2 * count:
        return None
    with open(path, "rb") as fh:
        fh.seek(elem.value_tell)
        raw = np.fromfile(fh, "<u2", count)
    if raw.size != count:
        return None
    bits = int(ds.get("BitsStored") or 16)
    if bits < 16:  # the bits above may hold overlays (PS3.5 8.1.1): pydicom clears them too
        raw &= np.uint16((1 << bits) - 1)
    return raw.reshape(shape)
