"""Evaluation of deblurring methods on held-out tissue, after the DBMID paper (Tables 2-3, Figs. 4 and 6).

Everything is measured on the ``test`` split of :mod:`wsi_deblur.training.data`: source images that no model
was trained on. Sharp crops of real tissue are blurred with :func:`wsi_deblur.physics.degrade` (pupil-model
defocus and/or a motion line, camera noise, JPEG at the qualities of :data:`physics.EVAL_JPEG`), with fixed
seeds, so every number can be reproduced.

* **Classification** (Table 2): :func:`data.classification_set` on the test split (balanced over the four
  classes, random optics), and every crop of the sets below at the three named optics. Confusion matrix,
  accuracy overall and per class, and the in-focus false-alarm rate (in-focus called anything else).
* **Defocus** (Table 3, Fig. 4a): at PAPER_10X (0.55 um/px), SCANNER_20X (0.5) and SCANNER_40X (0.25), crops
  resampled to the optics' pixel size, focus offsets ``0`` and ``+-z`` for z in :data:`physics.EVAL_Z_DOF`
  (DOF units). SSIM per stain and pixel size, and against z.
* **Motion** (Fig. 4b-c): lengths :data:`physics.EVAL_MOTION_PX` at :data:`physics.EVAL_ANGLES` at SCANNER_20X
  (0.5 um/px, the sources' own pixel size), grouped as horizontal, vertical and oblique.
* **Mixed** (Fig. 6): defocus :data:`MIXED_Z_DOF` x motion :data:`MIXED_MOTION_PX` at SCANNER_20X.
* **Policy**: restoration above follows the true class (the "oracle" route, :data:`wsi_deblur._types.STEPS`:
  defocus -> ("defocus",), motion -> ("motion",), mixed -> ("motion", "defocus")), so that restoration is
  measured apart from classification. The end-to-end policy (classify the crop, decide with
  :func:`wsi_deblur.blurmap.decide` as the slide workflow does, restore) is reported on the defocus set, and
  in-focus crops go through :func:`wsi_deblur.restore_image`, which should hand them back bit for bit.

SSIM is :func:`skimage.metrics.structural_similarity` over RGB (``channel_axis=2``, ``data_range=255``, 7 px
window) between the sharp crop and the blurred or restored one. A crop is cut larger than ``size`` by the blur
kernel's radius where the source allows it, blurred and restored whole, and only its central ``size`` px are
compared, so image borders neither blur nor restore differently from the inside.

**Cost.** With the defaults (6 crops per source, 192 px) a method restores 540 defocused crops (and 54 in
focus go through the policy), 432 motion and 288 mixed ones, and classifies 160 tiles plus every crop. The
classical method spends about 0.1 s on a defocus step and about 1 s on a motion step (its PSF search): one crop
per source took 2.3 minutes on 2 busy cores, so the defaults take about 13 minutes; ``quick=True`` about 30 s.
"""

from __future__ import annotations

import json
import math
import platform
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from . import physics
from ._types import LABELS, STEPS
from ._version import __version__
from .api import restore_image
from .blurmap import ACTION_STEPS, decide
from .methods import METHODS, Method, get_method
from .training import data

__all__ = [
    "BASELINE",
    "DEFAULT_CROPS_PER_SOURCE",
    "DEFAULT_SIZE",
    "MIXED_MOTION_PX",
    "MIXED_Z_DOF",
    "available_methods",
    "evaluate",
]

#: The split evaluated: source images never used in training.
SPLIT = "test"
#: Name of the unrestored series (the blurred input) in every table and plot.
BASELINE = "blurred"
#: Crops drawn from each held-out source per optics (and for the motion and mixed sets). With 3 sources this
#: gives 18 images per condition (12 H&E, 6 IHC); see the module docstring for the cost.
DEFAULT_CROPS_PER_SOURCE = 6
#: Side of the compared region in pixels. The held-out IHC half is 256 px wide at 0.5 um/px, i.e. 230 px at
#: 0.55 um/px: 192 px leaves it a margin of 19-30 px at 10x and 20x (and any crop at 40x).
DEFAULT_SIZE = 192
#: Smallest side: the classifiers need at least 64 px (:data:`wsi_deblur.api.MIN_SIDE`).
MIN_SIZE = 64
#: Classification tiles from :func:`data.classification_set` per class (the paper's Table 2 had 40 in focus).
CLASSIFY_PER_CLASS = 40
#: Mixed-blur grid (Fig. 6): defocus in DOF units and motion in pixels.
MIXED_Z_DOF: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0)
MIXED_MOTION_PX: tuple[float, ...] = (5.0, 10.0, 20.0, 40.0)
#: Motion directions as the paper groups them (degrees, counter-clockwise from the x axis).
DIRECTIONS: dict[str, tuple[float, ...]] = {
    "horizontal": (0.0,), "vertical": (90.0,), "oblique": (45.0, 135.0),
}
#: The optics the motion and mixed sets are blurred at (0.5 um/px: the held-out sources' own pixel size).
BLUR_SET_OPTICS = "SCANNER_20X"
#: Readable names of the evaluation optics.
OPTICS_TITLES: dict[str, str] = {
    "PAPER_10X": "paper 10x/0.3, 0.55 µm/px",
    "SCANNER_20X": "scanner 20x/0.75, 0.5 µm/px",
    "SCANNER_40X": "scanner 40x (NA 0.75), 0.25 µm/px",
}

# quick=True: one crop per source, crops of at most 128 px, two z values, two motion lengths, three angles
# (horizontal, oblique, vertical), the defocus set from one source per stain, the motion and mixed sets from
# one source, 4 classification tiles per class.
# About 30 s with the classical method on 2 cores.
QUICK_SIZE = 128
QUICK_Z_DOF: tuple[float, ...] = (1.0, 3.0)
QUICK_MOTION_PX: tuple[float, ...] = (5.0, 20.0)
QUICK_ANGLES: tuple[float, ...] = (0.0, 45.0, 90.0)
QUICK_CLASSIFY_PER_CLASS = 4
#: Two random-optics PSFs (one in focus, one defocused) instead of the usual pool of at least four.
QUICK_CLASSIFY_PSFS = 2

