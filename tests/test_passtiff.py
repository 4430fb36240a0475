"""JPEG TIFFs whose untouched tiles are the input's own bytes, with restored blocks encoded among them.

Real slides: the blurred CMU-1 sample (YCbCr 4:2:0 JPEG tiles, a 4x reduced level), pyramids libvips writes from
the CMU-1 scan (RGB JPEG at quality 90, YCbCr 4:2:0 below), and files that do not qualify. Read back with
OpenSlide, tiffslide, libvips and tifffile.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import openslide
import pytest
import pyvips
import tifffile
import tiffslide

from wsi_deblur.writers.passtiff import layout, write_tiff_passthrough
from wsi_deblur.writers.vipstiff import write_raster

BLOCK = 1024
MPP = 0.5


def _pyramid(source: Path, out: Path, **options: object) -> Path:
    image = pyvips.Image.new_from_file(os.fspath(source), page=0)
    image.tiffsave(os.fspath(out), tile=True, tile_width=256, tile_height=256, pyramid=True, **options)
    return out


@pytest.fixture(scope="module")
def rgb_pyramid(slides_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """libvips' JPEG pyramid at quality 90: RGB JPEG tiles (no colour transform), 2x levels."""
    out = tmp_path_factory.mktemp("rgb") / "rgb.tif"
    return _pyramid(slides_dir / "CMU-1-Small-Region.svs", out, compression="jpeg", Q=90)


def _segments(path: Path, page: int) -> list[bytes]:
    with tifffile.TiffFile(path) as tif:
        p = tif.pages[page]
        assert isinstance(p, tifffile.TiffPage)
        out = []
        for offset, count in zip(p.dataoffsets, p.databytecounts, strict=True):
            tif.filehandle.seek(offset)
            out.append(bytes(tif.filehandle.read(count)))
        return out


def _restore_one_block(slide: Path, folder: Path, y: int, x: int) -> tuple[dict, np.ndarray, tuple[int, int]]:
    """A restored block at (y, x): the slide's pixels with a patch inverted, as a raster."""
    with openslide.OpenSlide(slide) as s:
        width, height = s.dimensions
        w, h = min(BLOCK, width - x), min(BLOCK, height - y)
        pixels = np.asarray(s.read_region((x, y), 0, (w, h)).convert("RGB")).copy()
    pixels[100:400, 200:700] = 255 - pixels[100:400, 200:700]
    raster = folder / f"{y}_{x}.v"
    write_raster(raster, pixels)
    return {(y, x): raster}, pixels, (width, height)


def test_layout_qualifies_jpeg_pyramids_and_refuses_the_rest(
    sample_slides: Path, slides_dir: Path, rgb_pyramid: Path, tmp_path: Path
) -> None:
    ycbcr = layout(sample_slides / "CMU-1-blurred.svs")
    assert ycbcr is not None
    assert [(level.downsample, level.photometric, level.subsampling) for level in ycbcr] == [(1, 6, (2, 2)),
                                                                                              (4, 6, (2, 2))]
    rgb = layout(rgb_pyramid)
    assert rgb is not None and len(rgb) >= 4 and [level.downsample for level in rgb] == [2**i for i in range(len(rgb))]
    assert {level.photometric for level in rgb} == {2} and all(level.subsampling is None for level in rgb)
    # no tiled reduced level (CMU-1-Small-Region: level 0 and stripped thumbnail, label, macro), deflate tiles,
    # JPEG 2000 tiles, a striped level 0
    deflate = _pyramid(slides_dir / "CMU-1-Small-Region.svs", tmp_path / "deflate.tif", compression="deflate")
    for path in (slides_dir / "CMU-1-Small-Region.svs", deflate, slides_dir / "TCGA-CR-7395-01A-01-TS1.svs",
                 slides_dir / "test3-DAPI-2-387.ndpi", tmp_path / "missing.tif"):
        assert layout(path) is None, path


