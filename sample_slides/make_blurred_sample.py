"""Make the blurred sample slide ``CMU-1-blurred.svs`` from ``CMU-1-Small-Region.svs``, with its region map.

Three rectangles over tissue are blurred with the physical model of :mod:`wsi_deblur.physics` (20x / 0.75
scanner optics, a 4 um section, partially coherent illumination): one defocused, one motion-blurred, one with
both. Everything else keeps the original pixels, so the decoded level 0 of ``CMU-1-Small-Region.svs`` is the
ground truth for the whole slide. Each region is blurred through a window padded by the kernel's radius and
only the region is pasted back, so the blur inside uses the real neighbouring tissue; the region's edge is a
step from one focus to another, as between two fields of a scanner.

Outputs (beside this script):

* ``CMU-1-blurred.svs``: an Aperio-style tiled TIFF (256 x 256 JPEG tiles, quality 90, like the original's
  scanner) with level 0, a thumbnail and a 4x reduced level; OpenSlide and tiffslide read it as an Aperio
  slide with mpp 0.499 and objective 20.
* ``CMU-1-blurred.regions.json``: the region map (boxes in level-0 pixels, class, physical parameters) and the
  ground truth's file name and sha256.
* ``CMU-1-blurred.regions.png``: the region map over the thumbnail, with original and blurred crops.

Run from the repository root: ``.venv/bin/python sample_slides/make_blurred_sample.py``. The result is
deterministic (fixed seed; byte-identical for the same library versions).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import openslide
import tifffile
import tiffslide
from PIL import Image, ImageDraw

HERE = Path(__file__).resolve().parent
if __package__ in (None, "") and str(HERE.parent) not in sys.path:
    sys.path.insert(0, str(HERE.parent))  # run from a checkout without installing the package

from wsi_deblur import physics  # noqa: E402
from wsi_deblur._types import SlideError  # noqa: E402
from wsi_deblur._version import __version__  # noqa: E402

SOURCE_NAME = "CMU-1-Small-Region.svs"
OUTPUT_STEM = "CMU-1-blurred"
SEED = 20091229  # the scan date of CMU-1
MPP = 0.499  # from the source's ImageDescription (MPP = 0.4990)
OBJECTIVE = 20  # AppMag = 20
TILE = 256  # the original scanner's tile side
JPEG_QUALITY = 90  # DESIGN.md: TIFF tiles at JPEG quality 90, like scanners
LEVEL1_DOWNSAMPLE = 4
THUMBNAIL_MAX = 768  # Aperio thumbnails are about 768 px on the long side

#: A 20x / 0.75 scanner at the slide's pixel size, imaging a 4 um section with the condenser at 0.8 of the NA.
OPTICS = physics.Optics(na=0.75, mpp=MPP, thickness_um=4.0, sigma=0.8)


@dataclass(frozen=True)
class Region:
    """A blurred rectangle: box (x, y, w, h) in level-0 px, class, defocus in DOF, motion (px, degrees)."""

    label: str
    box: tuple[int, int, int, int]
    z_dof: float
    motion_px: float
    motion_angle_deg: float


#: Boxes chosen on the tissue column (50-75% tissue by a saturation Otsu mask), stacked top to bottom with
#: 240 px of in-focus tissue between them. Defocus on both sides of focus; motion at oblique angles.
REGIONS: tuple[Region, ...] = (
    Region("defocus", (864, 304, 768, 720), z_dof=3.0, motion_px=0.0, motion_angle_deg=0.0),
    Region("motion", (848, 1264, 768, 720), z_dof=0.0, motion_px=20.0, motion_angle_deg=30.0),
    Region("mixed", (928, 2224, 800, 720), z_dof=-2.0, motion_px=15.0, motion_angle_deg=120.0),
)
COLOURS = {"defocus": (230, 120, 0), "motion": (0, 110, 230), "mixed": (200, 0, 160)}


def read_level0(path: Path) -> np.ndarray:
    """Level 0 of a slide as RGB uint8, composited over the slide's background colour."""
    try:
        slide = openslide.OpenSlide(str(path))
    except openslide.OpenSlideError as exc:
        raise SlideError(f"{path}: OpenSlide cannot open it ({exc})") from exc
    with slide:
        rgba = np.asarray(slide.read_region((0, 0), 0, slide.dimensions), dtype=np.float32)
        bg_hex = slide.properties.get("openslide.background-color", "FFFFFF")
    bg = np.array([int(bg_hex[i : i + 2], 16) for i in (0, 2, 4)], dtype=np.float32)
    alpha = rgba[:, :, 3:4] / 255.0
    return np.rint(rgba[:, :, :3] * alpha + bg * (1.0 - alpha)).astype(np.uint8)


