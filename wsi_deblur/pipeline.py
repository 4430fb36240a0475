"""The slide workflow: classify tiles, restore blurred blocks, build the pyramid, export, report.

Orchestration only: reading, tiling, methods, blending and writing live in their own modules. Work is spread over
a Dask cluster as one task per group of tiles (pass 1) and one task per output block (passes 2 and 3); the client
keeps only the blur map. See DESIGN.md, "Data flow".

The options and output kinds are in :mod:`.run_options`, the passes themselves in :mod:`.passes`; this module
checks the inputs, runs the passes in order, exports the outputs and writes the report.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Iterable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from distributed import Client, Future
from rich.progress import Progress

from . import blurmap as routing
from ._types import MPP_RANGE, OutputError, SlideError, UsageError
from ._version import __version__
from .blurmap import BlurMap
from .cluster import dask_client
from .methods import method_info
from .methods.classical import ClassicalMethod
from .passes import build_pyramid, classify_slide, progress_display, restore_slide
from .report import write_report
from .run_options import OUTPUT_ENDINGS, RunOptions, output_kind
from .slide import SlideSource, open_slide
from .tasks import (
    SlideKey,
)
from .workdir import WorkFolder, input_identity, work_folder
from .writers import ngff_metadata, omezarr, passtiff, vipstiff
from .writers.tiff import write_pyramidal_tiff

logger = logging.getLogger(__name__)


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
    progress: Progress, mpp_y: float | None = None,
) -> None:
    """Write every requested output from the working pyramid, then move each into place (``mpp_y``: the pixel
    height where pixels are not square)."""
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
            associated=associated if (kind == "tiff" and associated) else None, mpp_y=mpp_y,
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


def export_from_slide(
    outputs: list[tuple[Path, str]], work: WorkFolder, source: SlideSource, slide: Path, options: RunOptions,
    mpp: float, provenance: dict[str, Any], associated: dict[str, np.ndarray], progress: Progress,
    levels: list[passtiff.JpegTiling] | None = None, mpp_y: float | None = None,
) -> None:
    """Write every (plain TIFF) output from the input slide and the restored blocks, in this process, then move
    each into place: with ``levels`` (:func:`.writers.passtiff.layout`), the input's JPEG tiles that no restored
    block reaches are copied as they are; otherwise libvips decodes, reduces and encodes on every core."""
    description = f"wsi-deblur {__version__}; method {provenance['method']} {provenance['method_version']}"
    restored = work.rasters()
    task = progress.add_task("export", total=len(outputs))
    for out, _ in outputs:
        tmp = _temporary_for(out, work)
        if levels:
            passtiff.write_tiff_passthrough(
                slide, tmp, source.dimensions, options.block, restored, mpp, levels, quality=options.quality,
                description=description, associated=associated or None, mpp_y=mpp_y,
            )
        else:
            vipstiff.write_tiff_from_slide(
                slide, tmp, source.dimensions, options.block, restored, mpp, compression=options.compression,
                quality=options.quality, description=description, associated=associated or None, mpp_y=mpp_y,
            )
        _replace(tmp, out)
        progress.advance(task)


def _tiff_writer(from_slide: bool, levels: list[passtiff.JpegTiling] | None) -> str:
    """How the TIFF outputs were written, for the summary: the input's tiles, libvips, or tifffile."""
    return "input tiles" if levels else "libvips" if from_slide else "tifffile"


def _from_slide(outputs: list[tuple[Path, str]], source: SlideSource, slide: Path, compression: str) -> bool:
    """Whether the outputs can be written by libvips from the input slide (see :mod:`.writers.vipstiff`)."""
    if not (all(kind == "tiff" for _, kind in outputs) and vipstiff.writes(compression)):
        return False
    return vipstiff.same_level0(
        slide, source.dimensions, lambda x, y, w, h: source.read(0, x, y, w, h)
    )


# -- entry points -------------------------------------------------------------------------------------------------


def _fingerprint(slide: Path, options: RunOptions, mpp: float, method_version: str) -> dict[str, Any]:
    steering = {k: v for k, v in asdict(options).items() if k in (
        "method", "reader", "tile_size", "block", "chunk", "ngff", "min_blur_probability", "precision")}
    # the routing rule decides which networks a tile gets, so a folder of another rule's tiles is not resumed
    return {
        "input": input_identity(slide), "mpp": mpp, "options": steering,
        "method_version": method_version, "software": __version__,
        # DBMID's restorers refine the classical Wiener step's output, so its version matters to both methods
        "wiener": ClassicalMethod.version,
        "routing": {"plausible_probability": routing.PLAUSIBLE_PROBABILITY,
                    "defocus_alone_probability": routing.DEFOCUS_ALONE_PROBABILITY},
    }


