"""Training and evaluation data: real in-focus tissue, blurred with the physical model of :mod:`..physics`.

No public focal stack of brightfield slides is both small and redistributable, so blurred/sharp pairs are
synthesised: a crop of real, in-focus tissue is the sharp image, and the same crop blurred by a defocus PSF of
randomly drawn optics and/or a motion line, with camera noise and JPEG like a scanner's tiles, is the input.

The real tissue, its splits and the crops drawn from it are in :mod:`.sources`.

**Cost.** Defocus PSFs of thick sections at random optics take 0.1-1.5 s each, so a call draws a pool of PSFs
(one per :data:`SAMPLES_PER_PSF` samples) and every sample picks one, with its own crop, motion, noise and
JPEG. Each sample blurs a crop larger than the output by the kernel's radius and keeps the centre ("valid"
convolution), so no border is invented.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft

from .. import physics
from .._types import LABELS
from ..imaging import _camera_noise, _combine, _jpeg_roundtrip
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
#: Motion of the "motion" pairs in pixels (the paper: 5-40 px; a little wider on both ends).
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
#: Fraction of in-focus classification tiles taken as they are (noise and JPEG only): the sources are real
#: in-focus scans, the rest of the class goes through the optics at |z| <= DOF/2 and motion <= 2 px.
AS_SCANNED_FRACTION = 0.25
#: One defocus PSF is drawn per this many samples (each costs 0.1-1.5 s; a crop, motion, noise and JPEG are
#: drawn per sample), between :data:`MIN_PSFS` and :data:`MAX_PSFS` per call unless the caller says otherwise.
SAMPLES_PER_PSF = 32
MIN_PSFS = 4
MAX_PSFS = 512
#: Random optics are redrawn until their pixel size can be made from the split's sources.
OPTICS_TRIES = 1000

#: Optics of the evaluation grid (DESIGN.md), by name.
EVAL_OPTICS: tuple[tuple[str, physics.Optics], ...] = (
    ("PAPER_10X", physics.PAPER_10X),
    ("SCANNER_20X", physics.SCANNER_20X),
    ("SCANNER_40X", physics.SCANNER_40X),
)
#: Mixed blur in the evaluation grid (not part of DESIGN.md's grid; a small set to score the mixed class).
EVAL_MIXED_Z_DOF: tuple[float, ...] = (1.5, 3.0)
EVAL_MIXED_MOTION_PX: tuple[float, ...] = (10.0, 30.0)



# ----------------------------------------------------------------------------------------------------
# Blurring


def _finest_mpp(srcs: Sequence[Source]) -> float:
    return max(SUPPORTED_MPP[0], min(s.mpp for s in srcs) / MAX_UPSAMPLE)


def _draw_optics(
    rng: np.random.Generator, finest_mpp: float, choices: Sequence[physics.Optics] | None = None
) -> physics.Optics:
    """Random optics (:func:`physics.random_optics`, or one of ``choices``) at a pixel size the sources can be
    resampled to."""
    if choices is not None:
        return choices[int(rng.integers(len(choices)))]
    for _ in range(OPTICS_TRIES):
        optics = physics.random_optics(rng)
        if optics.mpp >= finest_mpp:
            return optics
    raise ValueError(f"no random optics at {finest_mpp:.3f} um/px or coarser in {OPTICS_TRIES} draws")


@dataclass(frozen=True)
class _Psf:
    optics: physics.Optics
    z_dof: float
    kernel: np.ndarray  # (k, k, 3) float32


def _psf_pool(
    rng: np.random.Generator,
    count: int,
    finest_mpp: float,
    z_range: tuple[float, float],
    choices: Sequence[physics.Optics] | None,
) -> list[_Psf]:
    """``count`` defocus PSFs at random optics, |z| uniform in ``z_range`` DOF, signs alternating (from a
    random first one) so both sides of focus are in every pool of two or more."""
    pool = []
    first = 1.0 if rng.random() < 0.5 else -1.0
    for i in range(count):
        optics = _draw_optics(rng, finest_mpp, choices)
        z = float(rng.uniform(*z_range)) * (first if i % 2 == 0 else -first)
        pool.append(_Psf(optics, z, physics.defocus_psf(optics, z * optics.dof_um)))
    return pool


def _check_optics(choices: Sequence[physics.Optics] | None, finest_mpp: float, who: str) -> None:
    if choices is None:
        return
    if not choices:
        raise ValueError(f"{who}: optics is empty; pass None for random optics")
    for o in choices:
        if o.mpp < finest_mpp - 1e-9:
            raise ValueError(
                f"{who}: optics at {o.mpp} um/px is finer than the sources allow ({finest_mpp:.3f} um/px "
                f"with upsampling limited to {MAX_UPSAMPLE})"
            )


def _pool_size(n: int, n_psfs: int | None) -> int:
    if n_psfs is not None:
        if n_psfs < 1:
            raise ValueError(f"n_psfs must be positive, got {n_psfs}")
        return n_psfs
    return int(np.clip(math.ceil(n / SAMPLES_PER_PSF), MIN_PSFS, MAX_PSFS))


def _kernel(psf: np.ndarray | None, motion_px: float, angle: float) -> np.ndarray | None:
    """The defocus PSF and/or motion line as one (k, k, 3) kernel; None for no blur."""
    line = physics.motion_psf(motion_px, angle) if motion_px > 0 else None
    if psf is None:
        return None if line is None else np.repeat(line[:, :, None], 3, axis=2)
    return psf if line is None else _combine(psf, line)


def _valid_convolve(lin: np.ndarray, kernel: np.ndarray) -> np.ndarray:
    """Convolve (H + 2r, W + 2r, 3) linear light with a (2r + 1, 2r + 1, 3) kernel; keep the (H, W) centre.

    With the kernel centred on the FFT origin, output pixels at least r from the border never wrap around.
    """
    k = kernel.shape[0]
    r = k // 2
    hp, wp = lin.shape[:2]
    fh = sfft.next_fast_len(hp, real=True)
    fw = sfft.next_fast_len(wp, real=True)
    out = np.empty((hp - 2 * r, wp - 2 * r, 3), dtype=np.float32)
    for ch in range(3):
        kpad = np.zeros((fh, fw), dtype=np.float32)
        kpad[:k, :k] = kernel[:, :, ch]
        kpad = np.roll(kpad, (-r, -r), axis=(0, 1))
        res = sfft.irfft2(sfft.rfft2(lin[:, :, ch], s=(fh, fw)) * sfft.rfft2(kpad), s=(fh, fw))
        out[:, :, ch] = res[r : hp - r, r : wp - r]
    return out


def _scan(padded: np.ndarray, kernel: np.ndarray | None, rng: np.random.Generator, jpeg: int) -> np.ndarray:
    """What a scanner records of ``padded`` (sharp, sRGB uint8) through ``kernel``: the centre, blurred in
    linear light (as :func:`physics.degrade` does), with its camera noise and JPEG."""
    lin = physics.srgb_to_linear(padded)
    if kernel is not None:
        lin = _valid_convolve(lin, kernel)
    lin = _camera_noise(lin, rng)
    return _jpeg_roundtrip(physics.linear_to_srgb(lin), jpeg)


def _optics_dict(optics: physics.Optics | None) -> dict[str, Any] | None:
    if optics is None:
        return None
    return {"na": optics.na, "mpp": optics.mpp, "thickness_um": optics.thickness_um, "sigma": optics.sigma,
            "zernike": list(optics.zernike), "dof_um": optics.dof_um}


def _sample(
    rng: np.random.Generator,
    srcs: Sequence[Source],
    size: int,
    mpp: float,
    psf: _Psf | None,
    motion_px: float,
    angle: float,
    jpeg: int,
    keep_defocus: bool = False,
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One (input, target, parameters) triple. The target is the sharp crop or, with ``keep_defocus``, the
    crop through ``psf`` alone in linear light (no motion, noise or JPEG)."""
    kernel = _kernel(None if psf is None else psf.kernel, motion_px, angle)
    r = 0 if kernel is None else kernel.shape[0] // 2
    padded, src, crop_mpp = random_crop(rng, srcs, size + 2 * r, mpp)
    sharp = padded[r : r + size, r : r + size]
    if keep_defocus and psf is not None:
        sharp = _defocused(padded, psf.kernel, r)
    blurred = _scan(padded, kernel, rng, jpeg)
    z_dof = 0.0 if psf is None else psf.z_dof
    optics = None if psf is None else psf.optics
    params: dict[str, Any] = {
        "source": src.name, "stain": src.stain, "mpp": crop_mpp, "blurred": kernel is not None,
        "z_dof": z_dof, "z_um": 0.0 if optics is None else z_dof * optics.dof_um,
        "motion_px": motion_px, "motion_angle": angle, "jpeg_quality": jpeg, "kernel_px": 2 * r + 1,
        "optics": _optics_dict(optics), "label": physics.class_label(z_dof, motion_px),
        "target_z_dof": z_dof if keep_defocus and psf is not None else 0.0,
    }
    return blurred, np.ascontiguousarray(sharp), params


