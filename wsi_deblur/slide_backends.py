"""The reading libraries behind :class:`.slide_source.SlideSource`: OpenSlide (the default) and tiffslide."""

from __future__ import annotations

from typing import Any

import numpy as np
from PIL import Image

from .slide_files import openslide_errors, tiff_damage, tiffslide_errors
from .slide_pixels import as_rgba, composite
from .slide_source import SlideSource
from .slide_tiles import JpegLevel0


def _described(slide: Any) -> tuple[dict[str, str], tuple[Any, ...], tuple[float, ...], tuple[str, ...]]:
    """Properties, level dimensions, level downsamples and associated image names of an OpenSlide or tiffslide
    handle (the two share this API), in the order :class:`.slide_source.SlideSource` takes them."""
    return (dict(slide.properties), tuple(slide.level_dimensions), tuple(slide.level_downsamples),
            tuple(slide.associated_images.keys()))


class _OpenSlideSource(SlideSource):
    """OpenSlide backend: SVS, NDPI, MRXS, SCN, Philips, Ventana, DICOM, generic tiled TIFF."""

    _prefix = "openslide"

    def __init__(self, path: str, mpp: float | None) -> None:
        import openslide

        self._slide = openslide.OpenSlide(path)
        super().__init__(path, "openslide", mpp, *_described(self._slide),
                         self._slide.properties.get("openslide.vendor"))

    #: Vendors whose level 0 is the TIFF's first image as it stands (no bounds, no stitching).
    _PLAIN_TIFF_VENDORS = ("aperio", "generic-tiff")
    #: Side of the level-0 region both decoders must agree on before level 0 is read directly.
    _PROBE = 512

    _direct: JpegLevel0 | None = None  # level 0 decoded tile by tile (see enable_direct_reads)

    def _errors(self) -> tuple[type[BaseException], ...]:
        if self._direct is not None:
            return openslide_errors() + tiffslide_errors()
        return openslide_errors()

    def _read_inside(self, level: int, x: int, y: int, width: int, height: int) -> np.ndarray:
        if level == 0 and self._direct is not None:
            return self._direct.read(x, y, width, height)
        downsample = self.level_downsamples[level]
        origin = (round(x * downsample), round(y * downsample))
        return np.asarray(self._slide.read_region(origin, level, (width, height)))

    def enable_direct_reads(self) -> bool:
        """Read level 0 of a plain JPEG-tiled TIFF (Aperio SVS, generic tiled TIFF) by decoding its tiles
        directly (:class:`.slide_tiles.JpegLevel0`: tifffile's decoder, libjpeg-turbo), several times as fast
        as OpenSlide's read, which composites through an ARGB canvas. Taken only when OpenSlide's level 0 is the
        file's first image, the file's image data are all inside it, every tile is stored, and both decoders give
        the same pixels, bit for bit, on a probe region at the centre of level 0; otherwise OpenSlide reads
        everything. Returns whether it was taken."""
        if self.vendor not in self._PLAIN_TIFF_VENDORS or any(k.startswith("openslide.bounds-") for k in
                                                               self.properties):
            return False
        failures: tuple[type[BaseException], ...] = (*tiffslide_errors(), ImportError, ValueError)
        try:
            if tiff_damage(self.path) is not None:
                return False
            direct = JpegLevel0(self.path)
        except failures:
            return False
        width, height = self.dimensions
        if (direct.width, direct.height) != (width, height):
            direct.close()
            return False
        pw, ph = min(self._PROBE, width), min(self._PROBE, height)
        x, y = (width - pw) // 2, (height - ph) // 2
        try:
            theirs = composite(as_rgba(direct.read(x, y, pw, ph), self.path), self.background)
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
        super().__init__(path, "tiffslide", mpp, *_described(self._slide), tiffslide.TiffSlide.detect_format(path))

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
