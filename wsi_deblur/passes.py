"""The three passes of a slide run on a Dask cluster: classify (pass 1), restore or copy each level-0 block
(pass 2), build the reduced levels (pass 3). Each submits small job descriptions (:mod:`.tasks`) and gathers
small results; pixels never travel through the client or the scheduler."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from distributed import Client, Future, as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from .blend import ramp_width
from .blurmap import BlurMap
from .cluster import gpu_resources
from .run_options import RunOptions
from .slide import SlideSource
from .tasks import (
    BlockJob,
    ClassifyBlockJob,
    ClassifyJob,
    DownsampleJob,
    SlideKey,
    classify_block,
    classify_cells,
    downsample_block,
    load_method,
    restore_block,
)
from .tiling import Box, cells_touching
from .tissue import MASK_SIZE, tissue_cells, tissue_mask
from .workdir import WorkFolder
from .writers import omezarr

#: Tissue tiles classified per task: at least this many, to amortise scheduling and the classifier's cost per
#: call, and up to :data:`MAX_CELLS_PER_TASK` on large slides (:func:`cells_per_task`).
CELLS_PER_TASK = 8
#: Tiles per task on large slides: one call of the classifier network over 32 tiles' crops costs about a tenth
#: less per tile than calls over 8 (side by side on one core, 960 tissue tiles of the 50k benchmark slide).
MAX_CELLS_PER_TASK = 32


def cells_per_task(cells: int, workers: int) -> int:
    """Tiles per classification task: about a quarter of each worker's share, so that every worker gets several
    tasks and a slow one does not hold up the pass, between :data:`CELLS_PER_TASK` and
    :data:`MAX_CELLS_PER_TASK`."""
    return min(MAX_CELLS_PER_TASK, max(CELLS_PER_TASK, cells // (4 * max(1, workers))))


# -- progress -----------------------------------------------------------------------------------------------------


def progress_display(enabled: bool) -> Progress:
    """The terminal progress bars of a run's passes (off with ``enabled`` False)."""
    return Progress(
        TextColumn("{task.description:<10}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TextColumn("eta"),
        TimeRemainingColumn(),
        disable=not enabled,
        transient=False,
    )


def _gather(
    client: Client, futures: list[Future], progress: Progress, label: str, on_result: Callable[[Any], None]
) -> None:
    task = progress.add_task(label, total=len(futures))
    for future in as_completed(futures):
        on_result(future.result())
        progress.advance(task)
        future.release()


# -- the passes ---------------------------------------------------------------------------------------------------


def classify_slide(
    client: Client, source: SlideSource, key: SlideKey, options: RunOptions, mpp: float, progress: Progress,
    write_through: tuple[WorkFolder, omezarr.PyramidLayout] | None = None,
) -> BlurMap:
    """Pass 1: tissue mask, then class probabilities for every tissue tile.

    With ``write_through`` (the run's work folder and pyramid, the block a multiple of the tile size), one task
    per level-0 block that holds tissue reads the block once, classifies its cells and writes the block into
    the working pyramid when none of them is to be restored (pass 2 then skips it): in-focus tissue is decoded
    once, not twice.
    """
    width, height = source.dimensions
    workers = list(client.scheduler_info().get("workers", {}))
    # every worker loads the models (seconds) while this process finds the tissue
    warm_up = [
        client.submit(load_method, options.method, options.precision, workers=[address],
                      allow_other_workers=False, pure=False)
        for address in workers
    ]
    mask = tissue_mask(source.thumbnail(MASK_SIZE))
    tissue = tissue_cells(mask, width, height, options.tile_size)
    blurmap = BlurMap.empty(width, height, options.tile_size, tissue)
    cells = [(int(r), int(c)) for r, c in zip(*np.nonzero(tissue), strict=True)]

    def job(group: Sequence[tuple[int, int]]) -> ClassifyJob:
        return ClassifyJob(key, tuple(group), options.tile_size, options.method, mpp, options.precision)

    def record(result: tuple[Any, ...]) -> None:
        blurmap.set_probabilities(list(result[0]), result[1], options.min_blur_probability)

    futures: list[Future[Any]]
    if write_through is not None and options.block % options.tile_size == 0:
        work, layout = write_through
        per_block = options.block // options.tile_size
        groups: dict[tuple[int, int], list[tuple[int, int]]] = {}
        for r, c in cells:
            groups.setdefault((r // per_block, c // per_block), []).append((r, c))
        block_jobs = []
        for (br, bc), group in groups.items():
            y, x = br * options.block, bc * options.block
            box = Box(x, y, min(options.block, width - x), min(options.block, height - y))
            block_jobs.append(ClassifyBlockJob(job(group), str(work.zarr_path), box, str(work.marker(0, y, x)),
                                               options.min_blur_probability))
        futures = client.map(classify_block, block_jobs, retries=2, pure=False)
    else:
        per_task = cells_per_task(len(cells), len(workers))
        futures = client.map(classify_cells, [job(cells[i : i + per_task])
                                              for i in range(0, len(cells), per_task)], retries=2, pure=False)
    _gather(client, futures, progress, "classify", record)
    client.cancel(warm_up)
    return blurmap


def _action_window(blurmap: BlurMap, box: Box) -> tuple[slice, slice, np.ndarray]:
    """The rows, columns and action codes of the cells within the blend ramp's reach of ``box``."""
    reach = box.grow(ramp_width(blurmap.tile_size)).clip(blurmap.width, blurmap.height)
    rows, cols = cells_touching(reach, blurmap.tile_size, blurmap.shape)
    return rows, cols, np.ascontiguousarray(blurmap.actions[rows, cols])


def blocks_to_restore(blurmap: BlurMap, boxes: Sequence[Box]) -> list[Box]:
    """The blocks with a cell to restore within the blend ramp's reach (action > 0; background cells are -1)."""
    return [box for box in boxes if bool((_action_window(blurmap, box)[2] > 0).any())]


def _block_job(
    blurmap: BlurMap, key: SlideKey, work: WorkFolder, box: Box, options: RunOptions, mpp: float, rasters: bool
) -> BlockJob:
    rows, cols, window = _action_window(blurmap, box)
    return BlockJob(
        slide=key, zarr_path=str(work.zarr_path), box=box, actions=window,
        cell_origin=(rows.start, cols.start), tile_size=blurmap.tile_size, method=options.method, mpp=mpp,
        precision=options.precision,
        marker=str(work.marker(0, box.y, box.x)),
        raster=str(work.raster(box.y, box.x)) if rasters else None,
    )


def restore_slide(
    client: Client, blurmap: BlurMap, key: SlideKey, work: WorkFolder, layout: omezarr.PyramidLayout,
    options: RunOptions, mpp: float, progress: Progress, rasters: bool = False,
) -> int:
    """Pass 2: every level-0 block written once, restored where the blur map asks. Returns blocks restored.

    With ``rasters`` (the outputs are written from the input slide), only the blocks the blur map touches are
    run, and only those restored are written, each as a raw image in the work folder.
    """
    boxes = [Box(x, y, w, h) for y, x, h, w in layout.blocks(0)]
    if rasters:
        written = work.rasters()
        boxes = [b for b in blocks_to_restore(blurmap, boxes) if (b.y, b.x) not in written]
    else:
        done = work.done_markers(0)
        boxes = [b for b in boxes if f"{b.y}_{b.x}" not in done]
    jobs = [_block_job(blurmap, key, work, box, options, mpp, rasters) for box in boxes]
    restored = 0

    def count(result: bool) -> None:
        nonlocal restored
        restored += int(result)

    # on GPU workers where the cluster has them (DESIGN.md: a resource nobody has would wait forever)
    resources = gpu_resources(client)
    futures = client.map(restore_block, jobs, retries=2, pure=False, resources=resources)
    _gather(client, futures, progress, "restore", count)
    return restored


def build_pyramid(client: Client, work: WorkFolder, layout: omezarr.PyramidLayout, progress: Progress) -> None:
    """Pass 3: each reduced level from the one above, one task per block, level by level."""
    jobs_per_level = []
    for level in range(1, layout.levels):
        done = work.done_markers(level)
        jobs_per_level.append([
            DownsampleJob(str(work.zarr_path), level, Box(x, y, w, h), str(work.marker(level, y, x)))
            for y, x, h, w in layout.blocks(level)
            if f"{y}_{x}" not in done
        ])
    task = progress.add_task("pyramid", total=sum(len(j) for j in jobs_per_level))
    for jobs in jobs_per_level:
        for future in as_completed(client.map(downsample_block, jobs, retries=2, pure=False)):
            future.result()
            progress.advance(task)
