"""The TIFF written by libvips from the input slide itself, with restored blocks put in place.

Real slides: CMU-1-Small-Region (Aperio SVS, JPEG tiles), a JPEG 2000 SVS (TCGA), a DICOM file and an NDPI, read
back with OpenSlide, tiffslide and tifffile.
"""

from __future__ import annotations

from functools import partial
from pathlib import Path

import numpy as np
import openslide
import pytest
import tifffile
import tiffslide

from wsi_deblur.slide import open_slide
from wsi_deblur.writers.vipstiff import RASTER_SUFFIX, same_level0, write_raster, write_tiff_from_slide, writes

BLOCK = 1024
MPP = 0.499


@pytest.fixture(scope="module")
def svs(slides_dir: Path) -> Path:
    return slides_dir / "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def level0(svs: Path) -> np.ndarray:
    with open_slide(svs, reader="openslide") as source:
        width, height = source.dimensions
        return source.read(0, 0, 0, width, height)


@pytest.mark.parametrize("reader", ["openslide", "tiffslide"])
def test_same_level0_where_libvips_decodes_as_the_reader(svs: Path, reader: str) -> None:
    with open_slide(svs, reader=reader) as source:
        dims = source.dimensions

        read = partial(source.read, 0)

        def shifted(x: int, y: int, w: int, h: int) -> np.ndarray:
            return source.read(0, x + 1, y, w, h)

        assert same_level0(svs, dims, read)
        assert not same_level0(svs, dims, shifted)  # one pixel off is not the same level 0
        assert not same_level0(svs, (dims[0] - 1, dims[1]), read)


def test_same_level0_refuses_what_libvips_does_not_decode(slides_dir: Path) -> None:
    # JPEG 2000 tiles (libvips is built without them), a DICOM file (not a TIFF), and an NDPI whose level 0 is
    # one JPEG strip (libvips decodes it as the reader does, but would decode the whole level for each region)
    for name in ("TCGA-CR-7395-01A-01-TS1.svs", "boxes_0.dcm", "test3-DAPI-2-387.ndpi"):
        path = slides_dir / name
        with open_slide(path, reader="openslide") as source:
            assert not same_level0(path, source.dimensions, partial(source.read, 0)), name


def test_libvips_writes_the_lossless_codecs_it_has() -> None:
    assert writes("jpeg") and writes("deflate") and writes("none")
    assert not writes("webp-in-a-slide")


def _restored_blocks(level0: np.ndarray, folder: Path) -> dict[tuple[int, int], Path]:
    """Three blocks replaced by their colour negative: two side by side, one clipped at the slide's corner."""
    height, width = level0.shape[:2]
    blocks = {}
    for y, x in ((BLOCK, 0), (BLOCK, BLOCK), (BLOCK * (height // BLOCK), BLOCK * (width // BLOCK))):
        pixels = 255 - level0[y : y + BLOCK, x : x + BLOCK]
        path = folder / f"{y}_{x}{RASTER_SUFFIX}"
        write_raster(path, pixels)
        blocks[(y, x)] = path
    return blocks


def test_tiff_from_slide_is_the_slide_with_the_restored_blocks(svs: Path, level0: np.ndarray, tmp_path: Path) -> None:
    height, width = level0.shape[:2]
    blocks = _restored_blocks(level0, tmp_path)
    assert not list(tmp_path.glob("*.tmp*")), "a raster is written whole, then renamed"
    expected = level0.copy()
    for (y, x) in blocks:
        expected[y : y + BLOCK, x : x + BLOCK] = 255 - level0[y : y + BLOCK, x : x + BLOCK]
    out = tmp_path / "out.tif"
    label = np.full((60, 90, 3), 200, np.uint8)
    write_tiff_from_slide(svs, out, (width, height), BLOCK, blocks, MPP, compression="deflate",
                          description="wsi-deblur test", associated={"label": label})

    with tifffile.TiffFile(out) as tif:
        first = tif.pages.first
        assert tif.is_bigtiff and first.is_tiled and first.tilewidth == 512
        assert first.description == "wsi-deblur test"
        assert np.array_equal(first.asarray(), expected)  # lossless: the blocks in place, the rest untouched
        reduced = tif.pages[1].asarray()
        assert getattr(tif.pages[1], "subfiletype", None) == 1
        last = tif.pages[len(tif.pages) - 1]
        assert last.description == "label" and np.array_equal(last.asarray(), label)
    # level 1 is the 2 x 2 mean of level 0, rounded half up, like the working pyramid's
    h, w = reduced.shape[:2]
    cells = expected[: 2 * h, : 2 * w].astype(np.uint16)
    mean = (cells[0::2, 0::2] + cells[0::2, 1::2] + cells[1::2, 0::2] + cells[1::2, 1::2] + 2) >> 2
    assert np.array_equal(reduced, mean.astype(np.uint8))

    with openslide.OpenSlide(out) as slide:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert slide.dimensions == (width, height) and slide.level_count > 1
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(MPP, abs=1e-3)
    with tiffslide.TiffSlide(out) as ts:
        assert float(ts.properties["tiffslide.mpp-y"]) == pytest.approx(MPP, abs=1e-3)


def test_jpeg_tiff_from_slide_reads_back_close(svs: Path, level0: np.ndarray, tmp_path: Path) -> None:
    height, width = level0.shape[:2]
    out = tmp_path / "out.tif"
    write_tiff_from_slide(svs, out, (width, height), BLOCK, {}, MPP, quality=90)
    with openslide.OpenSlide(out) as slide:
        decoded = np.asarray(slide.read_region((0, 0), 0, (width, height)).convert("RGB"))
    assert np.abs(decoded.astype(int) - level0).mean() < 2  # one JPEG q90 generation


def test_tiff_from_slide_refuses_a_raster_of_the_wrong_size(svs: Path, level0: np.ndarray, tmp_path: Path) -> None:
    height, width = level0.shape[:2]
    wrong = tmp_path / f"0_0{RASTER_SUFFIX}"
    write_raster(wrong, level0[:100, :100])
    with pytest.raises(ValueError, match=str(wrong)):
        write_tiff_from_slide(svs, tmp_path / "out.tif", (width, height), BLOCK, {(0, 0): wrong}, MPP)
    with pytest.raises(ValueError, match="uint8"):
        write_raster(tmp_path / "x.v", level0[:10, :10].astype(np.float32))
    with pytest.raises(ValueError, match="compression"):
        write_tiff_from_slide(svs, tmp_path / "out.tif", (width, height), BLOCK, {}, MPP, compression="webp")
