"""Reading whole-slide images: one interface over OpenSlide (the default reader) and tiffslide.

A :class:`SlideSource` gives the pyramid's geometry, the pixel size and the other metadata the pipeline needs,
and reads any rectangle of any level as RGB uint8 in that level's own pixel coordinates. Pixels outside the
level, and pixels the library returns transparent (areas a scanner did not image), come back in the slide's
background colour. Slides are checked when they are opened: a few tiles are decoded, so that a truncated or
damaged file is reported there, in one line naming the file, and not deep inside a distributed run.

Neither library's slide object pickles: tasks running in Dask workers call :func:`cached_slide`, which opens
each slide once per process and reopens it when the file on disk changes.
"""

from __future__ import annotations

import functools
import math
import numbers
import os
import threading
from collections import OrderedDict
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import numpy as np
from PIL import Image

from ._types import SlideError
from .slide_files import (
    cannot_open,
    check_path,
    file_kind,
    one_line,
    openslide_errors,
    tiff_damage,
    tiffslide_errors,
)
from .slide_pixels import as_rgba, block_mean, composite, fit, parse_color

__all__ = ["READERS", "SlideSource", "cached_slide", "describe", "open_slide"]

#: Names accepted by ``open_slide(reader=...)``; the first is the default.
READERS: tuple[str, ...] = ("openslide", "tiffslide")

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

#: Slides kept open per process by :func:`cached_slide`: a worker usually works on one slide; a batch run may
#: interleave a few. Older entries are dropped from the cache (and closed by garbage collection once unused).
CACHE_SIZE = 8

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


class _OpenSlideSource(SlideSource):
    """OpenSlide backend: SVS, NDPI, MRXS, SCN, Philips, Ventana, DICOM, generic tiled TIFF."""

    _prefix = "openslide"

    def __init__(self, path: str, mpp: float | None) -> None:
        import openslide

        self._slide = openslide.OpenSlide(path)
        super().__init__(
            path,
            "openslide",
            mpp,
            dict(self._slide.properties),
            tuple(self._slide.level_dimensions),
            tuple(self._slide.level_downsamples),
            tuple(self._slide.associated_images.keys()),
            self._slide.properties.get("openslide.vendor"),
        )

    #: Vendors whose level 0 is the TIFF's first image as it stands (no bounds, no stitching).
    _PLAIN_TIFF_VENDORS = ("aperio", "generic-tiff")
    #: Side of the level-0 region both decoders must agree on before level 0 is read directly.
    _PROBE = 512

    _direct: Any = None  # a tiffslide handle on the same file, for level-0 reads (see enable_direct_reads)

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._direct is not None:
            return openslide_errors() + tiffslide_errors()
        return openslide_errors()

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if level == 0 and self._direct is not None:
            array = self._direct.read_region((x, y), 0, (width, height), as_array=True, padding=False)
            return np.asarray(array)
        downsample = self.level_downsamples[level]
        origin = (round(x * downsample), round(y * downsample))
        return np.asarray(self._slide.read_region(origin, level, (width, height)))

    def enable_direct_reads(self) -> bool:
        """Read level 0 of a plain JPEG-tiled TIFF (Aperio SVS, generic tiled TIFF) by decoding its tiles
        directly (tiffslide: tifffile and libjpeg-turbo), about three times as fast as OpenSlide's read, which
        composites through an ARGB canvas. Taken only when OpenSlide's level 0 is the file's first image, the
        file's image data are all inside it, and both decoders give the same pixels, bit for bit, on a probe
        region at the centre of level 0; otherwise OpenSlide reads everything. Returns whether it was taken."""
        if self.vendor not in self._PLAIN_TIFF_VENDORS or any(k.startswith("openslide.bounds-") for k in
                                                               self.properties):
            return False
        failures: tuple[type[BaseException], ...] = (*tiffslide_errors(), ImportError)
        try:
            import tifffile
            import tiffslide

            with tifffile.TiffFile(self.path) as tif:
                page = tif.pages.first
                if not page.is_tiled or page.compression != tifffile.COMPRESSION.JPEG:
                    return False
            if tiff_damage(self.path) is not None:
                return False
            direct = tiffslide.TiffSlide(self.path)
        except failures:
            return False
        width, height = self.dimensions
        if tuple(direct.level_dimensions[0]) != (width, height):
            direct.close()
            return False
        pw, ph = min(self._PROBE, width), min(self._PROBE, height)
        x, y = (width - pw) // 2, (height - ph) // 2
        try:
            theirs = composite(as_rgba(np.asarray(direct.read_region((x, y), 0, (pw, ph), as_array=True,
                                                                     padding=False)), self.path), self.background)
            ours = composite(as_rgba(np.asarray(self._slide.read_region((x, y), 0, (pw, ph))), self.path),
                             self.background)
        except (*openslide_errors(), *tiffslide_errors()):
            direct.close()
            return False
        if theirs.shape != ours.shape or not np.array_equal(theirs, ours):
            direct.close()
            return False
        self._direct = direct
        return True

    def _associated(self, name: str) -> Image.Image:
        return self._slide.associated_images[name]

    def _close(self) -> None:
        if self._direct is not None:
            self._direct.close()
        self._slide.close()


