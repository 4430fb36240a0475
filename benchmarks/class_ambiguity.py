"""How visible a short motion is on top of strong defocus: the bound it puts on blur-type accuracy.

DESIGN.md's classes call defocus of 1 DOF or more with motion of 5 px or more "mixed", and the evaluation grid
(``wsi-deblur evaluate``) holds mixed blur of 1-4 DOF with 5-40 px of motion at 20x/0.75. Under 3-4 DOF of
defocus the tissue keeps little detail for a 5 px motion to smear. This script renders held-out crops through
the physical model without noise, once with the defocus alone and once with a motion of each length added at
the four evaluation angles, and compares the RMS change the motion makes (grey levels, borders left out) with
the RMS of the camera noise the model adds to the same image. A change below the noise is one a classifier
that sees only the blurred image (not the sharp one) cannot detect, and the accuracy over the grid is bounded
accordingly (printed at the end).

Usage: ``python benchmarks/class_ambiguity.py [--crops N] [--lengths 5,10]`` (about a minute).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur import physics  # noqa: E402
from wsi_deblur.imaging import degrade  # noqa: E402
from wsi_deblur.training import sources  # noqa: E402

SIZE = 256
BORDER = 40


def measure(crops: int, lengths: list[float]) -> list[dict[str, float]]:
    held_out = sources.sources("test")
    rng = np.random.default_rng(0)
    rows = []
    for name, optics in (("20x/0.75, 0.5 um/px", physics.SCANNER_20X), ("10x/0.3, 0.55 um/px", physics.PAPER_10X),
                         ("40x, 0.25 um/px", physics.SCANNER_40X)):
        # the sources are about 0.5 um/px: 40x crops are upsampled, as the evaluation's are
        upsample = max(sources.MAX_UPSAMPLE, 2.2 * 0.25 / optics.mpp)
        sharp = [sources.random_crop(rng, held_out, SIZE, optics.mpp, max_upsample=upsample, augment=False)[0]
                 for _ in range(crops)]
        inner = (slice(BORDER, -BORDER), slice(BORDER, -BORDER))
        for z in physics.EVAL_Z_DOF:
            base = [degrade(c, optics, z * optics.dof_um, noise=False).astype(np.float64) for c in sharp]
            noise = np.mean([
                np.sqrt(np.mean((degrade(c, optics, z * optics.dof_um, rng=np.random.default_rng(i)) - b)[inner] ** 2))
                for i, (c, b) in enumerate(zip(sharp, base, strict=True))
            ])
            for length in lengths:
                moved = [(degrade(c, optics, z * optics.dof_um, length, angle, noise=False), b)
                         for c, b in zip(sharp, base, strict=True) for angle in physics.EVAL_ANGLES]
                change = np.mean([np.sqrt(np.mean((m - b)[inner] ** 2)) for m, b in moved])
                rows.append({"optics": name, "z_dof": z, "motion_px": length, "change": float(change),
                             "noise": float(noise)})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--crops", type=int, default=6, help="held-out crops per optics")
    parser.add_argument("--lengths", default="5,10", help="motion lengths in px, comma-separated")
    args = parser.parse_args()
    rows = measure(args.crops, [float(v) for v in args.lengths.split(",")])
    print("| optics | defocus (DOF) | motion (px) | change the motion makes (grey levels RMS) | camera noise (RMS) |")
    print("|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['optics']} | {r['z_dof']:g} | {r['motion_px']:g} | {r['change']:.2f} | {r['noise']:.2f} |")
    # the evaluation's mixed cells are at 20x, 12 crops each; its defocus cells 12 crops per z and sign
    hidden = [r for r in rows if r["optics"].startswith("20x") and r["change"] < r["noise"]]
    lost = 12 * len({(r["z_dof"], r["motion_px"]) for r in hidden})
    total = 876
    cells = ", ".join(f"{r['z_dof']:g} DOF + {r['motion_px']:g} px" for r in hidden) or "none"
    print(f"\nmixed cells of the evaluation grid (20x) whose motion changes the image by less than the camera "
          f"noise: {cells}")
    print(f"a classifier that sees only the blurred crop cannot tell them from defocus; counting their {lost} "
          f"crops as lost, accuracy over the {total} crops of `wsi-deblur evaluate --crops-per-source 4` is "
          f"bounded near {100.0 * (total - lost) / total:.1f}%")


if __name__ == "__main__":
    main()
