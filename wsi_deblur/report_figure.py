"""The blur map figure of the QC report (``blurmap.png``): the thumbnail with each tissue tile tinted by its blur
class, restored tiles hatched, a legend with the tissue area per class and a title line."""

from __future__ import annotations

import functools
import logging
import math
from collections.abc import Mapping
from typing import NamedTuple, cast

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from ._types import LABELS
from .blurmap import BlurMap
from .summary import cell_edges, checked_mpp, summarize

logger = logging.getLogger(__name__)

#: Overlay colour per class. They are four colours of the Okabe-Ito palette (Okabe & Ito, "Color Universal
#: Design", 2008), chosen to stay distinct under the common colour-vision deficiencies: in_focus bluish green,
#: defocus blue, motion yellow, mixed vermillion. Blue, yellow and vermillion also stand apart from the pink
#: and purple of H&E and IHC stains. "background" (tiles without tissue) is listed for completeness and is
#: never drawn: those tiles are left as the thumbnail shows them.
CLASS_COLOURS: dict[str, tuple[int, int, int]] = {
    "in_focus": (0, 158, 115),
    "defocus": (0, 114, 178),
    "motion": (240, 228, 66),
    "mixed": (213, 94, 0),
    "background": (255, 255, 255),
}

#: Thumbnails narrower than this are scaled up, so that the legend below the map fits at a readable size.
MIN_MAP_WIDTH = 600
#: Opacity of the class colour over a tissue tile: under one half, so the tissue stays readable beneath it.
OVERLAY_OPACITY = 0.45
#: Opacity of the hatching that marks restored tiles, drawn in HATCH_COLOUR, one diagonal line every
#: 0.75 text size (about 10 px on a 600 px map: dense enough to read on small tiles, open enough to see
#: the tissue through).
HATCH_OPACITY = 0.55
HATCH_SPACING_PER_FONT_PX = 0.75
HATCH_COLOUR = (25, 25, 25)
#: Opacity of the white tile grid over tissue tiles.
GRID_OPACITY = 0.35
#: The grid is drawn only when a tile is at least this many map pixels wide; narrower tiles would be all grid.
GRID_MIN_CELL_PX = 8
#: Text size is the map width divided by this (45 characters of body text across the map), within the
#: bounds below: 13 px at the minimum map width, never over 28 px on very wide maps.
MAP_WIDTH_PER_FONT_PX = 45
FONT_PX_RANGE = (13, 28)

_DISPLAY_NAMES = {"in_focus": "In focus", "defocus": "Defocus", "motion": "Motion", "mixed": "Mixed"}
_TEXT = (33, 33, 33)
_TEXT_MUTED = (100, 100, 100)
_BORDER = (170, 170, 170)
# Stand-ins for the characters the fallback font (Pillow's bundled one) has no glyph for.
_ASCII = str.maketrans({"µ": "u", "×": "x", "²": "2", "·": "|", "…": "...", "–": "-"})

_Font = ImageFont.FreeTypeFont | ImageFont.ImageFont


class RenderedMap(NamedTuple):
    """The blur map image and where the map (the scaled thumbnail) lies in it: (left, top, width, height)."""

    image: Image.Image
    map_box: tuple[int, int, int, int]


