"""Pyramidal JPEG TIFF whose untouched level-0 tiles are the input's own compressed bytes.

When the input's level 0 is a JPEG-tiled TIFF and the output is a JPEG TIFF, a tile no restored pixel touches
need not be decoded and encoded again: it is copied byte for byte, so what was in focus is exactly what the
scanner wrote (no second JPEG generation) and costs only its bytes. Only the tiles that hold a restored pixel
are encoded, at the run's quality, on the input's tile grid and with the input's JPEG colour layout, so that one
file holds both and every reader decodes both: photometric RGB tiles as RGB JPEG (no colour transform),
photometric YCbCr tiles as YCbCr JPEG with the file's chroma subsampling; each encoded tile carries its own
tables, which take precedence over the file's shared JPEGTables.

The reduced levels are the input's own, passed through the same way: the output has the input's pyramid (its
downsamples, 2x or 4x per level as the scanner wrote them). A reduced-level tile whose footprint on level 0 meets a
restored block is made again from the output's level 0 (the input with the restored blocks in place, see
:mod:`.vipstiff`) as rounded means over the level's downsample, and encoded like a level-0 tile.

:func:`layout` decides whether a slide qualifies. Level 0 is the file's first image; it and every other tiled
image of the file (its reduced levels) are 8-bit RGB JPEG tiles, photometric RGB or YCbCr, with tile sides that
are multiples of 16; each reduced level's size is level 0's over a power of two (within a pixel); there is at
least one reduced level; and a round trip on each level (its first tile decoded, encoded as restored tiles are,
and decoded again by the file's own decoding rules) gives back the tile. A slide that does not qualify is
written by :mod:`.vipstiff` instead.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyvips
import tifffile

from ..slide_tiles import decode_segment, read_segment
from .tiff import check_tiff_options
from .vipstiff import _UM_PER_MM, _pixels, append_associated, level0_with_restored

__all__ = ["JpegTiling", "layout", "write_tiff_passthrough"]

LOGGER = logging.getLogger(__name__)

#: TIFF photometric interpretations whose JPEG tiles this writer can add to.
_PHOTOMETRIC_RGB = 2
_PHOTOMETRIC_YCBCR = 6
#: YCbCrSubsampling (horizontal, vertical) to libjpeg's chroma subsampling.
_SUBSAMPLING = {(1, 1): "444", (2, 1): "422", (2, 2): "420", (1, 2): "440"}
#: Round trip of the probe tile: the largest mean and largest single difference (JPEG at quality 95) allowed.
PROBE_MEAN_ERROR = 2.0
PROBE_MAX_ERROR = 48


@dataclass(frozen=True)
class JpegTiling:
    """How one level of the input is tiled and how a new tile is encoded to sit among its tiles."""

    page: int  # index of the level's image in the file
    downsample: int  # 1 for level 0
    shape: tuple[int, int]  # (height, width)
    tile: tuple[int, int]  # (height, width)
    photometric: int
    subsampling: tuple[int, int] | None  # YCbCrSubsampling for YCbCr, None for RGB
    jpegtables: bytes | None

    def encode_options(self) -> dict[str, Any]:
        """imagecodecs.jpeg8_encode's colour options for a tile of this layout."""
        if self.photometric == _PHOTOMETRIC_RGB:
            return {"colorspace": "RGB", "outcolorspace": "RGB", "subsampling": "444"}
        return {"colorspace": "RGB", "outcolorspace": "YCBCR",
                "subsampling": _SUBSAMPLING[self.subsampling or (2, 2)]}

    def encode(self, pixels: np.ndarray, quality: int) -> bytes:
        """One full-size tile (edge tiles padded by replication) as a complete JPEG stream."""
        import imagecodecs

        th, tw = self.tile
        h, w = pixels.shape[:2]
        if (h, w) != (th, tw):
            pixels = np.pad(pixels, ((0, th - h), (0, tw - w), (0, 0)), mode="edge")
        return bytes(imagecodecs.jpeg8_encode(np.ascontiguousarray(pixels), level=quality,
                                              **self.encode_options()))

    def tile_options(self) -> dict[str, Any]:
        """tifffile's options that write this level's tags for its JPEG tiles as they are (for JPEG, tifffile's
        ``photometric`` is the pixels' colour space; the tag it writes is ``outcolorspace``)."""
        ycbcr = self.photometric == _PHOTOMETRIC_YCBCR
        return {
            "shape": (*self.shape, 3), "dtype": np.uint8, "tile": self.tile, "compression": "jpeg",
            "photometric": "rgb", "jpegtables": self.jpegtables,
            "subsampling": (self.subsampling or (2, 2)) if ycbcr else (1, 1),
            "compressionargs": {"outcolorspace": "YCBCR" if ycbcr else "RGB"},
        }


