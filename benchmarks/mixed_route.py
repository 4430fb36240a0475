"""Which restoration route suits which blur: the figures behind the routing rules of ``blurmap.decide``.

DBMID restores mixed blur with DL_motion, then DL_defocus. Under strong defocus the classifier cannot tell pure
defocus from defocus with a short motion (``benchmarks/class_ambiguity.py``) and calls much of it mixed; there
DL_motion fits a motion PSF to what is mostly a disc. Defocus of about 1 DOF under a long motion, on the other
hand, is often called motion. This script blurs crops of a split's sources through the physical model (pure
defocus of 1.5-4 DOF; pure motion of 5-40 px; defocus of 1-4 DOF under 5-40 px of motion; random angle and sign,
camera noise, JPEG 80 or 95) at the evaluation's three optics, restores each along every route (DL_defocus
alone, DL_motion alone, DL_motion then DL_defocus), and reports, per group of conditions, the mean SSIM of each
route, of the best route per crop, of the policy by the label alone and of the policy of ``blurmap.decide``, with
the classifier's mean probabilities.

Usage: ``python benchmarks/mixed_route.py [--split train|test] [--crops-per-source N] [--optics named|random]
[--json OUT]`` (``--split train --crops-per-source 1``: 21 crops blurred 28 ways, about 13 minutes on 2 cores;
``--split test --crops-per-source 2``: 18 crops, the held-out check; ``--optics random``: each crop under its
own optics drawn from the training family instead of the evaluation's 10x, 20x and 40x).
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur import physics  # noqa: E402
from wsi_deblur._types import LABELS, STEPS  # noqa: E402
from wsi_deblur.blurmap import ACTION_STEPS, decide  # noqa: E402
from wsi_deblur.evaluation import sets  # noqa: E402
from wsi_deblur.methods.dbmid import DBMIDMethod  # noqa: E402
from wsi_deblur.training import data  # noqa: E402

SIZE = 192
#: (defocus in DOF, motion in px) blurred per crop.
CONDITIONS: tuple[tuple[float, float], ...] = (
    *((z, 0.0) for z in (1.5, 2.0, 3.0, 4.0)),
    *((0.0, m) for m in (5.0, 10.0, 20.0, 40.0)),
    *((z, m) for z in (1.0, 2.0, 3.0, 4.0) for m in (5.0, 10.0, 20.0, 30.0, 40.0)),
)
ROUTES: dict[str, tuple[str, ...]] = {"defocus": ("defocus",), "motion": ("motion",), "mixed": ("motion", "defocus")}
GROUPS = {
    "pure defocus, 1.5-4 DOF": lambda r: r["motion_px"] == 0,
    "pure motion, 5-40 px": lambda r: r["z_dof"] == 0,
    "mixed, 1 DOF, 5-40 px": lambda r: r["motion_px"] > 0 and r["z_dof"] == 1,
    "mixed, 2-4 DOF, 5-20 px": lambda r: 0 < r["motion_px"] <= 20 and r["z_dof"] >= 2,
    "mixed, 2-4 DOF, 30-40 px": lambda r: r["motion_px"] >= 30 and r["z_dof"] >= 2,
}


#: A crop: a name for its optics, the optics, its source's name, the pixels, and the key of its blur draws.
Crop = tuple[str, physics.Optics, str, np.ndarray, tuple[int, ...]]


def _named_crops(split: str, per_source: int, seed: int) -> Iterator[Crop]:
    """``per_source`` crops of every source at each of the evaluation's three optics."""
    plan = sets._plan(per_source, SIZE, False)
    for oi, (name, optics) in enumerate(data.EVAL_OPTICS):
        margin = max(sets._kernel_radius(optics, z, m) for z, m in CONDITIONS)
        for crop in sets._crops("defocus", plan, seed, data.sources(split), name, margin, []):
            yield name, optics, crop.source.name, crop.rgb, (oi, crop.source_index, crop.index)


