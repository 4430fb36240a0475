"""Blur classification and restoration of held-out tissue saved at JPEG qualities below the training range.

The networks were trained on tiles saved at JPEG quality 80-95. Scanners often save at 70 (Aperio's default)
or lower, and JPEG removes the fine detail that separates in-focus tissue from slightly blurred tissue, so a
real scan may sit outside the training range. This script takes the images of ``wsi-deblur evaluate`` (the
same held-out crops and blurs: the defocus set at its three optics, the motion and mixed sets at 20x), saves each
blurred image at every quality given instead of the evaluation's 80 or 95, and runs the end-to-end policy
(``restore_image``: classify, route, restore) and the oracle route (restore by the true class) with each
method. Per quality and blur set it prints how often the true class is called, the share of in-focus images
returned bit-identical, mean SSIM (blurred, oracle route, policy) against the sharp crop, how many images
the policy returns with a lower SSIM than it was given, and the largest such loss.

Usage: ``python benchmarks/jpeg_robustness.py [--qualities 95,80,70,50] [--crops-per-source N]
[--method dbmid --method classical]`` (one crop per source: 219 images per quality, about 10 minutes for
the four qualities and both methods on 2 cores).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _heldout  # noqa: E402

from wsi_deblur._types import LABELS, STEPS  # noqa: E402
from wsi_deblur.api import restore_image  # noqa: E402
from wsi_deblur.evaluation import sets  # noqa: E402
from wsi_deblur.evaluation.sets import DEFAULT_SIZE, SPLIT  # noqa: E402
from wsi_deblur.methods import get_method  # noqa: E402


def _qualities(text: str) -> list[int]:
    try:
        values = [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--qualities takes integers separated by commas, got {text!r}") from None
    if not values or any(not 1 <= v <= 100 for v in values):
        raise argparse.ArgumentTypeError(f"--qualities takes JPEG qualities in 1-100, got {text!r}")
    return values


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--qualities", type=_qualities, default=[95, 80, 70, 50],
                        help="JPEG qualities, comma-separated [95,80,70,50]")
    parser.add_argument("--method", action="append", choices=("dbmid", "classical"),
                        help="method(s) to run [dbmid and classical]")
    _heldout.add_options(parser, crops_per_source=1)
    args = parser.parse_args()
    names = args.method or ["dbmid", "classical"]
    methods = {name: get_method(name) for name in names}
    plan, srcs = _heldout.plan_and_sources(parser, args)
    draws = {name: sets.DRAWS[name](plan, args.seed, srcs, []) for name in sets.DRAWS}
    print(f"held-out split {SPLIT!r}: {sum(len(d) for d in draws.values())} images, "
          f"{args.crops_per_source} crop(s) per source, {DEFAULT_SIZE} px compared")
    print("| JPEG | set | method | images | called true class | in focus untouched | blurred | oracle | policy "
          "| policy worse than input | largest loss |")
    print("|---|---|---|---|---|---|---|---|---|---|---|")
    for quality in args.qualities:
        for set_name, set_draws in draws.items():
            for name, method in methods.items():
                called, untouched, in_focus, worse, loss = 0, 0, 0, 0, 0.0
                blurred_ssim, oracle_ssim, policy_ssim = [], [], []
                for draw in set_draws:
                    draw = dataclasses.replace(draw, jpeg=quality)
                    image, mpp = draw.blurred(), draw.crop.optics.mpp
                    target = sets._centre(draw.crop.rgb, DEFAULT_SIZE)
                    before = _heldout.ssim(image, target)
                    steps = STEPS[draw.label]
                    oracle = method.restore(image, steps, mpp) if steps else image
                    out = restore_image(image, mpp, method=name)
                    after = _heldout.ssim(out, target)
                    probabilities = method.classify(image[None], mpp)[0]
                    called += LABELS[int(np.argmax(probabilities))] == draw.label
                    if draw.label == "in_focus":
                        in_focus += 1
                        untouched += bool(np.array_equal(out, image))
                    worse += after < before
                    loss = max(loss, before - after)
                    blurred_ssim.append(before)
                    oracle_ssim.append(_heldout.ssim(oracle, target))
                    policy_ssim.append(after)
                n = len(set_draws)
                kept = f"{untouched} of {in_focus}" if in_focus else "-"
                print(f"| {quality} | {set_name} | {name} | {n} | {called / n:.1%} | {kept} | "
                      f"{np.mean(blurred_ssim):.3f} | {np.mean(oracle_ssim):.3f} | {np.mean(policy_ssim):.3f} | "
                      f"{worse} | {loss:.3f} |", flush=True)


if __name__ == "__main__":
    main()
