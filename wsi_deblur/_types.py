"""Small shared types: blur classes, the actions they call for, and a prediction."""

from __future__ import annotations

from dataclasses import dataclass, field

#: The four blur classes, in the order every probability array uses.
LABELS: tuple[str, ...] = ("in_focus", "defocus", "motion", "mixed")

#: Pixel size (um/px) the API assumes when the caller gives none.
DEFAULT_MPP = 0.5

#: Restoration steps per class (DBMID policy): mixed blur is deblurred for motion first, then defocus.
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

    @property
    def steps(self) -> tuple[str, ...]:
        """Restoration steps this label calls for (empty when in focus)."""
        return STEPS[self.label]


class SlideError(Exception):
    """A slide cannot be opened or used; the message names the file and the problem."""


class UsageError(Exception):
    """The user's options do not make sense together; the message says what to pass instead."""


class OutputError(Exception):
    """An output cannot be written where asked; the message names the path and the problem."""