@pytest.mark.parametrize("kind", ["ycbcr", "rgb"])
def test_untouched_tiles_are_the_inputs_bytes_and_restored_pixels_read_back_everywhere(
    kind: str, sample_slides: Path, rgb_pyramid: Path, tmp_path: Path
) -> None:
    slide = sample_slides / "CMU-1-blurred.svs" if kind == "ycbcr" else rgb_pyramid
    levels = layout(slide)
    assert levels is not None
    restored, pixels, (width, height) = _restore_one_block(slide, tmp_path, 0, BLOCK)
    out = tmp_path / "out.tif"
    encoded = write_tiff_passthrough(slide, out, (width, height), BLOCK, restored, MPP, levels, quality=90,
                                     description="wsi-deblur test", associated={"label": np.zeros((40, 60, 3),
                                                                                                np.uint8)})
    assert encoded > 0
    # level 0: tiles that hold no restored pixel are the input's bytes; the others are encoded again
    th, tw = levels[0].tile
    across = -(-width // tw)
    changed = np.zeros(height, bool)[:, None] & np.zeros(width, bool)[None, :]
    changed[100:400, BLOCK + 200 : BLOCK + 700] = True
    theirs, ours = _segments(slide, levels[0].page), _segments(out, 0)
    assert len(theirs) == len(ours)
    for index, (a, b) in enumerate(zip(theirs, ours, strict=True)):
        y, x = (index // across) * th, (index % across) * tw
        assert (a == b) == (not changed[y : y + th, x : x + tw].any()), index
    # reduced levels: tiles away from the block are the input's bytes
    for i, level in enumerate(levels[1:], start=1):
        f = level.downsample
        across = -(-level.shape[1] // level.tile[1])
        for index, (a, b) in enumerate(zip(_segments(slide, level.page), _segments(out, i), strict=True)):
            y, x = (index // across) * level.tile[0] * f, (index % across) * level.tile[1] * f
            reached = y < BLOCK and x < 2 * BLOCK and x + level.tile[1] * f > BLOCK
            assert (a == b) == (not reached), (i, index)
    # every reader decodes the same pixels: the input's where untouched, the restored block within JPEG error
    with openslide.OpenSlide(out) as o, openslide.OpenSlide(slide) as s:
        assert o.level_dimensions == s.level_dimensions
        assert float(o.properties["openslide.mpp-x"]) == pytest.approx(MPP)
        ours_rgb = np.asarray(o.read_region((0, 0), 0, (width, height)).convert("RGB"))
        theirs_rgb = np.asarray(s.read_region((0, 0), 0, (width, height)).convert("RGB"))
    np.testing.assert_array_equal(ours_rgb[:, :BLOCK], theirs_rgb[:, :BLOCK])
    np.testing.assert_array_equal(ours_rgb[BLOCK:], theirs_rgb[BLOCK:])
    block = ours_rgb[:BLOCK, BLOCK : 2 * BLOCK].astype(int)
    assert np.abs(block - pixels[: block.shape[0], : block.shape[1]]).mean() < 1.5
    assert np.abs(block[100:400, 200:700] - pixels[100:400, 200:700]).mean() < 3.0  # the restored patch
    with tiffslide.TiffSlide(out) as t:
        np.testing.assert_array_equal(np.asarray(t.read_region((0, 0), 0, (width, height), as_array=True)),
                                      ours_rgb)
    vips = pyvips.Image.new_from_file(os.fspath(out), page=0)
    np.testing.assert_array_equal(
        np.ndarray(buffer=vips.write_to_memory(), dtype=np.uint8, shape=(height, width, 3)), ours_rgb)
    # reduced level 1 over the block: the restored block's rounded means (within JPEG error)
    f = levels[1].downsample
    with openslide.OpenSlide(out) as o:
        reduced = np.asarray(o.read_region((BLOCK, 0), 1, (BLOCK // f, BLOCK // f)).convert("RGB")).astype(int)
    expected = pixels.reshape(BLOCK // f, f, BLOCK // f, f, 3).mean(axis=(1, 3))
    assert np.abs(reduced - expected).mean() < 2.0
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].description == "wsi-deblur test"
        assert tif.pages[-1].description == "label" and tif.pages[-1].shape == (40, 60, 3)
