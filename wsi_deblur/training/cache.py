"""Restoration pairs kept on disk: :func:`.data.restoration_pairs` is slow (PSFs of thick sections at random
optics), so a training run builds its pairs once and loads them the next time with the same recipe."""

from __future__ import annotations

import functools
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import physics
from . import data, sources
from .sources import SPLITS

#: Cache folder of :func:`cached_pairs`.
DEFAULT_CACHE = Path.home() / ".cache" / "wsi-deblur" / "data"




@functools.cache
def _recipe_hash() -> str:
    """Hash of the modules that make the pairs (synthesis, sources, physics): cached pairs are rebuilt when any
    of them changes."""
    h = hashlib.sha256()
    for module in (data.__file__, sources.__file__, physics.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:10]


def cache_path(kind: str, n: int, size: int, seed: int, split: str, directory: Path | None = None) -> Path:
    """Where :func:`cached_pairs` keeps these pairs (default folder ``~/.cache/wsi-deblur/data``)."""
    if kind not in data.KINDS:
        raise ValueError(f"cache_path: unknown kind {kind!r}; choose one of {', '.join(data.KINDS)}")
    if split not in SPLITS:
        raise ValueError(f"cache_path: unknown split {split!r}; choose one of {', '.join(SPLITS)}")
    folder = Path(directory) if directory is not None else DEFAULT_CACHE
    return folder / f"{kind}-{split}-n{n}-px{size}-seed{seed}-{_recipe_hash()}.npz"


def cached_pairs(
    kind: str,
    n: int,
    size: int,
    seed: int,
    split: str = "train",
    directory: str | Path | None = None,
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """:func:`restoration_pairs`, built once and kept as ``.npz`` under ``directory``; loaded next time."""
    path = cache_path(kind, n, size, seed, split, None if directory is None else Path(directory))
    if path.is_file():
        try:
            with np.load(path, allow_pickle=False) as z:
                blurred, sharp, text = z["blurred"], z["sharp"], str(z["params"])
            return blurred, sharp, json.loads(text)
        except (OSError, ValueError, KeyError) as error:
            raise ValueError(f"{path}: unreadable cached training data ({error}); delete the file") from error
    blurred, sharp, params = data.restoration_pairs(kind, n, size, seed, split)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, blurred=blurred, sharp=sharp, params=np.array(json.dumps(params)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return blurred, sharp, params
