"""Fit the classical method's softmax model and measure it on held-out source images.

Reproduces the constants in ``wsi_deblur/methods/classical_features.py`` (``_FEATURE_MEAN``, ``_FEATURE_SCALE``,
``_WEIGHTS``, ``_BIAS``) and prints the accuracy figures quoted there.

Data: in-focus tissue from ``../shared/data/tiles``, ``skimage.data.immunohistochemistry()`` and a region of
each of the two H&E slides in ``../shared/data/slides`` (10 source images). Each draw takes a source, shrinks
it by a random factor in [1, 2] (so that its own softness varies), picks a class uniformly, draws the blur
with ``physics.sample_spec`` and the optics either with ``physics.random_optics`` or as one of the three
named systems, degrades a 512 px crop with ``physics.degrade`` (camera noise, JPEG at quality 80-95 or
none) and cuts 256 px tiles from it. Accuracy is measured leaving one source image out at a time
(split by source, never by crop); the final model is fitted on all of them.

Usage: ``python benchmarks/calibrate_classical.py [--draws N] [--seed S]`` (about 4 minutes on one core;
``--sweep`` adds 1-2 minutes).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import openslide
from PIL import Image
from scipy.optimize import minimize
from skimage.data import immunohistochemistry
from skimage.metrics import structural_similarity

from wsi_deblur import physics
from wsi_deblur._types import LABELS, STEPS
from wsi_deblur.methods import classical, classical_deconv

DATA = Path(__file__).resolve().parents[2] / "shared" / "data"
#: Regions (x, y, side) of level 0 with tissue throughout, one per slide.
SLIDE_REGIONS = {
    "CMU-1-Small-Region.svs": (741, 1877, 1024),
    "TCGA-CR-7395-01A-01-TS1.svs": (1110, 1850, 1024),
}
NAMED_OPTICS = (physics.PAPER_10X, physics.SCANNER_20X, physics.SCANNER_40X)
CROP = 512
TILE = 256
TILES_PER_DRAW = 3
#: L2 penalty on the weights (standardised features): keeps the model smooth with a few hundred samples.
L2 = 1e-2


def load_sources() -> dict[str, np.ndarray]:
    """Source name -> in-focus RGB uint8 image."""
    sources: dict[str, np.ndarray] = {}
    for path in sorted((DATA / "tiles").iterdir()):
        with Image.open(path) as im:
            sources[path.name] = np.asarray(im.convert("RGB"))
    sources["skimage-ihc"] = immunohistochemistry()
    for name, (x, y, side) in SLIDE_REGIONS.items():
        slide = openslide.OpenSlide(str(DATA / "slides" / name))
        try:
            sources[name] = np.asarray(slide.read_region((x, y), 0, (side, side)).convert("RGB"))
        finally:
            slide.close()
    return sources


def draw(
    source: np.ndarray, rng: np.random.Generator
) -> tuple[str, float, list[np.ndarray], np.ndarray, physics.Optics, physics.BlurSpec]:
    """One degraded crop: (label, mpp, tiles, sharp crop, optics, spec)."""
    scale = float(rng.uniform(1.0, 2.0))
    h, w = source.shape[:2]
    if min(h, w) / scale < TILE:
        scale = min(h, w) / TILE
    small = np.asarray(Image.fromarray(source).resize((round(w / scale), round(h / scale)), Image.LANCZOS))
    sh, sw = small.shape[:2]
    y = int(rng.integers(0, max(1, sh - CROP + 1)))
    x = int(rng.integers(0, max(1, sw - CROP + 1)))
    crop = np.ascontiguousarray(small[y : y + CROP, x : x + CROP])
    label = LABELS[int(rng.integers(len(LABELS)))]
    optics = physics.random_optics(rng) if rng.random() < 0.5 else NAMED_OPTICS[int(rng.integers(3))]
    spec = physics.sample_spec(label, rng)
    quality = None if rng.random() < 0.25 else int(rng.integers(80, 96))
    out = physics.degrade(
        crop, optics, spec.z_um(optics), spec.motion_px, spec.motion_angle, jpeg_quality=quality, rng=rng
    )
    ch, cw = out.shape[:2]
    tiles = []
    for _ in range(TILES_PER_DRAW):
        ty = int(rng.integers(0, ch - TILE + 1))
        tx = int(rng.integers(0, cw - TILE + 1))
        tiles.append(out[ty : ty + TILE, tx : tx + TILE])
    return label, optics.mpp, tiles, crop, optics, spec


def fit_softmax(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Multinomial logistic regression with L2; returns (mean, scale, weights (4, F), bias (4,))."""
    mean = x.mean(axis=0)
    scale = x.std(axis=0) + 1e-9
    z = (x - mean) / scale
    n, f = z.shape
    k = len(LABELS)
    onehot = np.eye(k)[y]

    def loss(theta: np.ndarray) -> tuple[float, np.ndarray]:
        w = theta[: k * f].reshape(k, f)
        b = theta[k * f :]
        logits = z @ w.T + b
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        value = -np.mean(np.log(p[np.arange(n), y] + 1e-12)) + L2 * np.sum(w**2)
        g = (p - onehot) / n
        grad = np.concatenate([(g.T @ z + 2 * L2 * w).ravel(), g.sum(axis=0)])
        return float(value), grad

    res = minimize(loss, np.zeros(k * f + k), jac=True, method="L-BFGS-B")
    return mean, scale, res.x[: k * f].reshape(k, f), res.x[k * f :]


