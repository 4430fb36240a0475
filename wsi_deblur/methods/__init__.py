"""Deblurring methods behind the pipeline, looked up by name."""

from __future__ import annotations

import functools

from .base import Method

__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "get_method"]

#: The method used when none is named.
DEFAULT_METHOD = "dbmid"

#: Known method names -> "module:Class" (imported lazily: the networks pull in Keras).
METHODS: dict[str, str] = {
    "classical": "wsi_deblur.methods.classical:ClassicalMethod",
    "dbmid": "wsi_deblur.methods.dbmid:DBMIDMethod",
}


@functools.cache
def get_method(name: str) -> Method:
    """The method called ``name``, built once per process (workers reuse it across tasks)."""
    try:
        target = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}") from None
    import importlib

    module_name, class_name = target.split(":")
    cls = getattr(importlib.import_module(module_name), class_name)
    method: Method = cls()
    return method
