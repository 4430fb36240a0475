"""Shipped models: a registry of names -> model folders and the sha256 of their weights.

A model is a folder holding ``config.json``, the weights (``*.weights.h5``, no optimizer state) and a model card
(``MODEL_CARD.md``). Loading builds the network from ``config.json`` and loads weights only: no code is ever
deserialised. Nothing is downloaded: the folders ship inside the package.
"""

from __future__ import annotations

import functools
import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .config import ModelConfig

PRETRAINED = Path(__file__).resolve().parent / "pretrained"
REGISTRY_FILE = PRETRAINED / "registry.json"


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def registry() -> dict[str, dict[str, str]]:
    """Name -> {"folder": ..., "sha256": ...} of every shipped model."""
    if not REGISTRY_FILE.exists():
        return {}
    data: dict[str, dict[str, str]] = json.loads(REGISTRY_FILE.read_text())
    return data


def available() -> tuple[str, ...]:
    return tuple(sorted(registry()))


@dataclass(frozen=True)
class LoadedModel:
    """A built network with its config and where it came from."""

    config: ModelConfig
    network: Any  # keras.Model
    folder: Path
    sha256: str

    @property
    def version(self) -> str:
        return f"{self.config.name}-{self.config.version}"


def model_folder(name_or_path: str | Path) -> tuple[Path, str | None]:
    """Folder of a registered model (with its expected sha256), or a folder path given directly (no sum)."""
    entries = registry()
    if isinstance(name_or_path, str) and name_or_path in entries:
        entry = entries[name_or_path]
        return PRETRAINED / entry["folder"], entry["sha256"]
    path = Path(name_or_path)
    if path.is_dir() and (path / "config.json").exists():
        return path, None
    known = ", ".join(sorted(entries)) or "none shipped"
    raise ValueError(f"unknown model {name_or_path!r}: not a registered name ({known}) nor a model folder")


def folder_config(folder: Path) -> ModelConfig:
    """The config of the model in ``folder``, whose weights file must be there (nothing is built)."""
    config = ModelConfig.load(folder / "config.json")
    if not (folder / config.weights).exists():
        raise ValueError(f"{folder}: weights file {config.weights} is missing")
    return config


def load_folder(
    folder: Path, expected_sha256: str | None = None, precision: str = "float32", inference: bool = False
) -> LoadedModel:
    """Build the network described by ``folder/config.json`` and load its weights (checked against the sum),
    computing in ``precision`` (see :mod:`.backend`). ``inference``: the network only predicts, so its batch
    normalisations are folded into the convolutions before them (:func:`.networks.fold_batch_norm`)."""
    from .backend import dtype_policy, native_output_silenced

    config = folder_config(folder)
    weights = folder / config.weights
    digest = sha256(weights)
    if expected_sha256 is not None and digest != expected_sha256:
        raise ValueError(f"{weights}: sha256 {digest[:12]}... does not match the registry ({expected_sha256[:12]}...)")
    with native_output_silenced(), dtype_policy(precision):
        from .networks import build, fold_batch_norm

        network = build(config)
        network.load_weights(str(weights))
        if inference:
            network = fold_batch_norm(network, config)
    return LoadedModel(config=config, network=network, folder=folder, sha256=digest)


@functools.cache
def load_model(name: str, precision: str = "float32", inference: bool = False) -> LoadedModel:
    """A registered model by name (``"dl_defocus"``, ``"dl_motion"``, ``"blur_classifier"``) or a model folder,
    loaded once per process, precision and use (``auto`` resolved by this machine's CPU; ``inference`` as in
    :func:`load_folder`)."""
    from .backend import resolve_precision

    resolved = resolve_precision(precision)
    if resolved != precision:
        return load_model(name, resolved, inference)
    folder, expected = model_folder(name)
    return load_folder(folder, expected, precision, inference)


def register(name: str, folder: Path) -> dict[str, str]:
    """Record a model folder (inside ``pretrained/``) and its weights' sha256 in the registry file."""
    config = ModelConfig.load(folder / "config.json")
    entries = registry()
    entries[name] = {"folder": folder.name, "sha256": sha256(folder / config.weights)}
    REGISTRY_FILE.write_text(json.dumps(dict(sorted(entries.items())), indent=2) + "\n")
    return entries[name]


def describe() -> dict[str, Any]:
    """Versions of the shipped models (for provenance)."""
    out = {}
    for name in available():
        folder, _ = model_folder(name)
        config = ModelConfig.load(folder / "config.json")
        out[name] = config.version
    return out
