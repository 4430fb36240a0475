"""Blur physics: the public face of :mod:`.optics` (the microscope and its point-spread functions) and
:mod:`.imaging` (blurring in linear light, camera noise, JPEG), with the blur classes of DESIGN.md, the
evaluation grid and the random blurs and optics that training draws.

Defocus follows the scalar pupil model of a dry objective (with section thickness, partial coherence and
Zernike aberrations; see :mod:`.optics`); motion blur is a line kernel; all blurring happens in linear light,
then camera noise and JPEG are applied like a scanner's (see :mod:`.imaging`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .imaging import blur, degrade, linear_to_srgb, srgb_to_linear
from .optics import (
    PAPER_10X,
    SCANNER_20X,
    SCANNER_40X,
    WAVELENGTHS_NM,
    Optics,
    defocus_psf,
    depth_of_field,
    motion_psf,
)

__all__ = [
    "EVAL_ANGLES",
    "EVAL_JPEG",
    "EVAL_MOTION_PX",
    "EVAL_Z_DOF",
    "PAPER_10X",
    "SCANNER_20X",
    "SCANNER_40X",
    "WAVELENGTHS_NM",
    "BlurSpec",
    "Optics",
    "blur",
    "class_label",
    "defocus_psf",
    "degrade",
    "depth_of_field",
    "linear_to_srgb",
    "motion_psf",
    "random_optics",
    "sample_spec",
    "srgb_to_linear",
]

# Class definitions (DESIGN.md): defocus in DOF units at the slide's optics, motion in pixels.
IN_FOCUS_MAX_Z_DOF = 0.5
DEFOCUS_MIN_Z_DOF = 1.0
STILL_MAX_MOTION_PX = 2.0
MOTION_MIN_PX = 5.0

#: Evaluation grid (DESIGN.md): z on both sides of focus, motion lengths and angles, JPEG qualities.
EVAL_Z_DOF: tuple[float, ...] = (1.0, 1.5, 2.0, 3.0, 4.0)
EVAL_MOTION_PX: tuple[float, ...] = (5.0, 10.0, 15.0, 20.0, 30.0, 40.0)
EVAL_ANGLES: tuple[float, ...] = (0.0, 45.0, 90.0, 135.0)
EVAL_JPEG: tuple[int, ...] = (80, 95)


# ----------------------------------------------------------------------------------------------------
# Classes and sampling


def class_label(z_dof: float, motion_px: float) -> str | None:
    """Blur class of a defocus of ``z_dof`` depths of field and a motion of ``motion_px`` pixels (DESIGN.md):
    in_focus |z| <= 0.5 and motion <= 2; defocus |z| >= 1 and motion <= 2; motion |z| <= 0.5 and motion >= 5;
    mixed |z| >= 1 and motion >= 5; None in the bands between (left out of training labels and accuracy)."""
    z = abs(z_dof)
    still = motion_px <= STILL_MAX_MOTION_PX
    moving = motion_px >= MOTION_MIN_PX
    if z <= IN_FOCUS_MAX_Z_DOF:
        return "in_focus" if still else "motion" if moving else None
    if z >= DEFOCUS_MIN_Z_DOF:
        return "defocus" if still else "mixed" if moving else None
    return None


@dataclass(frozen=True)
class BlurSpec:
    """A blur to synthesise: defocus in DOF units (either sign), motion length in pixels and its angle."""

    z_dof: float
    motion_px: float
    motion_angle: float = 0.0

    @property
    def label(self) -> str | None:
        """The class this blur belongs to, or None in the bands between classes."""
        return class_label(self.z_dof, self.motion_px)

    def z_um(self, optics: Optics) -> float:
        """The focus offset in micrometres at ``optics``."""
        return self.z_dof * optics.dof_um


def sample_spec(
    label: str,
    rng: np.random.Generator,
    *,
    max_z_dof: float = 4.0,
    max_motion_px: float = 40.0,
) -> BlurSpec:
    """A random blur of class ``label`` for training data: defocus |z| uniform in [1, max_z_dof] DOF on either
    side (in_focus and motion: |z| <= 0.5 DOF), motion uniform in [5, max_motion_px] px (in_focus and defocus:
    0 to 2 px), angle uniform over [0, 180) degrees."""
    if label not in ("in_focus", "defocus", "motion", "mixed"):
        raise ValueError(f"sample_spec: unknown label {label!r}; expected in_focus, defocus, motion or mixed")
    if max_z_dof < DEFOCUS_MIN_Z_DOF or max_motion_px < MOTION_MIN_PX:
        raise ValueError(
            f"sample_spec: max_z_dof must be >= 1 and max_motion_px >= 5, got {max_z_dof}, {max_motion_px}"
        )
    if label in ("defocus", "mixed"):
        z = float(rng.uniform(DEFOCUS_MIN_Z_DOF, max_z_dof)) * (1.0 if rng.random() < 0.5 else -1.0)
    else:
        z = float(rng.uniform(-IN_FOCUS_MAX_Z_DOF, IN_FOCUS_MAX_Z_DOF))
    if label in ("motion", "mixed"):
        m = float(rng.uniform(MOTION_MIN_PX, max_motion_px))
    else:
        m = float(rng.uniform(0.0, STILL_MAX_MOTION_PX))
    return BlurSpec(z_dof=z, motion_px=m, motion_angle=float(rng.uniform(0.0, 180.0)))


# Ranges of random_optics. Pixel size times NA of real systems lies in about 0.15-0.4 um (10x/0.3 at 0.55
# um/px: 0.17; 20x/0.75 at 0.5: 0.38; 40x/0.95 at 0.25: 0.24; 20x/0.75 with a 2x changer at 0.23: 0.17).
RANDOM_NA = (0.25, 0.95)
RANDOM_MPP = (0.22, 0.6)
RANDOM_MPP_TIMES_NA = (0.13, 0.40)
RANDOM_THICKNESS_UM = (0.0, 10.0)
#: Condenser apertures are usually set to 0.5-1 of the objective's NA. A quarter of the draws take the condenser
#: fully open (sigma 1, how :class:`Optics` and the named systems model a scanner by default).
RANDOM_SIGMA = (0.5, 1.0)
RANDOM_SIGMA_OPEN_FRACTION = 0.25
#: Standard deviations (waves at 550 nm) of Z5-Z10 (astigmatism, coma, trefoil) and Z11 (spherical; larger
#: because a dry objective sees spherical aberration from any cover-glass or mountant thickness mismatch).
RANDOM_ZERNIKE_SD = (0.04, 0.04, 0.04, 0.04, 0.04, 0.04, 0.1)
#: The Zernike terms of one draw are scaled together by a factor uniform in this range, or, in a quarter of the
#: draws, left out (a well-corrected objective, as the named systems are modelled). Without aberration-free
#: optics under a fully open condenser in the family, strong defocus through such a system (a sharp-edged
#: disk whose spectrum has rings of zeros) was taken for mixed blur.
RANDOM_ABERRATION_SCALE = (0.0, 1.5)
RANDOM_ABERRATION_FREE_FRACTION = 0.25


def random_optics(rng: np.random.Generator) -> Optics:
    """Random optics over a family wide enough to contain real scanners' blur: NA uniform in 0.25-0.95, mpp in
    0.22-0.6 with mpp * NA in 0.13-0.4, section thickness 0-10 um, sigma 0.5-1, small Zernike aberrations (their
    size scaled by one factor in :data:`RANDOM_ABERRATION_SCALE`, or none at all in a quarter of the draws), a
    fully open condenser (sigma 1) in a quarter of the draws."""
    na = float(rng.uniform(*RANDOM_NA))
    lo = max(RANDOM_MPP[0], RANDOM_MPP_TIMES_NA[0] / na)
    hi = min(RANDOM_MPP[1], RANDOM_MPP_TIMES_NA[1] / na)
    mpp = float(rng.uniform(lo, hi)) if hi > lo else lo
    thickness = float(rng.uniform(*RANDOM_THICKNESS_UM))
    sigma = 1.0 if rng.random() < RANDOM_SIGMA_OPEN_FRACTION else float(rng.uniform(*RANDOM_SIGMA))
    scale = 0.0 if rng.random() < RANDOM_ABERRATION_FREE_FRACTION else float(rng.uniform(*RANDOM_ABERRATION_SCALE))
    zernike = tuple(scale * float(rng.normal(0.0, sd)) for sd in RANDOM_ZERNIKE_SD)
    return Optics(na=na, mpp=mpp, thickness_um=thickness, sigma=sigma, zernike=zernike)