def _page(tif: tifffile.TiffFile, index: int) -> tifffile.TiffPage:
    page = tif.pages[index]
    if not isinstance(page, tifffile.TiffPage):
        raise ValueError(f"image {index} of the file could not be parsed")
    return page


def _level(tif: tifffile.TiffFile, index: int, base: tuple[int, int] | None) -> JpegTiling | None:
    """The tiling of page ``index`` (level 0 when ``base`` is None, else a reduced level of a level 0 of shape
    ``base``) when it qualifies (see the module docstring), round trip included; else None."""
    page = _page(tif, index)
    tile = page.tile
    if not (page.is_tiled and page.compression == tifffile.COMPRESSION.JPEG and page.samplesperpixel == 3
            and page.bitspersample == 8 and page.planarconfig == tifffile.PLANARCONFIG.CONTIG
            and page.photometric in (_PHOTOMETRIC_RGB, _PHOTOMETRIC_YCBCR)
            and tile is not None and len(tile) == 2 and tile[0] % 16 == 0 and tile[1] % 16 == 0):
        return None
    height, width = (int(n) for n in page.shape[:2])
    downsample = 1
    if base is not None:
        downsample = 2 ** max(0, round(np.log2(base[1] / width)))
        if downsample < 2 or abs(width - base[1] / downsample) > 1 or abs(height - base[0] / downsample) > 1:
            return None
    subsampling: tuple[int, int] | None = None
    if page.photometric == _PHOTOMETRIC_YCBCR:
        h_sub, v_sub = page.subsampling or (2, 2)
        subsampling = (int(h_sub), int(v_sub))
        if subsampling not in _SUBSAMPLING:
            return None
    tiling = JpegTiling(index, downsample, (height, width), (int(tile[0]), int(tile[1])),
                        int(page.photometric), subsampling, page.jpegtables)
    original = decode_segment(page, read_segment(tif.filehandle, page, 0), 0)
    if original.shape[2] != 3:
        return None
    again = decode_segment(page, tiling.encode(original, 95), 0)
    difference = np.abs(again.astype(np.int16) - original.astype(np.int16))
    if difference.mean() > PROBE_MEAN_ERROR or difference.max() > PROBE_MAX_ERROR:
        LOGGER.debug("%s: page %d: round trip error %.2f mean, %d max", tif.filehandle.name, index,
                     difference.mean(), difference.max())
        return None
    return tiling


def layout(slide: str | Path) -> list[JpegTiling] | None:
    """The JPEG tiling of each level of ``slide``, level 0 first, when its tiles can be passed through (see the
    module docstring); else None."""
    try:
        with tifffile.TiffFile(os.fspath(slide)) as tif:
            level0 = _level(tif, 0, None)
            if level0 is None:
                return None
            levels = [level0]
            for index in range(1, len(tif.pages)):
                if _page(tif, index).is_tiled:
                    level = _level(tif, index, level0.shape)
                    if level is None:
                        return None
                    levels.append(level)
    except (OSError, ValueError, KeyError, IndexError, RuntimeError, tifffile.TiffFileError):
        return None
    except Exception as error:  # imagecodecs' codec errors (DelayedImportError, JpegError, ...)
        LOGGER.debug("%s: no tile pass-through (%s)", slide, error)
        return None
    downsamples = [level.downsample for level in levels]
    if len(levels) < 2 or downsamples != sorted(set(downsamples)):
        return None
    return levels


