"""Restoring one region of an image from its blur map: the compute core shared by slides and single images.

Given the action codes of the cells around a box, each action present is run over the part of the box it
touches (plus the method's halo, aligned): once over that part's bounding box, or once per connected patch of it
when that restores fewer pixels (scattered blurred tiles cost what they cover, not the whole box). The results
are blended into the original with :func:`wsi_deblur.blend.action_weights`. Nothing here knows about files or
clusters.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from .blend import action_weights, blend, ramp_width
from .blurmap import ACTION_STEPS
from .methods.base import Method
from .tiling import Box, RegionReader, read_padded, round_up


def cell_labels(actions: np.ndarray, cell_origin: tuple[int, int], tile_size: int, box: Box) -> np.ndarray:
    """Restored-area label over ``box``: the cell's action code where it restores, else 0 (uint8)."""
    ys = np.arange(box.y, box.y + box.h) // tile_size - cell_origin[0]
    xs = np.arange(box.x, box.x + box.w) // tile_size - cell_origin[1]
    codes = actions[ys[:, None], xs[None, :]]
    return np.where(codes > 0, codes, 0).astype(np.uint8)


def restore_box(
    read: RegionReader,
    width: int,
    height: int,
    box: Box,
    actions: np.ndarray,
    cell_origin: tuple[int, int],
    tile_size: int,
    method: Method,
    mpp: float,
) -> tuple[np.ndarray, np.ndarray, bool]:
    """Restore ``box`` (inside the image) as its cells' actions ask.

    ``actions`` is a window of action codes with cell (0, 0) at ``cell_origin``, covering the box grown by the
    blend ramp. Returns the pixels (h, w, 3) uint8, the restored-area label (h, w) uint8 and whether any pixel
    was restored. Pixels whose cells ask for nothing, and that no ramp reaches, are the input's, bit for bit.
    """
    weights = action_weights(actions, cell_origin, tile_size, box, width, height, ramp_width(tile_size))
    original = read_padded(read, box, width, height)
    label = cell_labels(actions, cell_origin, tile_size, box)
    if not weights:
        return original, label, False
    align = max(1, int(method.align))
    restored: dict[int, np.ndarray] = {}
    for code, weight in weights.items():
        full = original.copy()
        halo = round_up(int(method.halo(mpp, ACTION_STEPS[code])), align)
        for region, target in _regions(weight > 0, box, align, halo):
            out = method.restore(read_padded(read, region, width, height), ACTION_STEPS[code], mpp, margin=halo)
            full[target.slices_in(box)] = out[target.slices_in(region)]
        restored[code] = full
    return blend(original, restored, weights), label, True


def _regions(touched: np.ndarray, box: Box, align: int, halo: int) -> list[tuple[Box, Box]]:
    """(region to run, part of ``box`` it fills) pairs that cover the pixels ``touched`` (a mask over ``box``).

    Each region starts on a multiple of ``align`` in slide coordinates and carries ``halo`` pixels of context.
    The connected patches of the mask each get their own region when, halos included, that is fewer pixels than
    one region over the mask's bounding box; every pixel a region fills lies at least ``halo`` inside it.
    """

    def aligned(rows: slice, cols: slice) -> tuple[Box, Box]:
        x0 = (box.x + cols.start) // align * align
        y0 = (box.y + rows.start) // align * align
        x1 = round_up(box.x + cols.stop, align)
        y1 = round_up(box.y + rows.stop, align)
        region = Box(x0, y0, x1 - x0, y1 - y0).grow(halo)
        tx, ty = max(x0, box.x), max(y0, box.y)
        target = Box(tx, ty, min(x1, box.x + box.w) - tx, min(y1, box.y + box.h) - ty)
        return region, target

    labels, n = ndimage.label(touched)
    patches = [aligned(rows, cols) for rows, cols in ndimage.find_objects(labels) if rows is not None]
    rows = np.flatnonzero(touched.any(axis=1))
    cols = np.flatnonzero(touched.any(axis=0))
    whole = aligned(slice(int(rows[0]), int(rows[-1]) + 1), slice(int(cols[0]), int(cols[-1]) + 1))
    if n > 1 and sum(r.w * r.h for r, _ in patches) < whole[0].w * whole[0].h:
        return patches
    return [whole]
