"""The OME-NGFF metadata of the working pyramid, written once its pixels are complete: multiscales, ``omero``
rendering, the ``restored`` label image and the run's provenance. See :mod:`.omezarr` for the layout."""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from typing import Any

import zarr
from ome_zarr.writer import write_label_metadata, write_multiscales_metadata

from ..blurmap import ACTIONS
from .omezarr import LABEL_NAME, PROVENANCE_KEY, PyramidLayout, _format, _image_level

__all__ = ["finalize"]

LOGGER = logging.getLogger(__name__)

_CHANNELS = (("red", "FF0000"), ("green", "00FF00"), ("blue", "0000FF"))
#: Label colours (RGBA) per action code: 0 transparent, then the Okabe-Ito colour-blind-safe blue, orange and
#: reddish purple at half opacity (128 of 255) so that the tissue stays visible under them.
_LABEL_COLORS: dict[int, tuple[int, int, int, int]] = {
    0: (0, 0, 0, 0),
    1: (0, 114, 178, 128),
    2: (230, 159, 0, 128),
    3: (204, 121, 167, 128),
}


def finalize(
    path: str | Path, layout: PyramidLayout, mpp: float, name: str, provenance: dict[str, object],
    mpp_y: float | None = None,
) -> None:
    """Write the OME-NGFF metadata: multiscales, omero rendering, labels, image-label and provenance.

    Scales are ``[1, mpp_y * 2**level, mpp * 2**level]`` in micrometres (``mpp_y``, the pixel height where pixels
    are not square, defaults to ``mpp``); ``provenance`` (any JSON-serialisable
    dict: software version, method, model versions) is stored as given under ``"wsi_deblur"`` in the image
    group's attributes. Running it again rewrites the same metadata.
    """
    path = Path(path)
    height_um = mpp if mpp_y is None else mpp_y
    for size in (mpp, height_um):
        if not (size > 0 and math.isfinite(size)):
            raise ValueError(f"{path}: pixel size must be a positive number of micrometres, got {size}")
    try:
        provenance_json = json.loads(json.dumps(provenance))
    except (TypeError, ValueError) as err:
        raise ValueError(f"{path}: provenance must be JSON-serialisable ({err})") from err
    fmt = _format(layout.ngff)
    try:
        root = zarr.open_group(str(path), mode="r+", zarr_format=fmt.zarr_format)
    except (FileNotFoundError, zarr.errors.GroupNotFoundError) as err:
        raise ValueError(f"{path}: no NGFF {layout.ngff} pyramid here (create_pyramid first)") from err
    for level in range(layout.levels):
        shape = _image_level(path, level).shape[1:]
        if tuple(shape) != layout.level_shape(level):
            raise ValueError(f"{path}: level {level} is {shape}, the layout says {layout.level_shape(level)}")

    axes: list[dict[str, str]] = [
        {"name": "c", "type": "channel"},
        {"name": "y", "type": "space", "unit": "micrometer"},
        {"name": "x", "type": "space", "unit": "micrometer"},
    ]
    datasets = [
        {
            "path": str(level),
            "coordinateTransformations": [{"type": "scale", "scale": [1.0, height_um * 2**level, mpp * 2**level]}],
        }
        for level in range(layout.levels)
    ]
    omero: dict[str, Any] = {
        "name": name,
        "channels": [
            {
                "label": label,
                "color": color,
                "active": True,
                "coefficient": 1.0,
                "family": "linear",
                "inverted": False,
                "window": {"start": 0, "end": 255, "min": 0, "max": 255},
            }
            for label, color in _CHANNELS
        ],
        "rdefs": {"model": "color", "defaultT": 0, "defaultZ": 0},
    }
    # write_multiscales_metadata takes the rendering block as metadata={"omero": ...} and moves it to the
    # group attributes (write_image would silently drop that spelling; see the tests)
    write_multiscales_metadata(root, datasets, fmt=fmt, axes=axes, name=name, metadata={"omero": omero})
    root.attrs[PROVENANCE_KEY] = provenance_json

    labels_group = root["labels"] if "labels" in root else None
    if isinstance(labels_group, zarr.Group) and LABEL_NAME in labels_group:
        label_group = labels_group[LABEL_NAME]
        if not isinstance(label_group, zarr.Group):
            raise ValueError(f"{path}: labels/{LABEL_NAME} is not a group")
        write_multiscales_metadata(label_group, datasets, fmt=fmt, axes=axes, name=LABEL_NAME)
        # write_label_metadata appends to the "labels" list: reset it so that finalising twice lists it once
        if fmt.zarr_format == 2:
            labels_group.attrs["labels"] = []
        else:
            labels_group.attrs["ome"] = {"version": fmt.version, "labels": []}
        write_label_metadata(
            labels_group,
            LABEL_NAME,
            colors=[{"label-value": value, "rgba": list(rgba)} for value, rgba in _LABEL_COLORS.items()],
            properties=[{"label-value": value, "action": action} for value, action in enumerate(ACTIONS)],
            fmt=fmt,
            source={"image": "../../"},
        )
    LOGGER.debug("finalised %s (NGFF %s, %d levels, %.4g um/px)", path, layout.ngff, layout.levels, mpp)
