"""Pyramidal TIFF written by libvips straight from the input slide, with the restored blocks put in place.

When every output of a run is a plain pyramidal TIFF, the working OME-Zarr pyramid is not needed: the output is
the input's level 0 with a few blocks replaced. libvips reads level 0 from the slide file itself, takes each
restored block from a raw image in the work folder (one ``.v`` file per block, written by the worker that
restored it), puts each block row that holds one over the input as a strip, and builds the reduced levels and
encodes every tile in C on every core. An all-in-focus slide costs what a pyvips copy of it costs.

This only holds where libvips decodes a tiled level 0 exactly as the run's reader does: :func:`same_level0`
compares both on three windows of the slide. JPEG 2000 tiles (libvips is built without them), vendor formats
libvips does not read (MIRAX, DICOM, ...), a striped level 0 (NDPI), a level 0 that is not the file's first
image, or any pixel that differs send the run through the working pyramid and :mod:`.tiff` instead, and so does
a tile compression this libvips does not write (:func:`writes`; the libvips of the pyvips-binary wheel has no
zstd).

What differs from :func:`.tiff.write_pyramidal_tiff`: libvips stores JPEG tiles at quality 90 and above as RGB
JPEG (no colour transform, no chroma subsampling; about 1.6 times the size of YCbCr 4:4:4 on H&E tissue) and
below 90 as YCbCr 4:2:0; the pyramid ends at the first level that fits in one tile. The reduced levels are 2 x 2
means, like the working pyramid's.
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import pyvips
import tifffile

from .tiff import check_tiff_options, compression_options

__all__ = [
    "RASTER_SUFFIX", "append_associated", "level0_with_restored", "same_level0", "write_raster",
    "write_tiff_from_slide", "writes",
]

LOGGER = logging.getLogger(__name__)

#: File ending of a restored block in the work folder: libvips' own uncompressed format, opened by mapping it.
RASTER_SUFFIX = ".v"
#: Side of each probe window :func:`same_level0` compares.
PROBE = 256
#: Micrometres per millimetre: libvips keeps resolution in pixels per millimetre.
_UM_PER_MM = 1000.0
_LIBVIPS_COMPRESSION = {"jpeg": "jpeg", "zstd": "zstd", "deflate": "deflate", "lzw": "lzw", "none": "none"}
#: Image fields libvips needs to describe the pixels; every other field of the input (its vendor description,
#: ICC profile, XMP, ...) is dropped, as the working-pyramid route drops it.
_PIXEL_FIELDS = {
    "width", "height", "bands", "format", "coding", "interpretation", "xoffset", "yoffset", "xres", "yres",
    "filename",
}

RegionReader = Callable[[int, int, int, int], np.ndarray]


def _level0(slide: str | Path) -> pyvips.Image:
    return pyvips.Image.tiffload(os.fspath(slide), page=0, access="random")


def _pixels(image: pyvips.Image) -> np.ndarray:
    return np.ndarray(
        buffer=image.write_to_memory(), dtype=np.uint8, shape=(image.height, image.width, image.bands)
    )


def same_level0(slide: str | Path, dimensions: tuple[int, int], read: RegionReader) -> bool:
    """Whether libvips reads the slide's level 0 (its first TIFF image, tiled) with exactly the pixels ``read``
    gives.

    ``read(x, y, w, h)`` is the run's own reader at level 0. Compared on three windows of :data:`PROBE` pixels:
    the top-left corner, the centre and the bottom-right corner. Any file libvips cannot open or decode there
    gives False.
    """
    try:
        image = _level0(slide)
        if (image.width, image.height) != tuple(dimensions) or image.bands != 3 or image.format != "uchar":
            return False
        if not image.get_typeof("tile-width"):
            # a striped level 0 (NDPI: one JPEG strip for the whole level) would be decoded whole for each
            # region libvips asks for
            LOGGER.debug("%s: level 0 is not tiled in libvips", slide)
            return False
        width, height = dimensions
        w, h = min(PROBE, width), min(PROBE, height)
        for x, y in ((0, 0), ((width - w) // 2, (height - h) // 2), (width - w, height - h)):
            if not np.array_equal(_pixels(image.crop(x, y, w, h)), read(x, y, w, h)):
                LOGGER.debug("%s: libvips decodes level 0 differently at (%d, %d)", slide, x, y)
                return False
    except pyvips.Error as error:
        LOGGER.debug("%s: libvips does not read level 0: %s", slide, str(error).strip().splitlines()[0])
        return False
    return True


@functools.cache
def writes(compression: str) -> bool:
    """Whether this libvips writes TIFF tiles with ``compression`` (its libtiff may lack zstd, for one)."""
    if compression not in _LIBVIPS_COMPRESSION:
        return False
    try:
        pyvips.Image.black(32, 32, bands=3).tiffsave_buffer(
            tile=True, tile_width=16, tile_height=16, **_save_options(compression, 90)
        )
    except pyvips.Error:
        return False
    return True


def write_raster(path: str | Path, pixels: np.ndarray) -> None:
    """Write an (h, w, 3) uint8 block as an uncompressed libvips image, atomically (written, then renamed)."""
    pixels = np.ascontiguousarray(pixels)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise ValueError(f"{path}: block must be (h, w, 3) uint8 RGB, got {pixels.shape} {pixels.dtype}")
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp" + RASTER_SUFFIX)
    pyvips.Image.new_from_array(pixels, interpretation="srgb").write_to_file(os.fspath(tmp))
    os.replace(tmp, path)


def _save_options(compression: str, quality: int) -> dict[str, Any]:
    options: dict[str, Any] = {"compression": _LIBVIPS_COMPRESSION[compression]}
    if compression == "jpeg":
        options["Q"] = quality
    elif compression in ("zstd", "deflate", "lzw"):
        options["predictor"] = "horizontal"
    return options


def level0_with_restored(
    slide: str | Path, dimensions: tuple[int, int], block: int, restored: Mapping[tuple[int, int], str | Path]
) -> pyvips.Image:
    """The slide's level 0 in libvips with each ``restored`` block (see :func:`write_tiff_from_slide`) in
    place."""
    width, height = dimensions
    base = _level0(slide)
    if (base.width, base.height) != (width, height):
        raise ValueError(f"{slide}: level 0 is {base.width} x {base.height} in libvips, not {width} x {height}")
    image = base
    # one strip per block row that holds a restored block, inserted over the input: a few operations deep, and
    # about 60 MB less memory on a 50k slide than one join over every block of the slide
    for y in sorted({y for y, _ in restored}):
        h = min(block, height - y)
        cells = []
        for x in range(0, width, block):
            w = min(block, width - x)
            raster = restored.get((y, x))
            if raster is None:
                cells.append(base.crop(x, y, w, h))
                continue
            cell = pyvips.Image.new_from_file(os.fspath(raster), access="random")
            if (cell.width, cell.height, cell.bands) != (w, h, 3):
                raise ValueError(f"{raster}: holds {cell.width} x {cell.height} x {cell.bands}, not the "
                                 f"{w} x {h} x 3 block at (y={y}, x={x})")
            cells.append(cell)
        # the last block is narrower: it sits at the left of a block-wide cell, and the crop trims the rest
        strip = pyvips.Image.arrayjoin(cells, across=len(cells)).crop(0, 0, width, h)
        image = image.insert(strip, 0, y)
    return image


def append_associated(
    out_path: str | Path, associated: dict[str, np.ndarray] | None, compression: str, quality: int
) -> None:
    """Append ``associated`` images (name -> (h, w, 3) uint8) after the levels of ``out_path`` as untiled images
    named by their ImageDescription, as in :func:`.tiff.write_pyramidal_tiff`."""
    if not associated:
        return
    options = compression_options(compression, quality)
    with tifffile.TiffWriter(out_path, append=True) as tif:
        for name, pixels in associated.items():
            tif.write(pixels, photometric="rgb", description=name, metadata=None, subfiletype=0, **options)


def write_tiff_from_slide(
    slide: str | Path,
    out_path: str | Path,
    dimensions: tuple[int, int],
    block: int,
    restored: Mapping[tuple[int, int], str | Path],
    mpp: float,
    *,
    compression: str = "jpeg",
    quality: int = 90,
    tile: int = 512,
    description: str | None = None,
    associated: dict[str, np.ndarray] | None = None,
    mpp_y: float | None = None,
) -> None:
    """Write the slide's level 0, with ``restored`` blocks in place, as a tiled pyramidal BigTIFF.

    ``restored`` maps a block's (y, x) on the ``block`` grid to its raster (:func:`write_raster`), which must be
    the block's size clipped at the slide's edges. Every other block is the input's pixels. ``description``
    becomes level 0's ImageDescription; ``associated`` (name -> (h, w, 3) uint8) follows the levels as untiled
    images named by their ImageDescription, as in :func:`.tiff.write_pyramidal_tiff`. ``mpp_y`` is the pixel
    height where pixels are not square (default: ``mpp``). ``out_path`` is written directly; a failed write
    leaves it partial.
    """
    out_path = Path(out_path)
    check_tiff_options(out_path, compression, quality, tile, mpp, mpp_y)
    image = level0_with_restored(slide, dimensions, block, restored)
    # a fresh header: only the pixels' description and the run's own metadata
    height_um = mpp if mpp_y is None else mpp_y
    image = image.copy(interpretation="srgb", xres=_UM_PER_MM / mpp, yres=_UM_PER_MM / height_um)
    for name in image.get_fields():
        if name not in _PIXEL_FIELDS:
            image.remove(name)
    if description:
        image.set_type(pyvips.GValue.gstr_type, "image-description", description)
    image.tiffsave(
        os.fspath(out_path), tile=True, tile_width=tile, tile_height=tile, pyramid=True, bigtiff=True,
        resunit="cm", **_save_options(compression, quality),
    )
    append_associated(out_path, associated, compression, quality)
    LOGGER.debug("wrote %s through libvips (%d restored blocks, %s)", out_path, len(restored), compression)
