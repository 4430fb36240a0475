"""Connecting to Dask: an embedded local cluster on loopback by default, or an existing scheduler.

GPU workers advertise the resource :data:`GPU_RESOURCE` (``dask worker --resources GPU=1``; dask-cuda's
``LocalCUDACluster`` for ``--gpus`` on one machine). Restoration tasks ask for it only when the scheduler reports
a worker that has it (:func:`gpu_resources`): a task asking for a resource no worker has waits forever, silently.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager

import dask
import psutil
from distributed import Client, LocalCluster

from ._types import UsageError

logger = logging.getLogger(__name__)

#: The resource GPU workers advertise; restoration tasks ask for one unit of it.
GPU_RESOURCE = "GPU"
#: Memory kept back for the client process and the operating system when sizing local workers (bytes).
RESERVED_MEMORY = 2 * 2**30
#: glibc allocator settings for local worker processes (set before they start). Dask's default trim threshold
#: (64 KiB) switches off glibc's adaptive thresholds, so every array over 128 KiB (a decoded tile is 0.75 MiB)
#: is mapped fresh from the kernel and faulted in page by page, then unmapped. These are the ceilings glibc's
#: adaptive rule itself reaches on 64-bit machines (mmap above 32 MiB, trim at twice that). ``wsi-deblur qc``
#: on the 50k x 50k benchmark slide, side by side on 2 cores: 20-22 s of system time fell to 4.4 s, and the
#: wall time by 10-20%. Values the user set (Dask configuration or environment) are kept.
WORKER_MALLOC_ENV = {"MALLOC_MMAP_THRESHOLD_": 32 * 2**20, "MALLOC_TRIM_THRESHOLD_": 64 * 2**20}
#: Dask's own default ``MALLOC_TRIM_THRESHOLD_`` (``distributed.nanny.pre-spawn-environ``).
_DASK_DEFAULT_TRIM = 65536


def local_worker_count() -> int:
    """One single-threaded worker process per core this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def gpu_resources(client: Client) -> dict[str, float] | None:
    """``{"GPU": 1}`` when a worker of the cluster advertises the GPU resource, else None (ask for nothing)."""
    workers = client.scheduler_info(n_workers=-1).get("workers", {})
    has_gpu = any(float((w.get("resources") or {}).get(GPU_RESOURCE, 0)) >= 1 for w in workers.values())
    return {GPU_RESOURCE: 1} if has_gpu else None


def _worker_environ() -> dict[str, object]:
    """``distributed.nanny.pre-spawn-environ`` with :data:`WORKER_MALLOC_ENV` where the user set nothing else."""
    environ = dict(dask.config.get("distributed.nanny.pre-spawn-environ", default={}) or {})
    for name, value in WORKER_MALLOC_ENV.items():
        current = environ.get(name)
        if current is None or (name == "MALLOC_TRIM_THRESHOLD_" and str(current) == str(_DASK_DEFAULT_TRIM)):
            environ[name] = value
    return environ


def _local_cuda_cluster(gpus: int) -> LocalCluster:
    try:
        from dask_cuda import LocalCUDACluster
    except ImportError as err:
        raise UsageError("--gpus needs dask-cuda on this machine (pip install dask-cuda)") from err
    cluster: LocalCluster = LocalCUDACluster(
        CUDA_VISIBLE_DEVICES=list(range(gpus)), threads_per_worker=1, host="127.0.0.1",
        dashboard_address="127.0.0.1:0", resources={GPU_RESOURCE: 1}, silence_logs=logging.ERROR,
    )
    return cluster


def local_cluster(n_workers: int | None = None, gpus: int = 0) -> LocalCluster:
    """The embedded cluster (see :func:`dask_client`), not started until entered as a context manager."""
    with dask.config.set({"distributed.nanny.pre-spawn-environ": _worker_environ()}):
        # the nannies read it when created (here) and keep it for any restart
        if gpus:
            return _local_cuda_cluster(gpus)
        return _local_process_cluster(n_workers)


def _local_process_cluster(n_workers: int | None) -> LocalCluster:
    workers = n_workers or local_worker_count()
    memory = max(2**30, (psutil.virtual_memory().total - RESERVED_MEMORY) // workers)
    return LocalCluster(
        n_workers=workers,
        threads_per_worker=1,
        processes=True,
        host="127.0.0.1",
        dashboard_address="127.0.0.1:0",
        memory_limit=memory,
        silence_logs=logging.ERROR,
        # one compute thread per worker process: the workers already use every core between them
        env={"TF_NUM_INTRAOP_THREADS": "1", "TF_NUM_INTEROP_THREADS": "1", "OMP_NUM_THREADS": "1",
             # TensorFlow's native start-up chatter (CPU features, no CUDA driver) is not the user's concern
             "TF_CPP_MIN_LOG_LEVEL": os.environ.get("TF_CPP_MIN_LOG_LEVEL", "3")},
    )


@contextmanager
def scheduler_address(scheduler: str | None = None, n_workers: int | None = None, gpus: int = 0) -> Iterator[str]:
    """``scheduler`` as given, or the address of an embedded local cluster kept up for the block. Holds no
    client: callers that run several jobs on one cluster (a batch) each connect their own, one at a time."""
    if scheduler:
        yield scheduler
        return
    with local_cluster(n_workers, gpus) as cluster:
        yield str(cluster.scheduler_address)


@contextmanager
def dask_client(scheduler: str | None = None, n_workers: int | None = None, gpus: int = 0) -> Iterator[Client]:
    """A client on ``scheduler`` (``tcp://host:port``, ``tls://...`` or a scheduler file), or on a fresh local
    cluster.

    The local cluster binds its scheduler and dashboard to 127.0.0.1 only and runs one single-threaded worker
    process per core (the numerical work releases the GIL poorly and models are not thread-safe), sharing the
    machine's memory less a reserve. With ``gpus`` it is dask-cuda's ``LocalCUDACluster`` instead: one worker
    per GPU, each advertising the GPU resource. TLS settings for remote schedulers come from Dask's
    configuration (``distributed.comm.tls.*``), as for any Dask client.
    """
    if not logger.isEnabledFor(logging.DEBUG):
        # Dask logs every worker start and stop at INFO; keep the terminal for progress and real problems
        logging.getLogger("distributed").setLevel(logging.ERROR)
    if scheduler:
        if scheduler.endswith(".json") and os.path.exists(scheduler):
            client = Client(scheduler_file=scheduler, timeout="60s")
        else:
            client = Client(scheduler, timeout="60s")
        try:
            yield client
        finally:
            client.close()
        return
    with local_cluster(n_workers, gpus) as cluster, Client(cluster) as client:
        logger.info("local Dask cluster: %d workers, dashboard %s", len(cluster.workers), client.dashboard_link)
        yield client
