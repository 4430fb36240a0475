"""The QC report of a slide: where it was blurred and what was restored.

Three files, made from the :class:`~wsi_deblur.blurmap.BlurMap` and a thumbnail alone (so ``wsi-deblur qc``
writes them without restoring anything):

- ``blurmap.png``: the thumbnail with each tissue tile tinted by its blur class, restored tiles hatched, a
  legend with the tissue area per class and a title line;
- ``summary.json``: slide-level figures (:func:`~wsi_deblur.summary.summarize`) plus whatever the caller
  adds (timings, versions);
- ``tiles.csv``: one row per classified tissue tile, in row-major order.

Each file is written under a temporary name and renamed into place, so a reader never sees half a file. The
figure is drawn by :mod:`.report_figure`, the figures computed by :mod:`.summary`.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import logging
import math
import os
import uuid
from collections.abc import Mapping
from datetime import date, datetime
from pathlib import Path, PurePath

import numpy as np
from PIL import PngImagePlugin

from ._types import LABELS
from ._version import __version__
from .blurmap import ACTIONS, BlurMap
from .report_figure import CLASS_COLOURS, MIN_MAP_WIDTH, RenderedMap, render_blurmap
from .summary import checked_mpp, summarize

__all__ = [
    "CLASS_COLOURS",
    "CSV_COLUMNS",
    "MIN_MAP_WIDTH",
    "REPORT_FILES",
    "RenderedMap",
    "read_summary",
    "render_blurmap",
    "summarize",
    "write_report",
]

logger = logging.getLogger(__name__)

#: File names inside the report folder, by the key :func:`write_report` returns them under.
REPORT_FILES: dict[str, str] = {"png": "blurmap.png", "summary": "summary.json", "csv": "tiles.csv"}

#: Columns of ``tiles.csv``; positions and sizes are level-0 pixels, the cell clipped to the slide.
CSV_COLUMNS: tuple[str, ...] = (
    "row", "col", "x", "y", "width", "height", "class", *(f"p_{name}" for name in LABELS), "action",
)

def write_report(
    directory: str | Path,
    blurmap: BlurMap,
    thumbnail: np.ndarray,
    *,
    slide_name: str,
    mpp: float | None,
    extra: dict[str, object] | None = None,
    mpp_y: float | None = None,
) -> dict[str, Path]:
    """Write the QC report (``blurmap.png``, ``summary.json``, ``tiles.csv``) into ``directory``.

    The folder is created (parents too). Every file is written under a temporary name and renamed into
    place; ``summary.json`` comes last, so its presence means the report is complete. ``extra`` entries
    (seconds, method, model versions, outputs, software version...) are added to the summary after
    :func:`summarize`'s figures; numpy values, paths and dates are converted, NaN becomes null.
    ``mpp_y`` is the pixel height where pixels are not square (default ``mpp``; written to the summary when given).
    Returns the paths by key ``png``, ``summary`` and ``csv``. Raises ``ValueError`` for a bad thumbnail, mpp
    or extra value and ``OSError`` naming the path when the folder or a file cannot be written.
    """
    directory = Path(directory)
    mpp = checked_mpp(mpp)
    summary: dict[str, object] = {"slide": slide_name, "mpp": mpp}
    if mpp_y is not None:
        summary["mpp_y"] = checked_mpp(mpp_y)
    summary.update({**summarize(blurmap, mpp, mpp_y), **(extra or {})})
    summary_bytes = (json.dumps(_json_safe(summary, "summary"), indent=2, allow_nan=False) + "\n").encode()
    rendered = render_blurmap(blurmap, thumbnail, slide_name=slide_name, mpp=mpp, mpp_y=mpp_y)
    png = io.BytesIO()
    info = PngImagePlugin.PngInfo()
    info.add_text("Title", f"Blur map of {slide_name}")
    info.add_text("Software", f"wsi-deblur {__version__}")
    rendered.image.save(png, format="PNG", pnginfo=info, compress_level=6)
    csv_bytes = _tiles_csv(blurmap).encode()

    if directory.exists() and not directory.is_dir():
        raise OSError(f"cannot write the QC report into {directory}: it is a file, not a folder")
    try:
        directory.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise OSError(f"cannot create the QC report folder {directory}: {err.strerror or err}") from err
    paths = {key: directory / name for key, name in REPORT_FILES.items()}
    _write_atomic(paths["png"], png.getvalue())
    _write_atomic(paths["csv"], csv_bytes)
    _write_atomic(paths["summary"], summary_bytes)
    logger.info("QC report of %s written to %s", slide_name, directory)
    return paths


def read_summary(directory: str | Path) -> dict[str, object]:
    """The summary a report folder holds (``summary.json`` as written by :func:`write_report`)."""
    path = Path(directory) / REPORT_FILES["summary"]
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError as err:
        raise FileNotFoundError(f"{path}: no QC summary there (`wsi-deblur qc` makes one)") from err
    except OSError as err:
        raise OSError(f"{path}: cannot read the QC summary: {err.strerror or err}") from err
    try:
        data = json.loads(text)
    except json.JSONDecodeError as err:
        raise ValueError(f"{path}: not a valid QC summary ({err.msg} at line {err.lineno})") from err
    if not isinstance(data, dict):
        raise ValueError(f"{path}: not a valid QC summary (a JSON object was expected)")
    return data


# ----------------------------------------------------------------------------------------------------------
# figures and files


def _tiles_csv(blurmap: BlurMap) -> str:
    classified = np.asarray(blurmap.tissue, dtype=bool) & (blurmap.labels >= 0)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for row, col in np.argwhere(classified):  # argwhere walks in row-major order
        x, y, w, h = blurmap.cell_box(int(row), int(col))
        probabilities = [
            "" if math.isnan(p) else f"{p:.4f}" for p in blurmap.probabilities[row, col].tolist()
        ]
        writer.writerow([
            int(row), int(col), x, y, w, h, LABELS[int(blurmap.labels[row, col])], *probabilities,
            ACTIONS[int(blurmap.actions[row, col])] if blurmap.actions[row, col] >= 0 else "",
        ])
    return out.getvalue()


def _json_safe(value: object, where: str) -> object:
    """``value`` with numpy scalars and arrays, paths and dates made plain JSON; NaN and infinities None."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, np.generic):
        return _json_safe(value.item(), where)
    if isinstance(value, int):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, np.ndarray):
        return _json_safe(value.tolist(), where)
    if isinstance(value, PurePath):
        return str(value)
    if isinstance(value, (datetime, date)):
        return value.isoformat()
    if isinstance(value, Mapping):
        return {str(key): _json_safe(item, f"{where}[{key!r}]") for key, item in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_json_safe(item, f"{where}[{i}]") for i, item in enumerate(value)]
    raise ValueError(f"{where} is of type {type(value).__name__}, which the QC summary cannot store as JSON")


def _write_atomic(path: Path, data: bytes) -> None:
    """Write ``data`` to ``path`` through a temporary file in the same folder and a rename."""
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:
        # best effort: the temporary file may not exist, and the error worth reporting is the first one
        with contextlib.suppress(OSError):
            tmp.unlink(missing_ok=True)
        raise OSError(f"cannot write {path}: {err.strerror or err}") from err


