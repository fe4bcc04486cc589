"""Reading a DICOM file, including one written without the DICOM File Format's wrapper.

PS3.10 wraps a data set in a 128-byte preamble, "DICM" and a File Meta header naming the transfer syntax.
Some archives, older modalities and de-identification tools write the bare data set instead. pydicom
refuses such a file unless forced; forced, it reads anything at all as some data set. Here a bare file is
taken when what it reads as names a SOP class, and its transfer syntax is the encoding it was read in (a
bare data set is never compressed: only the File Meta header could say so).
"""

from __future__ import annotations

from pathlib import Path
from typing import BinaryIO

import pydicom
from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError

ENCODINGS: dict[tuple[bool | None, bool | None], uid.UID] = {  # (implicit VR, little endian) -> syntax
    (True, True): uid.ImplicitVRLittleEndian,
    (False, True): uid.ExplicitVRLittleEndian,
    (False, False): uid.ExplicitVRBigEndian,
}


def read_dicom(source: str | Path | BinaryIO, stop_before_pixels: bool = False) -> Dataset:
    """pydicom.dcmread, and a bare data set (no preamble, no File Meta header) read the same way.
    InvalidDicomError where the file is neither."""
    try:
        return pydicom.dcmread(source, stop_before_pixels=stop_before_pixels)
    except InvalidDicomError:
        if not isinstance(source, str | Path):
            source.seek(0)
    try:
        ds = pydicom.dcmread(source, stop_before_pixels=stop_before_pixels, force=True)
        sop = str(ds.get("SOPClassUID", ""))
    except Exception:  # forced, pydicom stumbles over a file that is not DICOM in many ways
        sop = ""
    syntax = ENCODINGS.get(ds.original_encoding) if sop else None
    if syntax is None or not uid.UID(sop).is_valid or "." not in sop:
        raise InvalidDicomError("neither a DICOM file nor a bare DICOM data set (no SOP class)")
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = syntax
    return ds
