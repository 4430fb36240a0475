"""The benchmark suite: every figure measured in one run, each beside its reference, as a Markdown table.

    python benchmarks/suite.py --out benchmarks/results                     # everything (about an hour here)
    python benchmarks/suite.py --out /tmp/b --stages restore,classify       # the in-process figures only
    python benchmarks/suite.py --out /tmp/b --sizes 10000,20000 --stages slide,memory,workers

Stages:

* ``slide``: ``wsi-deblur run SLIDE -o out.tif`` (JPEG 90) on an all-in-focus slide of the largest size (real
  in-focus CMU-1 tissue tiled over the area, written as a tiled JPEG TIFF at 0.5 um/px), against a pyvips
  pyramidal JPEG-90 copy of the same slide (the I/O floor). Start-up (process, cluster, model loading) is
  measured on a 16 x 16 slide and reported apart. The classification pass is reported against the floor too,
  beside the time two processes take to decode every tissue tile once and do nothing else (the part of the
  pass that no cheaper classifier of full-resolution pixels removes).
* ``restore``: ``restore_image`` end to end on a fully defocused 2048 x 2048 image after a warm-up, input
  megapixels per second, ``--precision`` float32 and bfloat16 (with the SSIM between the two), the classical
  method, and
  the paper's 2.46 MP/s (1920 x 1920 in 1.5 s on a Tesla P40).
* ``classify``: the shipped classifier's tiles per second and tissue area per second, on in-focus tiles (most
  settled on one crop) and on defocused ones (all four crops).
* ``memory``: peak resident memory of the whole run (client, scheduler, workers: the process tree) for each
  size, sampled every 0.1 s.
* ``workers``: the smallest size with 1 and with 2 local workers.

Medians of ``--repeats`` where a figure is cheap to repeat; slide figures are single runs side by side (the
machine is shared: compare ratios, not absolute times, across runs).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from _timing import median_time  # noqa: E402  (beside this script)

PAPER_MPS = 1920 * 1920 / 1.5 / 1e6
MPP = 0.5
STAGES = ("slide", "restore", "classify", "memory", "workers")
CLI = [sys.executable, "-m", "wsi_deblur", "-q"]


# -- slides -------------------------------------------------------------------------------------------------------


def _source_tissue() -> Path:
    from wsi_deblur.training.data import data_dir

    return data_dir() / "slides" / "CMU-1-Small-Region.svs"


def build_slide(side: int, folder: Path) -> Path:
    """An all-in-focus side x side slide: CMU-1's in-focus tissue mirrored and repeated, tiled JPEG-90 TIFF with
    its pyramid, 0.5 um/px. Cached in ``folder``."""
    import pyvips

    path = folder / f"in-focus-{side}.tif"
    if path.exists():
        return path
    import openslide

    with openslide.OpenSlide(str(_source_tissue())) as s:
        region = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    tile = np.concatenate([region, region[:, ::-1]], axis=1)
    tile = np.concatenate([tile, tile[::-1]], axis=0)  # mirrored: no hard seams
    image = pyvips.Image.new_from_array(np.ascontiguousarray(tile), interpretation="srgb")
    across, down = -(-side // tile.shape[1]), -(-side // tile.shape[0])
    big = image.replicate(across, down).crop(0, 0, side, side)
    tmp = path.with_name(path.name + ".tmp.tif")
    big.tiffsave(str(tmp), tile=True, tile_width=256, tile_height=256, pyramid=True, compression="jpeg", Q=90,
                 bigtiff=True, xres=1000.0 / MPP, yres=1000.0 / MPP, resunit="cm")  # pixels per mm
    tmp.replace(path)
    return path


def _tree_rss(pid: int) -> int:
    import psutil

    try:
        proc = psutil.Process(pid)
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _timed_process(command: list[str]) -> dict[str, float]:
    """Wall time and peak resident memory of a command and all its children."""
    peak = 0
    t = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.is_set():
            peak = max(peak, _tree_rss(proc.pid))
            time.sleep(0.1)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    _, err = proc.communicate()
    seconds = time.perf_counter() - t
    done.set()
    sampler.join()
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command)} failed ({proc.returncode}): {err.strip()[-500:]}")
    return {"seconds": seconds, "peak_rss_gb": peak / 2**30}


def _run_slide(slide: Path, out: Path, workers: int | None = None) -> dict[str, Any]:
    command = [*CLI, "run", str(slide), "-o", str(out), "--mpp", str(MPP), "--overwrite",
               "--report", str(out.with_suffix(".report"))]
    if workers:
        command += ["--workers", str(workers)]
    figures: dict[str, Any] = _timed_process(command)
    summary = json.loads((out.with_suffix(".report") / "summary.json").read_text())
    figures.update({k: summary.get(k) for k in ("classify_s", "restore_s", "pyramid_s", "export_s", "tiles",
                                                "restored_tiles")})
    return figures


def _pyvips_copy(slide: Path, out: Path) -> dict[str, float]:
    code = ("import pyvips,sys; pyvips.Image.new_from_file(sys.argv[1], access='sequential').tiffsave(sys.argv[2], "
            "tile=True, tile_width=512, tile_height=512, pyramid=True, compression='jpeg', Q=90, bigtiff=True)")
    return _timed_process([sys.executable, "-c", code, str(slide), str(out)])


def _decode_cells(path: str, cells: list[tuple[int, int]]) -> int:
    """Read (decode) each cell's classification tile the way a worker does; returns the count."""
    from wsi_deblur.slide import cached_slide
    from wsi_deblur.tiling import cell_read_box

    source = cached_slide(path, "openslide", MPP)
    width, height = source.dimensions
    for row, col in cells:
        b = cell_read_box(row, col, 512, width, height)
        source.read(0, b.x, b.y, b.w, b.h)
    return len(cells)


