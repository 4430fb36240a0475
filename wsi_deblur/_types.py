"""Small shared types: blur classes, the actions they call for, and a prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The four blur classes, in the order every probability array uses.
LABELS: tuple[str, ...] = ("in_focus", "defocus", "motion", "mixed")

#: Pixel size (um/px) the API assumes when the caller gives none.
DEFAULT_MPP = 0.5

#: Plausible pixel sizes (um/px) for a slide at level 0 or a single image: from 100x oil (~0.05) to a 1x
#: overview (~20).
MPP_RANGE = (0.05, 20.0)

#: Restoration steps per class (DBMID, the true class's route): mixed blur is deblurred for motion first, then
#: defocus. The policy follows them except where the classifier finds another class plausible
#: (:func:`wsi_deblur.blurmap.decide`).
STEPS: dict[str, tuple[str, ...]] = {
    "in_focus": (),
    "defocus": ("defocus",),
    "motion": ("motion",),
    "mixed": ("motion", "defocus"),
}


@dataclass(frozen=True)
class BlurPrediction:
    """The blur class of one image and the probability of each class."""

    label: str
    probabilities: dict[str, float] = field(default_factory=dict)
    #: The route :func:`wsi_deblur.blurmap.decide` gives the probabilities: the label's, except where the
    #: classifier finds another class plausible (mixed blur without visible motion and with pure defocus likely
    #: enough, :data:`~wsi_deblur.blurmap.DEFOCUS_ALONE_PROBABILITY`: ("defocus",); motion that may be mixed:
    #: ("motion", "defocus")); empty when the image is left as it is. None: not decided.
    route: tuple[str, ...] | None = None

    @property
    def steps(self) -> tuple[str, ...]:
        """Restoration steps the policy gives this prediction: :attr:`route` where it was decided from the
        probabilities (:func:`wsi_deblur.classify_image` does), else the label's (empty when in focus)."""
        return STEPS[self.label] if self.route is None else self.route


class SlideError(Exception):
    """A slide cannot be opened or used; the message names the file and the problem."""


class UsageError(Exception):
    """The user's options do not make sense together; the message says what to pass instead."""


class OutputError(Exception):
    """An output cannot be written where asked; the message names the path and the problem."""


def check_mpp_option(mpp: float | None) -> None:
    """Refuse a ``--mpp`` outside :data:`MPP_RANGE` (slides and single images alike)."""
    if mpp is not None and not MPP_RANGE[0] <= mpp <= MPP_RANGE[1]:
        raise UsageError(f"--mpp {mpp} is not a plausible pixel size ({MPP_RANGE[0]:g} to {MPP_RANGE[1]:g} um/px)")
