"""The pixel size a single image file states (PNG, TIFF, OME-TIFF, JPEG, BMP), for ``classify`` and ``restore``.

A slide carries its pixel size and the slide readers use it; a single image exported from a scanner or a viewer
often carries it too: OME-XML ``PhysicalSizeX`` in an OME-TIFF, an Aperio-style ``MPP = 0.2520`` in a TIFF's
description, the TIFF resolution tags, a PNG's ``pHYs`` chunk, a JPEG's JFIF density or EXIF resolution. The
classifier's verdict depends on it: a 40x image (0.25 um/px) read as 0.5 um/px looks softer than in-focus tissue
at 0.5 and is called blurred. Many files carry a placeholder instead (72, 96 or 300 dpi is 85-350 um/px):
values outside :data:`.MPP_RANGE` are not pixel sizes of a microscope and are ignored, as is metadata that
cannot be read (a file's pixels do not depend on it).
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from collections.abc import Callable
from typing import Any, NamedTuple

from ._types import MPP_RANGE

_UM_PER_INCH = 25400.0
_UM_PER_CM = 10000.0
#: OME length units in micrometres.
_OME_UNITS = {"pm": 1e-6, "Å": 1e-4, "nm": 1e-3, "µm": 1.0, "\u03bcm": 1.0, "um": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_NUMBER = r"([0-9]*\.?[0-9]+(?:[eE][-+]?[0-9]+)?)"
_APERIO_MPP = re.compile(r"\bMPP\s*=\s*" + _NUMBER)
_TIFF_DESCRIPTION, _TIFF_XRES, _TIFF_YRES, _TIFF_UNIT = 270, 282, 283, 296
#: Relative difference below which a stated pixel height is the width (resolutions round-trip to about 1e-8).
_SQUARE = 1e-3
#: EXIF resolution tags (the TIFF numbers); JFIF's density field holds 16 bits, too few for 40x in dots per inch.
_EXIF_XRES, _EXIF_YRES, _EXIF_UNIT = 0x011A, 0x011B, 0x0128


class Stated(NamedTuple):
    """A pixel size a file states: width (um), where it was found in words, and the height where the file
    states non-square pixels (None: square)."""

    mpp: float
    where: str
    mpp_y: float | None = None


def pixel_size(image: Any) -> Stated | None:
    """The pixel size (um/px) a PIL image's file states, with where it was found in words, or None where it
    states none that a microscope could have (see :data:`.MPP_RANGE`). Sources are tried in order: OME-XML or
    an Aperio ``MPP =`` in a TIFF description, the TIFF resolution tags, the format's own resolution (PNG
    ``pHYs``, JPEG JFIF or EXIF, BMP). A height that differs from the width by more than 0.1% is kept as
    ``mpp_y`` (the classifier and the networks work at the width, as for slides)."""
    readers: tuple[Callable[[Any], tuple[float, str, float | None] | None], ...] = (
        _from_description, _from_tiff_tags, _from_dpi
    )
    for read in readers:
        try:
            found = read(image)
        except (ValueError, TypeError, ArithmeticError, KeyError, IndexError):
            continue  # unreadable metadata states nothing
        if found is not None and MPP_RANGE[0] <= found[0] <= MPP_RANGE[1]:
            x, where, y = found
            square = y is None or not MPP_RANGE[0] <= y <= MPP_RANGE[1] or abs(y - x) <= _SQUARE * x
            # written resolutions round-trip to 1e-8, not exactly
            return Stated(float(f"{x:.6g}"), where, None if square else float(f"{y:.6g}"))
    return None


def resolution(mpp: float, jpeg: bool = False, mpp_y: float | None = None) -> dict[str, Any]:
    """Pillow ``save`` options that write the pixel size ``mpp`` (and the height ``mpp_y`` of non-square pixels)
    into a PNG, TIFF, BMP or JPEG file. A JPEG finer than 0.39 um/px (65535 dpi) gets it in EXIF, per
    centimetre: JFIF's density has 16 bits."""
    density = dpi(mpp, mpp_y)
    if not jpeg or round(max(density)) <= 0xFFFF:
        return {"dpi": density}
    from PIL import Image

    exif = Image.Exif()
    exif[_EXIF_UNIT] = 3
    exif[_EXIF_XRES] = _UM_PER_CM / mpp
    exif[_EXIF_YRES] = _UM_PER_CM / (mpp if mpp_y is None else mpp_y)
    return {"exif": exif}


