"""What the benchmarks on the evaluation's held-out crops share: their command-line options, the crop plan and
sources, and SSIM of an image's compared centre."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur.evaluation import sets  # noqa: E402
from wsi_deblur.evaluation.sets import DEFAULT_SIZE, SPLIT  # noqa: E402
from wsi_deblur.training import data  # noqa: E402


def add_options(parser: argparse.ArgumentParser, crops_per_source: int) -> None:
    """``--crops-per-source`` (default ``crops_per_source``) and ``--seed`` (the evaluation's)."""
    parser.add_argument("--crops-per-source", type=int, default=crops_per_source,
                        help=f"crops per held-out source [{crops_per_source}]")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation's seed [0]")


def plan_and_sources(parser: argparse.ArgumentParser, args: argparse.Namespace) -> tuple[Any, list[data.Source]]:
    """The evaluation's crop plan for ``args`` and the held-out sources; a usage error for fewer than 1 crop."""
    if args.crops_per_source < 1:
        parser.error(f"--crops-per-source takes 1 or more, got {args.crops_per_source}")
    return sets._plan(args.crops_per_source, DEFAULT_SIZE, False), list(data.sources(SPLIT))


def ssim(image: np.ndarray, reference: np.ndarray) -> float:
    """SSIM of ``image``'s compared centre (:data:`DEFAULT_SIZE` px) against the sharp ``reference``."""
    return sets._ssim(sets._centre(image, DEFAULT_SIZE), reference)
