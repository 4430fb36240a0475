"""Reading whole-slide images: one interface over OpenSlide (the default reader) and tiffslide.

A :class:`SlideSource` gives the pyramid's geometry, the pixel size and the other metadata the pipeline needs,
and reads any rectangle of any level as RGB uint8 in that level's own pixel coordinates. Pixels outside the
level, and pixels the library returns transparent (areas a scanner did not image), come back in the slide's
background colour. Slides are checked when they are opened: a few tiles are decoded, so that a truncated or
damaged file is reported there, in one line naming the file, and not deep inside a distributed run.

Neither library's slide object pickles: tasks running in Dask workers call :func:`cached_slide`, which opens
each slide once per process and reopens it when the file on disk changes.

This module opens, checks and caches slides; the common reader is :mod:`.slide_source`, the libraries behind
it :mod:`.slide_backends`, file checks :mod:`.slide_files` and pixel helpers :mod:`.slide_pixels`.
"""

from __future__ import annotations

import math
import numbers
import os
import threading
from collections import OrderedDict

from ._types import SlideError
from .slide_backends import _OpenSlideSource, _TiffSlideSource
from .slide_files import cannot_open, check_path, file_kind, openslide_errors, tiff_damage, tiffslide_errors
from .slide_source import STRIP_BYTES, SlideSource, _float_or_none

__all__ = ["READERS", "STRIP_BYTES", "SlideSource", "cached_slide", "describe", "open_slide"]

#: Names accepted by ``open_slide(reader=...)``; the first is the default.
READERS: tuple[str, ...] = ("openslide", "tiffslide")

#: Slides kept open per process by :func:`cached_slide`: a worker usually works on one slide; a batch run may
#: interleave a few. Older entries are dropped from the cache (and closed by garbage collection once unused).
CACHE_SIZE = 8


def open_slide(
    path: str | os.PathLike[str], reader: str = "openslide", mpp: float | None = None
) -> SlideSource:
    """Open and check a slide; ``mpp`` (um/px at level 0) overrides the slide's own pixel size.

    The file is verified by decoding a few tiles, so a truncated or damaged file raises :class:`SlideError`
    here, not in the middle of a run.
    """
    if reader not in READERS:
        raise ValueError(f"unknown slide reader {reader!r}; choose one of: {', '.join(READERS)}")
    if mpp is not None and not (isinstance(mpp, numbers.Real) and math.isfinite(mpp) and mpp > 0):
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp!r}")
    name = os.path.abspath(os.fspath(path))
    check_path(name)
    kind = file_kind(name)
    if reader == "tiffslide" and kind == "dicom":
        raise SlideError(
            f"{name}: is a DICOM file; tiffslide reads TIFF-based slides only: use reader='openslide'"
        )
    override = float(mpp) if mpp is not None else None
    source: SlideSource
    if reader == "openslide":
        errors = openslide_errors()
        try:
            source = _OpenSlideSource(name, override)
        except errors as error:
            raise cannot_open(name, reader, error) from error
    else:
        errors = tiffslide_errors()
        try:
            source = _TiffSlideSource(name, override)
        except errors as error:
            raise cannot_open(name, reader, error) from error
        # tiffslide reads what it can of a truncated TIFF and drops the rest without raising
        damage = tiff_damage(name) if kind == "tiff" else None
        if damage is not None:
            source.close()
            raise SlideError(
                f"{name}: the file is truncated or damaged: {damage}; copy it again from its source"
            )
    try:
        source._verify()
    except SlideError:
        source.close()
        raise
    if isinstance(source, _OpenSlideSource) and kind == "tiff":
        source.enable_direct_reads()
    return source


_cache: OrderedDict[tuple[object, ...], SlideSource] = OrderedDict()
_cache_lock = threading.Lock()


def cached_slide(path: str, reader: str = "openslide", mpp: float | None = None) -> SlideSource:
    """The slide opened once per process (for Dask tasks); reopened when the file's size or mtime changes.

    Do not close the returned object: other tasks in the process share it.
    """
    name = os.path.abspath(os.fspath(path))
    try:
        info = os.stat(name)
    except OSError:
        return open_slide(name, reader, mpp)  # raises the SlideError that says what is wrong
    # the process id guards against a forked child using its parent's file handles
    key = (name, reader, mpp, info.st_size, info.st_mtime_ns, os.getpid())
    with _cache_lock:
        source = _cache.get(key)
        if source is not None and not source.closed:
            _cache.move_to_end(key)
            return source
    source = open_slide(name, reader, mpp)
    with _cache_lock:
        existing = _cache.get(key)
        if existing is not None and not existing.closed:
            # another thread opened it meanwhile: keep one
            source.close()
            return existing
        for stale in [k for k in _cache if k[:3] == key[:3]]:
            del _cache[stale]
        _cache[key] = source
        while len(_cache) > CACHE_SIZE:
            _cache.popitem(last=False)
    return source


def _associated_size(source: SlideSource, name: str) -> tuple[int, int]:
    width = _float_or_none(source.properties.get(f"openslide.associated.{name}.width"))
    height = _float_or_none(source.properties.get(f"openslide.associated.{name}.height"))
    if width is not None and height is not None:
        return int(width), int(height)
    image = source.read_associated(name)
    return image.shape[1], image.shape[0]


def describe(source: SlideSource) -> dict[str, object]:
    """A JSON-able summary of a slide (what ``wsi-deblur info`` prints)."""
    width, height = source.dimensions
    associated = []
    for name in source.associated_names:
        aw, ah = _associated_size(source, name)
        associated.append({"name": name, "width": aw, "height": ah})
    bounds = None
    if source.bounds is not None:
        bx, by, bw, bh = source.bounds
        bounds = {"x": bx, "y": by, "width": bw, "height": bh}
    summary: dict[str, object] = {
        "path": source.path,
        "reader": source.reader,
        # OpenSlide slides whose level 0 is decoded directly (see _OpenSlideSource.enable_direct_reads)
        "level0_decoder": "tiffslide" if getattr(source, "_direct", None) is not None else source.reader,
        "vendor": source.vendor,
        "format": source.format,
        "width": width,
        "height": height,
        "levels": [
            {"level": i, "width": w, "height": h, "downsample": d}
            for i, ((w, h), d) in enumerate(
                zip(source.level_dimensions, source.level_downsamples, strict=True)
            )
        ],
        "mpp": source.mpp,
        "slide_mpp": source.slide_mpp,
        "objective_power": source.objective_power,
        "bounds": bounds,
        "background": "#{:02x}{:02x}{:02x}".format(*source.background),
        "associated": associated,
        "brightfield": source.is_brightfield,
        "brightfield_reason": source.brightfield_reason,
    }
    if "wsi_deblur.mpp-y" in source.properties:
        summary["mpp_y"] = float(source.properties["wsi_deblur.mpp-y"])
    return summary
