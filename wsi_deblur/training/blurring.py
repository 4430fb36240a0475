"""Blurring real tissue for training and evaluation: defocus PSFs at random (or named) optics drawn in pools,
motion lines, valid convolution in linear light, camera noise and JPEG (what :mod:`.data`'s sets are made of).

**Cost.** Defocus PSFs of thick sections at random optics take 0.1-1.5 s each, so a call draws a pool of PSFs
(one per :data:`SAMPLES_PER_PSF` samples) and every sample picks one, with its own crop, motion, noise and
JPEG. Each sample blurs a crop larger than the output by the kernel's radius and keeps the centre ("valid"
convolution), so no border is invented.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy import fft as sfft

from .. import physics
from ..imaging import _camera_noise, _combine, _jpeg_roundtrip
from .sources import MAX_UPSAMPLE, SUPPORTED_MPP, Source, random_crop

#: One defocus PSF is drawn per this many samples (each costs 0.1-1.5 s; a crop, motion, noise and JPEG are
#: drawn per sample), between :data:`MIN_PSFS` and :data:`MAX_PSFS` per call unless the caller says otherwise.
SAMPLES_PER_PSF = 32
MIN_PSFS = 4
MAX_PSFS = 512
#: Random optics are redrawn until their pixel size can be made from the split's sources.
OPTICS_TRIES = 1000


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
    log: bool = False,
) -> list[_Psf]:
    """``count`` defocus PSFs at random optics, |z| uniform (``log``: log-uniform) in ``z_range`` DOF, signs
    alternating (from a random first one) so both sides of focus are in every pool of two or more."""
    pool = []
    first = 1.0 if rng.random() < 0.5 else -1.0
    for i in range(count):
        optics = _draw_optics(rng, finest_mpp, choices)
        size = _log_uniform(rng, z_range) if log else float(rng.uniform(*z_range))
        z = size * (first if i % 2 == 0 else -first)
        pool.append(_Psf(optics, z, physics.defocus_psf(optics, z * optics.dof_um)))
    return pool


def _log_uniform(rng: np.random.Generator, bounds: tuple[float, float]) -> float:
    """A number log-uniform in ``bounds`` (both positive): as many draws in [a, 2a] as in [2a, 4a]."""
    lo, hi = bounds
    if not 0.0 < lo <= hi:
        raise ValueError(f"_log_uniform: bounds must be positive and ordered, got {bounds}")
    return float(np.exp(rng.uniform(np.log(lo), np.log(hi))))


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
