"""Two blur classifiers side by side on the same held-out tiles at random optics.

``wsi-deblur evaluate`` scores the shipped classifier on 400 held-out tiles drawn from the current optics family.
When the family changes, an older table is not comparable; this script draws the evaluation's tiles once (the
same call, seed and PSF count as the evaluation) and classifies them with each model given, printing accuracy,
in-focus false alarms and the confusion matrix.

A model is a registered name or a model folder. An earlier version comes out of the repository's history, e.g.::

    mkdir old && git show fdba905~1:wsi_deblur/models/pretrained/blur_classifier/config.json > old/config.json
    git show fdba905~1:wsi_deblur/models/pretrained/blur_classifier/model.weights.h5 > old/model.weights.h5
    python benchmarks/compare_classifiers.py old blur_classifier

(about two minutes).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from wsi_deblur._types import LABELS  # noqa: E402
from wsi_deblur.evaluation.sets import CLASSIFY_PER_CLASS, CLASSIFY_TILES_PER_PSF, DEFAULT_SIZE, SPLIT  # noqa: E402
from wsi_deblur.methods.dbmid import DBMIDMethod  # noqa: E402
from wsi_deblur.training import data  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("models", nargs="+", help="registered names or model folders")
    parser.add_argument("--seed", type=int, default=0, help="the evaluation's seed [0]")
    args = parser.parse_args()
    n = CLASSIFY_PER_CLASS * len(LABELS)
    tiles, labels, mpps, _ = data.classification_set(
        n, DEFAULT_SIZE, args.seed, split=SPLIT, n_psfs=n // CLASSIFY_TILES_PER_PSF
    )
    for model in args.models:
        method = DBMIDMethod(classifier=model)
        predicted = np.array(
            [int(np.argmax(method.classify(t[None], float(m))[0])) for t, m in zip(tiles, mpps, strict=True)]
        )
        confusion = np.zeros((len(LABELS), len(LABELS)), dtype=int)
        np.add.at(confusion, (labels, predicted), 1)
        accuracy = np.trace(confusion) / confusion.sum()
        false_alarms = 1.0 - confusion[0, 0] / confusion[0].sum()
        print(f"{model} ({method.classifier.config.version}): accuracy {accuracy:.1%} of {n}, "
              f"in-focus false alarms {false_alarms:.1%}")
        print("  rows true, columns predicted:", ", ".join(LABELS))
        for row in confusion:
            print("  " + " ".join(f"{v:4d}" for v in row))


if __name__ == "__main__":
    main()
