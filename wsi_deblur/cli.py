"""The ``wsi-deblur`` command: parse, call the library, report.

Exit codes: 0 success, 1 failure (one line saying why), 2 usage error. Heavy imports (Dask, TensorFlow) happen
inside the commands, after the arguments have been checked.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from ._types import DEFAULT_MPP, OutputError, UsageError, check_mpp_option
from ._version import __version__
from .cli_errors import errors as _errors
from .cli_models import evaluate, train

if TYPE_CHECKING:
    from .image_files import Stated

F = TypeVar("F", bound=Callable[..., Any])
READERS = ("openslide", "tiffslide")
# kept in step with wsi_deblur.methods (imported lazily there: the networks pull in Keras)
METHOD_NAMES = ("dbmid", "classical")
DEFAULT_METHOD = "dbmid"
IMAGE_ENDINGS = (".png", ".tif", ".tiff", ".jpg", ".jpeg", ".bmp")
IMAGE_MPP_HELP = f"Pixel size in um/px [what the file states (OME-TIFF, TIFF, PNG, JPEG), else {DEFAULT_MPP}]."


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="wsi-deblur")
@click.option("-v", "--verbose", count=True, help="More log output (-vv for debug).")
@click.option("-q", "--quiet", is_flag=True, help="No progress bars; errors only.")
@click.pass_context
def main(ctx: click.Context, verbose: int, quiet: bool) -> None:
    """Find and remove defocus and motion blur in whole-slide pathology images."""
    level = logging.ERROR if quiet else (logging.WARNING, logging.INFO, logging.DEBUG)[min(verbose, 2)]
    logging.basicConfig(level=level, format="%(levelname)s %(name)s: %(message)s")
    # the libraries underneath are chatty at INFO (Dask) or log decoder complaints before we raise a clear error
    for name in ("distributed", "tifffile", "tiffslide", "numcodecs", "absl"):
        logging.getLogger(name).setLevel(level if verbose >= 2 else max(level, logging.ERROR))
    ctx.obj = {"quiet": quiet}


def _slide_argument() -> Callable[[F], F]:
    return click.argument("slide", type=click.Path(path_type=Path))


_precision_option = click.option(
    "--precision", type=click.Choice(["auto", "float32", "bfloat16"]), default="auto", show_default=True,
    help="Network arithmetic; auto: bfloat16 where the CPU has it (AMX or AVX512-BF16), else float32.")


def _common_slide_options(func: F) -> F:
    options = [
        click.option("--reader", type=click.Choice(READERS), default="openslide", show_default=True,
                     help="Slide reader (tiffslide reads OME-TIFF SubIFD pyramids and fsspec URLs)."),
        click.option("--mpp", type=float, default=None,
                     help="Pixel size at level 0 in um/px, for slides that do not record it (or to override)."),
        click.option("--method", type=click.Choice(METHOD_NAMES), default=DEFAULT_METHOD, show_default=True,
                     help="dbmid: the trained networks; classical: image statistics and blind deconvolution."),
        click.option("--scheduler", default=None, metavar="ADDRESS",
                     help="Run on an existing Dask cluster (tcp://host:port or a scheduler file) "
                          "instead of a local one."),
        click.option("--workers", type=int, default=None, help="Worker processes of the local cluster [cores]."),
        _precision_option,
        click.option("--gpus", type=int, default=0, show_default=True,
                     help="Local cluster of this many GPU workers instead (dask-cuda); restoration runs on them."),
        click.option("--tile-size", type=int, default=512, show_default=True,
                     help="Classification tile (blur map cell) in level-0 pixels."),
    ]
    for option in reversed(options):
        func = option(func)
    return func


@main.command()
@_slide_argument()
@click.option("-o", "--output", "outputs", multiple=True, required=True, type=click.Path(path_type=Path),
              help="Output; the ending picks the format: .ome.zarr, .tif/.tiff (pyramidal TIFF), .ome.tif. "
                   "Repeat for several.")
@_common_slide_options
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder [NAME.report beside the first output].")
@click.option("--ngff", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True,
              help="OME-Zarr version: 0.4 (QuPath, OMERO) or 0.5 (sharded; napari, vizarr, Neuroglancer).")
@click.option("--compression", type=click.Choice(["jpeg", "zstd", "deflate", "lzw", "none"]), default="jpeg",
              show_default=True, help="TIFF tile compression (OME-Zarr is always lossless zstd).")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality.")
@click.option("--keep-associated", is_flag=True,
              help="Copy label and macro images into the TIFF (labels can carry patient identifiers).")
@click.option("--restart", is_flag=True, help="Throw away partial work of an earlier run and start again.")
@click.option("--overwrite", is_flag=True, help="Replace outputs that already exist.")
@click.pass_context
@_errors
def run(ctx: click.Context, slide: Path, outputs: tuple[Path, ...], reader: str, mpp: float | None, method: str,
        scheduler: str | None, workers: int | None, precision: str, gpus: int, tile_size: int,
        report_dir: Path | None, ngff: str,
        compression: str, quality: int, keep_associated: bool, restart: bool, overwrite: bool) -> None:
    """Restore the blurred regions of SLIDE and write each OUTPUT plus a QC report."""
    from .pipeline import RunOptions, output_kind
    from .pipeline import run as run_slide

    for out in outputs:
        output_kind(out)  # usage errors before any work
    options = RunOptions(
        method=method, reader=reader, mpp=mpp, tile_size=tile_size, ngff=ngff, compression=compression,
        quality=quality, keep_associated=keep_associated, report_dir=report_dir, scheduler=scheduler,
        workers=workers, gpus=gpus, precision=precision, restart=restart, overwrite=overwrite,
        progress=not ctx.obj["quiet"],
    )
    result = run_slide(slide, outputs, options)
    s = result.summary
    click.echo(
        f"{slide.name}: {s.get('tiles', 0)} tissue tiles, {s.get('restored_tiles', 0)} restored "
        f"in {s.get('seconds', 0):.1f} s"
    )
    for out in result.outputs:
        click.echo(f"  output  {out}")
    click.echo(f"  report  {result.report_dir}")


@main.command()
@_slide_argument()
@_common_slide_options
@click.option("--report", "report_dir", type=click.Path(path_type=Path), default=None,
              help="Report folder [./NAME.report].")
@click.pass_context
@_errors
def qc(ctx: click.Context, slide: Path, reader: str, mpp: float | None, method: str, scheduler: str | None,
       workers: int | None, precision: str, gpus: int, tile_size: int, report_dir: Path | None) -> None:
    """Classify SLIDE's tissue tiles and write the blur report only (no pixels rewritten)."""
    from .pipeline import RunOptions
    from .pipeline import qc as qc_slide

    options = RunOptions(method=method, reader=reader, mpp=mpp, tile_size=tile_size, scheduler=scheduler,
                         workers=workers, gpus=gpus, precision=precision, progress=not ctx.obj["quiet"])
    result = qc_slide(slide, report_dir, options)
    s = result.summary
    fractions = s.get("class_fraction", {})
    parts = ", ".join(f"{k} {100 * float(v):.1f}%" for k, v in dict(fractions).items()) if fractions else ""
    click.echo(f"{slide.name}: {s.get('tiles', 0)} tissue tiles; {parts}")
    click.echo(f"  report  {result.report_dir}")


