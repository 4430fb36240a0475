"""``wsi-deblur train classifier|defocus|motion``: train a DBMID network and write a model folder.

Training data is synthesised from real in-focus tissue (:mod:`wsi_deblur.training.data`). Runs resume from the
checkpoint folder after an interruption (Keras ``BackupAndRestore``). A run can start from a trained model of the
same architecture (``TrainSettings.init``: a registered name or a model folder) and go on training it on new
data; the config then records what it started from. The model folder written at the end holds ``config.json``
and weights only (no optimizer state).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import numpy as np

from .._types import LABELS
from ..models.backend import cpu_has_bf16, native_output_silenced
from ..models.config import Architecture, ModelConfig

logger = logging.getLogger(__name__)

TARGETS = ("classifier", "defocus", "motion")
#: Names of the shipped models per training target.
MODEL_NAMES = {"classifier": "blur_classifier", "defocus": "dl_defocus", "motion": "dl_motion"}
#: The paper's restorer: 32/64/128 features with stride-2 steps (one more 128 level for a wider receptive field).
REDNET = Architecture(type="rednet", features=(32, 64, 128, 128), convs=2, kernel=3, first_kernel=5)
#: The shipped classifier (convolutions with batch normalisation): ~0.5 M parameters, ~0.17 GMAC per 128 px
#: crop, four crops per 512 px tile
#: (~0.7 GMAC per tile; VGG16: 15.5 GMAC per 224 px crop, 22 times more). The spectral branch adds an FFT and
#: ~2 MMAC per crop.
BLURNET = Architecture(type="blurnet", features=(16, 32, 64, 96, 128), convs=2, kernel=3, first_kernel=3,
                       spectrum=64)
CLASSIFIER_INPUT = 128
VGG16_INPUT = 224


@dataclass(frozen=True)
class TrainSettings:
    """How long and on what a network trains. Defaults are the shipped models' settings."""

    steps: int = 12000
    batch: int = 8
    patch: int = 128
    samples: int = 6000
    seed: int = 0
    learning_rate: float = 3e-4
    steps_per_epoch: int = 200
    bfloat16: bool | None = None  # None: where the CPU has AMX or AVX512-BF16
    threads: int | None = None
    init: str | None = None  # start from this model (registered name or folder) instead of random weights
    prestep: str = ""  # restorers: "wiener" trains the network to refine the classical Wiener step's output
    #: with ``prestep``: train on the blurred inputs all the same (the paper's training); the step runs before the
    #: network in use only. DL_defocus trained so refines the Wiener estimate better than trained on it.
    blurred_inputs: bool = False


def default_config(target: str, arch: str | None = None, version: str = "1.0.0") -> ModelConfig:
    if target not in TARGETS:
        raise ValueError(f"unknown training target {target!r}; choose one of {', '.join(TARGETS)}")
    name = MODEL_NAMES[target]
    if target == "classifier":
        if arch == "vgg16":
            return ModelConfig(name="vgg16_classifier", kind="classifier", version=version,
                               architecture=Architecture(type="vgg16", features=()), classes=LABELS,
                               input_size=VGG16_INPUT)
        if arch not in (None, "blurnet"):
            raise ValueError(f"classifier architecture must be blurnet or vgg16, not {arch!r}")
        return ModelConfig(name=name, kind="classifier", version=version, architecture=BLURNET, classes=LABELS,
                           input_size=CLASSIFIER_INPUT)
    if arch not in (None, "rednet"):
        raise ValueError(f"restorer architecture must be rednet, not {arch!r}")
    return ModelConfig(name=name, kind="restorer", version=version, architecture=REDNET)


def _log2_mpp(mpp: np.ndarray) -> np.ndarray:
    from ..models.networks import REFERENCE_MPP

    return np.log2(np.asarray(mpp, dtype=np.float32) / REFERENCE_MPP).reshape(-1, 1)


def _setup_keras(settings: TrainSettings) -> tuple[Any, str]:
    if settings.threads:
        os.environ.setdefault("TF_NUM_INTRAOP_THREADS", str(settings.threads))
        os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
    with native_output_silenced():
        import keras
    use_bf16 = cpu_has_bf16() if settings.bfloat16 is None else settings.bfloat16
    policy = "mixed_bfloat16" if use_bf16 else "float32"
    keras.mixed_precision.set_dtype_policy(policy)
    keras.utils.set_random_seed(settings.seed)
    return keras, policy


