"""Evaluation of deblurring methods on held-out tissue, after the DBMID paper (Tables 2-3, Figs. 4 and 6).

Everything is measured on the ``test`` split of :mod:`wsi_deblur.training.data`: source images that no model
was trained on. Sharp crops of real tissue are blurred with :func:`wsi_deblur.physics.degrade` (pupil-model
defocus and/or a motion line, camera noise, JPEG at the qualities of :data:`physics.EVAL_JPEG`), with fixed
seeds, so every number can be reproduced.

* **Classification** (Table 2): :func:`data.classification_set` on the test split (balanced over the four
  classes, random optics), and every crop of the sets below at the three named optics. Confusion matrix,
  accuracy overall and per class, and the in-focus false-alarm rate (in-focus called anything else).
* **Defocus** (Table 3, Fig. 4a): at PAPER_10X (0.55 um/px), SCANNER_20X (0.5) and SCANNER_40X (0.25), crops
  resampled to the optics' pixel size, focus offsets ``0`` and ``+-z`` for z in :data:`physics.EVAL_Z_DOF`
  (DOF units). SSIM per stain and pixel size, and against z.
* **Motion** (Fig. 4b-c): lengths :data:`physics.EVAL_MOTION_PX` at :data:`physics.EVAL_ANGLES` at SCANNER_20X
  (0.5 um/px, the sources' own pixel size), grouped as horizontal, vertical and oblique.
* **Mixed** (Fig. 6): defocus :data:`MIXED_Z_DOF` x motion :data:`MIXED_MOTION_PX` at SCANNER_20X.
* **Policy**: restoration above follows the true class (the "oracle" route, :data:`wsi_deblur._types.STEPS`:
  defocus -> ("defocus",), motion -> ("motion",), mixed -> ("motion", "defocus")), so that restoration is
  measured apart from classification. The end-to-end policy (classify the crop, decide with
  :func:`wsi_deblur.blurmap.decide` as the slide workflow does, restore) is reported beside it on the defocus,
  motion and mixed sets, and in-focus crops go through :func:`wsi_deblur.restore_image`, which should hand them
  back bit for bit.

SSIM is :func:`skimage.metrics.structural_similarity` over RGB (``channel_axis=2``, ``data_range=255``, 7 px
window) between the sharp crop and the blurred or restored one. A crop is cut larger than ``size`` by the blur
kernel's radius where the source allows it, blurred and restored whole, and only its central ``size`` px are
compared, so image borders neither blur nor restore differently from the inside.

**Cost.** With the defaults (6 crops per source, 192 px) a method restores 540 defocused crops (and 54 in
focus go through the policy), 432 motion and 288 mixed ones, and classifies 400 tiles plus every crop. The
classical method spends about 0.1 s on a defocus step and about 1 s on a motion step (its PSF search): one crop
per source took 2.3 minutes on 2 busy cores, so the defaults take about 13 minutes; ``quick=True`` about 30 s.
"""

from .run import available_methods, evaluate
from .sets import BASELINE, DEFAULT_CROPS_PER_SOURCE, DEFAULT_SIZE, MIXED_MOTION_PX, MIXED_Z_DOF

__all__ = [
    "BASELINE",
    "DEFAULT_CROPS_PER_SOURCE",
    "DEFAULT_SIZE",
    "MIXED_MOTION_PX",
    "MIXED_Z_DOF",
    "available_methods",
    "evaluate",
]