def dpi(mpp: float, mpp_y: float | None = None) -> tuple[float, float]:
    """Dots per inch (x, y) for a pixel size, as Pillow writes resolution into PNG, TIFF and JPEG files."""
    return (_UM_PER_INCH / mpp, _UM_PER_INCH / (mpp if mpp_y is None else mpp_y))


def _from_description(image: Any) -> tuple[float, str, float | None] | None:
    tags = getattr(image, "tag_v2", None)
    text = tags.get(_TIFF_DESCRIPTION) if tags is not None else None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    if "PhysicalSizeX" in text:
        return _from_ome(text)
    match = _APERIO_MPP.search(text)
    return (float(match.group(1)), "the TIFF description's MPP", None) if match else None


def _from_ome(text: str) -> tuple[float, str, float | None] | None:
    """PhysicalSizeX of the first image's Pixels (later images of an OME file may be labels or overviews)."""
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    pixels = next((e for e in root.iter() if e.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None or "PhysicalSizeX" not in pixels.attrib:
        return None
    scale = _OME_UNITS.get(_utf8(pixels.attrib.get("PhysicalSizeXUnit", "µm")))
    if scale is None:
        return None
    scale_y = _OME_UNITS.get(_utf8(pixels.attrib.get("PhysicalSizeYUnit", "µm")))
    y = pixels.attrib.get("PhysicalSizeY")
    height = float(y) * scale_y if y is not None and scale_y is not None else None
    return float(pixels.attrib["PhysicalSizeX"]) * scale, "OME PhysicalSizeX", height


def _utf8(text: str) -> str:
    """``text`` as written: Pillow decodes a TIFF's ASCII tags as Latin-1, so the UTF-8 "µm" of an OME-XML
    description arrives as two characters."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _from_tiff_tags(image: Any) -> tuple[float, str, float | None] | None:
    tags = getattr(image, "tag_v2", None)
    if tags is None or _TIFF_XRES not in tags:
        return None
    per = {2: _UM_PER_INCH, 3: _UM_PER_CM}.get(int(tags.get(_TIFF_UNIT, 2)))
    value = float(tags[_TIFF_XRES])
    if per is None or not value > 0:
        return None
    y = float(tags[_TIFF_YRES]) if _TIFF_YRES in tags else 0.0
    return per / value, "the TIFF resolution tags", per / y if y > 0 else None


def _from_dpi(image: Any) -> tuple[float, str, float | None] | None:
    if getattr(image, "tag_v2", None) is not None:
        return None  # a TIFF's resolution is read from its tags, with their unit
    x, y = (float(v) for v in image.info["dpi"][:2]) if "dpi" in image.info else (0.0, 0.0)
    if image.format == "JPEG" and not image.info.get("jfif_unit") and x > 0:
        y = _exif_y_dpi(image, x)  # Pillow reads a JPEG's EXIF resolution as its x value on both axes
    kind = "PNG pHYs" if image.format == "PNG" else f"the {image.format or 'file'}'s resolution"
    return (_UM_PER_INCH / x, kind, _UM_PER_INCH / y if y > 0 else None) if x > 0 else None


def _exif_y_dpi(image: Any, x: float) -> float:
    """The vertical resolution (dpi) of a JPEG's EXIF, or ``x`` where it states none."""
    exif = image.getexif()
    if _EXIF_YRES not in exif:
        return x
    per_inch = 2.54 if exif.get(_EXIF_UNIT) == 3 else 1.0
    return float(exif[_EXIF_YRES]) * per_inch
