"""The pixel size single image files state: OME-TIFF, TIFF description and tags, PNG pHYs, JPEG JFIF."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from wsi_deblur.image_files import Stated, dpi, pixel_size, resolution

OME = (
    '<?xml version="1.0" encoding="UTF-8"?>'
    '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
    '<Pixels ID="Pixels:0" DimensionOrder="XYCZT" Type="uint8" SizeX="8" SizeY="8" SizeC="3" SizeZ="1" SizeT="1" '
    'PhysicalSizeX="{value}" PhysicalSizeXUnit="{unit}" PhysicalSizeY="{value}" PhysicalSizeYUnit="{unit}"/>'
    "</Image></OME>"
)


@pytest.mark.parametrize(
    ("name", "options", "expected", "where"),
    [
        ("a.png", {"dpi": dpi(0.25)}, 0.25, "PNG pHYs"),
        ("b.jpg", {"dpi": dpi(0.5)}, 0.5, "JPEG"),
        ("c.tif", {"tiffinfo": {282: 40000.0, 283: 40000.0, 296: 3}}, 0.25, "TIFF resolution"),  # per cm
        ("d.tif", {"dpi": dpi(0.4976)}, 0.4976, "TIFF resolution"),
        ("e.tif", {"description": "Aperio Image Library v12.0.15 |AppMag = 40|MPP = 0.2520|"}, 0.252, "MPP"),
        ("f.ome.tif", {"description": OME.format(value=250, unit="nm")}, 0.25, "OME"),
    ],
)
def test_stated_pixel_size_is_read(tmp_path: Path, name: str, options: dict, expected: float, where: str) -> None:
    path = tmp_path / name
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, **options)
    with Image.open(path) as image:
        found = pixel_size(image)
    assert found is not None and found[0] == pytest.approx(expected, rel=1e-3) and where in found[1], found


@pytest.mark.parametrize(
    ("name", "options"),
    [
        ("plain.png", {}),
        ("screen.png", {"dpi": (96, 96)}),  # a placeholder: 265 um/px is no microscope's pixel
        ("print.jpg", {"dpi": (300, 300)}),
        ("plain.tif", {}),  # Pillow writes 1 dpi
        ("broken.ome.tif", {"description": "<OME PhysicalSizeX="}),
    ],
)
def test_placeholder_or_missing_resolution_states_nothing(tmp_path: Path, name: str, options: dict) -> None:
    path = tmp_path / name
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, **options)
    with Image.open(path) as image:
        assert pixel_size(image) is None


def test_ome_description_in_utf8_wins_over_placeholder_tags(tmp_path: Path) -> None:
    """OME-XML written as UTF-8 ("µm"), as OME-TIFF writers do, beside a placeholder resolution of 72 dpi."""
    import tifffile

    path = tmp_path / "g.ome.tif"
    tifffile.imwrite(path, np.zeros((8, 8, 3), dtype=np.uint8), photometric="rgb", metadata=None,
                     description=OME.format(value=0.5, unit="µm").encode("utf-8"), resolution=(72, 72),
                     resolutionunit="INCH")
    with Image.open(path) as image:
        assert pixel_size(image) == Stated(0.5, "OME PhysicalSizeX")


def test_unreadable_resolution_tag_does_not_stop_the_image(tmp_path: Path) -> None:
    """An XResolution stored as text: the image is read, and a pixel size elsewhere in the file still counts."""
    from PIL import TiffImagePlugin

    tags = TiffImagePlugin.ImageFileDirectory_v2()
    tags[282] = "abc"
    tags.tagtype[282] = 2  # ASCII
    tags[296] = 2
    pixels = Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8))
    pixels.save(tmp_path / "text.tif", tiffinfo=tags)
    pixels.save(tmp_path / "text-mpp.tif", tiffinfo=tags, description="Aperio |MPP = 2.5e-01|")
    with Image.open(tmp_path / "text.tif") as image:
        assert image.tag_v2.get(282) == "abc" and pixel_size(image) is None
    with Image.open(tmp_path / "text-mpp.tif") as image:
        assert pixel_size(image) == Stated(0.25, "the TIFF description's MPP")


def test_ome_pixel_size_is_the_first_image_s(tmp_path: Path) -> None:
    """A later image of an OME file (a label, an overview) does not lend the first its pixel size."""
    first = '<Image ID="Image:0"><Pixels ID="Pixels:0" Type="uint8" SizeX="8" SizeY="8"/></Image>'
    second = '<Image ID="Image:1"><Pixels ID="Pixels:1" Type="uint8" SizeX="8" SizeY="8" PhysicalSizeX="0.25"/></Image>'
    xml = f'<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06">{first}{second}</OME>'
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "two.ome.tif", description=xml)
    with Image.open(tmp_path / "two.ome.tif") as image:
        assert pixel_size(image) is None


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_jpeg_keeps_a_40x_pixel_size_in_exif(tmp_path: Path, mpp: float) -> None:
    """JFIF's density holds 16 bits (65535 dpi is 0.39 um/px): finer pixel sizes go into EXIF, per centimetre."""
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(tmp_path / "x.jpg", **resolution(mpp, jpeg=True))
    with Image.open(tmp_path / "x.jpg") as image:
        assert pixel_size(image) == Stated(mpp, "the JPEG's resolution")


OME_XY = (
    '<OME xmlns="http://www.openmicroscopy.org/Schemas/OME/2016-06"><Image ID="Image:0">'
    '<Pixels ID="Pixels:0" Type="uint8" SizeX="8" SizeY="8" PhysicalSizeX="0.5" PhysicalSizeY="520" '
    'PhysicalSizeYUnit="nm"/></Image></OME>'
)


@pytest.mark.parametrize(
    ("name", "options", "where"),
    [
        ("a.png", {"dpi": dpi(0.5, 0.52)}, "PNG pHYs"),
        ("b.jpg", {"dpi": dpi(0.5, 0.52)}, "JPEG"),
        ("c.tif", {"tiffinfo": {282: 20000.0, 283: 1e4 / 0.52, 296: 3}}, "TIFF resolution"),
        ("d.ome.tif", {"description": OME_XY}, "OME"),
    ],
)
def test_non_square_pixels_keep_their_height(tmp_path: Path, name: str, options: dict, where: str) -> None:
    """A file stating pixels 0.5 um wide and 0.52 um high: the width is the pixel size, the height is kept."""
    path = tmp_path / name
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, **options)
    with Image.open(path) as image:
        found = pixel_size(image)
    assert found is not None and where in found.where, found
    assert found.mpp == pytest.approx(0.5, rel=1e-3) and found.mpp_y == pytest.approx(0.52, rel=1e-3)


@pytest.mark.parametrize(("name", "mpp"), [("x.png", 0.5), ("x.tif", 0.5), ("x.jpg", 0.5), ("x.jpg", 0.25)])
def test_written_resolution_round_trips_non_square_pixels(tmp_path: Path, name: str, mpp: float) -> None:
    """Including a 40x JPEG, whose resolution goes into EXIF (see the test above)."""
    path = tmp_path / name
    jpeg = name.endswith(".jpg")
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, **resolution(mpp, jpeg, mpp * 1.1))
    with Image.open(path) as image:
        found = pixel_size(image)
    assert found is not None and found.mpp == pytest.approx(mpp)
    assert found.mpp_y == pytest.approx(mpp * 1.1, rel=1e-4)
    Image.fromarray(np.zeros((8, 8, 3), dtype=np.uint8)).save(path, **resolution(mpp, jpeg))
    with Image.open(path) as image:
        assert pixel_size(image) == Stated(mpp, found.where)  # square pixels state no height
