"""The whole slide workflow on the blurred sample slide, on a local cluster and on a real scheduler + worker."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import openslide
import pytest
import tiffslide
import zarr
from skimage.metrics import structural_similarity

from wsi_deblur.blend import ramp_width
from wsi_deblur.pipeline import RunOptions, run

SAMPLE = "CMU-1-blurred.svs"
GROUND_TRUTH = "CMU-1-Small-Region.svs"


@pytest.fixture(scope="module")
def sample(sample_slides: Path) -> Path:
    path = sample_slides / SAMPLE
    assert path.exists(), "run sample_slides/make_blurred_sample.py"
    return path


@pytest.fixture(scope="module")
def regions(sample_slides: Path) -> list[dict]:
    return json.loads((sample_slides / "CMU-1-blurred.regions.json").read_text())["regions"]


@pytest.fixture(scope="module")
def local_run(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> dict:
    out = tmp_path_factory.mktemp("run")
    outputs = [out / "sample.ome.zarr", out / "sample.tif"]
    result = run(sample, outputs, RunOptions(progress=False, workers=2))
    return {"dir": out, "result": result, "zarr": outputs[0], "tif": outputs[1]}


def _level0(path: Path) -> np.ndarray:
    group = zarr.open_group(str(path), mode="r")
    return np.moveaxis(np.asarray(group["0"][:]), 0, -1)


def _decoded(path: Path) -> np.ndarray:
    with openslide.OpenSlide(str(path)) as s:
        return np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))


def test_outputs_complete_and_work_folder_gone(local_run: dict) -> None:
    out: Path = local_run["dir"]
    names = sorted(p.name for p in out.iterdir())
    assert names == ["sample.ome.zarr", "sample.report", "sample.tif"], names
    report = local_run["result"].report_dir
    assert {p.name for p in report.iterdir()} >= {"blurmap.png", "summary.json", "tiles.csv"}
    summary = json.loads((report / "summary.json").read_text())
    assert summary["restored_tiles"] > 0 and summary["method"] == "dbmid"


def test_ome_zarr_valid_with_rendering_metadata_and_labels(local_run: dict, sample: Path) -> None:
    from ome_zarr_models import open_ome_zarr

    path = local_run["zarr"]
    open_ome_zarr(zarr.open_group(str(path), mode="r"))  # raises if invalid
    attrs = zarr.open_group(str(path), mode="r").attrs.asdict()
    ome = attrs.get("ome", attrs)
    assert "omero" in ome
    scale = ome["multiscales"][0]["datasets"][0]["coordinateTransformations"][0]["scale"]
    with openslide.OpenSlide(str(sample)) as s:
        mpp = float(s.properties["openslide.mpp-x"])
        width, height = s.dimensions
    assert scale[-1] == pytest.approx(mpp)
    assert _level0(path).shape == (height, width, 3)
    assert (path / "labels").is_dir()


def test_tiff_opens_with_all_levels_and_mpp(local_run: dict, sample: Path) -> None:
    tif = str(local_run["tif"])
    levels = len(zarr.open_group(str(local_run["zarr"]), mode="r").attrs.asdict().get("ome", {}).get(
        "multiscales", [{"datasets": []}])[0]["datasets"]) or None
    with openslide.OpenSlide(str(sample)) as s:
        mpp, dims = float(s.properties["openslide.mpp-x"]), s.dimensions
    with openslide.OpenSlide(tif) as s:
        assert s.dimensions == dims
        assert float(s.properties["openslide.mpp-x"]) == pytest.approx(mpp, rel=1e-3)
        assert s.level_count > 1
        if levels:
            assert s.level_count == levels
    with tiffslide.TiffSlide(tif) as t:
        assert t.dimensions == dims
        assert float(t.properties["tiffslide.mpp-x"]) == pytest.approx(mpp, rel=1e-3)


def test_restoration_raises_ssim_and_leaves_in_focus_untouched(
    local_run: dict, sample: Path, sample_slides: Path, regions: list[dict]
) -> None:
    restored = _level0(local_run["zarr"])
    blurred = _decoded(sample)
    truth = _decoded(sample_slides / GROUND_TRUTH)
    for region in regions:
        x, y, w, h = (region["box"][k] for k in "xywh")
        sl = (slice(y, y + h), slice(x, x + w))
        before = structural_similarity(truth[sl], blurred[sl], channel_axis=2)
        after = structural_similarity(truth[sl], restored[sl], channel_axis=2)
        assert after > before + 0.01, (region["label"], before, after)
    # away from every blurred region (beyond one tile and the ramp) the output is the input, bit for bit
    blurmap = local_run["result"].blurmap
    margin = blurmap.tile_size + ramp_width(blurmap.tile_size)
    far = np.ones(blurred.shape[:2], dtype=bool)
    for region in regions:
        x, y, w, h = (region["box"][k] for k in "xywh")
        far[max(0, y - margin) : y + h + margin, max(0, x - margin) : x + w + margin] = False
    changed = np.any(restored != blurred, axis=2) & far
    assert changed.mean() < 0.02, f"{changed.mean():.3%} of the in-focus area changed"


def test_same_pixels_on_an_external_scheduler_and_worker(local_run: dict, sample: Path, tmp_path: Path) -> None:
    # the same per-worker thread settings as the embedded local cluster (bit-identical network output)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    bindir = Path(sys.executable).parent
    scheduler_file = tmp_path / "scheduler.json"
    procs = [subprocess.Popen(
        [str(bindir / "dask"), "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
         "--scheduler-file", str(scheduler_file)], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert scheduler_file.exists(), "dask scheduler did not start"
        procs.append(subprocess.Popen(
            [str(bindir / "dask"), "worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1",
             "--nworkers", "1", "--host", "127.0.0.1", "--no-dashboard"],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        from distributed import Client

        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(1, timeout=90)
        out = tmp_path / "remote.ome.zarr"
        run(sample, [out], RunOptions(progress=False, scheduler=str(scheduler_file)))
        np.testing.assert_array_equal(_level0(out), _level0(local_run["zarr"]))
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_only_blocks_within_reach_of_a_restored_tile_are_run_when_writing_from_the_slide() -> None:
    from wsi_deblur.blurmap import BlurMap
    from wsi_deblur.passes import blocks_to_restore
    from wsi_deblur.tiling import Box
    from wsi_deblur.writers.omezarr import PyramidLayout

    width = height = 8192  # 16 x 16 cells of 512 px, 8 x 8 blocks of 1024 px
    tissue = np.zeros((16, 16), dtype=bool)
    tissue[:, :12] = True  # background (action -1) on the right: never a reason to run a block
    blurmap = BlurMap.empty(width, height, 512, tissue)
    cells = [(r, c) for r in range(16) for c in range(12)]
    probabilities = np.tile(np.array([[0.97, 0.01, 0.01, 0.01]], np.float32), (len(cells), 1))
    probabilities[cells.index((5, 5))] = [0.05, 0.9, 0.03, 0.02]  # one defocused tile, bottom right of block (2, 2)
    blurmap.set_probabilities(cells, probabilities, 0.5)
    layout = PyramidLayout(width=width, height=height, levels=4)
    boxes = [Box(x, y, w, h) for y, x, h, w in layout.blocks(0)]
    chosen = {(b.y // 1024, b.x // 1024) for b in blocks_to_restore(blurmap, boxes)}
    # its own block and the three whose ramp reach (a quarter tile) crosses into it
    assert chosen == {(2, 2), (2, 3), (3, 2), (3, 3)}


def test_tiff_only_run_written_from_the_slide_has_the_working_pyramids_pixels(
    local_run: dict, sample: Path, tmp_path: Path
) -> None:
    import tifffile

    out = tmp_path / "direct.tif"
    result = run(sample, [out], RunOptions(progress=False, workers=2, compression="deflate"))
    assert result.summary["tiff_writer"] == "libvips"
    assert local_run["result"].summary["tiff_writer"] == "tifffile"  # an OME-Zarr output needs the pyramid
    assert result.summary["restored_tiles"] == local_run["result"].summary["restored_tiles"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["direct.report", "direct.tif"]  # work folder gone
    group = zarr.open_group(str(local_run["zarr"]), mode="r")
    with tifffile.TiffFile(out) as tif:
        # lossless: level 0 is the working pyramid's level 0 bit for bit (restored blocks and the input's pixels)
        np.testing.assert_array_equal(tif.pages[0].asarray(), _level0(local_run["zarr"]))
        for level in (1, 2):  # libvips drops an odd last row or column; the rest are the same 2 x 2 means
            reduced = tif.pages[level].asarray()
            h, w = reduced.shape[:2]
            np.testing.assert_array_equal(reduced, np.moveaxis(np.asarray(group[str(level)][:, :h, :w]), 0, -1))


def test_jpeg_tiff_run_keeps_the_inputs_tiles_where_nothing_was_restored(
    local_run: dict, sample: Path, tmp_path: Path
) -> None:
    """A JPEG TIFF from a JPEG-tiled pyramid: tiles with no restored pixel are the input's bytes, the restored
    ones hold the working pyramid's restored pixels (within JPEG error), and the pyramid is the input's."""
    import openslide
    import tifffile

    out = tmp_path / "kept.tif"
    result = run(sample, [out], RunOptions(progress=False, workers=2))
    assert result.summary["tiff_writer"] == "input tiles"
    assert result.summary["restored_tiles"] == local_run["result"].summary["restored_tiles"] > 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["kept.report", "kept.tif"]
    restored = _level0(local_run["zarr"]).astype(int)
    with tifffile.TiffFile(sample) as a, tifffile.TiffFile(out) as b:
        pa, pb = a.pages[0], b.pages[0]
        assert isinstance(pa, tifffile.TiffPage) and isinstance(pb, tifffile.TiffPage)
        th, tw = pa.tile or (0, 0)
        height, width = pa.shape[:2]
        encoded = np.zeros((height, width), dtype=bool)  # pixels of tiles encoded again
        across = -(-width // tw)
        for index, (offset_a, count_a, offset_b, count_b) in enumerate(zip(
                pa.dataoffsets, pa.databytecounts, pb.dataoffsets, pb.databytecounts, strict=True)):
            a.filehandle.seek(offset_a)
            b.filehandle.seek(offset_b)
            if a.filehandle.read(count_a) != b.filehandle.read(count_b):
                y, x = (index // across) * th, (index % across) * tw
                encoded[y : y + th, x : x + tw] = True
    with openslide.OpenSlide(out) as o, openslide.OpenSlide(sample) as s:
        assert o.level_dimensions == s.level_dimensions
        ours = np.asarray(o.read_region((0, 0), 0, (width, height)).convert("RGB")).astype(int)
        theirs = np.asarray(s.read_region((0, 0), 0, (width, height)).convert("RGB")).astype(int)
    changed = np.any(restored != theirs, axis=2)
    assert changed.any() and not (changed & ~encoded).any()  # every restored pixel is in an encoded tile
    assert 0 < encoded.mean() < 0.9
    np.testing.assert_array_equal(ours[~encoded], theirs[~encoded])  # the input's tiles, decoded bit for bit
    assert np.abs(ours[encoded] - restored[encoded]).mean() < 3.0


def test_ngff_05_and_ome_tiff_outputs(slides_dir: Path, tmp_path: Path) -> None:
    import tifffile
    from ome_zarr_models import open_ome_zarr

    slide = slides_dir / "CMU-1-Small-Region.svs"
    outputs = [tmp_path / "a.ome.zarr", tmp_path / "a.ome.tif"]
    run(slide, outputs, RunOptions(progress=False, workers=1, ngff="0.5", method="classical"))
    group = zarr.open_group(str(outputs[0]), mode="r")
    assert group.metadata.zarr_format == 3
    open_ome_zarr(group)
    assert "omero" in group.attrs.asdict()["ome"]
    with tifffile.TiffFile(outputs[1]) as tif:
        assert len(tif.series) == 1 and len(tif.series[0].levels) > 1
        assert tif.series[0].levels[0].shape[:2] == (2967, 2220)
    with openslide.OpenSlide(str(slide)) as s:
        original = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    level0 = _level0(outputs[0])
    assert level0.shape == original.shape
    assert not (tmp_path / "a.ome.zarr.partial").exists()


def test_partial_work_from_another_run_needs_restart(sample: Path, tmp_path: Path) -> None:
    from click.testing import CliRunner

    from wsi_deblur.cli import main

    out = tmp_path / "x.ome.zarr"
    partial = tmp_path / "x.ome.zarr.partial"
    partial.mkdir()
    (partial / "fingerprint.json").write_text('{"input": "another slide"}')
    result = CliRunner().invoke(main, ["-q", "run", str(sample), "-o", str(out), "--workers", "1"])
    assert result.exit_code == 2 and "--restart" in result.stderr
    assert (partial / "fingerprint.json").read_text() == '{"input": "another slide"}'
    assert not out.exists()


def test_pass_one_writes_in_focus_blocks_through(sample: Path, tmp_path: Path) -> None:
    """Pass 1 reads each tissue block once: blocks none of whose cells is restored are written into the working
    pyramid there, bit for bit the slide's pixels; blocks with a restored cell are left to pass 2."""
    from rich.progress import Progress

    from wsi_deblur.cluster import dask_client
    from wsi_deblur.passes import classify_slide
    from wsi_deblur.slide import open_slide
    from wsi_deblur.tasks import SlideKey
    from wsi_deblur.workdir import WorkFolder
    from wsi_deblur.writers import omezarr

    options = RunOptions(progress=False, workers=1)
    with open_slide(sample) as source:
        width, height = source.dimensions
        layout = omezarr.PyramidLayout(width=width, height=height, levels=omezarr.pyramid_levels(width, height),
                                       chunk=options.chunk, block=options.block, ngff=options.ngff)
        work = WorkFolder(tmp_path / "x.partial", {"test": 1})
        omezarr.create_pyramid(work.zarr_path, layout, scratch=True)
        key = SlideKey(str(sample.resolve()), options.reader, None)
        with dask_client(None, 1, 0) as client, Progress(disable=True) as progress:
            blurmap = classify_slide(client, source, key, options, float(source.mpp), progress,
                                     write_through=(work, layout))
        done = work.done_markers(0)
        per_block = options.block // blurmap.tile_size
        through = blocked = 0
        for y, x, h, w in layout.blocks(0):
            r, c = y // blurmap.tile_size, x // blurmap.tile_size
            actions = blurmap.actions[r : r + per_block, c : c + per_block]
            tissue = blurmap.tissue[r : r + per_block, c : c + per_block]
            if tissue.any() and not (actions > 0).any():
                through += 1
                assert f"{y}_{x}" in done
                written = omezarr.read_region(work.zarr_path, 0, y, x, h, w)
                np.testing.assert_array_equal(written, source.read(0, x, y, w, h))
            else:  # restored cells (pass 2's work) or no tissue (copied in pass 2)
                blocked += int((actions > 0).any())
                assert f"{y}_{x}" not in done
        assert through and blocked, (through, blocked)  # the sample has both kinds of block