#: Seed streams of the sets (with the user's seed, the source, crop and condition): independent draws.
_STREAMS = {"defocus": 1, "motion": 2, "mixed": 3}
#: Plot size in inches and resolution.
_DPI = 110

Progress = Callable[[str, int, int], None]


@dataclass(frozen=True)
class _Plan:
    """What one evaluation draws."""

    size: int
    crops_per_source: int
    z_dof: tuple[float, ...]
    motion_px: tuple[float, ...]
    angles: tuple[float, ...]
    mixed_z_dof: tuple[float, ...]
    mixed_motion_px: tuple[float, ...]
    one_source_per_stain: bool  # the defocus set uses the first source of each stain only
    blur_set_sources: int | None  # the motion and mixed sets use this many sources (None: all)
    classify_per_class: int
    classify_psfs: int | None  # defocus PSFs of the classification tiles (None: data.classification_set's)

    def settings(self) -> dict[str, Any]:
        return {
            "size": self.size, "crops_per_source": self.crops_per_source,
            "defocus_z_dof": [0.0, *(s * z for z in self.z_dof for s in (-1.0, 1.0))],
            "motion_px": list(self.motion_px), "motion_angles": list(self.angles),
            "mixed_z_dof": list(self.mixed_z_dof), "mixed_motion_px": list(self.mixed_motion_px),
            "classification_tiles": self.classify_per_class * len(LABELS),
            "jpeg_quality": list(physics.EVAL_JPEG),
        }


def _plan(crops_per_source: int, size: int, quick: bool) -> _Plan:
    if quick:
        return _Plan(
            size=min(size, QUICK_SIZE), crops_per_source=1, z_dof=QUICK_Z_DOF, motion_px=QUICK_MOTION_PX,
            angles=QUICK_ANGLES, mixed_z_dof=QUICK_Z_DOF, mixed_motion_px=QUICK_MOTION_PX,
            one_source_per_stain=True, blur_set_sources=1,
            classify_per_class=QUICK_CLASSIFY_PER_CLASS, classify_psfs=QUICK_CLASSIFY_PSFS,
        )
    return _Plan(
        size=size, crops_per_source=crops_per_source, z_dof=physics.EVAL_Z_DOF,
        motion_px=physics.EVAL_MOTION_PX, angles=physics.EVAL_ANGLES, mixed_z_dof=MIXED_Z_DOF,
        mixed_motion_px=MIXED_MOTION_PX, one_source_per_stain=False, blur_set_sources=None,
        classify_per_class=CLASSIFY_PER_CLASS, classify_psfs=None,
    )


# ----------------------------------------------------------------------------------------------------
# Methods


def _load_methods(names: Sequence[str]) -> dict[str, Method]:
    """The named methods, in order, without repeats; an unknown name is a ValueError naming it."""
    if isinstance(names, str):
        names = [names]
    unique = list(dict.fromkeys(names))
    if not unique:
        raise ValueError(f"evaluate: no method given; choose from {', '.join(sorted(METHODS))}")
    for name in unique:
        if name not in METHODS:
            raise ValueError(f"evaluate: unknown method {name!r}; choose from {', '.join(sorted(METHODS))}")
    return {name: get_method(name) for name in unique}


def available_methods() -> list[str]:
    """Names of the methods that can be built here (``dbmid`` needs its trained weights), registry order."""
    names = []
    for name in METHODS:
        try:
            get_method(name)
        except ValueError:
            continue
        names.append(name)
    return names


def _method_info(method: Method) -> dict[str, Any]:
    models = getattr(method, "models", {})
    return {"version": str(method.version), "models": {str(k): str(v) for k, v in dict(models).items()}}


# ----------------------------------------------------------------------------------------------------
# Crops and measurements


def _ssim(image: np.ndarray, reference: np.ndarray) -> float:
    return float(structural_similarity(image, reference, channel_axis=2, data_range=255))


def _centre(image: np.ndarray, size: int) -> np.ndarray:
    y = (image.shape[0] - size) // 2
    x = (image.shape[1] - size) // 2
    return image[y : y + size, x : x + size]


def _max_upsample(src: data.Source, optics: physics.Optics) -> float:
    """Upsampling allowed to reach the optics' pixel size: the training limit, or what 40x needs (those crops
    are softer than a real 40x scan; the factor is recorded in the results)."""
    return max(data.MAX_UPSAMPLE, src.mpp / optics.mpp)


def _max_side(src: data.Source, optics: physics.Optics) -> int:
    """Largest crop side at the optics' pixel size the source holds (with the resampling support of
    :func:`data.random_crop`: 2 px of window and 1 px each side for the position)."""
    return int((min(src.rgb.shape[:2]) - 3) * src.mpp / optics.mpp)


def _kernel_radius(optics: physics.Optics, z_dof: float, motion_px: float) -> int:
    """Radius in pixels of the blur kernel :func:`physics.degrade` applies (the PSF is cached there)."""
    psf = physics.defocus_psf(optics, z_dof * optics.dof_um)
    line = physics.motion_psf(motion_px, 0.0).shape[0] if motion_px > 0 else 1
    return psf.shape[0] // 2 + line // 2


def _key(seed: int, *parts: int) -> np.random.Generator:
    return np.random.default_rng([seed, *parts])


@dataclass(frozen=True)
class _Crop:
    """A sharp crop: ``size`` px to compare plus up to ``margin`` px of context on each side."""

    source: data.Source
    source_index: int
    index: int
    optics_name: str
    optics: physics.Optics
    rgb: np.ndarray
    margin: int
    upsample: float


