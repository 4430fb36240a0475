"""Pyramidal TIFF and OME-TIFF from the working OME-Zarr image, streamed tile by tile.

Two layouts:

* plain pyramidal (Big)TIFF (``.tif``/``.tiff``): every level in the main IFD chain, level 0 first, the
  reduced levels with NewSubfileType 1; tiled; X/YResolution in pixels per centimetre. OpenSlide opens it as
  ``generic-tiff`` and tiffslide as a generic pyramid, and since OpenSlide 4.0 both report the pixel size
  (``openslide.mpp-x``, ``tiffslide.mpp-x``) from the resolution tags, so no vendor-style ImageDescription
  is needed. Associated images (label, macro), when given, follow the levels as untiled IFDs with
  NewSubfileType 0 and their name as ImageDescription: OpenSlide's generic-tiff driver takes only tiled
  directories as levels, so they never pass for one.
* OME-TIFF (``.ome.tif``): one image whose reduced levels live in SubIFDs, with OME-XML giving the pixel size
  in micrometres; read by Bio-Formats, OMERO and tiffslide. OpenSlide sees its level 0 only.

JPEG tiles are stored as YCbCr without chroma subsampling (4:4:4): what OpenSlide, tiffslide and QuPath all
decode, and a deblurring tool should not halve the colour resolution it has just restored (4:2:0 would make
files about 30% smaller at the cost of colour edges). Every file is BigTIFF, so that no slide size needs a
second code path. Tiles are read from the Zarr one at a time, so memory stays flat whatever the slide size.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import tifffile

from .omezarr import PyramidLayout, read_region

__all__ = ["TIFF_COMPRESSIONS", "check_tiff_options", "compression_options", "write_pyramidal_tiff"]

LOGGER = logging.getLogger(__name__)

#: Tile compressions OpenSlide, tiffslide and tifffile all read (OpenSlide rejects WebP, JPEG 2000, JPEG-XL).
TIFF_COMPRESSIONS: tuple[str, ...] = ("jpeg", "zstd", "deflate", "lzw", "none")
#: TIFF tiles must be a multiple of 16 pixels on each side (TIFF 6.0, section 15).
TILE_MULTIPLE = 16
#: Micrometres per centimetre: X/YResolution are written in pixels per centimetre.
UM_PER_CM = 10_000.0
#: Horizontal differencing (TIFF Predictor 2) helps the lossless dictionary coders on photographs.
_PREDICTED = {"deflate", "lzw", "zstd"}


def _cores() -> int:
    """Cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # not on Linux
        return max(1, os.cpu_count() or 1)


class _LevelTiles:
    """The tiles of one level, row by row, each (tile, tile, 3); edge tiles repeat the last row and column.

    tifffile stops pulling tiles after the last one without resuming the generator, so tiles are counted when
    handed over and reported at the start of the next row, and the last row by :meth:`flush`.
    """

    def __init__(
        self, zarr_path: str | Path, level: int, shape: tuple[int, int], tile: int,
        progress: Callable[[int], None] | None,
    ) -> None:
        self.zarr_path, self.level, self.shape = zarr_path, level, shape
        self.tile, self.progress = tile, progress
        self.pending = 0

    def flush(self) -> None:
        """Report the tiles handed over since the last report."""
        if self.progress is not None and self.pending:
            self.progress(self.pending)
        self.pending = 0

    def __iter__(self) -> Iterator[np.ndarray]:
        height, width = self.shape
        tile = self.tile
        for y in range(0, height, tile):
            self.flush()
            h = min(tile, height - y)
            for x in range(0, width, tile):
                w = min(tile, width - x)
                pixels = read_region(self.zarr_path, self.level, y, x, h, w)
                if h < tile or w < tile:
                    # repeat the edge rather than pad with black, which would ring into the edge's JPEG blocks
                    pixels = np.pad(pixels, ((0, tile - h), (0, tile - w), (0, 0)), mode="edge")
                self.pending += 1
                yield pixels


def check_tiff_options(
    out_path: Path, compression: str, quality: int, tile: int, mpp: float, mpp_y: float | None = None
) -> None:
    """Refuse a compression, JPEG quality, tile side or pixel size (width ``mpp``, height ``mpp_y``) no TIFF
    writer here can write."""
    if compression not in TIFF_COMPRESSIONS:
        raise ValueError(
            f"{out_path}: compression {compression!r} is not one of {', '.join(TIFF_COMPRESSIONS)}"
        )
    if compression == "jpeg" and not 1 <= quality <= 100:
        raise ValueError(f"{out_path}: JPEG quality must be 1 to 100, got {quality}")
    if tile < TILE_MULTIPLE or tile % TILE_MULTIPLE:
        raise ValueError(f"{out_path}: tile side must be a positive multiple of {TILE_MULTIPLE}, got {tile}")
    for size in (mpp,) if mpp_y is None else (mpp, mpp_y):
        if not (size > 0 and math.isfinite(size)):
            raise ValueError(f"{out_path}: pixel size must be a positive number of micrometres, got {size}")


