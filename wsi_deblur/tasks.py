"""Functions that run inside Dask workers: each opens what it needs through per-process caches.

Tasks receive small, picklable descriptions (paths, boxes, a window of the blur map) and return small results;
pixels never travel through the scheduler. Every block of the output is written by exactly one task, which then
leaves a marker file so that a resumed run knows the block is done.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .blurmap import decide
from .methods import get_method
from .restore import restore_box
from .slide import cached_slide
from .tiling import Box, cell_read_box
from .writers import omezarr, vipstiff


@dataclass(frozen=True)
class SlideKey:
    """How a worker opens the slide: path, reader and pixel-size override."""

    path: str
    reader: str
    mpp: float | None


@dataclass(frozen=True)
class ClassifyJob:
    slide: SlideKey
    cells: tuple[tuple[int, int], ...]
    tile_size: int
    method: str
    mpp: float
    precision: str = "auto"


@dataclass(frozen=True)
class ClassifyBlockJob:
    """Classify the tissue cells of one level-0 block (read once, whole) and write the block through when none
    of them asks for restoration: blending never changes a cell that is not restored, so those pixels are
    final. A block already marked done (an interrupted run) is classified but not written again."""

    classify: ClassifyJob
    zarr_path: str
    box: Box
    marker: str
    min_blur_probability: float


@dataclass(frozen=True)
class BlockJob:
    """Restore (or copy) one level-0 block and write it into the working pyramid."""

    slide: SlideKey
    zarr_path: str
    box: Box
    actions: np.ndarray  # window of the blur map's action codes around the block
    cell_origin: tuple[int, int]
    tile_size: int
    method: str
    mpp: float
    marker: str
    precision: str = "auto"
    #: Where a restored block goes when the outputs are written from the input slide (:mod:`.writers.vipstiff`):
    #: only restored blocks are written, as raw images, and no working pyramid exists.
    raster: str | None = None


@dataclass(frozen=True)
class DownsampleJob:
    zarr_path: str
    level: int
    box: Box
    marker: str


def load_method(method: str, precision: str) -> None:
    """Load a method's models into this worker's cache (a warm-up while the client computes the tissue mask)."""
    get_method(method, precision)


def classify_cells(job: ClassifyJob) -> tuple[tuple[tuple[int, int], ...], np.ndarray]:
    """Class probabilities (N, 4) for a group of cells."""
    source = cached_slide(job.slide.path, job.slide.reader, job.slide.mpp)
    width, height = source.dimensions
    tiles = []
    for row, col in job.cells:
        b = cell_read_box(row, col, job.tile_size, width, height)
        tiles.append(source.read(0, b.x, b.y, b.w, b.h))
    probabilities = get_method(job.method, job.precision).classify(np.stack(tiles), job.mpp)
    return job.cells, np.asarray(probabilities, dtype=np.float32)


def classify_block(job: ClassifyBlockJob) -> tuple[tuple[tuple[int, int], ...], np.ndarray, bool]:
    """Class probabilities (N, 4) for the block's tissue cells, and whether the block was written through."""
    spec = job.classify
    source = cached_slide(spec.slide.path, spec.slide.reader, spec.slide.mpp)
    width, height = source.dimensions
    box = job.box
    pixels = source.read(0, box.x, box.y, box.w, box.h)
    tiles = []
    for row, col in spec.cells:
        b = cell_read_box(row, col, spec.tile_size, width, height)
        if box.x <= b.x and box.y <= b.y and b.x + b.w <= box.x + box.w and b.y + b.h <= box.y + box.h:
            tiles.append(pixels[b.slices_in(box)])
        else:  # an edge cell's read box is shifted inward, across the block's border
            tiles.append(source.read(0, b.x, b.y, b.w, b.h))
    probabilities = np.asarray(get_method(spec.method, spec.precision).classify(np.stack(tiles), spec.mpp),
                               dtype=np.float32)
    _, actions = decide(probabilities, job.min_blur_probability)
    through = not bool(actions.any())
    if through and not Path(job.marker).exists():
        omezarr.write_block(job.zarr_path, 0, box.y, box.x, pixels, np.zeros(pixels.shape[:2], dtype=np.uint8))
        _mark_done(job.marker)
    return spec.cells, probabilities, through


def _mark_done(marker: str) -> None:
    path = Path(marker)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch()


def restore_block(job: BlockJob) -> bool:
    """Write one level-0 block (restored where its cells ask, copied through elsewhere); True if restored."""
    source = cached_slide(job.slide.path, job.slide.reader, job.slide.mpp)
    width, height = source.dimensions

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return source.read(0, x, y, w, h)

    pixels, label, restored = restore_box(
        read, width, height, job.box, job.actions, job.cell_origin, job.tile_size,
        get_method(job.method, job.precision), job.mpp
    )
    if job.raster is not None:
        if restored:  # a block left as it was is the input's pixels: the export reads it from the slide
            Path(job.raster).parent.mkdir(parents=True, exist_ok=True)
            vipstiff.write_raster(job.raster, pixels)
        return restored
    omezarr.write_block(job.zarr_path, 0, job.box.y, job.box.x, pixels, label)
    _mark_done(job.marker)
    return restored


def downsample_block(job: DownsampleJob) -> bool:
    """Write one block of a reduced level from the level above."""
    b = job.box
    omezarr.downsample_block(job.zarr_path, job.level, b.y, b.x, b.h, b.w)
    _mark_done(job.marker)
    return True