def render_blurmap(
    blurmap: BlurMap, thumbnail: np.ndarray, *, slide_name: str, mpp: float | None = None,
    mpp_y: float | None = None,
) -> RenderedMap:
    """Draw the blur map over a thumbnail of the slide: title line, tinted map, legend.

    ``thumbnail`` is RGB (or grey, or RGBA composited over white) uint8 of any size whose aspect matches the
    slide's; one narrower than :data:`MIN_MAP_WIDTH` is scaled up to it. Pixels of tiles without tissue are
    the thumbnail's own; the frame around the map lies outside ``map_box``.
    """
    mpp = checked_mpp(mpp)
    rgb = _as_rgb(thumbnail)
    _check_aspect(blurmap, rgb.shape[1], rgb.shape[0])
    summary = summarize(blurmap, mpp, mpp_y)
    if rgb.shape[1] < MIN_MAP_WIDTH:
        map_w = MIN_MAP_WIDTH
        map_h = max(1, round(rgb.shape[0] * MIN_MAP_WIDTH / rgb.shape[1]))
        rgb = np.asarray(Image.fromarray(rgb).resize((map_w, map_h), Image.Resampling.LANCZOS))
    map_h, map_w = rgb.shape[:2]
    size = int(np.clip(round(map_w / MAP_WIDTH_PER_FONT_PX), *FONT_PX_RANGE))
    hatch_spacing = max(6, round(size * HATCH_SPACING_PER_FONT_PX))
    tinted = Image.fromarray(_tint(blurmap, rgb, hatch_spacing=hatch_spacing))

    # layout in units of the text size: padding one text size, small gaps between lines
    pad = size
    line_gap = round(size * 0.3)
    title_font, title_unicode = _font(round(size * 1.3), bold=True)
    body_font, body_unicode = _font(size)
    title = _fit(slide_name, title_font, title_unicode, map_w)
    details = _wrap(_details(summary, mpp, mpp_y), body_font, body_unicode, map_w, separator="  ·  ")
    title_h = _line_height(title_font)
    body_h = _line_height(body_font)
    swatch = round(size * 1.15)
    label_gap = round(size * 0.45)
    legend_rows = _flow(
        _legend_items(summary), body_font, body_unicode, swatch + label_gap, map_w, gap=round(size * 1.6)
    )

    top = pad + title_h + len(details) * (line_gap + body_h) + round(size * 0.8)
    legend_top = top + map_h + round(size * 0.9)
    row_h = max(body_h, swatch) + line_gap
    height = legend_top + len(legend_rows) * row_h - line_gap + pad
    image = Image.new("RGB", (map_w + 2 * pad, height), (255, 255, 255))
    draw = ImageDraw.Draw(image)
    draw.text((pad, pad), _glyphs(title, title_unicode), font=title_font, fill=_TEXT)
    for i, line in enumerate(details):
        y = pad + title_h + line_gap + i * (line_gap + body_h)
        draw.text((pad, y), _glyphs(line, body_unicode), font=body_font, fill=_TEXT_MUTED)
    image.paste(tinted, (pad, top))
    draw.rectangle((pad - 1, top - 1, pad + map_w, top + map_h), outline=_BORDER, width=1)

    for i, row in enumerate(legend_rows):
        y = legend_top + i * row_h
        for x_offset, (kind, colour, text) in row:
            x = pad + x_offset
            box = (x, y, x + swatch - 1, y + swatch - 1)
            if kind == "hatch":
                draw.rectangle(box, fill=(255, 255, 255))
                # at least four lines across the swatch, however wide the map's hatching is
                _hatch_box(draw, box, spacing=min(hatch_spacing, max(4, swatch // 4)))
            else:
                draw.rectangle(box, fill=colour)
            draw.rectangle(box, outline=_BORDER, width=1)
            text_y = y + (swatch - body_h) // 2
            draw.text((x + swatch + label_gap, text_y), _glyphs(text, body_unicode), font=body_font,
                      fill=_TEXT)
    return RenderedMap(image, (pad, top, map_w, map_h))


# ----------------------------------------------------------------------------------------------------------
# drawing


def _as_rgb(thumbnail: np.ndarray) -> np.ndarray:
    image = np.asarray(thumbnail)
    if image.dtype != np.uint8:
        raise ValueError(f"thumbnail must be uint8, got {image.dtype}")
    if image.ndim == 2:
        image = np.repeat(image[:, :, None], 3, axis=2)
    if image.ndim != 3 or image.shape[2] not in (3, 4) or image.shape[0] == 0 or image.shape[1] == 0:
        raise ValueError(f"thumbnail must be an (height, width, 3) RGB image, got shape {image.shape}")
    if image.shape[2] == 4:  # composite over white, like a slide's background
        alpha = image[:, :, 3:].astype(np.float32) / 255
        image = np.rint(image[:, :, :3] * alpha + 255 * (1 - alpha)).astype(np.uint8)
    return np.ascontiguousarray(image)


def _check_aspect(blurmap: BlurMap, width: int, height: int) -> None:
    """Refuse a thumbnail whose shape is not the slide's, scaled.

    A reader rounds (or floors) each side of a thumbnail or pyramid level to whole pixels, so one side may
    be off by up to one pixel from the other side scaled by the slide's aspect ratio.
    """
    slide_w, slide_h = blurmap.width, blurmap.height
    tolerance = 1.0 + 1e-9
    if (
        abs(height - width * slide_h / slide_w) <= tolerance
        or abs(width - height * slide_w / slide_h) <= tolerance
    ):
        return
    raise ValueError(
        f"thumbnail of {width}x{height} px does not have the aspect of the {slide_w}x{slide_h} slide"
    )


def _pixel_cells(edges: np.ndarray, extent: int, scale_extent: int) -> tuple[np.ndarray, np.ndarray]:
    """Cell index of each map pixel along one axis (-1 past the grid), and the cell edges in map pixels."""
    map_edges = np.rint(edges * (scale_extent / extent)).astype(np.int64)
    index = np.searchsorted(map_edges, np.arange(scale_extent), side="right") - 1
    index[index >= len(edges) - 1] = -1
    return index, map_edges


def _tint(blurmap: BlurMap, rgb: np.ndarray, *, hatch_spacing: int) -> np.ndarray:
    """The map: class colours over classified tissue tiles, a faint tile grid, restored tiles hatched."""
    map_h, map_w = rgb.shape[:2]
    rows, cols = blurmap.shape
    row_of, y_edges = _pixel_cells(cell_edges(rows, blurmap.tile_size, blurmap.height), blurmap.height, map_h)
    col_of, x_edges = _pixel_cells(cell_edges(cols, blurmap.tile_size, blurmap.width), blurmap.width, map_w)
    classified = np.asarray(blurmap.tissue, dtype=bool) & (blurmap.labels >= 0)
    label_grid = np.where(classified, blurmap.labels, -1)
    restored_grid = classified & (blurmap.actions > 0)
    inside = (row_of[:, None] >= 0) & (col_of[None, :] >= 0)
    label = np.where(inside, label_grid[row_of[:, None], col_of[None, :]], -1)
    restored = inside & restored_grid[row_of[:, None], col_of[None, :]]
    tinted = label >= 0

    out = rgb.astype(np.float32)
    palette = np.array([CLASS_COLOURS[name] for name in LABELS], dtype=np.float32)
    out[tinted] += OVERLAY_OPACITY * (palette[label[tinted]] - out[tinted])

    cell_w = np.diff(x_edges).min(initial=map_w)
    cell_h = np.diff(y_edges).min(initial=map_h)
    if min(cell_w, cell_h) >= GRID_MIN_CELL_PX:
        grid = tinted & (
            _cell_border(x_edges, map_w, tinted, axis=1) | _cell_border(y_edges, map_h, tinted, axis=0)
        )
        out[grid] += GRID_OPACITY * (255 - out[grid])

    diagonals = (np.arange(map_h)[:, None] + np.arange(map_w)[None, :]) % hatch_spacing == 0
    hatch = restored & diagonals
    hatch |= restored & _region_border(restored)
    out[hatch] += HATCH_OPACITY * (np.array(HATCH_COLOUR, dtype=np.float32) - out[hatch])
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


def _cell_border(edges: np.ndarray, extent: int, mask: np.ndarray, axis: int) -> np.ndarray:
    """Grid pixels along one axis, all inside ``mask``: each cell's first line, and its last line where the
    next cell is not in ``mask`` (so a line between two tinted tiles is one pixel, never two)."""
    first = np.zeros(extent, dtype=bool)
    last = np.zeros(extent, dtype=bool)
    first[edges[:-1][edges[:-1] < extent]] = True
    ends = edges[1:] - 1
    last[ends[(ends >= 0) & (ends < extent)]] = True
    shape = (1, extent) if axis == 1 else (extent, 1)
    next_in_mask = np.zeros_like(mask)
    if axis == 1:
        next_in_mask[:, :-1] = mask[:, 1:]
    else:
        next_in_mask[:-1, :] = mask[1:, :]
    return first.reshape(shape) | (last.reshape(shape) & ~next_in_mask)


def _region_border(mask: np.ndarray) -> np.ndarray:
    """Pixels of ``mask`` with a 4-neighbour outside it (or on the image edge)."""
    padded = np.pad(mask, 1, constant_values=False)
    interior = padded[:-2, 1:-1] & padded[2:, 1:-1] & padded[1:-1, :-2] & padded[1:-1, 2:]
    return mask & ~interior


def _hatch_box(draw: ImageDraw.ImageDraw, box: tuple[int, int, int, int], spacing: int) -> None:
    """The restored-tile hatching inside a legend swatch."""
    x0, y0, x1, y1 = box
    for x in range(x0, x1 + 1):
        for y in range(y0, y1 + 1):
            if (x - x0 + y - y0) % spacing == 0:
                draw.point((x, y), fill=HATCH_COLOUR)


@functools.lru_cache(maxsize=8)
def _font(size: int, bold: bool = False) -> tuple[_Font, bool]:
    """DejaVu Sans when the system has it (full Unicode), else Pillow's bundled font (ASCII only).

    Returns the font and whether it can draw non-ASCII text such as µ and ².
    """
    name = "DejaVuSans-Bold.ttf" if bold else "DejaVuSans.ttf"
    try:
        return ImageFont.truetype(name, size), True
    except OSError:
        logger.debug("%s not found; the report uses Pillow's bundled font", name)
        return ImageFont.load_default(size=size), False


def _glyphs(text: str, unicode: bool) -> str:
    return text if unicode else text.translate(_ASCII)


def _line_height(font: _Font) -> int:
    left, top, right, bottom = font.getbbox("Hgµ(")
    return int(math.ceil(bottom))


def _text_width(text: str, font: _Font, unicode: bool) -> int:
    return int(math.ceil(font.getlength(_glyphs(text, unicode))))


def _fit(text: str, font: _Font, unicode: bool, width: int) -> str:
    """``text``, shortened with an ellipsis in the middle when wider than ``width`` pixels."""
    if _text_width(text, font, unicode) <= width:
        return text
    keep = len(text)
    while keep > 2:
        keep -= 1
        head = text[: (keep + 1) // 2]
        tail = text[len(text) - keep // 2:]
        shortened = f"{head}…{tail}"
        if _text_width(shortened, font, unicode) <= width:
            return shortened
    return "…"


def _percent(fraction: object) -> str:
    if not isinstance(fraction, float) or math.isnan(fraction):
        return "n/a"
    return f"{100 * fraction:.1f} %"


def _area(mm2: float) -> str:
    """An area in mm² with about three significant digits."""
    if mm2 >= 10:
        return f"{mm2:.1f} mm²"
    if mm2 >= 0.1:
        return f"{mm2:.2f} mm²"
    return f"{mm2:.3f} mm²"


def _details(summary: Mapping[str, object], mpp: float | None, mpp_y: float | None = None) -> list[str]:
    """The parts of the line under the title: tiles, restored tiles, slide size."""
    pixel = "" if not mpp else f" at {mpp:.3g} µm/px" if mpp_y is None else f" at {mpp:.3g} × {mpp_y:.3g} µm/px"
    return [
        f"{summary['tiles']} tissue tiles of {summary['tile_size']} px",
        f"{summary['restored_tiles']} restored ({_percent(summary['restored_fraction'])} of tissue area)",
        f"{summary['width']} × {summary['height']} px{pixel}",
    ]


def _wrap(parts: list[str], font: _Font, unicode: bool, width: int, separator: str) -> list[str]:
    """``parts`` joined by ``separator`` into as few lines as fit ``width`` pixels (a part is never split)."""
    lines: list[str] = []
    for part in parts:
        part = _fit(part, font, unicode, width)
        if lines and _text_width(lines[-1] + separator + part, font, unicode) <= width:
            lines[-1] += separator + part
        else:
            lines.append(part)
    return lines


def _legend_items(summary: Mapping[str, object]) -> list[tuple[str, tuple[int, int, int], str]]:
    fractions = cast("dict[str, float]", summary["class_fraction"])
    areas = cast("dict[str, float] | None", summary["class_area_mm2"])
    items = []
    for name in LABELS:
        text = f"{_DISPLAY_NAMES[name]}  {_percent(fractions[name])}"
        if areas is not None:
            text += f" ({_area(areas[name])})"
        items.append(("fill", CLASS_COLOURS[name], text))
    restored = summary["restored_tiles"]
    items.append(("hatch", HATCH_COLOUR, f"Restored  {restored} tile{'' if restored == 1 else 's'}"))
    return items


def _flow(
    items: list[tuple[str, tuple[int, int, int], str]], font: _Font, unicode: bool, text_offset: int,
    width: int, gap: int,
) -> list[list[tuple[int, tuple[str, tuple[int, int, int], str]]]]:
    """Legend items laid out left to right, wrapping to a new row when the next would pass ``width``."""
    rows: list[list[tuple[int, tuple[str, tuple[int, int, int], str]]]] = [[]]
    x = 0
    for item in items:
        item_w = text_offset + _text_width(item[2], font, unicode)
        if rows[-1] and x + item_w > width:
            rows.append([])
            x = 0
        rows[-1].append((x, item))
        x += item_w + gap
    return rows
