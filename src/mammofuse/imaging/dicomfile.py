"""Reading a DICOM file, including one written without the DICOM File Format's wrapper.

PS3.10 wraps a data set in a 128-byte preamble, "DICM" and a File Meta header naming the transfer syntax.
Some archives, older modalities and de-identification tools write the bare data set instead. pydicom
refuses such a file unless forced; forced, it reads anything at all as some data set. Here a bare file is
taken when what it reads as names a SOP class, and its transfer syntax is the encoding it was read in (a
bare data set is never compressed: only the File Meta header could say so).

Uncompressed pixels, as many exports write mammograms, are read from the file straight into their array.
"""

from __future__ import annotations

import io
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pydicom
from PIL import Image
from PIL.Jpeg2KImagePlugin import Jpeg2KImageFile
from pydicom import uid
from pydicom.dataelem import RawDataElement
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import generate_frames
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


def complete_pixel_module(ds: Dataset) -> list[str]:
    """Fill in the Image Pixel module's bit layout where a header lacks it (de-identification tools and
    hand-made exports drop these Type 1 elements, or leave them empty), from what PS3.3's DX and
    mammography image modules fix (C.8.11.7): High Bit is Bits Stored - 1, Bits Allocated is 8 or 16, Pixel
    Representation 0 (unsigned). Returns what it filled in, a line each (none for a whole header);
    ValueError where neither Bits Stored nor High Bit says which bits hold the values."""
    missing = {k for k in ("BitsStored", "HighBit", "BitsAllocated", "PixelRepresentation") if _empty(ds, k)}
    filled = []
    if "BitsStored" in missing:
        if "HighBit" in missing:
            raise ValueError(
                "BitsStored (0028,0101) and HighBit (0028,0102) are both missing: which bits hold the pixel "
                "values is unknown"
            )
        ds.BitsStored = int(ds.HighBit) + 1
        filled.append(f"BitsStored missing: taken as {ds.BitsStored} (HighBit {ds.HighBit} + 1)")
    if "HighBit" in missing:
        ds.HighBit = int(ds.BitsStored) - 1
    if "BitsAllocated" in missing:
        ds.BitsAllocated = 8 if int(ds.BitsStored) <= 8 else 16
        filled.append(f"BitsAllocated missing: taken as {ds.BitsAllocated} (BitsStored {ds.BitsStored})")
    if "PixelRepresentation" in missing:
        ds.PixelRepresentation = 0
        filled.append("PixelRepresentation missing: taken as 0 (unsigned)")
    return filled


def _empty(ds: Dataset, keyword: str) -> bool:
    value = ds.get(keyword)
    return value is None or value == ""


def read_header(path: str | Path) -> Dataset:
    """A file's data set, its pixels read when used (`read_image` reads them), its bit layout completed
    where the header lacks it (`complete_pixel_module`)."""
    ds = read_dicom(path, defer_size=DEFER_BYTES)
    complete_pixel_module(ds)
    return ds


def read_image(path: str | Path, ds: Dataset | None = None) -> tuple[Dataset, np.ndarray]:
    """A file's data set (`read_header`'s, read here unless given) and its pixels' stored values, as
    pydicom's `pixel_array` gives them. One frame of unsigned 16-bit uncompressed pixels is read from the
    file straight into its array: pydicom reads them into bytes first, then copies them into a masked
    array (benchmarks/bench_preprocess.py: the whole preprocessing of such a 3000 x 2400 image takes less
    than pydicom's decode alone)."""
    ds = read_header(path) if ds is None else ds
    raw = _native_pixels(path, ds)
    if raw is not None:
        return ds, raw
    if not _empty(ds, "PhotometricInterpretation"):
        return ds, ds.pixel_array
    # pydicom's decoders want one; a grey frame's stored values are the same either way round, and the
    # header is left without it, for the pixels to say which way round it is (photometric_from_pixels)
    ds.PhotometricInterpretation = "MONOCHROME2"
    try:
        return ds, ds.pixel_array
    finally:
        del ds.PhotometricInterpretation


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


JPEG2000 = (uid.JPEG2000Lossless, uid.JPEG2000)


def reducible(ds: Dataset) -> bool:
    """Whether `read_reduced` can decode the image: one grey frame of unsigned JPEG 2000."""
    return (
        ds.file_meta.get("TransferSyntaxUID") in JPEG2000
        and [ds.get(k, 1) for k in ("PixelRepresentation", "SamplesPerPixel")] == [0, 1]
        and int(ds.get("NumberOfFrames") or 1) == 1
    )


def read_reduced(ds: Dataset, levels: int) -> np.ndarray:
    """The stored values of a `reducible` image decoded at 1 / 2**levels of its size a side (rounded up):
    JPEG 2000 holds an image as wavelet levels, each half the size of the one above, so OpenJPEG (through
    Pillow) decodes the coarse levels only, without reading the finer ones' data (about 4x faster a
    level). Each value is the image's low-pass filtered there. ValueError where the codestream cannot be
    decoded so (a signed codestream, or fewer levels than asked)."""
    frame = next(generate_frames(ds.PixelData, number_of_frames=1))
    start = frame.find(b"\xff\x4f\xff\x51")  # the codestream's start and its SIZ segment (maybe in a JP2 box)
    if start < 0:
        raise ValueError("no JPEG 2000 codestream")
    ssiz = frame[start + 42]  # SOC, SIZ marker, Lsiz, Rsiz, 8 x 4-byte sizes, Csiz: the first component's
    if ssiz & 0x80:
        raise ValueError("a signed JPEG 2000 codestream")
    precision = (ssiz & 0x7F) + 1
    try:
        with Image.open(io.BytesIO(frame)) as image:
            if not isinstance(image, Jpeg2KImageFile):
                raise OSError("not a JPEG 2000 codestream")
            image.reduce = levels
            arr = np.asarray(image)
    except OSError as exc:
        raise ValueError(f"JPEG 2000 at 1/{2**levels} of its size: {exc}") from None
    if arr.dtype == np.uint16 and precision < 16:  # Pillow spreads 9 to 15 bits over 16
        arr = arr >> np.uint16(16 - precision)
    return arr
