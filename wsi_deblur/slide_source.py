"""The slide reader's common part: :class:`SlideSource`, one interface over the reading libraries.

A :class:`SlideSource` gives the pyramid's geometry, the pixel size and the other metadata the pipeline needs,
and reads any rectangle of any level as RGB uint8 in that level's own pixel coordinates. Pixels outside the
level, and pixels the library returns transparent (areas a scanner did not image), come back in the slide's
background colour. The libraries themselves are in :mod:`.slide_backends`; opening and caching in :mod:`.slide`.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from ._types import SlideError
from .slide_files import one_line
from .slide_pixels import as_rgba, block_mean, composite, fit, parse_color

#: mpp-x and mpp-y further apart than this (relative) are recorded as non-square pixels.
MPP_TOLERANCE = 0.01

#: Largest strip (bytes of RGB) read at once while shrinking a level for a thumbnail: 16 MiB is about 5.6 Mpx,
#: small beside a worker's memory and large enough that a 100k px wide level is read in strips of ~50 rows.
STRIP_BYTES = 16 * 2**20

#: Longest side of the view the brightfield/fluorescence verdict is taken on: 256 px gives ~50k pixels, plenty
#: for a stable median, at the cost of one small read from a low pyramid level.
BRIGHTFIELD_VIEW = 256

#: Median luminance (0-255) below which a slide's view counts as a dark-background (fluorescence) image.
#: Brightfield tissue transmits light: even densely stained H&E or DAB averages an optical density under 0.6
#: over a view, i.e. more than 25% transmission (luminance > 64), and glass is near white. Unstained
#: fluorescence background emits nothing (luminance near 0), and it covers most of a fluorescence view.
DARK_MEDIAN = 64

#: Luminance bounds used only to describe a view in the verdict's reason (near-white glass, near-black
#: background).
NEAR_WHITE = 200
NEAR_BLACK = 50

#: A thumbnail pixel counts as scanned (not padding or transparent) when its coverage, 0-255, is at least
#: this: 250 of 255 leaves room for the rounding of the area average at the border of a transparent region.
OPAQUE = 250

#: When opening a slide, the last (smallest) level is decoded whole if its longest side is at most this many
#: pixels, else only a corner of this size; one level-0 tile at each end of the tile grid is decoded as well.
VERIFY_VIEW = 1024

#: Tile side assumed when the slide does not state one (the usual tile side of scanners' TIFFs).
DEFAULT_TILE = 256


#: DICOM illumination type codes (DCM coding scheme, CID 8123 "Microscopy Illumination Method").
_DICOM_FLUORESCENCE = {"111743"}  # Epifluorescence illumination
_DICOM_BRIGHTFIELD = {"111744", "111741"}  # Brightfield illumination, Transmission illumination


def _float_or_none(value: object) -> float | None:
    """A positive finite float from a property value, or None when it is absent or not a number."""
    if value is None:
        return None
    try:
        number = float(str(value))
    except ValueError:
        return None
    return number if math.isfinite(number) and number > 0 else None


def _int_or_none(value: object) -> int | None:
    """An integer from a property value (``bounds-x`` may be 0 or negative), None if absent or invalid."""
    if value is None:
        return None
    try:
        return int(float(str(value)))
    except (ValueError, OverflowError):
        return None


class SlideSource:
    """An open slide: geometry, metadata and region reads as RGB uint8. Made by :func:`open_slide`."""

    path: str
    reader: str
    level_count: int
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    dimensions: tuple[int, int]
    mpp: float | None
    mpp_y: float | None
    slide_mpp: float | None
    objective_power: float | None
    vendor: str | None
    format: str | None
    bounds: tuple[int, int, int, int] | None
    background: tuple[int, int, int]
    properties: dict[str, str]
    associated_names: tuple[str, ...]

    #: prefix of the library's own properties (``openslide.mpp-x``, ``tiffslide.mpp-x``)
    _prefix = ""

    def __init__(
        self,
        path: str,
        reader: str,
        mpp: float | None,
        properties: Mapping[str, Any],
        level_dimensions: tuple[tuple[int, int], ...],
        level_downsamples: tuple[float, ...],
        associated_names: tuple[str, ...],
        format_name: str | None,
    ) -> None:
        self.path = path
        self.reader = reader
        self.closed = False
        self.properties = {str(k): str(v) for k, v in properties.items() if v is not None}
        self.level_dimensions = tuple((int(w), int(h)) for w, h in level_dimensions)
        self.level_downsamples = tuple(float(d) for d in level_downsamples)
        self.level_count = len(self.level_dimensions)
        if self.level_count == 0 or min(min(d) for d in self.level_dimensions) < 1:
            raise SlideError(f"{path}: the slide has no image pyramid (no levels, or an empty level 0)")
        self.dimensions = self.level_dimensions[0]
        self.associated_names = tuple(sorted(associated_names))
        self.format = format_name
        p = self._prefix
        self.vendor = self.properties.get(f"{p}.vendor") or None
        self.objective_power = _float_or_none(self.properties.get(f"{p}.objective-power"))
        self.background = parse_color(self.properties.get(f"{p}.background-color"))
        bounds = [_int_or_none(self.properties.get(f"{p}.bounds-{k}")) for k in ("x", "y", "width", "height")]
        bx, by, bw, bh = bounds
        self.bounds = (bx, by, bw, bh) if bx is not None and by is not None and bw and bh else None
        mpp_x = _float_or_none(self.properties.get(f"{p}.mpp-x"))
        mpp_y = _float_or_none(self.properties.get(f"{p}.mpp-y"))
        if mpp_x is not None and mpp_y is not None and abs(mpp_x - mpp_y) > MPP_TOLERANCE * mpp_x:
            # non-square pixels: mpp-x is used; both are kept where describe() and the outputs can see them
            self.properties["wsi_deblur.mpp-x"] = repr(mpp_x)
            self.properties["wsi_deblur.mpp-y"] = repr(mpp_y)
        self.slide_mpp = mpp_x
        self.mpp = mpp if mpp is not None else mpp_x
        # the pixel height where the slide records non-square pixels (an --mpp override states square ones)
        self.mpp_y = mpp_y if mpp is None and "wsi_deblur.mpp-y" in self.properties else None

    # -- backend hooks ---------------------------------------------------------------------------------------

    def _errors(self) -> tuple[type[BaseException], ...]:
        """Exception classes of the library that mean 'this file cannot be read or decoded'."""
        raise NotImplementedError

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB or RGBA uint8 (height, width, 3|4) of a region lying inside the level, in level coordinates."""
        raise NotImplementedError

    def _associated(self, name: str) -> Image.Image:
        raise NotImplementedError

    def _close(self) -> None:
        raise NotImplementedError

    # -- reading ---------------------------------------------------------------------------------------------

    def _check_level(self, level: int) -> None:
        if not 0 <= level < self.level_count:
            raise ValueError(
                f"{self.path}: level {level} does not exist (the slide has levels 0-{self.level_count - 1})"
            )

    def _region_rgba(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB(A) uint8 of any rectangle of a level; outside the level alpha is 0 (always RGBA then)."""
        if self.closed:
            raise SlideError(f"{self.path}: the slide has been closed; open it again to read from it")
        self._check_level(level)
        if width < 1 or height < 1:
            raise ValueError(f"{self.path}: region size must be at least 1x1 pixel, got {width}x{height}")
        level_w, level_h = self.level_dimensions[level]
        x0, y0 = max(x, 0), max(y, 0)
        x1, y1 = min(x + width, level_w), min(y + height, level_h)
        inside: np.ndarray | None = None
        if x1 > x0 and y1 > y0:
            try:
                raw = self._read_inside(level, x0, y0, x1 - x0, y1 - y0)
            except self._errors() as error:
                raise SlideError(
                    f"{self.path}: cannot decode level {level} region x={x0} y={y0} {x1 - x0}x{y1 - y0} "
                    f"({one_line(error)}); the file is damaged or truncated: copy it again from its source"
                ) from error
            inside = as_rgba(raw, self.path)
            if (x0, y0, x1, y1) == (x, y, x + width, y + height):
                return inside
        canvas = np.zeros((height, width, 4), dtype=np.uint8)
        if inside is not None:
            canvas[y0 - y : y1 - y, x0 - x : x1 - x, : inside.shape[2]] = inside
            if inside.shape[2] == 3:
                canvas[y0 - y : y1 - y, x0 - x : x1 - x, 3] = 255
        return canvas

    def read(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        """RGB uint8 (height, width, 3) of a rectangle of ``level``, in that level's own pixel coordinates.

        The rectangle may extend beyond the level (negative ``x``/``y`` too): that part, and whatever the
        library returns transparent, is the slide's background colour. With OpenSlide, a level whose
        downsample is not an integer is positioned to the nearest level-0 pixel (OpenSlide addresses regions
        in level-0 coordinates and resamples the remaining fraction of a pixel).
        """
        rgba = self._region_rgba(int(level), int(x), int(y), int(width), int(height))
        return composite(rgba, self.background)

    def read_associated(self, name: str) -> np.ndarray:
        """An associated image (``label``, ``macro``, ``thumbnail``, ...) as RGB uint8."""
        if name not in self.associated_names:
            have = ", ".join(self.associated_names) or "none"
            raise SlideError(f"{self.path}: no associated image named {name!r} (it has: {have})")
        try:
            image = self._associated(name)
            rgba = np.asarray(image.convert("RGBA"))
        except self._errors() as error:
            raise SlideError(
                f"{self.path}: cannot decode associated image {name!r} ({one_line(error)}); "
                "the file is damaged or truncated"
            ) from error
        return composite(rgba, self.background)

    def _tile_size(self, level: int) -> tuple[int, int]:
        p = self._prefix
        tw = _float_or_none(self.properties.get(f"{p}.level[{level}].tile-width"))
        th = _float_or_none(self.properties.get(f"{p}.level[{level}].tile-height"))
        return int(tw or DEFAULT_TILE), int(th or DEFAULT_TILE)

    def _best_level(self, width: int, height: int) -> int:
        """The smallest level still at least ``width`` x ``height`` (level 0 when none is)."""
        level = 0
        for index, (level_w, level_h) in enumerate(self.level_dimensions):
            if level_w >= width and level_h >= height:
                level = index
        return level

    def _view(self, max_size: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole slide shrunk to a longest side of at most ``max_size``: (RGB uint8, coverage 0-255).

        Read from the smallest level still at least the target size, in row strips of at most
        ``STRIP_BYTES``, block-averaged by the largest integer factor that keeps it at least the target size,
        then resized to the target by area averaging. Coverage is the share of scanned (opaque, inside the
        level) pixels.
        """
        if max_size < 1:
            raise ValueError(f"{self.path}: thumbnail size must be at least 1 pixel, got {max_size}")
        target_w, target_h = fit(*self.dimensions, max_size)
        level = self._best_level(target_w, target_h)
        level_w, level_h = self.level_dimensions[level]
        factor = max(1, min(level_w // target_w, level_h // target_h))
        rows = factor * max(1, STRIP_BYTES // (level_w * 3 * factor))
        strips: list[np.ndarray] = []
        for y in range(0, level_h, rows):
            rgba = self._region_rgba(level, 0, y, level_w, min(rows, level_h - y))
            if rgba.shape[2] == 3:
                coverage = np.full(rgba.shape[:2] + (1,), 255, dtype=np.uint8)
            else:
                coverage = rgba[..., 3:4]
            rgb = composite(rgba, self.background)
            strips.append(block_mean(np.concatenate([rgb, coverage], axis=2), factor))
        reduced = np.concatenate(strips, axis=0)
        if reduced.shape[1] != target_w or reduced.shape[0] != target_h:
            channels = [
                np.asarray(
                    Image.fromarray(np.ascontiguousarray(reduced[..., c])).resize(
                        (target_w, target_h), Image.Resampling.BOX
                    )
                )
                for c in range(4)
            ]
            reduced = np.stack(channels, axis=2)
        out = np.clip(np.rint(reduced), 0, 255).astype(np.uint8)
        return np.ascontiguousarray(out[..., :3]), np.ascontiguousarray(out[..., 3])

    def thumbnail(self, max_size: int) -> np.ndarray:
        """RGB uint8 view of the whole slide, longest side at most ``max_size``, from the best level."""
        return self._view(int(max_size))[0]

    # -- brightfield or fluorescence -------------------------------------------------------------------------

    def _metadata_illumination(self) -> tuple[bool, str] | None:
        """(is_brightfield, reason) from metadata that states the illumination, or None."""
        props = self.properties
        for key, value in props.items():
            if key.startswith("dicom.OpticalPathSequence") and "IlluminationTypeCodeSequence" in key:
                if key.endswith(".CodeValue") and value in _DICOM_FLUORESCENCE:
                    return False, "DICOM illumination type is epifluorescence"
                if key.endswith(".CodeValue") and value in _DICOM_BRIGHTFIELD:
                    return True, "DICOM illumination type is brightfield"
        source = props.get("leica.illumination-source", "").lower()
        if "fluorescence" in source:
            return False, f"Leica illumination source is {source!r}"
        if "brightfield" in source:
            return True, f"Leica illumination source is {source!r}"
        description = props.get("tiff.ImageDescription", "")
        if "<OME" in description:
            if (
                'IlluminationType="Epifluorescence"' in description
                or 'ContrastMethod="Fluorescence"' in description
            ):
                return False, "OME metadata names fluorescence illumination"
            if (
                'IlluminationType="Transmitted"' in description
                or 'ContrastMethod="Brightfield"' in description
            ):
                return True, "OME metadata names transmitted (brightfield) illumination"
        return None

    def _pixel_illumination(self) -> tuple[bool, str]:
        """(is_brightfield, reason) from a small view: bright background means brightfield."""
        rgb, coverage = self._view(BRIGHTFIELD_VIEW)
        scanned = rgb[coverage >= OPAQUE]
        if scanned.size == 0:
            return True, "no scanned pixels in the thumbnail; assumed brightfield"
        # Rec. 709 luma on the stored 8-bit values: a brightness measure, not a colorimetric one
        luminance = scanned.astype(np.float32) @ np.asarray([0.2126, 0.7152, 0.0722], dtype=np.float32)
        median = float(np.median(luminance))
        white = float((luminance >= NEAR_WHITE).mean())
        black = float((luminance <= NEAR_BLACK).mean())
        summary = (
            f"thumbnail median luminance {median:.0f}/255, {white:.0%} near-white, {black:.0%} near-black"
        )
        if median < DARK_MEDIAN:
            return False, f"{summary}: dark background, fluorescence"
        return True, f"{summary}: bright background, brightfield"

    @functools.cached_property
    def brightfield_verdict(self) -> tuple[bool, str]:
        """(is_brightfield, reason): metadata that states the illumination decides, else the thumbnail."""
        stated = self._metadata_illumination()
        from_pixels = self._pixel_illumination()
        if stated is None:
            return from_pixels
        agreement = "the thumbnail agrees" if stated[0] == from_pixels[0] else f"although {from_pixels[1]}"
        return stated[0], f"{stated[1]}; {agreement}"

    @property
    def is_brightfield(self) -> bool:
        """True for a brightfield slide (bright background), False for fluorescence (dark background)."""
        return self.brightfield_verdict[0]

    @property
    def brightfield_reason(self) -> str:
        """One short sentence saying why :attr:`is_brightfield` is what it is."""
        return self.brightfield_verdict[1]

    # -- lifetime --------------------------------------------------------------------------------------------

    def _verify(self) -> None:
        """Decode the smallest level (or a corner of it) and the first and last level-0 tiles."""
        last = self.level_count - 1
        lw, lh = self.level_dimensions[last]
        vw, vh = min(lw, VERIFY_VIEW), min(lh, VERIFY_VIEW)
        self._region_rgba(last, lw - vw, lh - vh, vw, vh)
        width, height = self.dimensions
        tw, th = self._tile_size(0)
        self._region_rgba(0, 0, 0, min(tw, width), min(th, height))
        x = (width - 1) // tw * tw
        y = (height - 1) // th * th
        self._region_rgba(0, x, y, width - x, height - y)

    def close(self) -> None:
        """Release the file; reads afterwards raise SlideError."""
        if not self.closed:
            self.closed = True
            self._close()

    def __enter__(self) -> SlideSource:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    def __repr__(self) -> str:
        w, h = self.dimensions
        return f"<{type(self).__name__} {self.path!r} {w}x{h}, {self.level_count} levels, mpp={self.mpp}>"
