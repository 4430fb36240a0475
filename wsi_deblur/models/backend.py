"""The numerical precision networks run in, and keeping the backend's native start-up output off the terminal.

**Precision.** ``float32``, or ``bfloat16`` (Keras' ``mixed_bfloat16`` policy: bfloat16 compute, float32
weights and outputs), which doubles the networks' speed on CPUs with AMX or AVX512-BF16 and changes a restored
tile's SSIM by well under 0.002. ``auto`` (the default) picks bfloat16 where the CPU computes it natively and
float32 elsewhere; it is resolved where the networks run (each worker, by its own CPU).

**Native output.**
TensorFlow 2.21 writes start-up lines (oneDNN, CUDA stubs, "All log messages before absl::InitializeLog()",
cuInit failures on machines without a GPU) straight to the process's standard error from native code when it
is imported and when it first builds a model, past Python's logging and past ``TF_CPP_MIN_LOG_LEVEL``. Every
Dask worker does both, so a run would print them once per worker. Model loading and training set-up run inside
:func:`native_output_silenced`, which points file descriptor 2 at ``/dev/null`` for its duration unless
``WSI_DEBLUR_NATIVE_LOGS=1`` is set or wsi_deblur logs at DEBUG. Python exceptions are unaffected.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

#: Precisions a network can run in (``auto``: bfloat16 where the CPU has it, else float32).
PRECISIONS = ("auto", "float32", "bfloat16")
#: Keras dtype policy of each resolved precision.
POLICIES = {"float32": "float32", "bfloat16": "mixed_bfloat16"}
#: Set to 1 to see the backend's native start-up log lines.
NATIVE_LOGS_ENV = "WSI_DEBLUR_NATIVE_LOGS"


@contextmanager
def native_output_silenced() -> Iterator[None]:
    """Standard error (file descriptor 2) goes to /dev/null inside the block (see the module docstring)."""
    if os.environ.get(NATIVE_LOGS_ENV) == "1" or logging.getLogger("wsi_deblur").isEnabledFor(logging.DEBUG):
        yield
        return
    sys.stderr.flush()
    saved = os.dup(2)
    devnull = os.open(os.devnull, os.O_WRONLY)
    try:
        os.dup2(devnull, 2)
        yield
    finally:
        sys.stderr.flush()
        os.dup2(saved, 2)
        os.close(saved)
        os.close(devnull)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bfloat16 natively (AMX tiles or AVX512-BF16)."""
    try:
        with open("/proc/cpuinfo") as f:
            flags = f.read()
    except OSError:
        return False
    return " amx_bf16" in flags or " avx512_bf16" in flags


def resolve_precision(precision: str) -> str:
    """``float32`` or ``bfloat16`` for a requested precision (``auto`` by this machine's CPU)."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose one of {', '.join(PRECISIONS)}")
    if precision == "auto":
        return "bfloat16" if cpu_has_bf16() else "float32"
    return precision


@contextmanager
def dtype_policy(precision: str) -> Iterator[Any]:
    """Networks built inside the block compute in ``precision`` (resolved); the global policy is restored after."""
    import keras

    previous = keras.mixed_precision.global_policy()
    keras.mixed_precision.set_dtype_policy(POLICIES[resolve_precision(precision)])
    try:
        yield keras
    finally:
        keras.mixed_precision.set_dtype_policy(previous)