def predict(model: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray], x: np.ndarray) -> np.ndarray:
    mean, scale, w, b = model
    return np.argmax(((x - mean) / scale) @ w.T + b, axis=1)


def sweep_wiener(cases: list, rng: np.random.Generator) -> None:
    """Mean SSIM gain of restoration for a few (regularisation, NSR floor) settings of the Wiener filter."""
    blurred = [
        (physics.degrade(c, o, s.z_um(o), s.motion_px, s.motion_angle, jpeg_quality=90, rng=rng), c, o, lab)
        for _n, lab, c, o, s, _t in cases
    ]
    method = classical.ClassicalMethod()
    saved = (classical_deconv._WIENER_REG, classical_deconv._NSR_FLOOR)
    try:
        for reg, floor in [(0.5, 3e-3), (1.0, 1e-3), (1.0, 1e-2), (2.0, 1e-2), (2.0, 4e-2), (4.0, 1e-2)]:
            classical_deconv._WIENER_REG, classical_deconv._NSR_FLOOR = reg, floor
            gain = []
            for b, crop, optics, lab in blurred:
                sharp = physics.degrade(crop, optics, 0.0, noise=False)
                before = structural_similarity(sharp, b, channel_axis=2)
                gain.append(
                    structural_similarity(sharp, method.restore(b, STEPS[lab], optics.mpp), channel_axis=2)
                    - before
                )
            print(f"  Wiener reg {reg:3.1f} floor {floor:.0e}: mean SSIM gain {np.mean(gain):+.3f}")
    finally:
        classical_deconv._WIENER_REG, classical_deconv._NSR_FLOOR = saved


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--draws", type=int, default=20, help="degraded crops per source image")
    parser.add_argument("--seed", type=int, default=20240611)
    parser.add_argument(
        "--sweep",
        action="store_true",
        help="also compare Wiener settings (_WIENER_REG, _NSR_FLOOR); +1-2 min",
    )
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    sources = load_sources()
    names = list(sources)
    t0 = time.time()
    feats, labels, groups = [], [], []
    restore_cases = []
    for g, name in enumerate(names):
        for _ in range(args.draws):
            label, mpp, tiles, crop, optics, spec = draw(sources[name], rng)
            for tile in tiles:
                feats.append(classical.spectral_features(tile, mpp))
                labels.append(LABELS.index(label))
                groups.append(g)
            if label != "in_focus" and len(restore_cases) < 4 * len(names) and rng.random() < 0.35:
                restore_cases.append((name, label, crop, optics, spec, tiles[0]))
    x, y, grp = np.array(feats), np.array(labels), np.array(groups)
    print(f"{len(y)} tiles from {len(names)} source images in {time.time() - t0:.0f} s")

    confusion = np.zeros((4, 4), dtype=int)
    for g, name in enumerate(names):
        held = grp == g
        model = fit_softmax(x[~held], y[~held])
        pred = predict(model, x[held])
        np.add.at(confusion, (y[held], pred), 1)
        print(f"  held out {name:45s} accuracy {np.mean(pred == y[held]):.2f} ({held.sum()} tiles)")
    print("leave-one-source-out confusion (rows: true, columns: predicted):", LABELS)
    print(confusion)
    print(
        f"accuracy {np.trace(confusion) / confusion.sum():.3f}; "
        f"blurred vs in focus {1 - (confusion[0, 1:].sum() + confusion[1:, 0].sum()) / confusion.sum():.3f}"
    )

    mean, scale, w, b = fit_softmax(x, y)
    fmt = lambda a: np.array2string(np.asarray(a), precision=4, separator=", ", max_line_width=100)  # noqa: E731
    print("\n_FEATURE_MEAN = np.array(" + fmt(mean) + ")")
    print("_FEATURE_SCALE = np.array(" + fmt(scale) + ")")
    print("_WEIGHTS = np.array(" + fmt(w) + ")")
    print("_BIAS = np.array(" + fmt(b) + ")")

    method = classical.ClassicalMethod()
    gains: dict[str, list[float]] = {}
    for _name, label, crop, optics, spec, _tile in restore_cases:
        blurred = physics.degrade(
            crop, optics, spec.z_um(optics), spec.motion_px, spec.motion_angle, jpeg_quality=90, rng=rng
        )
        sharp = physics.degrade(crop, optics, 0.0, noise=False)
        restored = method.restore(blurred, STEPS[label], optics.mpp)
        before = structural_similarity(sharp, blurred, channel_axis=2)
        after = structural_similarity(sharp, restored, channel_axis=2)
        gains.setdefault(label, []).append(after - before)
        gains.setdefault(label + "_before", []).append(before)
    for label in ("defocus", "motion", "mixed"):
        if label in gains:
            print(
                f"restore {label:8s} SSIM {np.mean(gains[label + '_before']):.3f} -> "
                f"{np.mean(gains[label + '_before']) + np.mean(gains[label]):.3f} "
                f"(mean gain {np.mean(gains[label]):+.3f}, worse in {np.sum(np.array(gains[label]) < 0)} "
                f"of {len(gains[label])})"
            )
    if args.sweep:
        sweep_wiener(restore_cases[:16], rng)
    print(f"total {time.time() - t0:.0f} s")


if __name__ == "__main__":
    main()
