"""Model configuration: what ``config.json`` in a model folder holds, validated strictly.

Unknown keys are rejected (a typo must not silently change an architecture); configs written by an older
format version are upgraded on load.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

FORMAT_VERSION = 1
KINDS = ("restorer", "classifier")
#: Deconvolutions a restorer can run before its network: "" none (the paper's blind network), "wiener" the
#: classical method's blind Wiener step of the restorer's own kind, whose estimate the network then refines.
PRESTEPS = ("", "wiener")
ARCHITECTURES = {"restorer": ("rednet",), "classifier": ("blurnet", "vgg16")}


@dataclass(frozen=True)
class Architecture:
    """Layer layout. Restorer (RED-Net style): ``features[i]`` channels at 1/2**i resolution, ``features[0]`` at
    full resolution, one stride-2 step between consecutive entries, ``convs`` convolutions per level, symmetric
    skip connections added by sum, a global residual. Classifier: ``features`` per stride-2 stage; ``spectrum``:
    width of the spectral branch (the crop's power spectrum in rings and sectors; 0 leaves it out)."""

    type: str
    features: tuple[int, ...]
    convs: int = 2
    kernel: int = 3
    first_kernel: int = 5
    spectrum: int = 0

    @property
    def downsamplings(self) -> int:
        return len(self.features) - 1

    @property
    def align(self) -> int:
        """Inputs must be multiples of this: 2**(stride-2 steps)."""
        return int(2 ** self.downsamplings) if self.type == "rednet" else 1


@dataclass(frozen=True)
class ModelConfig:
    """Everything needed to rebuild a model and to use it correctly."""

    name: str
    kind: str
    version: str
    architecture: Architecture
    #: pixel sizes (um/px) the training data covered; inputs outside are resampled into this range
    mpp_range: tuple[float, float] = (0.22, 0.6)
    #: classifier: class names in output order; side of the square input crop
    classes: tuple[str, ...] = ()
    input_size: int = 0
    #: restorer: what runs before the network (see :data:`PRESTEPS`); the network was trained on its output
    prestep: str = ""
    #: how it was trained (data, optics, steps, time): recorded for the model card, not used to build
    training: dict[str, Any] = field(default_factory=dict)
    weights: str = "model.weights.h5"
    format_version: int = FORMAT_VERSION

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"model kind must be one of {KINDS}, not {self.kind!r}")
        if self.architecture.type not in ARCHITECTURES[self.kind]:
            raise ValueError(f"a {self.kind} cannot have architecture {self.architecture.type!r}")
        if self.kind == "classifier" and (not self.classes or self.input_size <= 0):
            raise ValueError("a classifier config needs classes and input_size")
        if self.prestep not in PRESTEPS or (self.prestep and self.kind != "restorer"):
            raise ValueError(f"prestep must be one of {PRESTEPS} (restorers only), not {self.prestep!r}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any], source: str = "config") -> ModelConfig:
        data = _upgrade(dict(data))
        known = {f.name for f in fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise ValueError(f"{source}: unknown keys {sorted(unknown)}")
        arch = dict(data.pop("architecture"))
        arch_known = {f.name for f in fields(Architecture)}
        if set(arch) - arch_known:
            raise ValueError(f"{source}: unknown architecture keys {sorted(set(arch) - arch_known)}")
        arch["features"] = tuple(arch["features"])
        for key in ("mpp_range", "classes"):
            if key in data:
                data[key] = tuple(data[key])
        return cls(architecture=Architecture(**arch), **data)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | Path) -> ModelConfig:
        try:
            data = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise ValueError(f"{path}: cannot read model config ({exc})") from None
        return cls.from_dict(data, source=str(path))


def _upgrade(data: dict[str, Any]) -> dict[str, Any]:
    """Bring an older config up to FORMAT_VERSION (none older exists yet; the hook is here for when one does)."""
    version = int(data.get("format_version", FORMAT_VERSION))
    if version > FORMAT_VERSION:
        raise ValueError(f"model config format {version} is newer than this software supports ({FORMAT_VERSION})")
    data["format_version"] = FORMAT_VERSION
    return data
