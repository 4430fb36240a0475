"""Training and evaluation data: real sources, splits by source, physical blur, balanced classes, the grid."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from wsi_deblur import physics
from wsi_deblur._types import LABELS
from wsi_deblur.slide import open_slide
from wsi_deblur.training import blurring, cache, data

#: Optics for the restoration tests: a 20x scanner and a thick, partially coherent, aberrated section (PSFs
#: of random optics take up to seconds each; the classification test covers random optics).
OPTICS = (
    physics.SCANNER_20X,
    physics.Optics(
        na=0.5, mpp=0.45, thickness_um=4.0, sigma=0.7, zernike=(0.03, -0.02, 0.02, 0.0, 0.01, 0.0, 0.08)
    ),
)
#: Mean HSV saturation of a crop: white glass measures ~0.01, the palest real tissue here (fat) ~0.08.
GLASS_SATURATION = 0.05


def _saturation(rgb: np.ndarray) -> float:
    img = rgb.astype(np.float64) / 255.0
    cmax, cmin = img.max(axis=2), img.min(axis=2)
    return float(np.mean((cmax - cmin) / np.maximum(cmax, 1e-6)))


def _high_frequency(rgb: np.ndarray) -> float:
    """Energy of the luminance's Laplacian per pixel: falls as an image is blurred."""
    g = rgb.astype(np.float64).mean(axis=2)
    lap = 4 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.mean(lap**2))


def test_splits_are_disjoint_by_source_and_hold_both_stains() -> None:
    train, test = set(data.SPLITS["train"]), set(data.SPLITS["test"])
    assert train and test and not train & test
    assert train | test == {e.name for e in data.CATALOGUE}
    loaded = {s.name: s for s in data.load_sources()}
    assert set(loaded) == train | test
    for split in ("train", "test"):
        srcs = data.sources(split)
        assert {s.name for s in srcs} == set(data.SPLITS[split])
        assert {s.stain for s in srcs} == {"H&E", "IHC"}
    # most of the pixels train
    pixels = {split: sum(s.rgb[..., 0].size for s in data.sources(split)) for split in data.SPLITS}
    assert pixels["train"] > 2 * pixels["test"]
    for s in loaded.values():
        assert s.rgb.dtype == np.uint8 and s.rgb.ndim == 3 and s.rgb.shape[2] == 3
        assert 0.45 <= s.mpp <= 0.55
    # the two IHC halves are the two halves of one image, not overlapping crops of it
    left, right = loaded["ihc-left"].rgb, loaded["ihc-right"].rgb
    assert left.shape == right.shape == (512, 256, 3)
    assert not np.array_equal(left, right)
    with pytest.raises(ValueError, match="unknown split"):
        data.sources("validation")
    with pytest.raises(ValueError, match="finer than the sources allow"):
        data.restoration_pairs("defocus", 2, 32, 0, optics=[physics.SCANNER_40X])


def test_excluded_sources_are_real_files_and_the_tcga_slide_records_no_pixel_size() -> None:
    root = data.data_dir()
    for name in data.EXCLUDED:
        assert (root / name).is_file(), name
    with open_slide(root / "slides" / "TCGA-CR-7395-01A-01-TS1.svs") as slide:
        assert slide.mpp is None
    with open_slide(root / "slides" / "CMU-1-Small-Region.svs") as slide:
        assert slide.mpp == pytest.approx(0.499)


def test_random_crops_are_tissue_at_the_asked_pixel_size() -> None:
    rng = np.random.default_rng(3)
    srcs = data.sources("train")
    mpps = []
    for _ in range(24):
        crop, src, mpp = data.random_crop(rng, srcs, 64)
        assert crop.shape == (64, 64, 3) and crop.dtype == np.uint8
        assert src in srcs
        assert src.mpp / data.MAX_UPSAMPLE - 1e-9 <= mpp <= data.SUPPORTED_MPP[1]
        assert _saturation(crop) > GLASS_SATURATION, src.name
        mpps.append(mpp)
    assert max(mpps) - min(mpps) > 0.05  # the pixel size varies when none is asked for
    crop, src, mpp = data.random_crop(rng, srcs, 96, 0.42)
    assert mpp == 0.42 and crop.shape == (96, 96, 3)
    # a 0.25 um/px crop needs 2x upsampling of ~0.5 um/px sources: refused unless allowed
    with pytest.raises(ValueError, match="max_upsample"):
        data.random_crop(rng, srcs, 64, 0.25)
    crop, _, mpp = data.random_crop(rng, srcs, 64, 0.25, max_upsample=2.1)
    assert mpp == 0.25 and crop.shape == (64, 64, 3)