def _level0_origin(x: int, downsample: float) -> int:
    """The level-0 coordinate tiffslide maps to level coordinate ``x`` (it takes ``int(X / downsample)``)."""
    origin = round(x * downsample)
    while int(origin / downsample) < x:
        origin += 1
    while int(origin / downsample) > x:
        origin -= 1
    return origin


class _TiffSlideSource(SlideSource):
    """tiffslide backend: TIFF-based slides (SVS, NDPI, generic and OME-TIFF pyramids), pure Python."""

    _prefix = "tiffslide"

    def __init__(self, path: str, mpp: float | None) -> None:
        import tiffslide

        self._slide = tiffslide.TiffSlide(path)
        # tiffslide reads lazily: these attribute reads are where a bad file raises
        super().__init__(
            path,
            "tiffslide",
            mpp,
            dict(self._slide.properties),
            tuple(self._slide.level_dimensions),
            tuple(self._slide.level_downsamples),
            tuple(self._slide.associated_images.keys()),
            tiffslide.TiffSlide.detect_format(path),
        )

    def _errors(self) -> tuple[type[BaseException], ...]:
        return tiffslide_errors()

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        downsample = self.level_downsamples[level]
        origin = (_level0_origin(x, downsample), _level0_origin(y, downsample))
        array = self._slide.read_region(origin, level, (width, height), as_array=True, padding=False)
        return np.asarray(array)

    def _associated(self, name: str) -> Image.Image:
        return self._slide.associated_images[name]

    def _close(self) -> None:
        self._slide.close()


def open_slide(
    path: str | os.PathLike[str], reader: str = "openslide", mpp: float | None = None
) -> SlideSource:
    """Open and check a slide; ``mpp`` (um/px at level 0) overrides the slide's own pixel size.

    The file is verified by decoding a few tiles, so a truncated or damaged file raises :class:`SlideError`
    here, not in the middle of a run.
    """
    if reader not in READERS:
        raise ValueError(f"unknown slide reader {reader!r}; choose one of: {', '.join(READERS)}")
    if mpp is not None and not (isinstance(mpp, numbers.Real) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp!r}")
    name = os.path.abspath(os.fspath(path))
    check_path(name)
    kind = file_kind(name)
    if reader == "tiffslide" and kind == "dicom":
        raise SlideError(
            f"{name}: is a DICOM file; tiffslide reads TIFF-based slides only: use reader='openslide'"
        )
    override = float(mpp) if mpp is not None else None
    source: SlideSource
    if reader == "openslide":
        errors = openslide_errors()
        try:
            source = _OpenSlideSource(name, override)
        except errors as error:
            raise cannot_open(name, reader, error) from error
    else:
        errors = tiffslide_errors()
        try:
            source = _TiffSlideSource(name, override)
        except errors as error:
            raise cannot_open(name, reader, error) from error
        # tiffslide reads what it can of a truncated TIFF and drops the rest without raising
        damage = tiff_damage(name) if kind == "tiff" else None
        if damage is not None:
            source.close()
            raise SlideError(
                f"{name}: the file is truncated or damaged: {damage}; copy it again from its source"
            )
    try:
        source._verify()
    except SlideError:
        source.close()
        raise
    if isinstance(source, _OpenSlideSource) and kind == "tiff":
        source.enable_direct_reads()
    return source


