"""Splitting level 0 into classification tiles and restoration regions, and reading them with context.

Two grids cover level 0: *cells* of ``tile_size`` (one classification each, the blur map's resolution) and
*blocks* (the unit one task writes). A block is restored over the block plus a *halo* of context on each side,
the method's support, rounded up to the method's alignment so that every region handed to a network starts on a
multiple of 2**(stride-2 steps): a pixel's output then does not depend on where the slide was cut.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

#: Reads level-0 pixels (x, y, width, height) fully inside the image -> (h, w, 3) uint8.
RegionReader = Callable[[int, int, int, int], np.ndarray]


def round_up(value: int, multiple: int) -> int:
    """Smallest multiple of ``multiple`` that is >= value."""
    return -(-value // multiple) * multiple


@dataclass(frozen=True)
class Box:
    """A rectangle in level-0 pixels."""

    x: int
    y: int
    w: int
    h: int

    def grow(self, margin: int) -> Box:
        return Box(self.x - margin, self.y - margin, self.w + 2 * margin, self.h + 2 * margin)

    def clip(self, width: int, height: int) -> Box:
        x0, y0 = max(0, self.x), max(0, self.y)
        x1, y1 = min(width, self.x + self.w), min(height, self.y + self.h)
        return Box(x0, y0, max(0, x1 - x0), max(0, y1 - y0))

    def slices_in(self, outer: Box) -> tuple[slice, slice]:
        """This box's (rows, cols) slices inside an array that covers ``outer``."""
        return (slice(self.y - outer.y, self.y - outer.y + self.h), slice(self.x - outer.x, self.x - outer.x + self.w))


def read_padded(read: RegionReader, box: Box, width: int, height: int) -> np.ndarray:
    """Pixels of ``box``; where it reaches beyond the image, the image is mirrored (no false edge at the border)."""
    inner = box.clip(width, height)
    if inner.w == 0 or inner.h == 0:
        raise ValueError(f"region {box} lies outside the {width}x{height} image")
    pixels = read(inner.x, inner.y, inner.w, inner.h)
    if inner == box:
        return pixels
    pad = ((inner.y - box.y, box.y + box.h - inner.y - inner.h), (inner.x - box.x, box.x + box.w - inner.x - inner.w))
    # a pad larger than the image itself needs several reflections: np.pad's "symmetric" handles that
    return np.pad(pixels, (*pad, (0, 0)), mode="symmetric")


def cell_read_box(row: int, col: int, tile_size: int, width: int, height: int) -> Box:
    """The tile read to classify a cell: the cell, shifted inward at the image's edges so it stays full size."""
    w, h = min(tile_size, width), min(tile_size, height)
    x = min(col * tile_size, width - w)
    y = min(row * tile_size, height - h)
    return Box(x, y, w, h)


def cells_touching(box: Box, tile_size: int, shape: tuple[int, int]) -> tuple[slice, slice]:
    """Row and column slices of the cells that intersect ``box`` (clipped to the grid)."""
    rows, cols = shape
    r0 = max(0, box.y // tile_size)
    c0 = max(0, box.x // tile_size)
    r1 = min(rows, -(-(box.y + box.h) // tile_size))
    c1 = min(cols, -(-(box.x + box.w) // tile_size))
    return slice(r0, max(r0, r1)), slice(c0, max(c0, c1))
