"""Blur physics: PSFs against optics (Airy spot, depth of field), motion kernels, linear-light blurring."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image
from scipy import ndimage
from scipy.special import j1
from skimage.color import rgb2gray
from skimage.filters import laplace

from wsi_deblur import physics
from wsi_deblur.physics import (
    PAPER_10X,
    RANDOM_ZERNIKE_SD,
    SCANNER_20X,
    SCANNER_40X,
    BlurSpec,
    Optics,
    blur,
    class_label,
    defocus_psf,
    degrade,
    depth_of_field,
    motion_psf,
    random_optics,
    sample_spec,
    srgb_to_linear,
)


def _radius_holding(psf: np.ndarray, fraction: float) -> np.ndarray:
    """Per channel, the smallest radius (px) whose disc holds ``fraction`` of the PSF."""
    c = psf.shape[0] // 2
    y, x = np.mgrid[-c : c + 1, -c : c + 1]
    r = np.hypot(x, y).ravel()
    order = np.argsort(r, kind="stable")
    out = []
    for ch in range(psf.shape[2]):
        cum = np.cumsum(psf[:, :, ch].ravel()[order])
        out.append(r[order][np.searchsorted(cum, fraction)])
    return np.array(out)


def _second_moment(psf: np.ndarray) -> np.ndarray:
    c = psf.shape[0] // 2
    y, x = np.mgrid[-c : c + 1, -c : c + 1]
    return np.array([(psf[:, :, ch] * (x**2 + y**2)).sum() for ch in range(psf.shape[2])])


@pytest.fixture(scope="module")
def tissue(tiles_dir: Path) -> np.ndarray:
    with Image.open(tiles_dir / "tissue-level0-4302-10273-4814-10785.png") as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8)


def test_depth_of_field_matches_design() -> None:
    assert PAPER_10X.dof_um == pytest.approx(7.9, abs=0.05)
    assert SCANNER_20X.dof_um == pytest.approx(1.6, abs=0.05)
    assert depth_of_field(0.3, 0.55) == pytest.approx(0.55 / 0.09 + 0.55 / 0.3)
    # Longer wavelength, longer depth of field; finer pixels, shorter.
    assert depth_of_field(0.75, 0.5, 650.0) > depth_of_field(0.75, 0.5)
    assert SCANNER_40X.dof_um < SCANNER_20X.dof_um


@pytest.mark.parametrize("optics", [SCANNER_20X, PAPER_10X, SCANNER_40X], ids=["20x", "10x", "40x"])
def test_in_focus_psf_is_the_pixel_integrated_airy_pattern(optics: Optics) -> None:
    psf = defocus_psf(optics, 0.0)
    c = psf.shape[0] // 2
    h, sub = 3, 20  # compare the central 7x7 pixels; analytic pixel integrals on a 20x20 sub-grid
    u = (np.arange((2 * h + 1) * sub) + 0.5) / sub - (h + 0.5)
    xx, yy = np.meshgrid(u, u)
    for ch, wl_nm in enumerate(optics.wavelengths_nm):
        lam = wl_nm / 1000.0
        v = 2 * np.pi * optics.na / lam * np.hypot(xx, yy) * optics.mpp
        airy = (2 * j1(v) / v) ** 2  # peak 1; its integral over the plane is lambda**2 / (pi NA**2)
        pixels = airy.reshape(2 * h + 1, sub, 2 * h + 1, sub).sum(axis=(1, 3)) * (optics.mpp / sub) ** 2
        pixels /= lam**2 / (np.pi * optics.na**2)
        got = psf[c - h : c + h + 1, c - h : c + h + 1, ch]
        np.testing.assert_allclose(got, pixels, atol=0.004)


def test_in_focus_spot_at_20x_is_a_pixel_or_two_wide() -> None:
    psf = defocus_psf(SCANNER_20X, 0.0)
    c = psf.shape[0] // 2
    centre = psf[c, c]
    assert np.all(centre > 0.6)  # Airy core (first zero 0.5 um at 610 nm) fits within about one pixel
    assert np.all(psf[c - 1 : c + 2, c - 1 : c + 2].sum(axis=(0, 1)) > 0.85)
    assert np.all(_radius_holding(psf, 0.5) <= 1.0)


def test_defocus_psf_is_normalised_odd_and_symmetric() -> None:
    for z in (0.0, 1.0, -2.5, 6.0):
        psf = defocus_psf(SCANNER_20X, z)
        assert psf.dtype == np.float32 and psf.ndim == 3 and psf.shape[2] == 3
        assert psf.shape[0] == psf.shape[1] and psf.shape[0] % 2 == 1
        np.testing.assert_allclose(psf.sum(axis=(0, 1)), 1.0, atol=1e-5)
        assert psf.min() > -1e-6  # incoherent intensity: no negative lobes
        np.testing.assert_allclose(psf, psf[::-1, :], atol=1e-6)
        np.testing.assert_allclose(psf, psf[:, ::-1], atol=1e-6)
        np.testing.assert_allclose(psf, psf.transpose(1, 0, 2), atol=1e-6)
    # Without aberrations defocus blurs the same on either side of focus.
    np.testing.assert_allclose(
        defocus_psf(SCANNER_20X, 3.0, size=41), defocus_psf(SCANNER_20X, -3.0, size=41), atol=1e-6
    )


def test_defocus_psf_size_argument_and_errors() -> None:
    assert defocus_psf(SCANNER_20X, 2.0, size=31).shape == (31, 31, 3)
    with pytest.raises(ValueError, match="odd"):
        defocus_psf(SCANNER_20X, 2.0, size=30)
    with pytest.raises(ValueError, match="na"):
        Optics(na=1.2, mpp=0.5)
    # The cached array is not handed out: changing a result leaves the next one intact.
    first = defocus_psf(SCANNER_20X, 1.0)
    first[:] = 0
    assert defocus_psf(SCANNER_20X, 1.0).sum() == pytest.approx(3.0, abs=1e-4)


def test_defocus_psf_widens_monotonically_with_distance_from_focus() -> None:
    dof = SCANNER_20X.dof_um
    widths = [_second_moment(defocus_psf(SCANNER_20X, z * dof, size=61)) for z in (0, 0.5, 1, 1.5, 2, 3, 4)]
    assert np.all(np.diff(np.array(widths), axis=0) > 0)
    radii = [_radius_holding(defocus_psf(SCANNER_20X, -z * dof, size=61), 0.8) for z in (0, 1, 2, 4)]
    assert np.all(np.diff(np.array(radii), axis=0) > 0)
    # Far from focus the blur disc radius approaches geometry: z * tan(asin NA) (0.8 of the energy inside
    # a disc of 0.9 of that radius for a uniform disc).
    z = 4 * dof
    geometric_px = z * SCANNER_20X.na / np.sqrt(1 - SCANNER_20X.na**2) / SCANNER_20X.mpp
    assert radii[-1] == pytest.approx(np.full(3, 0.9 * geometric_px), rel=0.2)


def test_red_psf_is_wider_than_blue() -> None:
    psf = defocus_psf(SCANNER_20X, 0.0, size=41)
    moments = _second_moment(psf)
    assert moments[0] > moments[1] > moments[2]
    c = psf.shape[0] // 2
    assert psf[c, c, 0] < psf[c, c, 1] < psf[c, c, 2]


def test_section_thickness_widens_the_psf() -> None:
    z = 6.0  # um, beyond every thickness below: the whole section spreads the blur
    moments = [
        _second_moment(defocus_psf(dataclasses.replace(SCANNER_20X, thickness_um=t), z, size=81))
        for t in (0.0, 3.0, 6.0)
    ]
    assert np.all(np.diff(np.array(moments), axis=0) > 0)


def test_section_thickness_keeps_the_class() -> None:
    # The PSFs blur real in-focus scans, which already hold their section's depth: in focus, a thick section
    # adds nothing, and near focus it adds at most |z| of depth spread (a 1-DOF defocus stays a defocus).
    thick = dataclasses.replace(SCANNER_20X, thickness_um=10.0)
    np.testing.assert_allclose(defocus_psf(thick, 0.0, size=41), defocus_psf(SCANNER_20X, 0.0, size=41))
    dof = SCANNER_20X.dof_um
    half_dof = _second_moment(defocus_psf(SCANNER_20X, 0.5 * dof, size=61))
    one = _second_moment(defocus_psf(thick, dof, size=61))
    two = _second_moment(defocus_psf(SCANNER_20X, 2.0 * dof, size=61))
    assert np.all(half_dof < one) and np.all(one < two)


def test_partial_coherence() -> None:
    incoherent = defocus_psf(SCANNER_20X, 2.0, size=41)
    # A condenser filling the pupil (sigma >= 1) is the incoherent case exactly.
    np.testing.assert_allclose(
        defocus_psf(dataclasses.replace(SCANNER_20X, sigma=1.5), 2.0, size=41), incoherent, atol=1e-6
    )
    partial = defocus_psf(dataclasses.replace(SCANNER_20X, sigma=0.4), 2.0, size=41)
    np.testing.assert_allclose(partial.sum(axis=(0, 1)), 1.0, atol=1e-5)
    assert partial.min() < -1e-3  # coherent ringing: negative side lobes
    np.testing.assert_allclose(partial, partial[::-1, ::-1], atol=1e-6)
    # More coherent light keeps more of the peak under the same defocus (longer depth of field).
    c = 20
    assert np.all(partial[c, c] > incoherent[c, c])


def test_zernike_aberrations_perturb_the_pupil() -> None:
    np.testing.assert_allclose(
        defocus_psf(dataclasses.replace(SCANNER_20X, zernike=(0.0,) * 7), 0.0, size=21),
        defocus_psf(SCANNER_20X, 0.0, size=21),
        atol=1e-6,
    )
    # Horizontal coma (Noll 8, index 3) shifts the spot's centroid along x and breaks the x mirror symmetry.
    coma = defocus_psf(dataclasses.replace(SCANNER_20X, zernike=(0.0, 0.0, 0.0, 0.3)), 0.0, size=31)
    xs = np.arange(31) - 15
    cx = (coma.sum(axis=0) * xs[:, None]).sum(axis=0)
    cy = (coma.sum(axis=1) * xs[:, None]).sum(axis=0)
    assert np.all(np.abs(cx) > 0.05) and np.all(np.abs(cy) < 1e-3)
    # Spherical aberration (Noll 11) lowers the peak (Strehl ratio < 1).
    spherical = defocus_psf(dataclasses.replace(SCANNER_20X, zernike=(0,) * 6 + (0.15,)), 0.0, size=31)
    assert np.all(spherical[15, 15] < defocus_psf(SCANNER_20X, 0.0, size=31)[15, 15])


@pytest.mark.parametrize("length", [5.0, 12.5, 20.0, 40.0])
@pytest.mark.parametrize("angle", [0.0, 30.0, 45.0, 90.0, 135.0])
def test_motion_psf_is_a_line_of_the_right_length_and_angle(length: float, angle: float) -> None:
    k = motion_psf(length, angle)
    assert k.dtype == np.float32 and k.shape[0] == k.shape[1] and k.shape[0] % 2 == 1
    assert k.sum() == pytest.approx(1.0, abs=1e-5)
    c = k.shape[0] // 2
    y, x = np.mgrid[-c : c + 1, -c : c + 1].astype(np.float64)
    a = np.deg2rad(angle)
    along = x * np.cos(a) - y * np.sin(a)  # rows grow downwards, angles counter-clockwise on screen
    across = x * np.sin(a) + y * np.cos(a)
    assert (k * along).sum() == pytest.approx(0.0, abs=1e-3)
    assert (k * across).sum() == pytest.approx(0.0, abs=1e-3)
    # A uniform segment of length L has variance L**2 / 12; bilinear splatting adds at most 1/6 per axis.
    assert (k * along**2).sum() == pytest.approx(length**2 / 12, abs=0.35)
    assert (k * across**2).sum() < 0.35


def test_motion_psf_short_and_zero_lengths() -> None:
    assert motion_psf(0.0, 17.0).tolist() == [[1.0]]
    short = motion_psf(0.5, 0.0)
    assert short.shape == (3, 3)
    assert short[1, 1] == pytest.approx(0.875)  # samples at |t| <= 0.25 keep 1 - |t| on the centre pixel
    assert short[1, 0] == pytest.approx(short[1, 2]) and short[0].sum() == 0.0
    with pytest.raises(ValueError, match="length_px"):
        motion_psf(-1.0, 0.0)


def test_blur_matches_a_direct_convolution_in_linear_light(tissue: np.ndarray) -> None:
    rng = np.random.default_rng(3)
    kernel = rng.random((7, 7)).astype(np.float32)  # asymmetric: catches a flipped kernel
    kernel /= kernel.sum()
    image = tissue[:200, :300]
    got = blur(image, kernel)
    lin = srgb_to_linear(image).astype(np.float64)
    ref = np.stack([ndimage.convolve(lin[:, :, ch], kernel, mode="mirror") for ch in range(3)], axis=-1)
    ref_srgb = physics.linear_to_srgb(ref)
    assert got.dtype == np.uint8 and got.shape == image.shape
    assert np.abs(got.astype(int) - ref_srgb.astype(int)).max() <= 1


def test_blur_keeps_mean_linear_intensity_not_mean_code_value() -> None:
    stripes = np.zeros((128, 128, 3), dtype=np.uint8)
    stripes[:, ::2] = 255
    out = blur(stripes, motion_psf(10.0, 0.0))
    inner = out[:, 16:-16]
    # Half black, half white averages to linear 0.5, which is sRGB 188, not 128.
    assert np.abs(inner.astype(int) - 188).max() <= 1
    mixed = blur(stripes, defocus_psf(SCANNER_20X, 3 * SCANNER_20X.dof_um))
    assert srgb_to_linear(mixed).mean() == pytest.approx(srgb_to_linear(stripes).mean(), abs=0.005)


def test_blur_reduces_sharpness_monotonically_with_defocus(tissue: np.ndarray) -> None:
    def sharpness(rgb: np.ndarray) -> float:
        return float(laplace(rgb2gray(rgb)).var())

    dof = SCANNER_20X.dof_um
    values = [sharpness(blur(tissue, defocus_psf(SCANNER_20X, z * dof))) for z in (0, 0.5, 1, 2, 3, 4)]
    assert sharpness(tissue) > values[0]
    assert all(a > b for a, b in zip(values, values[1:], strict=False))
    assert values[-1] < 0.1 * values[0]


def test_degrade_is_deterministic_for_a_seed(tissue: np.ndarray) -> None:
    image = tissue[:256, :256]
    args = (image, SCANNER_20X, 2.0, 10.0, 45.0)
    a = degrade(*args, jpeg_quality=90, rng=np.random.default_rng(7))
    b = degrade(*args, jpeg_quality=90, rng=np.random.default_rng(7))
    c = degrade(*args, jpeg_quality=90, rng=np.random.default_rng(8))
    assert a.dtype == np.uint8 and a.shape == image.shape
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, c)
    # Without noise, JPEG or motion it is the defocus blur alone.
    quiet = degrade(image, SCANNER_20X, 2.0, noise=False)
    np.testing.assert_array_equal(quiet, blur(image, defocus_psf(SCANNER_20X, 2.0)))
    # Noise is small (a few code values) but present; JPEG changes pixels further.
    noisy = degrade(image, SCANNER_20X, 2.0, rng=np.random.default_rng(1))
    diff = noisy.astype(float) - quiet.astype(float)
    assert 0.2 < diff.std() < 6.0
    assert not np.array_equal(degrade(image, SCANNER_20X, 2.0, noise=False, jpeg_quality=80), quiet)


def test_class_label_bands() -> None:
    cases = {
        (0.0, 0.0): "in_focus",
        (-0.5, 2.0): "in_focus",
        (1.0, 0.0): "defocus",
        (-4.0, 1.5): "defocus",
        (0.3, 5.0): "motion",
        (0.0, 40.0): "motion",
        (1.5, 5.0): "mixed",
        (-3.0, 30.0): "mixed",
        (0.75, 0.0): None,
        (0.0, 3.5): None,
        (2.0, 4.9): None,
        (0.7, 20.0): None,
    }
    for (z, m), label in cases.items():
        assert class_label(z, m) == label, (z, m)
    assert BlurSpec(2.0, 10.0, 45.0).label == "mixed"
    assert BlurSpec(2.0, 0.0).z_um(SCANNER_20X) == pytest.approx(2 * SCANNER_20X.dof_um)


@pytest.mark.parametrize("label", ["in_focus", "defocus", "motion", "mixed"])
def test_sample_spec_draws_the_requested_class(label: str) -> None:
    rng = np.random.default_rng(0)
    specs = [sample_spec(label, rng) for _ in range(200)]
    assert all(s.label == label for s in specs)
    assert all(0.0 <= s.motion_angle < 180.0 for s in specs)
    zs = np.array([s.z_dof for s in specs])
    if label in ("defocus", "mixed"):
        assert (zs > 0).any() and (zs < 0).any() and np.abs(zs).max() <= 4.0
    with pytest.raises(ValueError, match="label"):
        sample_spec("blurry", rng)


def test_random_optics_family() -> None:
    rng = np.random.default_rng(0)
    family = [random_optics(rng) for _ in range(300)]
    nas = np.array([o.na for o in family])
    mpps = np.array([o.mpp for o in family])
    assert nas.min() >= 0.25 and nas.max() <= 0.95 and nas.max() - nas.min() > 0.6
    assert mpps.min() >= 0.22 and mpps.max() <= 0.6
    assert np.all(mpps * nas <= 0.4 + 1e-9)
    assert all(
        0.0 <= o.thickness_um <= 10.0 and 0.5 <= o.sigma <= 1.0 and len(o.zernike) == 7 for o in family
    )
    # From aberration-free (well-corrected) objectives to 1.5 times the typical aberrations.
    rms = np.array([np.sqrt(np.mean(np.square(o.zernike))) for o in family])
    typical = np.sqrt(np.mean(np.square(RANDOM_ZERNIKE_SD)))
    assert (rms < 0.1 * typical).sum() >= 5 and (rms > typical).sum() >= 30
    # a quarter aberration-free, a quarter with the condenser fully open (how the named systems are modelled)
    assert 50 <= (rms == 0.0).sum() <= 100 and 50 <= sum(o.sigma == 1.0 for o in family) <= 100
    # The family holds the three reference systems' neighbourhoods.
    for ref in (PAPER_10X, SCANNER_20X, SCANNER_40X):
        assert np.any((np.abs(nas - ref.na) < 0.05) & (np.abs(mpps - ref.mpp) < 0.05))
    psf = defocus_psf(family[0], 1.5 * family[0].dof_um)
    np.testing.assert_allclose(psf.sum(axis=(0, 1)), 1.0, atol=1e-5)


def test_blurred_sample_slide_matches_its_region_map(sample_slides: Path) -> None:
    region_map = json.loads((sample_slides / "CMU-1-blurred.regions.json").read_text())
    truth_path = sample_slides / region_map["ground_truth"]["file"]
    with openslide.OpenSlide(sample_slides / region_map["slide"]) as slide:
        assert slide.properties["openslide.vendor"] == "aperio"
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(region_map["mpp"])
        assert slide.dimensions == (region_map["width"], region_map["height"])
        blurred = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))
    with openslide.OpenSlide(truth_path) as slide:
        truth = np.asarray(slide.read_region((0, 0), 0, slide.dimensions).convert("RGB"))

    def sharpness(rgb: np.ndarray) -> float:
        return float(laplace(rgb2gray(rgb)).var())

    inside = np.zeros(truth.shape[:2], dtype=bool)
    labels = []
    for region in region_map["regions"]:
        x, y, w, h = (region["box"][k] for k in ("x", "y", "w", "h"))
        inside[y : y + h, x : x + w] = True
        labels.append(region["label"])
        assert class_label(region["z_dof"], region["motion_px"]) == region["label"]
        assert sharpness(blurred[y : y + h, x : x + w]) < 0.1 * sharpness(truth[y : y + h, x : x + w])
    assert sorted(labels) == ["defocus", "mixed", "motion"]
    # Outside the regions only the JPEG re-encoding differs.
    assert np.abs(blurred.astype(int) - truth.astype(int))[~inside].mean() < 3.0
