"""Deblurring methods behind the pipeline, looked up by name."""

from __future__ import annotations

import functools

from .base import Method

__all__ = ["DEFAULT_METHOD", "METHODS", "Method", "get_method", "method_info"]

#: The method used when none is named.
DEFAULT_METHOD = "dbmid"

#: Known method names -> "module:Class" (imported lazily: the networks pull in Keras).
METHODS: dict[str, str] = {
    "classical": "wsi_deblur.methods.classical:ClassicalMethod",
    "dbmid": "wsi_deblur.methods.dbmid:DBMIDMethod",
}

#: The models DBMID uses: the blur classifier and one restorer per restoration step.
DBMID_CLASSIFIER = "blur_classifier"
DBMID_RESTORERS = {"defocus": "dl_defocus", "motion": "dl_motion"}


def method_info(name: str) -> tuple[str, dict[str, str]]:
    """A method's version and its models' versions, without building it (no network is loaded)."""
    if name not in METHODS:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}")
    if name != "dbmid":
        return get_method(name).version, {}
    from ..models.config import ModelConfig
    from ..models.registry import model_folder

    models = {}
    for model in (DBMID_CLASSIFIER, *DBMID_RESTORERS.values()):
        folder, _ = model_folder(model)
        config = ModelConfig.load(folder / "config.json")
        models[config.name] = config.version
    return "+".join(f"{k}-{v}" for k, v in sorted(models.items())), models


@functools.cache
def get_method(name: str, precision: str = "auto") -> Method:
    """The method called ``name``, built once per process and precision (workers reuse it across tasks).
    ``precision`` (auto, float32, bfloat16) applies to methods with networks; see :mod:`..models.backend`."""
    try:
        target = METHODS[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; choose one of {', '.join(sorted(METHODS))}") from None
    import importlib

    module_name, class_name = target.split(":")
    import inspect

    cls = getattr(importlib.import_module(module_name), class_name)
    takes_precision = "precision" in inspect.signature(cls).parameters
    method: Method = cls(precision=precision) if takes_precision else cls()
    return method
