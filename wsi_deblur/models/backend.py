"""Keeping the backend's native start-up output off the terminal.

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