def test_random_crop_at_native_pixel_size_is_a_window_of_the_source() -> None:
    real = next(s for s in data.load_sources() if s.name == "histolab-high-nuclei")
    # a source just larger than the crop: the crop can only be its centre, shifted by under two pixels
    src = data.Source("window", "H&E", real.rgb[100:152, 200:252].copy(), real.mpp)
    crop, _, mpp = data.random_crop(np.random.default_rng(0), [src], 48, src.mpp, augment=False)
    assert mpp == src.mpp
    g = crop.astype(np.float64).mean(axis=2)
    scores = []
    for dy in range(5):
        for dx in range(5):
            w = src.rgb[dy : dy + 48, dx : dx + 48].astype(np.float64).mean(axis=2)
            scores.append(np.corrcoef(g.ravel(), w.ravel())[0, 1])
    assert max(scores) > 0.95
    # and the crop at a coarser pixel size shows more tissue: it matches no window at native scale as well
    big = data.Source("big", "H&E", real.rgb[100:400, 200:500].copy(), real.mpp)
    coarse, _, _ = data.random_crop(np.random.default_rng(0), [big], 48, 0.6, augment=False)
    assert coarse.shape == (48, 48, 3)


def test_restoration_pairs_are_deterministic_and_blurrier() -> None:
    a = data.restoration_pairs("defocus", 10, 48, seed=5, n_psfs=2, optics=OPTICS)
    b = data.restoration_pairs("defocus", 10, 48, seed=5, n_psfs=2, optics=OPTICS)
    assert np.array_equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]
    c = data.restoration_pairs("defocus", 10, 48, seed=6, n_psfs=2, optics=OPTICS)
    assert not np.array_equal(a[1], c[1])
    blurred, sharp, params = a
    assert blurred.shape == sharp.shape == (10, 48, 48, 3) and blurred.dtype == sharp.dtype == np.uint8
    strong = [i for i, p in enumerate(params) if p["blurred"] and abs(p["z_dof"]) >= 1.0]
    assert strong
    for i in strong:
        assert not np.array_equal(blurred[i], sharp[i])
        assert _high_frequency(blurred[i]) < 0.6 * _high_frequency(sharp[i]), params[i]
    for p in params:
        assert p["kind"] == "defocus" and p["source"] in data.SPLITS["train"]
        if p["blurred"]:
            assert data.RESTORE_Z_DOF[0] <= abs(p["z_dof"]) <= data.RESTORE_FAR_Z_DOF[1]
            assert p["motion_px"] <= data.RESIDUAL_MOTION_PX
            assert p["optics"]["mpp"] == pytest.approx(p["mpp"])
            assert p["optics"]["na"] in (o.na for o in OPTICS)
            assert p["z_um"] == pytest.approx(p["z_dof"] * p["optics"]["dof_um"])


def test_defocus_pairs_reach_past_the_restored_range() -> None:
    """A share of the defocus pairs lies 4.5-15 DOF out (a fold off focus), log-uniform, the rest in the restored
    range: the restorer learns what to do where little comes back."""
    _, _, params = data.restoration_pairs("defocus", 60, 16, seed=3, n_psfs=4, optics=OPTICS)
    z = np.array([abs(p["z_dof"]) for p in params if p["blurred"]])
    far = z[z > data.RESTORE_Z_DOF[1]]
    assert len(far) >= 3 and len(far) <= 0.4 * len(z)
    assert far.max() <= data.RESTORE_FAR_Z_DOF[1] and z.min() >= data.RESTORE_Z_DOF[0]


def test_motion_pairs_include_unblurred_samples_and_are_blurrier() -> None:
    blurred, sharp, params = data.restoration_pairs("motion", 40, 48, seed=2, n_psfs=2, optics=OPTICS)
    plain = [i for i, p in enumerate(params) if not p["blurred"]]
    moved = [i for i, p in enumerate(params) if p["blurred"]]
    assert plain and len(plain) < len(params) / 4
    for i in plain:
        # the input is the target with camera noise and JPEG (4:2:0 chroma) only: close to it and as sharp
        assert float(np.abs(blurred[i].astype(int) - sharp[i].astype(int)).mean()) < 12
        assert _high_frequency(blurred[i]) > 0.5 * _high_frequency(sharp[i])
    long = [i for i in moved if params[i]["motion_px"] >= 10 and not params[i]["target_z_dof"]]
    assert long
    for i in long:
        assert _high_frequency(blurred[i]) < 0.6 * _high_frequency(sharp[i]), params[i]
    for i in moved:
        p = params[i]
        if p["target_z_dof"]:  # mixed blur or plain defocus: the target keeps the defocus
            assert p["target_z_dof"] == p["z_dof"]
            assert data.UNDER_DEFOCUS_Z_DOF[0] <= abs(p["z_dof"]) <= data.UNDER_DEFOCUS_Z_DOF[1]
            assert p["motion_px"] <= data.RESIDUAL_MOTION_PX or p["motion_px"] >= data.RESTORE_MOTION_PX[0]
        else:
            assert data.RESTORE_MOTION_PX[0] <= p["motion_px"] <= data.RESTORE_MOTION_PX[1]
            assert abs(p["z_dof"]) <= data.RESIDUAL_Z_DOF
        assert data.RESTORE_JPEG[0] <= p["jpeg_quality"] <= data.RESTORE_JPEG[1]
    residual = [p for p in params if p["optics"] is not None and not p["target_z_dof"]]
    under = [p for p in params if p["target_z_dof"]]
    assert residual and under  # some carry residual defocus, some strong defocus kept in the target


