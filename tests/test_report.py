"""The QC report: figures checked by hand, the CSV row by row, the PNG pixel by pixel, atomic writes."""

from __future__ import annotations

import copy
import csv
import json
import math
import os
from pathlib import Path

import numpy as np
import openslide
import pytest
from PIL import Image

from wsi_deblur._types import LABELS
from wsi_deblur.blurmap import ACTIONS, BlurMap
from wsi_deblur.report import (
    CLASS_COLOURS,
    MIN_MAP_WIDTH,
    read_summary,
    render_blurmap,
    summarize,
    write_report,
)

SLIDE = "CMU-1-Small-Region.svs"
MPP = 0.499  # the slide's openslide.mpp-x
TILE = 512  # 2220 x 2967 px in 512-px tiles: 5 x 6 cells, the last column 172 px wide, the last row 407 px
BACKGROUND = [(0, 0), (0, 1), (3, 0), (5, 4)]  # (5, 4) is the corner cell, clipped both ways
HELD_BACK = (1, 1)  # defocus by its label, but below the restore threshold: tinted, not restored
PROBABILITIES = {
    "in_focus": [0.85, 0.05, 0.05, 0.05],
    "defocus": [0.10, 0.80, 0.05, 0.05],
    "motion": [0.05, 0.10, 0.83, 0.02],  # mixed not plausible: DL_motion alone (blurmap.decide)
    "mixed": [0.05, 0.10, 0.15, 0.70],
}
ACTION_OF = {"in_focus": "none", "defocus": "defocus", "motion": "motion", "mixed": "motion+defocus"}


@pytest.fixture(scope="module")
def slide(slides_dir: Path) -> openslide.OpenSlide:
    return openslide.OpenSlide(str(slides_dir / SLIDE))


@pytest.fixture(scope="module")
def thumbnail(slide: openslide.OpenSlide) -> np.ndarray:
    """673 x 900 px: wider than MIN_MAP_WIDTH, so the map is the thumbnail pixel for pixel."""
    return np.asarray(slide.get_thumbnail((900, 900)).convert("RGB"))


@pytest.fixture(scope="module")
def small_thumbnail(slide: openslide.OpenSlide) -> np.ndarray:
    """299 x 400 px: narrower than MIN_MAP_WIDTH, so the map is scaled up."""
    return np.asarray(slide.get_thumbnail((400, 400)).convert("RGB"))


