"""Writers: the block-written OME-Zarr pyramid and the TIFF exports, read back with independent libraries.

The source is a 1500 x 1100 px region of real tissue (CMU-1-Small-Region.svs); with 256-px chunks and 512-px
blocks no level is a multiple of either, and levels 2 and 3 come from odd-sized levels, so every clipped and
odd edge is exercised.
"""

from __future__ import annotations

import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import numpy as np
import openslide
import pytest
import tifffile
import tiffslide
import zarr
from ome_zarr_models import open_ome_zarr
from ome_zarr_models.v04.image import Image as ImageV04
from ome_zarr_models.v04.image_label import ImageLabel as ImageLabelV04
from ome_zarr_models.v05.image import Image as ImageV05
from ome_zarr_models.v05.image_label import ImageLabel as ImageLabelV05
from PIL import Image

from wsi_deblur.writers import (
    LABEL_NAME,
    TIFF_COMPRESSIONS,
    PyramidLayout,
    create_pyramid,
    downsample_block,
    finalize,
    pyramid_levels,
    read_region,
    write_block,
    write_pyramidal_tiff,
)

WIDTH, HEIGHT = 1500, 1100
CHUNK, BLOCK = 256, 512
MPP = 0.499  # CMU-1-Small-Region's own pixel size
PROVENANCE: dict[str, object] = {
    "software": "wsi-deblur test", "method": "dbmid", "models": {"dl_defocus": "1"}
}


@pytest.fixture(scope="module")
def tissue(slides_dir: Path) -> np.ndarray:
    """(1100, 1500, 3) uint8 RGB of real H&E tissue."""
    slide = openslide.OpenSlide(slides_dir / "CMU-1-Small-Region.svs")
    try:
        rgba = slide.read_region((300, 600), 0, (WIDTH, HEIGHT))
    finally:
        slide.close()
    rgb = np.asarray(rgba.convert("RGB"))
    assert rgb.std() > 20, "the region should hold tissue, not background"
    return rgb


@pytest.fixture(scope="module")
def label_map() -> np.ndarray:
    """(1100, 1500) uint8 action codes: rectangles of 1, 2 and 3 on 0, with edges off the block grid."""
    label = np.zeros((HEIGHT, WIDTH), np.uint8)
    label[100:700, 200:900] = 1
    label[301:1099, 801:1499] = 2
    label[555:611, 0:333] = 3
    return label


def _layout(ngff: str) -> PyramidLayout:
    levels = pyramid_levels(WIDTH, HEIGHT, 256)
    return PyramidLayout(WIDTH, HEIGHT, levels, chunk=CHUNK, block=BLOCK, ngff=ngff)


def _build(path: Path, layout: PyramidLayout, rgb: np.ndarray, label: np.ndarray) -> None:
    """The pipeline's sequence: create, level 0 block by block, the lower levels block by block, finalise."""
    create_pyramid(path, layout)
    for y, x, h, w in layout.blocks(0):
        write_block(path, 0, y, x, rgb[y : y + h, x : x + w], label[y : y + h, x : x + w])
    for level in range(1, layout.levels):
        for y, x, h, w in layout.blocks(level):
            downsample_block(path, level, y, x, h, w)
    finalize(path, layout, MPP, "CMU-1-Small-Region", PROVENANCE)


@pytest.fixture(scope="module", params=["0.4", "0.5"])
def pyramid(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, tissue: np.ndarray,
    label_map: np.ndarray,
) -> tuple[Path, PyramidLayout]:
    layout = _layout(request.param)
    path = tmp_path_factory.mktemp(f"ngff{request.param}") / "slide.ome.zarr"
    _build(path, layout, tissue, label_map)
    return path, layout


def _attrs(group_dir: Path) -> dict:
    """Group attributes straight from the JSON on disk, without zarr: .zattrs (v2) or zarr.json (v3)."""
    if (group_dir / ".zattrs").exists():
        return json.loads((group_dir / ".zattrs").read_text())
    attributes = json.loads((group_dir / "zarr.json").read_text())["attributes"]
    return {**attributes.pop("ome", {}), **attributes}


