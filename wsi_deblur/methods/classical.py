"""The classical method: blur classes from image statistics, restoration by blind Wiener deconvolution.

This is the comparison method of the DBMID paper and the reference in every benchmark. Nothing is learnt
beyond a small softmax over spectral features.

Classification works on the power spectrum of the tile's linear-light luminance, averaged over Hann-windowed
blocks (Welch's method), so that it is blind (no reference image) and independent of contrast:

* *sharpness*: energy in rising frequency bands relative to the lowest band (defocus and motion both remove
  high frequencies, and ratios do not change with stain intensity);
* *anisotropy*: motion along a direction removes the frequencies along that direction only; measured as the
  ratio of the strongest to the weakest direction in each band, and as how much the high-to-mid-frequency
  ratio changes with direction (tissue that is itself oriented, such as collagen, is anisotropic at every
  scale alike);
* the *sharpest direction*: the high-to-low frequency ratio along the least blurred direction, which motion
  alone leaves intact and defocus (alone or with motion) does not;
* the pixel size, because the class definitions are in slide pixels and DOF units (DESIGN.md, "Class
  definitions") while tissue of the same kind looks softer per pixel at 0.25 um/px than at 0.5 um/px.

Restoration estimates the point-spread function from the same kind of spectrum, measured on the central part
of the region (so that overlapping regions of the same tissue agree). Each candidate PSF (a line of a given
length and angle for motion, a disc of a given radius for defocus) is scored by how well a power-law signal
blurred by it, plus power-law noise, fits the spectrum; the best one and its fitted noise-to-signal ratio
define a Wiener filter, applied to each channel in linear light.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import numpy as np
import scipy.fft as sfft

from .._types import LABELS

__all__ = ["ClassicalMethod", "spectral_features", "FEATURE_NAMES"]

# ----------------------------------------------------------------------------------------------------------
# Spectral analysis

#: Side of the Welch blocks in pixels: the frequency resolution is 1/128 cycles/px, fine enough to resolve the
#: sinc zeros of motion up to ~60 px and the first zero of a 20 px defocus disc.
_BLOCK = 128
#: At most this many blocks per spectrum (spread over the image), which bounds the cost on large tiles.
_MAX_BLOCKS = 36
#: Blocks much flatter than the tile's busiest ones (glass, empty lumen) carry noise only and are left out.
_BLANK_FRACTION = 0.1
#: Radial frequency bands in cycles/px. Band 0 is the reference; the others cover the range that defocus of
#: 1 DOF (a blur 4-8 px across) and motion of 5 px or more remove.
_BANDS: tuple[tuple[float, float], ...] = (
    (0.03, 0.06),
    (0.06, 0.12),
    (0.12, 0.2),
    (0.2, 0.3),
    (0.3, 0.42),
    (0.42, 0.5),
)
#: Orientation sectors over 180 degrees: 22.5 degrees each, so that a sector around the motion direction lies
#: entirely in the blurred part of the spectrum for frequencies above 1/L.
_N_ANGLES = 8
#: JPEG works on 8x8 blocks; its block edges put energy on frequencies k/8 along the axes, which looks like
#: anisotropy. Spectrum rows/columns at multiples of 1/8 cycles/px are left out of every measure.
_JPEG_PERIOD = 8
#: Pixel size the features are referred to (um/px).
_MPP_REF = 0.5

FEATURE_NAMES: tuple[str, ...] = (
    *(f"log_energy_band{b}" for b in range(1, len(_BANDS))),
    *(f"anisotropy_band{b}" for b in range(1, 5)),
    "sharpness_anisotropy_high",
    "sharpness_anisotropy_low",
    "sharpest_direction_band3",
    "sharpest_direction_band4",
    "log2_mpp",
)


def _srgb_lut() -> np.ndarray:
    """uint8 sRGB code -> linear light in [0, 1] (IEC 61966-2-1)."""
    v = np.arange(256, dtype=np.float64) / 255.0
    return np.where(v <= 0.04045, v / 12.92, ((v + 0.055) / 1.055) ** 2.4).astype(np.float32)


_TO_LINEAR = _srgb_lut()


def _to_srgb(linear: np.ndarray) -> np.ndarray:
    """Linear light (any float array, clipped to [0, 1]) -> uint8 sRGB."""
    v = np.clip(linear, 0.0, 1.0)
    s = np.where(v <= 0.0031308, v * 12.92, 1.055 * np.power(v, 1.0 / 2.4) - 0.055)
    return np.clip(np.rint(s * 255.0), 0, 255).astype(np.uint8)


def _luminance(rgb: np.ndarray) -> np.ndarray:
    """Linear-light luminance (Rec. 709 weights) of an RGB uint8 image, float32."""
    lin = _TO_LINEAR[rgb]
    return (0.2126 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.0722 * lin[..., 2]).astype(np.float32)


@functools.cache
def _hann(block: int) -> np.ndarray:
    w = np.hanning(block + 2)[1:-1].astype(np.float32)
    return np.outer(w, w)


@functools.cache
def _grid(block: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Frequencies of an rfft2 of a ``block`` square: fy, fx (cycles/px), radius, orientation in [0, pi)."""
    fy = np.fft.fftfreq(block)[:, None] * np.ones((1, block // 2 + 1))
    fx = np.fft.rfftfreq(block)[None, :] * np.ones((block, 1))
    radius = np.hypot(fy, fx)
    angle = np.mod(np.arctan2(fy, fx), np.pi)
    return fy, fx, radius, angle


@functools.cache
def _usable(block: int) -> np.ndarray:
    """Spectrum bins free of JPEG block-edge energy (rows and columns at multiples of 1/8 cycles/px)."""
    step = block // _JPEG_PERIOD
    rows = np.ones(block, dtype=bool)
    rows[::step] = False
    cols = np.ones(block // 2 + 1, dtype=bool)
    cols[::step] = False
    return rows[:, None] & cols[None, :]


def _block_origins(size: int, block: int, count: int) -> np.ndarray:
    """Up to ``count`` evenly spread block origins along an axis of ``size`` px (half-overlapping at most)."""
    if size <= block:
        return np.zeros(1, dtype=int)
    n = min(count, 2 * (size - block) // block + 1)
    return np.unique(np.linspace(0, size - block, max(n, 1)).round().astype(int))


def _power_spectrum(gray: np.ndarray, block: int = _BLOCK, max_blocks: int = _MAX_BLOCKS) -> np.ndarray:
    """Welch power spectrum (block, block//2+1) of a 2D float image, without flat (blank) blocks.

    Each block has its mean removed and a Hann window applied; the power is summed over the kept blocks and
    normalised by the total, so only the spectrum's shape is kept (contrast does not matter). Images smaller
    than a block are reflected up to the block size.
    """
    h, w = gray.shape
    if h < block or w < block:
        gray = np.pad(gray, ((0, max(0, block - h)), (0, max(0, block - w))), mode="symmetric")
        h, w = gray.shape
    per_axis = max(1, int(np.sqrt(max_blocks)))
    ys = _block_origins(h, block, per_axis)
    xs = _block_origins(w, block, per_axis)
    blocks = np.stack([gray[y : y + block, x : x + block] for y in ys for x in xs]).astype(np.float32)
    blocks -= blocks.mean(axis=(1, 2), keepdims=True)
    spread = blocks.std(axis=(1, 2))
    keep = spread >= _BLANK_FRACTION * spread.max() if spread.max() > 0 else np.ones(len(blocks), dtype=bool)
    spectra = np.abs(sfft.rfft2(blocks[keep] * _hann(block), workers=1)) ** 2
    power = spectra.sum(axis=0)
    total = power.sum()
    return (power / total if total > 0 else power).astype(np.float64)


@functools.cache
def _sector_masks(block: int) -> tuple[np.ndarray, ...]:
    """One boolean mask per (band, orientation sector) on the usable bins, band-major."""
    _, _, radius, angle = _grid(block)
    usable = _usable(block)
    sector = np.floor((angle + np.pi / (2 * _N_ANGLES)) / (np.pi / _N_ANGLES)).astype(int) % _N_ANGLES
    masks: list[np.ndarray] = []
    for lo, hi in _BANDS:
        band = usable & (radius >= lo) & (radius < hi)
        masks.extend(band & (sector == s) for s in range(_N_ANGLES))
    return tuple(masks)


def _band_sector_energy(power: np.ndarray) -> np.ndarray:
    """Mean power per (band, orientation sector): (len(_BANDS), _N_ANGLES)."""
    masks = _sector_masks(power.shape[0])
    tiny = 1e-30
    values = np.array([power[m].mean() if m.any() else tiny for m in masks])
    return np.maximum(values, tiny).reshape(len(_BANDS), _N_ANGLES)


def _range_over_angles(log_energy: np.ndarray) -> float:
    """Spread of a circular profile over orientation, smoothed over neighbouring sectors to damp noise."""
    smooth = (np.roll(log_energy, 1) + 2 * log_energy + np.roll(log_energy, -1)) / 4
    return float(smooth.max() - smooth.min())


def spectral_features(tile: np.ndarray, mpp: float) -> np.ndarray:
    """The classifier's features (FEATURE_NAMES order) for one RGB uint8 tile at ``mpp`` um/px, float64."""
    power = _power_spectrum(_luminance(tile))
    energy = np.log10(_band_sector_energy(power))
    radial = np.log10(np.mean(10.0**energy, axis=1))
    sharp_high = energy[3] - energy[1]
    sharp_low = energy[2] - energy[0]
    return np.array(
        [
            *(radial[1:] - radial[0]),
            *(_range_over_angles(energy[b]) for b in range(1, 5)),
            _range_over_angles(sharp_high),
            _range_over_angles(sharp_low),
            float(np.max(energy[3] - energy[0])),
            float(np.max(energy[4] - energy[0])),
            np.log2(mpp / _MPP_REF),
        ]
    )


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
    return sfft.rfft2(pad, workers=1)


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


def _fit_bank(power_polar: np.ndarray, bank: np.ndarray) -> _Fit:
    """Best candidate of ``bank`` (candidates x polar bins of |OTF|**2) for the observed polar spectrum.

    Model: ``log P = log(A (f**-beta H2 + rho f**-gamma))`` with ``A`` solved in closed form (mean log
    residual) for every (beta, gamma, rho) on the grids; the score is the mean squared log residual.
    """
    _, _, freq, _ = _polar_index(_BLOCK)
    ok = np.isfinite(power_polar) & (power_polar > 0)
    logp = np.log(power_polar[ok])
    f = freq[ok]
    h2 = np.maximum(bank[:, ok], 1e-12)  # (C, B)
    best = _Fit(0, 2.0, 0.0, 0.0)
    best_score = np.inf
    for beta in _BETAS:
        sig = f**-beta * h2  # (C, B)
        for gamma in _GAMMAS:
            noise = _NSR_RATIOS[:, None] * (f**-gamma)[None, :]  # (R, B)
            model = np.log(sig[:, None, :] + noise[None, :, :])  # (C, R, B)
            resid = logp[None, None, :] - model
            log_a = resid.mean(axis=2)
            score = ((resid - log_a[..., None]) ** 2).mean(axis=2)
            c, r = np.unravel_index(int(np.argmin(score)), score.shape)
            if score[c, r] < best_score:
                best_score = float(score[c, r])
                best = _Fit(int(c), beta, gamma, float(_NSR_RATIOS[r]))
    return best


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
    spec = sfft.rfft2(padded.astype(np.float32), s=shape, axes=(0, 1), workers=1)
    out = sfft.irfft2(spec * gain[:, :, None], s=shape, axes=(0, 1), workers=1)
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


# ----------------------------------------------------------------------------------------------------------
# The method


def _check_rgb(image: np.ndarray, ndim: int, who: str) -> None:
    if image.dtype != np.uint8 or image.ndim != ndim or image.shape[-1] != 3:
        shape = "(N, H, W, 3)" if ndim == 4 else "(H, W, 3)"
        raise ValueError(f"classical {who}: expected RGB uint8 {shape}, got {image.dtype} {image.shape}")


def _check_mpp(mpp: float, who: str) -> None:
    if not (np.isfinite(mpp) and mpp > 0):
        raise ValueError(f"classical {who}: mpp must be a positive pixel size in um/px, got {mpp}")


class ClassicalMethod:
    """Spectral blur classification and blind Wiener deconvolution (the DBMID paper's comparison method)."""

    name = "classical"
    version = "1.0.0"
    #: FFT deconvolution has no stride: any origin gives the same output.
    align = 1

    def halo(self, mpp: float) -> int:
        """Context each side for mixed blur (motion then defocus) with the largest PSFs the estimators return.

        PSFs are estimated in pixels (the class definitions are in pixels and DOF units, which scale with the
        pixel size), so the halo does not depend on ``mpp``.
        """
        _check_mpp(mpp, "halo")
        reach = _step_reach()
        return reach["motion"] + reach["defocus"]

    def classify(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        """Class probabilities (N, 4) float32 in LABELS order for RGB uint8 tiles (N, H, W, 3) at ``mpp``."""
        _check_rgb(tiles, 4, "classify")
        _check_mpp(mpp, "classify")
        if len(tiles) == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        feats = np.stack([spectral_features(t, mpp) for t in tiles])
        return _softmax_probabilities(feats)

    def restore(self, image: np.ndarray, steps: tuple[str, ...], mpp: float) -> np.ndarray:
        """Deconvolve ``image`` (RGB uint8) for each step in order ("motion", "defocus"); same shape, uint8.

        Each step estimates its PSF on the central part of the current image, then applies the Wiener filter
        in linear light. No steps: the image comes back unchanged (a copy).
        """
        _check_rgb(image, 3, "restore")
        _check_mpp(mpp, "restore")
        unknown = [s for s in steps if s not in ("motion", "defocus")]
        if unknown:
            raise ValueError(
                f"classical restore: unknown step(s) {unknown}; steps are 'motion' and 'defocus'"
            )
        if not steps:
            return image.copy()
        lin = _TO_LINEAR[image]
        for step in steps:
            lin = np.clip(_restore_step(lin, step), 0.0, 1.0)
        return _to_srgb(lin)


def _restore_step(lin: np.ndarray, step: str) -> np.ndarray:
    """One deconvolution step on a linear-light RGB image."""
    gray = (0.2126 * lin[..., 0] + 0.7152 * lin[..., 1] + 0.0722 * lin[..., 2]).astype(np.float32)
    power = _estimate_spectrum(gray)
    if step == "motion":
        fit = _fit_bank(power, _motion_bank())
        length = _MOTION_LENGTHS[fit.index // len(_MOTION_ANGLES)]
        angle = _MOTION_ANGLES[fit.index % len(_MOTION_ANGLES)]
        psf = _motion_kernel(length, angle)
    else:
        fit = _fit_bank(power, _defocus_bank())
        psf = _disc_psf(_DEFOCUS_RADII[fit.index])
    return _wiener(lin, psf, fit, _step_reach()[step])


# ----------------------------------------------------------------------------------------------------------
# Softmax model over the features, fitted by benchmarks/calibrate_classical.py (default arguments: 20 draws
# per source, seed 20240611; 600 tiles of 256 px from 10 source images degraded with wsi_deblur.physics).
# Leaving one source image out at a time: accuracy 0.84 over the four classes; in focus vs blurred 0.93;
# most errors are mixed called motion or defocus, and in focus vs defocus near 1 DOF.

_FEATURE_MEAN = np.array(
    [
        -1.2449,
        -2.4709,
        -3.272,
        -3.9057,
        -4.1523,
        0.7679,
        0.617,
        0.3962,
        0.2531,
        0.5594,
        0.5877,
        -2.5963,
        -3.108,
        -0.3707,
    ]
)
_FEATURE_SCALE = np.array(
    [
        0.4972,
        0.6593,
        0.5711,
        0.5094,
        0.5189,
        0.512,
        0.5065,
        0.3223,
        0.1512,
        0.3716,
        0.3722,
        0.6634,
        0.7082,
        0.4437,
    ]
)
_WEIGHTS = np.array(
    [
        [
            0.4941,
            0.5632,
            0.6182,
            -0.2346,
            -0.6462,
            -0.3866,
            -0.4151,
            0.0137,
            0.0268,
            -0.6688,
            -0.6402,
            0.2066,
            -0.5134,
            -0.0732,
        ],
        [
            -0.1061,
            -0.2731,
            -0.6001,
            0.0339,
            0.2794,
            -0.4751,
            -0.3383,
            -0.4076,
            0.2243,
            -0.49,
            -0.6196,
            -0.2066,
            0.3861,
            0.1489,
        ],
        [
            0.0733,
            0.1225,
            0.0211,
            -0.0911,
            -0.0704,
            0.3501,
            0.7245,
            0.6213,
            0.0354,
            0.31,
            0.525,
            -0.047,
            -0.0796,
            -0.1687,
        ],
        [
            -0.4613,
            -0.4126,
            -0.0392,
            0.2919,
            0.4372,
            0.5116,
            0.029,
            -0.2274,
            -0.2866,
            0.8489,
            0.7348,
            0.047,
            0.207,
            0.093,
        ],
    ]
)
_BIAS = np.array([-0.4236, 0.3552, 0.4325, -0.3641])


def _softmax_probabilities(features: np.ndarray) -> np.ndarray:
    """Softmax of the linear model over standardised features -> (N, 4) float32 summing to 1."""
    z = (features - _FEATURE_MEAN) / _FEATURE_SCALE
    logits = z @ _WEIGHTS.T + _BIAS
    logits -= logits.max(axis=1, keepdims=True)
    e = np.exp(logits)
    return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
