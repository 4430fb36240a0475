"""The command line: bad input gives one line, exit 1 (2 for usage), and leaves nothing behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from PIL import Image

from wsi_deblur._types import LABELS
from wsi_deblur.blurmap import ACTION_STEPS, decide
from wsi_deblur.cli import main


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


def _one_line_error(stderr: str, name: str) -> None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    assert len(lines) == 1, stderr
    assert name in lines[0], lines[0]


@pytest.fixture()
def out_dir(tmp_path: Path) -> Path:
    d = tmp_path / "out"
    d.mkdir()
    return d


def _bad_inputs(tmp_path: Path, slides_dir: Path) -> dict[str, Path]:
    text = tmp_path / "notes.svs"
    text.write_text("this is not a slide\n")
    truncated = tmp_path / "truncated.svs"
    data = (slides_dir / "CMU-1-Small-Region.svs").read_bytes()
    truncated.write_bytes(data[: len(data) // 3])
    folder = tmp_path / "folder.svs"
    folder.mkdir()
    return {"missing": tmp_path / "missing.svs", "directory": folder, "text": text, "truncated": truncated}


@pytest.mark.parametrize("case", ["missing", "directory", "text", "truncated"])
def test_bad_slide_one_line_exit_1_nothing_written(case: str, tmp_path: Path, slides_dir: Path,
                                                   out_dir: Path) -> None:
    slide = _bad_inputs(tmp_path, slides_dir)[case]
    before = slide.read_bytes() if slide.is_file() else None
    code, _, stderr = _invoke("-q", "run", str(slide), "-o", str(out_dir / "x.ome.zarr"), "-o", str(out_dir / "x.tif"))
    assert code == 1
    _one_line_error(stderr, slide.name)
    assert list(out_dir.iterdir()) == []
    if before is not None:
        assert slide.read_bytes() == before


def test_unwritable_output(tmp_path: Path, slides_dir: Path) -> None:
    target = tmp_path / "no-such-folder" / "x.ome.zarr"
    code, _, stderr = _invoke("-q", "run", str(slides_dir / "CMU-1-Small-Region.svs"), "-o", str(target))
    assert code == 1
    _one_line_error(stderr, "x.ome.zarr")
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        if os.access(locked, os.W_OK):
            pytest.skip("permissions are not enforced for this user (root)")
        code, _, stderr = _invoke("-q", "run", str(slides_dir / "CMU-1-Small-Region.svs"), "-o",
                                  str(locked / "x.tif"))
        assert code == 1
        _one_line_error(stderr, "x.tif")
    finally:
        locked.chmod(0o700)


def test_usage_errors_exit_2(tmp_path: Path, slides_dir: Path) -> None:
    code, _, stderr = _invoke("run", str(slides_dir / "CMU-1-Small-Region.svs"), "-o", str(tmp_path / "x.png"))
    assert code == 2 and "x.png" in stderr
    code, _, _ = _invoke("run", str(slides_dir / "CMU-1-Small-Region.svs"))  # no -o
    assert code == 2
    assert list(tmp_path.iterdir()) == []


def test_existing_output_needs_overwrite(tmp_path: Path, slides_dir: Path) -> None:
    existing = tmp_path / "x.tif"
    existing.write_bytes(b"keep me")
    code, _, stderr = _invoke("-q", "run", str(slides_dir / "CMU-1-Small-Region.svs"), "-o", str(existing))
    assert code == 1 and "--overwrite" in stderr
    assert existing.read_bytes() == b"keep me"


def test_missing_mpp_names_the_option(tmp_path: Path, slides_dir: Path) -> None:
    code, _, stderr = _invoke("-q", "qc", str(slides_dir / "TCGA-CR-7395-01A-01-TS1.svs"),
                              "--report", str(tmp_path / "r"))
    assert code == 1
    _one_line_error(stderr, "--mpp")
    assert not (tmp_path / "r").exists()


def test_fluorescence_refused(tmp_path: Path, slides_dir: Path) -> None:
    code, _, stderr = _invoke("-q", "qc", str(slides_dir / "test3-DAPI-2-387.ndpi"), "--report", str(tmp_path / "r"))
    assert code == 1
    _one_line_error(stderr, "fluorescence")


def test_info_json(slides_dir: Path) -> None:
    code, stdout, _ = _invoke("info", "--json", str(slides_dir / "CMU-1-Small-Region.svs"))
    assert code == 0
    d = json.loads(stdout)
    assert d["mpp"] == pytest.approx(0.499) and d["brightfield"] is True
    assert d["levels"][0]["width"] == 2220


def test_qc_writes_report_only(tmp_path: Path, slides_dir: Path) -> None:
    slide = tmp_path / "slide.svs"
    shutil.copy(slides_dir / "CMU-1-Small-Region.svs", slide)
    code, stdout, stderr = _invoke("-q", "qc", str(slide), "--report", str(tmp_path / "report"), "--workers", "1")
    assert code == 0, stderr
    assert {p.name for p in (tmp_path / "report").iterdir()} == {"blurmap.png", "summary.json", "tiles.csv"}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["report", "slide.svs"]


def test_classify_and_restore_single_images(tmp_path: Path, tiles_dir: Path) -> None:
    src = tiles_dir / "stardist-histo.jpg"
    code, stdout, _ = _invoke("classify", "--json", str(src))
    assert code == 0
    result = json.loads(stdout)
    assert result["label"] in {"in_focus", "defocus", "motion", "mixed"}
    # the route restore would take: the one blurmap.decide gives the probabilities
    probabilities = np.array([[result["probabilities"][k] for k in LABELS]], dtype=np.float32)
    assert tuple(result["route"]) == ACTION_STEPS[int(decide(probabilities)[1][0])]
    code, text, _ = _invoke("classify", str(src))
    assert code == 0 and text.startswith(f"{src}: {result['label']}") and "restore: " in text
    out = tmp_path / "restored.png"
    code, stdout, stderr = _invoke("restore", str(src), "-o", str(out))
    assert code == 0, stderr
    with Image.open(src) as a, Image.open(out) as b:
        assert a.size == b.size
        if "unchanged" in stdout:
            np.testing.assert_array_equal(np.asarray(a.convert("RGB")), np.asarray(b))


def test_single_image_at_the_pixel_size_its_file_states(tmp_path: Path, tiles_dir: Path) -> None:
    """A 40x image (0.25 um/px) in focus: read at the pixel size its PNG states it is left alone; read at the
    0.5 um/px assumed for a file that states none, it looks blurred and is restored."""
    from wsi_deblur import physics
    from wsi_deblur.image_files import dpi

    with Image.open(tiles_dir / "medium-nuclei-score-level0.png") as im:
        crop = im.convert("RGB").crop((300, 200, 492, 392)).resize((384, 384), Image.Resampling.LANCZOS)
    pixels = physics.degrade(np.asarray(crop), physics.SCANNER_40X, 0.0, rng=np.random.default_rng(1),
                             jpeg_quality=90)
    stated, plain = tmp_path / "40x.png", tmp_path / "plain.png"
    Image.fromarray(pixels).save(stated, dpi=dpi(0.25))
    Image.fromarray(pixels).save(plain)
    code, stdout, stderr = _invoke("classify", "--json", str(stated), str(plain))
    assert code == 0, stderr
    results = [json.loads(line) for line in stdout.splitlines()]
    assert [(r["mpp"], r["mpp_from"]) for r in results] == [(0.25, "from PNG pHYs"), (0.5, "assumed")]
    assert results[0]["label"] == "in_focus" and results[1]["label"] != "in_focus", results
    code, stdout, stderr = _invoke("restore", str(stated), "-o", str(tmp_path / "out.png"))
    assert code == 0 and "in focus, unchanged" in stdout and "0.25 um/px, from PNG pHYs" in stdout, stdout + stderr
    with Image.open(tmp_path / "out.png") as out:
        np.testing.assert_array_equal(np.asarray(out), pixels)
        assert out.info["dpi"][0] == pytest.approx(dpi(0.25)[0], rel=1e-3)  # the output states it too
    code, _, stderr = _invoke("restore", str(stated), "-o", str(tmp_path / "bad.png"), "--mpp", "0.00001")
    assert code == 2 and "--mpp" in stderr and not (tmp_path / "bad.png").exists(), stderr
    code, stdout, _ = _invoke("restore", str(stated), "-o", str(tmp_path / "told.tif"), "--mpp", "0.5")
    assert code == 0 and ": restored ->" in stdout and "0.5 um/px, --mpp" in stdout, stdout
    # non-square pixels (0.25 um wide, 0.26 um high): restored at the width, written with both
    Image.fromarray(pixels).save(tmp_path / "tall.png", dpi=dpi(0.25, 0.26))
    code, stdout, stderr = _invoke("restore", str(tmp_path / "tall.png"), "-o", str(tmp_path / "tall.tif"))
    assert code == 0 and "in focus, unchanged" in stdout and "0.25 x 0.26 um/px" in stdout, stdout + stderr
    with Image.open(tmp_path / "tall.tif") as out:
        assert out.info["dpi"] == pytest.approx(dpi(0.25, 0.26), rel=1e-4)


def test_module_entry_point_exit_code(tmp_path: Path) -> None:
    proc = subprocess.run([sys.executable, "-m", "wsi_deblur", "info", str(tmp_path / "nope.svs")],
                          capture_output=True, text=True, cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode == 1
    _one_line_error(proc.stderr, "nope.svs")


def test_cli_method_names_match_the_registry() -> None:
    from wsi_deblur import cli
    from wsi_deblur.methods import DEFAULT_METHOD, METHODS

    assert set(cli.METHOD_NAMES) == set(METHODS) and cli.DEFAULT_METHOD == DEFAULT_METHOD


def _png_16_bit_rgb(path: Path, rgb: np.ndarray) -> None:
    """A 48-bit RGB PNG (Pillow writes none), its samples big-endian as the format stores them."""
    import struct
    import zlib

    h, w = rgb.shape[:2]
    raw = b"".join(b"\x00" + rgb[y].astype(">u2").tobytes() for y in range(h))

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0))
                     + chunk(b"IDAT", zlib.compress(raw)) + chunk(b"IEND", b""))


def test_images_deeper_than_8_bits_are_refused(tmp_path: Path, tiles_dir: Path) -> None:
    import tifffile

    with Image.open(tiles_dir / "stardist-histo.jpg") as im:
        rgb = np.asarray(im.convert("RGB"))[:128, :128].astype(np.uint16) * 257
    grey = tmp_path / "grey16.png"
    Image.fromarray(rgb[..., 1]).save(grey)
    rgb_png = tmp_path / "rgb48.png"
    _png_16_bit_rgb(rgb_png, rgb)
    rgb_tif = tmp_path / "rgb48.tif"
    tifffile.imwrite(rgb_tif, rgb, photometric="rgb")
    floating = tmp_path / "float.tif"
    Image.fromarray(rgb[..., 0].astype(np.float32)).save(floating)
    for path, depth in ((grey, "16-bit"), (rgb_png, "16-bit"), (rgb_tif, "16-bit"), (floating, "floating-point")):
        for args in (("classify", str(path)), ("restore", str(path), "-o", str(tmp_path / "out.png"))):
            code, _, stderr = _invoke(*args)
            assert code == 1, (path, args)
            _one_line_error(stderr, path.name)
            assert depth in stderr and "8 bits" in stderr
        assert not (tmp_path / "out.png").exists()
        assert not list(tmp_path.glob("*.partial*"))


def test_greyscale_image_is_written_back_in_greyscale(tmp_path: Path, tiles_dir: Path) -> None:
    src = tmp_path / "grey.png"
    with Image.open(tiles_dir / "stardist-histo.jpg") as im:
        im.convert("L").save(src)
    out = tmp_path / "restored.png"
    code, stdout, stderr = _invoke("restore", str(src), "-o", str(out))
    assert code == 0, stderr
    with Image.open(src) as a, Image.open(out) as b:
        assert b.mode == "L" and b.size == a.size
        if "unchanged" in stdout:
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
