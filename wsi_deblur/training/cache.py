"""Restoration pairs kept on disk: :func:`.data.restoration_pairs` is slow (PSFs of thick sections at random
optics), so a training run builds its pairs once and loads them the next time with the same recipe."""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from .. import imaging, optics, physics
from ..models.config import PRESTEPS
from . import blurring, data, sources
from .sources import SPLITS

logger = logging.getLogger(__name__)

#: Cache folder of :func:`cached_pairs`.
DEFAULT_CACHE = Path.home() / ".cache" / "wsi-deblur" / "data"
#: Context in pixels on each side of a training patch that a restorer's prestep sees: the pairs are built this
#: much larger, the prestep runs on the whole input (its PSF is estimated there), then both are cropped. With 128
#: px patches, 64 px gives the PSF fit a 256 px region (32 px: 192 px, whose poorer fits the network learnt from).
PRESTEP_CONTEXT = 64




@functools.cache
def _recipe_hash() -> str:
    """Hash of the modules that make the pairs (synthesis, sources, blur physics): cached pairs are rebuilt when any
    of them changes."""
    h = hashlib.sha256()
    for module in (data.__file__, blurring.__file__, sources.__file__, physics.__file__, optics.__file__,
                   imaging.__file__):
        h.update(Path(module).read_bytes())
    return h.hexdigest()[:10]


@functools.cache
def _prestep_hash() -> str:
    """Hash of the classical restoration modules a prestep runs."""
    from ..methods import classical_deconv, classical_features

    h = hashlib.sha256()
    for module in (classical_deconv.__file__, classical_features.__file__):
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
    prestep: str = "",
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    """:func:`restoration_pairs`, built once and kept as ``.npz`` under ``directory``; loaded next time.

    ``prestep`` ("wiener"): the inputs a restorer with that prestep trains on. The pairs are built
    :data:`PRESTEP_CONTEXT` px larger on each side, the classical step of ``kind`` runs on each whole input at
    its pixel size, and inputs and targets are cropped to their central ``size`` px.
    """
    if prestep not in PRESTEPS:
        raise ValueError(f"cached_pairs: unknown prestep {prestep!r}; choose one of {PRESTEPS}")
    if prestep:
        return _prestep_pairs(kind, n, size, seed, split, directory, prestep)
    path = cache_path(kind, n, size, seed, split, None if directory is None else Path(directory))
    cached = _load(path)
    if cached is not None:
        return cached
    blurred, sharp, params = data.restoration_pairs(kind, n, size, seed, split)
    _save(path, blurred, sharp, params)
    return blurred, sharp, params


def _load(path: Path) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]] | None:
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            blurred, sharp, text = z["blurred"], z["sharp"], str(z["params"])
        return blurred, sharp, json.loads(text)
    except (OSError, ValueError, KeyError) as error:
        raise ValueError(f"{path}: unreadable cached training data ({error}); delete the file") from error


def _prestep_pairs(
    kind: str, n: int, size: int, seed: int, split: str, directory: str | Path | None, prestep: str
) -> tuple[np.ndarray, np.ndarray, list[dict[str, Any]]]:
    from ..methods.dbmid import prestep as run_prestep

    c = PRESTEP_CONTEXT
    base = cache_path(kind, n, size + 2 * c, seed, split, None if directory is None else Path(directory))
    path = base.with_name(f"{base.stem}-{prestep}{size}-{_prestep_hash()}.npz")
    cached = _load(path)
    if cached is not None:
        return cached
    blurred, sharp, params = cached_pairs(kind, n, size + 2 * c, seed, split, directory)
    inputs = np.empty((n, size, size, 3), dtype=np.uint8)
    for i, (x, p) in enumerate(zip(blurred, params, strict=True)):
        inputs[i] = run_prestep(x, kind, float(p["mpp"]))[c : c + size, c : c + size]
        if (i + 1) % 500 == 0:
            logger.info("prestep %s: %d/%d training inputs", prestep, i + 1, n)
    sharp = np.ascontiguousarray(sharp[:, c : c + size, c : c + size])
    _save(path, inputs, sharp, params)
    return inputs, sharp, params


def _save(path: Path, blurred: np.ndarray, sharp: np.ndarray, params: list[dict[str, Any]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=path.stem, suffix=".npz", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, blurred=blurred, sharp=sharp, params=np.array(json.dumps(params)))
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
