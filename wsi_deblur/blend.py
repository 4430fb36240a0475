"""Blending restored pixels into the original without seams.

Each restoration action gets a weight map: 1 deep inside the cells that asked for it, falling smoothly to 0 at the
border of those cells where they meet cells that did not. Untouched cells therefore keep weight 0 everywhere and
stay bit-identical to the input; between restored and untouched tissue the sharpness changes gradually over
``ramp`` pixels instead of in a step. The slide's own edge is not a border: the weight does not fall there.
"""

from __future__ import annotations

import numpy as np

from .tiling import Box

#: Width of the blend ramp in pixels, as a fraction of the tile size. A quarter tile (128 px for 512 px tiles)
#: is several times the support of the restoration (so the change of sharpness is gradual) and leaves half of
#: every restored tile fully restored.
RAMP_FRACTION = 0.25


def ramp_width(tile_size: int) -> int:
    """Ramp width in pixels for a tile size."""
    return max(1, int(round(tile_size * RAMP_FRACTION)))


def _smoothstep(t: np.ndarray) -> np.ndarray:
    t = np.clip(t, 0.0, 1.0)
    return t * t * (3.0 - 2.0 * t)


def action_weights(
    actions: np.ndarray,
    cell_origin: tuple[int, int],
    tile_size: int,
    box: Box,
    width: int,
    height: int,
    ramp: int,
) -> dict[int, np.ndarray]:
    """Blend weight per action code (> 0) over ``box``.

    ``actions`` is a window of the blur map's action codes whose cell (0, 0) is cell ``cell_origin`` (row, col)
    of the map; it must cover ``box`` grown by ``ramp`` (within the slide). Background cells (-1) and cells
    with action 0 are not restored. Returns float32 (box.h, box.w) weights, only for actions present.
    """
    present = [int(a) for a in np.unique(actions) if a > 0]
    if not present:
        return {}
    outer = box.grow(ramp)
    # pixel -> cell index over the outer box; pixels beyond the slide take their nearest in-slide cell
    ys = np.clip(np.arange(outer.y, outer.y + outer.h), 0, height - 1) // tile_size - cell_origin[0]
    xs = np.clip(np.arange(outer.x, outer.x + outer.w), 0, width - 1) // tile_size - cell_origin[1]
    if ys.min() < 0 or xs.min() < 0 or ys.max() >= actions.shape[0] or xs.max() >= actions.shape[1]:
        raise ValueError("the action window does not cover the box grown by the ramp")
    inner = box.slices_in(outer)
    weights: dict[int, np.ndarray] = {}
    for code in present:
        cell_mask = actions == code
        inside = cell_mask[ys[:, None], xs[None, :]]
        core = inside[inner]
        if not core.any():
            continue
        if inside.all():
            weights[code] = np.ones((box.h, box.w), dtype=np.float32)
            continue
        distance = _distance_to_other_cells(actions != code, ys, xs, inner, ramp + 1)
        # the border pixel (distance 1) gets weight 0, the pixel `ramp` further inside weight 1
        weights[code] = _smoothstep((distance - 1.0) / ramp).astype(np.float32)
    return weights


def _runs(index: np.ndarray) -> list[tuple[int, int, int]]:
    """(value, start, stop) of each run of equal values in a monotonic index array."""
    change = np.flatnonzero(np.diff(index)) + 1
    starts, stops = np.r_[0, change], np.r_[change, len(index)]
    return [(int(index[a]), int(a), int(b)) for a, b in zip(starts, stops, strict=True)]


def _distance_to_other_cells(
    other: np.ndarray, ys: np.ndarray, xs: np.ndarray, inner: tuple[slice, slice], limit: int
) -> np.ndarray:
    """Euclidean distance (px, float64) from each pixel of ``inner`` to the nearest pixel of the outer box whose
    cell is ``other``, capped at ``limit``: what ``ndimage.distance_transform_edt`` gives, capped, at a fraction
    of its cost. The cells are rectangles of pixels (rows ``ys``, columns ``xs`` give each pixel's cell), so
    the distance to one is closed-form, and only the rectangles within ``limit`` of a pixel can be nearest."""
    rows, cols = inner
    py = np.arange(rows.start, rows.stop)
    px = np.arange(cols.start, cols.stop)
    d2 = np.full((len(py), len(px)), float(limit * limit))
    for ci, y0, y1 in _runs(ys):
        for cj, x0, x1 in _runs(xs):
            if not other[ci, cj]:
                continue
            # pixels within `limit` of the rectangle [y0, y1) x [x0, x1), in inner coordinates
            r0, r1 = max(y0 - limit, rows.start), min(y1 + limit, rows.stop)
            c0, c1 = max(x0 - limit, cols.start), min(x1 + limit, cols.stop)
            if r0 >= r1 or c0 >= c1:
                continue
            sy, sx = py[r0 - rows.start : r1 - rows.start], px[c0 - cols.start : c1 - cols.start]
            dy = np.maximum(np.maximum(y0 - sy, 0), sy - (y1 - 1)).astype(np.float64)
            dx = np.maximum(np.maximum(x0 - sx, 0), sx - (x1 - 1)).astype(np.float64)
            window = d2[r0 - rows.start : r1 - rows.start, c0 - cols.start : c1 - cols.start]
            np.minimum(window, dy[:, None] ** 2 + dx[None, :] ** 2, out=window)
    return np.sqrt(d2)


def blend(original: np.ndarray, restored: dict[int, np.ndarray], weights: dict[int, np.ndarray]) -> np.ndarray:
    """Mix restored images into the original by their weights; pixels with zero total weight stay as they were."""
    if not weights:
        return original
    acc = original.astype(np.float32)
    total = np.zeros(original.shape[:2], dtype=np.float32)
    delta = np.zeros_like(acc)
    for code, w in weights.items():
        delta += w[..., None] * (restored[code].astype(np.float32) - acc)
        total += w
    out = np.clip(np.rint(acc + delta), 0, 255).astype(np.uint8)
    untouched = total <= 0
    out[untouched] = original[untouched]
    return out
