"""The slide workflow: classify tiles, restore blurred blocks, build the pyramid, export, report.

Orchestration only: reading, tiling, methods, blending and writing live in their own modules. Work is spread over
a Dask cluster as one task per group of tiles (pass 1) and one task per output block (passes 2 and 3); the client
keeps only the blur map. See DESIGN.md, "Data flow".
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, Future, as_completed
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from ._types import OutputError, SlideError, UsageError
from ._version import __version__
from .blend import ramp_width
from .blurmap import DEFAULT_MIN_BLUR_PROBABILITY, BlurMap
from .cluster import dask_client, gpu_resources
from .methods import DEFAULT_METHOD, method_info
from .models.backend import PRECISIONS
from .report import write_report
from .slide import SlideSource, open_slide
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
from .workdir import WorkFolder, input_identity, work_folder
from .writers import omezarr
from .writers.tiff import TIFF_COMPRESSIONS, write_pyramidal_tiff

logger = logging.getLogger(__name__)

#: Output kinds by file ending (longest ending first).
OUTPUT_ENDINGS: tuple[tuple[str, str], ...] = (
    (".ome.zarr", "ome-zarr"),
    (".ome.tiff", "ome-tiff"),
    (".ome.tif", "ome-tiff"),
    (".tiff", "tiff"),
    (".tif", "tiff"),
)
#: Plausible pixel sizes (um/px) for a slide at level 0: from 100x oil (~0.05) to a 1x overview (~20).
MPP_RANGE = (0.05, 20.0)
#: Tissue tiles classified per task: enough work to amortise scheduling, small enough to balance load.
CELLS_PER_TASK = 8


def output_kind(path: Path) -> str:
    """The format an output path asks for, from its ending."""
    name = path.name.lower()
    for ending, kind in OUTPUT_ENDINGS:
        if name.endswith(ending) and len(name) > len(ending):
            return kind
    endings = ", ".join(e for e, _ in OUTPUT_ENDINGS)
    raise UsageError(f"{path}: unknown output format; end the name with one of {endings}")


@dataclass
class RunOptions:
    """Everything that steers a run besides the slide and the outputs."""

    method: str = DEFAULT_METHOD
    reader: str = "openslide"
    mpp: float | None = None
    tile_size: int = 512
    block: int = 1024
    chunk: int = 512
    ngff: str = "0.4"
    compression: str = "jpeg"
    quality: int = 90
    keep_associated: bool = False
    report_dir: Path | None = None
    scheduler: str | None = None
    workers: int | None = None
    gpus: int = 0
    precision: str = "auto"
    restart: bool = False
    overwrite: bool = False
    min_blur_probability: float = DEFAULT_MIN_BLUR_PROBABILITY
    progress: bool = True

    def check(self) -> None:
        if self.ngff not in omezarr.NGFF_VERSIONS:
            raise UsageError(f"--ngff must be one of {', '.join(omezarr.NGFF_VERSIONS)}, not {self.ngff!r}")
        if self.compression not in TIFF_COMPRESSIONS:
            raise UsageError(f"--compression must be one of {', '.join(TIFF_COMPRESSIONS)}, not {self.compression!r}")
        if not 1 <= self.quality <= 100:
            raise UsageError(f"--quality must be within 1..100, not {self.quality}")
        if self.mpp is not None and not MPP_RANGE[0] <= self.mpp <= MPP_RANGE[1]:
            raise UsageError(f"--mpp {self.mpp} is not a plausible pixel size (0.05 to 20 um/px)")
        if self.precision not in PRECISIONS:
            raise UsageError(f"--precision must be one of {', '.join(PRECISIONS)}, not {self.precision!r}")
        if self.gpus < 0:
            raise UsageError(f"--gpus must be 0 or more, not {self.gpus}")
        if self.gpus and self.scheduler:
            raise UsageError("--gpus starts a local GPU cluster; with --scheduler, start GPU workers there "
                             "(dask worker --resources GPU=1)")
        if self.gpus and importlib.util.find_spec("dask_cuda") is None:
            raise UsageError("--gpus needs dask-cuda on this machine (pip install dask-cuda)")
        if self.tile_size % 16 or self.block % self.chunk or self.chunk % 16:
            raise UsageError("tile and chunk sizes must be multiples of 16 and the block a multiple of the chunk")


@dataclass
class RunResult:
    """What a run produced."""

    outputs: list[Path]
    report_dir: Path
    summary: dict[str, Any]
    blurmap: BlurMap = field(repr=False)


# -- checks at the boundary ---------------------------------------------------------------------------------------


def _check_outputs(outputs: Sequence[Path], slide: Path, overwrite: bool) -> list[tuple[Path, str]]:
    if not outputs:
        raise UsageError("give at least one output with -o")
    resolved = [p.resolve() for p in outputs]
    if len(set(resolved)) != len(resolved):
        raise UsageError("the same output is given twice")
    checked = []
    for out in outputs:
        kind = output_kind(out)
        if out.resolve() == slide.resolve():
            raise OutputError(f"{out}: the output would overwrite the input slide")
        parent = out.resolve().parent
        if not parent.is_dir():
            raise OutputError(f"{out}: cannot write here: folder {parent} does not exist")
        if not os.access(parent, os.W_OK | os.X_OK):
            raise OutputError(f"{out}: cannot write here: folder {parent} is not writable")
        if out.exists() and not overwrite:
            raise OutputError(f"{out} already exists; pass --overwrite to replace it")
        checked.append((out, kind))
    return checked


def open_checked(path: Path, reader: str, mpp: float | None) -> SlideSource:
    """Open a slide for processing: brightfield, with a known pixel size."""
    source = open_slide(path, reader=reader, mpp=mpp)
    if not source.is_brightfield:
        source.close()
        raise SlideError(
            f"{path}: looks like a fluorescence slide (dark background); the models are for brightfield stains "
            "(H&E, IHC, Pap); `wsi-deblur info` shows why"
        )
    if source.mpp is None:
        source.close()
        raise SlideError(f"{path}: the slide records no pixel size; pass --mpp (um per pixel at level 0)")
    if not MPP_RANGE[0] <= source.mpp <= MPP_RANGE[1]:
        mpp = source.mpp
        source.close()
        raise SlideError(
            f"{path}: the recorded pixel size {mpp:g} um/px is not a microscope's (a default of image software?); "
            "pass --mpp (um per pixel at level 0)"
        )
    return source


def default_report_dir(first_output: Path) -> Path:
    """``NAME.report`` beside the first output (NAME without its format ending)."""
    name = first_output.name
    for ending, _ in OUTPUT_ENDINGS:
        if name.lower().endswith(ending):
            name = name[: -len(ending)]
            break
    return first_output.with_name(name + ".report")


# -- progress -----------------------------------------------------------------------------------------------------


def _progress(enabled: bool) -> Progress:
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
    # every worker loads the models (seconds) while this process finds the tissue
    warm_up = [
        client.submit(load_method, options.method, options.precision, workers=[address],
                      allow_other_workers=False, pure=False)
        for address in client.scheduler_info().get("workers", {})
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
        futures = client.map(classify_cells, [job(cells[i : i + CELLS_PER_TASK])
                                              for i in range(0, len(cells), CELLS_PER_TASK)], retries=2, pure=False)
    _gather(client, futures, progress, "classify", record)
    client.cancel(warm_up)
    return blurmap


def _block_job(
    blurmap: BlurMap, key: SlideKey, work: WorkFolder, box: Box, options: RunOptions, mpp: float
) -> BlockJob:
    reach = box.grow(ramp_width(blurmap.tile_size)).clip(blurmap.width, blurmap.height)
    rows, cols = cells_touching(reach, blurmap.tile_size, blurmap.shape)
    window = np.ascontiguousarray(blurmap.actions[rows, cols])
    return BlockJob(
        slide=key, zarr_path=str(work.zarr_path), box=box, actions=window,
        cell_origin=(rows.start, cols.start), tile_size=blurmap.tile_size, method=options.method, mpp=mpp,
        precision=options.precision,
        marker=str(work.marker(0, box.y, box.x)),
    )


def restore_slide(
    client: Client, blurmap: BlurMap, key: SlideKey, work: WorkFolder, layout: omezarr.PyramidLayout,
    options: RunOptions, mpp: float, progress: Progress,
) -> int:
    """Pass 2: every level-0 block written once, restored where the blur map asks. Returns blocks restored."""
    done = work.done_markers(0)
    jobs = [
        _block_job(blurmap, key, work, Box(x, y, w, h), options, mpp)
        for y, x, h, w in layout.blocks(0)
        if f"{y}_{x}" not in done
    ]
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


# -- exports ------------------------------------------------------------------------------------------------------


def _temporary_for(out: Path, work: WorkFolder) -> Path:
    """Where an output is written before it is moved into place (same filesystem as its final path)."""
    if out.resolve().parent == work.path.resolve().parent:
        return work.path / ("export-" + out.name)
    return out.with_name(out.name + ".partial-export")


def _replace(tmp: Path, out: Path) -> None:
    if out.is_dir() and not out.is_symlink():
        shutil.rmtree(out)
    elif out.exists():
        out.unlink()
    os.replace(tmp, out)


def export_outputs(
    client: Client, outputs: list[tuple[Path, str]], work: WorkFolder, layout: omezarr.PyramidLayout,
    options: RunOptions, mpp: float, provenance: dict[str, Any], associated: dict[str, np.ndarray],
    progress: Progress,
) -> None:
    """Write every requested output from the working pyramid, then move each into place."""
    software = f"wsi-deblur {__version__}"
    description = (
        f"wsi-deblur {__version__}; method {provenance['method']} {provenance['method_version']}"
    )
    pending: list[tuple[Path, Path, Future[Any] | None]] = []
    for out, kind in outputs:
        if kind == "ome-zarr":
            pending.append((out, work.zarr_path, None))
            continue
        tmp = _temporary_for(out, work)
        future = client.submit(
            write_pyramidal_tiff, str(work.zarr_path), str(tmp), layout, mpp,
            ome=(kind == "ome-tiff"), compression=options.compression, quality=options.quality,
            description=description, software=software,
            associated=associated if (kind == "tiff" and associated) else None,
            pure=False, retries=1,
        )
        pending.append((out, tmp, future))
    task = progress.add_task("export", total=len(pending))
    for _, _, pending_future in pending:
        if pending_future is not None:
            pending_future.result()
        progress.advance(task)
    zarr_targets = [out for out, _, f in pending if f is None]
    for out, tmp, export in pending:
        if export is not None:
            _replace(tmp, out)
    for i, out in enumerate(zarr_targets):
        if i + 1 < len(zarr_targets):
            tmp = out.with_name(out.name + ".partial-export")
            shutil.copytree(work.zarr_path, tmp)
            _replace(tmp, out)
        else:
            _replace(work.zarr_path, out)


# -- entry points -------------------------------------------------------------------------------------------------


def _fingerprint(slide: Path, options: RunOptions, mpp: float, method_version: str) -> dict[str, Any]:
    steering = {k: v for k, v in asdict(options).items() if k in (
        "method", "reader", "tile_size", "block", "chunk", "ngff", "min_blur_probability", "precision")}
    return {
        "input": input_identity(slide), "mpp": mpp, "options": steering,
        "method_version": method_version, "software": __version__,
    }


def _provenance(options: RunOptions, mpp: float, slide: Path) -> dict[str, Any]:
    version, models = method_info(options.method)
    return {
        "software": f"wsi-deblur {__version__}",
        "method": options.method,
        "method_version": version,
        "models": models,
        "precision": options.precision,
        "source": slide.name,
        "mpp": mpp,
    }


def run(
    slide: str | os.PathLike[str], outputs: Sequence[str | os.PathLike[str]], options: RunOptions | None = None
) -> RunResult:
    """Restore a slide's blurred regions and write each output (OME-Zarr, pyramidal TIFF, OME-TIFF) and a report."""
    options = options or RunOptions()
    options.check()
    slide_path = Path(slide)
    out_paths = [Path(o) for o in outputs]
    checked = _check_outputs(out_paths, slide_path, options.overwrite)
    method_info(options.method)  # unknown methods and missing models fail here, before any work
    started = time.perf_counter()
    with open_checked(slide_path, options.reader, options.mpp) as source:
        mpp = float(source.mpp)  # type: ignore[arg-type]  # open_checked guarantees it
        method_version, _ = method_info(options.method)
        work = WorkFolder(work_folder(out_paths[0]), _fingerprint(slide_path, options, mpp, method_version),
                          restart=options.restart)
        key = SlideKey(str(slide_path.resolve()), options.reader, options.mpp)
        width, height = source.dimensions
        layout = omezarr.PyramidLayout(
            width=width, height=height, levels=omezarr.pyramid_levels(width, height),
            chunk=options.chunk, block=options.block, ngff=options.ngff,
        )
        associated = {}
        if options.keep_associated:
            associated = {n: source.read_associated(n) for n in source.associated_names}
        provenance = _provenance(options, mpp, slide_path)
        timings: dict[str, float] = {}
        with _progress(options.progress) as progress, \
                dask_client(options.scheduler, options.workers, options.gpus) as client:
            if not work.zarr_path.exists():
                # kept as an output: zstd; only read back for TIFFs: LZ4, written several times faster
                kept = any(kind == "ome-zarr" for _, kind in checked)
                omezarr.create_pyramid(work.zarr_path, layout, scratch=not kept)
            t = time.perf_counter()
            if work.blurmap_path.exists():
                blurmap = BlurMap.load(work.blurmap_path)
            else:
                blurmap = classify_slide(client, source, key, options, mpp, progress, write_through=(work, layout))
                blurmap.save(work.blurmap_path)
            timings["classify_s"] = time.perf_counter() - t
            t = time.perf_counter()
            restore_slide(client, blurmap, key, work, layout, options, mpp, progress)
            timings["restore_s"] = time.perf_counter() - t
            t = time.perf_counter()
            build_pyramid(client, work, layout, progress)
            omezarr.finalize(work.zarr_path, layout, mpp, slide_path.stem, provenance)
            timings["pyramid_s"] = time.perf_counter() - t
            t = time.perf_counter()
            export_outputs(client, checked, work, layout, options, mpp, provenance, associated, progress)
            timings["export_s"] = time.perf_counter() - t
        report_dir = options.report_dir or default_report_dir(out_paths[0])
        timings["seconds"] = time.perf_counter() - started
        summary = _report(report_dir, blurmap, source, slide_path, mpp, provenance, timings,
                          [str(p) for p in out_paths])
    work.remove()
    return RunResult(outputs=out_paths, report_dir=report_dir, summary=summary, blurmap=blurmap)