@main.command()
@_slide_argument()
@click.option("--reader", type=click.Choice(READERS), default="openslide", show_default=True)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_errors
def info(slide: Path, reader: str, as_json: bool) -> None:
    """Levels, pixel size, objective, vendor, associated images and brightfield/fluorescence of SLIDE."""
    from .slide import describe, open_slide

    with open_slide(slide, reader=reader) as source:
        d = describe(source)
    if as_json:
        click.echo(json.dumps(d, indent=2, default=str))
        return
    for key, value in d.items():
        if key == "levels" and isinstance(value, list):
            click.echo("levels:")
            for lv in value:
                click.echo(f"  {lv['level']}: {lv['width']} x {lv['height']}  (downsample {lv['downsample']:g})")
        else:
            click.echo(f"{key}: {value}")


def _read_image(path: Path) -> tuple[Any, str, Stated | None]:
    """The 8-bit RGB pixels of a single image (transparency composited on white), the mode its restored
    version is written in ("L" for a greyscale image, else "RGB") and the pixel size the file states, with where
    (:func:`.image_files.pixel_size`; None if it states none). Images of more than 8 bits per sample are refused
    rather than cut down to 8 bits without a word."""
    import numpy as np
    from PIL import Image, UnidentifiedImageError

    from .image_files import pixel_size

    if not path.exists():
        raise OSError(2, "no such file", str(path))
    if path.is_dir():
        raise OSError(21, "is a directory", str(path))
    try:
        with Image.open(path) as opened:
            if _deeper_than_8_bits(opened):
                raise ValueError(f"{path}: {_sample_bits(opened)} image; classify and restore read 8 bits per "
                                 "sample (scale it to 8-bit RGB first)")
            opened.load()
            stated = pixel_size(opened)
            image: Image.Image = opened
            grey = image.mode in ("1", "L", "LA")
            if image.mode in ("RGBA", "LA", "P"):
                image = image.convert("RGBA")
                white = Image.new("RGBA", image.size, (255, 255, 255, 255))
                image = Image.alpha_composite(white, image)
            return np.asarray(image.convert("RGB")), "L" if grey else "RGB", stated
    except (UnidentifiedImageError, OSError) as exc:
        raise ValueError(f"{path}: not an image this tool can read ({exc.__class__.__name__})") from None


