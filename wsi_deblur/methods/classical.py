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

Along that data flow: :mod:`.classical_features` (spectrum, features, softmax), :mod:`.classical_deconv` (PSF
fit, Wiener filter), and here the method that routes between them.
"""

from __future__ import annotations

import numpy as np

from .._types import LABELS
from .classical_deconv import _MOTION_ANGLES as _MOTION_ANGLES
from .classical_deconv import _MOTION_LENGTHS as _MOTION_LENGTHS
from .classical_deconv import _estimate_spectrum as _estimate_spectrum
from .classical_deconv import _fit_bank as _fit_bank
from .classical_deconv import _motion_bank as _motion_bank
from .classical_deconv import _restore_step, _step_reach
from .classical_features import _TO_LINEAR, FEATURE_NAMES, _softmax_probabilities, _to_srgb, spectral_features

__all__ = ["ClassicalMethod", "spectral_features", "FEATURE_NAMES"]


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
    version = "1.1.0"
    #: FFT deconvolution has no stride: any origin gives the same output.
    align = 1

    def halo(self, mpp: float, steps: tuple[str, ...] | None = None) -> int:
        """Context each side for the route ``steps`` (None: mixed blur, motion then defocus, the widest) with
        the largest PSFs the estimators return: the sum of the steps' reaches.

        PSFs are estimated in pixels (the class definitions are in pixels and DOF units, which scale with the
        pixel size), so the halo does not depend on ``mpp``.
        """
        _check_mpp(mpp, "halo")
        reach = _step_reach()
        return sum(reach[step] for step in (("motion", "defocus") if steps is None else steps))

    def classify(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        """Class probabilities (N, 4) float32 in LABELS order for RGB uint8 tiles (N, H, W, 3) at ``mpp``."""
        _check_rgb(tiles, 4, "classify")
        _check_mpp(mpp, "classify")
        if len(tiles) == 0:
            return np.zeros((0, len(LABELS)), dtype=np.float32)
        feats = np.stack([spectral_features(t, mpp) for t in tiles])
        return _softmax_probabilities(feats)

    def restore(self, image: np.ndarray, steps: tuple[str, ...], mpp: float, margin: int = 0) -> np.ndarray:
        """Deconvolve ``image`` (RGB uint8) for each step in order ("motion", "defocus"); same shape, uint8.

        Each step estimates its PSF on the central part of the current image, then applies the Wiener filter
        in linear light, unless the fit shows no blur of its kind beyond the scan's own (a disc no wider than
        ``classical_deconv._NATIVE_RADIUS``, or the shortest motion line): then the step leaves the image as
        it is. No steps: the image comes back unchanged (a copy).

        ``margin``: pixels along each border whose output the caller discards. The Wiener filter still runs over
        them (every pixel needs its reach, and one FFT covers the whole image), but the PSFs are estimated inside
        them: past an image's edge the context is the image mirrored, and a mirror turns motion at 45 degrees
        into motion at 135, so a small image's estimate would follow its mirror images.
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
        lin = np.take(_TO_LINEAR, image)  # a look-up: np.take is faster than fancy indexing here
        for step in steps:
            lin = np.clip(_restore_step(lin, step, int(margin)), 0.0, 1.0)
        return _to_srgb(lin)