def expected_classes(width: int, height: int) -> dict[tuple[int, int], str]:
    """The class of every tissue cell: the four classes in turn, row-major, the held-back cell defocus."""
    rows, cols = -(-height // TILE), -(-width // TILE)
    tissue = [(r, c) for r in range(rows) for c in range(cols) if (r, c) not in BACKGROUND]
    classes = {cell: LABELS[i % len(LABELS)] for i, cell in enumerate(tissue)}
    classes[HELD_BACK] = "defocus"
    return classes


@pytest.fixture
def blurmap(slide: openslide.OpenSlide) -> BlurMap:
    width, height = slide.dimensions
    assert (width, height) == (2220, 2967)
    classes = expected_classes(width, height)
    tissue = np.ones((-(-height // TILE), -(-width // TILE)), dtype=bool)
    for cell in BACKGROUND:
        tissue[cell] = False
    bm = BlurMap.empty(width, height, TILE, tissue)
    cells = [cell for cell in classes if cell != HELD_BACK]
    bm.set_probabilities(cells, np.array([PROBABILITIES[classes[cell]] for cell in cells]))
    # blurred classes sum to 0.7 here: labelled defocus, but a 0.9 threshold leaves it untouched
    bm.set_probabilities([HELD_BACK], np.array([[0.3, 0.6, 0.05, 0.05]]), min_blur_probability=0.9)
    return bm


def cell_size(row: int, col: int) -> tuple[int, int]:
    """Width and height of a cell of the 2220 x 2967 slide, written out by hand."""
    return (512 if col < 4 else 2220 - 4 * 512), (512 if row < 5 else 2967 - 5 * 512)


def test_summarize_matches_a_hand_count(blurmap: BlurMap) -> None:
    classes = expected_classes(blurmap.width, blurmap.height)
    area = {cell: math.prod(cell_size(*cell)) for cell in np.ndindex(6, 5)}
    tissue_area = sum(area[cell] for cell in classes)
    summary = summarize(blurmap, MPP)

    assert summary["tiles"] == len(classes) == 26
    assert summary["unclassified_tiles"] == 0
    assert summary["tissue_fraction"] == pytest.approx(tissue_area / (2220 * 2967))
    fractions, areas_mm2 = summary["class_fraction"], summary["class_area_mm2"]
    assert isinstance(fractions, dict) and isinstance(areas_mm2, dict)
    for name in LABELS:
        class_area = sum(area[cell] for cell, label in classes.items() if label == name)
        assert fractions[name] == pytest.approx(class_area / tissue_area)
        assert areas_mm2[name] == pytest.approx(class_area * MPP**2 / 1e6)
    assert sum(fractions.values()) == pytest.approx(1.0)
    assert summary["tissue_area_mm2"] == pytest.approx(tissue_area * 0.499**2 / 1e6)

    restored = [cell for cell, label in classes.items() if label != "in_focus" and cell != HELD_BACK]
    assert summary["restored_tiles"] == len(restored)
    assert summary["restored_fraction"] == pytest.approx(sum(area[c] for c in restored) / tissue_area)
    counts = {name: 0 for name in ACTIONS}
    for cell, label in classes.items():
        counts["none" if cell == HELD_BACK else ACTION_OF[label]] += 1
    assert summary["actions"] == counts
    assert summarize(blurmap, None)["class_area_mm2"] is None


def test_write_report_files(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    out = tmp_path / "deep" / "report"
    extra = {
        "seconds": np.float32(12.5), "tiles_read": np.int64(26), "psnr": float("nan"),
        "outputs": [tmp_path / "a.ome.zarr"], "method": "dbmid",
    }
    paths = write_report(out, blurmap, thumbnail, slide_name=SLIDE, mpp=MPP, extra=extra)

    assert paths == {"png": out / "blurmap.png", "summary": out / "summary.json", "csv": out / "tiles.csv"}
    # the three files and nothing else: no temporary file left behind
    assert sorted(p.name for p in out.iterdir()) == ["blurmap.png", "summary.json", "tiles.csv"]

    summary = read_summary(out)
    assert summary == json.loads(paths["summary"].read_text())
    assert summary["slide"] == SLIDE and summary["mpp"] == MPP
    assert summary["seconds"] == 12.5 and summary["tiles_read"] == 26 and summary["psnr"] is None
    assert summary["outputs"] == [str(tmp_path / "a.ome.zarr")] and summary["method"] == "dbmid"
    expected = json.loads(json.dumps(summarize(blurmap, MPP)))
    assert {key: summary[key] for key in expected} == expected


def test_tiles_csv(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    paths = write_report(tmp_path, blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)
    with paths["csv"].open(newline="") as f:
        header = next(csv.reader(f))
        f.seek(0)
        rows = list(csv.DictReader(f))
    assert header == [
        "row", "col", "x", "y", "width", "height", "class",
        "p_in_focus", "p_defocus", "p_motion", "p_mixed", "action",
    ]
    classes = expected_classes(blurmap.width, blurmap.height)
    assert len(rows) == len(classes) == summarize(blurmap, MPP)["tiles"]
    assert [(int(r["row"]), int(r["col"])) for r in rows] == sorted(classes)  # row-major
    for r in rows:
        cell = (int(r["row"]), int(r["col"]))
        assert (int(r["x"]), int(r["y"])) == (cell[1] * TILE, cell[0] * TILE)
        assert (int(r["width"]), int(r["height"])) == cell_size(*cell)
        assert r["class"] == classes[cell]
        assert r["action"] == ("none" if cell == HELD_BACK else ACTION_OF[classes[cell]])
        probabilities = [float(r[f"p_{name}"]) for name in LABELS]
        assert probabilities == pytest.approx(blurmap.probabilities[cell].tolist(), abs=5e-5)
        assert all(len(r[f"p_{name}"].split(".")[1]) == 4 for name in LABELS)


def map_region(image: Image.Image, box: tuple[int, int, int, int]) -> np.ndarray:
    left, top, width, height = box
    return np.asarray(image.convert("RGB"))[top : top + height, left : left + width]


def cell_pixels(
    bm: BlurMap, cell: tuple[int, int], shape: tuple[int, ...], inset: int
) -> tuple[slice, slice]:
    """Map pixels of a cell, ``inset`` pixels in from its edges (away from the grid and outlines)."""
    x, y, w, h = bm.cell_box(*cell)
    sy, sx = shape[0] / bm.height, shape[1] / bm.width
    return (slice(round(y * sy) + inset, round((y + h) * sy) - inset),
            slice(round(x * sx) + inset, round((x + w) * sx) - inset))


def test_png_overlay(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    paths = write_report(tmp_path, blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)
    rendered = render_blurmap(blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)
    with Image.open(paths["png"]) as png:
        assert png.format == "PNG" and png.mode == "RGB"
        assert png.size == rendered.image.size
        assert np.array_equal(np.asarray(png), np.asarray(rendered.image))
    left, top, width, height = rendered.map_box
    assert (width, height) == (thumbnail.shape[1], thumbnail.shape[0])  # wide enough: not rescaled
    assert left > 0 and top > 0  # title above, margin left
    assert rendered.image.size[0] >= left + width and rendered.image.size[1] > top + height  # legend below

    drawn = map_region(rendered.image, rendered.map_box).astype(np.float64)
    original = thumbnail.astype(np.float64)
    for cell in BACKGROUND:
        region = cell_pixels(blurmap, cell, thumbnail.shape, inset=0)
        assert np.array_equal(drawn[region], original[region]), f"background cell {cell} was drawn on"
    colour = np.array(CLASS_COLOURS["defocus"], dtype=np.float64)
    region = cell_pixels(blurmap, HELD_BACK, thumbnail.shape, inset=2)
    before = np.linalg.norm(original[region] - colour, axis=-1)
    after = np.linalg.norm(drawn[region] - colour, axis=-1)
    assert np.all(after < before), "the defocus tint is not drawn over the defocus tile"
    # each pixel moves towards the class colour by the overlay opacity (0.45), give or take rounding to uint8
    assert np.allclose(after, (1 - 0.45) * before, atol=1.0)


def test_png_marks_restored_tiles(blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    rendered = render_blurmap(blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)
    untouched = copy.deepcopy(blurmap)
    untouched.actions[untouched.actions > 0] = 0
    plain = render_blurmap(untouched, thumbnail, slide_name=SLIDE, mpp=MPP)
    assert plain.map_box == rendered.map_box
    before = map_region(plain.image, plain.map_box)
    differs = np.any(map_region(rendered.image, rendered.map_box) != before, axis=-1)
    restored = np.zeros(differs.shape, dtype=bool)
    for row, col in np.argwhere(blurmap.actions > 0):
        region = cell_pixels(blurmap, (row, col), thumbnail.shape, inset=0)
        restored[region] = True
        assert differs[region].mean() > 0.05, f"restored cell {(row, col)} is not marked"
    assert not differs[~restored].any(), "pixels outside restored cells changed"


def test_small_thumbnail_is_scaled_up(tmp_path: Path, blurmap: BlurMap, small_thumbnail: np.ndarray) -> None:
    assert small_thumbnail.shape[:2] == (400, 299)
    paths = write_report(tmp_path, blurmap, small_thumbnail, slide_name=SLIDE, mpp=None)
    rendered = render_blurmap(blurmap, small_thumbnail, slide_name=SLIDE)
    assert rendered.map_box[2:] == (MIN_MAP_WIDTH, round(400 * MIN_MAP_WIDTH / 299))
    with Image.open(paths["png"]) as png:
        assert png.size == rendered.image.size
        assert png.size[0] > MIN_MAP_WIDTH
    assert read_summary(tmp_path)["class_area_mm2"] is None


def test_slide_without_tissue(tmp_path: Path, thumbnail: np.ndarray) -> None:
    bm = BlurMap.empty(2220, 2967, TILE, np.zeros((6, 5), dtype=bool))
    paths = write_report(tmp_path, bm, thumbnail, slide_name=SLIDE, mpp=MPP)
    summary = read_summary(tmp_path)
    assert summary["tiles"] == 0 and summary["tissue_fraction"] == 0.0
    assert summary["class_fraction"] == {name: None for name in LABELS}  # NaN written as null
    assert paths["csv"].read_text().count("\n") == 1  # the header alone
    with Image.open(paths["png"]) as png:
        rendered = render_blurmap(bm, thumbnail, slide_name=SLIDE, mpp=MPP)
        assert np.array_equal(map_region(png, rendered.map_box), thumbnail)


def test_rewrite_replaces_the_report(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    write_report(tmp_path, blurmap, thumbnail, slide_name="first", mpp=MPP)
    write_report(tmp_path, blurmap, thumbnail, slide_name="second", mpp=MPP)
    assert read_summary(tmp_path)["slide"] == "second"
    assert len(list(tmp_path.iterdir())) == 3


def test_bad_inputs_write_nothing(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    out = tmp_path / "report"
    with pytest.raises(ValueError, match="aspect"):
        write_report(out, blurmap, thumbnail[:, :400], slide_name=SLIDE, mpp=MPP)
    with pytest.raises(ValueError, match="uint8"):
        write_report(out, blurmap, thumbnail.astype(np.float32), slide_name=SLIDE, mpp=MPP)
    with pytest.raises(ValueError, match="mpp"):
        write_report(out, blurmap, thumbnail, slide_name=SLIDE, mpp=0.0)
    with pytest.raises(ValueError, match="object"):
        write_report(out, blurmap, thumbnail, slide_name=SLIDE, mpp=MPP, extra={"x": object()})
    assert not out.exists()


def test_folder_that_is_a_file(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    a_file = tmp_path / "a_file"
    a_file.write_text("")
    with pytest.raises(OSError, match="a_file"):
        write_report(a_file / "report", blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)
    with pytest.raises(OSError, match="a_file"):
        write_report(a_file, blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)


def test_read_only_folder(tmp_path: Path, blurmap: BlurMap, thumbnail: np.ndarray) -> None:
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("this user can write into a read-only folder (root): permissions are not enforced")
        with pytest.raises(OSError, match="locked"):
            write_report(locked, blurmap, thumbnail, slide_name=SLIDE, mpp=MPP)
        assert list(locked.iterdir()) == []
    finally:
        locked.chmod(0o700)


def test_read_summary_errors(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="summary.json"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("{not json")
    with pytest.raises(ValueError, match="summary.json"):
        read_summary(tmp_path)
    (tmp_path / "summary.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="JSON object"):
        read_summary(tmp_path)
