"""A batch on a SLURM cluster through dask-jobqueue: CPU workers for reading, classification and the pyramid, GPU
workers (``--gres=gpu:1``, advertising ``GPU=1``) for restoration. The CPU workers are dask-jobqueue's
``SLURMCluster`` jobs; the GPU workers are plain ``sbatch`` jobs running ``dask worker ADDRESS --resources GPU=1``
against the same scheduler (one ``SLURMCluster`` describes one kind of job).

    pip install dask-jobqueue
    python workflows/slurm_batch.py /scans/today /results --queue gpu --gpu-jobs 2 --cpu-jobs 4

Run it from a login node (or a small job) that sees the same filesystem as the compute nodes. The scheduler runs
in this process; workers are SLURM jobs that connect back to it, so the login node's address must be reachable
from the compute nodes (``--interface`` picks the network, e.g. ``ib0``). For TLS between them, set Dask's
``distributed.comm.tls.*`` configuration (see workflows/README.md). The exit status is the batch's: 1 if any
slide failed.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

GPU_JOB = """#!/usr/bin/env bash
#SBATCH --job-name=wsi-deblur-gpu
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --mem={memory}
#SBATCH --time={walltime}
{extra}
exec {python} -m distributed.cli.dask_worker {address} --nthreads 1 --nworkers 1 --resources GPU=1 \\
    --memory-limit {memory} --name gpu-$SLURM_JOB_ID --death-timeout 120
"""


def _submit_gpu_worker(address: str, args: argparse.Namespace) -> str:
    """One SLURM job running a worker that advertises GPU=1 to the batch's scheduler; returns the job id."""
    extra = "\n".join(f"#SBATCH --{k}={v}" for k, v in (("partition", args.queue), ("account", args.account)) if v)
    script = GPU_JOB.format(memory=args.memory, walltime=args.walltime, extra=extra, python=sys.executable,
                            address=address)
    done = subprocess.run(["sbatch", "--parsable"], input=script, text=True, capture_output=True, check=True)
    return done.stdout.strip().split(";")[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("inbox", type=Path)
    parser.add_argument("outdir", type=Path)
    parser.add_argument("--queue", default=None, help="SLURM partition for both kinds of job")
    parser.add_argument("--account", default=None)
    parser.add_argument("--gpu-jobs", type=int, default=1, help="GPU worker jobs (one GPU each)")
    parser.add_argument("--cpu-jobs", type=int, default=2, help="CPU worker jobs")
    parser.add_argument("--cores", type=int, default=8, help="cores per CPU job (one worker process per core)")
    parser.add_argument("--memory", default="32GB", help="memory per job")
    parser.add_argument("--walltime", default="08:00:00")
    parser.add_argument("--interface", default=None, help="network interface the workers reach the scheduler on")
    parser.add_argument("--format", dest="formats", action="append", choices=["ome.zarr", "tif", "ome.tif"])
    args = parser.parse_args(argv)

    try:
        from dask_jobqueue import SLURMCluster
    except ImportError:
        print("slurm_batch.py: needs dask-jobqueue (pip install dask-jobqueue)", file=sys.stderr)
        return 2
    from distributed import Client

    from wsi_deblur.batch import BatchOptions, run_batch
    from wsi_deblur.pipeline import RunOptions

    common = {"queue": args.queue, "account": args.account, "memory": args.memory, "walltime": args.walltime,
              "interface": args.interface}
    # CPU jobs: one single-threaded worker process per core, like the local cluster (models are not thread-safe)
    cluster = SLURMCluster(cores=args.cores, processes=args.cores, **common)
    cluster.scale(jobs=args.cpu_jobs)
    gpu_job_ids = [_submit_gpu_worker(cluster.scheduler_address, args) for _ in range(args.gpu_jobs)]
    try:
        with Client(cluster) as client:
            client.wait_for_workers(1, timeout=3600)
            options = BatchOptions(recursive=True, formats=tuple(args.formats or ["ome.zarr"]),
                                   run=RunOptions(scheduler=cluster.scheduler_address, progress=False))
            result = run_batch(args.inbox, args.outdir, options)
    finally:
        if gpu_job_ids:
            subprocess.run(["scancel", *gpu_job_ids], check=False)
        cluster.close()
    for outcome in result.failed:
        print(f"failed: {outcome.error}", file=sys.stderr)
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