def compression_options(compression: str, quality: int) -> dict[str, Any]:
    """tifffile's arguments for a tile compression (JPEG as YCbCr 4:4:4, a predictor for the lossless ones)."""
    if compression == "none":
        return {"compression": None}
    options: dict[str, Any] = {"compression": compression}
    if compression == "jpeg":
        options["compressionargs"] = {"level": quality}
        options["subsampling"] = (1, 1)
    elif compression in _PREDICTED:
        options["predictor"] = True
    return options


def write_pyramidal_tiff(
    zarr_path: str | Path,
    out_path: str | Path,
    layout: PyramidLayout,
    mpp: float,
    *,
    ome: bool = False,
    compression: str = "jpeg",
    quality: int = 90,
    tile: int = 512,
    description: str | None = None,
    software: str | None = None,
    associated: dict[str, np.ndarray] | None = None,
    progress: Callable[[int], None] | None = None,
    threads: int | None = None,
    mpp_y: float | None = None,
) -> None:
    """Write every level of the OME-Zarr image at ``zarr_path`` as a tiled pyramidal TIFF at ``out_path``.

    ``ome=False`` writes a plain pyramidal TIFF (OpenSlide, tiffslide, QuPath), ``ome=True`` an OME-TIFF with
    the levels in SubIFDs (Bio-Formats, OMERO). ``quality`` applies to JPEG only. ``description`` becomes the
    ImageDescription of level 0 in a plain TIFF and the image's Description in the OME-XML. ``associated``
    (name -> (h, w, 3) uint8 RGB) is appended to a plain TIFF only. ``progress(n)`` is called with the number
    of tiles written since its last call. ``threads`` compress tiles concurrently (default: every core this
    process may use; the export runs when the rest of the work is done). ``mpp`` is the pixel width at level 0
    (um) and ``mpp_y`` its height where pixels are not square (default: ``mpp``). ``out_path`` is written directly; a
    failed write leaves it partial.
    """
    out_path = Path(out_path)
    check_tiff_options(out_path, compression, quality, tile, mpp, mpp_y)
    height_um = mpp if mpp_y is None else mpp_y
    if associated and ome:
        raise ValueError(f"{out_path}: associated images are written to plain TIFFs only, not to OME-TIFF")
    for name, image in (associated or {}).items():
        if image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
            raise ValueError(f"{out_path}: associated image {name!r} must be (h, w, 3) uint8 RGB, got "
                             f"{image.shape} {image.dtype}")

    options = compression_options(compression, quality)
    common: dict[str, Any] = {
        "dtype": np.uint8,
        "tile": (tile, tile),
        "photometric": "rgb",
        "planarconfig": "contig",
        "resolutionunit": "CENTIMETER",
        "software": software,
        "maxworkers": threads or _cores(),
        **options,
    }
    with tifffile.TiffWriter(out_path, bigtiff=True, ome=ome) as tif:
        for level in range(layout.levels):
            height, width = layout.level_shape(level)
            per_cm = (UM_PER_CM / (mpp * 2**level), UM_PER_CM / (height_um * 2**level))
            extra: dict[str, Any] = {}
            if level == 0 and ome:
                extra["subifds"] = layout.levels - 1
                extra["metadata"] = {
                    "axes": "YXS",
                    "PhysicalSizeX": mpp,
                    "PhysicalSizeXUnit": "µm",
                    "PhysicalSizeY": height_um,
                    "PhysicalSizeYUnit": "µm",
                    "SignificantBits": 8,
                    **({"Description": description} if description else {}),
                }
            elif level == 0:
                extra["metadata"] = None
                extra["description"] = description
            else:
                extra["metadata"] = None
                extra["subfiletype"] = 1
            tiles = _LevelTiles(zarr_path, level, (height, width), tile, progress)
            tif.write(
                iter(tiles),
                shape=(height, width, 3),
                resolution=per_cm,
                **common,
                **extra,
            )
            tiles.flush()
        for name, image in (associated or {}).items():
            tif.write(
                image,
                photometric="rgb",
                description=name,
                metadata=None,
                software=software,
                subfiletype=0,
                **options,
            )
    kind = "OME-TIFF" if ome else "TIFF"
    LOGGER.debug("wrote %s (%s, %d levels, %s)", out_path, kind, layout.levels, compression)