def qc(
    slide: str | os.PathLike[str], report_dir: str | os.PathLike[str] | None = None,
    options: RunOptions | None = None,
) -> RunResult:
    """Classify a slide's tissue tiles and write the report only; no pixels are rewritten."""
    options = options or RunOptions()
    options.check()
    slide_path = Path(slide)
    method_info(options.method)
    started = time.perf_counter()
    with open_checked(slide_path, options.reader, options.mpp) as source:
        mpp = float(source.mpp)  # type: ignore[arg-type]
        key = SlideKey(str(slide_path.resolve()), options.reader, options.mpp)
        with _progress(options.progress) as progress, \
                dask_client(options.scheduler, options.workers, options.gpus) as client:
            blurmap = classify_slide(client, source, key, options, mpp, progress)
        target = Path(report_dir) if report_dir else Path.cwd() / (slide_path.stem + ".report")
        provenance = _provenance(options, mpp, slide_path)
        summary = _report(target, blurmap, source, slide_path, mpp, provenance,
                          {"seconds": time.perf_counter() - started}, [])
    return RunResult(outputs=[], report_dir=target, summary=summary, blurmap=blurmap)


def _report(
    directory: Path, blurmap: BlurMap, source: SlideSource, slide: Path, mpp: float, provenance: dict[str, Any],
    timings: dict[str, float], outputs: Iterable[str],
) -> dict[str, Any]:
    extra: dict[str, Any] = {**provenance, **{k: round(v, 3) for k, v in timings.items()}, "outputs": list(outputs)}
    extra["slide_path"] = str(slide.resolve())
    write_report(directory, blurmap, source.thumbnail(1024), slide_name=slide.name, mpp=mpp, extra=extra)
    from .report import read_summary

    return read_summary(directory)
