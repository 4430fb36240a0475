"""``wsi-deblur batch``: a folder of real slides, bad files among them, on a real local Dask cluster."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest
import tifffile
from click.testing import CliRunner

from wsi_deblur._types import OutputError, UsageError
from wsi_deblur.batch import BatchOptions, find_slides, plan
from wsi_deblur.cli import main


def _invoke(*args: str) -> tuple[int, str, str]:
    result = CliRunner().invoke(main, list(args))
    return result.exit_code, result.stdout, result.stderr


@pytest.fixture
def scans(tmp_path: Path, slides_dir: Path, sample_slides: Path) -> Path:
    """Two good slides (the blurred sample and a 16 x 16 slide), a truncated TIFF (the first third of an SVS)
    and a text file named .svs."""
    folder = tmp_path / "scans"
    folder.mkdir()
    shutil.copy(sample_slides / "CMU-1-blurred.svs", folder / "blurred.svs")
    shutil.copy(slides_dir / "small.svs", folder / "small.svs")
    data = (slides_dir / "CMU-1-Small-Region.svs").read_bytes()
    (folder / "truncated.tif").write_bytes(data[: len(data) // 3])
    (folder / "notes.svs").write_text("not a slide\n")
    return folder


def test_batch_finishes_the_good_slides_names_the_bad_and_skips_what_is_done(scans: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    code, stdout, stderr = _invoke("-q", "batch", str(scans), "-o", str(out), "--format", "tif")
    assert code == 1, stdout + stderr
    assert f"failed: {scans / 'truncated.tif'}" in stderr and f"failed: {scans / 'notes.svs'}" in stderr
    for good in ("blurred", "small"):
        assert (out / f"{good}.tif").exists()
        assert (out / f"{good}.report" / "summary.json").exists()
    with tifffile.TiffFile(out / "blurred.tif") as tif:
        assert tif.pages[0].shape[:2] == (2967, 2220)
    for bad in ("truncated", "notes"):
        assert not (out / f"{bad}.tif").exists() and not (out / f"{bad}.tif.partial").exists()
    summary = json.loads((out / "batch_summary.json").read_text())
    status = {r["slide"]: r["status"] for r in summary["results"]}
    assert status == {"blurred.svs": "done", "notes.svs": "failed", "small.svs": "done", "truncated.tif": "failed"}
    rows = {r["slide"]: r for r in summary["results"]}
    assert rows["blurred.svs"]["recommendation"] == "rescan"  # a third of its tissue was blurred on purpose
    assert rows["blurred.svs"]["blurred_fraction"] > 0.1
    assert "notes.svs" in rows["notes.svs"]["error"] and rows["notes.svs"]["recommendation"] == "check file"
    csv_lines = (out / "batch_summary.csv").read_text().splitlines()
    assert csv_lines[0].startswith("slide,status,recommendation") and len(csv_lines) == 5

    before = {p: p.stat().st_mtime_ns for p in (out / "blurred.tif", out / "small.tif")}
    # the same command again: the finished slides are skipped, the bad ones fail again with their reasons
    code, stdout, stderr = _invoke("-q", "batch", str(scans), "-o", str(out), "--format", "tif")
    assert code == 1 and "2 complete from earlier runs" in stdout
    assert f"failed: {scans / 'truncated.tif'}" in stderr and f"failed: {scans / 'notes.svs'}" in stderr
    assert {p: p.stat().st_mtime_ns for p in before} == before
    # again, without the bad files, on a scheduler address where nothing listens: finished slides are skipped
    # before any cluster is contacted, so nothing fails and nothing is rewritten
    code, stdout, stderr = _invoke("-q", "batch", str(scans), "-o", str(out), "--format", "tif",
                                   "--exclude", "truncated.tif", "--exclude", "notes.svs",
                                   "--scheduler", "tcp://127.0.0.1:9")
    assert code == 0, stdout + stderr
    assert "2 complete from earlier runs" in stdout
    assert {p: p.stat().st_mtime_ns for p in before} == before
    again = json.loads((out / "batch_summary.json").read_text())
    assert {r["slide"]: r["status"] for r in again["results"]} == {"blurred.svs": "skipped", "small.svs": "skipped"}


def test_qc_only_batch_index_opens_in_a_headless_browser(scans: Path, tmp_path: Path) -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        pytest.fail("chromium is not installed (`make system-deps` installs it with apt-get)")
    out = tmp_path / "qc"
    code, stdout, stderr = _invoke("-q", "batch", str(scans), "-o", str(out), "--qc-only", "--workers", "1")
    assert code == 1, stdout + stderr
    assert not list(out.glob("*.tif")) and not list(out.glob("*.ome.zarr"))
    dom = subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--user-data-dir=" + str(tmp_path / "profile"),
         "--dump-dom", (out / "index.html").as_uri()],
        capture_output=True, text=True, timeout=120, env={**os.environ, "HOME": str(tmp_path)},
    ).stdout
    assert 'id="slides"' in dom
    for name in ("blurred.svs", "small.svs", "truncated.tif", "notes.svs"):
        assert f'data-slide="{name}"' in dom, name
    assert 'src="blurred.report/blurmap.png"' in dom and (out / "blurred.report" / "blurmap.png").exists()
    # slides to rescan come first
    assert dom.index('data-slide="blurred.svs"') < dom.index('data-slide="small.svs"')


def test_slides_are_found_by_ending_recursively_and_outputs_mirror_the_folders(tmp_path: Path) -> None:
    root = tmp_path / "in"
    for rel in ("a.svs", "day1/b.ndpi", "day1/c.ome.tif", "day1/readme.txt", ".hidden/d.svs", "out/e.svs"):
        (root / rel).parent.mkdir(parents=True, exist_ok=True)
        (root / rel).write_bytes(b"x")
    out = root / "out"
    flat = find_slides(root, BatchOptions(), out)
    assert [p.relative_to(root).as_posix() for p in flat] == ["a.svs"]
    deep = find_slides(root, BatchOptions(recursive=True, exclude=("b.*",)), out)
    assert [p.relative_to(root).as_posix() for p in deep] == ["a.svs", "day1/c.ome.tif"]
    job = plan(root / "day1" / "c.ome.tif", root, out, BatchOptions(formats=("ome.zarr", "tif")))
    assert job.outputs == (out / "day1" / "c.ome.zarr", out / "day1" / "c.tif")
    assert job.report_dir == out / "day1" / "c.report"
    with pytest.raises(UsageError, match="not a folder"):
        find_slides(root / "a.svs", BatchOptions())
    with pytest.raises(UsageError, match="--format"):
        BatchOptions(formats=("png",)).check()


def test_outputs_cannot_escape_the_output_folder(tmp_path: Path) -> None:
    root = tmp_path / "in"
    root.mkdir()
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    out = tmp_path / "out"
    out.mkdir()
    (out / "day").symlink_to(outside)  # a link inside OUTDIR pointing out of it
    (root / "day").mkdir()
    (root / "day" / "s.svs").write_bytes(b"x")
    with pytest.raises(OutputError, match="outside"):
        plan(root / "day" / "s.svs", root, out, BatchOptions())
