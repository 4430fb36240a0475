"""Classical restoration: the PSF fitted to the region's spectrum, then a Wiener filter in linear light.

Each candidate PSF (a line of a given length and angle for motion, a disc of a given radius for defocus) is
scored by how well a power-law signal blurred by it, plus power-law noise, fits the spectrum of the central
part of the region (:func:`.classical_features._power_spectrum`); the best one and its fitted noise-to-signal
ratio define the Wiener filter.
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from .classical_features import _BLOCK, _grid, _power_spectrum, _usable

# ----------------------------------------------------------------------------------------------------------
# PSF estimation and deconvolution

#: Side of the central square the PSF is estimated on: large enough for a stable spectrum (49 half-overlapping
#: 128-px blocks), and the same for every region at least this big that shares the centre.
_ESTIMATE_SIZE = 512
#: Defocus candidates: radius in pixels of a disc PSF. Defocus of 1 to 4 DOF (the evaluation grid) blurs
#: over a disc of radius about 2 to 16 px at every pixel size scanners use (the blur radius at z DOF is about
#: z * (lambda / NA + mpp) / mpp); steps of ~15% are finer than the spectrum fit can tell apart.
_DEFOCUS_RADII: tuple[float, ...] = tuple(float(r) for r in np.round(np.geomspace(0.75, 16.0, 22), 2))
#: Power-law exponents tried for the tissue's spectrum (natural images: about 2; tissue: 1.5 to 3.5).
_BETAS: tuple[float, ...] = (1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0)
#: Wiener regularisation: multiplies the fitted noise-to-signal ratio; above 1 trades a little sharpness for
#: less ringing and noise amplification. With _NSR_FLOOR, tied for the best mean SSIM gain of the settings
#: tried by ``benchmarks/calibrate_classical.py --sweep`` (reg 0.5-4, floor 1e-3 to 4e-2).
_WIENER_REG = 2.0
#: Fraction of the Wiener kernel's absolute mass inside the halo. The tail beyond it oscillates in sign and
#: largely cancels: at 0.95, restoring a padded region and cropping differs from restoring a larger one by
#: less than 0.5 grey levels on average (tests/test_classical.py).
_REACH_MASS = 0.95
#: Lower bound of the Wiener noise-to-signal ratio: caps the gain at 1 / (2 sqrt(floor)).
_NSR_FLOOR = 1e-2
#: A scan's own blur at its own pixel size, as the radius of a disc (px): diffraction and the pixel aperture of a
#: scanner that samples near its optical cut-off. In-focus crops at 10x and 20x (training and held-out sources,
#: camera noise and JPEG 85) fit discs of 0.87-1.8 px, 1 DOF of defocus 2.08 px or more. A region whose
#: fitted disc is no wider has no defocus to undo, and the defocus step leaves it as it is:
#: deconvolving the scan's own blur sharpens in-focus tissue past what it was and amplifies its noise and JPEG
#: (SSIM 0.945 -> 0.859 at 20x when a false alarm sent it through DBMID's defocus route;
#: ``benchmarks/false_alarm_cost.py``). Subtracting this radius from wider fits (discs adding in quadrature) was
#: tried and cost 0.004-0.04 SSIM at 1-2 DOF.
_NATIVE_RADIUS = 1.8


def _disc_psf(radius: float) -> np.ndarray:
    """A uniform disc of ``radius`` px, anti-aliased by 8x8 sub-sampling; (k, k) float64, sums to 1."""
    half = int(np.ceil(radius)) + 1
    sub = 8
    coords = (np.arange((2 * half + 1) * sub) + 0.5) / sub - (half + 0.5)
    inside = (coords[:, None] ** 2 + coords[None, :] ** 2) <= max(radius, 0.5) ** 2
    psf = inside.reshape(2 * half + 1, sub, 2 * half + 1, sub).sum(axis=(1, 3)).astype(np.float64)
    return psf / psf.sum()


def _motion_kernel(length: float, angle: float) -> np.ndarray:
    from .. import physics

    return physics.motion_psf(length, angle).astype(np.float64)


def _otf(psf: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """rfft2 of ``psf`` (odd square, centred) with its centre moved to the origin of a ``shape`` array."""
    k = psf.shape[0]
    r = k // 2
    if k > min(shape):
        raise ValueError(f"classical: PSF of {k} px does not fit a {shape} frequency grid")
    pad = np.zeros(shape, dtype=np.float64)
    pad[:k, :k] = psf
    pad = np.roll(pad, (-r, -r), axis=(0, 1))
    return sfft.rfft2(pad, workers=fft_threads())


#: Polar bins the spectrum is fitted on: ring edges in FFT bins of a 128-px block (integer radii, about
#: geometric from 0.023 to 0.5 cycles/px; lower, the Hann window's leakage of the zero frequency dominates)
#: and orientation sectors of 7.5 degrees.
_RING_EDGES: tuple[int, ...] = tuple(int(v) for v in np.unique(np.round(np.geomspace(3, 64, 20))))
_FIT_SECTORS = 24
#: Grids of the signal-plus-noise model: noise spectrum N * f**-gamma (JPEG and the sRGB encoding tilt the
#: camera's white noise), and the noise-to-signal ratio N / A.
_GAMMAS: tuple[float, ...] = (0.0, 0.75, 1.5, 2.25, 3.0)
_NSR_RATIOS: np.ndarray = np.geomspace(1e-7, 1.0, 22)


@functools.cache
def _polar_index(block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Polar bin of every rfft2 bin (-1: unused), bin counts, ring centre frequencies and sector angles."""
    _, _, radius, angle = _grid(block)
    r_bins = radius * block
    ring = np.searchsorted(np.asarray(_RING_EDGES), r_bins, side="right") - 1
    ring[(r_bins < _RING_EDGES[0]) | (r_bins >= _RING_EDGES[-1])] = -1
    sector = np.floor(angle / (np.pi / _FIT_SECTORS)).astype(int) % _FIT_SECTORS
    index = np.where((ring >= 0) & _usable(block), ring * _FIT_SECTORS + sector, -1)
    n_rings = len(_RING_EDGES) - 1
    counts = np.bincount(index[index >= 0], minlength=n_rings * _FIT_SECTORS)
    sums = np.bincount(index[index >= 0], weights=radius[index >= 0], minlength=n_rings * _FIT_SECTORS)
    freq = sums / np.maximum(counts, 1)
    centres = (np.arange(_FIT_SECTORS) + 0.5) * 180.0 / _FIT_SECTORS
    return index, counts, freq, centres