def export_weights(network: Any, config: ModelConfig, path: Path) -> None:
    """Save the weights alone: a fresh, uncompiled copy of the network holds no optimizer state to save."""
    from ..models.networks import build

    fresh = build(config)
    fresh.set_weights(network.get_weights())
    tmp = path.with_name("tmp-" + path.name)
    fresh.save_weights(str(tmp))
    tmp.replace(path)


def _initialise(network: Any, config: ModelConfig, init: str) -> dict[str, Any]:
    """Copy a trained model's weights into ``network``; what it was, for the config.

    The same architecture takes every weight. A classifier that only adds a branch (say, the spectral one) to
    the prior's takes the weights of each layer the two share by name and shape; the others start fresh.
    """
    from ..models.registry import load_folder, model_folder

    folder, expected = model_folder(init)
    prior = load_folder(folder, expected)
    same_kind = (prior.config.kind, prior.config.architecture.type, prior.config.input_size) == (
        config.kind, config.architecture.type, config.input_size)
    grown = replace(config.architecture, spectrum=prior.config.architecture.spectrum) == prior.config.architecture
    if not same_kind or not (prior.config.architecture == config.architecture or grown):
        raise ValueError(f"--init {init}: {prior.version} is not a {config.architecture.type} "
                         f"{config.kind} of the same architecture as {config.name}")
    fresh = []
    if prior.config.architecture == config.architecture:
        network.set_weights(prior.network.get_weights())
    else:
        for layer in network.layers:
            if not layer.weights:
                continue
            try:
                source = prior.network.get_layer(layer.name)
            except ValueError:
                fresh.append(layer.name)
                continue
            weights = source.get_weights()
            if [w.shape for w in weights] != [tuple(w.shape) for w in layer.weights]:
                fresh.append(layer.name)
                continue
            layer.set_weights(weights)
    logger.info("starting from %s (sha256 %s)%s", prior.version, prior.sha256[:12],
                f"; new layers: {', '.join(fresh)}" if fresh else "")
    return {"model": prior.version, "sha256": prior.sha256, "steps": prior.config.training.get("steps"),
            "samples": prior.config.training.get("data", {}).get("samples"),
            **({"new_layers": fresh} if fresh else {})}