def _provenance(options: RunOptions, mpp: float, slide: Path, mpp_y: float | None = None) -> dict[str, Any]:
    version, models = method_info(options.method)
    return {
        "software": f"wsi-deblur {__version__}",
        "method": options.method,
        "method_version": version,
        "models": models,
        "wiener": ClassicalMethod.version,
        "precision": options.precision,
        "source": slide.name,
        "mpp": mpp,
        **({"mpp_y": mpp_y} if mpp_y is not None else {}),
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
        provenance = _provenance(options, mpp, slide_path, source.mpp_y)
        # plain TIFFs only, from a slide libvips decodes as the run's reader does: no working pyramid
        from_slide = _from_slide(checked, source, slide_path, options.compression)
        # JPEG TIFFs from a JPEG-tiled pyramid: the input's tiles no restored block reaches are copied as they are
        levels = passtiff.layout(slide_path) if from_slide and options.compression == "jpeg" else None
        timings: dict[str, float] = {}
        with progress_display(options.progress) as progress, \
                dask_client(options.scheduler, options.workers, options.gpus) as client:
            if not from_slide and not work.zarr_path.exists():
                # kept as an output: zstd; only read back for TIFFs: LZ4, written several times faster
                kept = any(kind == "ome-zarr" for _, kind in checked)
                omezarr.create_pyramid(work.zarr_path, layout, scratch=not kept)
            t = time.perf_counter()
            if work.blurmap_path.exists():
                blurmap = BlurMap.load(work.blurmap_path)
            else:
                through = None if from_slide else (work, layout)
                blurmap = classify_slide(client, source, key, options, mpp, progress, write_through=through)
                blurmap.save(work.blurmap_path)
            timings["classify_s"] = time.perf_counter() - t
            t = time.perf_counter()
            restore_slide(client, blurmap, key, work, layout, options, mpp, progress, rasters=from_slide)
            timings["restore_s"] = time.perf_counter() - t
            t = time.perf_counter()
            if from_slide:
                export_from_slide(checked, work, source, slide_path, options, mpp, provenance, associated, progress,
                                  levels, mpp_y=source.mpp_y)
            else:
                build_pyramid(client, work, layout, progress)
                ngff_metadata.finalize(work.zarr_path, layout, mpp, slide_path.stem, provenance, source.mpp_y)
                timings["pyramid_s"] = time.perf_counter() - t
                t = time.perf_counter()
                export_outputs(client, checked, work, layout, options, mpp, provenance, associated, progress,
                               mpp_y=source.mpp_y)
            timings["export_s"] = time.perf_counter() - t
        report_dir = options.report_dir or default_report_dir(out_paths[0])
        timings["seconds"] = time.perf_counter() - started
        summary = _report(report_dir, blurmap, source, slide_path, mpp,
                          {**provenance, "tiff_writer": _tiff_writer(from_slide, levels)}, timings,
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
        with progress_display(options.progress) as progress, \
                dask_client(options.scheduler, options.workers, options.gpus) as client:
            blurmap = classify_slide(client, source, key, options, mpp, progress)
        target = Path(report_dir) if report_dir else Path.cwd() / (slide_path.stem + ".report")
        provenance = _provenance(options, mpp, slide_path, source.mpp_y)
        summary = _report(target, blurmap, source, slide_path, mpp, provenance,
                          {"seconds": time.perf_counter() - started}, [])
    return RunResult(outputs=[], report_dir=target, summary=summary, blurmap=blurmap)


def _report(
    directory: Path, blurmap: BlurMap, source: SlideSource, slide: Path, mpp: float, provenance: dict[str, Any],
    timings: dict[str, float], outputs: Iterable[str],
) -> dict[str, Any]:
    extra: dict[str, Any] = {**provenance, **{k: round(v, 3) for k, v in timings.items()}, "outputs": list(outputs)}
    extra["slide_path"] = str(slide.resolve())
    write_report(directory, blurmap, source.thumbnail(1024), slide_name=slide.name, mpp=mpp, extra=extra,
                 mpp_y=source.mpp_y)
    from .report import read_summary

    return read_summary(directory)
