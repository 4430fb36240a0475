"""Writers: the working OME-Zarr pyramid (written block by block by many tasks) and the TIFF exports from it.

Writers see arrays and paths only, never models.
"""

from .ngff_metadata import finalize
from .omezarr import (
    LABEL_NAME,
    NGFF_VERSIONS,
    PyramidLayout,
    create_pyramid,
    downsample_block,
    pyramid_levels,
    read_region,
    write_block,
)
from .tiff import TIFF_COMPRESSIONS, write_pyramidal_tiff

__all__ = [
    "LABEL_NAME",
    "NGFF_VERSIONS",
    "TIFF_COMPRESSIONS",
    "PyramidLayout",
    "create_pyramid",
    "downsample_block",
    "finalize",
    "pyramid_levels",
    "read_region",
    "write_block",
    "write_pyramidal_tiff",
]
