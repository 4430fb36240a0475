"""Image formation: blurring in linear light (sRGB decoded, FFT convolution, sRGB encoded), then camera noise
and JPEG like a scanner's (:func:`degrade`). The PSFs come from :mod:`.optics`.
"""

from __future__ import annotations

import io
import math
from functools import lru_cache

import numpy as np
from PIL import Image
from scipy import fft as sfft

from .optics import Optics, defocus_psf, motion_psf

# Camera noise (Poisson-Gaussian). Scanner cameras (e.g. Sony IMX CMOS sensors, full well 10-30 ke-) are run
# with the white background near full scale; the photo-electrons at white are drawn per image over this range
# (exposure and gain differ between scanners), read noise is a few electrons.
FULL_SCALE_ELECTRONS = (5000.0, 30000.0)
READ_NOISE_ELECTRONS = 6.0


# ----------------------------------------------------------------------------------------------------
# Linear light and convolution


@lru_cache(maxsize=1)
def _decode_lut() -> np.ndarray:
    v = np.arange(256, dtype=np.float64) / 255.0
    lin = np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4)
    return lin.astype(np.float32)


#: Linear values are quantised to 16 bits before the sRGB encoding table (0.05 of an 8-bit step at worst).
_ENCODE_STEPS = 65535


@lru_cache(maxsize=1)
def _encode_lut() -> np.ndarray:
    lin = np.arange(_ENCODE_STEPS + 1, dtype=np.float64) / _ENCODE_STEPS
    v = np.where(lin <= 0.0031308, 12.92 * lin, 1.055 * lin ** (1 / 2.4) - 0.055)
    return np.clip(np.rint(v * 255.0), 0, 255).astype(np.uint8)


def srgb_to_linear(rgb: np.ndarray) -> np.ndarray:
    """Decode sRGB uint8 to linear light, float32 in [0, 1] (IEC 61966-2-1)."""
    if rgb.dtype != np.uint8:
        raise ValueError(f"srgb_to_linear: expected uint8, got {rgb.dtype}")
    return np.take(_decode_lut(), rgb)


def linear_to_srgb(lin: np.ndarray) -> np.ndarray:
    """Encode linear light (clipped to [0, 1]) to sRGB uint8."""
    idx = np.rint(np.clip(lin, 0.0, 1.0) * _ENCODE_STEPS).astype(np.int32)
    return _encode_lut()[idx]


def _check_rgb(rgb: np.ndarray, who: str) -> None:
    if rgb.dtype != np.uint8 or rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ValueError(f"{who}: expected an RGB uint8 image (H, W, 3), got {rgb.dtype} {rgb.shape}")