def train(
    target: str,
    out_dir: str | Path,
    settings: TrainSettings | None = None,
    *,
    arch: str | None = None,
    version: str = "1.0.0",
    restart: bool = False,
    data_dir: str | Path | None = None,
    on_epoch: Callable[[int, int, dict[str, float]], None] | None = None,
) -> Path:
    """Train ``target`` and write its model folder to ``out_dir`` (config.json + weights). Returns the folder.

    Checkpoints go to ``out_dir/checkpoint/``; running the same command again resumes from them (``restart``
    throws them away). The checkpoint folder is removed once the model folder is complete.
    """
    from . import cache, data

    settings = settings or TrainSettings()
    config = default_config(target, arch, version)
    if settings.prestep:
        if target == "classifier":
            raise ValueError("--prestep is for the restorers (defocus, motion), not the classifier")
        config = replace(config, prestep=settings.prestep)
    elif settings.blurred_inputs:
        raise ValueError("--blurred-inputs goes with --prestep: without a prestep the inputs are blurred anyway")
    trained_on = "" if settings.blurred_inputs else settings.prestep
    out = Path(out_dir)
    checkpoint = out / "checkpoint"
    if restart and checkpoint.exists():
        shutil.rmtree(checkpoint)
    out.mkdir(parents=True, exist_ok=True)
    keras, policy = _setup_keras(settings)
    from ..models.networks import build

    started = time.time()
    if target == "classifier":
        size = config.input_size
        tiles, labels, mpp, _ = data.classification_set(settings.samples, size, settings.seed)
        mpp_range = (float(np.min(mpp)), float(np.max(mpp)))
        inputs: Any = [tiles.astype(np.float32) / 255.0, _log2_mpp(mpp)]
        targets: Any = keras.utils.to_categorical(labels, len(LABELS))
        loss = "categorical_crossentropy"
        metrics = ["accuracy"]
    else:
        blurred, sharp, params = cache.cached_pairs(target, settings.samples, settings.patch, settings.seed,
                                                    directory=data_dir, prestep=trained_on)
        pair_mpp = [float(p["mpp"]) for p in params]
        mpp_range = (min(pair_mpp), max(pair_mpp))
        inputs = blurred.astype(np.float32) / 255.0
        targets = sharp.astype(np.float32) / 255.0
        loss = "mse"  # the paper's loss
        metrics = []
    data_seconds = time.time() - started
    network = build(config)
    initialised = _initialise(network, config, settings.init) if settings.init else None
    steps_per_epoch = min(settings.steps_per_epoch, settings.steps)
    epochs = max(1, settings.steps // steps_per_epoch)
    if epochs * steps_per_epoch != settings.steps:
        logger.warning("training %d steps: %d whole epochs of %d (of the %d asked for)", epochs * steps_per_epoch,
                       epochs, steps_per_epoch, settings.steps)
    schedule = keras.optimizers.schedules.CosineDecay(settings.learning_rate, epochs * steps_per_epoch,
                                                      alpha=0.05)
    network.compile(optimizer=keras.optimizers.Adam(schedule), loss=loss, metrics=metrics)
    n = len(inputs[0]) if isinstance(inputs, list) else len(inputs)
    epoch_samples = steps_per_epoch * settings.batch

    class EpochHook(keras.callbacks.Callback):  # type: ignore[name-defined]
        def on_epoch_end(self, epoch: int, logs: dict[str, float] | None = None) -> None:
            logs = dict(logs or {})
            logger.info("epoch %d/%d %s", epoch + 1, epochs, " ".join(f"{k}={v:.5f}" for k, v in logs.items()))
            if on_epoch is not None:
                on_epoch(epoch + 1, epochs, logs)

    def batches() -> Any:
        rng = np.random.default_rng(settings.seed + 1)
        while True:
            idx = rng.integers(0, n, epoch_samples)
            for i in range(0, epoch_samples, settings.batch):
                sel = idx[i : i + settings.batch]
                k = int(rng.integers(0, 4))
                flip = bool(rng.integers(0, 2))
                if isinstance(inputs, list):
                    x = np.rot90(inputs[0][sel], k, axes=(1, 2))
                    x = x[:, :, ::-1] if flip else x
                    yield (np.ascontiguousarray(x), inputs[1][sel]), targets[sel]
                else:
                    x = np.rot90(inputs[sel], k, axes=(1, 2))
                    y = np.rot90(targets[sel], k, axes=(1, 2))
                    if flip:
                        x, y = x[:, :, ::-1], y[:, :, ::-1]
                    yield np.ascontiguousarray(x), np.ascontiguousarray(y)

    history = network.fit(
        batches(), epochs=epochs, steps_per_epoch=steps_per_epoch, verbose=0,
        callbacks=[keras.callbacks.BackupAndRestore(str(checkpoint)), EpochHook()],
    )
    seconds = time.time() - started
    final = {k: float(v[-1]) for k, v in history.history.items() if v}
    folder = out
    export_weights(network, config, folder / config.weights)
    # the pixel sizes the data really covered: inputs outside are resampled into this range when used
    trained = replace(config, mpp_range=(round(mpp_range[0], 3), round(mpp_range[1], 3)), training={
        "target": target,
        "data": {"samples": settings.samples, "patch": settings.patch if target != "classifier" else
                 config.input_size, "seed": settings.seed, "split": "train",
                 "sources": [s.name for s in data.sources("train")],
                 **({"prestep_context": cache.PRESTEP_CONTEXT} if trained_on else {}),
                 **({"inputs": "blurred"} if settings.blurred_inputs else {})},
        "steps": epochs * steps_per_epoch, "batch": settings.batch,
        "optimizer": f"Adam, lr {settings.learning_rate:g} with cosine decay",
        "loss": loss, "dtype_policy": policy, "final": final,
        **({"initialised_from": initialised} if initialised else {}),
        "seconds": round(seconds, 1), "data_seconds": round(data_seconds, 1),
    })
    trained.save(folder / "config.json")
    (folder / "history.json").write_text(json.dumps(history.history, indent=1, default=float) + "\n")
    shutil.rmtree(checkpoint, ignore_errors=True)
    return folder
