"""Single images: classify and restore one RGB array with the same policy the slide workflow uses."""

from __future__ import annotations

import numpy as np

from ._types import DEFAULT_MPP, LABELS, BlurPrediction
from .blurmap import ACTION_STEPS, DEFAULT_MIN_BLUR_PROBABILITY, BlurMap, decide
from .methods import DEFAULT_METHOD, get_method
from .restore import restore_box
from .tiling import Box, cell_read_box

#: Smallest side an image may have: the classifiers need some texture to judge sharpness.
MIN_SIDE = 64
#: Images up to this side are classified whole; larger ones tile by tile (TILE_SIZE), probabilities averaged.
WHOLE_IMAGE_SIDE = 1024
#: Tile size for the blur map of a large image (the slide workflow's default).
TILE_SIZE = 512


def _check_image(rgb: np.ndarray) -> np.ndarray:
    image = np.asarray(rgb)
    if image.ndim != 3 or image.shape[2] != 3:
        raise ValueError(f"expected an RGB image of shape (height, width, 3), got shape {image.shape}")
    if image.dtype != np.uint8:
        raise ValueError(f"expected a uint8 image, got {image.dtype}")
    if min(image.shape[:2]) < MIN_SIDE:
        raise ValueError(f"image of {image.shape[1]}x{image.shape[0]} is too small: at least {MIN_SIDE}x{MIN_SIDE}")
    return image


def _blurmap(image: np.ndarray, mpp: float, method_name: str, tile_size: int, precision: str) -> BlurMap:
    height, width = image.shape[:2]
    rows, cols = -(-height // tile_size), -(-width // tile_size)
    blurmap = BlurMap.empty(width, height, tile_size, np.ones((rows, cols), dtype=bool))
    cells = [(r, c) for r in range(rows) for c in range(cols)]
    boxes = [cell_read_box(r, c, tile_size, width, height) for r, c in cells]
    tiles = np.stack([image[b.y : b.y + b.h, b.x : b.x + b.w] for b in boxes])
    probabilities = get_method(method_name, precision).classify(tiles, mpp)
    blurmap.set_probabilities(cells, probabilities, DEFAULT_MIN_BLUR_PROBABILITY)
    return blurmap


def classify_image(
    rgb: np.ndarray, mpp: float | None = None, *, method: str = DEFAULT_METHOD, precision: str = "auto"
) -> BlurPrediction:
    """Blur class of an RGB uint8 image (at least 64x64): in_focus, defocus, motion or mixed. ``precision``:
    auto (bfloat16 where the CPU has it), float32 or bfloat16."""
    image = _check_image(rgb)
    mpp = DEFAULT_MPP if mpp is None else float(mpp)
    if max(image.shape[:2]) <= WHOLE_IMAGE_SIDE:
        probabilities = get_method(method, precision).classify(image[None], mpp)[0]
    else:
        blurmap = _blurmap(image, mpp, method, TILE_SIZE, precision)
        probabilities = np.nanmean(blurmap.probabilities.reshape(-1, len(LABELS)), axis=0)
    probs = {name: float(p) for name, p in zip(LABELS, probabilities, strict=True)}
    _, actions = decide(np.asarray(probabilities, dtype=np.float32))
    route = ACTION_STEPS[int(actions)]
    return BlurPrediction(label=max(probs, key=probs.__getitem__), probabilities=probs, route=route)


def restore_image(
    rgb: np.ndarray, mpp: float | None = None, *, method: str = DEFAULT_METHOD, precision: str = "auto"
) -> np.ndarray:
    """The DBMID policy on one RGB uint8 image of any size: classify, route, restore, blend.

    Images up to twice the tile size are treated as one tile; larger ones get a blur map of 512 px tiles, each
    restored along the route :func:`.blurmap.decide` gives its class probabilities (its class's, unless the
    classifier finds another class plausible) and blended without seams. An in-focus image comes back unchanged.
    """
    image = _check_image(rgb)
    mpp = DEFAULT_MPP if mpp is None else float(mpp)
    height, width = image.shape[:2]
    tile_size = TILE_SIZE if max(height, width) > 2 * TILE_SIZE else max(height, width)
    blurmap = _blurmap(image, mpp, method, tile_size, precision)

    def read(x: int, y: int, w: int, h: int) -> np.ndarray:
        return image[y : y + h, x : x + w]

    pixels, _, _ = restore_box(
        read, width, height, Box(0, 0, width, height), blurmap.actions, (0, 0), tile_size,
        get_method(method, precision), mpp,
    )
    return np.array(pixels, dtype=np.uint8, copy=True)
