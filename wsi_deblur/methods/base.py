"""The one small interface between the slide pipeline and a deblurring method.

A method classifies tiles and restores images; the pipeline only tiles, blends, distributes and writes.
"""

from __future__ import annotations

from typing import Protocol, runtime_checkable

import numpy as np


@runtime_checkable
class Method(Protocol):
    """A blur classifier plus restorers, as the pipeline sees them."""

    #: Short name used on the command line (``--method NAME``).
    name: str
    #: Version string recorded in outputs and reports.
    version: str
    #: Tile origins and sizes handed to :meth:`restore` are multiples of this (2**stride-2 steps).
    align: int

    def halo(self, mpp: float, steps: tuple[str, ...] | None = None) -> int:
        """Pixels of context needed on each side so that a restored pixel does not depend on the cut: for the
        route ``steps`` (e.g. ("defocus",)), or for any route when None."""
        ...

    def classify(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        """Class probabilities for a batch of RGB uint8 tiles (N, H, W, 3) -> float32 (N, 4) in LABELS order."""
        ...

    def restore(self, image: np.ndarray, steps: tuple[str, ...], mpp: float, margin: int = 0) -> np.ndarray:
        """Apply restoration ``steps`` (e.g. ("motion", "defocus")) to an RGB uint8 image; same shape/dtype.
        ``margin``: pixels along each border that the caller discards (a method may leave them unrestored). They
        are context, and past an image's edge a mirror of it: a method that estimates the blur from the image
        does so inside them."""
        ...