def blur_region(image: np.ndarray, region: Region, rng: np.random.Generator) -> dict[str, object]:
    """Blur one region of ``image`` in place (camera noise included, no JPEG); return its JSON record."""
    label = physics.class_label(region.z_dof, region.motion_px)
    if label != region.label:
        raise ValueError(f"region {region.label}: its parameters make it {label}")
    x, y, w, h = region.box
    z_um = region.z_dof * OPTICS.dof_um
    # Pad by the combined kernel's radius (defocus radius + half the motion length) so every blurred pixel in
    # the box sees real tissue, not a reflected border.
    pad = physics.defocus_psf(OPTICS, z_um).shape[0] // 2 + int(np.ceil(region.motion_px / 2)) + 2
    y0, y1 = max(0, y - pad), min(image.shape[0], y + h + pad)
    x0, x1 = max(0, x - pad), min(image.shape[1], x + w + pad)
    blurred = physics.degrade(
        image[y0:y1, x0:x1], OPTICS, z_um, region.motion_px, region.motion_angle_deg, noise=True, rng=rng
    )
    image[y : y + h, x : x + w] = blurred[y - y0 : y - y0 + h, x - x0 : x - x0 + w]
    return {
        "label": label,
        "box": {"x": x, "y": y, "w": w, "h": h},
        "z_um": round(z_um, 4),
        "z_dof": region.z_dof,
        "motion_px": region.motion_px,
        "motion_angle_deg": region.motion_angle_deg,
        "noise": "Poisson-Gaussian camera noise (wsi_deblur.physics.degrade)",
    }


def aperio_description(width: int, height: int, level_size: tuple[int, int] | None = None) -> str:
    """An Aperio ImageDescription: OpenSlide and tiffslide take vendor, MPP and AppMag from it."""
    head = f"Aperio Image Library v12.0.0\r\n{width}x{height} [0,0 {width}x{height}] ({TILE}x{TILE})"
    if level_size is not None:
        head += f" -> {level_size[0]}x{level_size[1]}"
    return f"{head} JPEG/RGB Q={JPEG_QUALITY}|AppMag = {OBJECTIVE}|MPP = {MPP:.4f}|Filename = {OUTPUT_STEM}"


def downsample(image: np.ndarray, factor: int) -> np.ndarray:
    """Box-filter reduction by ``factor`` (partial edge blocks are averaged over what they hold)."""
    h, w = image.shape[:2]
    im = Image.fromarray(image)
    return np.asarray(im.reduce(factor), dtype=np.uint8) if h >= factor and w >= factor else image


def write_svs(path: Path, image: np.ndarray) -> None:
    """Level 0 (tiled), thumbnail (stripped, the second IFD as in Aperio files), level 1 (tiled, 4x).

    As in Aperio files the reduced level has NewSubfileType 0: tifffile's SVS parser (and so tiffslide) stops
    at a page flagged reduced."""
    h, w = image.shape[:2]
    thumb_scale = THUMBNAIL_MAX / max(h, w)
    thumb = np.asarray(
        Image.fromarray(image).resize(
            (round(w * thumb_scale), round(h * thumb_scale)), Image.Resampling.LANCZOS
        )
    )
    level1 = downsample(image, LEVEL1_DOWNSAMPLE)
    ppcm = 1e4 / MPP  # pixels per centimetre
    with tifffile.TiffWriter(path, bigtiff=False) as tif:
        _write_page(tif, image, aperio_description(w, h), tiled=True, ppcm=ppcm)
        _write_page(tif, thumb, aperio_description(w, h, (thumb.shape[1], thumb.shape[0])), tiled=False)
        level1_desc = aperio_description(w, h, (level1.shape[1], level1.shape[0]))
        _write_page(tif, level1, level1_desc, tiled=True, ppcm=ppcm / LEVEL1_DOWNSAMPLE)


def _write_page(
    tif: tifffile.TiffWriter, data: np.ndarray, description: str, *, tiled: bool, ppcm: float | None = None
) -> None:
    """One JPEG-compressed RGB page (YCbCr 4:2:0 inside the JPEG stream, as tifffile writes it)."""
    tif.write(
        data,
        photometric="rgb",
        compression="jpeg",
        compressionargs={"level": JPEG_QUALITY},
        tile=(TILE, TILE) if tiled else None,
        description=description,
        resolution=(ppcm, ppcm) if ppcm is not None else None,
        resolutionunit="CENTIMETER" if ppcm is not None else None,
        metadata=None,
    )


