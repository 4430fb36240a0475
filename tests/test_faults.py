"""Faults mid-run, with real processes: the whole run SIGKILLed and started again, and a worker SIGKILLed.

Both end with the pixels of an uninterrupted run. The resumed run redoes only the blocks whose completion
marker was not written: chunks of blocks finished before the kill are not rewritten (their files keep their
modification times through the final move of the working pyramid into place).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

from wsi_deblur.pipeline import RunOptions, run

BLOCK = RunOptions().block
CHUNK = RunOptions().chunk


@pytest.fixture(scope="module")
def sample(sample_slides: Path) -> Path:
    return sample_slides / "CMU-1-blurred.svs"


@pytest.fixture(scope="module")
def reference(sample: Path, tmp_path_factory: pytest.TempPathFactory) -> np.ndarray:
    out = tmp_path_factory.mktemp("reference") / "ref.ome.zarr"
    run(sample, [out], RunOptions(progress=False, workers=2))
    return _level0(out)


def _level0(path: Path) -> np.ndarray:
    return np.asarray(zarr.open_group(str(path), mode="r")["0"][:])


def _markers(partial: Path) -> set[str]:
    folder = partial / "done" / "level0"
    return set(os.listdir(folder)) if folder.is_dir() else set()


def _wait_for(condition, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def _chunk_times(level_dir: Path) -> dict[tuple[int, int], int]:
    """Modification time of each level-0 chunk file by (chunk row, chunk column)."""
    sep = json.loads((level_dir / ".zarray").read_text()).get("dimension_separator", ".")
    times = {}
    for path in level_dir.rglob("*"):
        if path.is_file() and not path.name.startswith("."):
            parts = path.relative_to(level_dir).as_posix().split("/" if sep == "/" else ".")
            if len(parts) == 3 and all(p.isdigit() for p in parts):
                times[(int(parts[1]), int(parts[2]))] = path.stat().st_mtime_ns
    return times


def _block_of(chunk: tuple[int, int]) -> str:
    cy, cx = chunk
    return f"{cy * CHUNK // BLOCK * BLOCK}_{cx * CHUNK // BLOCK * BLOCK}"


def test_a_killed_run_resumes_where_it_stopped_with_identical_pixels(
    sample: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    out = tmp_path / "resumed.ome.zarr"
    partial = tmp_path / "resumed.ome.zarr.partial"
    command = [sys.executable, "-m", "wsi_deblur", "-q", "run", str(sample), "-o", str(out), "--workers", "2"]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        _wait_for(lambda: len(_markers(partial)) >= 2 or first.poll() is not None, 300, "two finished blocks")
        assert first.poll() is None, "the run ended before it could be killed: " + first.stderr.read().decode()
        os.killpg(first.pid, signal.SIGKILL)  # the client, the scheduler and every worker process
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert not out.exists() and partial.is_dir()
    finished = _markers(partial)
    before = {c: t for c, t in _chunk_times(partial / "image.ome.zarr" / "0").items() if _block_of(c) in finished}
    assert before, "no chunk of a finished block found"

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert not partial.exists()
    np.testing.assert_array_equal(_level0(out), reference)
    after = _chunk_times(out / "0")
    assert {c: after[c] for c in before} == before, "chunks of blocks finished before the kill were rewritten"
    assert len(after) > len(before)


def test_a_killed_worker_does_not_stop_the_run(sample: Path, reference: np.ndarray, tmp_path: Path) -> None:
    from wsi_deblur.cluster import local_cluster

    out = tmp_path / "survivor.ome.zarr"
    partial = tmp_path / "survivor.ome.zarr.partial"
    killed: list[int] = []
    killed_at: list[float] = []
    # no client in this process while the run's own client works (two clients of one process share its loop)
    with local_cluster(2) as cluster:
        pids = [nanny.process.pid for nanny in cluster.workers.values()]

        def kill_one_worker() -> None:
            _wait_for(lambda: len(_markers(partial)) >= 1, 300, "a finished block")
            os.kill(pids[0], signal.SIGKILL)
            killed.append(pids[0])
            killed_at.append(time.monotonic())

        killer = threading.Thread(target=kill_one_worker, daemon=True)
        killer.start()
        run(sample, [out], RunOptions(progress=False, scheduler=cluster.scheduler_address))
        ended = time.monotonic()
        killer.join(timeout=5)
        survivors = [nanny.process.pid for nanny in cluster.workers.values()]
    assert killed and killed_at[0] < ended, "the worker was not killed while the run went on"
    assert killed[0] not in survivors  # the nanny started a fresh worker process
    np.testing.assert_array_equal(_level0(out), reference)


def test_a_killed_tiff_only_run_resumes_from_its_restored_blocks(
    sample: Path, reference: np.ndarray, tmp_path: Path
) -> None:
    """A plain TIFF written from the slide keeps its restored blocks as raw images; a resumed run finishes the
    rest and writes the same level 0 as the working-pyramid route (lossless tiles)."""
    import tifffile

    out = tmp_path / "resumed.tif"
    restored = tmp_path / "resumed.tif.partial" / "restored"
    command = [sys.executable, "-m", "wsi_deblur", "-q", "run", str(sample), "-o", str(out), "--workers", "2",
               "--compression", "deflate"]
    first = subprocess.Popen(command, start_new_session=True, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        def written() -> list[str]:
            return [n for n in os.listdir(restored) if n.endswith(".v") and ".tmp" not in n] if restored.is_dir() \
                else []

        _wait_for(lambda: len(written()) >= 1 or first.poll() is not None, 300, "a restored block")
        assert first.poll() is None, "the run ended before it could be killed: " + first.stderr.read().decode()
        os.killpg(first.pid, signal.SIGKILL)
        first.wait(timeout=30)
    finally:
        if first.poll() is None:
            os.killpg(first.pid, signal.SIGKILL)
    assert not out.exists() and written()

    again = subprocess.run(command, capture_output=True, text=True, timeout=600)
    assert again.returncode == 0, again.stderr
    assert not restored.parent.exists()
    with tifffile.TiffFile(out) as tif:
        np.testing.assert_array_equal(tif.pages[0].asarray(), np.moveaxis(reference, 0, -1))
