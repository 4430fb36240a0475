"""The blur map: one cell per level-0 tile, with tissue, class probabilities and the action decided."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ._types import LABELS, STEPS

#: Actions a cell can get, by code. The code is what the blur map stores.
ACTIONS: tuple[str, ...] = ("none", "defocus", "motion", "motion+defocus")
#: Restoration steps per action code.
ACTION_STEPS: tuple[tuple[str, ...], ...] = ((), ("defocus",), ("motion",), ("motion", "defocus"))
_LABEL_ACTION = {label: ACTION_STEPS.index(steps) for label, steps in STEPS.items()}

#: Restore only when the classifier gives the blurred classes together at least this probability
#: ("do no harm": an unsure tile is left as it was).
DEFAULT_MIN_BLUR_PROBABILITY = 0.5
#: A class probability at which the classifier's call counts as plausible when routing a blurred tile
#: (:func:`decide`): a tile called motion on which mixed blur is plausible also gets DL_defocus; a tile called mixed
#: on which pure motion is not plausible goes on to the test of :data:`DEFOCUS_ALONE_PROBABILITY`.
PLAUSIBLE_PROBABILITY = 0.05
#: Probability of pure defocus at which a tile called mixed, on which pure motion is not plausible, gets DL_defocus
#: alone. Both thresholds were chosen on training-split tiles and checked on held-out ones
#: (``benchmarks/mixed_route.py``; the figures are in README, "Routing blurred tiles"). This one is higher than
#: plain plausibility because a classifier trained on defocus up to 6 DOF gives pure defocus 5-25% on strong
#: defocus under a long motion too, which both networks restore better.
DEFOCUS_ALONE_PROBABILITY = 0.25


def decide(probabilities: np.ndarray, min_blur_probability: float = DEFAULT_MIN_BLUR_PROBABILITY) -> tuple[
    np.ndarray, np.ndarray
]:
    """Labels (index into LABELS) and action codes for probabilities of shape (..., 4).

    The label is the most probable class. "Do no harm": a tile labelled in focus is left untouched, and so is
    a tile whose blurred classes together fall short of ``min_blur_probability``. A blurred tile is restored as
    its most probable blurred class asks (defocus: DL_defocus; motion: DL_motion; mixed: DL_motion, then
    DL_defocus), with two exceptions where the classifier finds another class plausible
    (:data:`PLAUSIBLE_PROBABILITY`):

    * motion, with mixed plausible: DL_motion, then DL_defocus. Defocus of about 1 DOF under a long motion is
      often called motion; DL_defocus after DL_motion restores it better, and pure motion no worse.
    * mixed, with pure motion not plausible and pure defocus at :data:`DEFOCUS_ALONE_PROBABILITY` or more:
      DL_defocus alone. Strong defocus, alone or under a short motion, looks the same either way and is often
      called mixed; there DL_motion fits a motion PSF to what is mostly a disc, and DL_defocus alone restores it
      better. Under a long motion the classifier gives pure defocus less, and both networks run.
    """
    p = np.asarray(probabilities, dtype=np.float32)
    labels = np.argmax(p, axis=-1).astype(np.int8)
    blurred = 1.0 - p[..., 0]
    # among the blurred classes, the most probable one decides the restoration, bar the two exceptions
    route = np.argmax(p[..., 1:], axis=-1) + 1
    plausible = p >= np.float32(PLAUSIBLE_PROBABILITY)
    motion, mixed, defocus = (LABELS.index(name) for name in ("motion", "mixed", "defocus"))
    route = np.where((route == motion) & plausible[..., mixed], mixed, route)
    defocus_alone = ~plausible[..., motion] & (p[..., defocus] >= np.float32(DEFOCUS_ALONE_PROBABILITY))
    route = np.where((route == mixed) & defocus_alone, defocus, route)
    action_of = np.array([_LABEL_ACTION[name] for name in LABELS], dtype=np.int8)
    restore = (labels != 0) & (blurred >= min_blur_probability)
    actions = np.where(restore, action_of[route], 0).astype(np.int8)
    return labels, actions


@dataclass
class BlurMap:
    """Per-tile blur classification of a slide's level 0.

    Cell (r, c) covers level-0 pixels ``[r*tile_size, (r+1)*tile_size) x [c*tile_size, (c+1)*tile_size)``
    clipped to the slide. ``labels`` and ``actions`` are -1 where a cell holds no tissue (not classified).
    """

    tile_size: int
    width: int
    height: int
    tissue: np.ndarray  # bool (rows, cols)
    probabilities: np.ndarray  # float32 (rows, cols, 4), NaN where not classified
    labels: np.ndarray  # int8 (rows, cols), index into LABELS, -1 = background
    actions: np.ndarray  # int8 (rows, cols), index into ACTIONS, -1 = background

    @classmethod
    def empty(cls, width: int, height: int, tile_size: int, tissue: np.ndarray) -> BlurMap:
        rows, cols = tissue.shape
        return cls(
            tile_size=tile_size,
            width=width,
            height=height,
            tissue=tissue.astype(bool),
            probabilities=np.full((rows, cols, len(LABELS)), np.nan, dtype=np.float32),
            labels=np.full((rows, cols), -1, dtype=np.int8),
            actions=np.full((rows, cols), -1, dtype=np.int8),
        )

    @property
    def shape(self) -> tuple[int, int]:
        return (int(self.tissue.shape[0]), int(self.tissue.shape[1]))

    def set_probabilities(
        self, cells: list[tuple[int, int]] | np.ndarray, probabilities: np.ndarray,
        min_blur_probability: float = DEFAULT_MIN_BLUR_PROBABILITY,
    ) -> None:
        """Record classifier output for cells [(row, col), ...] and decide their labels and actions."""
        idx = np.asarray(cells, dtype=np.int64).reshape(-1, 2)
        probs = np.asarray(probabilities, dtype=np.float32).reshape(-1, len(LABELS))
        labels, actions = decide(probs, min_blur_probability)
        self.probabilities[idx[:, 0], idx[:, 1]] = probs
        self.labels[idx[:, 0], idx[:, 1]] = labels
        self.actions[idx[:, 0], idx[:, 1]] = actions

    def cell_box(self, row: int, col: int) -> tuple[int, int, int, int]:
        """Level-0 box (x, y, w, h) of a cell, clipped to the slide."""
        x, y = col * self.tile_size, row * self.tile_size
        return x, y, min(self.tile_size, self.width - x), min(self.tile_size, self.height - y)

    def save(self, path: str | Path) -> None:
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp.npz")
        np.savez(
            tmp, tile_size=self.tile_size, width=self.width, height=self.height, tissue=self.tissue,
            probabilities=self.probabilities, labels=self.labels, actions=self.actions,
        )
        tmp.replace(path)

    @classmethod
    def load(cls, path: str | Path) -> BlurMap:
        with np.load(path, allow_pickle=False) as f:
            return cls(
                tile_size=int(f["tile_size"]), width=int(f["width"]), height=int(f["height"]),
                tissue=f["tissue"], probabilities=f["probabilities"], labels=f["labels"], actions=f["actions"],
            )
