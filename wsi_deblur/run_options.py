"""What steers a slide run: output kinds by file ending and :class:`RunOptions`, checked at the boundary."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from pathlib import Path

from ._types import UsageError, check_mpp_option
from .blurmap import DEFAULT_MIN_BLUR_PROBABILITY
from .methods import DEFAULT_METHOD
from .models.backend import PRECISIONS
from .writers import omezarr
from .writers.tiff import TIFF_COMPRESSIONS

#: Output kinds by file ending (longest ending first).
OUTPUT_ENDINGS: tuple[tuple[str, str], ...] = (
    (".ome.zarr", "ome-zarr"),
    (".ome.tiff", "ome-tiff"),
    (".ome.tif", "ome-tiff"),
    (".tiff", "tiff"),
    (".tif", "tiff"),
)


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
        check_mpp_option(self.mpp)
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

