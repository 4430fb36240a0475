"""wsi-deblur: find and remove defocus and motion blur in whole-slide pathology images."""

from ._types import LABELS, STEPS, BlurPrediction, OutputError, SlideError, UsageError
from ._version import __version__
from .api import classify_image, restore_image

__all__ = [
    "LABELS",
    "STEPS",
    "BlurPrediction",
    "OutputError",
    "SlideError",
    "UsageError",
    "__version__",
    "classify_image",
    "restore_image",
]
