"""Could a sharpness statistic settle in-focus tiles before the classifier runs? (It could not; see below.)

The classification pass runs the network on the crop with the most tissue of every tissue tile. A statistic
that no blurred tile reaches would let sharp tiles skip it. This script measures two on 128 px crops:

* f1: the smallest, over 0, 45, 90 and 135 degrees, of the mean squared second difference along that direction
  (diagonals scaled to the axes' step), over the grey variance: high-frequency energy in the weakest direction,
  whatever the contrast;
* f2: the same on the crop binned 2 x 2, which white camera noise reaches four times less,

on held-out blurred tiles at random optics (``data.classification_set``, test split), on the mildest blur of the
evaluation grid (1 DOF, 5 px of motion at any angle) at 10x and 20x, each also with extra camera noise and with
JPEG at quality 30, and on the tissue tiles of an in-focus slide. It prints the largest value each blurred set
reaches and how many of its crops pass ``f1 > F1 and f2 > F2``, and the share of the in-focus slide's tiles that
pass.

Usage: ``python benchmarks/sharpness_screen.py [--slide SLIDE]`` (about two minutes; the default slide is the
in-focus CMU-1 region in ``../shared/data/slides``).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur import physics  # noqa: E402
from wsi_deblur.imaging import _jpeg_roundtrip  # noqa: E402
from wsi_deblur.methods.dbmid import _crops, _tissue_pixels  # noqa: E402
from wsi_deblur.slide import open_slide  # noqa: E402
from wsi_deblur.training import data  # noqa: E402
from wsi_deblur.training.blurring import _Psf, _sample  # noqa: E402

CROP = 128
F1, F2 = 0.08, 0.3


def _weakest_direction(g: np.ndarray) -> float:
    d0 = g[:, 2:] - 2 * g[:, 1:-1] + g[:, :-2]
    d90 = g[2:, :] - 2 * g[1:-1, :] + g[:-2, :]
    d45 = (g[2:, 2:] - 2 * g[1:-1, 1:-1] + g[:-2, :-2]) / 2
    d135 = (g[2:, :-2] - 2 * g[1:-1, 1:-1] + g[:-2, 2:]) / 2
    return min(float(np.mean(d * d)) for d in (d0, d90, d45, d135)) / (float(g.var()) + 1.0)


def statistics(crop: np.ndarray) -> tuple[float, float]:
    """(f1, f2) of an RGB uint8 crop."""
    g = crop.astype(np.float32).mean(axis=2)
    binned = (g[0::2, 0::2] + g[1::2, 0::2] + g[0::2, 1::2] + g[1::2, 1::2]) / 4
    return _weakest_direction(g), _weakest_direction(binned)


def _variants(crops: list[np.ndarray], rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    noisy = [np.clip(np.rint(c + rng.normal(0.0, 4.0, c.shape)), 0, 255).astype(np.uint8) for c in crops]
    return {"as drawn": crops, "+ noise 4 grey levels": noisy, "JPEG 30": [_jpeg_roundtrip(c, 30) for c in crops]}


def blurred_sets(rng: np.random.Generator) -> dict[str, list[np.ndarray]]:
    tiles, labels, _, _ = data.classification_set(400, CROP, seed=12, split="test")
    sets = {"held-out blurred tiles, random optics": [t for t, k in zip(tiles, labels, strict=True) if k != 0]}
    held_out = data.sources("test")
    for name, optics in (("10x/0.3", physics.PAPER_10X), ("20x/0.75", physics.SCANNER_20X)):
        psf = _Psf(optics, 1.0, physics.defocus_psf(optics, optics.dof_um))
        jpeg = lambda: int(rng.integers(80, 96))  # noqa: E731
        sets[f"1 DOF at {name}"] = [_sample(rng, held_out, CROP, optics.mpp, psf, 0.0, 0.0, jpeg())[0]
                                    for _ in range(60)]
        sets[f"5 px motion at {name}"] = [
            _sample(rng, held_out, CROP, optics.mpp, None, 5.0, float(rng.uniform(0, 180)), jpeg())[0]
            for _ in range(60)
        ]
    return sets


def slide_crops(path: Path, count: int, rng: np.random.Generator) -> list[np.ndarray]:
    out = []
    with open_slide(path) as slide:
        w, h = slide.dimensions
        for _ in range(50 * count):
            x, y = int(rng.integers(0, w - 512)), int(rng.integers(0, h - 512))
            tile = slide.read(0, x, y, 512, 512)
            if _tissue_pixels(tile).mean() >= 0.6:
                out.append(_crops(tile, CROP)[0])
                if len(out) == count:
                    break
    return out


def main() -> None:
    default = Path(__file__).resolve().parents[2] / "shared" / "data" / "slides" / "CMU-1-Small-Region.svs"
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--slide", type=Path, default=default, help="an in-focus slide")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    print(f"| crops | variant | n | f1 largest | f2 largest | pass f1 > {F1} and f2 > {F2} |")
    print("|---|---|---|---|---|---|")
    for name, crops in blurred_sets(rng).items():
        for variant, cs in _variants(crops, rng).items():
            v = np.array([statistics(c) for c in cs])
            passed = int(np.sum((v[:, 0] > F1) & (v[:, 1] > F2)))
            print(f"| {name} | {variant} | {len(cs)} | {v[:, 0].max():.3f} | {v[:, 1].max():.2f} | {passed} |")
    sharp = np.array([statistics(c) for c in slide_crops(args.slide, 300, rng)])
    share = np.mean((sharp[:, 0] > F1) & (sharp[:, 1] > F2))
    print(f"| tissue tiles of {args.slide.name} (in focus) | as scanned | {len(sharp)} | | | {share:.0%} |")


if __name__ == "__main__":
    main()