def test_motion_pairs_under_defocus_keep_the_defocus_in_the_target() -> None:
    """DL_motion's mixed-blur target is the crop through the defocus PSF alone: the same crop as the sharp
    target (same random draws), much softer, and equal to the physical model's noiseless defocus of it."""
    srcs = data.sources("train")
    optics = physics.SCANNER_20X
    psf = blurring._Psf(optics, 3.0, physics.defocus_psf(optics, 3.0 * optics.dof_um))
    args = (srcs, 96, optics.mpp, psf, 20.0, 30.0, 95)
    x_clean, y_clean, p_clean = blurring._sample(np.random.default_rng(4), *args)
    x_kept, y_kept, p_kept = blurring._sample(np.random.default_rng(4), *args, keep_defocus=True)
    assert np.array_equal(x_clean, x_kept)  # the same input either way
    assert p_clean["target_z_dof"] == 0.0 and p_kept["target_z_dof"] == 3.0
    assert _high_frequency(y_kept) < 0.5 * _high_frequency(y_clean)
    expected = physics.degrade(y_clean, optics, 3.0 * optics.dof_um, 0.0, 0.0, jpeg_quality=None, noise=False)
    inner = (slice(24, -24), slice(24, -24))
    assert np.abs(y_kept[inner].astype(int) - expected[inner].astype(int)).max() <= 2


def test_valid_convolution_matches_physics_degrade_inside_the_border() -> None:
    rng = np.random.default_rng(1)
    optics = physics.SCANNER_20X
    psf = physics.defocus_psf(optics, 2.0 * optics.dof_um)
    kernel = blurring._kernel(psf, 6.0, 30.0)
    assert kernel is not None
    r = kernel.shape[0] // 2
    padded, _, _ = data.random_crop(rng, data.sources("train"), 40 + 2 * r, optics.mpp)
    ours = physics.linear_to_srgb(blurring._valid_convolve(physics.srgb_to_linear(padded), kernel))
    theirs = physics.degrade(padded, optics, 2.0 * optics.dof_um, 6.0, 30.0, noise=False)[r:-r, r:-r]
    assert ours.shape == (40, 40, 3)
    assert int(np.abs(ours.astype(int) - theirs.astype(int)).max()) <= 1