def _to_polar(spectrum: np.ndarray) -> np.ndarray:
    """Mean of an rfft2-shaped array over each polar bin (flat, rings x sectors); empty bins are NaN."""
    index, counts, _, _ = _polar_index(spectrum.shape[0])
    sums = np.bincount(index[index >= 0], weights=spectrum[index >= 0], minlength=counts.size)
    return np.where(counts > 0, sums / np.maximum(counts, 1), np.nan)


@functools.cache
def _window_smoothing(block: int) -> np.ndarray:
    """|DFT|**2 of the Hann window (the spectrum estimate is the true one convolved with it), as rfft2."""
    k = np.zeros((block, block))
    taps = np.array([1.0, 4.0, 1.0]) / 6.0  # |DFT(Hann)|**2 is [1/16, 1/4, 1/16] at bins -1, 0, 1
    for i, a in enumerate(taps):
        for j, b in enumerate(taps):
            k[(i - 1) % block, (j - 1) % block] = a * b
    return sfft.rfft2(k, workers=1)


def _polar_otf2(psf: np.ndarray, block: int = _BLOCK) -> np.ndarray:
    """|OTF|**2 of ``psf`` as the Welch estimate sees it (smoothed by the window), on the polar bins."""
    full = np.abs(sfft.fft2(np.fft.ifftshift(_embed(psf, block)), workers=1)) ** 2
    smooth = sfft.irfft2(sfft.rfft2(full, workers=1) * _window_smoothing(block), s=(block, block), workers=1)
    return _to_polar(smooth[:, : block // 2 + 1])


def _embed(psf: np.ndarray, size: int) -> np.ndarray:
    """``psf`` (odd square) centred in a size x size array (cropped symmetrically when larger)."""
    k = psf.shape[0]
    out = np.zeros((size, size))
    if k > size:
        c = (k - size) // 2
        psf = psf[c : c + size, c : c + size]
        k = size
    o = size // 2 - k // 2
    out[o : o + k, o : o + k] = psf
    return out


@functools.cache
def _defocus_bank() -> np.ndarray:
    return np.stack([_polar_otf2(_disc_psf(r)) for r in _DEFOCUS_RADII])


#: Motion candidates: lengths (px, about 12% apart; the design's range is 5 to 40 px, with room on both sides)
#: and angles (degrees, 7.5 apart).
_MOTION_LENGTHS: tuple[float, ...] = tuple(float(v) for v in np.round(np.geomspace(4.0, 45.0, 21), 1))
_MOTION_ANGLES: tuple[float, ...] = tuple(float(a) for a in np.arange(0.0, 180.0, 7.5))


@functools.cache
def _motion_bank() -> np.ndarray:
    return np.stack(
        [_polar_otf2(_motion_kernel(length, angle)) for length in _MOTION_LENGTHS for angle in _MOTION_ANGLES]
    )


@dataclass(frozen=True)
class _Fit:
    """A fitted PSF candidate and the signal-plus-noise model of the spectrum: ``f**-beta`` signal, noise
    ``rho * f**-gamma`` relative to it."""

    index: int
    beta: float
    gamma: float
    rho: float


#: Candidates kept from the coarse pass of :func:`_fit_bank` for the full search.
_FIT_KEEP = 24


def _grid_scores(logp: np.ndarray, f: np.ndarray, h2: np.ndarray, betas: tuple[float, ...],
                 gammas: tuple[float, ...], rhos: np.ndarray) -> np.ndarray:
    """Score of every candidate (rows of ``h2``) at every (beta, gamma, rho) of the grids: (betas x gammas, C,
    R), float32. The score is the variance of the log residual (``A`` solved in closed form)."""
    out = []
    for beta in betas:
        sig = (f**-beta * h2).astype(np.float32)  # (C, B)
        for gamma in gammas:
            noise = (rhos[:, None] * (f**-gamma)[None, :]).astype(np.float32)  # (R, B)
            resid = logp - np.log(sig[:, None, :] + noise[None, :, :])  # (C, R, B)
            mean = resid.mean(axis=2)
            out.append(np.einsum("crb,crb->cr", resid, resid) / logp.size - mean * mean)
    return np.stack(out)


def _fit_bank(power_polar: np.ndarray, bank: np.ndarray) -> _Fit:
    """Best candidate of ``bank`` (candidates x polar bins of |OTF|**2) for the observed polar spectrum.

    Model: ``log P = log(A (f**-beta H2 + rho f**-gamma))`` with ``A`` solved in closed form (mean log
    residual) for every (beta, gamma, rho) on the grids; the score is the mean squared log residual. A bank
    larger than :data:`_FIT_KEEP` is first scored on every other point of each grid, and the full grids are
    searched for the best :data:`_FIT_KEEP` candidates of that pass only (the motion bank: about 14 times
    faster, and the same fit as the full search on the spectra checked).
    """
    _, _, freq, _ = _polar_index(_BLOCK)
    ok = np.isfinite(power_polar) & (power_polar > 0)
    logp = np.log(power_polar[ok]).astype(np.float32)
    f = freq[ok]
    h2 = np.maximum(bank[:, ok], 1e-12)  # (C, B)
    candidates = np.arange(len(bank))
    if len(bank) > _FIT_KEEP:
        coarse = _grid_scores(logp, f, h2, _BETAS[1::2], _GAMMAS[::2], _NSR_RATIOS[::2])
        candidates = np.sort(np.argsort(coarse.min(axis=(0, 2)), kind="stable")[:_FIT_KEEP])
    scores = _grid_scores(logp, f, h2[candidates], _BETAS, _GAMMAS, _NSR_RATIOS)  # (G, C, R)
    g, c, r = np.unravel_index(int(np.argmin(scores)), scores.shape)
    return _Fit(int(candidates[c]), _BETAS[g // len(_GAMMAS)], _GAMMAS[g % len(_GAMMAS)], float(_NSR_RATIOS[r]))


def _central(image: np.ndarray, size: int = _ESTIMATE_SIZE) -> np.ndarray:
    """The central ``size`` square (or the whole image along a shorter side)."""
    h, w = image.shape[:2]
    y0 = max(0, (h - size) // 2)
    x0 = max(0, (w - size) // 2)
    return image[y0 : y0 + min(h, size), x0 : x0 + min(w, size)]


def _estimate_spectrum(lin_gray: np.ndarray) -> np.ndarray:
    """Polar Welch spectrum of the central part of a linear-light grey image (what the PSF is fitted to)."""
    return _to_polar(_power_spectrum(_central(lin_gray), _BLOCK, max_blocks=49))


@functools.cache
def _radius_grid(shape: tuple[int, int]) -> np.ndarray:
    fy = sfft.fftfreq(shape[0])[:, None]
    fx = sfft.rfftfreq(shape[1])[None, :]
    return np.hypot(fy, fx)


def fft_threads() -> int:
    """Threads for the FFTs of a whole region (:func:`_wiener`): ``OMP_NUM_THREADS`` where set (Dask workers of
    the local cluster have 1, as they share the cores between them), else every core of this process. The
    transforms are split by rows and columns, so the result does not depend on the count."""
    value = os.environ.get("OMP_NUM_THREADS", "")
    if value.isdigit() and int(value) > 0:
        return int(value)
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def _wiener(lin: np.ndarray, psf: np.ndarray, fit: _Fit, pad: int) -> np.ndarray:
    """Wiener deconvolution of a linear-light (H, W, 3) image by ``psf`` with the fitted noise-to-signal ratio

    The filter is ``conj(H) / (|H|**2 + NSR(f))`` with ``NSR(f) = reg * rho * f**(beta - gamma)``, bounded
    below by :data:`_NSR_FLOOR` (which caps the gain and so the ringing and the filter's reach). The image is
    reflected by ``pad`` px on each side first, so that the periodic FFT does not wrap one border onto the
    other.
    """
    h, w = lin.shape[:2]
    padded = np.pad(lin, ((pad, pad), (pad, pad), (0, 0)), mode="symmetric")
    shape = (sfft.next_fast_len(h + 2 * pad, real=True), sfft.next_fast_len(w + 2 * pad, real=True))
    otf = _otf(psf, shape)
    freq = _radius_grid(shape)
    with np.errstate(divide="ignore"):
        nsr = _WIENER_REG * fit.rho * np.where(freq > 0, freq, np.inf) ** (fit.beta - fit.gamma)
    nsr = np.maximum(np.nan_to_num(nsr, posinf=0.0), _NSR_FLOOR)
    nsr[0, 0] = 0.0
    gain = (np.conj(otf) / (np.abs(otf) ** 2 + nsr)).astype(np.complex64)
    threads = fft_threads()
    spec = sfft.rfft2(padded.astype(np.float32, copy=False), s=shape, axes=(0, 1), workers=threads)
    spec *= gain[:, :, None]
    out = sfft.irfft2(spec, s=shape, axes=(0, 1), workers=threads)
    return np.asarray(out[pad : pad + h, pad : pad + w], dtype=np.float32)


def _reach(psf: np.ndarray) -> int:
    """Pixels from the centre holding :data:`_REACH_MASS` of the Wiener kernel of ``psf`` at the NSR floor."""
    n = 4 * _BLOCK
    otf = _otf(psf, (n, n))
    kernel = np.abs(np.fft.fftshift(sfft.irfft2(np.conj(otf) / (np.abs(otf) ** 2 + _NSR_FLOOR), s=(n, n))))
    yy, xx = np.indices(kernel.shape) - n // 2
    ring = np.maximum(np.abs(yy), np.abs(xx))
    cumulative = np.cumsum(np.bincount(ring.ravel(), weights=kernel.ravel())) / kernel.sum()
    return int(np.searchsorted(cumulative, _REACH_MASS)) + 1


@functools.cache
def _step_reach() -> dict[str, int]:
    """Reach of each restoration step for the largest PSF its estimator can return (any angle)."""
    motion = max(_reach(_motion_kernel(max(_MOTION_LENGTHS), a)) for a in (0.0, 22.5, 45.0))
    return {"motion": motion, "defocus": _reach(_disc_psf(max(_DEFOCUS_RADII)))}


def _inside(image: np.ndarray, margin: int) -> np.ndarray:
    """``image`` without ``margin`` px along each border, or its central :data:`_BLOCK` px along a side where
    less than that would be left (the Welch spectrum needs one block)."""
    h, w = image.shape[:2]
    keep_h = min(h, max(h - 2 * margin, _BLOCK))
    keep_w = min(w, max(w - 2 * margin, _BLOCK))
    y0, x0 = (h - keep_h) // 2, (w - keep_w) // 2
    return image[y0 : y0 + keep_h, x0 : x0 + keep_w]


def _restore_step(lin: np.ndarray, step: str, margin: int = 0) -> np.ndarray:
    """One deconvolution step on a linear-light RGB image; its PSF is estimated inside ``margin`` (context that
    may have been mirrored past an image's edge: a mirror turns a motion at 45 degrees into one at 135). A
    region that fits no blur beyond the scan's own (a disc within :data:`_NATIVE_RADIUS`, or the shortest motion
    line) comes back as it is."""
    gray = (0.2126 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.0722 * lin[..., 2]).astype(np.float32)
    power = _estimate_spectrum(_inside(gray, margin))
    if step == "motion":
        fit = _fit_bank(power, _motion_bank())
        length_index, angle_index = divmod(fit.index, len(_MOTION_ANGLES))
        if length_index == 0:
            # the shortest line, under the 5 px the motion class starts at: what in-focus tissue fits
            return lin
        psf = _motion_kernel(_MOTION_LENGTHS[length_index], _MOTION_ANGLES[angle_index])
    else:
        fit = _fit_bank(power, _defocus_bank())
        radius = _DEFOCUS_RADII[fit.index]
        if radius <= _NATIVE_RADIUS:
            # no wider than the scan's own blur: no defocus to undo
            return lin
        psf = _disc_psf(radius)
    return _wiener(lin, psf, fit, _step_reach()[step])