def test_local_workers_start_with_adaptive_allocator_ceilings(monkeypatch: pytest.MonkeyPatch) -> None:
    """Local worker processes get glibc's mmap and trim thresholds before they start (Dask's 64 KiB trim default
    maps every decoded tile fresh from the kernel); a value the user set, in Dask's configuration or in the
    environment, is kept."""
    import os

    import dask

    from wsi_deblur.cluster import WORKER_MALLOC_ENV, dask_client

    def worker_environ() -> tuple[str | None, str | None]:
        with dask_client(None, 1, 0) as client:
            (seen,) = client.run(lambda: (os.environ.get("MALLOC_MMAP_THRESHOLD_"),
                                          os.environ.get("MALLOC_TRIM_THRESHOLD_"))).values()
        return seen

    mmap, trim = (str(WORKER_MALLOC_ENV[k]) for k in ("MALLOC_MMAP_THRESHOLD_", "MALLOC_TRIM_THRESHOLD_"))
    for name in WORKER_MALLOC_ENV:  # the nanny sets them in this process too; each case starts clean
        monkeypatch.delenv(name, raising=False)
    assert worker_environ() == (mmap, trim)
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_")
    with dask.config.set({"distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": 1 << 20}):
        assert worker_environ() == (mmap, str(1 << 20))
    monkeypatch.delenv("MALLOC_MMAP_THRESHOLD_")
    monkeypatch.setenv("MALLOC_TRIM_THRESHOLD_", str(1 << 21))
    assert worker_environ() == (mmap, str(1 << 21))


