"""What a false alarm costs: held-out in-focus tissue forced through every restoration route.

The classifier leaves in-focus tissue alone (the evaluation's in-focus crops come back bit-identical), so the
routes never see sharp tissue there. On a scan the classifier misjudges they would. This script takes the
crops of ``wsi-deblur evaluate``'s defocus set at 10x, 20x and 40x (held-out sources), adds only camera noise
and JPEG 85 (no blur), and restores each through every route of each method as a slide region would be (up to
64 px of real context, as much as the source holds, discarded afterwards). For DBMID it also runs each network
without its Wiener prestep and the prestep alone, to show which part of a route costs. It prints, per optics
and route, the mean and lowest SSIM against the sharp crop (the input's own SSIM first: noise and JPEG).

Usage: ``python benchmarks/false_alarm_cost.py [--crops-per-source N]`` (4 crops per source: 12 images per
optics, under a minute on 2 cores).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import _heldout  # noqa: E402

from wsi_deblur.evaluation import sets  # noqa: E402
from wsi_deblur.evaluation.sets import DEFAULT_SIZE, SPLIT  # noqa: E402
from wsi_deblur.methods import get_method  # noqa: E402
from wsi_deblur.methods.dbmid import DBMIDMethod, prestep  # noqa: E402
from wsi_deblur.training import data  # noqa: E402

JPEG = 85
CONTEXT = 64
#: Noise stream of this script's draws (the evaluation's sets use 1-3, far_defocus.py 7).
STREAM = 11
ROUTES: tuple[tuple[str, tuple[str, ...]], ...] = (
    ("defocus", ("defocus",)), ("motion", ("motion",)), ("mixed", ("motion", "defocus")),
)


def _variants(mpp: float, margin: int) -> list[tuple[str, Callable[[np.ndarray], np.ndarray]]]:
    """Every route and part of one, for an image with ``margin`` px of context on each side."""
    dbmid = get_method("dbmid")
    classical = get_method("classical")
    assert isinstance(dbmid, DBMIDMethod)
    out: list[tuple[str, Callable[[np.ndarray], np.ndarray]]] = [("input", lambda x: x)]
    for name, steps in ROUTES:
        out.append((f"DBMID {name}", lambda x, s=steps: dbmid.restore(x, s, mpp, margin=margin)))
    for step in ("defocus", "motion"):
        out.append((f"DL_{step} alone", lambda x, s=step: dbmid._run(dbmid.restorer(s), x, mpp)))
        out.append((f"Wiener {step} alone", lambda x, s=step: prestep(x, s, mpp, margin)))
    for name, steps in ROUTES:
        out.append((f"classical {name}", lambda x, s=steps: classical.restore(x, s, mpp, margin=margin)))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    _heldout.add_options(parser, crops_per_source=4)
    args = parser.parse_args()
    plan, srcs = _heldout.plan_and_sources(parser, args)
    print(f"held-out split {SPLIT!r}, {DEFAULT_SIZE} px compared, no blur, camera noise and JPEG {JPEG}")
    print("| optics | images | route | SSIM mean | SSIM lowest |")
    print("|---|---|---|---|---|")
    for optics_name, optics in data.EVAL_OPTICS:
        crops = sets._crops("defocus", plan, args.seed, srcs, optics_name, CONTEXT, [])
        scores: dict[str, list[float]] = {}
        for i, crop in enumerate(crops):
            draw = sets._Draw(crop, (0.0, 0.0, 0.0), JPEG, (args.seed, STREAM, i), None)
            image, target = draw.blurred(), sets._centre(crop.rgb, DEFAULT_SIZE)
            # the context the source held (less than CONTEXT near its edges): the PSF is estimated inside it
            for name, run in _variants(optics.mpp, crop.margin):
                scores.setdefault(name, []).append(_heldout.ssim(run(image), target))
        for name, values in scores.items():
            print(f"| {optics_name} | {len(values)} | {name} | {np.mean(values):.3f} | {np.min(values):.3f} |",
                  flush=True)


if __name__ == "__main__":
    main()