def _image_mpp(option: float | None, stated: Stated | None) -> tuple[float, str]:
    """The pixel size to classify and restore a single image at, and where it came from in words: ``--mpp``,
    else what the file states, else :data:`DEFAULT_MPP` ("assumed")."""
    if option is not None:
        check_mpp_option(option)
        return float(option), "--mpp"
    if stated is not None:
        return stated[0], f"from {stated[1]}"
    return DEFAULT_MPP, "assumed"


def _raw_modes(image: Any) -> list[str]:
    """How the file stores the samples of each tile (Pillow's raw modes, e.g. "RGB;16B"); read before load()."""
    modes = []
    for tile in image.tile:
        args = tile.args if isinstance(tile.args, tuple) else (tile.args,)
        if args and isinstance(args[0], str):
            modes.append(args[0])
    return modes


def _deeper_than_8_bits(image: Any) -> bool:
    """Whether an opened image holds more than 8 bits per sample. Pillow reads 16-bit greyscale as mode I;16
    but 16-bit RGB as 8-bit RGB, so the raw mode of its tiles is checked too."""
    if image.mode in ("I", "F") or image.mode.startswith("I;"):
        return True
    return any(";16" in raw or ";32" in raw for raw in _raw_modes(image))


def _sample_bits(image: Any) -> str:
    """The sample depth of an image :func:`_deeper_than_8_bits` refuses, in words for the error."""
    if image.mode == "F":
        return "floating-point"
    raw = " ".join(_raw_modes(image)) + " " + image.mode
    return "32-bit" if ";32" in raw or image.mode == "I" else "16-bit"


