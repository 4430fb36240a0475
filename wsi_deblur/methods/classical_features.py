"""Classical blur classification: spectral features of a tile and a small softmax over them.

The power spectrum of the tile's linear-light luminance, averaged over Hann-windowed blocks (Welch's method), is
blind (no reference image) and independent of contrast; the features (sharpness, anisotropy, the sharpest
direction, the pixel size) are described in :mod:`.classical`. The restoration side
(:mod:`.classical_deconv`) fits its PSFs to the same kind of spectrum.
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.fft as sfft

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
    lin = np.take(_TO_LINEAR, rgb)
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
# Softmax model over the features, fitted by benchmarks/calibrate_classical.py (default arguments: 20 draws
# per source, seed 20240611; 600 tiles of 256 px from 10 source images degraded with wsi_deblur.physics).
# Leaving one source image out at a time: accuracy 0.84 over the four classes; in focus vs blurred 0.93;
# most errors are mixed called motion or defocus, and in focus vs defocus near 1 DOF. Fitted before
# physics.random_optics widened (aberrations scaled by RANDOM_ABERRATION_SCALE or left out, the condenser fully
# open in a quarter of the draws); a re-run now draws that family, so its figures and constants differ slightly.

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
