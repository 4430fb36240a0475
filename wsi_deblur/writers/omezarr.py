"""The working OME-Zarr image: create it, write it block by block, build its pyramid, finalise its metadata.

A run creates an empty pyramid once (:func:`create_pyramid`), then many independent tasks (separate processes,
possibly on other machines sharing the filesystem) each write exactly one block of one level
(:func:`write_block` for level 0, :func:`downsample_block` for the levels below), and finally
:func:`.ngff_metadata.finalize` writes the OME-NGFF metadata. The finished group is a valid OME-Zarr image
that the pipeline moves into place as the ``.ome.zarr`` output, and that :mod:`wsi_deblur.writers.tiff` streams
into a TIFF.

On-disk layout (both NGFF versions)::

    /                      image group: multiscales, omero, and the run's provenance under "wsi_deblur"
    /0, /1, ...            uint8 (3, h_l, w_l), axes c, y, x; chunks (3, chunk, chunk); Blosc-zstd; fill 0
    /labels                labels group: {"labels": ["restored"]}
    /labels/restored       image-label group, same multiscales, colours per action code
    /labels/restored/0 ... uint8 (1, h_l, w_l), axes c, y, x; chunks (1, chunk, chunk)

The label image keeps the image's three axes with a channel axis of length 1: the NGFF labels section asks
each label dimension to match the image's or to be 1 where the label does not vary, and with the same axes the
label image shares the image's ``coordinateTransformations`` exactly. Its values are the action codes of
:data:`wsi_deblur.blurmap.ACTIONS` (0 untouched, 1 defocus, 2 motion, 3 motion+defocus).

NGFF 0.4 is stored as Zarr format 2 with ``/`` as dimension separator (what 0.4 requires); NGFF 0.5 as Zarr
format 3 with sharding, one shard per block, so that one task owns one shard (concurrent writes into one shard
lose data).
"""

from __future__ import annotations

import functools
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

import numpy as np
import zarr
import zarr.codecs
from numcodecs import Blosc
from ome_zarr.format import Format, FormatV04, FormatV05

__all__ = [
    "LABEL_NAME",
    "NGFF_VERSIONS",
    "PyramidLayout",
    "create_pyramid",
    "downsample_block",
    "pyramid_levels",
    "read_region",
    "write_block",
]

LOGGER = logging.getLogger(__name__)

#: OME-NGFF versions the writer produces: 0.4 (Zarr v2, read by QuPath and OMERO) and 0.5 (Zarr v3, sharded).
NGFF_VERSIONS: tuple[str, ...] = ("0.4", "0.5")
#: Name of the label image under ``labels/``: where the run changed pixels, by action code.
LABEL_NAME = "restored"
#: Key of the run's provenance in the image group's attributes.
PROVENANCE_KEY = "wsi_deblur"

_AXES = ("c", "y", "x")
#: Blosc with zstd at level 5: the compressor ome-zarr-py itself uses by default, lossless, fast to decode.
_BLOSC_CLEVEL = 5
#: Compression of a scratch pyramid nobody keeps (only TIFFs are asked for): Blosc LZ4 at level 1, about ten
#: times faster to write than zstd 5 on slide tiles and about 1.4 times larger (still lossless).
_SCRATCH: tuple[Literal["lz4"], int] = ("lz4", 1)