def tissue_decode_floor(slide: Path, workers: int = 2) -> dict[str, float]:
    """Seconds to decode every tissue tile of level 0 once (what any classifier of full-resolution pixels must
    at least do), in ``workers`` processes as the local cluster runs them: the part of the classification pass
    that no cheaper classifier removes."""
    from concurrent.futures import ProcessPoolExecutor

    from wsi_deblur.slide import open_slide
    from wsi_deblur.tissue import MASK_SIZE, tissue_cells, tissue_mask

    with open_slide(str(slide), "openslide", MPP) as source:
        width, height = source.dimensions
        tissue = tissue_cells(tissue_mask(source.thumbnail(MASK_SIZE)), width, height, 512)
    cells = [(int(r), int(c)) for r, c in zip(*np.nonzero(tissue), strict=True)]
    chunks = [cells[i : i + 64] for i in range(0, len(cells), 64)]
    with ProcessPoolExecutor(workers) as pool:
        list(pool.map(_decode_cells, [str(slide)] * workers, [cells[:8]] * workers))  # open the slide in each
        t = time.perf_counter()
        done = sum(pool.map(_decode_cells, [str(slide)] * len(chunks), chunks))
        seconds = time.perf_counter() - t
    return {"seconds": seconds, "tiles": done}


def stage_slide(sizes: list[int], work: Path) -> dict[str, Any]:
    side = max(sizes)
    slide = build_slide(side, work)
    small = work / "startup.tif"
    from wsi_deblur.training.data import data_dir

    startup = _run_slide(data_dir() / "slides" / "small.svs", small)
    floor = _pyvips_copy(slide, work / "pyvips-copy.tif")
    ours = _run_slide(slide, work / "restored.tif")
    decode = tissue_decode_floor(slide)
    net = ours["seconds"] - startup["seconds"]
    return {
        "side": side, "pyvips_s": floor["seconds"], "startup_s": startup["seconds"], "run_s": ours["seconds"],
        "run_minus_startup_s": net, "ratio_to_pyvips": net / floor["seconds"],
        "classify_s": ours["classify_s"], "classify_share_of_floor": ours["classify_s"] / floor["seconds"],
        "tiles": ours["tiles"], "restored_tiles": ours["restored_tiles"], "peak_rss_gb": ours["peak_rss_gb"],
        "tissue_decode_s": decode["seconds"], "tissue_decode_share_of_floor": decode["seconds"] / floor["seconds"],
        "classify_beyond_decode_share_of_floor": (ours["classify_s"] - decode["seconds"]) / floor["seconds"],
    }


def stage_memory(sizes: list[int], work: Path) -> list[dict[str, Any]]:
    rows = []
    for side in sorted(sizes):
        figures = _run_slide(build_slide(side, work), work / f"memory-{side}.tif")
        rows.append({"side": side, "peak_rss_gb": figures["peak_rss_gb"], "seconds": figures["seconds"]})
    return rows


def stage_workers(sizes: list[int], work: Path) -> list[dict[str, Any]]:
    side = min(sizes)
    slide = build_slide(side, work)
    rows = []
    for workers in (1, 2):
        figures = _run_slide(slide, work / f"workers-{workers}.tif", workers=workers)
        rows.append({"side": side, "workers": workers, "seconds": figures["seconds"]})
    return rows


