"""Checking slide files: is it a readable file, what kind (magic bytes), is a TIFF truncated, and which error
each reader raises, so that a bad slide is reported in one line naming the file and the problem."""

from __future__ import annotations

import functools
import logging
import os
import stat
import threading

import numpy as np

from ._types import SlideError

#: TIFF magic numbers: classic TIFF and BigTIFF, little and big endian.
_TIFF_MAGIC = (b"II*\x00", b"MM\x00*", b"II+\x00", b"MM\x00+")


def one_line(error: BaseException) -> str:
    """An exception's message on one line (library messages sometimes span several)."""
    text = " ".join(str(error).split())
    return text or type(error).__name__


class _TiffLogCatcher(logging.Handler):
    """Collects tifffile's log records from the current thread (it logs broken IFD chains, not raises)."""

    def __init__(self) -> None:
        super().__init__(level=logging.WARNING)
        self.thread = threading.get_ident()
        self.messages: list[str] = []

    def emit(self, record: logging.LogRecord) -> None:
        if record.thread == self.thread:
            self.messages.append(record.getMessage())


def tiff_damage(path: str) -> str | None:
    """Why a TIFF file is truncated, or None when its directories and image data all lie inside the file.

    Two signs are unambiguous: a directory offset beyond the end of the file (tifffile logs it and stops
    walking the chain, silently dropping the pages after it), and image data that runs past the end of the
    file.
    """
    import tifffile

    catcher = _TiffLogCatcher()
    tifffile_log = logging.getLogger("tifffile")
    tifffile_log.addHandler(catcher)
    try:
        with tifffile.TiffFile(path) as tif:
            size = tif.filehandle.size
            for index, page in enumerate(tif.pages):
                offsets = getattr(page, "dataoffsets", ())
                counts = getattr(page, "databytecounts", ())
                if len(offsets) and len(offsets) == len(counts):
                    end = int((np.asarray(offsets, np.int64) + np.asarray(counts, np.int64)).max())
                    if end > size:
                        return f"image data of TIFF page {index} ends at byte {end}, past the end ({size})"
    except (tifffile.TiffFileError, OSError, ValueError, IndexError, KeyError) as error:
        return f"its TIFF structure cannot be parsed ({one_line(error)})"
    finally:
        tifffile_log.removeHandler(catcher)
    for message in catcher.messages:
        if "invalid offset to first page" in message or "invalid page offset" in message:
            offset = message.rsplit(" ", 1)[-1]
            return f"a TIFF directory offset ({offset}) points past the end of the file ({size} bytes)"
    return None


def file_kind(path: str) -> str | None:
    """``"tiff"`` or ``"dicom"`` from a file's magic bytes, else None."""
    with open(path, "rb") as handle:
        head = handle.read(132)
    if head[:4] in _TIFF_MAGIC:
        return "tiff"
    if head[128:132] == b"DICM":
        return "dicom"
    return None


@functools.cache
def tiffslide_errors() -> tuple[type[BaseException], ...]:
    """What tiffslide (tifffile, zarr, imagecodecs underneath) raises for a file it cannot read or decode."""
    import imagecodecs
    import tifffile

    codec_errors = []
    for name in dir(imagecodecs):
        if name.endswith("Error"):
            cls = getattr(imagecodecs, name, None)
            if isinstance(cls, type) and issubclass(cls, Exception):
                codec_errors.append(cls)
    return (
        tifffile.TiffFileError,
        OSError,
        ValueError,
        KeyError,
        IndexError,
        NotImplementedError,  # tiffslide: series axes it cannot read
        *codec_errors,
    )


def openslide_errors() -> tuple[type[BaseException], ...]:
    import openslide

    return (openslide.OpenSlideError, OSError, ValueError)


def check_path(path: str) -> None:
    """SlideError for a path that is not a readable, non-empty file."""
    try:
        info = os.stat(path)
    except FileNotFoundError:
        raise SlideError(f"{path}: no such file; check the path") from None
    except OSError as error:
        raise SlideError(f"{path}: cannot be accessed ({one_line(error)})") from error
    if stat.S_ISDIR(info.st_mode):
        raise SlideError(
            f"{path}: is a directory, not a slide file; pass the slide file itself "
            "(for DICOM one of its .dcm files, for MIRAX the .mrxs file)"
        )
    if not stat.S_ISREG(info.st_mode):
        raise SlideError(f"{path}: is not a regular file")
    if info.st_size == 0:
        raise SlideError(f"{path}: the file is empty")
    if not os.access(path, os.R_OK):
        raise SlideError(f"{path}: permission denied; the file must be readable")


def cannot_open(path: str, reader: str, error: BaseException) -> SlideError:
    """The SlideError for a file the library refused, with the most useful diagnosis we can give."""
    kind = file_kind(path)
    if kind == "tiff":
        damage = tiff_damage(path)
        if damage is not None:
            return SlideError(
                f"{path}: the file is truncated or damaged: {damage}; copy it again from its source"
            )
        if reader == "openslide":
            return SlideError(
                f"{path}: OpenSlide does not recognise this TIFF as a slide ({one_line(error)}); "
                "if it is an OME-TIFF or another plain tiled TIFF, try reader='tiffslide'"
            )
        return SlideError(f"{path}: tiffslide cannot read this TIFF ({one_line(error)})")
    if kind == "dicom":
        return SlideError(f"{path}: OpenSlide cannot read this DICOM file ({one_line(error)})")
    readable = (
        "whole-slide formats OpenSlide reads"
        if reader == "openslide"
        else "TIFF-based slides tiffslide reads"
    )
    return SlideError(f"{path}: not a slide file (not one of the {readable}; {one_line(error)})")
