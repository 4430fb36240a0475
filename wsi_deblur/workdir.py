"""The work folder of a run (``OUT.partial/`` beside the first output) and its fingerprint.

The folder holds the working OME-Zarr (or, when every output is a plain TIFF written from the input slide, the
restored blocks as raw images under ``restored/``), the blur map, one marker file per finished block and
``fingerprint.json``
(input path, size and mtime; the options that change pixels; method and software versions; the routing
thresholds of :func:`wsi_deblur.blurmap.decide`). A run started again
with the same fingerprint picks up where the last one stopped; a different fingerprint is refused unless the
caller asks to restart (``--restart``), which throws the partial work away.
"""

from __future__ import annotations

import json
import os
import shutil
from pathlib import Path
from typing import Any

from ._types import UsageError

SUFFIX = ".partial"
FINGERPRINT = "fingerprint.json"


def work_folder(first_output: Path) -> Path:
    """``OUT.partial`` beside the first output."""
    return first_output.with_name(first_output.name + SUFFIX)


def input_identity(path: Path) -> dict[str, Any]:
    st = path.stat()
    return {"path": str(path.resolve()), "size": st.st_size, "mtime_ns": st.st_mtime_ns}


class WorkFolder:
    """A run's work folder: created fresh or resumed after a fingerprint check."""

    def __init__(self, path: Path, fingerprint: dict[str, Any], restart: bool = False) -> None:
        self.path = path
        self.resumed = False
        saved = path / FINGERPRINT
        if path.exists() and restart:
            shutil.rmtree(path)
        if path.exists():
            try:
                previous = json.loads(saved.read_text())
            except (OSError, ValueError):
                previous = None
            if previous != _jsonable(fingerprint):
                raise UsageError(
                    f"{path} holds partial work from a different run (other input or options); "
                    "pass --restart to throw it away and start again"
                )
            self.resumed = True
        else:
            path.mkdir(parents=True)
            tmp = path / (FINGERPRINT + ".tmp")
            tmp.write_text(json.dumps(fingerprint, indent=2, sort_keys=True))
            tmp.replace(saved)

    @property
    def zarr_path(self) -> Path:
        return self.path / "image.ome.zarr"

    @property
    def blurmap_path(self) -> Path:
        return self.path / "blurmap.npz"

    def marker(self, level: int, y: int, x: int) -> Path:
        return self.path / "done" / f"level{level}" / f"{y}_{x}"

    @property
    def rasters_path(self) -> Path:
        """Restored level-0 blocks as raw images, when the outputs are written from the input slide."""
        return self.path / "restored"

    def raster(self, y: int, x: int) -> Path:
        return self.rasters_path / f"{y}_{x}.v"

    def rasters(self) -> dict[tuple[int, int], Path]:
        """(y, x) -> file of every restored block written so far (unfinished ``.tmp`` files aside)."""
        found = {}
        if self.rasters_path.is_dir():
            for name in os.listdir(self.rasters_path):
                stem, dot, ending = name.partition(".")
                if dot and ending == "v":
                    y, x = stem.split("_")
                    found[(int(y), int(x))] = self.rasters_path / name
        return found

    def done_markers(self, level: int) -> set[str]:
        folder = self.path / "done" / f"level{level}"
        return set(os.listdir(folder)) if folder.is_dir() else set()

    def remove(self) -> None:
        shutil.rmtree(self.path, ignore_errors=True)


def _jsonable(value: dict[str, Any]) -> Any:
    return json.loads(json.dumps(value, sort_keys=True))