# -- in-process figures (each policy in its own process: Keras' dtype policy is global) -----------------------------


def _sharp(side: int) -> np.ndarray:
    import openslide

    with openslide.OpenSlide(str(_source_tissue())) as s:
        region = np.asarray(s.read_region((0, 0), 0, s.dimensions).convert("RGB"))
    tile = np.concatenate([region, region[:, ::-1]], axis=1)[:side, :side]
    if tile.shape[0] < side:
        tile = np.concatenate([tile, tile[::-1]], axis=0)[:side]
    return np.ascontiguousarray(tile)


def _in_focus_tile() -> np.ndarray:
    """A 512 px tile of in-focus tissue from the middle of the source scan (no mirrored seam, unlike
    :func:`_sharp`, which the classifier reads as motion in places)."""
    import openslide

    with openslide.OpenSlide(str(_source_tissue())) as s:
        width, height = s.dimensions
        return np.asarray(s.read_region((width // 2 - 256, height // 2 - 256), 0, (512, 512)).convert("RGB"))


def _defocused(side: int) -> np.ndarray:
    """The in-focus tissue of :func:`_sharp`, 2 depths of field out of focus at 20x/0.75, 0.5 um/px."""
    from wsi_deblur import physics

    psf = physics.defocus_psf(physics.SCANNER_20X, 2.0 * physics.SCANNER_20X.dof_um)
    return physics.blur(_sharp(side), psf)


def _child_restore(precision: str, method: str, side: int, repeats: int, save: Path | None) -> dict[str, Any]:
    from wsi_deblur import restore_image

    image = _defocused(side)
    out: dict[str, np.ndarray] = {}

    def call() -> None:
        out["y"] = restore_image(image, mpp=MPP, method=method, precision=precision)

    seconds = median_time(call, repeats)
    if save is not None:
        np.save(save, out["y"])
    return {"method": method, "policy": precision, "side": side, "seconds": seconds,
            "mp_per_s": side * side / seconds / 1e6}


def _child_classify(repeats: int) -> dict[str, Any]:
    from wsi_deblur.methods import get_method

    method = get_method("dbmid")
    mm2_per_tile = (512 * MPP / 1000.0) ** 2
    result: dict[str, Any] = {}
    # in-focus tiles are mostly settled on one crop; blurred ones run all four
    for name, tile in (("in_focus", _in_focus_tile()), ("defocused", _defocused(512))):
        tiles = np.stack([tile] * 16)
        seconds = median_time(lambda tiles=tiles: method.classify(tiles, MPP), repeats)
        result[name] = {"tiles_per_s": len(tiles) / seconds, "mm2_per_s": len(tiles) / seconds * mm2_per_tile}
    return result


def _in_child(args: list[str]) -> dict[str, Any]:
    done = subprocess.run([sys.executable, __file__, "_child", *args], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT)})
    if done.returncode != 0:
        raise RuntimeError(done.stderr[-2000:])
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def stage_restore(repeats: int, work: Path) -> list[dict[str, Any]]:
    from skimage.metrics import structural_similarity

    rows = []
    saved = {}
    for precision in ("float32", "bfloat16"):
        saved[precision] = work / f"restored-{precision}.npy"
        rows.append(_in_child(["restore", precision, "dbmid", "2048", str(repeats), str(saved[precision])]))
    a, b = (np.load(saved[p]) for p in ("float32", "bfloat16"))
    sharp = _sharp(2048)
    rows[1]["ssim_to_float32"] = float(structural_similarity(a, b, channel_axis=-1))
    for row, restored in zip(rows, (a, b), strict=True):
        row["ssim_to_sharp"] = float(structural_similarity(restored, sharp, channel_axis=-1))
    rows.append(_in_child(["restore", "float32", "classical", "2048", "1", ""]))
    for row in rows:
        row["ratio_to_paper"] = row["mp_per_s"] / PAPER_MPS
    return rows


# -- report ---------------------------------------------------------------------------------------------------------


def _markdown(result: dict[str, Any]) -> str:
    lines = [f"Measured on {result['machine']} ({result['cores']} cores), {result['when']}.", ""]
    s = result.get("slide")
    if s:
        lines += [
            "| slide figure | wsi-deblur | reference | ratio |", "|---|---|---|---|",
            f"| all-in-focus {s['side']}x{s['side']} end to end (start-up apart) | {s['run_minus_startup_s']:.0f} s "
            f"| pyvips pyramidal JPEG-90 copy {s['pyvips_s']:.0f} s | {s['ratio_to_pyvips']:.2f}x |",
            f"| classification pass | {s['classify_s']:.0f} s | the pyvips copy | "
            f"{100 * s['classify_share_of_floor']:.0f}% |",
            f"| of which decoding the tissue tiles (2 processes, nothing else) | {s['tissue_decode_s']:.0f} s "
            f"| the pyvips copy | {100 * s['tissue_decode_share_of_floor']:.0f}% |",
            f"| the classification pass beyond that decoding | "
            f"{s['classify_s'] - s['tissue_decode_s']:.0f} s | the pyvips copy "
            f"| {100 * s['classify_beyond_decode_share_of_floor']:.0f}% |",
            f"| start-up (process, cluster, models) | {s['startup_s']:.1f} s | | |",
            f"| tissue tiles / restored | {s['tiles']} / {s['restored_tiles']} | | |", "",
        ]
    rows = result.get("restore")
    if rows:
        lines += ["| restoration (2048x2048, 2 DOF defocus) | MP/s | vs paper (2.46 MP/s, P40) | SSIM to the sharp "
                  "image | SSIM to float32 output |", "|---|---|---|---|---|"]
        for r in rows:
            to_f32 = f"{r['ssim_to_float32']:.4f}" if "ssim_to_float32" in r else ""
            to_sharp = f"{r['ssim_to_sharp']:.4f}" if "ssim_to_sharp" in r else ""
            lines.append(f"| {r['method']} {r['policy']} | {r['mp_per_s']:.2f} | {r['ratio_to_paper']:.2f}x "
                         f"| {to_sharp} | {to_f32} |")
        lines.append("")
    c = result.get("classify")
    if c:
        lines += [f"Classification, {name.replace('_', '-')} tiles: {f['tiles_per_s']:.1f} tiles of 512 px per "
                  f"second, {f['mm2_per_s']:.2f} mm^2 of tissue per second at 0.5 um/px." for name, f in c.items()]
        lines.append("")
    mem = result.get("memory")
    if mem:
        lines += ["| slide side | peak memory (GB, all processes) | seconds |", "|---|---|---|"]
        lines += [f"| {m['side']} | {m['peak_rss_gb']:.2f} | {m['seconds']:.0f} |" for m in mem]
        lines.append("")
    w = result.get("workers")
    if w:
        lines += ["| workers | seconds |", "|---|---|"] + [f"| {r['workers']} | {r['seconds']:.0f} |" for r in w]
        lines.append("")
    return "\n".join(lines)


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_child":
        kind, rest = sys.argv[2], sys.argv[3:]
        if kind == "restore":
            precision, method, side, repeats, save = rest
            print(json.dumps(_child_restore(precision, method, int(side), int(repeats), Path(save) if save else None)))
        else:
            print(json.dumps(_child_classify(int(rest[0]))))
        return
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for results.json and results.md")
    parser.add_argument("--stages", default=",".join(STAGES))
    parser.add_argument("--sizes", default="10000,20000,30000,50000", help="slide sides for memory (max: slide)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--work", type=Path, default=None, help="folder for the built slides [a temporary one]")
    args = parser.parse_args()
    stages = [s for s in args.stages.split(",") if s]
    unknown = set(stages) - set(STAGES)
    if unknown:
        parser.error(f"unknown stages: {', '.join(sorted(unknown))}")
    sizes = [int(s) for s in args.sizes.split(",")]
    args.out.mkdir(parents=True, exist_ok=True)
    work_ctx = tempfile.TemporaryDirectory(prefix="wsi-deblur-bench-") if args.work is None else None
    work = args.work or Path(work_ctx.name)  # type: ignore[union-attr]
    work.mkdir(parents=True, exist_ok=True)
    result: dict[str, Any] = {"machine": platform.processor() or platform.machine(), "cores": os.cpu_count(),
                              "when": time.strftime("%Y-%m-%d %H:%M")}
    for stage in stages:
        print(f"stage {stage}...", flush=True)
        if stage == "slide":
            result["slide"] = stage_slide(sizes, work)
        elif stage == "restore":
            result["restore"] = stage_restore(args.repeats, work)
        elif stage == "classify":
            result["classify"] = _in_child(["classify", str(args.repeats)])
        elif stage == "memory":
            result["memory"] = stage_memory(sizes, work)
        elif stage == "workers":
            result["workers"] = stage_workers(sizes, work)
        (args.out / "results.json").write_text(json.dumps(result, indent=2) + "\n")
    (args.out / "results.md").write_text(_markdown(result) + "\n")
    print(_markdown(result))
    if work_ctx is not None:
        work_ctx.cleanup()


if __name__ == "__main__":
    main()