def _convolve_linear(lin: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Convolve a linear (H, W, 3) float image with a (k, k) or (k, k, 3) kernel; FFT, reflected borders."""
    if psf.ndim not in (2, 3) or psf.shape[0] != psf.shape[1] or psf.shape[0] % 2 == 0:
        raise ValueError(f"blur: psf must be (k, k) or (k, k, 3) with k odd, got {psf.shape}")
    if psf.ndim == 3 and psf.shape[2] != 3:
        raise ValueError(f"blur: a per-channel psf must have 3 channels, got {psf.shape}")
    k = psf.shape[0]
    if k == 1:
        return (lin * psf.reshape(1, 1, -1)).astype(np.float32)
    r = k // 2
    h, w = lin.shape[:2]
    padded = np.pad(lin, ((r, r), (r, r), (0, 0)), mode="reflect")
    fh = sfft.next_fast_len(h + 2 * r, real=True)
    fw = sfft.next_fast_len(w + 2 * r, real=True)
    kernels = psf[:, :, None] if psf.ndim == 2 else psf
    out = np.empty((h, w, 3), dtype=np.float32)
    kspec = None
    for ch in range(3):
        if kspec is None or kernels.shape[2] == 3:
            kpad = np.zeros((fh, fw), dtype=np.float32)
            kpad[:k, :k] = kernels[:, :, min(ch, kernels.shape[2] - 1)]
            kpad = np.roll(kpad, (-r, -r), axis=(0, 1))  # kernel centre at the origin
            kspec = sfft.rfft2(kpad)
        spec = sfft.rfft2(padded[:, :, ch], s=(fh, fw))
        res = sfft.irfft2(spec * kspec, s=(fh, fw))
        out[:, :, ch] = res[r : r + h, r : r + w]
    return out


def blur(rgb: np.ndarray, psf: np.ndarray) -> np.ndarray:
    """Blur an RGB uint8 image with ``psf`` ((k, k) for all channels or (k, k, 3) per channel) in linear
    light: sRGB decode, FFT convolution with reflected borders, sRGB encode. Returns RGB uint8, same shape."""
    _check_rgb(rgb, "blur")
    return linear_to_srgb(_convolve_linear(srgb_to_linear(rgb), np.asarray(psf, dtype=np.float32)))


# ----------------------------------------------------------------------------------------------------
# Scanner degradation


def _combine(defocus: np.ndarray, motion: np.ndarray) -> np.ndarray:
    """Full convolution of a (k, k, 3) defocus PSF with an (m, m) motion kernel (k + m - 1 wide)."""
    k, m = defocus.shape[0], motion.shape[0]
    n = k + m - 1
    shape = (sfft.next_fast_len(n, real=True),) * 2
    ms = sfft.rfft2(motion, s=shape)
    out = np.empty((n, n, 3), dtype=np.float32)
    for ch in range(3):
        out[:, :, ch] = sfft.irfft2(sfft.rfft2(defocus[:, :, ch], s=shape) * ms, s=shape)[:n, :n]
    return out / out.sum(axis=(0, 1), keepdims=True)


def _camera_noise(lin: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    lo, hi = FULL_SCALE_ELECTRONS
    full = float(np.exp(rng.uniform(math.log(lo), math.log(hi))))
    electrons = rng.poisson(np.clip(lin, 0.0, 1.0).astype(np.float64) * full).astype(np.float32)
    electrons += rng.normal(0.0, READ_NOISE_ELECTRONS, size=lin.shape).astype(np.float32)
    return electrons / np.float32(full)


def _jpeg_roundtrip(rgb: np.ndarray, quality: int) -> np.ndarray:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="JPEG", quality=quality)  # 4:2:0 chroma, like most scanners' tiles
    buf.seek(0)
    with Image.open(buf) as im:
        return np.asarray(im.convert("RGB"), dtype=np.uint8).copy()


def degrade(
    rgb: np.ndarray,
    optics: Optics,
    z_um: float = 0.0,
    motion_px: float = 0.0,
    motion_angle: float = 0.0,
    *,
    noise: bool = True,
    jpeg_quality: int | None = None,
    rng: np.random.Generator | None = None,
) -> np.ndarray:
    """Image ``rgb`` (RGB uint8, taken to be sampled at ``optics.mpp``) as a scanner would record it at focus
    offset ``z_um`` while moving ``motion_px`` pixels at ``motion_angle`` degrees.

    The defocus PSF (including the in-focus PSF at z = 0: the optics' own resolution) and the motion line are
    combined into one kernel and applied in linear light; then, with ``noise``, Poisson shot noise (5,000 to
    30,000 photo-electrons at white, drawn per image) and Gaussian read noise (6 e-); then 8-bit sRGB
    encoding and, with ``jpeg_quality``, a JPEG round trip. Deterministic for a given ``rng`` state.
    """
    _check_rgb(rgb, "degrade")
    if jpeg_quality is not None and not 1 <= jpeg_quality <= 100:
        raise ValueError(f"degrade: jpeg_quality must be 1-100 or None, got {jpeg_quality}")
    if rng is None:
        rng = np.random.default_rng()
    kernel = defocus_psf(optics, z_um)
    if motion_px > 0.0:
        kernel = _combine(kernel, motion_psf(motion_px, motion_angle))
    lin = _convolve_linear(srgb_to_linear(rgb), kernel)
    if noise:
        lin = _camera_noise(lin, rng)
    out = linear_to_srgb(lin)
    if jpeg_quality is not None:
        out = _jpeg_roundtrip(out, jpeg_quality)
    return out