def test_classification_set_is_balanced_and_labelled_by_the_class_definitions() -> None:
    n = 24
    tiles, labels, mpp, params = data.classification_set(n, 48, seed=4, n_psfs=3)
    assert tiles.shape == (n, 48, 48, 3) and tiles.dtype == np.uint8
    assert labels.shape == (n,) and mpp.shape == (n,) and mpp.dtype == np.float32
    assert np.bincount(labels, minlength=len(LABELS)).tolist() == [n // len(LABELS)] * len(LABELS)
    for label, m, p in zip(labels, mpp, params, strict=True):
        assert physics.class_label(p["z_dof"], p["motion_px"]) == LABELS[label] == p["label"]
        assert m == pytest.approx(p["mpp"], rel=1e-6)
        assert data.CLASSIFY_JPEG[0] <= p["jpeg_quality"] <= data.CLASSIFY_JPEG[1]
    focus = [p for p in params if p["label"] == "in_focus"]
    assert all(abs(p["z_dof"]) <= 0.5 and p["motion_px"] <= 2.0 for p in focus)
    assert any(p["motion_px"] > 0.5 for p in focus)  # in focus includes a little motion
    far = [p for p in params if p["label"] in ("defocus", "mixed")]
    assert all(1.0 <= abs(p["z_dof"]) <= 6.0 for p in far)
    moving = [p for p in params if p["label"] in ("motion", "mixed")]
    assert all(5.0 <= p["motion_px"] <= 40.0 for p in moving)
    assert any(p["z_dof"] < 0 for p in far) and any(p["z_dof"] > 0 for p in far)


def test_classification_set_moves_half_its_tiles_along_a_stage_axis() -> None:
    _, _, _, params = data.classification_set(160, 16, seed=1, n_psfs=4)
    moving = np.array([p["motion_angle"] for p in params if p["label"] in ("motion", "mixed")])
    assert len(moving) == 80
    # distance in degrees to the nearest axis (0, 90, 180, ...)
    off_axis = np.abs((moving + 45.0) % 90.0 - 45.0)
    near = off_axis <= data.AXIS_MOTION_JITTER_DEG
    # half along an axis, plus the random half's own share near one (10 of 90 degrees)
    expected = data.AXIS_MOTION_FRACTION + (1 - data.AXIS_MOTION_FRACTION) * 2 * data.AXIS_MOTION_JITTER_DEG / 90
    assert abs(near.mean() - expected) < 0.15
    assert off_axis.max() > 20.0  # the other half moves at any angle
    assert np.all((moving >= 0.0) & (moving < 180.0))


def test_classification_set_defocus_reaches_past_the_evaluation_grid() -> None:
    # 40 PSFs, 20 of them defocused, log-uniform over 1-6 DOF: one in four lies beyond the grid's 4 DOF
    assert data.CLASSIFY_Z_DOF == (1.0, 6.0)
    _, _, _, params = data.classification_set(80, 16, seed=1, n_psfs=40)
    far = np.array([abs(p["z_dof"]) for p in params if p["label"] in ("defocus", "mixed")])
    assert far.min() >= 1.0 and far.max() <= 6.0
    assert far.max() > 4.0


def test_log_uniform_draws_weigh_each_octave_alike() -> None:
    rng = np.random.default_rng(0)
    draws = np.array([blurring._log_uniform(rng, (5.0, 40.0)) for _ in range(3000)])
    assert draws.min() >= 5.0 and draws.max() <= 40.0
    # three octaves, a third each (uniform draws would put 1/7 in the first)
    counts = np.histogram(draws, bins=[5.0, 10.0, 20.0, 40.0])[0] / len(draws)
    np.testing.assert_allclose(counts, 1 / 3, atol=0.03)
    with pytest.raises(ValueError, match="positive"):
        blurring._log_uniform(rng, (0.0, 4.0))


def test_evaluation_grid_covers_the_design_grid() -> None:
    grid = list(data.evaluation_grid())
    assert {g["optics_name"] for g in grid} == {"PAPER_10X", "SCANNER_20X", "SCANNER_40X"}
    for name, optics in data.EVAL_OPTICS:
        points = [g for g in grid if g["optics_name"] == name]
        assert all(g["optics"] == optics and g["split"] == "test" for g in points)
        seen = {
            (g["spec"].z_dof, g["spec"].motion_px, g["spec"].motion_angle, g["jpeg_quality"]) for g in points
        }
        for q in physics.EVAL_JPEG:
            for z in physics.EVAL_Z_DOF:
                assert (z, 0.0, 0.0, q) in seen and (-z, 0.0, 0.0, q) in seen
            for m in physics.EVAL_MOTION_PX:
                for a in physics.EVAL_ANGLES:
                    assert (0.0, m, a, q) in seen
        for g in points:
            assert g["label"] == g["spec"].label and g["label"] is not None
            assert g["z_um"] == pytest.approx(g["spec"].z_dof * optics.dof_um)
            assert set(g["sources"]) == set(data.SPLITS["test"])
    assert {g["label"] for g in grid} == set(LABELS)
    upsample = {g["optics_name"]: g["max_upsample"] for g in grid}
    assert upsample["SCANNER_20X"] == data.MAX_UPSAMPLE
    assert upsample["SCANNER_40X"] == pytest.approx(0.499 / 0.25)


def test_cached_pairs_are_built_once_and_loaded(tmp_path: Path) -> None:
    path = cache.cache_path("motion", 3, 32, 9, "test", tmp_path)
    assert path.parent == tmp_path and not path.exists()
    first = cache.cached_pairs("motion", 3, 32, 9, "test", directory=tmp_path)
    assert path.is_file()
    stamp = path.stat().st_mtime_ns
    second = cache.cached_pairs("motion", 3, 32, 9, "test", directory=tmp_path)
    assert path.stat().st_mtime_ns == stamp
    assert np.array_equal(first[0], second[0]) and np.array_equal(first[1], second[1])
    assert first[2] == second[2]
    assert all(p["source"] in data.SPLITS["test"] for p in second[2])
    assert cache.cache_path("motion", 3, 32, 10, "test", tmp_path) != path
