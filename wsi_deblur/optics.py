"""Optics of blur: the microscope (:class:`Optics`), its depth of field, and the defocus and motion point-spread
functions.

Defocus follows the scalar pupil model of a dry objective of numerical aperture NA at wavelength lambda:

    P_z(f) = circ(|f| <= NA / lambda) * exp(i 2 pi z (sqrt(1 / lambda**2 - |f|**2) - 1 / lambda)) * A(f)

where ``A`` carries a few Zernike aberrations. The intensity point-spread function (PSF) is
``|IFFT(P_z)|**2``, computed on a grid finer than the pixel (the intensity spectrum reaches 2 NA / lambda,
beyond the Nyquist frequency of a 0.5 um pixel) and integrated over each pixel, one PSF per RGB wavelength.
Three refinements make the family wide enough to contain real scanners' blur:

* **Section thickness.** A section is a few micrometres thick, so every depth in it is seen at a different
  defocus: the PSF is averaged over ``z +- t / 2`` (midpoint rule). These PSFs blur real in-focus scans,
  which already show their own section's depth, so what defocus adds is the spread of depths *around* ``z``:
  ``t = min(thickness, |z|)``. In focus (``z = 0``) nothing is added; far from focus the whole section
  spreads the blur; and the blur at ``z`` stays within ``|z| / 2 .. 3 |z| / 2``, so a sample keeps its class
  (DESIGN.md's bands are in DOF units of ``z``).
* **Partial coherence.** Brightfield illumination comes from a condenser of numerical aperture
  ``sigma * NA``. For a weakly absorbing specimen the image is linear in the specimen's transmission, with the
  weak-object transfer function ``C(g) = integral S(s) P(s + g) conj(P(s)) ds`` (S: the condenser disc). Its
  inverse transform is ``p(x) * conj(q(x))`` with ``p = IFFT(P)`` and ``q = IFFT(S P)``, and the absorbing
  part of the image is blurred by its real part. For ``sigma >= 1`` the condenser fills the pupil, ``q = p``
  and the PSF is exactly the incoherent ``|p|**2``; smaller ``sigma`` gives the sharper edges, negative side
  lobes and longer depth of field of more coherent illumination.
* **Aberrations.** ``Optics.zernike[i]`` is the coefficient of Zernike polynomial Noll ``j = 5 + i`` (RMS
  normalised; 5, 6 astigmatism, 7, 8 coma, 9, 10 trefoil, 11 spherical, ...), in waves at 550 nm. Piston and
  tilts (j = 1-3) only move the image and defocus (j = 4) is ``z`` itself, so the list starts at j = 5.

``z`` is the focus offset of the objective in micrometres (in air, as the stage moves it). Motion blur is a
line kernel. :mod:`.imaging` applies these PSFs to images; :mod:`.physics` gathers both with the blur classes.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from scipy import fft as sfft

#: Centre wavelengths of the red, green and blue channels of a scanner camera (white LED or halogen lamp).
WAVELENGTHS_NM: tuple[float, float, float] = (610.0, 540.0, 465.0)
#: Wavelength for depth-of-field figures (the middle of the visible band; DESIGN.md uses it).
DOF_WAVELENGTH_NM = 550.0
#: Zernike coefficients are given in waves at this wavelength (an optical path difference of c * 0.55 um).
ZERNIKE_REFERENCE_NM = 550.0
#: First Noll index held by ``Optics.zernike`` (defocus, j = 4, is ``z``).
ZERNIKE_FIRST_NOLL = 5

#: Fraction of the PSF's energy that an automatically sized kernel keeps.
ENERGY_KEPT = 0.995
#: Margin around the geometric defocus disc, in lambda / NA: the Airy pattern's encircled energy is about
#: 1 - 2 / (pi v) far out (v = 2 pi NA r / lambda), which reaches 99.5% at v ~ 127, r ~ 20 lambda / NA; 24
#: leaves room for the square crop and the wrap-around of the periodic FFT grid.
TAIL_LAMBDA_OVER_NA = 24.0
#: At most this many depths are summed over a section's thickness (bounds the cost at high NA).
MAX_THICKNESS_SAMPLES = 48
#: Samples per pixel along a motion path (its anti-aliasing).
MOTION_SAMPLES_PER_PX = 16


@dataclass(frozen=True)
class Optics:
    """A brightfield microscope or scanner: objective, pixel size and the specimen's thickness.

    ``na``: numerical aperture of the dry objective (0 < na < 1). ``mpp``: micrometres per pixel at the
    specimen. ``wavelengths_nm``: one wavelength per RGB channel. ``thickness_um``: section thickness the PSF
    is averaged over. ``sigma``: coherence parameter, condenser NA / objective NA (>= 1: incoherent, the plain
    ``|IFFT|**2`` PSF). ``zernike``: aberration coefficients in waves at 550 nm, Noll order from j = 5.
    """

    na: float
    mpp: float
    wavelengths_nm: tuple[float, float, float] = WAVELENGTHS_NM
    thickness_um: float = 0.0
    sigma: float = 1.0
    zernike: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if not 0.0 < self.na < 1.0:
            raise ValueError(f"Optics: na must be in (0, 1) for a dry objective, got {self.na}")
        if not (math.isfinite(self.mpp) and self.mpp > 0.0):
            raise ValueError(f"Optics: mpp must be positive (micrometres per pixel), got {self.mpp}")
        if len(self.wavelengths_nm) != 3 or not all(200.0 < w < 2000.0 for w in self.wavelengths_nm):
            raise ValueError(f"Optics: wavelengths_nm must be three values in nm, got {self.wavelengths_nm}")
        if not (math.isfinite(self.thickness_um) and self.thickness_um >= 0.0):
            raise ValueError(f"Optics: thickness_um must be >= 0, got {self.thickness_um}")
        if not (math.isfinite(self.sigma) and self.sigma > 0.0):
            raise ValueError(f"Optics: sigma (condenser NA / objective NA) must be > 0, got {self.sigma}")
        if not all(math.isfinite(c) for c in self.zernike):
            raise ValueError(f"Optics: zernike coefficients must be finite, got {self.zernike}")

    @property
    def dof_um(self) -> float:
        """Depth of field in micrometres, ``lambda / NA**2 + mpp / NA`` at 550 nm."""
        return depth_of_field(self.na, self.mpp)


#: The paper's microscope: 10x / 0.3 objective, 0.55 um per camera pixel (DOF 7.9 um).
PAPER_10X = Optics(na=0.3, mpp=0.55)
#: A 20x slide scanner: 20x / 0.75 Plan Apochromat at 0.5 um/px (Aperio AT2, NanoZoomer, ...; DOF 1.6 um).
SCANNER_20X = Optics(na=0.75, mpp=0.5)
#: A 40x slide scanner. Most "40x" scan modes keep the 20x / 0.75 objective and add a 2x magnification changer
#: (Aperio AT2 / GT 450 at 0.25-0.26 um/px, NanoZoomer at 0.23 um/px), so the NA stays 0.75 (DOF 1.3 um).
SCANNER_40X = Optics(na=0.75, mpp=0.25)


def depth_of_field(na: float, mpp: float, wavelength_nm: float = DOF_WAVELENGTH_NM) -> float:
    """Depth of field in micrometres: ``lambda / NA**2 + mpp / NA`` (wave-optical plus detector term)."""
    if not 0.0 < na < 1.0 or mpp <= 0.0 or wavelength_nm <= 0.0:
        raise ValueError(
            f"depth_of_field: need 0 < na < 1, mpp > 0, wavelength > 0; got {na}, {mpp}, {wavelength_nm}"
        )
    return wavelength_nm / 1000.0 / na**2 + mpp / na


# ----------------------------------------------------------------------------------------------------
# Defocus PSF


def _noll_to_nm(j: int) -> tuple[int, int]:
    """Radial order n and azimuthal frequency m of Noll index j (m < 0: sine term, m > 0: cosine term)."""
    n = int((math.sqrt(8 * (j - 1) + 1) - 1) // 2)
    p = j - n * (n + 1) // 2
    k = n % 2
    m = ((p + k) // 2) * 2 - k
    if m != 0 and j % 2 == 1:
        m = -m
    return n, m


def _zernike(j: int, rho: np.ndarray, theta: np.ndarray) -> np.ndarray:
    """RMS-normalised Zernike polynomial of Noll index j on the unit disc."""
    n, m = _noll_to_nm(j)
    am = abs(m)
    radial = np.zeros_like(rho)
    for s in range((n - am) // 2 + 1):
        coef = (
            (-1) ** s
            * math.factorial(n - s)
            / (math.factorial(s) * math.factorial((n + am) // 2 - s) * math.factorial((n - am) // 2 - s))
        )
        radial += coef * rho ** (n - 2 * s)
    if m == 0:
        return math.sqrt(n + 1) * radial
    angular = np.cos(am * theta) if m > 0 else np.sin(am * theta)
    return math.sqrt(2 * (n + 1)) * radial * angular


def _odd_fast_len(n: int) -> int:
    """Smallest odd number >= n whose only prime factors are 3, 5 and 7 (fast for pocketfft)."""
    m = max(1, n) | 1
    while True:
        r = m
        for p in (3, 5, 7):
            while r % p == 0:
                r //= p
        if r == 1:
            return m
        m += 2


def _auto_oversample(optics: Optics) -> int:
    """Sub-samples per pixel (odd, so the fine grid stays odd and symmetric) making the fine step at most
    lambda / (4 NA): the intensity spectrum, which reaches 2 NA / lambda, is then sampled without aliasing."""
    lam_min = min(optics.wavelengths_nm) / 1000.0
    s = max(1, math.ceil(optics.mpp * 4.0 * optics.na / lam_min))
    return s if s % 2 == 1 else s + 1


def _depths(optics: Optics, z_um: float) -> np.ndarray:
    """Depths (um) the PSF is averaged over: midpoints across ``z +- t / 2`` with ``t = min(thickness, |z|)``
    (see the module docstring). The step keeps the geometric blur radius within one pixel per step and under a
    quarter of the wave-optical depth of field."""
    t = min(optics.thickness_um, abs(z_um))
    if t == 0.0:
        return np.array([z_um])
    tan_theta = optics.na / math.sqrt(1.0 - optics.na**2)
    lam = DOF_WAVELENGTH_NM / 1000.0
    step = min(optics.mpp / tan_theta, 0.25 * lam / optics.na**2)
    n = int(min(MAX_THICKNESS_SAMPLES, max(1, math.ceil(t / step))))
    return z_um - t / 2.0 + (np.arange(n) + 0.5) * (t / n)


@lru_cache(maxsize=128)
def _defocus_psf_cached(optics: Optics, z_um: float, size: int | None, oversample: int | None) -> np.ndarray:
    s = _auto_oversample(optics) if oversample is None else oversample
    dx = optics.mpp / s
    depths = _depths(optics, z_um)
    tan_theta = optics.na / math.sqrt(1.0 - optics.na**2)
    lam_max = max(optics.wavelengths_nm) / 1000.0
    reach_um = float(np.abs(depths).max()) * tan_theta + TAIL_LAMBDA_OVER_NA * lam_max / optics.na
    half = math.ceil(reach_um / optics.mpp) + 1
    if size is not None:
        half = max(half, size // 2)
    m_px = _odd_fast_len(2 * half + 1)
    n = s * m_px

    f = sfft.fftfreq(n, d=dx)  # cycles per um; symmetric for odd n, so the PSF is centred on a sample
    fx, fy = np.meshgrid(f, f, indexing="xy")
    f2 = fx**2 + fy**2
    channels = []
    for wl_nm in optics.wavelengths_nm:
        lam = wl_nm / 1000.0
        fc = optics.na / lam
        inside = f2 <= fc**2
        kz = np.sqrt(np.maximum(1.0 / lam**2 - f2, 0.0)) - 1.0 / lam
        pupil = inside.astype(np.complex128)
        if optics.zernike:
            rho = np.sqrt(f2) / fc
            theta = np.arctan2(fy, fx)
            phase = np.zeros_like(rho)
            for i, c in enumerate(optics.zernike):
                if c != 0.0:
                    phase += c * _zernike(ZERNIKE_FIRST_NOLL + i, rho, theta)
            pupil *= np.exp(2j * np.pi * (ZERNIKE_REFERENCE_NM / wl_nm) * phase)
        source = None if optics.sigma >= 1.0 else (f2 <= (optics.sigma * fc) ** 2)
        acc = np.zeros((n, n), dtype=np.float64)
        for z in depths:
            pz = (pupil * np.exp(2j * np.pi * z * kz)).astype(np.complex64)
            p = sfft.ifft2(pz)
            if source is None:
                acc += (p.real**2 + p.imag**2).astype(np.float64)
            else:
                q = sfft.ifft2(np.where(source, pz, 0))
                acc += (p * np.conj(q)).real.astype(np.float64)
        # Integrate over each pixel exactly: multiply the (band-limited, so exactly sampled) intensity
        # spectrum by the pixel's transfer function sinc(f * mpp), then sample the pixel centres (every s-th).
        spec = sfft.rfft2(acc)
        fr = sfft.rfftfreq(n, d=dx)
        spec *= np.sinc(f * optics.mpp)[:, None] * np.sinc(fr * optics.mpp)[None, :]
        pixels = sfft.irfft2(spec, s=(n, n))[::s, ::s]
        channels.append(sfft.fftshift(pixels))
    psf = np.stack(channels, axis=-1)

    c = m_px // 2
    if size is None:
        energy = np.abs(psf)
        total = energy.sum(axis=(0, 1))
        h = 0
        kept = ENERGY_KEPT * total
        while h < c and np.any(energy[c - h : c + h + 1, c - h : c + h + 1].sum(axis=(0, 1)) < kept):
            h += 1
    else:
        h = size // 2
    psf = psf[c - h : c + h + 1, c - h : c + h + 1]
    psf = psf / psf.sum(axis=(0, 1), keepdims=True)
    out = psf.astype(np.float32)
    out.setflags(write=False)
    return out


def defocus_psf(
    optics: Optics, z_um: float, size: int | None = None, oversample: int | None = None
) -> np.ndarray:
    """Defocus point-spread function at focus offset ``z_um``: (k, k, 3) float32, k odd, channels sum to 1.

    One PSF per channel wavelength, from the pupil model in this module's docstring, averaged over the section
    thickness and made partially coherent as ``optics`` says. ``size`` (odd) fixes k; None picks the smallest
    k holding 99.5% of the energy. ``oversample`` is the number of sub-samples per pixel; None picks the
    fewest that sample the intensity spectrum without aliasing (fewer alias it). Results are cached.
    """
    if not math.isfinite(z_um):
        raise ValueError(f"defocus_psf: z_um must be finite, got {z_um}")
    if size is not None and (size < 1 or size % 2 == 0):
        raise ValueError(f"defocus_psf: size must be a positive odd number, got {size}")
    if oversample is not None and oversample < 1:
        raise ValueError(f"defocus_psf: oversample must be a positive number, got {oversample}")
    return _defocus_psf_cached(optics, float(z_um), size, oversample).copy()


# ----------------------------------------------------------------------------------------------------
# Motion PSF


def motion_psf(length_px: float, angle_deg: float) -> np.ndarray:
    """Motion-blur kernel: a line of ``length_px`` pixels at ``angle_deg`` (counter-clockwise from the x axis
    as the image is displayed), (k, k) float32, k odd, sums to 1. The path is sampled 16 times per pixel and
    each sample is shared bilinearly between its four neighbouring pixels, so sub-pixel lengths and any angle
    are anti-aliased. Length 0 gives ``[[1]]``."""
    if not (math.isfinite(length_px) and length_px >= 0.0):
        raise ValueError(f"motion_psf: length_px must be >= 0, got {length_px}")
    if not math.isfinite(angle_deg):
        raise ValueError(f"motion_psf: angle_deg must be finite, got {angle_deg}")
    if length_px == 0.0:
        return np.ones((1, 1), dtype=np.float32)
    half = math.ceil(length_px / 2.0) + 1
    k = 2 * half + 1
    n = max(2, math.ceil(length_px * MOTION_SAMPLES_PER_PX))
    t = (np.arange(n) + 0.5) / n * length_px - length_px / 2.0
    a = math.radians(angle_deg)
    x = half + t * math.cos(a)
    y = half - t * math.sin(a)  # rows grow downwards
    x0 = np.floor(x).astype(np.intp)
    y0 = np.floor(y).astype(np.intp)
    wx = x - x0
    wy = y - y0
    kern = np.zeros((k, k), dtype=np.float64)
    np.add.at(kern, (y0, x0), (1 - wx) * (1 - wy))
    np.add.at(kern, (y0, x0 + 1), wx * (1 - wy))
    np.add.at(kern, (y0 + 1, x0), (1 - wx) * wy)
    np.add.at(kern, (y0 + 1, x0 + 1), wx * wy)
    nz_r = np.nonzero(kern.any(axis=1))[0]
    nz_c = np.nonzero(kern.any(axis=0))[0]
    h = int(max(half - nz_r[0], nz_r[-1] - half, half - nz_c[0], nz_c[-1] - half))
    kern = kern[half - h : half + h + 1, half - h : half + h + 1]
    return (kern / kern.sum()).astype(np.float32)