def _defocused(padded: np.ndarray, psf: np.ndarray, r: int) -> np.ndarray:
    """The centre of ``padded`` (sRGB uint8, ``r`` pixels of margin) through ``psf`` alone, in linear light."""
    pad = r - psf.shape[0] // 2
    if pad < 0:
        raise ValueError(f"_defocused: a PSF of {psf.shape[0]} px needs a margin of {psf.shape[0] // 2}, got {r}")
    kernel = np.pad(psf, ((pad, pad), (pad, pad), (0, 0)))
    return physics.linear_to_srgb(_valid_convolve(physics.srgb_to_linear(padded), kernel))


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

    ``kind`` "defocus": defocus |z| in 0.5-4.5 DOF on either side at random optics, with motion <= 2 px in 30%
    of pairs. "motion": motion 3-45 px at any angle, with defocus <= 0.5 DOF in 30% of pairs and defocus
    1-4.5 DOF in another 30% (mixed blur, or defocus with motion <= 2 px in 30% of those, whose target keeps
    the defocus: see :data:`UNDER_DEFOCUS_FRACTION`).
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
    far: list[_Psf] = []  # motion pairs under strong defocus
    if kind == "defocus":
        pool = _psf_pool(rng, _pool_size(n, n_psfs), finest, RESTORE_Z_DOF, optics)
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
            psf = pool[int(rng.integers(len(pool)))]
            mpp = psf.optics.mpp
            if rng.random() < RESIDUAL_FRACTION:
                motion = float(rng.uniform(0.0, RESIDUAL_MOTION_PX))
                angle = float(rng.uniform(0.0, 180.0))
        else:
            motion = float(rng.uniform(*RESTORE_MOTION_PX))
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
    classes): in-focus and motion tiles have |z| <= DOF/2, defocus and mixed |z| 1-4 DOF at random optics;
    in-focus and defocus tiles move <= 2 px, motion and mixed 5-40 px, at any angle. A quarter of the in-focus
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
    z_far = (physics.DEFOCUS_MIN_Z_DOF, 4.0)  # sample_spec's default range
    pools = {
        "far": _psf_pool(rng, n_far, finest, z_far, optics),
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
        if label == "in_focus" and rng.random() < AS_SCANNED_FRACTION:
            psf, motion, mpp = None, 0.0, _draw_optics(rng, finest, optics).mpp
        else:
            # the spec's z is replaced by a pool PSF's, drawn from the same range; the label stays the same
            pool = pools["far" if abs(spec.z_dof) >= physics.DEFOCUS_MIN_Z_DOF else "near"]
            psf, motion = pool[int(rng.integers(len(pool)))], spec.motion_px
            mpp = psf.optics.mpp
        tile, _, p = _sample(rng, srcs, size, mpp, psf, motion, spec.motion_angle, jpeg)
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