def test_classification_tasks_grow_with_the_slide_and_keep_every_worker_busy() -> None:
    from wsi_deblur.passes import CELLS_PER_TASK, MAX_CELLS_PER_TASK, cells_per_task

    assert cells_per_task(18, 2) == CELLS_PER_TASK  # a small slide: 3 tasks for 2 workers, not one
    assert cells_per_task(5934, 2) == MAX_CELLS_PER_TASK  # the 50k benchmark slide: 186 tasks
    assert cells_per_task(200, 2) == 25  # in between: about four tasks per worker
    assert cells_per_task(5934, 64) == 23 and cells_per_task(5934, 0) == MAX_CELLS_PER_TASK
    for cells in (1, 9, 100, 1000, 100_000):
        for workers in (1, 2, 8, 200):
            assert CELLS_PER_TASK <= cells_per_task(cells, workers) <= MAX_CELLS_PER_TASK


def test_fingerprint_names_the_routing_rule(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A work folder holds tiles routed by one rule: under thresholds that route a tile otherwise, a run gets
    another fingerprint and does not resume it."""
    from wsi_deblur import blurmap, pipeline

    tile = np.array([[0.0, 0.30, 0.01, 0.69]], dtype=np.float32)  # mixed, pure defocus at 0.30
    before = pipeline._fingerprint(sample, RunOptions(), 0.5, "m-1")
    route = blurmap.decide(tile)[1]
    for name, value in (("DEFOCUS_ALONE_PROBABILITY", 0.5), ("PLAUSIBLE_PROBABILITY", 0.005)):
        with monkeypatch.context() as m:
            m.setattr(blurmap, name, value)
            assert blurmap.decide(tile)[1] != route  # the threshold decides this tile's networks
            assert pipeline._fingerprint(sample, RunOptions(), 0.5, "m-1") != before
    assert pipeline._fingerprint(sample, RunOptions(), 0.5, "m-1") == before


def test_fingerprint_and_provenance_name_the_wiener_step(sample: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both methods' output depends on the classical Wiener step (DBMID's restorers refine it): a work folder
    made with another version of it is not resumed, and the run says which it used."""
    from wsi_deblur import pipeline
    from wsi_deblur.methods.classical import ClassicalMethod

    before = pipeline._fingerprint(sample, RunOptions(), 0.5, "m-1")
    assert before["wiener"] == ClassicalMethod.version
    assert pipeline._provenance(RunOptions(), 0.5, sample)["wiener"] == ClassicalMethod.version
    monkeypatch.setattr(ClassicalMethod, "version", "0.0.1")
    assert pipeline._fingerprint(sample, RunOptions(), 0.5, "m-1") != before


def test_non_square_pixels_are_written_as_recorded(sample: Path, tmp_path: Path) -> None:
    """A slide whose pixels are 0.5 um wide and 0.526 um high (20000 x 19000 px/cm): the work runs at the width,
    and every output states both sizes, as does the report (areas are width x height)."""
    import tifffile
    from ome_zarr_models import open_ome_zarr

    with openslide.OpenSlide(str(sample)) as s:
        pixels = np.asarray(s.read_region((0, 0), 0, (1536, 1536)).convert("RGB"))
    slide = tmp_path / "tall.tif"
    with tifffile.TiffWriter(slide) as tif:  # two JPEG-tiled levels, as a scanner writes them
        for factor in (1, 4):
            level = pixels[::factor, ::factor]
            tif.write(level, tile=(256, 256), photometric="rgb", compression="jpeg", metadata=None,
                      resolution=(20000 / factor, 19000 / factor), resolutionunit="CENTIMETER",
                      subfiletype=0 if factor == 1 else 1)
    height = 1e4 / 19000
    options = RunOptions(progress=False, workers=1, method="classical")
    pyramid = run(slide, [tmp_path / "a.ome.zarr", tmp_path / "a.ome.tif"], options)
    kept = run(slide, [tmp_path / "b.tif"], options)
    vips = run(slide, [tmp_path / "c.tif"], RunOptions(progress=False, workers=1, method="classical",
                                                       compression="deflate"))
    assert [r.summary["tiff_writer"] for r in (pyramid, kept, vips)] == ["tifffile", "input tiles", "libvips"]
    for result in (pyramid, kept, vips):
        assert result.summary["mpp"] == pytest.approx(0.5) and result.summary["mpp_y"] == pytest.approx(height)
        area = sum(result.summary["class_area_mm2"].values())
        tiles = result.summary["tiles"]
        # the 3 x 3 cells of 512 px lie wholly inside the slide: each is 512 x 512 pixels of 0.5 x 0.526 um
        assert tiles > 0 and area == pytest.approx(tiles * 512 * 512 * 0.5 * height / 1e6, rel=1e-9)
    assert pyramid.summary["restored_tiles"] > 0
    for name in ("b.tif", "c.tif"):
        with openslide.OpenSlide(str(tmp_path / name)) as o:
            assert float(o.properties["openslide.mpp-x"]) == pytest.approx(0.5, rel=1e-4)
            assert float(o.properties["openslide.mpp-y"]) == pytest.approx(height, rel=1e-4)
            assert float(o.properties["openslide.level[1].downsample"]) in (pytest.approx(2.0), pytest.approx(4.0))
    with tifffile.TiffFile(tmp_path / "a.ome.tif") as tif:
        ome = tif.ome_metadata or ""
    assert 'PhysicalSizeX="0.5"' in ome and f'PhysicalSizeY="{height}"' in ome, ome[:400]
    group = zarr.open_group(str(tmp_path / "a.ome.zarr"), mode="r")
    open_ome_zarr(group)
    multiscales = group.attrs.asdict()["multiscales"][0]
    scales = [d["coordinateTransformations"][0]["scale"] for d in multiscales["datasets"]]
    assert scales[0] == pytest.approx([1.0, height, 0.5]) and scales[1] == pytest.approx([1.0, 2 * height, 1.0])
    assert json.loads((pyramid.report_dir / "summary.json").read_text())["mpp_y"] == pytest.approx(height)
    told = run(slide, [tmp_path / "d.tif"], RunOptions(progress=False, workers=1, method="classical", mpp=0.5))
    assert "mpp_y" not in told.summary  # --mpp states square pixels
    with openslide.OpenSlide(str(tmp_path / "d.tif")) as o:
        assert float(o.properties["openslide.mpp-y"]) == pytest.approx(0.5, rel=1e-4)
