"""Slide reading over OpenSlide and tiffslide, on the real slides in ../shared/data/slides."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import tifffile
from PIL import Image

from wsi_deblur._types import SlideError
from wsi_deblur.slide import (
    READERS,
    STRIP_BYTES,
    cached_slide,
    describe,
    open_slide,
)
from wsi_deblur.slide_pixels import composite

# tiffslide warns that it parses NDPI metadata only partly; the tests look at what it does parse
pytestmark = pytest.mark.filterwarnings("ignore:hamamatsu-format metadata parsing:UserWarning")

CMU = "CMU-1-Small-Region.svs"
TCGA = "TCGA-CR-7395-01A-01-TS1.svs"
SMALL = "small.svs"
BOXES = "boxes.tiff"
NDPI = "test3-DAPI-2-387.ndpi"
DICOM = "boxes_0.dcm"
ALL_SLIDES = (CMU, TCGA, SMALL, BOXES, NDPI, DICOM, "boxes_1.dcm")
TIFF_SLIDES = (CMU, TCGA, SMALL, BOXES, NDPI)

#: Largest difference allowed between two JPEG decoders (libjpeg-turbo builds may round the IDCT differently);
#: on this machine both readers decode every sample slide identically.
JPEG_TOLERANCE = 2


def _writable_copy(src: Path, dst: Path) -> Path:
    shutil.copyfile(src, dst)
    os.chmod(dst, 0o644)
    return dst


def _assert_slide_error(excinfo: pytest.ExceptionInfo[SlideError], path: Path) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    assert path.name in message
    return message


@pytest.mark.parametrize("name", ALL_SLIDES)
def test_every_slide_opens_with_openslide(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name) as source:
        assert source.reader == "openslide"
        assert source.path == str(slides_dir / name)
        assert source.level_count == len(source.level_dimensions) == len(source.level_downsamples) >= 1
        assert source.dimensions == source.level_dimensions[0]
        assert source.level_downsamples[0] == 1.0
        w, h = source.level_dimensions[-1]
        region = source.read(source.level_count - 1, 0, 0, w, h)
        assert region.shape == (h, w, 3) and region.dtype == np.uint8
        assert all(isinstance(v, str) for v in source.properties.values())


@pytest.mark.parametrize("name", TIFF_SLIDES)
def test_every_tiff_slide_opens_with_tiffslide(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name, reader="tiffslide") as source:
        assert source.reader == "tiffslide"
        assert source.dimensions == source.level_dimensions[0]
        region = source.read(0, 0, 0, 8, 8)
        assert region.shape == (8, 8, 3) and region.dtype == np.uint8
        # tiffslide leaves unknown values as None; the source keeps strings only
        assert all(isinstance(v, str) for v in source.properties.values())


@pytest.mark.parametrize("name", [CMU, BOXES, TCGA])
def test_readers_agree_on_levels(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name) as a, open_slide(slides_dir / name, reader="tiffslide") as b:
        assert a.level_dimensions == b.level_dimensions
        assert a.level_downsamples == pytest.approx(b.level_downsamples)
        assert a.associated_names == b.associated_names


def test_cmu_metadata(slides_dir: Path) -> None:
    for reader in READERS:
        with open_slide(slides_dir / CMU, reader=reader) as source:
            assert source.dimensions == (2220, 2967)
            assert source.mpp == pytest.approx(0.499)
            assert source.slide_mpp == pytest.approx(0.499)
            assert source.objective_power == pytest.approx(20.0)
            assert source.vendor == "aperio"
            assert source.background == (255, 255, 255)
            assert source.bounds is None
            assert source.associated_names == ("label", "macro", "thumbnail")


@pytest.mark.parametrize("reader", READERS)
def test_non_square_pixels_are_recorded(slides_dir: Path, tmp_path: Path, reader: str) -> None:
    # a tiled TIFF of real CMU-1 pixels, 20000 x 19000 px/cm: 0.5 um/px wide, 0.526 um/px high
    with open_slide(slides_dir / CMU) as cmu:
        pixels = cmu.read(0, 1000, 1500, 256, 256)
    path = tmp_path / "anisotropic.tif"
    tifffile.imwrite(
        path, pixels, tile=(64, 64), photometric="rgb", compression="zlib",
        resolution=(20000, 19000), resolutionunit="CENTIMETER",
    )  # fmt: skip
    with open_slide(path, reader=reader) as source:
        assert source.mpp == pytest.approx(0.5) and source.slide_mpp == pytest.approx(0.5)
        assert float(source.properties["wsi_deblur.mpp-y"]) == pytest.approx(1e4 / 19000)
        assert describe(source)["mpp_y"] == pytest.approx(1e4 / 19000)
        np.testing.assert_array_equal(source.read(0, 0, 0, 256, 256), pixels)
    with open_slide(slides_dir / CMU, reader=reader) as square:
        assert "wsi_deblur.mpp-y" not in square.properties


def test_mpp_absent_and_override(slides_dir: Path) -> None:
    for reader in READERS:
        with open_slide(slides_dir / TCGA, reader=reader) as source:
            assert source.mpp is None and source.slide_mpp is None
        with open_slide(slides_dir / TCGA, reader=reader, mpp=0.25) as source:
            assert source.mpp == 0.25 and source.slide_mpp is None
        with open_slide(slides_dir / CMU, reader=reader, mpp=0.25) as source:
            assert source.mpp == 0.25 and source.slide_mpp == pytest.approx(0.499)
    for bad in (0.0, -1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="mpp"):
            open_slide(slides_dir / CMU, mpp=bad)


@pytest.mark.parametrize(
    ("name", "regions"),
    [
        (CMU, [(0, 1000, 1500, 300, 200), (0, 1500, 300, 300, 300)]),
        (TCGA, [(0, 1000, 1000, 400, 300), (0, 2000, 1500, 400, 300)]),
        (BOXES, [(0, 10, 20, 200, 150), (1, 7, 9, 100, 80), (2, 0, 0, 75, 62), (3, 0, 0, 37, 31)]),
        (NDPI, [(0, 1000, 1000, 300, 300), (2, 100, 100, 300, 300)]),
    ],
)
def test_readers_agree_on_pixels(slides_dir: Path, name: str, regions: list[tuple[int, ...]]) -> None:
    with open_slide(slides_dir / name) as a, open_slide(slides_dir / name, reader="tiffslide") as b:
        for region in regions:
            pa, pb = a.read(*region), b.read(*region)
            assert pa.shape == pb.shape == (region[4], region[3], 3)
            assert int(np.abs(pa.astype(np.int16) - pb).max()) <= JPEG_TOLERANCE, region
            assert pa.std() > 5  # real image content, not a blank that trivially agrees


@pytest.mark.parametrize("reader", READERS)
def test_levels_are_read_in_their_own_coordinates(slides_dir: Path, reader: str) -> None:
    path = slides_dir / BOXES
    with tifffile.TiffFile(path) as tif, open_slide(path, reader=reader) as source:
        for level in range(source.level_count):
            stored = tif.series[0].levels[level].asarray()[..., :3]
            w, h = source.level_dimensions[level]
            np.testing.assert_array_equal(source.read(level, 0, 0, w, h), stored)
        # level 1 (downsample exactly 2): an offset read is the matching crop of the stored level
        stored1 = tif.series[0].levels[1].asarray()[..., :3]
        np.testing.assert_array_equal(source.read(1, 40, 30, 50, 60), stored1[30:90, 40:90])
        # and it shows the same picture as level 0 halved
        level0 = source.read(0, 0, 0, 300, 250).astype(np.float32)
        halved = level0.reshape(125, 2, 150, 2, 3).mean(axis=(1, 3))
        assert float(np.abs(halved - stored1).mean()) < 3


@pytest.mark.parametrize("reader", READERS)
def test_out_of_bounds_reads_give_background(slides_dir: Path, reader: str) -> None:
    with open_slide(slides_dir / CMU, reader=reader) as source:
        w, h = source.dimensions
        assert (source.read(0, w + 10, h + 10, 32, 32) == 255).all()
        assert (source.read(0, -100, -100, 50, 50) == 255).all()
        corner = source.read(0, -20, -30, 100, 100)
        assert (corner[:30] == 255).all() and (corner[:, :20] == 255).all()
        np.testing.assert_array_equal(corner[30:, 20:], source.read(0, 0, 0, 80, 70))
        edge = source.read(0, w - 40, h - 40, 100, 100)
        np.testing.assert_array_equal(edge[:40, :40], source.read(0, w - 40, h - 40, 40, 40))
        assert (edge[40:] == 255).all() and (edge[:, 40:] == 255).all()
        with pytest.raises(ValueError, match="level 5"):
            source.read(5, 0, 0, 10, 10)


def test_composite_over_background() -> None:
    rgba = np.array([[[200, 100, 0, 255], [200, 100, 0, 0], [200, 100, 0, 128]]], dtype=np.uint8)
    out = composite(rgba, (255, 255, 255))
    assert out.dtype == np.uint8 and out.shape == (1, 3, 3)
    assert out[0, 0].tolist() == [200, 100, 0]
    assert out[0, 1].tolist() == [255, 255, 255]
    # un-premultiplied: half-transparent colour lands half way to the background
    assert out[0, 2].tolist() == [227, 177, 127]  # 200*128/255 + 255*127/255 = 227.4, ...


@pytest.mark.parametrize("name", [CMU, NDPI, TCGA, SMALL])
def test_thumbnail_size(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name) as source:
        w, h = source.dimensions
        for max_size in (256, 97):
            thumb = source.thumbnail(max_size)
            assert thumb.dtype == np.uint8 and thumb.ndim == 3 and thumb.shape[2] == 3
            assert max(thumb.shape[:2]) == min(max_size, max(w, h))
            assert thumb.shape[1] / thumb.shape[0] == pytest.approx(w / h, rel=0.02)


def test_thumbnail_uses_a_low_level(slides_dir: Path) -> None:
    with open_slide(slides_dir / NDPI) as source:
        thumb = source.thumbnail(300)
        level = source._best_level(thumb.shape[1], thumb.shape[0])
        # 3968x4864 -> 245x300: level 4 (248x304) is the smallest level that still covers it
        assert level == 4
        assert source.level_dimensions[level] == (248, 304)


def test_single_level_thumbnail_in_strips_matches_whole_image(slides_dir: Path) -> None:
    with open_slide(slides_dir / CMU) as source:
        w, h = source.dimensions
        assert w * h * 3 > STRIP_BYTES  # the thumbnail is read in more than one strip
        thumb = source.thumbnail(300)
        full = Image.fromarray(source.read(0, 0, 0, w, h))
        factor = min(w // thumb.shape[1], h // thumb.shape[0])
        reference = np.asarray(full.reduce(factor).resize(thumb.shape[1::-1], Image.Resampling.BOX))
        assert float(np.abs(thumb.astype(np.int16) - reference).mean()) < 0.5


@pytest.mark.parametrize(
    ("name", "expected"),
    [(NDPI, False), (CMU, True), (TCGA, True), (SMALL, True)],
)
@pytest.mark.parametrize("reader", READERS)
def test_brightfield_verdict(slides_dir: Path, name: str, expected: bool, reader: str) -> None:
    with open_slide(slides_dir / name, reader=reader) as source:
        assert source.is_brightfield is expected
        reason = source.brightfield_reason
        assert ("fluorescence" if not expected else "brightfield") in reason
        assert "\n" not in reason and len(reason) < 160


@pytest.mark.parametrize("name", [BOXES, DICOM])
def test_brightfield_on_synthetic_slides_does_not_fail(slides_dir: Path, name: str) -> None:
    with open_slide(slides_dir / name) as source:
        assert isinstance(source.is_brightfield, bool)
        assert source.brightfield_reason


def test_dicom_illumination_metadata(slides_dir: Path) -> None:
    with open_slide(slides_dir / DICOM) as source:
        assert source.is_brightfield
        assert source.brightfield_reason.startswith("DICOM illumination type is brightfield")


@pytest.mark.parametrize("reader", READERS)
def test_describe_is_json(slides_dir: Path, reader: str) -> None:
    with open_slide(slides_dir / CMU, reader=reader) as source:
        summary = json.loads(json.dumps(describe(source)))
    assert summary["reader"] == reader
    assert summary["vendor"] == "aperio" and summary["format"] == "aperio"
    assert (summary["width"], summary["height"]) == (2220, 2967)
    assert summary["levels"] == [{"level": 0, "width": 2220, "height": 2967, "downsample": 1.0}]
    assert summary["mpp"] == pytest.approx(0.499)
    assert summary["objective_power"] == pytest.approx(20.0)
    assert summary["background"] == "#ffffff"
    assert {a["name"]: (a["width"], a["height"]) for a in summary["associated"]} == {
        "label": (387, 463),
        "macro": (1280, 431),
        "thumbnail": (574, 768),
    }
    assert summary["brightfield"] is True and summary["brightfield_reason"]


def test_describe_fluorescence(slides_dir: Path) -> None:
    with open_slide(slides_dir / NDPI) as source:
        summary = describe(source)
    assert summary["brightfield"] is False
    assert len(summary["levels"]) == 7  # type: ignore[arg-type]
    assert summary["objective_power"] == pytest.approx(40.0)


@pytest.mark.parametrize("reader", READERS)
def test_read_associated(slides_dir: Path, reader: str) -> None:
    path = slides_dir / CMU
    with open_slide(path, reader=reader) as source:
        label = source.read_associated("label")
        assert label.shape == (463, 387, 3) and label.dtype == np.uint8
        with pytest.raises(SlideError) as excinfo:
            source.read_associated("barcode")
        assert "label, macro, thumbnail" in _assert_slide_error(excinfo, path)


@pytest.mark.parametrize("reader", READERS)
def test_reading_does_not_modify_the_file(slides_dir: Path, tmp_path: Path, reader: str) -> None:
    path = _writable_copy(slides_dir / CMU, tmp_path / CMU)
    before = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, path.stat().st_size)
    with open_slide(path, reader=reader) as source:
        source.read(0, 100, 100, 512, 512)
        source.thumbnail(128)
        source.read_associated("macro")
        describe(source)
    after = (hashlib.sha256(path.read_bytes()).hexdigest(), path.stat().st_mtime_ns, path.stat().st_size)
    assert after == before


def test_read_after_close(slides_dir: Path) -> None:
    source = open_slide(slides_dir / SMALL)
    source.close()
    source.close()  # closing twice is harmless
    with pytest.raises(SlideError, match="closed"):
        source.read(0, 0, 0, 4, 4)


def test_cached_slide_reopens_a_replaced_file(slides_dir: Path, tmp_path: Path) -> None:
    path = _writable_copy(slides_dir / SMALL, tmp_path / "slide.svs")
    first = cached_slide(str(path))
    assert cached_slide(str(path)) is first
    assert cached_slide(str(path), reader="tiffslide") is not first
    assert cached_slide(str(path), mpp=0.25) is not first
    # same size and content, new mtime: reopened
    os.utime(path, ns=(path.stat().st_atime_ns, path.stat().st_mtime_ns + 10**9))
    second = cached_slide(str(path))
    assert second is not first and second.dimensions == (16, 16)
    # replaced by another slide
    _writable_copy(slides_dir / BOXES, path)
    third = cached_slide(str(path))
    assert third is not second and third.dimensions == (300, 250)
    assert cached_slide(str(path)) is third


# -- errors --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("reader", READERS)
def test_missing_file(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "nowhere.svs"
    with pytest.raises(SlideError) as excinfo:
        open_slide(path, reader=reader)
    assert "no such file" in _assert_slide_error(excinfo, path)


@pytest.mark.parametrize("reader", READERS)
def test_directory(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "scans.svs"
    path.mkdir()
    with pytest.raises(SlideError) as excinfo:
        open_slide(path, reader=reader)
    assert "directory" in _assert_slide_error(excinfo, path)


@pytest.mark.parametrize("reader", READERS)
def test_text_file_named_svs(tmp_path: Path, reader: str) -> None:
    path = tmp_path / "notes.svs"
    path.write_text("Case 12, block A3: H&E, scanned twice.\n")
    with pytest.raises(SlideError) as excinfo:
        open_slide(path, reader=reader)
    assert "not a slide" in _assert_slide_error(excinfo, path)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize(("name", "fraction"), [(CMU, 0.3), (CMU, 0.9), (TCGA, 0.95), (NDPI, 0.9)])
def test_truncated_file(slides_dir: Path, tmp_path: Path, reader: str, name: str, fraction: float) -> None:
    data = (slides_dir / name).read_bytes()
    path = tmp_path / f"cut-{name}"
    path.write_bytes(data[: int(len(data) * fraction)])
    with pytest.raises(SlideError) as excinfo:
        open_slide(path, reader=reader)
    assert "truncated" in _assert_slide_error(excinfo, path)


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("name", [CMU, TCGA])
def test_damaged_tile_found_when_opening(slides_dir: Path, tmp_path: Path, reader: str, name: str) -> None:
    # headers intact, so the library opens the file; the last level-0 tile (JPEG / JPEG 2000) is zeroed
    path = _writable_copy(slides_dir / name, tmp_path / f"damaged-{name}")
    with tifffile.TiffFile(path) as tif:
        offset = int(tif.pages[0].dataoffsets[-1])
        count = int(tif.pages[0].databytecounts[-1])
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(count))
    with pytest.raises(SlideError) as excinfo:
        open_slide(path, reader=reader)
    assert "cannot decode" in _assert_slide_error(excinfo, path)


def test_damaged_tile_found_when_reading(slides_dir: Path, tmp_path: Path) -> None:
    # a tile in the middle of level 0 is not among those checked at opening: read() reports it
    path = _writable_copy(slides_dir / CMU, tmp_path / "damaged.svs")
    with tifffile.TiffFile(path) as tif:
        page = tif.pages.first
        columns = -(-page.imagewidth // page.tilewidth)
        index = 5 * columns + 4  # tile row 5, column 4
        offset, count = int(page.dataoffsets[index]), int(page.databytecounts[index])
        x, y = 4 * page.tilewidth, 5 * page.tilelength
    with open(path, "r+b") as handle:
        handle.seek(offset)
        handle.write(bytes(count))
    for reader in READERS:
        with open_slide(path, reader=reader) as source:
            with pytest.raises(SlideError) as excinfo:
                source.read(0, x, y, 64, 64)
            _assert_slide_error(excinfo, path)


def test_unknown_reader(slides_dir: Path) -> None:
    with pytest.raises(ValueError) as excinfo:
        open_slide(slides_dir / CMU, reader="bioformats")
    message = str(excinfo.value)
    assert all(name in message for name in READERS)


def test_tiffslide_refuses_dicom(slides_dir: Path) -> None:
    path = slides_dir / DICOM
    with pytest.raises(SlideError) as excinfo:
        open_slide(path, reader="tiffslide")
    assert "openslide" in _assert_slide_error(excinfo, path)


def test_direct_level0_reads_give_openslides_pixels(slides_dir: Path, sample_slides: Path, tmp_path: Path) -> None:
    """Level 0 of a JPEG-tiled Aperio or generic TIFF is decoded directly, bit for bit what OpenSlide gives
    (regions across tile borders and the slide's edges too); JPEG 2000 SVS and other formats stay with
    OpenSlide."""
    import pyvips

    from wsi_deblur.slide import _OpenSlideSource
    from wsi_deblur.slide_tiles import JpegLevel0

    # a libvips pyramid (generic TIFF, YCbCr JPEG in 256 px tiles) whose edges cut its tiles
    generic = tmp_path / "generic.tif"
    with open_slide(slides_dir / "CMU-1-Small-Region.svs") as small:
        rgb = np.ascontiguousarray(small.read(0, 0, 0, 1500, 1100))
    pyvips.Image.new_from_array(rgb).tiffsave(str(generic), tile=True, tile_width=256, tile_height=256,
                                              pyramid=True, compression="jpeg", Q=90)
    for path in (slides_dir / "CMU-1-Small-Region.svs", sample_slides / "CMU-1-blurred.svs", generic):
        fast = open_slide(path)
        assert fast.reader == "openslide" and fast._direct is not None
        plain = _OpenSlideSource(str(path), None)
        width, height = fast.dimensions
        rng = np.random.default_rng(5)
        boxes = [(0, 0, 512, 512), (width - 300, height - 200, 600, 500), (-40, 100, 300, 300)]
        boxes += [(int(rng.integers(0, width - 700)), int(rng.integers(0, height - 700)),
                   int(rng.integers(1, 700)), int(rng.integers(1, 700))) for _ in range(12)]
        for x, y, w, h in boxes:
            np.testing.assert_array_equal(fast.read(0, x, y, w, h), plain.read(0, x, y, w, h))
        if fast.level_count > 1:  # lower levels are OpenSlide's
            np.testing.assert_array_equal(fast.read(1, 0, 0, 200, 200), plain.read(1, 0, 0, 200, 200))
        fast.close()
        plain.close()
    assert open_slide(slides_dir / "TCGA-CR-7395-01A-01-TS1.svs")._direct is None  # JPEG 2000 tiles
    assert open_slide(slides_dir / "boxes.tiff")._direct is None  # not JPEG
    with pytest.raises(ValueError, match="not tiled JPEG"):
        JpegLevel0(str(slides_dir / "boxes.tiff"))
    reader = JpegLevel0(str(generic))
    with pytest.raises(ValueError, match="not inside"):
        reader.read(1400, 0, 200, 10)
    reader.close()
