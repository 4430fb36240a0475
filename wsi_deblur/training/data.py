"""Training and evaluation data: real in-focus tissue, blurred with the physical model of :mod:`..physics`.

No public focal stack of brightfield slides is both small and redistributable, so blurred/sharp pairs are
synthesised: a crop of real, in-focus tissue is the sharp image, and the same crop blurred by a defocus PSF of
randomly drawn optics and/or a motion line, with camera noise and JPEG like a scanner's tiles, is the input.

The real tissue, its splits and the crops drawn from it are in :mod:`.sources`.

The blurring itself (pools of defocus PSFs, valid convolution in linear light, noise and JPEG) is in
:mod:`.blurring`.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from .. import physics
from .._types import LABELS
from .blurring import (
    _check_optics,
    _draw_optics,
    _finest_mpp,
    _log_uniform,
    _pool_size,
    _Psf,
    _psf_pool,
    _sample,
)
from .sources import (
    CATALOGUE,
    EXCLUDED,
    MAX_UPSAMPLE,
    SPLITS,
    SUPPORTED_MPP,
    Source,
    data_dir,
    load_sources,
    random_crop,
    sources,
)

__all__ = [
    "CATALOGUE",
    "EXCLUDED",
    "KINDS",
    "MAX_UPSAMPLE",
    "SPLITS",
    "SUPPORTED_MPP",
    "Source",
    "classification_set",
    "data_dir",
    "evaluation_grid",
    "load_sources",
    "random_crop",
    "restoration_pairs",
    "sources",
]

#: The kinds of restoration pairs, one per restoration network.
KINDS: tuple[str, ...] = ("defocus", "motion")
#: Defocus of the "defocus" pairs, |z| in DOF at the drawn optics (both signs): a little beyond the
#: classifier's defocus class (>= 1 DOF) on both ends, so the restorer also sees the band below it.
RESTORE_Z_DOF = (0.5, 4.5)
#: Fraction of the blurred "defocus" pairs with defocus past that, |z| log-uniform in :data:`RESTORE_FAR_Z_DOF`
#: DOF: a fold can lie 10-20 um off focus, and the classifier calls such defocus blurred. Little detail comes back
#: from there, but a network that has seen it sharpens it less into artefacts (DL_defocus 2.1.0: see the
#: CHANGELOG).
RESTORE_FAR_FRACTION = 0.15
RESTORE_FAR_Z_DOF = (4.5, 15.0)
#: Motion of the "motion" pairs in pixels (the paper: 5-40 px; a little wider on both ends), drawn
#: log-uniformly: blur acts on a log scale, and uniform lengths left 5-7 px, where the Wiener estimate the
#: network refines is already close, to one pair in ten (log-uniform: three in ten).
RESTORE_MOTION_PX = (3.0, 45.0)
#: JPEG qualities of the restoration inputs (scanners write 70-95; the targets are never compressed).
RESTORE_JPEG = (75, 98)
#: Fraction of restoration pairs without any blur (input = target + noise + JPEG): the networks learn to leave
#: sharp tissue alone.
NO_BLUR_FRACTION = 0.1
#: Fraction of blurred pairs with a little of the other blur, as real scans have: motion pairs with defocus up
#: to :data:`RESIDUAL_Z_DOF`, defocus pairs with motion up to :data:`RESIDUAL_MOTION_PX`.
RESIDUAL_FRACTION = 0.3
RESIDUAL_Z_DOF = physics.IN_FOCUS_MAX_Z_DOF
RESIDUAL_MOTION_PX = physics.STILL_MAX_MOTION_PX
#: Fraction of blurred motion pairs that are mixed blur, defocus |z| in :data:`UNDER_DEFOCUS_Z_DOF`: their
#: target keeps the defocus (the crop through the same PSF, without noise or JPEG). Mixed blur is restored by
#: DL_motion, then DL_defocus, so DL_motion must take the motion out of defocused tissue and leave the
#: defocus to the next network; trained on sharp targets only, it invents detail in strongly defocused tissue
#: and the second network makes that worse.
UNDER_DEFOCUS_FRACTION = 0.3
UNDER_DEFOCUS_Z_DOF = (physics.DEFOCUS_MIN_Z_DOF, 4.5)
#: Fraction of those with no motion to speak of (<= :data:`RESIDUAL_MOTION_PX`): defocus that the classifier
#: calls mixed also goes through DL_motion first, which must then hand it on unchanged.
UNDER_DEFOCUS_STILL_FRACTION = 0.3
#: JPEG qualities of the classification tiles (DESIGN.md's evaluation range).
CLASSIFY_JPEG = (80, 95)
#: Defocus |z| in DOF and motion in px of the blurred classification tiles, both drawn log-uniformly (blur acts
#: on a log scale): the mildest blur of each class, where it is hardest to tell from in focus, gets a good share
#: of its class, 1-1.5 DOF about a quarter of the defocused tiles and 5-10 px a third of the moving ones (uniform
#: draws gave 5-10 px one in seven, and a 5 px motion at 20x went unseen). Defocus goes
#: to 6 DOF, past the evaluation grid's 4: the defocus class has no upper bound, a fold can lie 10 um off focus
#: at 20x (6 DOF), and when training stopped at 4 DOF the classifier learnt "blurrier than any defocus tile" as
#: the sign of mixed blur and called 4 DOF of pure defocus mixed, instead of looking for the streak motion adds.
CLASSIFY_Z_DOF = (physics.DEFOCUS_MIN_Z_DOF, 6.0)
CLASSIFY_MOTION_PX = (physics.MOTION_MIN_PX, 40.0)
#: Fraction of moving classification tiles whose motion runs along a stage axis (0 or 90 degrees, give or take
#: :data:`AXIS_MOTION_JITTER_DEG`); the others move at any angle. A scanner's stage and line sensor move along
#: its axes, so that is where its motion blur lies; and a short motion along an axis is the hardest to see, as
#: scanned tissue is often a little softer along one axis than the other already (a 5 px motion along the
#: sharper axis of the held-out scans only evens them out).
AXIS_MOTION_FRACTION = 0.5
AXIS_MOTION_JITTER_DEG = 5.0
#: Fraction of in-focus classification tiles taken as they are (noise and JPEG only): the sources are real
#: in-focus scans, the rest of the class goes through the optics at |z| <= DOF/2 and motion <= 2 px.
AS_SCANNED_FRACTION = 0.25
#: Optics of the evaluation grid (DESIGN.md), by name.
EVAL_OPTICS: tuple[tuple[str, physics.Optics], ...] = (
    ("PAPER_10X", physics.PAPER_10X),
    ("SCANNER_20X", physics.SCANNER_20X),
    ("SCANNER_40X", physics.SCANNER_40X),
)
#: Mixed blur in the evaluation grid (not part of DESIGN.md's grid; a small set to score the mixed class).
EVAL_MIXED_Z_DOF: tuple[float, ...] = (1.5, 3.0)
EVAL_MIXED_MOTION_PX: tuple[float, ...] = (10.0, 30.0)



def restoration_pairs(
    kind: str,
    n: int,
    size: int,
    seed: int,
    split: str = "train",
    *,
    n_psfs: int | None = None,
    optics: Sequence[physics.Optics] | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``n`` blurred inputs and sharp targets, (n, size, size, 3) uint8 each, and each pair's parameters.

    ``kind`` "defocus": defocus |z| in 0.5-4.5 DOF on either side at random optics (15% of pairs 4.5-15 DOF,
    log-uniform), with motion <= 2 px in 30% of pairs. "motion": motion 3-45 px (log-uniform) at any angle, with
    defocus <= 0.5 DOF in 30% of pairs and defocus 1-4.5 DOF in another 30% (mixed blur, or defocus with motion
    <= 2 px in 30% of those, whose target keeps the defocus: see :data:`UNDER_DEFOCUS_FRACTION`).
    Both: camera noise and JPEG 75-98 on the input; 10% of pairs are not blurred (input = target + noise +
    JPEG). The target is otherwise the clean crop. ``n_psfs`` defocus PSFs are drawn and shared (default: one
    per 32 pairs), at optics from :func:`physics.random_optics` or, when given, from ``optics``. Deterministic
    for a seed.
    """
    if kind not in KINDS:
        raise ValueError(f"restoration_pairs: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if n < 1 or size < 8:
        raise ValueError(f"restoration_pairs: need n >= 1 and size >= 8, got n={n}, size={size}")
    srcs = sources(split)
    rng = np.random.default_rng(seed)
    finest = _finest_mpp(srcs)
    _check_optics(optics, finest, "restoration_pairs")
    pool: list[_Psf] = []
    far: list[_Psf] = []  # defocus pairs past RESTORE_Z_DOF; motion pairs under strong defocus
    if kind == "defocus":
        pool = _psf_pool(rng, _pool_size(n, n_psfs), finest, RESTORE_Z_DOF, optics)
        count = math.ceil(n * (1 - NO_BLUR_FRACTION) * RESTORE_FAR_FRACTION)
        far = _psf_pool(rng, min(count, _pool_size(count, n_psfs)), finest, RESTORE_FAR_Z_DOF, optics, log=True)
    else:
        residual = math.ceil(n * (1 - NO_BLUR_FRACTION) * RESIDUAL_FRACTION)
        count = min(residual, _pool_size(residual, n_psfs))
        pool = _psf_pool(rng, count, finest, (0.0, RESIDUAL_Z_DOF), optics)
        under = math.ceil(n * (1 - NO_BLUR_FRACTION) * UNDER_DEFOCUS_FRACTION)
        far = _psf_pool(rng, min(under, _pool_size(under, n_psfs)), finest, UNDER_DEFOCUS_Z_DOF, optics)
    blurred = np.empty((n, size, size, 3), dtype=np.uint8)
    sharp = np.empty_like(blurred)
    params = []
    for i in range(n):
        jpeg = int(rng.integers(RESTORE_JPEG[0], RESTORE_JPEG[1] + 1))
        psf: _Psf | None = None
        motion, angle = 0.0, 0.0
        keep_defocus = False
        if rng.random() < NO_BLUR_FRACTION:
            mpp = _draw_optics(rng, finest, optics).mpp
        elif kind == "defocus":
            psfs = far if rng.random() < RESTORE_FAR_FRACTION else pool
            psf = psfs[int(rng.integers(len(psfs)))]
            mpp = psf.optics.mpp
            if rng.random() < RESIDUAL_FRACTION:
                motion = float(rng.uniform(0.0, RESIDUAL_MOTION_PX))
                angle = float(rng.uniform(0.0, 180.0))
        else:
            motion = _log_uniform(rng, RESTORE_MOTION_PX)
            angle = float(rng.uniform(0.0, 180.0))
            u = rng.random()
            if far and u < UNDER_DEFOCUS_FRACTION:
                psf, keep_defocus = far[int(rng.integers(len(far)))], True
                mpp = psf.optics.mpp
                if rng.random() < UNDER_DEFOCUS_STILL_FRACTION:
                    motion = float(rng.uniform(0.0, RESIDUAL_MOTION_PX))
            elif pool and u < UNDER_DEFOCUS_FRACTION + RESIDUAL_FRACTION:
                psf = pool[int(rng.integers(len(pool)))]
                mpp = psf.optics.mpp
            else:
                mpp = _draw_optics(rng, finest, optics).mpp
        x, y, p = _sample(rng, srcs, size, mpp, psf, motion, angle, jpeg, keep_defocus)
        blurred[i], sharp[i] = x, y
        params.append({"kind": kind, **p})
    return blurred, sharp, params


def classification_set(
    n: int,
    size: int,
    seed: int,
    split: str = "train",
    *,
    n_psfs: int | None = None,
    optics: Sequence[physics.Optics] | None = None,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """``n`` tiles balanced over :data:`LABELS`: (tiles uint8 (n, size, size, 3), label indices (n,), mpp
    float32 (n,), parameters). Blurs come from :func:`physics.sample_spec` (never from the bands between
    classes): in-focus and motion tiles have |z| <= DOF/2, defocus and mixed |z| 1-6 DOF (log-uniform,
    :data:`CLASSIFY_Z_DOF`) at random optics; in-focus and defocus tiles move <= 2 px, motion and mixed 5-40 px
    (log-uniform, :data:`CLASSIFY_MOTION_PX`), half of them along a stage axis (:data:`AXIS_MOTION_FRACTION`),
    the rest at any angle. A quarter of the in-focus
    tiles are the sources as scanned. Camera noise and JPEG 80-95 on all. ``n_psfs`` and ``optics`` as in
    :func:`restoration_pairs`. Deterministic for a seed."""
    if n < 1 or size < 8:
        raise ValueError(f"classification_set: need n >= 1 and size >= 8, got n={n}, size={size}")
    srcs = sources(split)
    rng = np.random.default_rng(seed)
    finest = _finest_mpp(srcs)
    _check_optics(optics, finest, "classification_set")
    labels = np.resize(np.arange(len(LABELS)), n)
    rng.shuffle(labels)
    far = int(np.sum((labels == LABELS.index("defocus")) | (labels == LABELS.index("mixed"))))
    total = _pool_size(n, n_psfs)
    n_far = min(far, max(1, round(total * far / n))) if far else 0
    n_near = min(n - far, max(1, total - n_far)) if n > far else 0
    pools = {
        "far": _psf_pool(rng, n_far, finest, CLASSIFY_Z_DOF, optics, log=True),
        "near": _psf_pool(rng, n_near, finest, (0.0, physics.IN_FOCUS_MAX_Z_DOF), optics),
    }
    tiles = np.empty((n, size, size, 3), dtype=np.uint8)
    mpps = np.empty(n, dtype=np.float32)
    params = []
    for i, index in enumerate(labels):
        label = LABELS[int(index)]
        spec = physics.sample_spec(label, rng)
        jpeg = int(rng.integers(CLASSIFY_JPEG[0], CLASSIFY_JPEG[1] + 1))
        psf: _Psf | None
        angle = spec.motion_angle
        if label == "in_focus" and rng.random() < AS_SCANNED_FRACTION:
            psf, motion, mpp = None, 0.0, _draw_optics(rng, finest, optics).mpp
        else:
            # the spec's z is replaced by a pool PSF's, and a motion of the moving classes is drawn again, both
            # over the spec's ranges but log-uniformly; the label stays the same
            pool = pools["far" if abs(spec.z_dof) >= physics.DEFOCUS_MIN_Z_DOF else "near"]
            psf, motion = pool[int(rng.integers(len(pool)))], spec.motion_px
            if motion >= physics.MOTION_MIN_PX:
                motion = _log_uniform(rng, CLASSIFY_MOTION_PX)
                if rng.random() < AXIS_MOTION_FRACTION:
                    jitter = rng.uniform(-AXIS_MOTION_JITTER_DEG, AXIS_MOTION_JITTER_DEG)
                    angle = float((90.0 * rng.integers(2) + jitter) % 180.0)
            mpp = psf.optics.mpp
        tile, _, p = _sample(rng, srcs, size, mpp, psf, motion, angle, jpeg)
        if p["label"] != label:
            raise AssertionError(f"classification_set: drew {p['label']} for {label}")
        tiles[i] = tile
        mpps[i] = p["mpp"]
        params.append(p)
    return tiles, labels.astype(np.int64), mpps, params


# ----------------------------------------------------------------------------------------------------
# Evaluation grid


def evaluation_grid(split: str = "test") -> Iterator[dict[str, Any]]:
    """The evaluation grid of DESIGN.md for each of PAPER_10X, SCANNER_20X and SCANNER_40X: in focus; defocus
    at :data:`physics.EVAL_Z_DOF` on both sides; motion :data:`physics.EVAL_MOTION_PX` at
    :data:`physics.EVAL_ANGLES`; a small mixed set; each at every :data:`physics.EVAL_JPEG` quality.

    Yields dicts (no pixels): ``optics_name``, ``optics``, ``spec`` (:class:`physics.BlurSpec`), ``label``,
    ``z_um``, ``jpeg_quality``, ``split``, ``sources`` (names) and ``max_upsample``, the upsampling
    :func:`random_crop` must be allowed to make crops at the optics' pixel size from the split's sources (more
    than :data:`MAX_UPSAMPLE` at 40x: those crops are softer than a real 40x scan).
    """
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    names = SPLITS[split]
    native = min(e.mpp for e in CATALOGUE if e.name in names)
    specs: list[physics.BlurSpec] = [physics.BlurSpec(0.0, 0.0)]
    specs += [physics.BlurSpec(s * z, 0.0) for z in physics.EVAL_Z_DOF for s in (1.0, -1.0)]
    specs += [physics.BlurSpec(0.0, m, a) for m in physics.EVAL_MOTION_PX for a in physics.EVAL_ANGLES]
    specs += [
        physics.BlurSpec(s * z, m, a)
        for z in EVAL_MIXED_Z_DOF
        for s in (1.0, -1.0)
        for m in EVAL_MIXED_MOTION_PX
        for a in physics.EVAL_ANGLES
    ]
    for name, optics in EVAL_OPTICS:
        upsample = max(MAX_UPSAMPLE, native / optics.mpp)
        for spec in specs:
            for quality in physics.EVAL_JPEG:
                yield {
                    "optics_name": name, "optics": optics, "spec": spec, "label": spec.label,
                    "z_um": spec.z_um(optics), "jpeg_quality": quality, "split": split, "sources": names,
                    "max_upsample": upsample,
                }
