"""The evaluation's plan, held-out crops, measurements and the sets of the paper's figures."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from skimage.metrics import structural_similarity

from .. import physics
from .._types import LABELS, STEPS
from ..api import restore_image
from ..blurmap import ACTION_STEPS, ACTIONS, decide
from ..methods import Method
from ..training import data

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
#: Classification tiles from :func:`data.classification_set` per class (the paper's Table 2 had 40 in focus). The
#: held-out sources are few, so the figure varies with the draw: 100 per class and one defocus PSF per
#: :data:`CLASSIFY_TILES_PER_PSF` tiles (50 PSFs; the data builder's default would draw 13) keep it steady.
CLASSIFY_PER_CLASS = 100
CLASSIFY_TILES_PER_PSF = 8
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
        classify_per_class=CLASSIFY_PER_CLASS,
        classify_psfs=CLASSIFY_PER_CLASS * len(LABELS) // CLASSIFY_TILES_PER_PSF,
    )



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


@dataclass(frozen=True)
class _Draw:
    """One blurred image of a set: a crop, its blur (z in DOF, motion px, angle), JPEG quality, the seed of
    its noise, and the end-to-end policy measured on it (None, "decide" or "api")."""

    crop: _Crop
    blur: tuple[float, float, float]
    jpeg: int
    key: tuple[int, ...]
    policy: str | None

    @property
    def label(self) -> str:
        label = physics.class_label(self.blur[0], self.blur[1])
        if label is None:
            raise ValueError(f"evaluate: blur z={self.blur[0]} DOF, motion={self.blur[1]} px lies between classes")
        return label

    def blurred(self) -> np.ndarray:
        """The crop through the optics at this blur, with camera noise and JPEG (the same pixels every call)."""
        z_dof, motion_px, angle = self.blur
        optics = self.crop.optics
        return physics.degrade(self.crop.rgb, optics, z_dof * optics.dof_um, motion_px, angle, noise=True,
                               jpeg_quality=self.jpeg, rng=_key(*self.key))


def _measure(draw: _Draw, methods: dict[str, Method], size: int) -> dict[str, Any]:
    """Blur a crop, restore it along the oracle route with every method, classify it, and (``draw.policy``
    "decide" or "api") run the end-to-end policy. Returns the measurement record."""
    crop, policy = draw.crop, draw.policy
    z_dof, motion_px, angle = draw.blur
    optics = crop.optics
    label = draw.label
    blurred = draw.blurred()
    target = _centre(crop.rgb, size)
    oracle = STEPS[label]
    ssim = {BASELINE: _ssim(_centre(blurred, size), target)}
    predicted: dict[str, str] = {}
    policy_ssim: dict[str, float] = {}
    policy_route: dict[str, str] = {}
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
            policy_route[name] = ACTIONS[int(actions[0])]
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
        "motion_angle": angle, "jpeg_quality": draw.jpeg, "label": label, "ssim": _rounded(ssim),
        "predicted": predicted,
    }
    if policy is not None:
        record["policy_ssim"] = _rounded(policy_ssim)
    if policy_route:
        record["policy_route"] = policy_route
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



def _defocus_draws(
    plan: _Plan, seed: int, srcs: Sequence[data.Source], skipped: list[dict[str, Any]]
) -> list[_Draw]:
    """In focus and +-z at each optics; every crop is seen at every z (paired, like a focal stack)."""
    zs = [0.0, *(s * z for z in plan.z_dof for s in (-1.0, 1.0))]
    crops = []
    for name, optics in data.EVAL_OPTICS:
        margin = max(_kernel_radius(optics, z, 0.0) for z in zs)
        crops += _crops("defocus", plan, seed, srcs, name, margin, skipped)
    return [
        _Draw(crop, (z, 0.0, 0.0), physics.EVAL_JPEG[(crop.index + zi) % len(physics.EVAL_JPEG)],
              (seed, _STREAMS["defocus"], crop.source_index, crop.index, zi, _optics_index(crop)),
              "api" if z == 0.0 else "decide")
        for crop in crops for zi, z in enumerate(zs)
    ]


def _optics_index(crop: _Crop) -> int:
    return [name for name, _ in data.EVAL_OPTICS].index(crop.optics_name)


def _motion_draws(
    plan: _Plan, seed: int, srcs: Sequence[data.Source], skipped: list[dict[str, Any]]
) -> list[_Draw]:
    """Motion of every length at every angle, in focus, at :data:`BLUR_SET_OPTICS`."""
    optics = dict(data.EVAL_OPTICS)[BLUR_SET_OPTICS]
    conditions = [(m, a) for m in plan.motion_px for a in plan.angles]
    margin = _kernel_radius(optics, 0.0, max(plan.motion_px))
    crops = _crops("motion", plan, seed, srcs, BLUR_SET_OPTICS, margin, skipped)
    return [
        _Draw(crop, (0.0, length, angle), physics.EVAL_JPEG[(crop.index + ci) % len(physics.EVAL_JPEG)],
              (seed, _STREAMS["motion"], crop.source_index, crop.index, ci), "decide")
        for crop in crops for ci, (length, angle) in enumerate(conditions)
    ]


def _mixed_draws(
    plan: _Plan, seed: int, srcs: Sequence[data.Source], skipped: list[dict[str, Any]]
) -> list[_Draw]:
    """Defocus x motion at :data:`BLUR_SET_OPTICS`; the sign of z and the angle change from crop to crop."""
    optics = dict(data.EVAL_OPTICS)[BLUR_SET_OPTICS]
    conditions = [(z, m) for z in plan.mixed_z_dof for m in plan.mixed_motion_px]
    margin = max(_kernel_radius(optics, z, max(plan.mixed_motion_px)) for z in plan.mixed_z_dof)
    crops = _crops("mixed", plan, seed, srcs, BLUR_SET_OPTICS, margin, skipped)
    draws = []
    for k, crop in enumerate(crops):
        for ci, (z, length) in enumerate(conditions):
            sign = 1.0 if (k + ci) % 2 == 0 else -1.0
            angle = plan.angles[(k + ci) % len(plan.angles)]
            jpeg = physics.EVAL_JPEG[(crop.index + ci) % len(physics.EVAL_JPEG)]
            draws.append(_Draw(crop, (sign * z, length, angle), jpeg,
                               (seed, _STREAMS["mixed"], crop.source_index, crop.index, ci), "decide"))
    return draws


#: The blurred sets of the evaluation and how each draws its images.
DRAWS: dict[str, Callable[[_Plan, int, Sequence[data.Source], list[dict[str, Any]]], list[_Draw]]] = {
    "defocus": _defocus_draws, "motion": _motion_draws, "mixed": _mixed_draws,
}


def _measure_set(
    name: str, plan: _Plan, seed: int, methods: dict[str, Method], srcs: Sequence[data.Source],
    progress: Progress | None, skipped: list[dict[str, Any]],
) -> list[dict[str, Any]]:
    """Every image of set ``name`` measured with every method."""
    draws = DRAWS[name](plan, seed, srcs, skipped)
    counter = _Counter(progress, name, len(draws))
    records = []
    for draw in draws:
        records.append(_measure(draw, methods, plan.size))
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


