"""Blend weights, seams and tiled-equals-untiled restoration, with a small local filter as the method."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from wsi_deblur.blend import action_weights, blend, ramp_width
from wsi_deblur.restore import restore_box
from wsi_deblur.tiling import Box, cell_read_box, cells_touching, read_padded


class UnsharpMethod:
    """A real, strictly local restorer (unsharp mask, support RADIUS): enough to test tiling and blending."""

    name = "unsharp"
    version = "test"
    align = 8
    RADIUS = 6

    def halo(self, mpp: float, steps: tuple[str, ...] | None = None) -> int:
        return self.RADIUS

    def classify(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        raise NotImplementedError

    def restore(self, image: np.ndarray, steps: tuple[str, ...], mpp: float, margin: int = 0) -> np.ndarray:
        x = image.astype(np.float32)
        amount = {"defocus": 1.5, "motion": 0.8}
        for step in steps:
            low = ndimage.uniform_filter(x, size=(2 * self.RADIUS // len(steps) + 1,) * 2 + (1,), mode="mirror")
            x = x + amount[step] * (x - low)
        return np.clip(np.rint(x), 0, 255).astype(np.uint8)


@pytest.fixture(scope="module")
def tissue(tiles_dir) -> np.ndarray:  # type: ignore[no-untyped-def]
    with Image.open(tiles_dir / "high-nuclei-score-level0.png") as im:
        rgb = np.asarray(im.convert("RGB"))
    return np.ascontiguousarray(rgb[:700, :900])


def test_read_padded_mirrors_outside(tissue: np.ndarray) -> None:
    h, w = tissue.shape[:2]

    def read(x: int, y: int, ww: int, hh: int) -> np.ndarray:
        return tissue[y : y + hh, x : x + ww]

    box = Box(-5, -3, 20, 10)
    out = read_padded(read, box, w, h)
    assert out.shape == (10, 20, 3)
    np.testing.assert_array_equal(out[3:, 5:], tissue[:7, :15])
    np.testing.assert_array_equal(out[3:, 4], tissue[:7, 0])  # mirrored, not background
    with pytest.raises(ValueError, match="outside"):
        read_padded(read, Box(w + 10, 0, 5, 5), w, h)


def test_cell_read_box_stays_inside() -> None:
    b = cell_read_box(2, 3, 256, 700, 600)
    assert (b.x + b.w, b.y + b.h) == (700, 600) and b.w == 256 and b.h == 256
    assert cells_touching(Box(250, 0, 10, 10), 256, (3, 3)) == (slice(0, 1), slice(0, 2))


def test_weights_zero_outside_restored_cells_and_ramp_inside() -> None:
    actions = np.zeros((4, 4), dtype=np.int8)
    actions[1:3, 1:3] = 1  # a 2x2 block of defocus cells in the middle
    actions[0, 3] = -1  # background
    tile = 64
    box = Box(0, 0, 256, 256)
    ramp = ramp_width(tile)
    weights = action_weights(actions, (0, 0), tile, box, 256, 256, ramp)
    assert set(weights) == {1}
    w = weights[1]
    assert np.all(w[:64, :] == 0) and np.all(w[:, :64] == 0) and np.all(w[192:, :] == 0)
    assert w[64:192, 64:192].min() >= 0
    assert w[64, 128] == 0  # the border pixel of the restored area
    assert w[64 + ramp, 128] == pytest.approx(1.0, abs=0.02)
    profile = w[64 : 64 + ramp, 128]
    assert np.all(np.diff(profile) >= 0)  # monotone ramp


def test_no_ramp_at_the_slide_edge() -> None:
    actions = np.ones((2, 2), dtype=np.int8)
    w = action_weights(actions, (0, 0), 64, Box(0, 0, 128, 128), 128, 128, 16)[1]
    assert np.all(w == 1)


def test_blend_keeps_untouched_pixels_bit_identical(tissue: np.ndarray) -> None:
    original = tissue[:128, :128]
    restored = {1: 255 - original}
    weight = np.zeros((128, 128), dtype=np.float32)
    weight[32:96, 32:96] = 0.5
    out = blend(original, restored, {1: weight})
    np.testing.assert_array_equal(out[:32], original[:32])
    assert not np.array_equal(out[32:96, 32:96], original[32:96, 32:96])


def _restore_tiled(image: np.ndarray, actions: np.ndarray, tile: int, block: int) -> np.ndarray:
    h, w = image.shape[:2]
    method = UnsharpMethod()

    def read(x: int, y: int, ww: int, hh: int) -> np.ndarray:
        return image[y : y + hh, x : x + ww]

    out = np.empty_like(image)
    for y in range(0, h, block):
        for x in range(0, w, block):
            box = Box(x, y, min(block, w - x), min(block, h - y))
            reach = box.grow(ramp_width(tile)).clip(w, h)
            rows, cols = cells_touching(reach, tile, actions.shape)
            pixels, _, _ = restore_box(read, w, h, box, actions[rows, cols], (rows.start, cols.start), tile,
                                       method, 0.5)
            out[box.y : box.y + box.h, box.x : box.x + box.w] = pixels
    return out


def test_tiled_equals_untiled_and_untouched_cells_identical(tissue: np.ndarray) -> None:
    h, w = tissue.shape[:2]
    tile = 128
    actions = np.zeros((-(-h // tile), -(-w // tile)), dtype=np.int8)
    actions[1:4, 1:3] = 1
    actions[2:5, 4:6] = 2
    actions[0, 6] = 3
    whole = _restore_tiled(tissue, actions, tile, block=max(h, w))
    # deliberately odd block sizes exercise every seam
    for block in (128, 192, 320):
        tiled = _restore_tiled(tissue, actions, tile, block)
        np.testing.assert_array_equal(tiled, whole)
    # cells that ask for nothing, and lie beyond every ramp, are the input bit for bit
    untouched = np.kron(actions <= 0, np.ones((tile, tile), dtype=bool))[:h, :w]
    np.testing.assert_array_equal(whole[untouched], tissue[untouched])
    assert not np.array_equal(whole[tile * 2 : tile * 3, tile : tile * 2], tissue[tile * 2 : tile * 3, tile : tile * 2])


def _seam_ratio(image: np.ndarray, tile: int) -> float:
    """Mean absolute gradient across tile borders over that inside tiles (1.0 = no seam)."""
    g = np.abs(np.diff(image.astype(np.float32).mean(axis=2), axis=1))
    borders = np.arange(tile - 1, g.shape[1], tile)
    inside = np.setdiff1d(np.arange(g.shape[1]), borders)
    return float(g[:, borders].mean() / g[:, inside].mean())


def test_no_seam_at_tile_borders(tissue: np.ndarray) -> None:
    h, w = tissue.shape[:2]
    tile = 128
    actions = np.zeros((-(-h // tile), -(-w // tile)), dtype=np.int8)
    actions[:, ::2] = 1  # restored and untouched columns of tiles alternate: many restored/untouched borders
    out = _restore_tiled(tissue, actions, tile, block=256)
    before = _seam_ratio(tissue, tile)
    after = _seam_ratio(out, tile)
    assert after < before * 1.15, (before, after)
    # without the blend ramp the step in sharpness shows as a seam: the metric can see one
    hard = tissue.copy()
    sharpened = UnsharpMethod().restore(tissue, ("defocus",), 0.5)
    for c in range(0, actions.shape[1], 2):
        hard[:, c * tile : (c + 1) * tile] = sharpened[:, c * tile : (c + 1) * tile]
    assert _seam_ratio(hard, tile) > after


class CountingMethod(UnsharpMethod):
    """The unsharp restorer, counting the pixels it is handed."""

    def __init__(self) -> None:
        self.pixels = 0

    def restore(self, image: np.ndarray, steps: tuple[str, ...], mpp: float, margin: int = 0) -> np.ndarray:
        self.pixels += image.shape[0] * image.shape[1]
        return super().restore(image, steps, mpp)


def test_scattered_cells_restore_only_their_patches(tissue: np.ndarray) -> None:
    h, w = tissue.shape[:2]
    tile = 128
    actions = np.zeros((-(-h // tile), -(-w // tile)), dtype=np.int8)
    actions[1, 1] = 1
    actions[4, 5] = 1  # two patches far apart: their bounding box is most of the image
    method = CountingMethod()

    def read(x: int, y: int, ww: int, hh: int) -> np.ndarray:
        return tissue[y : y + hh, x : x + ww]

    box = Box(0, 0, w, h)
    pixels, _, restored = restore_box(read, w, h, box, actions, (0, 0), tile, method, 0.5)
    assert restored
    side = tile + 2 * 8  # a cell, aligned, plus the halo rounded up to the alignment on each side
    assert method.pixels == 2 * side * side
    assert method.pixels < 0.25 * (4 * tile) * (5 * tile)
    # each patch is what restoring the whole image and blending gives (the restorer is local)
    whole = UnsharpMethod().restore(tissue, ("defocus",), 0.5)
    weights = action_weights(actions, (0, 0), tile, box, w, h, ramp_width(tile))
    np.testing.assert_array_equal(pixels, blend(tissue, {1: whole}, weights))


@pytest.mark.parametrize("seed", [0, 1, 2, 3])
def test_weights_match_the_euclidean_distance_transform(seed: int) -> None:
    """The closed-form distance to other cells gives the weights a full distance transform gives, bit for bit,
    at slide edges and corners too."""
    from wsi_deblur.blend import _smoothstep

    rng = np.random.default_rng(seed)
    tile, ramp = 64, 16
    width, height = int(rng.integers(150, 400)), int(rng.integers(150, 400))
    rows, cols = -(-height // tile), -(-width // tile)
    actions = rng.choice(np.array([-1, 0, 1, 3], dtype=np.int8), size=(rows, cols), p=[0.2, 0.3, 0.3, 0.2])
    x, y = int(rng.integers(0, width - 100)), int(rng.integers(0, height - 100))
    box = Box(x, y, min(int(rng.integers(60, 200)), width - x), min(int(rng.integers(60, 200)), height - y))
    weights = action_weights(actions, (0, 0), tile, box, width, height, ramp)
    outer = box.grow(ramp)
    ys = np.clip(np.arange(outer.y, outer.y + outer.h), 0, height - 1) // tile
    xs = np.clip(np.arange(outer.x, outer.x + outer.w), 0, width - 1) // tile
    for code in (1, 3):
        inside = (actions == code)[ys[:, None], xs[None, :]]
        if not inside[box.slices_in(outer)].any():
            assert code not in weights
            continue
        distance = ndimage.distance_transform_edt(inside)[box.slices_in(outer)]
        expected = _smoothstep((distance - 1.0) / ramp).astype(np.float32)
        np.testing.assert_array_equal(weights[code], expected)