@dataclass(frozen=True)
class PyramidLayout:
    """Geometry of a working pyramid: level-0 size, number of levels, chunk and block sides, NGFF version.

    ``chunk`` is the side of a Zarr chunk (the unit of compression and of reading); ``block`` is the side of
    the square one task writes, a multiple of ``chunk`` so that no two tasks share a chunk (for NGFF 0.5 a
    block is one shard).
    """

    width: int
    height: int
    levels: int
    chunk: int = 512
    block: int = 1024
    ngff: str = "0.4"

    def __post_init__(self) -> None:
        if self.width < 1 or self.height < 1:
            raise ValueError(f"pyramid size must be positive, got {self.width} x {self.height}")
        if self.levels < 1:
            raise ValueError(f"a pyramid needs at least one level, got {self.levels}")
        if self.chunk < 1 or self.block < self.chunk or self.block % self.chunk:
            raise ValueError(f"block ({self.block}) must be a positive multiple of chunk ({self.chunk})")
        if self.ngff not in NGFF_VERSIONS:
            raise ValueError(
                f"NGFF version {self.ngff!r} is not supported; use one of {', '.join(NGFF_VERSIONS)}"
            )

    def level_shape(self, level: int) -> tuple[int, int]:
        """(height, width) of ``level``: level 0 halved ``level`` times, rounding up."""
        if not 0 <= level < self.levels:
            raise ValueError(f"level {level} is outside the pyramid (levels 0..{self.levels - 1})")
        factor = 2**level
        return (-(-self.height // factor), -(-self.width // factor))

    def blocks(self, level: int) -> list[tuple[int, int, int, int]]:
        """(y, x, h, w) of every block of ``level``, row by row, clipped to the level's edges."""
        height, width = self.level_shape(level)
        return [
            (y, x, min(self.block, height - y), min(self.block, width - x))
            for y in range(0, height, self.block)
            for x in range(0, width, self.block)
        ]


def pyramid_levels(width: int, height: int, min_size: int = 512) -> int:
    """Number of levels: level 0 halved (rounding up) until its longest side is at most ``min_size``."""
    if width < 1 or height < 1 or min_size < 1:
        raise ValueError(f"sizes must be positive, got {width} x {height} and min_size {min_size}")
    side, levels = max(width, height), 1
    while side > min_size:
        side = -(-side // 2)
        levels += 1
    return levels


def _format(ngff: str) -> Format:
    return FormatV04() if ngff == "0.4" else FormatV05()


def _label_group_path(level: int) -> str:
    return f"labels/{LABEL_NAME}/{level}"


def create_pyramid(path: str | Path, layout: PyramidLayout, labels: bool = True, scratch: bool = False) -> None:
    """Create the empty working image at ``path``: every image level and, if ``labels``, the label image.

    ``scratch``: the pyramid is only read back to write other formats, so it is compressed for speed (LZ4)
    rather than size (zstd, the default for a pyramid that is kept).

    The arrays exist afterwards, so tasks can write blocks straight away; the OME-NGFF metadata is written by
    :func:`.ngff_metadata.finalize`. An existing ``path`` is refused rather than overwritten.
    """
    path = Path(path)
    if path.exists():
        raise ValueError(f"{path}: already exists; remove it to start a new pyramid")
    fmt = _format(layout.ngff)
    root = zarr.open_group(str(path), mode="w-", zarr_format=fmt.zarr_format)
    label_group = root.require_group("labels").require_group(LABEL_NAME) if labels else None
    for level in range(layout.levels):
        height, width = layout.level_shape(level)
        _create_level(root, str(level), (3, height, width), layout, scratch)
        if label_group is not None:
            _create_level(label_group, str(level), (1, height, width), layout, scratch)
    LOGGER.debug("created %s: %d levels, NGFF %s", path, layout.levels, layout.ngff)


def _create_level(
    group: zarr.Group, name: str, shape: tuple[int, int, int], layout: PyramidLayout, scratch: bool
) -> None:
    channels = shape[0]
    cname: Literal["lz4", "zstd"]
    cname, clevel = _SCRATCH if scratch else ("zstd", _BLOSC_CLEVEL)
    chunks = (channels, layout.chunk, layout.chunk)
    if layout.ngff == "0.4":
        group.create_array(
            name,
            shape=shape,
            dtype="uint8",
            chunks=chunks,
            compressors=Blosc(cname=cname, clevel=clevel, shuffle=Blosc.SHUFFLE),
            fill_value=0,
            chunk_key_encoding={"name": "v2", "separator": "/"},
        )
    else:
        group.create_array(
            name,
            shape=shape,
            dtype="uint8",
            chunks=chunks,
            shards=(channels, layout.block, layout.block),
            compressors=zarr.codecs.BloscCodec(cname=cname, clevel=clevel, shuffle="shuffle"),
            fill_value=0,
            dimension_names=_AXES,
        )


# ---------------------------------------------------------------------------------------------------------
# Per-process array cache. Dask tasks write one block each; opening the array (reading its metadata) once per
# process instead of once per block keeps small blocks cheap. The key includes the metadata file's inode and
# modification time and size, so a pyramid deleted and created again at the same path is opened afresh.


@functools.lru_cache(maxsize=64)
def _open_cached(array_path: str, mode: str, stamp: tuple[int, int, int]) -> zarr.Array:
    return zarr.open_array(store=array_path, mode=mode)


def _open_level(path: str | Path, name: str, mode: str = "r") -> zarr.Array | None:
    """The array ``name`` of the pyramid at ``path``, or None when it does not exist."""
    array_path = os.path.join(os.fspath(path), name)
    for meta in ("zarr.json", ".zarray"):
        try:
            stat = os.stat(os.path.join(array_path, meta))
        except FileNotFoundError:
            continue
        return _open_cached(array_path, mode, (stat.st_ino, stat.st_mtime_ns, stat.st_size))
    return None


def _image_level(path: str | Path, level: int, mode: str = "r") -> zarr.Array:
    array = _open_level(path, str(level), mode)
    if array is None:
        raise ValueError(f"{path}: no image level {level} (is this a pyramid made by create_pyramid?)")
    return array


def _check_region(path: str | Path, array: zarr.Array, level: int, y: int, x: int, h: int, w: int) -> None:
    _, height, width = array.shape
    if h < 1 or w < 1 or y < 0 or x < 0 or y + h > height or x + w > width:
        raise ValueError(
            f"{path}: region (y={y}, x={x}, h={h}, w={w}) is outside level {level} ({height} x {width})"
        )


def _check_aligned(path: str | Path, array: zarr.Array, level: int, y: int, x: int, h: int, w: int) -> None:
    """A write must cover whole write units (shards, else chunks), clipped only at the level's edges."""
    _, height, width = array.shape
    unit = array.shards[1] if array.shards is not None else array.chunks[1]
    if y % unit or x % unit or (y + h != height and h % unit) or (x + w != width and w % unit):
        raise ValueError(
            f"{path}: block (y={y}, x={x}, h={h}, w={w}) of level {level} does not cover whole "
            f"{unit}-pixel chunks; blocks must come from PyramidLayout.blocks()"
        )


def _interleaved(chw: np.ndarray) -> np.ndarray:
    """(c, h, w) -> contiguous (h, w, c), one plane at a time (about four times as fast as a transposed
    copy: every TIFF tile is read this way)."""
    out = np.empty((*chw.shape[1:], chw.shape[0]), dtype=chw.dtype)
    for c in range(chw.shape[0]):
        out[..., c] = chw[c]
    return out


def _write_chw(
    path: str | Path, level: int, y: int, x: int, chw: np.ndarray, label: np.ndarray | None
) -> None:
    array = _image_level(path, level, "r+")
    h, w = chw.shape[1:]
    _check_region(path, array, level, y, x, h, w)
    _check_aligned(path, array, level, y, x, h, w)
    array[:, y : y + h, x : x + w] = chw
    if label is not None:
        label_array = _open_level(path, _label_group_path(level), "r+")
        if label_array is None:
            raise ValueError(f"{path}: has no label image (create_pyramid was called with labels=False)")
        label_array[0, y : y + h, x : x + w] = label


def write_block(
    path: str | Path, level: int, y: int, x: int, rgb: np.ndarray, label: np.ndarray | None = None
) -> None:
    """Write an (h, w, 3) uint8 RGB block at (y, x) of image level ``level``, and its (h, w) uint8 label.

    The block must be one of ``PyramidLayout.blocks(level)``: aligned to the block grid and clipped only at
    the level's edges, so that each chunk (each shard for NGFF 0.5) is written by exactly one task.
    """
    rgb = np.asarray(rgb)
    if rgb.ndim != 3 or rgb.shape[2] != 3 or rgb.dtype != np.uint8:
        raise ValueError(f"{path}: block must be (h, w, 3) uint8 RGB, got {rgb.shape} {rgb.dtype}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != rgb.shape[:2] or label.dtype != np.uint8:
            raise ValueError(
                f"{path}: label must be {rgb.shape[:2]} uint8 like the block, got {label.shape} {label.dtype}"
            )
    _write_chw(path, level, y, x, np.moveaxis(rgb, 2, 0), label)


def read_region(path: str | Path, level: int, y: int, x: int, h: int, w: int) -> np.ndarray:
    """The (h, w, 3) uint8 RGB pixels of image level ``level`` at (y, x), inside the level."""
    array = _image_level(path, level)
    _check_region(path, array, level, y, x, h, w)
    return _interleaved(_read_chw(array, y, x, h, w))


def _read_chw(array: zarr.Array, y: int, x: int, h: int, w: int) -> np.ndarray:
    return np.asarray(array[:, y : y + h, x : x + w])


def _halve(source: np.ndarray, h: int, w: int, combine: str) -> np.ndarray:
    """(c, h, w) from (c, <=2h, <=2w) by 2x2 cells; a missing odd edge row/column repeats the last one."""
    pad_y, pad_x = 2 * h - source.shape[1], 2 * w - source.shape[2]
    if pad_y or pad_x:
        source = np.pad(source, ((0, 0), (0, pad_y), (0, pad_x)), mode="edge")
    cells = (source[:, 0::2, 0::2], source[:, 0::2, 1::2], source[:, 1::2, 0::2], source[:, 1::2, 1::2])
    if combine == "or":
        return cells[0] | cells[1] | cells[2] | cells[3]
    total = sum((c.astype(np.uint16) for c in cells), np.zeros(cells[0].shape, np.uint16))
    # mean of four, rounded half up: (sum + 2) // 4 stays within 0..255
    return ((total + 2) >> 2).astype(np.uint8)


def downsample_block(path: str | Path, level: int, y: int, x: int, h: int, w: int) -> None:
    """Compute block (y, x, h, w) of ``level`` (>= 1) from level - 1 and write it.

    Image: the mean of each 2x2 cell, rounded half up. Label: the bitwise OR of each 2x2 cell; the action
    codes are bit flags (1 defocus, 2 motion, 3 both), so a lower level marks every action taken beneath it.
    At an odd edge the missing row or column repeats the last one (the mean of the pixels that exist).
    """
    if level < 1:
        raise ValueError(f"{path}: level {level} has no level above it to downsample from")
    source = _image_level(path, level - 1)
    _, src_height, src_width = source.shape
    sy, sx = 2 * y, 2 * x
    sh, sw = min(2 * h, src_height - sy), min(2 * w, src_width - sx)
    if sh < 1 or sw < 1:
        raise ValueError(f"{path}: block (y={y}, x={x}, h={h}, w={w}) is outside level {level}")
    image = _halve(_read_chw(source, sy, sx, sh, sw), h, w, "mean")
    label = None
    label_source = _open_level(path, _label_group_path(level - 1))
    if label_source is not None:
        label = _halve(_read_chw(label_source, sy, sx, sh, sw), h, w, "or")[0]
    _write_chw(path, level, y, x, image, label)