def _random_crops(split: str, per_source: int, seed: int) -> Iterator[Crop]:
    """``3 * per_source`` crops of every source, each under its own optics from the training family
    (:func:`physics.random_optics`: NA, pixel size, section thickness, condenser, aberrations)."""
    rng = np.random.default_rng([seed, 99])
    for si, src in enumerate(data.sources(split)):
        for i in range(3 * per_source):
            optics = physics.random_optics(rng)
            side = sets._max_side(src, optics)
            if side < SIZE:
                continue
            margin = min(max(sets._kernel_radius(optics, z, m) for z, m in CONDITIONS), (side - SIZE) // 2)
            rgb, _, _ = data.random_crop(rng, [src], SIZE + 2 * margin, optics.mpp,
                                         max_upsample=sets._max_upsample(src, optics), augment=False)
            name = f"NA {optics.na:.2f}, {optics.mpp:.2f} um/px"
            yield name, optics, src.name, rgb, (len(data.EVAL_OPTICS), si, i)


def measure(split: str, per_source: int, seed: int, optics_family: str = "named") -> list[dict]:
    method = DBMIDMethod()
    crops = _named_crops if optics_family == "named" else _random_crops
    records = []
    for name, optics, source, rgb, key in crops(split, per_source, seed):
        target = sets._centre(rgb, SIZE)
        for ci, (z, length) in enumerate(CONDITIONS):
            rng = np.random.default_rng([seed, *key, ci])
            sign = 1.0 if rng.random() < 0.5 else -1.0
            angle = float(rng.uniform(0.0, 180.0))
            jpeg = int(rng.choice(physics.EVAL_JPEG))
            blurred = physics.degrade(rgb, optics, sign * z * optics.dof_um, length, angle, noise=True,
                                      jpeg_quality=jpeg, rng=rng)
            ssim = {"blurred": sets._ssim(sets._centre(blurred, SIZE), target)}
            for route, steps in ROUTES.items():
                ssim[route] = sets._ssim(sets._centre(method.restore(blurred, steps, optics.mpp), SIZE), target)
            p = method.classify(blurred[None], optics.mpp)[0]
            records.append({"optics": name, "source": source, "z_dof": z, "motion_px": length,
                            "p": [float(v) for v in p], "ssim": ssim})
        print(f"{name}, {source}: {len(records)} blurred images", file=sys.stderr)
    return records


def _policy(record: dict, rule: bool) -> float:
    p = np.asarray([record["p"]], dtype=np.float32)
    labels, actions = decide(p)
    steps = ACTION_STEPS[int(actions[0])]
    if not rule and steps:
        steps = STEPS[LABELS[int(labels[0])]]
    for route, route_steps in ROUTES.items():
        if steps == route_steps:
            return float(record["ssim"][route])
    return float(record["ssim"]["blurred"])


def report(records: list[dict]) -> None:
    print("| conditions | crops | blurred | DL_defocus | DL_motion | DL_motion, DL_defocus | best per crop (or none) "
          "| policy by the label alone | policy (`decide`) | mean p (in_focus, defocus, motion, mixed) |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    for group, member in {"all": lambda r: True, **GROUPS}.items():
        rs = [r for r in records if member(r)]
        mean = {k: np.mean([r["ssim"][k] for r in rs]) for k in ("blurred", *ROUTES)}
        best = np.mean([max(r["ssim"].values()) for r in rs])
        plain = np.mean([_policy(r, rule=False) for r in rs])
        policy = np.mean([_policy(r, rule=True) for r in rs])
        p = ", ".join(f"{v:.2f}" for v in np.mean([r["p"] for r in rs], axis=0))
        print(f"| {group} | {len(rs)} | {mean['blurred']:.3f} | {mean['defocus']:.3f} | {mean['motion']:.3f} "
              f"| {mean['mixed']:.3f} | {best:.3f} | {plain:.3f} | {policy:.3f} | {p} |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--split", default="train", choices=("train", "test"))
    parser.add_argument("--crops-per-source", type=int, default=1)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--optics", choices=("named", "random"), default="named",
                        help="the evaluation's 10x, 20x and 40x optics, or random optics of the training family")
    parser.add_argument("--json", type=Path, help="also write every crop's record here")
    args = parser.parse_args()
    records = measure(args.split, args.crops_per_source, args.seed, args.optics)
    if args.json:
        args.json.write_text(json.dumps(records), encoding="utf-8")
    report(records)


if __name__ == "__main__":
    main()
