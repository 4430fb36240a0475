"""The pixel size a single image file states (PNG, TIFF, OME-TIFF, JPEG), for ``classify`` and ``restore``.

A slide carries its pixel size and the slide readers use it; a single image exported from a scanner or a viewer
often carries it too: OME-XML ``PhysicalSizeX`` in an OME-TIFF, an Aperio-style ``MPP = 0.2520`` in a TIFF's
description, the TIFF resolution tags, a PNG's ``pHYs`` chunk, a JPEG's JFIF density. The classifier's
verdict depends on it: a 40x image (0.25 um/px) read as 0.5 um/px looks softer than in-focus tissue at 0.5 and is
called defocused. Many files carry a placeholder instead (72, 96 or 300 dpi is 85-350 um/px): values outside
:data:`PLAUSIBLE_MPP` are not pixel sizes of a microscope and are ignored.
"""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from typing import Any

#: Pixel sizes (um/px) a brightfield image of tissue can have: from oil-immersion 100x cameras to low-power
#: overviews. A stated resolution outside this range is a placeholder, not a pixel size.
PLAUSIBLE_MPP = (0.05, 10.0)

_UM_PER_INCH = 25400.0
_UM_PER_CM = 10000.0
#: OME length units in micrometres.
_OME_UNITS = {"nm": 1e-3, "µm": 1.0, "um": 1.0, "\u03bcm": 1.0, "mm": 1e3, "cm": 1e4, "m": 1e6}
_APERIO_MPP = re.compile(r"\bMPP\s*=\s*([0-9]*\.?[0-9]+)")
_TIFF_DESCRIPTION, _TIFF_XRES, _TIFF_UNIT = 270, 282, 296


def pixel_size(image: Any) -> tuple[float, str] | None:
    """The pixel size (um/px) a PIL image's file states, with where it was found in words, or None where it
    states none that a microscope could have (see :data:`PLAUSIBLE_MPP`)."""
    for found in (_from_description(image), _from_tiff_tags(image), _from_dpi(image)):
        if found is not None and PLAUSIBLE_MPP[0] <= found[0] <= PLAUSIBLE_MPP[1]:
            return found
    return None


def dpi(mpp: float) -> tuple[float, float]:
    """Dots per inch for a pixel size, as Pillow writes resolution into PNG, TIFF and JPEG files."""
    return (_UM_PER_INCH / mpp, _UM_PER_INCH / mpp)


def _from_description(image: Any) -> tuple[float, str] | None:
    tags = getattr(image, "tag_v2", None)
    text = tags.get(_TIFF_DESCRIPTION) if tags is not None else None
    if isinstance(text, bytes):
        text = text.decode("utf-8", errors="replace")
    if not isinstance(text, str):
        return None
    if "PhysicalSizeX" in text:
        return _from_ome(text)
    match = _APERIO_MPP.search(text)
    return (float(match.group(1)), "the TIFF description's MPP") if match else None


def _from_ome(text: str) -> tuple[float, str] | None:
    try:
        root = ET.fromstring(text)
    except ET.ParseError:
        return None
    for element in root.iter():
        if element.tag.rsplit("}", 1)[-1] == "Pixels" and "PhysicalSizeX" in element.attrib:
            scale = _OME_UNITS.get(_utf8(element.attrib.get("PhysicalSizeXUnit", "µm")))
            try:
                value = float(element.attrib["PhysicalSizeX"])
            except ValueError:
                return None
            return (value * scale, "OME PhysicalSizeX") if scale is not None else None
    return None


def _utf8(text: str) -> str:
    """``text`` as written: Pillow decodes a TIFF's ASCII tags as Latin-1, so the UTF-8 "µm" of an OME-XML
    description arrives as two characters."""
    try:
        return text.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        return text


def _from_tiff_tags(image: Any) -> tuple[float, str] | None:
    tags = getattr(image, "tag_v2", None)
    if tags is None or _TIFF_XRES not in tags:
        return None
    unit = tags.get(_TIFF_UNIT, 2)
    per = {2: _UM_PER_INCH, 3: _UM_PER_CM}.get(int(unit))
    resolution = float(tags[_TIFF_XRES])
    if per is None or resolution <= 0:
        return None
    return per / resolution, "the TIFF resolution tags"


def _from_dpi(image: Any) -> tuple[float, str] | None:
    if getattr(image, "tag_v2", None) is not None:
        return None  # a TIFF's resolution is read from its tags, with their unit
    value = image.info.get("dpi")
    try:
        x = float(value[0])
    except (TypeError, ValueError, IndexError):
        return None
    kind = "PNG pHYs" if image.format == "PNG" else f"the {image.format or 'file'}'s resolution"
    return (_UM_PER_INCH / x, kind) if x > 0 else None