_cache: OrderedDict[tuple[object, ...], SlideSource] = OrderedDict()
_cache_lock = threading.Lock()


def cached_slide(path: str, reader: str = "openslide", mpp: float | None = None) -> SlideSource:
    """The slide opened once per process (for Dask tasks); reopened when the file's size or mtime changes.

    Do not close the returned object: other tasks in the process share it.
    """
    name = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(name)
    except OSError:
        return open_slide(name, reader, mpp)  # raises the SlideError that says what is wrong
    # the process id guards against a forked child using its parent's file handles
    key = (name, reader, mpp, info.st_size, info.st_mtime_ns, os.getpid())
    with _cache_lock:
        source = _cache.get(key)
        if source is not None and not source.closed:
            _cache.move_to_end(key)
            return source
    source = open_slide(name, reader, mpp)
    with _cache_lock:
        existing = _cache.get(key)
        if existing is not None and not existing.closed:
            # another thread opened it meanwhile: keep one
            source.close()
            return existing
        for stale in [k for k in _cache if k[:3] == key[:3]]:
            del _cache[stale]
        _cache[key] = source
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return source


def _associated_size(source: SlideSource, name: str) -> tuple[int, int]:
    width = _float_or_none(source.properties.get(f"openslide.associated.{name}.width"))
    height = _float_or_none(source.properties.get(f"openslide.associated.{name}.height"))
    if width is not None and height is not None:
        return int(width), int(height)
    image = source.read_associated(name)
    return image.shape[1], image.shape[0]


def describe(source: SlideSource) -> dict[str, object]:
    """A JSON-able summary of a slide (what ``wsi-deblur info`` prints)."""
    width, height = source.dimensions
    associated = []
    for name in source.associated_names:
        aw, ah = _associated_size(source, name)
        associated.append({"name": name, "width": aw, "height": ah})
    bounds = None
    if source.bounds is not None:
        bx, by, bw, bh = source.bounds
        bounds = {"x": bx, "y": by, "width": bw, "height": bh}
    summary: dict[str, object] = {
        "path": source.path,
        "reader": source.reader,
        # OpenSlide slides whose level 0 is decoded directly (see _OpenSlideSource.enable_direct_reads)
        "level0_decoder": "tiffslide" if getattr(source, "_direct", None) is not None else source.reader,
        "vendor": source.vendor,
        "format": source.format,
        "width": width,
        "height": height,
        "levels": [
            {"level": i, "width": w, "height": h, "downsample": d}
            for i, ((w, h), d) in enumerate(
                zip(source.level_dimensions, source.level_downsamples, strict=True)
            )
        ],
        "mpp": source.mpp,
        "slide_mpp": source.slide_mpp,
        "objective_power": source.objective_power,
        "bounds": bounds,
        "background": "#{:02x}{:02x}{:02x}".format(*source.background),
        "associated": associated,
        "brightfield": source.is_brightfield,
        "brightfield_reason": source.brightfield_reason,
    }
    if "wsi_deblur.mpp-y" in source.properties:
        summary["mpp_y"] = float(source.properties["wsi_deblur.mpp-y"])
    return summary
