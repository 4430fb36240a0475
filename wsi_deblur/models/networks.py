"""The DBMID networks, written with backend-neutral Keras 3 layers only.

* ``rednet``: the restorers DL_defocus and DL_motion (RED-Net style encoder-decoder): convolutions going down
  with stride-2 steps, transposed convolutions coming up, symmetric skip connections added by sum, and a global
  residual (the network predicts the correction to its input).
* ``blurnet``: the shipped blur classifier: a small strided CNN on a fixed-size crop at the slide's native
  resolution, pooled globally, with the pixel size as a second input (blur extent in pixels depends on it),
  and optionally a spectral branch: the crop's power spectrum averaged over rings and sectors
  (:class:`RingSectorSpectrum`), where the direction of motion blur and the reach of defocus are read directly.
* ``vgg16``: the paper's classifier topology, from scratch (no pretrained weights can be fetched), for users with
  GPUs (``train --arch vgg16``); 138 M parameters at 224 px, not shipped.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np

from .backend import native_output_silenced
from .config import Architecture, ModelConfig

with native_output_silenced():  # the backend's native start-up lines (see .backend)
    import keras
    from keras import layers

#: Pixel size the classifier's mpp input is expressed against (log2(mpp / REFERENCE_MPP)).
REFERENCE_MPP = 0.5
#: Ring edges of the spectral branch, in cycles per pixel (x 1/128: FFT bins of a 128 px crop). Below 4 bins the
#: Hann window's own spread dominates; rings widen with frequency, as blur acts on a log scale.
SPECTRUM_RING_EDGES: tuple[float, ...] = tuple(b / 128 for b in (4, 6, 8, 11, 14, 18, 23, 29, 36, 45, 55, 64))
#: Sectors of the spectral branch over 180 degrees (a real image's spectrum is point-symmetric): 15 degrees, so
#: that the 90-degree rotations and flips of training augmentation map sectors onto sectors.
SPECTRUM_SECTORS = 12


def receptive_radius(arch: Architecture) -> int:
    """Pixels on each side that influence one output pixel of a ``rednet`` (the deepest path bounds it).

    A k x k convolution at a level whose pixels are ``jump`` input pixels apart adds (k-1)/2 * jump; a stride-2
    step doubles the jump going down and halves it coming up (a transposed convolution is counted at the coarser
    level's jump, an upper bound).
    """
    if arch.type != "rednet":
        raise ValueError("receptive_radius is defined for restorers")
    half = (arch.kernel - 1) / 2
    radius = (arch.first_kernel - 1) / 2 + (arch.convs - 1) * half
    jump = 1
    for _ in range(arch.downsamplings):  # going down
        radius += half * jump
        jump *= 2
        radius += (arch.convs - 1) * half * jump
    for _ in range(arch.downsamplings):  # coming up
        radius += half * jump
        jump //= 2
        radius += (arch.convs - 1) * half * jump
    radius += half  # output convolution
    return int(math.ceil(radius))


def _conv(filters: int, kernel: int, strides: int = 1, name: str | None = None) -> layers.Conv2D:
    return layers.Conv2D(filters, kernel, strides=strides, padding="same", activation="relu", name=name)


def _conv_bn(filters: int, kernel: int, strides: int, name: str) -> Callable[[Any], Any]:
    """Convolution, batch normalisation, ReLU: normalised activations let a small classifier train quickly."""

    def apply(x: Any) -> Any:
        x = layers.Conv2D(filters, kernel, strides=strides, padding="same", use_bias=False, name=name)(x)
        x = layers.BatchNormalization(name=f"{name}_bn")(x)
        return layers.Activation("relu", name=f"{name}_relu")(x)

    return apply


def build_rednet(arch: Architecture, name: str = "rednet") -> keras.Model:
    """Restorer: RGB in [0, 1] of any size that is a multiple of ``arch.align`` -> restored RGB in [0, 1]."""
    inputs = keras.Input((None, None, 3), name="image")
    x = _conv(arch.features[0], arch.first_kernel, name="enc0_0")(inputs)
    for i in range(1, arch.convs):
        x = _conv(arch.features[0], arch.kernel, name=f"enc0_{i}")(x)
    skips = [x]
    for level, filters in enumerate(arch.features[1:], start=1):
        x = _conv(filters, arch.kernel, strides=2, name=f"down{level}")(x)
        for i in range(1, arch.convs):
            x = _conv(filters, arch.kernel, name=f"enc{level}_{i}")(x)
        skips.append(x)
    skips.pop()
    for level in range(arch.downsamplings - 1, -1, -1):
        filters = arch.features[level]
        x = layers.Conv2DTranspose(filters, arch.kernel, strides=2, padding="same", activation="relu",
                                   name=f"up{level}")(x)
        x = layers.Add(name=f"skip{level}")([x, skips[level]])
        for i in range(1, arch.convs):
            x = _conv(filters, arch.kernel, name=f"dec{level}_{i}")(x)
    # the correction is computed in the working precision (a float32 convolution here cost a tenth of the
    # network's time in bfloat16) and added to the input in float32
    residual = layers.Conv2D(3, arch.kernel, padding="same", name="residual")(x)
    outputs = layers.Add(dtype="float32", name="restored")([inputs, residual])
    return keras.Model(inputs, outputs, name=name)


def _conv_folded(filters: int, kernel: int, strides: int, name: str) -> Callable[[Any], Any]:
    """What :func:`_conv_bn` computes at inference, as one convolution with a bias (see :func:`fold_batch_norm`)."""

    def apply(x: Any) -> Any:
        return layers.Conv2D(filters, kernel, strides=strides, padding="same", activation="relu", name=name)(x)

    return apply


def _ring_sector_weights(size: int) -> np.ndarray:
    """(size // 2 * size, rings * sectors) float32: each column averages the FFT bins of one ring and sector,
    over the rows of non-negative vertical frequency. A real image's power spectrum is point-symmetric and a
    sector spans 180 degrees, so this half, which holds each bin or its mirror once, gives the same averages as
    the whole plane at half the cost."""
    freq = np.fft.fftfreq(size)
    fy, fx = np.meshgrid(freq[: size // 2], freq, indexing="ij")
    radius = np.hypot(fy, fx).ravel()
    angle = (np.degrees(np.arctan2(fy, fx)).ravel()) % 180.0
    edges = np.asarray(SPECTRUM_RING_EDGES)
    ring = np.searchsorted(edges, radius, side="right") - 1
    sector = np.minimum((angle / (180.0 / SPECTRUM_SECTORS)).astype(int), SPECTRUM_SECTORS - 1)
    # the zero row holds each bin and its mirror: one of them only
    inside = (ring >= 0) & (ring < len(edges) - 1) & ~((fy.ravel() == 0) & (fx.ravel() < 0))
    columns = ring * SPECTRUM_SECTORS + sector
    n = (len(edges) - 1) * SPECTRUM_SECTORS
    weights = np.zeros((radius.size, n), dtype=np.float64)
    weights[np.flatnonzero(inside), columns[inside]] = 1.0
    counts = weights.sum(axis=0)
    if np.any(counts == 0):
        raise ValueError(f"spectral branch: a {size} px crop leaves some rings and sectors without FFT bins")
    return (weights / counts).astype(np.float32)


class RingSectorSpectrum(layers.Layer):
    """log10 of a crop's power spectrum averaged over rings and sectors (:data:`SPECTRUM_RING_EDGES`,
    :data:`SPECTRUM_SECTORS`), relative to its mean power: (batch, size, size, 3) in [0, 1] -> (batch, rings *
    sectors). The grey level is the channels' mean, its mean removed and a Hann window applied. Computed in
    float32 whatever the dtype policy; a fixed transform, no weights."""

    def __init__(self, size: int, **kwargs: Any) -> None:
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.size = size
        hann = np.hanning(size + 2)[1:-1]
        self._window = np.outer(hann, hann).astype(np.float32)
        self._weights = _ring_sector_weights(size)

    def call(self, image: Any) -> Any:
        from keras import ops

        grey = ops.mean(ops.cast(image, "float32"), axis=-1)
        grey = (grey - ops.mean(grey, axis=(1, 2), keepdims=True)) * self._window
        real, imag = ops.fft2((grey, ops.zeros_like(grey)))
        power = real * real + imag * imag
        power = power / (ops.mean(power, axis=(1, 2), keepdims=True) + 1e-12)
        half = self.size // 2
        power = ops.reshape(power[:, :half], (-1, half * self.size))
        return ops.log10(ops.matmul(power, self._weights) + 1e-6)

    def compute_output_shape(self, input_shape: tuple[Any, ...]) -> tuple[Any, ...]:
        return (input_shape[0], self._weights.shape[1])

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": self.size}


def build_blurnet(
    arch: Architecture, input_size: int, n_classes: int, name: str = "blurnet", folded: bool = False
) -> keras.Model:
    """Classifier: (RGB in [0, 1] crop, log2(mpp / 0.5)) -> class probabilities. ``folded``: the inference form,
    each convolution's batch normalisation folded into it (weights from :func:`fold_batch_norm`)."""
    block = _conv_folded if folded else _conv_bn
    image = keras.Input((input_size, input_size, 3), name="image")
    mpp = keras.Input((1,), name="log2_mpp")
    x = block(arch.features[0], arch.first_kernel, 1, "stem")(image)  # full resolution: fine detail is the cue
    for stage, filters in enumerate(arch.features[1:], start=1):
        x = block(filters, arch.kernel, 2, f"stage{stage}_down")(x)
        for i in range(1, arch.convs):
            x = block(filters, arch.kernel, 1, f"stage{stage}_{i}")(x)
    parts = [layers.GlobalAveragePooling2D()(x), layers.GlobalMaxPooling2D()(x), mpp]
    if arch.spectrum:
        spectrum = RingSectorSpectrum(input_size, name="spectrum")(image)
        parts.append(layers.Dense(arch.spectrum, activation="relu", name="spectrum_dense")(spectrum))
    pooled = layers.Concatenate(name="pool")(parts)
    hidden = layers.Dense(64, activation="relu", name="hidden")(pooled)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(hidden)
    return keras.Model([image, mpp], outputs, name=name)


def build_vgg16(input_size: int, n_classes: int, name: str = "vgg16") -> keras.Model:
    """The paper's VGG16 classifier topology (13 convolutions, 2 x 4096 dense), randomly initialised."""
    image = keras.Input((input_size, input_size, 3), name="image")
    mpp = keras.Input((1,), name="log2_mpp")
    x = image
    for block, (filters, convs) in enumerate(((64, 2), (128, 2), (256, 3), (512, 3), (512, 3)), start=1):
        for i in range(convs):
            x = _conv(filters, 3, name=f"block{block}_conv{i + 1}")(x)
        x = layers.MaxPooling2D(2, name=f"block{block}_pool")(x)
    x = layers.Flatten()(x)
    x = layers.Concatenate()([x, mpp])
    x = layers.Dense(4096, activation="relu", name="fc1")(x)
    x = layers.Dense(4096, activation="relu", name="fc2")(x)
    outputs = layers.Dense(n_classes, activation="softmax", dtype="float32", name="probabilities")(x)
    return keras.Model([image, mpp], outputs, name=name)


def fold_batch_norm(network: keras.Model, config: ModelConfig) -> keras.Model:
    """The same function as a trained ``blurnet``, with every batch normalisation folded into the convolution
    before it (inference statistics: ``w * g / sqrt(v + eps)``, bias ``b - m * g / sqrt(v + eps)``): one
    operation per layer instead of three, the classifier's cost on every tissue tile. Other networks have no
    batch normalisation and are returned as they are."""
    arch = config.architecture
    if arch.type != "blurnet":
        return network
    folded = build_blurnet(arch, config.input_size, len(config.classes), name=config.name, folded=True)
    for layer in folded.layers:
        if not layer.weights:
            continue
        source = network.get_layer(layer.name)
        if isinstance(layer, layers.Conv2D):
            norm = network.get_layer(f"{layer.name}_bn")
            gamma, beta, mean, var = (np.asarray(w, dtype=np.float64) for w in (
                norm.gamma, norm.beta, norm.moving_mean, norm.moving_variance))
            scale = gamma / np.sqrt(var + norm.epsilon)
            kernel = np.asarray(source.kernel, dtype=np.float64) * scale
            layer.set_weights([kernel.astype(np.float32), (beta - mean * scale).astype(np.float32)])
        else:
            layer.set_weights(source.get_weights())
    return folded


def build(config: ModelConfig) -> keras.Model:
    """The untrained network a config describes."""
    arch = config.architecture
    if arch.type == "rednet":
        return build_rednet(arch, name=config.name)
    if arch.type == "blurnet":
        return build_blurnet(arch, config.input_size, len(config.classes), name=config.name)
    if arch.type == "vgg16":
        return build_vgg16(config.input_size, len(config.classes), name=config.name)
    raise ValueError(f"unknown architecture {arch.type!r}")