def _crops(
    stream: str, plan: _Plan, seed: int, srcs: Sequence[data.Source], optics_name: str, margin: int,
    skipped: list[dict[str, Any]],
) -> list[_Crop]:
    """``plan.crops_per_source`` crops of each source at the optics' pixel size, ``margin`` px of context if
    the source holds it (less otherwise: :func:`physics.degrade` reflects at the border). A source too small
    for even ``size`` px is skipped and listed in ``skipped``."""
    optics = dict(data.EVAL_OPTICS)[optics_name]
    optics_index = [name for name, _ in data.EVAL_OPTICS].index(optics_name)
    out = []
    for si, src in enumerate(srcs):
        side_max = _max_side(src, optics)
        if side_max < plan.size:
            skipped.append({
                "set": stream, "optics": optics_name, "source": src.name,
                "reason": f"holds at most {side_max} px at {optics.mpp} um/px, fewer than {plan.size} px",
            })
            continue
        m = min(margin, (side_max - plan.size) // 2)
        upsample = _max_upsample(src, optics)
        for i in range(plan.crops_per_source):
            rng = _key(seed, _STREAMS[stream], optics_index, si, i)
            rgb, _, _ = data.random_crop(
                rng, [src], plan.size + 2 * m, optics.mpp, max_upsample=upsample, augment=False
            )
            out.append(_Crop(src, si, i, optics_name, optics, rgb, m, src.mpp / optics.mpp))
    if not out:
        raise ValueError(
            f"evaluate: no held-out source gives a {plan.size} px crop at {optics.mpp} um/px; "
            "use a smaller size"
        )
    return out


def _measure(
    crop: _Crop,
    methods: dict[str, Method],
    size: int,
    blur: tuple[float, float, float],
    jpeg: int,
    rng: np.random.Generator,
    policy: str | None,
) -> dict[str, Any]:
    """Blur a crop, restore it along the oracle route with every method, classify it, and (``policy``
    "decide" or "api") run the end-to-end policy. Returns the measurement record."""
    z_dof, motion_px, angle = blur
    optics = crop.optics
    label = physics.class_label(z_dof, motion_px)
    if label is None:
        raise ValueError(f"evaluate: blur z={z_dof} DOF, motion={motion_px} px lies between classes")
    blurred = physics.degrade(
        crop.rgb, optics, z_dof * optics.dof_um, motion_px, angle, noise=True, jpeg_quality=jpeg, rng=rng
    )
    target = _centre(crop.rgb, size)
    oracle = STEPS[label]
    ssim = {BASELINE: _ssim(_centre(blurred, size), target)}
    predicted: dict[str, str] = {}
    policy_ssim: dict[str, float] = {}
    unchanged: dict[str, bool] = {}
    for name, method in methods.items():
        restored = method.restore(blurred, oracle, optics.mpp) if oracle else blurred
        ssim[name] = _ssim(_centre(restored, size), target)
        probabilities = method.classify(blurred[None], optics.mpp)
        labels, actions = decide(probabilities)
        predicted[name] = LABELS[int(labels[0])]
        if policy is None:
            continue
        if policy == "api":
            out = restore_image(blurred, optics.mpp, method=name)
            unchanged[name] = bool(np.array_equal(out, blurred))
        else:
            steps = ACTION_STEPS[int(actions[0])]
            if not steps:
                out = blurred
            elif steps == oracle:
                out = restored
            else:
                out = method.restore(blurred, steps, optics.mpp)
        policy_ssim[name] = _ssim(_centre(out, size), target)
    record: dict[str, Any] = {
        "optics": crop.optics_name, "mpp": optics.mpp, "source": crop.source.name, "stain": crop.source.stain,
        "crop": crop.index, "margin_px": crop.margin, "upsample": round(crop.upsample, 3),
        "z_dof": z_dof, "z_um": round(z_dof * optics.dof_um, 3), "motion_px": motion_px,
        "motion_angle": angle, "jpeg_quality": jpeg, "label": label, "ssim": _rounded(ssim),
        "predicted": predicted,
    }
    if policy is not None:
        record["policy_ssim"] = _rounded(policy_ssim)
    if unchanged:
        record["unchanged"] = unchanged
    return record


def _rounded(values: dict[str, float]) -> dict[str, float]:
    return {k: round(v, 4) for k, v in values.items()}


class _Counter:
    """Calls ``progress(stage, done, total)`` after each unit of work."""

    def __init__(self, progress: Progress | None, stage: str, total: int) -> None:
        self.progress, self.stage, self.total, self.done = progress, stage, total, 0
        if progress is not None:
            progress(stage, 0, total)

    def step(self) -> None:
        self.done += 1
        if self.progress is not None:
            self.progress(self.stage, self.done, self.total)


# ----------------------------------------------------------------------------------------------------
# The sets


def _defocus_set(
    plan: _Plan, seed: int, methods: dict[str, Method], srcs: Sequence[data.Source],
    progress: Progress | None, skipped: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """In focus and +-z at each optics; every crop is seen at every z (paired, like a focal stack)."""
    zs = [0.0, *(s * z for z in plan.z_dof for s in (-1.0, 1.0))]
    crops = []
    for name, optics in data.EVAL_OPTICS:
        margin = max(_kernel_radius(optics, z, 0.0) for z in zs)
        crops += _crops("defocus", plan, seed, srcs, name, margin, skipped)
    counter = _Counter(progress, "defocus", len(crops) * len(zs))
    records = []
    for crop in crops:
        for zi, z in enumerate(zs):
            jpeg = physics.EVAL_JPEG[(crop.index + zi) % len(physics.EVAL_JPEG)]
            rng = _key(seed, _STREAMS["defocus"], crop.source_index, crop.index, zi, _optics_index(crop))
            policy = "api" if z == 0.0 else "decide"
            records.append(_measure(crop, methods, plan.size, (z, 0.0, 0.0), jpeg, rng, policy))
            counter.step()
    return records


def _optics_index(crop: _Crop) -> int:
    return [name for name, _ in data.EVAL_OPTICS].index(crop.optics_name)


def _motion_set(
    plan: _Plan, seed: int, methods: dict[str, Method], srcs: Sequence[data.Source],
    progress: Progress | None, skipped: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Motion of every length at every angle, in focus, at :data:`BLUR_SET_OPTICS`."""
    optics = dict(data.EVAL_OPTICS)[BLUR_SET_OPTICS]
    conditions = [(m, a) for m in plan.motion_px for a in plan.angles]
    margin = _kernel_radius(optics, 0.0, max(plan.motion_px))
    crops = _crops("motion", plan, seed, srcs, BLUR_SET_OPTICS, margin, skipped)
    counter = _Counter(progress, "motion", len(crops) * len(conditions))
    records = []
    for crop in crops:
        for ci, (length, angle) in enumerate(conditions):
            jpeg = physics.EVAL_JPEG[(crop.index + ci) % len(physics.EVAL_JPEG)]
            rng = _key(seed, _STREAMS["motion"], crop.source_index, crop.index, ci)
            records.append(_measure(crop, methods, plan.size, (0.0, length, angle), jpeg, rng, None))
            counter.step()
    return records


def _mixed_set(
    plan: _Plan, seed: int, methods: dict[str, Method], srcs: Sequence[data.Source],
    progress: Progress | None, skipped: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Defocus x motion at :data:`BLUR_SET_OPTICS`; the sign of z and the angle change from crop to crop."""
    optics = dict(data.EVAL_OPTICS)[BLUR_SET_OPTICS]
    conditions = [(z, m) for z in plan.mixed_z_dof for m in plan.mixed_motion_px]
    margin = max(_kernel_radius(optics, z, max(plan.mixed_motion_px)) for z in plan.mixed_z_dof)
    crops = _crops("mixed", plan, seed, srcs, BLUR_SET_OPTICS, margin, skipped)
    counter = _Counter(progress, "mixed", len(crops) * len(conditions))
    records = []
    for k, crop in enumerate(crops):
        for ci, (z, length) in enumerate(conditions):
            sign = 1.0 if (k + ci) % 2 == 0 else -1.0
            angle = plan.angles[(k + ci) % len(plan.angles)]
            jpeg = physics.EVAL_JPEG[(crop.index + ci) % len(physics.EVAL_JPEG)]
            rng = _key(seed, _STREAMS["mixed"], crop.source_index, crop.index, ci)
            records.append(_measure(crop, methods, plan.size, (sign * z, length, angle), jpeg, rng, None))
            counter.step()
    return records


def _classification_tiles(
    plan: _Plan, seed: int, methods: dict[str, Method], progress: Progress | None
) -> dict[str, Any]:
    """Class predictions of every method on :func:`data.classification_set` (test split)."""
    n = plan.classify_per_class * len(LABELS)
    tiles, labels, mpps, _ = data.classification_set(
        n, plan.size, seed, split=SPLIT, n_psfs=plan.classify_psfs
    )
    counter = _Counter(progress, "classification", n * len(methods))
    predicted: dict[str, list[int]] = {}
    for name, method in methods.items():
        out = []
        for tile, mpp in zip(tiles, mpps, strict=True):
            out.append(int(np.argmax(method.classify(tile[None], float(mpp))[0])))
            counter.step()
        predicted[name] = out
    return {"true": [int(v) for v in labels], "predicted": predicted,
            "mpp_range": [round(float(mpps.min()), 3), round(float(mpps.max()), 3)]}


# ----------------------------------------------------------------------------------------------------
# Summaries


def _confusion(true: Sequence[int], predicted: Sequence[int]) -> dict[str, Any]:
    """Confusion matrix (rows: true class, columns: predicted, LABELS order) and the accuracy figures."""
    k = len(LABELS)
    matrix = np.zeros((k, k), dtype=np.int64)
    np.add.at(matrix, (np.asarray(true, dtype=np.intp), np.asarray(predicted, dtype=np.intp)), 1)
    rows = matrix.sum(axis=1)
    per_class = {
        LABELS[i]: (round(float(matrix[i, i] / rows[i]), 4) if rows[i] else None) for i in range(k)
    }
    n = int(matrix.sum())
    in_focus = int(rows[0])
    return {
        "labels": list(LABELS),
        "matrix": matrix.tolist(),
        "n": n,
        "accuracy": round(float(np.trace(matrix) / n), 4) if n else None,
        "per_class_accuracy": per_class,
        "in_focus_false_alarm": round(float(1.0 - matrix[0, 0] / in_focus), 4) if in_focus else None,
    }


def _mean(values: Iterable[float]) -> float:
    v = list(values)
    return round(float(np.mean(v)), 4) if v else float("nan")


def _group(
    records: Sequence[dict[str, Any]], keys: Sequence[str], series: Sequence[str], field: str = "ssim"
) -> list[dict[str, Any]]:
    """Mean of ``record[field][s]`` for each series, per distinct value of ``keys`` (in first-seen order)."""
    groups: dict[tuple[Any, ...], list[dict[str, Any]]] = {}
    for r in records:
        groups.setdefault(tuple(r[k] for k in keys), []).append(r)
    out = []
    for value, members in groups.items():
        row: dict[str, Any] = dict(zip(keys, value, strict=True))
        row["n"] = len(members)
        row[field] = {s: _mean(m[field][s] for m in members) for s in series if s in members[0][field]}
        out.append(row)
    return out


def _with_gain(rows: list[dict[str, Any]], methods: Sequence[str]) -> list[dict[str, Any]]:
    for row in rows:
        row["gain"] = {m: round(row["ssim"][m] - row["ssim"][BASELINE], 4) for m in methods}
    return rows


def _summaries(
    records: dict[str, list[dict[str, Any]]], classification: dict[str, Any], names: Sequence[str]
) -> dict[str, Any]:
    series = [BASELINE, *names]
    defocus = [r for r in records["defocus"] if r["label"] == "defocus"]
    in_focus = [r for r in records["defocus"] if r["label"] == "in_focus"]
    per_stain = _group(defocus, ["optics", "stain"], series)
    per_stain += [dict(row, stain="all") for row in _group(defocus, ["optics"], series)]
    per_stain += _group([dict(r, optics="all") for r in defocus], ["optics", "stain"], series)
    per_stain += _group([dict(r, optics="all", stain="all") for r in defocus], ["optics", "stain"], series)
    order = [name for name, _ in data.EVAL_OPTICS]
    by_optics_z = sorted(records["defocus"], key=lambda r: (order.index(r["optics"]), r["z_dof"]))
    by_z = _group(by_optics_z, ["optics", "z_dof"], series)
    policy_by_z = _group(by_optics_z, ["optics", "z_dof"], names, "policy_ssim")
    for row, prow in zip(by_z, policy_by_z, strict=True):
        row["policy_ssim"] = prow["policy_ssim"]
        row["z_um"] = round(row["z_dof"] * dict(data.EVAL_OPTICS)[row["optics"]].dof_um, 3)
    motion = []
    for direction, angles in DIRECTIONS.items():
        members = [dict(r, direction=direction) for r in records["motion"] if r["motion_angle"] in angles]
        motion += _group(members, ["direction", "motion_px"], series)
    mixed = [dict(r, z_abs=abs(r["z_dof"])) for r in records["mixed"]]
    policy = {}
    for name in names:
        policy[name] = {
            "n": len(defocus),
            "ssim_blurred": _mean(r["ssim"][BASELINE] for r in defocus),
            "ssim_oracle": _mean(r["ssim"][name] for r in defocus),
            "ssim_policy": _mean(r["policy_ssim"][name] for r in defocus),
            "routed_as_defocus": _mean(float(r["predicted"][name] == "defocus") for r in defocus),
        }
    unchanged = {}
    for name in names:
        unchanged[name] = {
            "n": len(in_focus),
            "unchanged_fraction": _mean(float(r["unchanged"][name]) for r in in_focus),
            "ssim_input": _mean(r["ssim"][BASELINE] for r in in_focus),
            "ssim_after_policy": _mean(r["policy_ssim"][name] for r in in_focus),
        }
    grid = [r for rs in records.values() for r in rs]
    return {
        "classification": {
            name: {
                "classification_set": _confusion(classification["true"], classification["predicted"][name]),
                "evaluation_grid": _confusion(
                    [LABELS.index(r["label"]) for r in grid],
                    [LABELS.index(r["predicted"][name]) for r in grid],
                ),
            }
            for name in names
        },
        "defocus_per_stain": _with_gain([row for row in per_stain if row["n"]], names),
        "defocus_vs_z": by_z,
        "motion_vs_length": motion,
        "mixed": _with_gain(_group(mixed, ["z_abs", "motion_px"], series), names),
        "policy_defocus": policy,
        "in_focus": unchanged,
    }


# ----------------------------------------------------------------------------------------------------
# Markdown


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    for row in rows:
        lines.append("| " + " | ".join(str(c) for c in row) + " |")
    return "\n".join(lines)


def _f(value: float | None, sign: bool = False) -> str:
    if value is None or not math.isfinite(value):
        return "-"
    return f"{value:+.3f}" if sign else f"{value:.3f}"


def _signed(value: float, fmt: str) -> str:
    return "0" if value == 0 else format(value, "+" + fmt)


def _pct(value: float | None) -> str:
    return "-" if value is None else f"{100 * value:.1f}%"


def _markdown(result: dict[str, Any]) -> str:
    s = result["settings"]
    names = list(result["methods"])
    series = [BASELINE, *names]
    src = ", ".join(f"{x['name']} ({x['stain']}, {x['mpp']} µm/px)" for x in s["sources"])
    versions = "; ".join(f"{n} {result['methods'][n]['version']}" for n in names)
    out = [
        "# Blur classification and restoration on held-out tissue",
        "",
        f"Held-out split `{s['split']}` (source images never used in training): {src}. "
        f"{s['crops_per_source']} crop(s) per source, {s['size']} px compared, seed {s['seed']}"
        + (", quick mode" if s["quick"] else "")
        + ". Blur from the pupil model with camera noise and JPEG quality "
        + "/".join(map(str, s["jpeg_quality"]))
        + f". SSIM over RGB against the sharp crop. Methods: {versions}. "
        f"wsi-deblur {result['software']['wsi_deblur']}.",
        "",
        "Restoration follows the true class (oracle route) unless marked *policy* (classify, then route).",
    ]
    if s["skipped"]:
        left_out = "; ".join(f"{x['source']} at {x['optics']} ({x['reason']})" for x in s["skipped"])
        out += ["", f"Left out: {left_out}."]

    out += ["", "## Blur classification (paper Table 2)", ""]
    for name in names:
        for part, title in (
            ("classification_set", "held-out tiles at random optics (balanced)"),
            ("evaluation_grid", "all crops below, at the three named optics"),
        ):
            c = result["classification"][name][part]
            out += [f"**{name}**, {title}: accuracy {_pct(c['accuracy'])} of {c['n']}, in-focus false alarms "
                    f"{_pct(c['in_focus_false_alarm'])}.", ""]
            rows = [
                [f"**{label}**", *c["matrix"][i], _pct(c["per_class_accuracy"][label])]
                for i, label in enumerate(c["labels"])
            ]
            out += [_table(["true \\ predicted", *c["labels"], "accuracy"], rows), ""]

    out += ["## Defocus: SSIM before and after restoration, per stain and pixel size (paper Table 3)", ""]
    header = ["optics", "stain", "images", BASELINE]
    for name in names:
        header += [name, f"{name} gain"]
    rows = []
    for row in result["defocus_per_stain"]:
        cells: list[Any] = [OPTICS_TITLES.get(row["optics"], row["optics"]), row["stain"], row["n"],
                            _f(row["ssim"][BASELINE])]
        for name in names:
            cells += [_f(row["ssim"][name]), _f(row["gain"][name], sign=True)]
        rows.append(cells)
    out += [_table(header, rows), ""]

    out += ["## SSIM against defocus distance (paper Fig. 4a)", ""]
    header = ["optics", "z (DOF)", "z (µm)", "images", BASELINE]
    for name in names:
        header += [name, f"{name} (policy)"]
    rows = []
    for row in result["defocus_vs_z"]:
        cells = [OPTICS_TITLES.get(row["optics"], row["optics"]), _signed(row["z_dof"], "g"),
                 _signed(row["z_um"], ".1f"), row["n"], _f(row["ssim"][BASELINE])]
        for name in names:
            cells += [_f(row["ssim"][name]), _f(row["policy_ssim"][name])]
        rows.append(cells)
    out += [_table(header, rows), ""]

    out += [f"## SSIM against motion length ({OPTICS_TITLES[BLUR_SET_OPTICS]})", ""]
    rows = [
        [row["direction"], f"{row['motion_px']:g}", row["n"], *(_f(row["ssim"][k]) for k in series)]
        for row in result["motion_vs_length"]
    ]
    out += [_table(["direction", "length (px)", "images", BASELINE, *names], rows), ""]

    out += [f"## Mixed blur: SSIM over defocus x motion (paper Fig. 6; {OPTICS_TITLES[BLUR_SET_OPTICS]})", ""]
    header = ["defocus (± DOF)", "motion (px)", "images", BASELINE]
    for name in names:
        header += [name, f"{name} gain"]
    rows = []
    for row in result["mixed"]:
        cells = [f"{row['z_abs']:g}", f"{row['motion_px']:g}", row["n"], _f(row["ssim"][BASELINE])]
        for name in names:
            cells += [_f(row["ssim"][name]), _f(row["gain"][name], sign=True)]
        rows.append(cells)
    out += [_table(header, rows), ""]

    out += ["## End-to-end policy on the defocus set (all optics, |z| >= 1 DOF)", ""]
    rows = [
        [name, p["n"], _f(p["ssim_blurred"]), _f(p["ssim_oracle"]), _f(p["ssim_policy"]),
         _f(p["ssim_policy"] - p["ssim_blurred"], sign=True), _pct(p["routed_as_defocus"])]
        for name, p in result["policy_defocus"].items()
    ]
    out += [_table(["method", "images", BASELINE, "oracle route", "policy", "policy gain", "called defocus"],
                   rows), ""]

    out += ["## In-focus input (z = 0, all optics) through `restore_image`", ""]
    rows = [
        [name, p["n"], _pct(p["unchanged_fraction"]), _f(p["ssim_input"]), _f(p["ssim_after_policy"])]
        for name, p in result["in_focus"].items()
    ]
    out += [_table(["method", "images", "left bit-identical", "SSIM input", "SSIM after policy"], rows), ""]
    out += ["Plots: " + ", ".join(f"`{p}`" for p in result["files"]["plots"]), ""]
    return "\n".join(out)


# ----------------------------------------------------------------------------------------------------
# Plots


def _colour(series: str, names: Sequence[str]) -> str:
    return "0.45" if series == BASELINE else f"C{names.index(series)}"


def _save(fig: Any, path: Path) -> None:
    fig.savefig(path, dpi=_DPI, bbox_inches="tight")


def _plot_confusion(result: dict[str, Any], name: str, path: Path) -> None:
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10.5, 4.6), layout="constrained")
    axes = fig.subplots(1, 2)
    image = None
    for ax, (part, title) in zip(axes, (
        ("classification_set", "held-out tiles, random optics"),
        ("evaluation_grid", "evaluation grid, named optics"),
    ), strict=True):
        c = result["classification"][name][part]
        matrix = np.asarray(c["matrix"], dtype=float)
        fraction = matrix / np.maximum(matrix.sum(axis=1, keepdims=True), 1)
        image = ax.imshow(fraction, cmap="Blues", vmin=0.0, vmax=1.0)
        for i in range(len(LABELS)):
            for j in range(len(LABELS)):
                colour = "white" if fraction[i, j] > 0.6 else "black"
                ax.text(j, i, f"{int(matrix[i, j])}\n{100 * fraction[i, j]:.0f}%", ha="center", va="center",
                        color=colour, fontsize=9)
        ax.set_xticks(range(len(LABELS)), LABELS)
        ax.set_yticks(range(len(LABELS)), LABELS)
        ax.set_xlabel("predicted class")
        ax.set_ylabel("true class")
        ax.set_title(f"{title}\naccuracy {_pct(c['accuracy'])} (n = {c['n']}), "
                     f"in-focus false alarms {_pct(c['in_focus_false_alarm'])}", fontsize=10)
    if image is not None:
        fig.colorbar(image, ax=axes, shrink=0.8, label="fraction of the true class")
    fig.suptitle(f"Blur classification, {name} (held-out sources)")
    _save(fig, path)


def _plot_per_stain(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    series = [BASELINE, *names]
    rows = [r for r in result["defocus_per_stain"] if r["optics"] != "all" and r["stain"] != "all"]
    fig = Figure(figsize=(max(6.0, 1.3 * len(rows) + 2), 4.6), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / len(series)
    x = np.arange(len(rows))
    for k, s in enumerate(series):
        values = [r["ssim"][s] for r in rows]
        ax.bar(x + (k - (len(series) - 1) / 2) * width, values, width, label=s, color=_colour(s, names))
    ax.set_xticks(x, [f"{r['stain']}\n{OPTICS_TITLES.get(r['optics'], r['optics']).replace(', ', chr(10))}"
                      for r in rows], fontsize=8)
    ax.set_ylabel("SSIM against the sharp crop (mean)")
    ax.set_ylim(0.0, 1.0)
    ax.grid(axis="y", alpha=0.3)
    ax.legend(loc="lower right")
    z = ", ".join(f"{v:g}" for v in result["settings"]["defocus_z_dof"] if v > 0)
    ax.set_title(f"Defocus (z = ±{z} DOF): SSIM before and after restoration, per stain and optics")
    _save(fig, path)


def _plot_vs_defocus(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    optics_names = [n for n, _ in data.EVAL_OPTICS if any(r["optics"] == n for r in result["defocus_vs_z"])]
    fig = Figure(figsize=(5.0 * len(optics_names), 4.6), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(optics_names), sharey=True))
    for ax, optics_name in zip(axes, optics_names, strict=True):
        rows = [r for r in result["defocus_vs_z"] if r["optics"] == optics_name]
        z = np.array([r["z_dof"] for r in rows])
        blurred = z != 0
        ax.plot(z, [r["ssim"][BASELINE] for r in rows], "o--", color=_colour(BASELINE, names), label=BASELINE)
        for name in names:
            colour = _colour(name, names)
            ax.plot(z[blurred], [r["ssim"][name] for r, b in zip(rows, blurred, strict=True) if b], "o-",
                    color=colour, label=f"{name} (oracle route)")
            ax.plot(z, [r["policy_ssim"][name] for r in rows], "s:", color=colour, alpha=0.8,
                    label=f"{name} (policy)")
        dof = dict(data.EVAL_OPTICS)[optics_name].dof_um
        ax.set_title(f"{OPTICS_TITLES.get(optics_name, optics_name)}\n1 DOF = {dof:.1f} µm", fontsize=10)
        ax.set_xlabel("focus offset z (DOF units)")
        top = ax.secondary_xaxis("top", functions=(lambda v, d=dof: v * d, lambda v, d=dof: v / d))
        top.set_xlabel("z (µm)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM against the sharp crop (mean)")
    axes[0].legend(fontsize=8, loc="lower center")
    fig.suptitle("SSIM against defocus distance (held-out sources)")
    _save(fig, path)


def _plot_vs_motion(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    directions = [d for d in DIRECTIONS if any(r["direction"] == d for r in result["motion_vs_length"])]
    fig = Figure(figsize=(4.6 * len(directions), 4.4), layout="constrained")
    axes = np.atleast_1d(fig.subplots(1, len(directions), sharey=True))
    for ax, direction in zip(axes, directions, strict=True):
        rows = [r for r in result["motion_vs_length"] if r["direction"] == direction]
        length = [r["motion_px"] for r in rows]
        for s in [BASELINE, *names]:
            style = "o--" if s == BASELINE else "o-"
            ax.plot(length, [r["ssim"][s] for r in rows], style, color=_colour(s, names), label=s)
        angles = ", ".join(f"{a:g}°" for a in DIRECTIONS[direction])
        ax.set_title(f"{direction} motion ({angles})", fontsize=10)
        ax.set_xlabel("motion length (px at 0.5 µm/px)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("SSIM against the sharp crop (mean)")
    axes[0].legend(fontsize=8)
    fig.suptitle(f"SSIM against motion length, in focus ({OPTICS_TITLES[BLUR_SET_OPTICS]})")
    _save(fig, path)


def _plot_mixed(result: dict[str, Any], path: Path) -> None:
    from matplotlib.figure import Figure

    names = list(result["methods"])
    rows = result["mixed"]
    zs = sorted({r["z_abs"] for r in rows})
    ms = sorted({r["motion_px"] for r in rows})
    cell = {(r["z_abs"], r["motion_px"]): r for r in rows}

    def grid(field: str, series: str) -> np.ndarray:
        return np.array([[cell[(z, m)][field][series] if (z, m) in cell else np.nan for m in ms] for z in zs])

    series = [BASELINE, *names]
    fig = Figure(figsize=(3.6 * len(series) + 1.0, 6.8), layout="constrained")
    axes = fig.subplots(2, len(series), squeeze=False)
    gains = [grid("gain", n) for n in names]
    limit = max([0.05, *(float(np.nanmax(np.abs(g))) for g in gains)])
    ssim_image = gain_image = None
    for k, s in enumerate(series):
        panels = [(axes[0, k], grid("ssim", s), "viridis", (0.0, 1.0), f"SSIM, {s}")]
        if s != BASELINE:
            panels.append((axes[1, k], gains[k - 1], "RdBu", (-limit, limit), f"SSIM gain, {s}"))
        else:
            axes[1, k].axis("off")
            axes[1, k].text(0.5, 0.5, "gain: SSIM after restoration\nminus SSIM of the blurred input\n\n"
                            "z sign and motion angle vary\nfrom crop to crop", ha="center", va="center",
                            transform=axes[1, k].transAxes, fontsize=9)
        for ax, values, cmap, (lo, hi), title in panels:
            image = ax.imshow(values, cmap=cmap, vmin=lo, vmax=hi, origin="lower", aspect="auto")
            if cmap == "viridis":
                ssim_image = image
            else:
                gain_image = image
            for i in range(len(zs)):
                for j in range(len(ms)):
                    if np.isfinite(values[i, j]):
                        text = f"{values[i, j]:+.2f}" if cmap == "RdBu" else f"{values[i, j]:.2f}"
                        dark = values[i, j] < 0.5 if cmap == "viridis" else abs(values[i, j]) > 0.6 * limit
                        ax.text(j, i, text, ha="center", va="center", fontsize=8,
                                color="white" if dark else "black")
            ax.set_xticks(range(len(ms)), [f"{m:g}" for m in ms])
            ax.set_yticks(range(len(zs)), [f"{z:g}" for z in zs])
            ax.set_xlabel("motion length (px)")
            ax.set_ylabel("defocus |z| (DOF)")
            ax.set_title(title, fontsize=10)
    if ssim_image is not None:
        fig.colorbar(ssim_image, ax=list(axes[0]), shrink=0.85, label="SSIM (mean)")
    if gain_image is not None:
        fig.colorbar(gain_image, ax=list(axes[1]), shrink=0.85, label="SSIM after - before")
    fig.suptitle(f"Mixed blur, motion then defocus restoration ({OPTICS_TITLES[BLUR_SET_OPTICS]})")
    _save(fig, path)


# ----------------------------------------------------------------------------------------------------
# Entry point


def evaluate(
    methods: Sequence[str],
    out_dir: str | Path,
    *,
    crops_per_source: int = DEFAULT_CROPS_PER_SOURCE,
    size: int = DEFAULT_SIZE,
    seed: int = 0,
    quick: bool = False,
    progress: Callable[[str, int, int], None] | None = None,
) -> dict[str, Any]:
    """Evaluate deblurring ``methods`` (names, e.g. ``["classical", "dbmid"]``) on the held-out split.

    Writes into ``out_dir`` (created if needed): ``evaluation.json`` (settings, method and model versions,
    every measurement and the summaries), ``evaluation.md`` (Markdown tables) and PNG plots:
    ``confusion_<method>.png``, ``ssim_per_stain.png``, ``ssim_vs_defocus.png``, ``ssim_vs_motion.png`` and
    ``mixed_heatmap.png``. ``crops_per_source`` crops of ``size`` px are drawn from each held-out source per
    optics and set; ``quick`` is a small version for tests (see :data:`QUICK_SIZE` and the names after it).
    ``progress(stage, done, total)`` is called as the work goes on. Returns what ``evaluation.json`` holds.
    Raises ValueError for an unknown method name, a method that cannot be built (e.g. missing weights), or
    sizes the held-out sources cannot give.
    """
    loaded = _load_methods(methods)
    names = list(loaded)
    if crops_per_source < 1:
        raise ValueError(f"evaluate: crops_per_source must be at least 1, got {crops_per_source}")
    if size < MIN_SIZE:
        raise ValueError(f"evaluate: size must be at least {MIN_SIZE} px, got {size}")
    out = Path(out_dir)
    if out.exists() and not out.is_dir():
        raise ValueError(f"{out}: exists and is not a folder; evaluate writes its results into a folder")
    out.mkdir(parents=True, exist_ok=True)

    plan = _plan(crops_per_source, size, quick)
    srcs = data.sources(SPLIT)
    defocus_srcs = srcs
    if plan.one_source_per_stain:
        defocus_srcs = list({s.stain: s for s in reversed(srcs)}.values())[::-1]
    blur_srcs = srcs if plan.blur_set_sources is None else srcs[: plan.blur_set_sources]
    started = time.perf_counter()
    timings: dict[str, float] = {}
    skipped: list[dict[str, Any]] = []

    def timed(stage: str, run: Callable[[], Any]) -> Any:
        t0 = time.perf_counter()
        value = run()
        timings[stage] = round(time.perf_counter() - t0, 1)
        return value

    classification = timed("classification", lambda: _classification_tiles(plan, seed, loaded, progress))
    records = {
        "defocus": timed(
            "defocus", lambda: _defocus_set(plan, seed, loaded, defocus_srcs, progress, skipped)
        ),
        "motion": timed("motion", lambda: _motion_set(plan, seed, loaded, blur_srcs, progress, skipped)),
        "mixed": timed("mixed", lambda: _mixed_set(plan, seed, loaded, blur_srcs, progress, skipped)),
    }
    settings = {
        "split": SPLIT, "seed": seed, "quick": quick, **plan.settings(),
        "sources": [{"name": s.name, "stain": s.stain, "mpp": s.mpp} for s in srcs],
        "defocus_sources": [s.name for s in defocus_srcs],
        "motion_and_mixed_sources": [s.name for s in blur_srcs],
        "optics": {
            name: {"na": o.na, "mpp": o.mpp, "dof_um": round(o.dof_um, 3), "title": OPTICS_TITLES[name]}
            for name, o in data.EVAL_OPTICS
        },
        "motion_and_mixed_optics": BLUR_SET_OPTICS,
        "classification_mpp_range": classification["mpp_range"],
        "ssim": "skimage.metrics.structural_similarity, channel_axis=2, data_range=255, central size px",
        "route": "oracle: restoration steps of the true class; policy: classify, blurmap.decide, restore",
        "skipped": skipped,
    }
    result: dict[str, Any] = {
        "settings": settings,
        "software": {"wsi_deblur": __version__, "numpy": np.__version__, "python": platform.python_version()},
        "methods": {name: _method_info(m) for name, m in loaded.items()},
        **_summaries(records, classification, names),
        "records": records,
        "classification_set_predictions": classification,
    }

    plots = [f"confusion_{name}.png" for name in names]
    plots += ["ssim_per_stain.png", "ssim_vs_defocus.png", "ssim_vs_motion.png", "mixed_heatmap.png"]
    result["files"] = {"json": "evaluation.json", "markdown": "evaluation.md", "plots": plots}
    counter = _Counter(progress, "plots", len(plots))
    t0 = time.perf_counter()
    for name in names:
        _plot_confusion(result, name, out / f"confusion_{name}.png")
        counter.step()
    for plot, path in ((_plot_per_stain, "ssim_per_stain.png"), (_plot_vs_defocus, "ssim_vs_defocus.png"),
                       (_plot_vs_motion, "ssim_vs_motion.png"), (_plot_mixed, "mixed_heatmap.png")):
        plot(result, out / path)
        counter.step()
    timings["plots"] = round(time.perf_counter() - t0, 1)
    result["runtime_s"] = {**timings, "total": round(time.perf_counter() - started, 1)}

    (out / "evaluation.md").write_text(_markdown(result), encoding="utf-8")
    (out / "evaluation.json").write_text(json.dumps(result, indent=1, allow_nan=False), encoding="utf-8")
    return result
