"""DBMID: the blur classifier and the restoration networks DL_defocus and DL_motion (Jiang, Liao et al.).

The classifier looks at up to four crops of each tile at the slide's native resolution (with the pixel size as
an input) and averages their log-probabilities (a tile blurred in part takes its least sharp blurred crop's);
a tile whose crop with the most tissue is confidently in focus is settled on that crop alone. Each restoration
step runs its network over the region handed in (already aligned and padded by the pipeline), less the border
the caller discards beyond the network's receptive field; mixed blur gets DL_motion, then DL_defocus.

A restorer whose config names a ``prestep`` ("wiener") was trained to refine the classical method's blind Wiener
estimate of its own kind: that step runs first, at the slide's pixel size, and the network refines its output.
Only the first step of a route has it: on mixed blur, DL_defocus takes DL_motion's output as it is (a disc PSF
fitted to the spectrum of a motion-restored image is often wrong at 3-4 DOF; on held-out mixed blur at 20x the
defocus Wiener step in the route cost 0.01-0.03 SSIM).
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable

import numpy as np

from ..models.backend import resolve_precision
from ..models.config import ModelConfig
from ..models.networks import REFERENCE_MPP, receptive_radius
from ..models.registry import LoadedModel, folder_config, load_model, model_folder
from ..tissue import MIN_DENSITY, MIN_SATURATION
from . import DBMID_CLASSIFIER as CLASSIFIER
from . import DBMID_RESTORERS as RESTORERS

#: Crops per tile the classifier averages over (the four with the most tissue; see :func:`_crops`).
MAX_CROPS = 4
#: A tile is settled on its crop with the most tissue (its other crops are not run) when the classifier calls
#: that crop in focus with at least this probability and the tile is evenly sharp (:data:`EVENLY_SHARP`). On
#: held-out synthetic tiles of 256 px at random optics (800) and at 10x and 20x (600), no label changed at 0.95
#: and no blurred tile was settled; on an in-focus scan (500 tiles of 512 px) 98% were settled, cutting the
#: classifier's work about fourfold on in-focus tissue.
SETTLED_IN_FOCUS = 0.95
#: Evenly sharp: every crop keeps at least this fraction of the sharpest crop's contrast-normalised Laplacian
#: energy (:func:`_sharpness`). Blur over part of a tile leaves 1-4% of it in the blurred crops (three
#: tiles of the blurred sample slide, one of which was settled as in focus without this check); on the in-focus
#: benchmark scan the lowest ratio in a tile is >= 0.30 for 98% of tiles (98.6% of tiles pass).
EVENLY_SHARP = 0.25


#: A crop counts as blurred, for a tile that blur covers in part (:func:`_combine_crops`), when the classifier
#: gives it in focus below this probability.
PARTIAL_BLUR_IN_FOCUS = 0.5


class DBMIDMethod:
    """The deep-learning method (default once the trained models ship)."""

    name = "dbmid"

    def __init__(
        self, classifier: str = CLASSIFIER, restorers: dict[str, str] | None = None, precision: str = "auto"
    ) -> None:
        tf_logger = logging.getLogger("tensorflow")
        if tf_logger.level == logging.NOTSET:
            # tiles of new shapes retrace the predict function: expected here, and not the user's concern
            tf_logger.setLevel(logging.ERROR)
        self.precision = resolve_precision(precision)
        self.classifier: LoadedModel = load_model(classifier, self.precision, inference=True)
        # the restorers are built when first used: a classification pass (every tissue tile of a slide, on every
        # worker) needs only the classifier. Their configs and weights files are checked now.
        self._restorer_names = dict(restorers or RESTORERS)
        configs = {step: folder_config(model_folder(model)[0]) for step, model in self._restorer_names.items()}
        self._restorer_configs = configs
        self._restorers: dict[str, LoadedModel] = {}
        self.models = {c.name: c.version for c in (self.classifier.config, *configs.values())}
        self.version = "+".join(f"{k}-{v}" for k, v in sorted(self.models.items()))
        self.align = max(c.architecture.align for c in configs.values())
        self._radius = max(receptive_radius(c.architecture) for c in configs.values())
        self._prestep_reach = {step: _prestep_reach(step) if c.prestep else 0 for step, c in configs.items()}

    def restorer(self, step: str) -> LoadedModel:
        """The network for a restoration step ("defocus", "motion"), built on first use."""
        if step not in self._restorers:
            self._restorers[step] = load_model(self._restorer_names[step], self.precision)
        return self._restorers[step]

    @property
    def restorers(self) -> dict[str, LoadedModel]:
        """Every restoration network, by step (builds those not built yet)."""
        return {step: self.restorer(step) for step in self._restorer_names}

    @staticmethod
    def _working_mpp(mpp: float, config: ModelConfig) -> float:
        """The pixel size a model runs at: ``mpp`` clipped to the range it was trained on."""
        lo, hi = config.mpp_range
        return float(np.clip(mpp, lo, hi))

    def halo(self, mpp: float, steps: tuple[str, ...] | None = None) -> int:
        """Context each side for the route ``steps`` (None: the widest route): the receptive field of each of its
        networks in the slide's pixels (larger when tiles are shrunk to run; mixed blur runs two in turn), plus
        the reach of the Wiener prestep where the route's first restorer has one (its filter for the largest PSF
        it fits)."""
        if steps is None:
            networks = 2
            reach = max(self._prestep_reach.values(), default=0)
        else:
            networks = len(steps)
            reach = self._prestep_reach[steps[0]] if steps else 0
        return networks * self._network_radius(mpp) + reach

    def _network_radius(self, mpp: float) -> int:
        """The widest restorer's receptive radius in the slide's pixels at ``mpp``."""
        scale = max(self._working_mpp(mpp, c) / mpp for c in self._restorer_configs.values())
        return int(np.ceil(self._radius * scale))

    def classify(self, tiles: np.ndarray, mpp: float) -> np.ndarray:
        """Class probabilities (N, 4) of ``tiles``: the classifier runs on each tile's crop with the most tissue
        first, and on its other crops unless that one is in focus with :data:`SETTLED_IN_FOCUS` confidence and
        no other crop is much less sharp than it (:func:`_evenly_sharp`: blur that covers part of the tile). The
        crops' log-probabilities are then averaged, or, where blur covers part of the tile, those of its least
        sharp blurred crop are taken (:func:`_combine_crops`)."""
        tiles = np.asarray(tiles)
        size = self.classifier.config.input_size
        working = self._working_mpp(mpp, self.classifier.config)
        crops = []
        for tile in tiles:
            if working != mpp:
                tile = _resample(tile, mpp / working)
            crops.append(_crops(tile, size))
        logp = self._log_probabilities([c[0] for c in crops], working)
        out = logp.copy()
        unsettled = [i for i, c in enumerate(crops)
                     if len(c) > 1 and (np.exp(logp[i, 0]) < SETTLED_IN_FOCUS or not _evenly_sharp(c))]
        if unsettled:
            more = self._log_probabilities([crop for i in unsettled for crop in crops[i][1:]], working)
            start = 0
            for i in unsettled:
                every = np.vstack([logp[i : i + 1], more[start : start + len(crops[i]) - 1]])
                start += len(crops[i]) - 1
                out[i] = _combine_crops(every, crops[i])
        out = np.exp(out - out.max(axis=1, keepdims=True))
        return (out / out.sum(axis=1, keepdims=True)).astype(np.float32)

    def _log_probabilities(self, crops: list[np.ndarray], working: float) -> np.ndarray:
        """The classifier's log-probabilities (N, 4) for ``crops`` at pixel size ``working``."""
        x = np.stack(crops).astype(np.float32) / 255.0
        log_mpp = np.full((len(x), 1), np.log2(working / REFERENCE_MPP), dtype=np.float32)
        probs = np.asarray(self.classifier.network.predict_on_batch([x, log_mpp]), dtype=np.float64)
        return np.log(np.clip(probs, 1e-7, 1.0))

    def restore(self, image: np.ndarray, steps: tuple[str, ...], mpp: float, margin: int = 0) -> np.ndarray:
        """Run the route ``steps`` over ``image``: the first network's Wiener prestep where it has one, then the
        networks in turn.

        ``margin``: pixels along each border whose output the caller discards (its context, at most the route's
        :meth:`halo`). The prestep still filters all of them (its PSF estimated inside them), but the networks
        skip all but their receptive field (a multiple of :attr:`align`, so that the stride-2 grid stays where
        it was); the skipped border comes back as the prestep's output (or the input). For scattered 512 px
        tiles this skips over half of the network's pixels.
        """
        out = np.asarray(image)
        if steps and self.restorer(steps[0]).config.prestep:
            out = prestep(out, steps[0], mpp, margin)
        h, w = out.shape[:2]
        skip = max(0, int(margin) - len(steps) * self._network_radius(mpp)) // self.align * self.align
        skip = min(skip, (min(h, w) - 1) // 2 // self.align * self.align)
        inner = out[skip : h - skip, skip : w - skip]
        for step in steps:
            inner = self._run(self.restorer(step), inner, mpp)
        if not skip:
            return inner
        result = out.copy()
        result[skip : h - skip, skip : w - skip] = inner
        return result

    def _run(self, model: LoadedModel, image: np.ndarray, mpp: float) -> np.ndarray:
        working = self._working_mpp(mpp, model.config)
        if working != mpp:
            return _restore_resampled(functools.partial(self._run, model, mpp=working), image, mpp / working)
        align = model.config.architecture.align
        h, w = image.shape[:2]
        ph, pw = -h % align, -w % align
        x = image.astype(np.float32) / 255.0
        if ph or pw:
            x = np.pad(x, ((0, ph), (0, pw), (0, 0)), mode="symmetric")
        y = np.asarray(model.network.predict_on_batch(x[None]))[0, :h, :w]
        return np.clip(np.rint(y * 255.0), 0, 255).astype(np.uint8)


def prestep(image: np.ndarray, step: str, mpp: float, margin: int = 0) -> np.ndarray:
    """The classical blind Wiener step of kind ``step`` ("motion", "defocus") that a restorer with
    ``prestep="wiener"`` refines (also how its training inputs are made); its PSF is estimated inside
    ``margin`` (see :meth:`.ClassicalMethod.restore`)."""
    from .classical import ClassicalMethod

    return ClassicalMethod().restore(np.asarray(image, dtype=np.uint8), (step,), mpp, margin=margin)


def _prestep_reach(step: str) -> int:
    """Context each side the Wiener step of ``step`` needs (its filter's reach for the largest PSF)."""
    from .classical_deconv import _step_reach

    return _step_reach()[step]


#: Optical density of each uint8 level, -log10(v / 255) (0 clipped to 1/255), for :func:`_tissue_pixels`.
_DENSITY = -np.log10(np.clip(np.arange(256, dtype=np.float32), 1.0, 255.0) / 255.0).astype(np.float32)
#: floor(MIN_SATURATION * max) for each uint8 max: for integers, max - min > MIN_SATURATION * max exactly when
#: max - min > floor(MIN_SATURATION * max).
_SATURATION_FLOOR = np.floor(MIN_SATURATION * np.arange(256)).astype(np.uint8)


def _tissue_pixels(tile: np.ndarray) -> np.ndarray:
    """Pixels that are tissue by the thresholds :mod:`..tissue` uses (saturated or optically dense), not glass.

    Integer arithmetic on channel planes and look-up tables: this runs on every tile a slide classifies (a
    reduction over the last, 3-long axis costs several times as much). The planes are made contiguous first and
    the tables read with ``np.take``, which is two to three times as fast as fancy indexing for this; the sum
    keeps the order r + g + b, so the densities are the same float32 values.
    """
    rgb = np.asarray(tile, dtype=np.uint8)
    r, g, b = (np.ascontiguousarray(rgb[..., c]) for c in range(3))
    cmax = np.maximum(np.maximum(r, g), b)
    cmin = np.minimum(np.minimum(r, g), b)
    # (max - min) / max > MIN_SATURATION, without dividing
    saturated = (cmax - cmin) > np.take(_SATURATION_FLOOR, cmax)
    density = np.take(_DENSITY, r)
    density += np.take(_DENSITY, g)
    density += np.take(_DENSITY, b)
    return np.asarray(saturated | (density > 3.0 * MIN_DENSITY), dtype=bool)


def _sharpness(crop: np.ndarray) -> float:
    """Mean squared Laplacian of the grey crop over its variance: high-frequency energy, whatever the contrast."""
    # the channel planes summed, then divided: the same float32 values as a mean over the last axis, which costs
    # four times as much (this runs on every crop of every in-focus tile a slide classifies)
    g = (crop[..., 0].astype(np.float32) + crop[..., 1] + crop[..., 2]) / np.float32(3.0)
    lap = 4.0 * g[1:-1, 1:-1] - g[:-2, 1:-1] - g[2:, 1:-1] - g[1:-1, :-2] - g[1:-1, 2:]
    return float(np.mean(lap * lap) / (g.var() + 1.0))


def _combine_crops(logp: np.ndarray, crops: list[np.ndarray]) -> np.ndarray:
    """A tile's log-probabilities from its crops' (n, 4): their mean, or, where blur covers part of the tile
    (some crops are blurred, with in focus below one half, others are not, and the tile is not
    :func:`_evenly_sharp`), those of its least sharp blurred crop.

    Averaging over every crop lets the sharp ones outvote the blurred ones: a tile whose lower half was
    motion-blurred was left as it was. The least sharp crop is the one inside the blur: a crop across the
    edge of a defocused area reads as directional blur (motion), which the crop beyond it does not."""
    blurred = logp[:, 0] < np.log(PARTIAL_BLUR_IN_FOCUS)
    if blurred.any() and not blurred.all():
        sharpness = [_sharpness(c) for c in crops]  # once: both the evenness test and the choice need it
        if not _even(sharpness):
            return logp[min(np.flatnonzero(blurred), key=lambda k: sharpness[k])]
    return logp.mean(axis=0)


def _evenly_sharp(crops: list[np.ndarray]) -> bool:
    """Whether no crop of a tile is much less sharp than its sharpest (see :data:`EVENLY_SHARP`)."""
    return _even([_sharpness(c) for c in crops])


def _even(sharpness: list[float]) -> bool:
    """The test of :func:`_evenly_sharp` on the crops' sharpness already computed."""
    return min(sharpness) >= EVENLY_SHARP * max(sharpness)


def _crops(tile: np.ndarray, size: int) -> list[np.ndarray]:
    """Up to MAX_CROPS size x size crops of the tile where its tissue is.

    Glass has no texture and reads as blur, so the crops are not placed blindly: among positions on a grid of
    ``size / 4`` (the last one flush with the border), those with the most tissue pixels are taken, each
    overlapping an earlier pick by less than half of its side in either direction. The classifier was trained on
    crops that are at least 60% tissue. A tile smaller than a crop is padded by reflection.
    """
    h, w = tile.shape[:2]
    if h < size or w < size:
        pad = ((0, max(0, size - h)), (0, max(0, size - w)), (0, 0))
        return [np.pad(tile, pad, mode="symmetric")[:size, :size]]
    step = max(1, size // 4)
    ys = sorted({*range(0, h - size + 1, step), h - size})
    xs = sorted({*range(0, w - size + 1, step), w - size})
    # tissue counted on every other pixel and row: placement needs the amount of tissue, not its last pixel
    mask = _tissue_pixels(tile[::2, ::2])
    counts = np.zeros((mask.shape[0] + 1, mask.shape[1] + 1), dtype=np.int32)
    np.cumsum(mask, axis=0, dtype=np.int32, out=counts[1:, 1:])
    np.cumsum(counts[1:, 1:], axis=1, out=counts[1:, 1:])
    a, b = np.asarray(ys) // 2, np.asarray(xs) // 2
    c = size // 2
    window = (counts[a[:, None] + c, b[None, :] + c] - counts[a[:, None], b[None, :] + c]
              - counts[a[:, None] + c, b[None, :]] + counts[a[:, None], b[None, :]])
    # most tissue first, then top to bottom, then left to right
    y_at, x_at = np.meshgrid(np.asarray(ys), np.asarray(xs), indexing="ij")
    order = np.lexsort((x_at.ravel(), y_at.ravel(), -window.ravel()))
    chosen: list[tuple[int, int]] = []
    for y, x in zip(y_at.ravel()[order].tolist(), x_at.ravel()[order].tolist(), strict=True):
        if all(abs(y - cy) >= size // 2 or abs(x - cx) >= size // 2 for cy, cx in chosen):
            chosen.append((y, x))
            if len(chosen) == MAX_CROPS:
                break
    return [tile[y : y + size, x : x + size] for y, x in chosen]


def _resample(image: np.ndarray, scale: float) -> np.ndarray:
    """``image`` resized by ``scale`` (antialiased when shrinking), uint8."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    shape = (max(8, int(round(h * scale))), max(8, int(round(w * scale))), image.shape[2])
    out = resize(image, shape, anti_aliasing=scale < 1, preserve_range=True)
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _restore_resampled(run: Callable[[np.ndarray], np.ndarray], image: np.ndarray, scale: float) -> np.ndarray:
    """Restore at ``scale`` times the size and carry the correction (not the resampled image) back."""
    from skimage.transform import resize

    h, w = image.shape[:2]
    small = _resample(image, scale)
    restored = run(small)
    correction = resize(restored.astype(np.float32) - small.astype(np.float32), (h, w, 3), preserve_range=True)
    return np.clip(np.rint(image.astype(np.float32) + correction), 0, 255).astype(np.uint8)
