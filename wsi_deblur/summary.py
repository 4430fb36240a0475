"""Slide-level figures of a blur map: tiles and tissue area per class, what was restored."""

from __future__ import annotations

import math

import numpy as np

from ._types import LABELS
from .blurmap import ACTIONS, BlurMap


def summarize(blurmap: BlurMap, mpp: float | None, mpp_y: float | None = None) -> dict[str, object]:
    """Slide-level figures of a blur map, JSON-ready (NaN where a fraction of nothing is asked for).

    Areas are those of the cells clipped to the slide, so the narrower edge tiles weigh less. A *tile* here
    is a tissue cell that has a class; ``unclassified_tiles`` counts tissue cells without one (zero once the
    classification pass is complete). Keys:

    - ``tiles``, ``unclassified_tiles``, ``tile_size``, ``width``, ``height`` (level-0 pixels);
    - ``tissue_fraction``: tissue area / slide area covered by the grid;
    - ``class_tiles``: tiles per class; ``class_fraction``: share of the classified tissue area per class
      (sums to 1); ``class_area_mm2``: the same in mm² (None when ``mpp`` is unknown; pixels are ``mpp`` wide
      and ``mpp_y`` high, default ``mpp``);
    - ``tissue_area_mm2`` (None when ``mpp`` is unknown);
    - ``restored_tiles``: tiles whose action restores; ``restored_fraction``: their share of the classified
      tissue area;
    - ``actions``: tiles per action name (:data:`~wsi_deblur.blurmap.ACTIONS`).
    """
    mpp = checked_mpp(mpp)
    height_um = mpp if mpp_y is None else checked_mpp(mpp_y)
    areas = cell_areas(blurmap)
    tissue = np.asarray(blurmap.tissue, dtype=bool)
    classified = tissue & (blurmap.labels >= 0)
    labels = blurmap.labels[classified]
    actions = blurmap.actions[classified]
    tile_areas = areas[classified]
    classified_area = float(tile_areas.sum())
    tissue_area = float(areas[tissue].sum())
    total_area = float(areas.sum())

    def share(area: float) -> float:
        return area / classified_area if classified_area > 0 else math.nan

    def mm2(area_px: float) -> float | None:
        # mpp is micrometres per pixel; 1 mm² = 1e6 µm²
        return None if mpp is None or height_um is None else area_px * mpp * height_um / 1e6

    class_area = {name: float(tile_areas[labels == i].sum()) for i, name in enumerate(LABELS)}
    restored = actions > 0
    return {
        "width": int(blurmap.width),
        "height": int(blurmap.height),
        "tile_size": int(blurmap.tile_size),
        "tiles": int(classified.sum()),
        "unclassified_tiles": int(tissue.sum() - classified.sum()),
        "tissue_fraction": tissue_area / total_area if total_area > 0 else math.nan,
        "tissue_area_mm2": mm2(tissue_area),
        "class_tiles": {name: int((labels == i).sum()) for i, name in enumerate(LABELS)},
        "class_fraction": {name: share(area) for name, area in class_area.items()},
        "class_area_mm2": {name: mm2(area) for name, area in class_area.items()} if mpp is not None else None,
        "restored_tiles": int(restored.sum()),
        "restored_fraction": share(float(tile_areas[restored].sum())),
        "actions": {name: int((actions == i).sum()) for i, name in enumerate(ACTIONS)},
    }


def checked_mpp(mpp: float | None) -> float | None:
    if mpp is None:
        return None
    value = float(mpp)
    if not math.isfinite(value) or value <= 0:
        raise ValueError(f"mpp must be a positive number of micrometres per pixel, got {mpp!r}")
    return value


def cell_edges(n: int, tile_size: int, extent: int) -> np.ndarray:
    """Level-0 cell edges along one axis: n + 1 values, the last cell clipped to the slide."""
    return np.minimum(np.arange(n + 1, dtype=np.int64) * tile_size, extent)


def cell_areas(blurmap: BlurMap) -> np.ndarray:
    """Level-0 pixel area of every cell, clipped to the slide (float64, the blur map's shape)."""
    rows, cols = blurmap.shape
    if blurmap.tile_size <= 0 or (rows - 1) * blurmap.tile_size >= blurmap.height or (
        cols - 1
    ) * blurmap.tile_size >= blurmap.width:
        raise ValueError(
            f"blur map of {rows}x{cols} cells of {blurmap.tile_size} px does not fit a "
            f"{blurmap.width}x{blurmap.height} slide"
        )
    heights = np.diff(cell_edges(rows, blurmap.tile_size, blurmap.height)).astype(np.float64)
    widths = np.diff(cell_edges(cols, blurmap.tile_size, blurmap.width)).astype(np.float64)
    return np.outer(heights, widths)