def check_svs(path: Path, expect: np.ndarray) -> None:
    """Read the slide back with OpenSlide and tiffslide: vendor, mpp, objective, levels and pixels."""
    h, w = expect.shape[:2]
    with openslide.OpenSlide(str(path)) as slide:
        props = slide.properties
        problems = []
        if props.get("openslide.vendor") != "aperio":
            problems.append(f"vendor {props.get('openslide.vendor')}")
        if abs(float(props.get("openslide.mpp-x", "nan")) - MPP) > 1e-6:
            problems.append(f"mpp {props.get('openslide.mpp-x')}")
        if props.get("openslide.objective-power") != str(OBJECTIVE):
            problems.append(f"objective {props.get('openslide.objective-power')}")
        if slide.dimensions != (w, h) or slide.level_count != 2:
            problems.append(f"levels {slide.level_dimensions}")
        got = np.asarray(slide.read_region((0, 0), 0, (w, h)).convert("RGB"), dtype=np.int16)
        if "thumbnail" not in slide.associated_images:
            problems.append("no thumbnail")
    diff = np.abs(got - expect.astype(np.int16))
    if diff.mean() > 2.0:  # JPEG quality 90 leaves about 1 code value on average
        problems.append(f"pixels differ by {diff.mean():.2f} on average")
    with tiffslide.TiffSlide(path) as ts:
        if (
            ts.properties.get("tiffslide.mpp-x") is None
            or abs(float(ts.properties["tiffslide.mpp-x"]) - MPP) > 1e-6
        ):
            problems.append(f"tiffslide mpp {ts.properties.get('tiffslide.mpp-x')}")
        if ts.level_dimensions[0] != (w, h) or ts.level_count != 2:
            problems.append(f"tiffslide levels {ts.level_dimensions}")
    if problems:
        raise SlideError(f"{path}: written slide does not read back as expected: {'; '.join(problems)}")


def draw_map(path: Path, original: np.ndarray, blurred: np.ndarray, regions: tuple[Region, ...]) -> None:
    """Thumbnail of the blurred slide with the boxes; per region an original | blurred crop at full size."""
    scale = 4
    crop = 224
    gap = 8
    row = crop + 22
    thumb = Image.fromarray(downsample(blurred, scale))
    draw = ImageDraw.Draw(thumb)
    canvas = Image.new("RGB", (thumb.width + gap + 2 * crop + gap, max(thumb.height, 3 * row)), "white")
    cdraw = ImageDraw.Draw(canvas)
    for i, region in enumerate(regions):
        colour = COLOURS[region.label]
        x, y, w, h = region.box
        draw.rectangle([x // scale, y // scale, (x + w) // scale, (y + h) // scale], outline=colour, width=3)
        tx, ty = x // scale + 5, y // scale + 5
        draw.rectangle([tx - 2, ty - 2, tx + 6 * len(region.label) + 2, ty + 11], fill="white")
        draw.text((tx, ty), region.label, fill=colour)
        cx, cy = x + w // 2 - crop // 2, y + h // 2 - crop // 2
        ox, top = thumb.width + gap, i * row
        canvas.paste(Image.fromarray(original[cy : cy + crop, cx : cx + crop]), (ox, top + 18))
        canvas.paste(Image.fromarray(blurred[cy : cy + crop, cx : cx + crop]), (ox + crop + gap, top + 18))
        cdraw.text((ox, top + 4), f"{region.label}: original", fill=(0, 0, 0))
        cdraw.text((ox + crop + gap, top + 4), "blurred", fill=colour)
    canvas.paste(thumb, (0, 0))
    canvas.save(path, optimize=True)


def main(argv: list[str] | None = None) -> int:
    """Read the source slide, blur the three regions, write and check the slide, region map and picture."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--source", type=Path, default=HERE / SOURCE_NAME, help="the original slide")
    parser.add_argument("--out-dir", type=Path, default=HERE, help="where the outputs go")
    args = parser.parse_args(argv)
    source: Path = args.source
    if not source.is_file():
        raise SlideError(
            f"{source}: not found; copy it from ../shared/data/slides/ (see sample_slides/SOURCES.md)"
        )
    original = read_level0(source)
    blurred = original.copy()
    rng = np.random.default_rng(SEED)
    records = [blur_region(blurred, region, rng) for region in REGIONS]

    out: Path = args.out_dir
    svs = out / f"{OUTPUT_STEM}.svs"
    write_svs(svs, blurred)
    check_svs(svs, blurred)
    draw_map(out / f"{OUTPUT_STEM}.regions.png", original, blurred, REGIONS)
    optics = asdict(OPTICS)
    optics["dof_um"] = round(OPTICS.dof_um, 4)
    region_map = {
        "slide": svs.name,
        "width": int(original.shape[1]),
        "height": int(original.shape[0]),
        "mpp": MPP,
        "objective_power": OBJECTIVE,
        "ground_truth": {
            "file": source.name,
            "sha256": hashlib.sha256(source.read_bytes()).hexdigest(),
            "pixels": "level 0 decoded with OpenSlide; outside the regions the blurred slide holds the same "
            f"pixels re-encoded as JPEG quality {JPEG_QUALITY}",
        },
        "optics": optics,
        "class_definitions": "in_focus |z| <= 0.5 DOF and motion <= 2 px; "
        "defocus |z| >= 1 DOF and motion <= 2 px; motion |z| <= 0.5 DOF and motion >= 5 px; "
        "mixed |z| >= 1 DOF and motion >= 5 px",
        "regions": records,
        "generator": {
            "script": "sample_slides/make_blurred_sample.py",
            "seed": SEED,
            "wsi_deblur_version": __version__,
            "jpeg_quality": JPEG_QUALITY,
            "tile": TILE,
        },
    }
    (out / f"{OUTPUT_STEM}.regions.json").write_text(json.dumps(region_map, indent=2) + "\n")
    print(f"wrote {svs} and its region map ({len(records)} regions)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