@main.command()
@click.argument("images", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--mpp", type=float, default=None, help=IMAGE_MPP_HELP)
@click.option("--method", type=click.Choice(METHOD_NAMES), default=DEFAULT_METHOD, show_default=True)
@_precision_option
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per image.")
@_errors
def classify(images: tuple[Path, ...], mpp: float | None, method: str, precision: str, as_json: bool) -> None:
    """Blur class of single images (PNG, TIFF, JPEG): in_focus, defocus, motion or mixed, and the restoration
    route `restore` would take."""
    from .api import classify_image

    for path in images:
        pixels, _, stated = _read_image(path)
        used, where = _image_mpp(mpp, stated)
        prediction = classify_image(pixels, mpp=used, method=method, precision=precision)
        if as_json:
            click.echo(json.dumps({"image": str(path), "label": prediction.label,
                                   "probabilities": prediction.probabilities, "route": list(prediction.steps),
                                   "mpp": used, "mpp_from": where}))
        else:
            probs = " ".join(f"{k}={v:.3f}" for k, v in prediction.probabilities.items())
            route = ", then ".join(f"DL_{step}" for step in prediction.steps) or "none"
            click.echo(f"{path}: {prediction.label}  ({probs})  restore: {route}  [{used:g} um/px, {where}]")


@main.command()
@click.argument("image", type=click.Path(path_type=Path))
@click.option("-o", "--output", required=True, type=click.Path(path_type=Path), help="Restored image file.")
@click.option("--mpp", type=float, default=None, help=IMAGE_MPP_HELP)
@click.option("--method", type=click.Choice(METHOD_NAMES), default=DEFAULT_METHOD, show_default=True)
@_precision_option
@click.option("--overwrite", is_flag=True, help="Replace the output if it exists.")
@_errors
def restore(image: Path, output: Path, mpp: float | None, method: str, precision: str, overwrite: bool) -> None:
    """Classify one image and restore it along the route its blur class asks (an in-focus image is copied
    unchanged)."""
    if output.suffix.lower() not in IMAGE_ENDINGS:
        raise UsageError(f"{output}: unknown image format; end the name with one of {', '.join(IMAGE_ENDINGS)}")
    if output.exists() and not overwrite:
        raise OutputError(f"{output} already exists; pass --overwrite to replace it")
    if output.resolve() == image.resolve():
        raise OutputError(f"{output}: the output would overwrite the input")
    from PIL import Image

    from .api import restore_image
    from .image_files import resolution

    pixels, mode, stated = _read_image(image)
    used, where = _image_mpp(mpp, stated)
    result = restore_image(pixels, mpp=used, method=method, precision=precision)
    tmp = output.with_name(output.name + ".partial" + output.suffix)
    jpeg = output.suffix.lower() in (".jpg", ".jpeg")
    options: dict[str, Any] = {"quality": 95} if jpeg else {}
    height = stated.mpp_y if stated is not None and mpp is None else None  # --mpp states square pixels
    if where != "assumed":
        options.update(resolution(used, jpeg, height))  # the output states the pixel size the input did
    try:
        Image.fromarray(result).convert(mode).save(tmp, **options)
        tmp.replace(output)
    finally:
        tmp.unlink(missing_ok=True)
    changed = bool((result != pixels).any())
    size = f"{used:g}" if height is None else f"{used:g} x {height:g}"
    click.echo(f"{image}: {'restored' if changed else 'in focus, unchanged'} -> {output}  [{size} um/px, {where}]")


@main.command()
@click.argument("folder", type=click.Path(path_type=Path))
@click.option("-o", "--out", "outdir", type=click.Path(path_type=Path), required=True,
              help="Output folder: one output and report per slide at the slide's relative path, plus "
                   "batch_summary.json/.csv and index.html.")
@click.option("--recursive", is_flag=True, help="Look for slides in subfolders too.")
@click.option("--include", "include", multiple=True, metavar="GLOB",
              help="Slide file pattern (repeat) [the endings OpenSlide and tiffslide read: *.svs, *.tif, ...].")
@click.option("--exclude", "exclude", multiple=True, metavar="GLOB", help="Leave out matching files (repeat).")
@click.option("--format", "formats", multiple=True, type=click.Choice(["ome.zarr", "tif", "ome.tif"]),
              help="Output format per slide (repeat) [ome.zarr].")
@click.option("--qc-only", is_flag=True, help="Reports and the index only; no slide is rewritten.")
@click.option("--rescan-above", type=float, default=0.10, show_default=True,
              help="Recommend a rescan when this share of the tissue area is blurred.")
@_common_slide_options
@click.option("--ngff", type=click.Choice(["0.4", "0.5"]), default="0.4", show_default=True,
              help="OME-Zarr version.")
@click.option("--compression", type=click.Choice(["jpeg", "zstd", "deflate", "lzw", "none"]), default="jpeg",
              show_default=True, help="TIFF tile compression.")
@click.option("--quality", type=click.IntRange(1, 100), default=90, show_default=True, help="JPEG quality.")
@click.pass_context
@_errors
def batch(ctx: click.Context, folder: Path, outdir: Path, recursive: bool, include: tuple[str, ...],
          exclude: tuple[str, ...], formats: tuple[str, ...], qc_only: bool, rescan_above: float, reader: str,
          mpp: float | None, method: str, scheduler: str | None, workers: int | None, precision: str, gpus: int,
          tile_size: int, ngff: str, compression: str, quality: int) -> None:
    """Process every slide in FOLDER: outputs and a QC report per slide, a summary and an HTML index.

    Slides complete from an earlier run are skipped; a slide that fails is named with its reason and the others
    go on (exit status 1 if any failed)."""
    from .batch import SLIDE_PATTERNS, BatchOptions, SlideOutcome, recommendation, run_batch
    from .pipeline import RunOptions

    quiet = ctx.obj["quiet"]
    options = BatchOptions(
        recursive=recursive, include=include or SLIDE_PATTERNS, exclude=exclude, formats=formats or ("ome.zarr",),
        qc_only=qc_only, rescan_above=rescan_above,
        run=RunOptions(method=method, reader=reader, mpp=mpp, tile_size=tile_size, ngff=ngff,
                       compression=compression, quality=quality, scheduler=scheduler, workers=workers,
                       gpus=gpus, precision=precision, progress=not quiet),
    )

    def show(outcome: SlideOutcome, done: int, total: int) -> None:
        what = "see below" if outcome.status == "failed" else recommendation(outcome, rescan_above)
        if not quiet:
            click.echo(f"[{done}/{total}] {outcome.job.relative}: {outcome.status} ({what}) in {outcome.seconds:.1f} s")

    result = run_batch(folder, outdir, options, on_slide=show)
    skipped = sum(o.status == "skipped" for o in result.outcomes)
    rescan = sum(recommendation(o, rescan_above) == "rescan" for o in result.outcomes)
    click.echo(f"{len(result.outcomes)} slides ({skipped} complete from earlier runs), {len(result.failed)} failed, "
               f"{rescan} to rescan; index: {outdir / 'index.html'}")
    if result.failed:
        for o in result.failed:
            click.echo(f"failed: {o.error}", err=True)
        ctx.exit(1)


main.add_command(train)
main.add_command(evaluate)


if __name__ == "__main__":  # pragma: no cover
    main()