def _mean(pixels: np.ndarray, factor: int) -> np.ndarray:
    """Rounded means over ``factor`` x ``factor`` blocks (a partial block at the edge: of its own pixels)."""
    if factor == 1:
        return pixels
    h, w = pixels.shape[:2]
    sums = np.add.reduceat(np.add.reduceat(pixels.astype(np.uint32), np.arange(0, h, factor), axis=0),
                           np.arange(0, w, factor), axis=1)
    counts = np.outer(np.diff(np.append(np.arange(0, h, factor), h)), np.diff(np.append(np.arange(0, w, factor), w)))
    return ((sums + counts[..., None] // 2) // counts[..., None]).astype(np.uint8)


def _segments(
    tif: tifffile.TiffFile, level: JpegTiling, composed: pyvips.Image, blocks: _RestoredBlocks, quality: int,
    counts: dict[str, int],
) -> Iterator[bytes]:
    """A level's tiles in file order: the input's bytes where no restored block reaches the tile; else the tile
    encoded again: on level 0 the output's pixels (only where they differ from the input's), on a reduced level
    the input's tile with each restored block's footprint replaced by the block's rounded means."""
    page = _page(tif, level.page)
    height, width = level.shape
    th, tw = level.tile
    f = level.downsample
    across = -(-width // tw)
    for index in range(len(page.dataoffsets)):
        y, x = (index // across) * th, (index % across) * tw
        raw = read_segment(tif.filehandle, page, index)
        reaching = blocks.reaching(y * f, x * f, (y + th) * f, (x + tw) * f)
        if not reaching:
            yield raw
            continue
        h, w = min(th, height - y), min(tw, width - x)
        if f == 1:
            pixels = _pixels(composed.crop(x, y, w, h))
            if np.array_equal(pixels, decode_segment(page, raw, index)[:h, :w]):
                yield raw  # inside a restored block, but not a restored pixel
                continue
        else:
            pixels = decode_segment(page, raw, index)[:h, :w].copy()
            for by, bx in reaching:
                reduced = blocks.reduced(by, bx, f)
                # the block's footprint on this level (blocks are multiples of the downsample up to its size)
                ry, rx = by // f - y, bx // f - x
                top, left = max(0, ry), max(0, rx)
                bottom, right = min(h, ry + reduced.shape[0]), min(w, rx + reduced.shape[1])
                if bottom > top and right > left:
                    pixels[top:bottom, left:right] = reduced[top - ry : bottom - ry, left - rx : right - rx]
        counts["encoded"] += 1
        yield level.encode(pixels, quality)


class _RestoredBlocks:
    """The restored blocks of a run: where they are, and their pixels reduced to each level (cached)."""

    def __init__(self, restored: Mapping[tuple[int, int], str | Path], block: int, width: int, height: int):
        self.paths = dict(restored)
        self.boxes = [(y, x, min(block, height - y), min(block, width - x)) for y, x in self.paths]
        self._reduced: dict[tuple[int, int, int], np.ndarray] = {}

    def reaching(self, y0: int, x0: int, y1: int, x1: int) -> list[tuple[int, int]]:
        """(y, x) of the blocks that overlap level-0 rows y0..y1 and columns x0..x1."""
        return [(by, bx) for by, bx, bh, bw in self.boxes if y0 < by + bh and by < y1 and x0 < bx + bw and bx < x1]

    def reduced(self, y: int, x: int, factor: int) -> np.ndarray:
        key = (y, x, factor)
        if key not in self._reduced:
            image = pyvips.Image.new_from_file(os.fspath(self.paths[(y, x)]), access="sequential")
            self._reduced[key] = _mean(_pixels(image), factor)
        return self._reduced[key]


def write_tiff_passthrough(
    slide: str | Path,
    out_path: str | Path,
    dimensions: tuple[int, int],
    block: int,
    restored: Mapping[tuple[int, int], str | Path],
    mpp: float,
    levels: list[JpegTiling],
    *,
    quality: int = 90,
    description: str | None = None,
    associated: dict[str, np.ndarray] | None = None,
    mpp_y: float | None = None,
) -> int:
    """Write the slide with ``restored`` blocks in place (see :func:`.vipstiff.write_tiff_from_slide` for
    ``restored``) as a tiled pyramidal JPEG BigTIFF with the input's levels, whose tiles no restored block reaches
    are the input's bytes.

    ``levels`` comes from :func:`layout`; ``mpp_y`` is the pixel height where pixels are not square (default:
    ``mpp``). Returns the number of tiles encoded (all levels). ``out_path`` is
    written directly; a failed write leaves it partial.
    """
    out_path = Path(out_path)
    check_tiff_options(out_path, "jpeg", quality, levels[0].tile[1], mpp, mpp_y)
    width, height = dimensions
    if levels[0].shape != (height, width):
        raise ValueError(f"{slide}: level 0 is {levels[0].shape[1]} x {levels[0].shape[0]}, not {width} x {height}")
    composed = level0_with_restored(slide, dimensions, block, restored)
    counts = {"encoded": 0}
    blocks = _RestoredBlocks(restored, block, width, height)
    per_cm_x = _UM_PER_MM * 10.0 / mpp
    per_cm_y = _UM_PER_MM * 10.0 / (mpp if mpp_y is None else mpp_y)
    with tifffile.TiffFile(os.fspath(slide)) as src, tifffile.TiffWriter(out_path, bigtiff=True) as out:
        for level in levels:
            f = level.downsample
            out.write(
                _segments(src, level, composed, blocks, quality, counts),
                resolution=(per_cm_x * level.shape[1] / width, per_cm_y * level.shape[0] / height),
                resolutionunit="CENTIMETER", subfiletype=0 if f == 1 else 1, metadata=None,
                description=description if f == 1 else None, **level.tile_options(),
            )
    append_associated(out_path, associated, "jpeg", quality)
    LOGGER.debug("wrote %s with the input's tiles (%d encoded)", out_path, counts["encoded"])
    return counts["encoded"]
