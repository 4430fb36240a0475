"""Defocus beyond the range the networks were trained on, through ``restore_image``.

DL_defocus was trained mostly on defocus of 0.5-4.5 DOF (``training.data.RESTORE_Z_DOF``; 15% of its pairs out to 15
DOF) and the classifier on 1-6 DOF (``CLASSIFY_Z_DOF``). A scanner that misses a fold by 10-20 um is 6-15 DOF out at
40x. This script takes the crops of ``wsi-deblur evaluate``'s defocus set at 10x, 20x and 40x (held-out sources,
with context for the widest blur), blurs them by the physical model at each distance with camera noise and JPEG 85,
runs the end-to-end policy and prints, per optics and distance, the classes called, the mean SSIM against the sharp
crop before and after, and how many came back worse than they went in.

Usage: ``python benchmarks/far_defocus.py [--crops-per-source N] [--method dbmid|classical] [--routes]``
(4 crops per source: 216 images, about 2 minutes on 2 cores).

``--routes`` (DBMID): instead of the policy, each route DBMID can take on these images, with and without the
Wiener step before its first network: the defocus route (DL_defocus) and the mixed route (DL_motion, then
DL_defocus), where the classifier sends most defocus past 6 DOF. It shows which part of a route costs.
"""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _heldout  # noqa: E402

from wsi_deblur import physics  # noqa: E402
from wsi_deblur.api import classify_image, restore_image  # noqa: E402
from wsi_deblur.evaluation import sets  # noqa: E402
from wsi_deblur.evaluation.sets import DEFAULT_SIZE, SPLIT  # noqa: E402
from wsi_deblur.training import data  # noqa: E402

Z_DOF = (1.0, 3.0, 6.0, 8.0, 10.0, 15.0)
OPTICS = ("PAPER_10X", "SCANNER_20X", "SCANNER_40X")
JPEG = 85
#: Noise stream of this script's draws (the evaluation's sets use 1-3).
STREAM = 7


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--method", choices=("dbmid", "classical"), default="dbmid", help="[dbmid]")
    parser.add_argument("--routes", action="store_true",
                        help="DBMID's defocus and mixed routes with and without the Wiener step, not the policy")
    _heldout.add_options(parser, crops_per_source=4)
    args = parser.parse_args()
    plan, srcs = _heldout.plan_and_sources(parser, args)
    if args.routes:
        if args.method != "dbmid":
            parser.error("--routes compares DBMID's routes; leave --method at dbmid")
        routes(plan, srcs, args.seed)
        return
    print(f"method {args.method}; held-out split {SPLIT!r}, {DEFAULT_SIZE} px compared, JPEG {JPEG}")
    print("| optics | z (DOF) | z (um) | images | called | blurred | `restore_image` | worse than input |")
    print("|---|---|---|---|---|---|---|---|")
    for optics_name in OPTICS:
        for optics, z, images in _blurred_crops(plan, srcs, args.seed, optics_name):
            called: Counter[str] = Counter()
            before, after, worse = [], [], 0
            for blurred, _, target in images:
                called[classify_image(blurred, mpp=optics.mpp, method=args.method).label] += 1
                b = _heldout.ssim(blurred, target)
                a = _heldout.ssim(restore_image(blurred, mpp=optics.mpp, method=args.method), target)
                before.append(b)
                after.append(a)
                worse += a < b
            labels = ", ".join(f"{label} {count}" for label, count in called.most_common())
            print(f"| {optics_name} | {z:g} | {z * optics.dof_um:.1f} | {len(images)} | {labels} | "
                  f"{np.mean(before):.3f} | {np.mean(after):.3f} | {worse} |", flush=True)


def _blurred_crops(
    plan: sets._Plan, srcs: list[data.Source], seed: int, optics_name: str
) -> Iterator[tuple[physics.Optics, float, list[tuple[np.ndarray, int, np.ndarray]]]]:
    """The images of one optics, per distance in :data:`Z_DOF`: (optics, z, [(blurred image, its context in px,
    sharp centre)]), the same draws for the policy table and ``--routes``."""
    optics = dict(data.EVAL_OPTICS)[optics_name]
    margin = sets._kernel_radius(optics, max(Z_DOF), 0.0)
    crops = sets._crops("defocus", plan, seed, srcs, optics_name, margin, [])
    for z in Z_DOF:
        draws = [sets._Draw(crop, (z, 0.0, 0.0), JPEG, (seed, STREAM, i, int(z * 10)), None)
                 for i, crop in enumerate(crops)]
        yield optics, z, [(d.blurred(), d.crop.margin, sets._centre(d.crop.rgb, DEFAULT_SIZE)) for d in draws]


def routes(plan: sets._Plan, srcs: list[data.Source], seed: int) -> None:
    """Print the ``--routes`` table: each image down the defocus and mixed routes, with the Wiener step before
    the first network (its PSF fitted inside the image's context) and without it (the networks alone)."""
    from wsi_deblur.methods.dbmid import DBMIDMethod

    method = DBMIDMethod()
    print(f"DBMID routes; held-out split {SPLIT!r}, {DEFAULT_SIZE} px compared, JPEG {JPEG}; mean SSIM")
    print("| optics | z (DOF) | images | blurred | defocus route | without its Wiener step | mixed route | "
          "without its Wiener step |")
    print("|---|---|---|---|---|---|---|---|")
    for optics_name in OPTICS:
        for optics, z, images in _blurred_crops(plan, srcs, seed, optics_name):
            mpp = optics.mpp
            scores: dict[str, list[float]] = {k: [] for k in ("blurred", "D", "D0", "MD", "MD0")}
            for blurred, margin, target in images:
                scores["blurred"].append(_heldout.ssim(blurred, target))
                scores["D"].append(_heldout.ssim(method.restore(blurred, ("defocus",), mpp, margin), target))
                scores["MD"].append(_heldout.ssim(method.restore(blurred, ("motion", "defocus"), mpp, margin),
                                                  target))
                # the networks alone, over the whole region
                defocused = method._run(method.restorer("defocus"), blurred, mpp)
                scores["D0"].append(_heldout.ssim(defocused, target))
                moved = method._run(method.restorer("motion"), blurred, mpp)
                scores["MD0"].append(_heldout.ssim(method._run(method.restorer("defocus"), moved, mpp), target))
            print(f"| {optics_name} | {z:g} | {len(images)} | "
                  + " | ".join(f"{np.mean(v):.3f}" for v in scores.values()) + " |", flush=True)


if __name__ == "__main__":
    main()
