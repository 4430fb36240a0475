"""Tissue detection on a low-resolution view of the slide.

Brightfield tissue absorbs light: it is coloured (saturated) and has optical density above the glass. The mask is
Otsu's threshold on saturation, joined with an optical-density floor for pale but dense tissue, cleaned up with
morphology, on a thumbnail (a low pyramid level, or level 0 downsampled when the slide has only one level).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage
from skimage.filters import threshold_otsu

#: Longest side of the view the mask is computed on. At 2048 px a 100k px slide gives ~50 px per mask pixel,
#: ten mask pixels per 512 px tile: enough to decide which tiles hold tissue.
MASK_SIZE = 2048
#: Saturation below this is glass whatever Otsu says (blank slides have no bimodal histogram).
MIN_SATURATION = 0.07
#: Optical density (mean over RGB) above which a pixel is tissue even when unsaturated (dense, grey tissue).
MIN_DENSITY = 0.25
#: A tile holds tissue when at least this fraction of its area is tissue.
MIN_TISSUE_FRACTION = 0.05


def tissue_mask(rgb: np.ndarray) -> np.ndarray:
    """Boolean tissue mask of an RGB uint8 thumbnail."""
    img = np.asarray(rgb, dtype=np.float32) / 255.0
    cmax = img.max(axis=2)
    cmin = img.min(axis=2)
    saturation = np.where(cmax > 0, (cmax - cmin) / np.maximum(cmax, 1e-6), 0.0)
    density = -np.log10(np.clip(img, 1 / 255.0, 1.0)).mean(axis=2)
    threshold = MIN_SATURATION
    if float(saturation.max() - saturation.min()) > 1e-3:
        threshold = max(MIN_SATURATION, float(threshold_otsu(saturation)))
    # near-black pixels (scanner padding, pen, out-of-slide areas of some formats) are not tissue
    mask = ((saturation > threshold) | (density > MIN_DENSITY)) & (cmax > 0.08)
    # close small gaps in tissue, drop specks of dust: ~1% of the view's side
    radius = max(1, round(max(mask.shape) / 400))
    structure = ndimage.generate_binary_structure(2, 1)
    mask = ndimage.binary_closing(mask, structure, iterations=radius)
    mask = ndimage.binary_opening(mask, structure, iterations=radius)
    return np.asarray(mask, dtype=bool)


def tissue_cells(
    mask: np.ndarray, width: int, height: int, tile_size: int, min_fraction: float = MIN_TISSUE_FRACTION
) -> np.ndarray:
    """Which level-0 tiles of ``tile_size`` hold tissue, from a mask covering the whole level 0."""
    rows = -(-height // tile_size)
    cols = -(-width // tile_size)
    mh, mw = mask.shape
    sy, sx = mh / height, mw / width
    out = np.zeros((rows, cols), dtype=bool)
    integral = np.pad(mask.astype(np.int64).cumsum(0).cumsum(1), ((1, 0), (1, 0)))
    for r in range(rows):
        y0 = int(np.floor(r * tile_size * sy))
        y1 = max(y0 + 1, int(np.ceil(min(height, (r + 1) * tile_size) * sy)))
        y1 = min(y1, mh)
        for c in range(cols):
            x0 = int(np.floor(c * tile_size * sx))
            x1 = max(x0 + 1, int(np.ceil(min(width, (c + 1) * tile_size) * sx)))
            x1 = min(x1, mw)
            area = max(1, (y1 - y0) * (x1 - x0))
            count = integral[y1, x1] - integral[y0, x1] - integral[y1, x0] + integral[y0, x0]
            out[r, c] = count / area >= min_fraction
    return out
