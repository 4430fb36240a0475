"""Restoration tasks go to the workers that advertise a GPU, and only ask for one when such a worker exists.

A real scheduler and two real worker processes on loopback; one advertises ``GPU=1`` as a GPU node's worker
does (``dask worker --resources GPU=1``). Which worker ran each task comes from the scheduler's task stream.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from click.testing import CliRunner
from distributed import Client

from wsi_deblur.cli import main
from wsi_deblur.cluster import gpu_resources
from wsi_deblur.pipeline import RunOptions, run


def _start(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([str(Path(sys.executable).parent / "dask"), *args], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def test_restoration_runs_on_the_gpu_worker(slides_dir: Path, tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
           "TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1"}
    scheduler_file = tmp_path / "scheduler.json"
    procs = [_start(["scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard", "--scheduler-file",
                     str(scheduler_file)], env)]
    try:
        deadline = time.monotonic() + 60
        while not scheduler_file.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        common = ["worker", "--scheduler-file", str(scheduler_file), "--nthreads", "1", "--host", "127.0.0.1",
                  "--no-dashboard"]
        procs.append(_start([*common, "--name", "cpu"], env))
        with Client(scheduler_file=str(scheduler_file), timeout="60s") as client:
            client.wait_for_workers(1, timeout=90)
            assert gpu_resources(client) is None  # no GPU worker: ask for nothing (or tasks would wait forever)
            procs.append(_start([*common, "--name", "gpu", "--resources", "GPU=1"], env))
            client.wait_for_workers(2, timeout=90)
            assert gpu_resources(client) == {"GPU": 1}
            names = {a: w["name"] for a, w in client.scheduler_info(n_workers=-1)["workers"].items()}
            client.get_task_stream()  # installs the scheduler's task-stream plugin
            started = time.time()
            run(slides_dir / "CMU-1-Small-Region.svs", [tmp_path / "out.ome.zarr"],
                RunOptions(progress=False, scheduler=str(scheduler_file)))
            stream = client.get_task_stream(start=started)
        ran_on: dict[str, set[str]] = {}
        for record in stream:
            prefix = str(record["key"]).split("-")[0] if isinstance(record["key"], str) else str(record["key"][0])
            ran_on.setdefault(prefix, set()).add(names.get(record["worker"], record["worker"]))
        assert ran_on.get("restore_block") == {"gpu"}, ran_on
        assert "cpu" in set().union(*(w for k, w in ran_on.items() if k != "restore_block")), ran_on
    finally:
        for p in reversed(procs):
            p.terminate()
        for p in procs:
            p.wait(timeout=30)


def test_gpus_option_needs_dask_cuda_and_no_scheduler(slides_dir: Path, tmp_path: Path) -> None:
    slide = str(slides_dir / "small.svs")
    result = CliRunner().invoke(main, ["-q", "run", slide, "-o", str(tmp_path / "a.tif"), "--gpus", "1",
                                       "--scheduler", "tcp://127.0.0.1:9"])
    assert result.exit_code == 2 and "--scheduler" in result.stderr
    try:
        import dask_cuda  # noqa: F401
    except ImportError:
        result = CliRunner().invoke(main, ["-q", "run", slide, "-o", str(tmp_path / "b.tif"), "--gpus", "1"])
        assert result.exit_code == 2 and "dask-cuda" in result.stderr
        assert list(tmp_path.iterdir()) == []  # refused before anything was written
    else:  # pragma: no cover - a machine with dask-cuda
        pytest.skip("dask-cuda is installed here; the missing-package message cannot be shown")
