"""The classical method on real tissue degraded with the blur physics (fixed seeds)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from skimage.metrics import structural_similarity

from wsi_deblur import physics
from wsi_deblur._types import LABELS
from wsi_deblur.methods import get_method
from wsi_deblur.methods.base import Method
from wsi_deblur.methods.classical import ClassicalMethod

#: A 512 px H&E tile with nuclei, stroma and a little background.
TILE = "tissue-level0-7352-11762-7864-12274.png"
#: A tissue region of CMU-1 (level 0, 0.499 um/px) big enough for the halo test.
CMU_REGION = (741, 1877, 1400)


@pytest.fixture(scope="module")
def method() -> ClassicalMethod:
    return ClassicalMethod()


@pytest.fixture(scope="module")
def tissue(tiles_dir: Path) -> np.ndarray:
    with Image.open(tiles_dir / TILE) as im:
        return np.asarray(im.convert("RGB"))


def degrade(
    rgb: np.ndarray, optics: physics.Optics, z_dof: float = 0.0, motion: float = 0.0, angle: float = 0.0
) -> np.ndarray:
    return physics.degrade(
        rgb, optics, z_dof * optics.dof_um, motion, angle, jpeg_quality=90, rng=np.random.default_rng(7)
    )


def label(method: ClassicalMethod, rgb: np.ndarray, mpp: float) -> str:
    return LABELS[int(np.argmax(method.classify(rgb[None], mpp)[0]))]


def ssim(a: np.ndarray, b: np.ndarray) -> float:
    return float(structural_similarity(a, b, channel_axis=2))


def test_registry_and_protocol() -> None:
    m = get_method("classical")
    assert isinstance(m, ClassicalMethod)
    assert isinstance(m, Method)
    assert (m.name, m.align) == ("classical", 1)


def test_classify_in_focus(method: ClassicalMethod, tissue: np.ndarray) -> None:
    assert label(method, degrade(tissue, physics.SCANNER_20X), 0.5) == "in_focus"


def test_classify_defocus(method: ClassicalMethod, tissue: np.ndarray) -> None:
    assert label(method, degrade(tissue, physics.SCANNER_20X, z_dof=3.0), 0.5) == "defocus"
    assert label(method, degrade(tissue, physics.SCANNER_20X, z_dof=-3.0), 0.5) == "defocus"


@pytest.mark.parametrize("angle", [0.0, 45.0, 90.0])
def test_classify_motion(method: ClassicalMethod, tissue: np.ndarray, angle: float) -> None:
    assert label(method, degrade(tissue, physics.SCANNER_20X, motion=20.0, angle=angle), 0.5) == "motion"


def test_classify_mixed(method: ClassicalMethod, tissue: np.ndarray) -> None:
    # Mixed is the weakest class of the classical method (about 80% on held-out images, the rest called motion
    # or defocus); on this tile with 2 DOF and 20 px at 30 degrees it is right.
    blurred = degrade(tissue, physics.SCANNER_20X, z_dof=2.0, motion=20.0, angle=30.0)
    assert label(method, blurred, 0.5) == "mixed"


def test_probabilities(method: ClassicalMethod, tissue: np.ndarray) -> None:
    tiles = np.stack(
        [
            degrade(tissue, physics.SCANNER_20X)[:256, :256],
            degrade(tissue, physics.SCANNER_20X, z_dof=3.0)[:256, :256],
            tissue[256:, 256:],
        ]
    )
    probs = method.classify(tiles, 0.5)
    assert probs.shape == (3, 4) and probs.dtype == np.float32
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert np.all(probs >= 0)
    assert method.classify(np.zeros((0, 64, 64, 3), np.uint8), 0.5).shape == (0, 4)


@pytest.mark.parametrize("z_dof", [0.0, 3.0])
def test_same_verdict_at_two_pixel_sizes(method: ClassicalMethod, tissue: np.ndarray, z_dof: float) -> None:
    # The tile taken as scanned at 0.25 um/px, then the same field at 0.5 um/px (2x smaller).
    fine = degrade(tissue, physics.SCANNER_40X, z_dof=z_dof)
    coarse = np.asarray(Image.fromarray(fine).resize((256, 256), Image.LANCZOS))
    expected = "in_focus" if z_dof == 0.0 else "defocus"
    assert label(method, fine, 0.25) == expected
    assert label(method, coarse, 0.5) == expected


def test_restore_defocus_raises_ssim(method: ClassicalMethod, tissue: np.ndarray) -> None:
    sharp = physics.degrade(tissue, physics.SCANNER_20X, noise=False)
    blurred = degrade(tissue, physics.SCANNER_20X, z_dof=2.0)
    restored = method.restore(blurred, ("defocus",), 0.5)
    assert restored.shape == blurred.shape and restored.dtype == np.uint8
    assert ssim(sharp, restored) > ssim(sharp, blurred) + 0.05


@pytest.mark.parametrize("angle", [30.0, 90.0])
def test_restore_motion_raises_ssim(method: ClassicalMethod, tissue: np.ndarray, angle: float) -> None:
    sharp = physics.degrade(tissue, physics.SCANNER_20X, noise=False)
    blurred = degrade(tissue, physics.SCANNER_20X, motion=20.0, angle=angle)
    restored = method.restore(blurred, ("motion",), 0.5)
    assert ssim(sharp, restored) > ssim(sharp, blurred) + 0.1


@pytest.mark.parametrize("steps", [("defocus",), ("motion",), ("motion", "defocus")])
def test_in_focus_scan_comes_back_unchanged(method: ClassicalMethod, slides_dir: Path, tissue: np.ndarray,
                                            steps: tuple[str, ...]) -> None:
    # a false alarm must not sharpen a scan past its own sharpness: an in-focus region fits a disc within the scan's
    # own blur and the shortest motion line, and each step then leaves it as it is
    x, y, _ = CMU_REGION
    slide = openslide.OpenSlide(str(slides_dir / "CMU-1-Small-Region.svs"))
    try:
        scan = np.asarray(slide.read_region((x, y), 0, (600, 600)).convert("RGB"))
    finally:
        slide.close()
    for image in (scan, degrade(tissue, physics.SCANNER_20X)):
        np.testing.assert_array_equal(method.restore(image, steps, 0.5), image)


def test_defocus_step_acts_only_past_a_scans_own_blur(method: ClassicalMethod, tissue: np.ndarray) -> None:
    from wsi_deblur.methods import classical_deconv

    assert classical_deconv._DEFOCUS_RADII[0] < classical_deconv._NATIVE_RADIUS < 2.08
    # half a DOF at 20x (the in-focus class) fits no wider disc than the scan itself: left as it is
    slight = degrade(tissue, physics.SCANNER_20X, z_dof=0.3)
    np.testing.assert_array_equal(method.restore(slight, ("defocus",), 0.5), slight)
    # 1 DOF at 20x is wider than a scan's own blur, and restored
    sharp = physics.degrade(tissue, physics.SCANNER_20X, noise=False)
    blurred = degrade(tissue, physics.SCANNER_20X, z_dof=1.0)
    restored = method.restore(blurred, ("defocus",), 0.5)
    assert ssim(sharp, restored) > ssim(sharp, blurred) + 0.02


def test_restore_without_steps_is_identity(method: ClassicalMethod, tissue: np.ndarray) -> None:
    out = method.restore(tissue, (), 0.5)
    assert out.dtype == np.uint8
    np.testing.assert_array_equal(out, tissue)


@pytest.mark.parametrize("steps", [("motion", "defocus"), ("defocus",)])
def test_padded_tile_matches_larger_region(method: ClassicalMethod, slides_dir: Path, steps: tuple[str, ...]) -> None:
    x, y, side = CMU_REGION
    slide = openslide.OpenSlide(str(slides_dir / "CMU-1-Small-Region.svs"))
    try:
        region = np.asarray(slide.read_region((x, y), 0, (side, side)).convert("RGB"))
    finally:
        slide.close()
    blurred = degrade(region, physics.SCANNER_20X, z_dof=2.0, motion=15.0, angle=100.0)
    halo = method.halo(0.5, steps)
    assert halo <= method.halo(0.5)
    tile = 256
    c = side // 2
    t0 = c - tile // 2
    assert t0 - halo >= 0, "the region is too small for this halo"
    whole = method.restore(blurred, steps, 0.5)[t0 : t0 + tile, t0 : t0 + tile].astype(float)
    padded = blurred[t0 - halo : t0 + tile + halo, t0 - halo : t0 + tile + halo]
    cropped = method.restore(padded, steps, 0.5)[halo : halo + tile, halo : halo + tile].astype(float)
    diff = np.abs(whole - cropped)
    assert diff.mean() < 1.0
    assert np.percentile(diff, 99) <= 4


@pytest.mark.parametrize("angle", [45.0, 135.0])
def test_small_image_mirrored_past_its_edge_keeps_its_motion_angle(
    method: ClassicalMethod, tissue: np.ndarray, angle: float
) -> None:
    """``restore_image`` mirrors a small image by the halo on every side. A mirror turns oblique motion at 45
    degrees into 135, and that context outweighs the image itself where it is small; with ``margin`` the PSF is
    estimated inside it and the restoration matches the one of the unpadded image."""
    sharp = physics.degrade(tissue[:256, :256], physics.SCANNER_20X, noise=False)
    blurred = degrade(tissue[:256, :256], physics.SCANNER_20X, motion=15.0, angle=angle)
    halo = method.halo(0.5, ("motion",))
    padded = np.pad(blurred, ((halo, halo), (halo, halo), (0, 0)), mode="symmetric")
    kept = (slice(halo, -halo), slice(halo, -halo))
    direct = ssim(sharp, method.restore(blurred, ("motion",), 0.5))
    inside = ssim(sharp, method.restore(padded, ("motion",), 0.5, margin=halo)[kept])
    mirrored = ssim(sharp, method.restore(padded, ("motion",), 0.5)[kept])
    assert inside > ssim(sharp, blurred) + 0.15
    assert inside > direct - 0.02
    assert mirrored < inside - 0.05  # what the estimate over the mirrored context gave


def test_estimates_agree_between_neighbouring_regions(tissue: np.ndarray) -> None:
    from wsi_deblur.methods import classical

    blurred = degrade(tissue, physics.SCANNER_20X, motion=20.0, angle=30.0)
    lin = physics.srgb_to_linear(blurred)[..., 1]
    fits = [
        classical._fit_bank(
            classical._estimate_spectrum(lin[y : y + 384, x : x + 384]), classical._motion_bank()
        )
        for y, x in [(0, 0), (64, 128), (128, 64)]
    ]
    lengths = {classical._MOTION_LENGTHS[f.index // len(classical._MOTION_ANGLES)] for f in fits}
    angles = {classical._MOTION_ANGLES[f.index % len(classical._MOTION_ANGLES)] for f in fits}
    assert max(lengths) - min(lengths) <= 3.0 and all(abs(a - 30.0) <= 7.5 for a in angles)


def test_bad_input(method: ClassicalMethod, tissue: np.ndarray) -> None:
    with pytest.raises(ValueError, match="uint8"):
        method.classify(tissue[None].astype(np.float32), 0.5)
    with pytest.raises(ValueError, match="step"):
        method.restore(tissue, ("sharpen",), 0.5)
    with pytest.raises(ValueError, match="mpp"):
        method.restore(tissue, ("defocus",), 0.0)
