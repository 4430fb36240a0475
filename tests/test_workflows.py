"""The non-cluster recipes in ``workflows/``, run as a user runs them (bash, real processes)."""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import zarr

WORKFLOWS = Path(__file__).resolve().parents[1] / "workflows"


def _env(tmp_path: Path) -> dict[str, str]:
    return {**os.environ, "WSI_DEBLUR_BIN": str(Path(sys.executable).parent), "HOME": str(tmp_path)}


def test_nightly_recipe_logs_locks_and_skips_finished_slides(tmp_path: Path, slides_dir: Path) -> None:
    inbox = tmp_path / "scans" / "2026-11-24"
    inbox.mkdir(parents=True)
    shutil.copy(slides_dir / "small.svs", inbox / "a.svs")
    (inbox / "broken.svs").write_text("not a slide\n")
    out = tmp_path / "results"
    script = str(WORKFLOWS / "nightly.sh")
    first = subprocess.run([script, str(tmp_path / "scans"), str(out), "--format", "tif", "--workers", "1"],
                           env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert first.returncode == 1, first.stderr  # broken.svs failed; a.svs is done
    log = (out / "logs" / "latest.log").read_text()
    assert "start:" in log and "end: exit status 1" in log and "broken.svs" in log
    assert (out / "2026-11-24" / "a.tif").exists()
    summary = json.loads((out / "batch_summary.json").read_text())
    assert {r["slide"]: r["status"] for r in summary["results"]} == {
        "2026-11-24/a.svs": "done", "2026-11-24/broken.svs": "failed"}

    # while another run holds the lock, a second one does not start
    with open(out / ".nightly.lock", "a") as held:
        fcntl.flock(held, fcntl.LOCK_EX | fcntl.LOCK_NB)
        blocked = subprocess.run([script, str(tmp_path / "scans"), str(out)], env=_env(tmp_path),
                                 capture_output=True, text=True, timeout=60)
    assert blocked.returncode == 75 and "holds" in blocked.stderr

    os.remove(inbox / "broken.svs")  # the operator removes the bad file; the next night finishes cleanly
    again = subprocess.run([script, str(tmp_path / "scans"), str(out), "--format", "tif", "--workers", "1"],
                           env=_env(tmp_path), capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    summary = json.loads((out / "batch_summary.json").read_text())
    assert [r["status"] for r in summary["results"]] == ["skipped"]
    assert len(list((out / "logs").glob("nightly-*.log"))) >= 1


def test_external_scheduler_recipe_matches_the_local_run(tmp_path: Path, sample_slides: Path) -> None:
    from wsi_deblur.pipeline import RunOptions, run

    slide = sample_slides / "CMU-1-blurred.svs"
    local = tmp_path / "local.ome.zarr"
    run(slide, [local], RunOptions(progress=False, workers=2))
    remote = tmp_path / "remote.ome.zarr"
    env = {**_env(tmp_path), "PYTHONPATH": str(WORKFLOWS.parent)}
    # options after WORKERS go to `wsi-deblur run`
    done = subprocess.run([str(WORKFLOWS / "external_scheduler.sh"), str(slide), str(remote), "2", "--tile-size",
                           "512"], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    a = np.asarray(zarr.open_group(str(local), mode="r")["0"][:])
    b = np.asarray(zarr.open_group(str(remote), mode="r")["0"][:])
    np.testing.assert_array_equal(a, b)