def _reference_halve(above: np.ndarray) -> np.ndarray:
    """2x2 mean rounded half up, in float, with odd edges repeated; (c, h, w) -> (c, ceil(h/2), ceil(w/2))."""
    c, h, w = above.shape
    padded = np.pad(above, ((0, 0), (0, h % 2), (0, w % 2)), mode="edge").astype(np.float64)
    mean = padded.reshape(c, padded.shape[1] // 2, 2, padded.shape[2] // 2, 2).mean(axis=(2, 4))
    return np.floor(mean + 0.5).astype(np.uint8)


# --- layout ------------------------------------------------------------------------------------------------


def test_pyramid_levels_halve_until_small() -> None:
    assert pyramid_levels(WIDTH, HEIGHT, 256) == 4  # 1500 -> 750 -> 375 -> 188
    assert pyramid_levels(512, 300) == 1
    assert pyramid_levels(513, 10) == 2
    assert pyramid_levels(100_000, 80_000) == 9  # 100000 / 2**8 = 391 <= 512


def test_layout_blocks_tile_each_level_exactly_once() -> None:
    layout = _layout("0.4")
    assert [layout.level_shape(level) for level in range(layout.levels)] == [
        (1100, 1500), (550, 750), (275, 375), (138, 188)
    ]
    for level in range(layout.levels):
        height, width = layout.level_shape(level)
        cover = np.zeros((height, width), np.int32)
        for y, x, h, w in layout.blocks(level):
            assert y % BLOCK == 0 and x % BLOCK == 0
            cover[y : y + h, x : x + w] += 1
        assert (cover == 1).all()


def test_layout_rejects_bad_geometry() -> None:
    with pytest.raises(ValueError, match="multiple of chunk"):
        PyramidLayout(100, 100, 1, chunk=256, block=384)
    with pytest.raises(ValueError, match="NGFF"):
        PyramidLayout(100, 100, 1, ngff="0.3")


# --- OME-Zarr ----------------------------------------------------------------------------------------------


def test_omezarr_validates(pyramid: tuple[Path, PyramidLayout]) -> None:
    path, layout = pyramid
    model = open_ome_zarr(str(path), version=layout.ngff)  # type: ignore[arg-type]
    assert isinstance(model, (ImageV04, ImageV05))
    assert isinstance(model, ImageV04) == (layout.ngff == "0.4")
    (multiscale,) = model.ome_attributes.multiscales
    assert [axis.name for axis in multiscale.axes] == ["c", "y", "x"]
    assert [axis.unit for axis in multiscale.axes[1:]] == ["micrometer", "micrometer"]
    assert [axis.type for axis in multiscale.axes] == ["channel", "space", "space"]
    datasets: list[Any] = list(multiscale.datasets)
    assert len(datasets) == layout.levels
    for level, dataset in enumerate(datasets):
        assert dataset.path == str(level)
        (scale,) = dataset.coordinateTransformations
        assert scale.scale == pytest.approx([1.0, MPP * 2**level, MPP * 2**level])


def test_omero_and_provenance_in_group_attributes(pyramid: tuple[Path, PyramidLayout]) -> None:
    path, _ = pyramid
    attrs = _attrs(path)
    assert "omero" in attrs, "the rendering metadata was dropped"
    channels = attrs["omero"]["channels"]
    assert [c["color"] for c in channels] == ["FF0000", "00FF00", "0000FF"]
    assert [c["label"] for c in channels] == ["red", "green", "blue"]
    for channel in channels:
        assert channel["active"] is True
        assert channel["window"] == {"start": 0, "end": 255, "min": 0, "max": 255}
    assert attrs["wsi_deblur"] == PROVENANCE


def test_level0_reads_back_bit_identical(pyramid: tuple[Path, PyramidLayout], tissue: np.ndarray) -> None:
    path, _ = pyramid
    level0 = zarr.open_array(str(path / "0"), mode="r")
    assert level0.shape == (3, HEIGHT, WIDTH) and level0.dtype == np.uint8
    assert np.array_equal(np.moveaxis(np.asarray(level0[:]), 0, 2), tissue)
    assert np.array_equal(read_region(path, 0, 700, 1300, 400, 200), tissue[700:1100, 1300:1500])


def test_storage_is_chunked_compressed_and_sharded(pyramid: tuple[Path, PyramidLayout]) -> None:
    path, layout = pyramid
    if layout.ngff == "0.4":
        meta = json.loads((path / "0" / ".zarray").read_text())
        assert meta["zarr_format"] == 2
        assert meta["chunks"] == [3, CHUNK, CHUNK]
        assert meta["dimension_separator"] == "/"
        assert meta["compressor"]["id"] == "blosc" and meta["compressor"]["cname"] == "zstd"
        # one file per chunk: ceil(1100 / 256) x ceil(1500 / 256)
        assert len(list((path / "0" / "0").glob("*/*"))) == 5 * 6
    else:
        meta = json.loads((path / "0" / "zarr.json").read_text())
        assert meta["zarr_format"] == 3
        assert meta["dimension_names"] == ["c", "y", "x"]
        (sharding,) = meta["codecs"]
        assert sharding["name"] == "sharding_indexed"
        assert meta["chunk_grid"]["configuration"]["chunk_shape"] == [3, BLOCK, BLOCK]
        assert sharding["configuration"]["chunk_shape"] == [3, CHUNK, CHUNK]
        assert "zstd" in json.dumps(sharding["configuration"]["codecs"])
        # one shard file per block
        shards = [p for p in (path / "0" / "c").rglob("*") if p.is_file()]
        assert len(shards) == len(layout.blocks(0)) == 3 * 3


def test_label_image_valid_and_complete(pyramid: tuple[Path, PyramidLayout], label_map: np.ndarray) -> None:
    path, layout = pyramid
    assert _attrs(path / "labels")["labels"] == [LABEL_NAME]
    group = zarr.open_group(str(path / "labels" / LABEL_NAME), mode="r")
    model = (ImageLabelV04 if layout.ngff == "0.4" else ImageLabelV05).from_zarr(group)
    image_label = model.ome_attributes.image_label
    assert image_label is not None and image_label.source is not None
    assert image_label.source.image == "../../"
    colors = {c.label_value: c.rgba for c in image_label.colors or ()}
    assert set(colors) == {0, 1, 2, 3} and colors[0] is not None and colors[0][3] == 0
    (multiscale,) = model.ome_attributes.multiscales
    assert len(multiscale.datasets) == layout.levels
    level0 = zarr.open_array(str(path / "labels" / LABEL_NAME / "0"), mode="r")
    assert level0.shape == (1, HEIGHT, WIDTH) and level0.dtype == np.uint8
    assert np.array_equal(np.asarray(level0[0]), label_map)


def test_downsampled_levels_match_reference(pyramid: tuple[Path, PyramidLayout]) -> None:
    path, layout = pyramid
    image = [np.asarray(zarr.open_array(str(path / str(lv)), mode="r")[:]) for lv in range(layout.levels)]
    label = [
        np.asarray(zarr.open_array(str(path / "labels" / LABEL_NAME / str(lv)), mode="r")[:])
        for lv in range(layout.levels)
    ]
    for level in range(1, layout.levels):
        assert image[level].shape[1:] == layout.level_shape(level)
        assert np.array_equal(image[level], _reference_halve(image[level - 1])), f"level {level}"
        above = np.pad(label[level - 1], ((0, 0), (0, label[level - 1].shape[1] % 2),
                                          (0, label[level - 1].shape[2] % 2)), mode="edge")
        cells = above.reshape(1, above.shape[1] // 2, 2, above.shape[2] // 2, 2)
        expected = np.bitwise_or.reduce(np.bitwise_or.reduce(cells, axis=4), axis=2)
        assert np.array_equal(label[level], expected), f"label level {level}"
    # where defocus (1) and motion (2) regions meet, the lower level records both (3)
    assert (label[1] == 3).sum() > (label[0][:, ::2, ::2] == 3).sum()


def test_write_block_refuses_unaligned_and_wrong_arrays(tmp_path: Path) -> None:
    layout = _layout("0.5")
    path = tmp_path / "p.zarr"
    create_pyramid(path, layout)
    good = np.zeros((BLOCK, BLOCK, 3), np.uint8)
    with pytest.raises(ValueError, match="whole"):
        write_block(path, 0, CHUNK, 0, good)  # chunk-aligned but inside a shard another task owns
    with pytest.raises(ValueError, match="uint8"):
        write_block(path, 0, 0, 0, good.astype(np.float32))
    with pytest.raises(ValueError, match="label"):
        write_block(path, 0, 0, 0, good, np.zeros((BLOCK, BLOCK), np.int8))
    with pytest.raises(ValueError, match="outside"):
        write_block(path, 0, 1024, 1024, good)
    with pytest.raises(ValueError, match="already exists"):
        create_pyramid(path, layout)


def test_recreated_pyramid_at_same_path_is_reopened(tmp_path: Path, tissue: np.ndarray) -> None:
    path = tmp_path / "p.zarr"
    small = PyramidLayout(600, 400, 1, chunk=CHUNK, block=BLOCK)
    create_pyramid(path, small)
    write_block(path, 0, 0, 0, tissue[:400, :512])
    assert read_region(path, 0, 0, 0, 400, 600).shape == (400, 600, 3)
    for child in sorted(path.rglob("*"), reverse=True):
        child.unlink() if child.is_file() else child.rmdir()
    path.rmdir()
    large = PyramidLayout(1000, 900, 1, chunk=CHUNK, block=BLOCK)
    create_pyramid(path, large)
    write_block(path, 0, 512, 512, tissue[512:900, 512:1000])
    assert np.array_equal(read_region(path, 0, 512, 512, 388, 488), tissue[512:900, 512:1000])


@pytest.mark.parametrize("ngff", ["0.4", "0.5"])
def test_scratch_pyramid_is_lz4_and_lossless(tmp_path: Path, tissue: np.ndarray, ngff: str) -> None:
    """A pyramid only read back for TIFFs is compressed for speed, and still gives back every pixel."""
    path = tmp_path / "scratch.zarr"
    layout = PyramidLayout(1000, 900, 1, chunk=CHUNK, block=BLOCK, ngff=ngff)
    create_pyramid(path, layout, scratch=True)
    write_block(path, 0, 0, 0, tissue[:BLOCK, :BLOCK])
    assert np.array_equal(read_region(path, 0, 0, 0, BLOCK, BLOCK), tissue[:BLOCK, :BLOCK])
    meta = (path / "0" / (".zarray" if ngff == "0.4" else "zarr.json")).read_text()
    assert "lz4" in meta and "zstd" not in meta


def test_finalize_twice_keeps_metadata_single(pyramid: tuple[Path, PyramidLayout]) -> None:
    path, layout = pyramid
    finalize(path, layout, MPP, "CMU-1-Small-Region", PROVENANCE)
    assert _attrs(path / "labels")["labels"] == [LABEL_NAME]
    assert len(_attrs(path)["multiscales"]) == 1
    with pytest.raises(ValueError, match="JSON"):
        finalize(path, layout, MPP, "x", {"bad": object()})


# --- TIFF --------------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def zarr04(tmp_path_factory: pytest.TempPathFactory, tissue: np.ndarray, label_map: np.ndarray) -> Path:
    path = tmp_path_factory.mktemp("tiffsrc") / "slide.ome.zarr"
    _build(path, _layout("0.4"), tissue, label_map)
    return path


def _mae(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


def _pil_jpeg(rgb: np.ndarray, quality: int) -> np.ndarray:
    buffer = io.BytesIO()
    Image.fromarray(rgb).save(buffer, "JPEG", quality=quality, subsampling=0)
    return np.asarray(Image.open(buffer).convert("RGB"))


def _level_image(zarr_path: Path, level: int) -> np.ndarray:
    return np.moveaxis(np.asarray(zarr.open_array(str(zarr_path / str(level)), mode="r")[:]), 0, 2)


def test_plain_tiff_opens_in_openslide_and_tiffslide(
    zarr04: Path, tmp_path: Path, tissue: np.ndarray
) -> None:
    layout = _layout("0.4")
    out = tmp_path / "slide.tif"
    label = np.asarray(Image.fromarray(tissue[:200, :300]).convert("L").convert("RGB"))
    tiles: list[int] = []
    write_pyramidal_tiff(zarr04, out, layout, MPP, tile=256, software="wsi-deblur test",
                         description="restored", associated={"label": label}, progress=tiles.append)
    dims = [layout.level_shape(level)[::-1] for level in range(layout.levels)]
    assert sum(tiles) == sum(-(-w // 256) * -(-h // 256) for w, h in dims)

    slide = openslide.OpenSlide(out)
    try:
        assert slide.properties["openslide.vendor"] == "generic-tiff"
        assert list(slide.level_dimensions) == dims
        assert float(slide.properties["openslide.mpp-x"]) == pytest.approx(MPP, abs=1e-3)
        assert float(slide.properties["openslide.mpp-y"]) == pytest.approx(MPP, abs=1e-3)
        level0 = np.asarray(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)))
        level2 = np.asarray(slide.read_region((0, 0), 2, dims[2]))
    finally:
        slide.close()
    assert (level0[..., 3] == 255).all()
    assert _mae(level0[..., :3], tissue) < 3  # JPEG q90
    # no worse than one JPEG q90 4:4:4 of the whole level by an independent encoder
    level2_source = _level_image(zarr04, 2)
    assert _mae(level2[..., :3], level2_source) <= 1.05 * _mae(_pil_jpeg(level2_source, 90), level2_source)

    with tiffslide.TiffSlide(out) as ts:
        assert list(ts.level_dimensions) == dims
        assert ts.properties["tiffslide.mpp-x"] == pytest.approx(MPP, abs=1e-3)
        assert ts.properties["tiffslide.mpp-y"] == pytest.approx(MPP, abs=1e-3)
        ts0 = np.asarray(ts.read_region((0, 0), 0, (WIDTH, HEIGHT)))[..., :3]
    assert _mae(ts0, tissue) < 3

    with tifffile.TiffFile(out) as tif:
        pages = [tif.pages[i] for i in range(len(tif.pages))]
        assert all(isinstance(page, tifffile.TiffPage) for page in pages)
        first = tif.pages.first
        assert first.is_tiled and first.tilewidth == 256 and first.compression == tifffile.COMPRESSION.JPEG
        assert first.description == "restored" and first.software == "wsi-deblur test"
        assert first.tags["ResolutionUnit"].value == tifffile.RESUNIT.CENTIMETER
        assert [getattr(page, "subfiletype", None) for page in pages] == [0, 1, 1, 1, 0]
        assert [s.shape[:2] for s in tif.series] == [(HEIGHT, WIDTH), (200, 300)]
        assert getattr(pages[layout.levels], "description", None) == "label"
        assert _mae(tif.series[1].asarray(), label) < 3


def test_zstd_tiff_is_lossless(zarr04: Path, tmp_path: Path, tissue: np.ndarray) -> None:
    layout = _layout("0.4")
    out = tmp_path / "slide.tiff"
    write_pyramidal_tiff(zarr04, out, layout, MPP, compression="zstd", tile=256)
    slide = openslide.OpenSlide(out)
    try:
        level0 = np.asarray(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)))[..., :3]
    finally:
        slide.close()
    assert np.array_equal(level0, tissue)
    with tiffslide.TiffSlide(out) as ts:
        for level in range(layout.levels):
            pixels = np.asarray(ts.read_region((0, 0), level, ts.level_dimensions[level]))[..., :3]
            assert np.array_equal(pixels, _level_image(zarr04, level)), f"level {level}"
    with tifffile.TiffFile(out) as tif:
        assert tif.pages[0].compression == tifffile.COMPRESSION.ZSTD


def test_ome_tiff_single_series_with_pyramid(zarr04: Path, tmp_path: Path, tissue: np.ndarray) -> None:
    layout = _layout("0.4")
    out = tmp_path / "slide.ome.tif"
    write_pyramidal_tiff(zarr04, out, layout, MPP, ome=True, tile=256, description="restored")
    with tifffile.TiffFile(out) as tif:
        assert tif.is_ome and len(tif.series) == 1
        series = tif.series[0]
        assert len(series.levels) == layout.levels
        expected = [layout.level_shape(level) for level in range(layout.levels)]
        assert [lv.shape[:2] for lv in series.levels] == expected
        assert len(tif.pages) == 1  # reduced levels live in SubIFDs, not in the main chain
        ome_xml = tif.ome_metadata
    assert ome_xml is not None
    pixels = ET.parse(io.StringIO(ome_xml)).getroot().find(".//{*}Pixels")
    assert pixels is not None
    assert float(pixels.attrib["PhysicalSizeX"]) == pytest.approx(MPP)
    assert float(pixels.attrib["PhysicalSizeY"]) == pytest.approx(MPP)
    assert pixels.attrib["PhysicalSizeXUnit"] == "µm"

    slide = openslide.OpenSlide(out)
    try:
        assert slide.level_dimensions[0] == (WIDTH, HEIGHT)
        level0 = np.asarray(slide.read_region((0, 0), 0, (WIDTH, HEIGHT)))[..., :3]
    finally:
        slide.close()
    assert _mae(level0, tissue) < 3
    with tiffslide.TiffSlide(out) as ts:
        assert ts.level_count == layout.levels
        assert ts.properties["tiffslide.mpp-x"] == pytest.approx(MPP, abs=1e-3)


def test_tiff_rejects_bad_options(zarr04: Path, tmp_path: Path) -> None:
    layout = _layout("0.4")
    assert "webp" not in TIFF_COMPRESSIONS
    with pytest.raises(ValueError, match="compression"):
        write_pyramidal_tiff(zarr04, tmp_path / "a.tif", layout, MPP, compression="webp")
    with pytest.raises(ValueError, match="multiple of 16"):
        write_pyramidal_tiff(zarr04, tmp_path / "a.tif", layout, MPP, tile=200)
    with pytest.raises(ValueError, match="plain TIFF"):
        write_pyramidal_tiff(zarr04, tmp_path / "a.ome.tif", layout, MPP, ome=True,
                             associated={"label": np.zeros((8, 8, 3), np.uint8)})
