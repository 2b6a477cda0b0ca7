"""Finding the cells in an upload, and the one physical scale every cell is classified at.

An upload is either one cell (a crop, as an analyser such as CellaVision saves it) or a whole microscope
field with any number of leukocytes and platelets. Both go through the same steps:

1. Scale. Red cells are about 7.5 µm across in every laboratory, so their median diameter in pixels gives
   the image's µm per pixel when the laboratory record does not (a lab that knows its camera's scale is
   the better source: red cells are abnormal exactly in the patients that matter).
2. Stained objects. Leukocyte nuclei and platelets take up the basic dye (purple: red and blue well above
   green); red cells, background and most debris do not. Connected purple regions, sized against the red
   cells, are leukocytes (large) or platelets (small).
3. Boxes and windows. Each leukocyte's box grows from its nucleus to the cell's expected size; each cell is
   cut out in a square window of ``WINDOW_RBC_DIAMETERS`` red-cell diameters around it, the framing of the
   single-cell crops the model was trained on, then resized to the model's input.

Nothing here imports TensorFlow or Django: serving workers, training and the commands share it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from PIL import Image

RED_CELL_DIAMETER_UM = 7.5
# A CellaVision crop (the framing most training cells have) spans about five red-cell diameters.
WINDOW_RBC_DIAMETERS = 5.0
# Where nothing in the image gives a scale (a tight crop, no red cells), the image itself is the window.
ANALYSIS_LONG_SIDE = 320
# An image at most this many windows across (its long side) is one cell (a crop); a larger one is a field.
# The long side: a 640 x 480 field at high magnification (red cells ~75 px, window ~375 px) is 1.3 windows
# on its short side but 1.7 on its long one, and it holds several cells (olympus val: 109 such fields were
# taken for crops, their platelets and any second leukocyte dropped).
CROP_MAX_WINDOWS = 1.45
# Images no larger than this are crops whatever their content: cameras save whole fields larger.
CROP_MAX_SIDE = 450
# A crop is classified whole when its cell's centre is this close to the image centre (share of the side).
CROP_CENTRE_TOLERANCE = 0.15

# Purple stain: green minus blue optical density (see stain_map). A pixel is stained when it stands this far
# above the image's typical pixel, in absolute terms and in multiples of the image's own spread...
STAIN_MIN_CONTRAST = 0.2
STAIN_SPREADS = 3.0
# ...and a whole object (nucleus, platelet) when its mean does.
OBJECT_MIN_STAIN = 0.35
OBJECT_SPREADS = 3.5
# Stained objects absorb at least this much more green than red (optical density)...
OBJECT_MIN_GREEN_OVER_RED = 0.08
# ...and are round or lobed: a disc fills pi/4 of its box, rectangles and bands fill it all.
OBJECT_MAX_EXTENT = 0.9
# A rendered image (a screenshot, a drawing) has large areas where neighbouring pixels are exactly equal
# (0.98 for drawn mock-ups, 0.79 once saved as JPEG at quality 70); a camera's noise leaves no microscope
# image more than about half such pixels (PBC, olympus and LISC validation images: at most 0.50).
RENDERED_FLAT_FRACTION = 0.65
# Leukocyte nuclei (with their lobes merged) cover at least this share of a red cell's area; platelets less.
LEUKOCYTE_MIN_RBC_AREA = 0.30
PLATELET_MIN_RBC_AREA = 0.03
# Larger purple regions (relative to a red cell) are not one cell: stain deposit, a clump, a solid colour.
OBJECT_MAX_RBC_AREA = 8.0
# A leukocyte's whole cell is at least this many red-cell diameters across (a small lymphocyte)...
LEUKOCYTE_MIN_DIAMETER_RBC = 1.45
# ...and its nucleus box grows by this factor to cover the cytoplasm.
NUCLEUS_TO_CELL = 1.12


@dataclass(frozen=True)
class LocatedCell:
    box: tuple[int, int, int, int]  # x0, y0, x1, y1 in the upright image, end-exclusive
    kind: str  # "leukocyte" | "platelet"
    stain_area_px: int


@dataclass(frozen=True)
class Location:
    layout: str  # "crop" | "field"
    size: tuple[int, int]
    cells: list[LocatedCell]
    rbc_diameter_px: float | None  # measured on the red cells, None where they could not be measured
    um_per_pixel: float | None
    scale_source: str  # "laboratory" | "red_cells" | "default"
    window_px: int  # side of a cell's window in image pixels
    main_cell: int | None
    # Why nothing was found, for logs and the pages: "no_stained_object", "uniform_image", "too_small".
    note: str = ""
    # Share of pixels equal to their right and lower neighbours (flat_fraction).
    flat_fraction: float = 0.0

    @property
    def rendered(self) -> bool:
        """A screenshot or drawing rather than a photograph through a microscope."""
        return self.flat_fraction >= RENDERED_FLAT_FRACTION


def flat_fraction(image: Image.Image, *, max_side: int = 1024) -> float:
    """Share of pixels exactly equal (all channels) to their right and lower neighbours, on the full-
    resolution pixels (a reduced copy would smooth a camera's noise away), at most the central
    ``max_side`` square of a large image."""
    width, height = image.size
    if width > max_side or height > max_side:
        left, top = max(0, (width - max_side) // 2), max(0, (height - max_side) // 2)
        image = image.crop((left, top, min(width, left + max_side), min(height, top + max_side)))
    if image.mode == "RGB" and min(image.size) >= 2:
        # PIL pads RGB to 4 bytes a pixel (opaque alpha) in C: read as one integer per pixel, no packing loop.
        return _flat_share(np.asarray(image.convert("RGBA")).view(np.uint32)[..., 0])
    pixels = np.asarray(image)
    if pixels.ndim == 2:
        pixels = pixels[..., None]
    if pixels.shape[0] < 2 or pixels.shape[1] < 2:
        return 1.0
    if pixels.dtype == np.uint8 and pixels.shape[2] <= 4:
        # One integer per pixel: comparing packed channels at once costs a fraction of per-channel diffs.
        packed = np.zeros(pixels.shape[:2], dtype=np.uint32)
        for channel in range(pixels.shape[2]):
            packed |= pixels[..., channel].astype(np.uint32) << (8 * channel)
        return _flat_share(packed)
    pixels = pixels.astype(np.int16)
    across = (np.diff(pixels, axis=1) == 0).all(axis=2)[:-1, :]
    down = (np.diff(pixels, axis=0) == 0).all(axis=2)[:, :-1]
    return float((across & down).mean())


def _flat_share(packed: np.ndarray) -> float:
    here = packed[:-1, :-1]
    flat = (packed[:-1, 1:] == here) & (packed[1:, :-1] == here)
    return np.count_nonzero(flat) / flat.size


def _analysis_image(image: Image.Image) -> tuple[np.ndarray, float]:
    """RGB pixels (uint8) of a reduced copy (long side ANALYSIS_LONG_SIDE) and its factor to full size."""
    width, height = image.size
    factor = max(width, height) / ANALYSIS_LONG_SIDE
    if factor > 1.0:
        small = image.resize((max(1, round(width / factor)), max(1, round(height / factor))), Image.Resampling.BILINEAR)
    else:
        small, factor = image, 1.0
    # convert() copies even an RGB image, and the array is a copy of its own.
    return np.asarray(small if small.mode == "RGB" else small.convert("RGB"), dtype=np.uint8), factor


def _counts_quantile(counts: np.ndarray, q: float) -> float:
    """np.quantile (linear) of the integers whose histogram is ``counts``, read off the histogram: a
    bincount and a cumulative sum instead of a partition of every pixel."""
    position = (int(counts.sum()) - 1) * q
    below = int(np.floor(position))
    cumulative = np.cumsum(counts)
    lower = int(np.searchsorted(cumulative, below, side="right"))
    upper = int(np.searchsorted(cumulative, below + 1, side="right")) if position > below else lower
    return lower + (position - below) * (upper - lower)


def _counts_median(counts: np.ndarray) -> float:
    total = int(counts.sum())
    cumulative = np.cumsum(counts)
    middle = int(np.searchsorted(cumulative, (total - 1) // 2, side="right"))
    if total % 2:
        return float(middle)
    return (middle + int(np.searchsorted(cumulative, total // 2, side="right"))) / 2.0


def _integer_quantile(values: np.ndarray, q: float) -> float:
    if np.issubdtype(values.dtype, np.integer) and values.size and values.min() >= 0:
        return _counts_quantile(np.bincount(values.ravel()), q)
    return float(np.quantile(values, q))


def _background(pixels: np.ndarray) -> np.ndarray:
    """The smear's background colour: the brightest fifth of pixels, per channel median."""
    if pixels.dtype != np.uint8:
        brightness = pixels.sum(axis=2)
        cutoff = np.quantile(brightness, 0.8)
        return np.median(pixels[brightness >= cutoff], axis=0)
    # Same figures from histograms of the integer pixels (no sort of every pixel).
    brightness = _channel_sum(pixels)
    cutoff = _counts_quantile(np.bincount(brightness.ravel()), 0.8)
    bright = brightness >= cutoff
    # Each channel's plane picked by the mask: contiguous bytes for bincount, no (n, 3) copy read by column.
    return np.array(
        [_counts_median(np.bincount(pixels[..., c][bright], minlength=256)) for c in range(3)], dtype=np.float32
    )


def _channel_sum(pixels: np.ndarray) -> np.ndarray:
    """Red + green + blue of uint8 pixels as integers (a sum over the short last axis is slow in numpy)."""
    return pixels[..., 0].astype(np.int32) + pixels[..., 1] + pixels[..., 2]


def optical_density(pixels: np.ndarray) -> np.ndarray:
    """Per-channel optical density against the smear's own background (its white balance)."""
    if pixels.dtype == np.uint8:
        return np.stack(_channel_densities(pixels), axis=-1)
    background = np.maximum(_background(pixels), 1.0)
    return -np.log(np.clip((pixels + 1.0) / (background + 1.0), 1e-3, 1.0))


def _channel_densities(pixels: np.ndarray) -> list[np.ndarray]:
    """optical_density of uint8 pixels, one array per channel: with 256 levels per channel, a lookup
    table replaces the logarithm of every pixel."""
    background = np.maximum(_background(pixels), 1.0)
    levels = np.arange(256, dtype=np.float32)[:, None]
    table = -np.log(np.clip((levels + 1.0) / (background + 1.0), 1e-3, 1.0))
    return [table[:, channel][pixels[..., channel]] for channel in range(3)]


def stain_map(pixels: np.ndarray) -> np.ndarray:
    """Purple-stain strength per pixel: green optical density minus blue optical density, both against
    the smear's own background. Nuclei and platelets (azure/haematoxylin-like dyes) absorb green far more
    than blue; red cells, background and cytoplasm do not, whatever tint the lamp or camera gives a field."""
    density = optical_density(pixels)
    return density[..., 1] - density[..., 2]


# Binary morphology with the 3 x 3 cross (scipy.ndimage's default structure, outside the image counts as
# empty), written as shifted array operations: the same pixels as ndimage's, several times cheaper on the
# small images analysed here.
def _erode(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    for _ in range(iterations):
        out = mask.copy()
        out[1:, :] &= mask[:-1, :]
        out[:-1, :] &= mask[1:, :]
        out[:, 1:] &= mask[:, :-1]
        out[:, :-1] &= mask[:, 1:]
        out[0, :] = out[-1, :] = False
        out[:, 0] = out[:, -1] = False
        mask = out
    return mask


def _dilate(mask: np.ndarray, iterations: int = 1) -> np.ndarray:
    for _ in range(iterations):
        out = mask.copy()
        out[1:, :] |= mask[:-1, :]
        out[:-1, :] |= mask[1:, :]
        out[:, 1:] |= mask[:, :-1]
        out[:, :-1] |= mask[:, 1:]
        mask = out
    return mask


def _opening(mask: np.ndarray) -> np.ndarray:
    return _dilate(_erode(mask)) if min(mask.shape) > 2 else _ndimage().binary_opening(mask, iterations=1)


# Up to this many iterations a closing is cheaper as shifted arrays than as two distance transforms (a crop's
# closing is 4-6 iterations on a box of a few thousand pixels: scipy's per-call overhead dominates there).
SHIFTED_CLOSING_MAX_ITERATIONS = 8


def _closing(mask: np.ndarray, iterations: int) -> np.ndarray:
    """ndimage.binary_closing(mask, iterations=n): dilating n times by the cross is taking every pixel
    within city-block distance n of the mask, and eroding n times keeps the pixels farther than n from
    anything outside it (the image's surroundings included); two chamfer passes each."""
    ndimage = _ndimage()
    rows = np.flatnonzero(mask.any(axis=1))
    if not rows.size:
        return mask.copy()
    # Nothing farther than ``iterations`` from the mask is dilated, so the closing is worked out on the mask's
    # box grown by that much: the pixels just outside it are empty either way (or the image's edge).
    columns = np.flatnonzero(mask.any(axis=0))
    top, left = max(0, rows[0] - iterations), max(0, columns[0] - iterations)
    bottom, right = min(mask.shape[0], rows[-1] + iterations + 1), min(mask.shape[1], columns[-1] + iterations + 1)
    if bottom - top < mask.shape[0] or right - left < mask.shape[1]:
        out = np.zeros_like(mask)
        out[top:bottom, left:right] = _closing(mask[top:bottom, left:right], iterations)
        return out
    if iterations <= SHIFTED_CLOSING_MAX_ITERATIONS:
        return _erode(_dilate(mask, iterations), iterations)
    dilated = ndimage.distance_transform_cdt(~mask, metric="taxicab") <= iterations
    framed = np.pad(dilated, 1, constant_values=False)
    return ndimage.distance_transform_cdt(framed, metric="taxicab")[1:-1, 1:-1] > iterations


def _fill_holes(mask: np.ndarray) -> np.ndarray:
    """ndimage.binary_fill_holes: empty regions that do not reach the image's edge are holes."""
    ndimage = _ndimage()
    labels, _count = ndimage.label(~mask)
    reaches_edge = np.zeros(_count + 1, dtype=bool)
    for edge in (labels[0, :], labels[-1, :], labels[:, 0], labels[:, -1]):
        reaches_edge[edge] = True
    reaches_edge[0] = False
    return ~reaches_edge[labels]


def _ndimage():
    from scipy import ndimage

    return ndimage


def red_cell_diameter(pixels: np.ndarray, stain_mask: np.ndarray) -> float | None:
    """Median red-cell diameter in pixels of ``pixels``, from the distance transform of the cell mask
    (everything darker than the background, pallor filled, stained objects left out); None when the image
    does not show enough separate round cells to tell."""
    ndimage = _ndimage()

    # Brightness as the sum of the channels (three times their mean): integers, so its quantiles come
    # off a histogram.
    total = _channel_sum(pixels) if pixels.dtype == np.uint8 else pixels.mean(axis=2)
    scale = 3.0 if pixels.dtype == np.uint8 else 1.0
    background = _integer_quantile(total, 0.9)
    spread = background - _integer_quantile(total, 0.1)
    if spread < 12.0 * scale:
        return None  # uniform: no cells to measure
    cells = total < background - 0.35 * spread
    cells = _opening(cells)
    cells = _fill_holes(cells)
    cells &= ~_dilate(stain_mask, iterations=2)
    coverage = cells.mean()
    if coverage < 0.04 or coverage > 0.9:
        return None
    # Squared distances in integers from the nearest-background indices (scipy's own distances are these,
    # square-rooted in float64): the 5 x 5 maxima and the 3-pixel floor compare the same, at less cost.
    nearest = ndimage.distance_transform_edt(cells, return_distances=False, return_indices=True)
    rows, columns = np.indices(cells.shape, dtype=np.int32)
    squared = (nearest[0] - rows) ** 2 + (nearest[1] - columns) ** 2
    peaks = (squared == ndimage.maximum_filter(squared, size=5)) & (squared >= 9)
    radii = np.sqrt(squared[peaks].astype(np.float64))
    if len(radii) < 4:
        return None
    # Touching cells give peaks at their own centres; the upper half of the peaks are the cells' centres
    # rather than saddle points between them.
    radii = np.sort(radii)[len(radii) // 2 :]
    return float(2.0 * np.median(radii) + 1.0)


def locate_cells(image: Image.Image, *, um_per_pixel: float | None = None) -> Location:
    """Every leukocyte and platelet of an RGB image, the layout (crop or field) and the scale."""
    ndimage = _ndimage()

    width, height = image.size
    if min(width, height) < 16:
        return Location("crop", (width, height), [], None, um_per_pixel, _source(um_per_pixel), 0, None, "too_small")
    pixels, factor = _analysis_image(image)
    red_density, green_density, blue_density = _channel_densities(pixels)
    stain = green_density - blue_density
    # Purple absorbs green more than red too; blue and cyan things (buttons, ink, lamps) do not.
    green_over_red = green_density - red_density
    # Thresholds follow the image's own spread of stain on red cells and background: faded fields have
    # faint nuclei but fainter red cells, purplish-stained red cells raise the bar.
    # A crop's cell covers too much of it for a spread measured on the whole image: absolute bars there.
    small = max(width, height) <= CROP_MAX_SIDE
    typical = float(np.median(stain))
    spread = 0.0 if small else max(float(np.quantile(stain, 0.9)) - typical, 0.02)
    stain_mask = _opening(stain > typical + max(STAIN_MIN_CONTRAST, STAIN_SPREADS * spread))
    object_threshold = typical + max(OBJECT_MIN_STAIN, OBJECT_SPREADS * spread)
    # The red cells (a distance transform, half a crop's locating cost) are measured only where their scale
    # is used: a field's layout, objects and windows. A laboratory's scale replaces them, and a crop is
    # judged against its own side and classified whole: only an off-centre cell's window needs them (below).
    measured = None if um_per_pixel or small else red_cell_diameter(pixels, stain_mask)
    rbc_px, scale_px, window, source, resolved_um = _scale(measured, factor, um_per_pixel, width, height)
    layout = "crop" if small or max(width, height) <= CROP_MAX_WINDOWS * window else "field"

    if pixels.std(dtype=np.float32) < 3.0:
        return Location(layout, (width, height), [], rbc_px, resolved_um, source, window, None, "uniform_image")
    # The scale objects are judged against. A small crop shows too few red cells to measure them, and an
    # analyser frames a cell in about five red-cell diameters: a fifth of its side is the better guess.
    if small and not um_per_pixel:
        reference_px = min(width, height) / WINDOW_RBC_DIAMETERS / factor
    else:
        reference_px = (scale_px or min(width, height) / WINDOW_RBC_DIAMETERS) / factor
    rbc_area = np.pi * (reference_px / 2.0) ** 2
    # Close gaps between the lobes of one nucleus (a fraction of a red cell wide).
    closing = max(1, round(0.12 * reference_px))
    labels, count = ndimage.label(_closing(stain_mask, closing))
    cells: list[LocatedCell] = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        member = labels[region] == index
        area = int(member.sum())
        relative = area / rbc_area
        if float(stain[region][member].mean()) < object_threshold:
            continue  # faintly purple overall: a red cell's rim or a stained-through red cell
        if float(green_over_red[region][member].mean()) < OBJECT_MIN_GREEN_OVER_RED:
            continue  # blue, not purple
        if area / member.size > OBJECT_MAX_EXTENT and area > 64:
            continue  # fills its bounding box: a rectangle (a button, a colour band), not a cell
        if relative < PLATELET_MIN_RBC_AREA or (relative > OBJECT_MAX_RBC_AREA and not small):
            continue
        if area >= 0.5 * labels.size:
            continue  # most of the image is "stain": a solid colour or a filter, not a cell
        kind = "leukocyte" if relative >= LEUKOCYTE_MIN_RBC_AREA else "platelet"
        y0, y1 = region[0].start, region[0].stop
        x0, x1 = region[1].start, region[1].stop
        cells.append(LocatedCell(_cell_box(x0, y0, x1, y1, kind, reference_px, factor, width, height), kind, area))
    cells = _merge_overlapping(cells)
    if not small and sum(cell.kind == "leukocyte" for cell in cells) > 1:
        layout = "field"  # however close the view, two leukocytes are not one cell's crop
    main = _main_cell(cells, width, height)
    if layout == "crop" and main is not None:
        cells, main = [cells[main]], 0
        if small and not um_per_pixel and _off_centre(cells[0].box, (width, height)) > CROP_CENTRE_TOLERANCE:
            measured = red_cell_diameter(pixels, stain_mask)
            rbc_px, scale_px, window, source, resolved_um = _scale(measured, factor, um_per_pixel, width, height)
    note = "" if cells else "no_stained_object"
    flat = flat_fraction(image) if cells else 0.0
    return Location(layout, (width, height), cells, rbc_px, resolved_um, source, window, main, note, flat)


def _scale(measured, factor, um_per_pixel, width, height):
    """The red-cell diameter in image pixels, the scale used (pixels per red cell), the window's side, the
    scale's source and the image's µm per pixel, from the measured diameter in analysis pixels (or None)."""
    rbc_px = measured * factor if measured else None
    if um_per_pixel:
        scale_px = RED_CELL_DIAMETER_UM / um_per_pixel
    elif rbc_px:
        scale_px = rbc_px
    else:
        scale_px = None
    window = round(WINDOW_RBC_DIAMETERS * scale_px) if scale_px else min(width, height)
    source = "laboratory" if um_per_pixel else ("red_cells" if rbc_px else "default")
    resolved_um = um_per_pixel or (RED_CELL_DIAMETER_UM / rbc_px if rbc_px else None)
    return rbc_px, scale_px, window, source, resolved_um


def _off_centre(box: tuple[int, int, int, int], size: tuple[int, int]) -> float:
    """How far a box's centre is from the image centre, as a share of the side (the larger of the two)."""
    x0, y0, x1, y1 = box
    width, height = size
    return max(abs((x0 + x1) / 2 - width / 2) / width, abs((y0 + y1) / 2 - height / 2) / height)


def _source(um_per_pixel: float | None) -> str:
    return "laboratory" if um_per_pixel else "default"


def _cell_box(x0, y0, x1, y1, kind, reference_px, factor, width, height) -> tuple[int, int, int, int]:
    """The cell's box in full-size pixels: the stained region grown to the cell's expected extent."""
    cx, cy = (x0 + x1) / 2.0, (y0 + y1) / 2.0
    w, h = (x1 - x0), (y1 - y0)
    if kind == "leukocyte":
        minimum = LEUKOCYTE_MIN_DIAMETER_RBC * reference_px
        w = max(w * NUCLEUS_TO_CELL, minimum)
        h = max(h * NUCLEUS_TO_CELL, minimum)
    else:
        w, h = w + 2, h + 2
    box = (
        int(np.floor((cx - w / 2) * factor)),
        int(np.floor((cy - h / 2) * factor)),
        int(np.ceil((cx + w / 2) * factor)),
        int(np.ceil((cy + h / 2) * factor)),
    )
    return (max(0, box[0]), max(0, box[1]), min(width, box[2]), min(height, box[3]))


def _merge_overlapping(cells: list[LocatedCell]) -> list[LocatedCell]:
    """A lobed nucleus can fall apart into pieces whose grown boxes overlap: one leukocyte."""
    merged = True
    cells = list(cells)
    while merged:
        merged = False
        for i in range(len(cells)):
            for j in range(i + 1, len(cells)):
                a, b = cells[i], cells[j]
                if a.kind == b.kind == "leukocyte" and _iou(a.box, b.box) > 0.2:
                    box = (
                        min(a.box[0], b.box[0]),
                        min(a.box[1], b.box[1]),
                        max(a.box[2], b.box[2]),
                        max(a.box[3], b.box[3]),
                    )
                    cells[i] = LocatedCell(box, "leukocyte", a.stain_area_px + b.stain_area_px)
                    del cells[j]
                    merged = True
                    break
            if merged:
                break
    return cells


def _iou(a, b) -> float:
    ix = max(0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def _main_cell(cells: list[LocatedCell], width: int, height: int) -> int | None:
    """The leukocyte nearest the image centre (else the nearest platelet)."""
    if not cells:
        return None

    def rank(index: int):
        x0, y0, x1, y1 = cells[index].box
        distance = np.hypot((x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2)
        return (cells[index].kind != "leukocyte", distance)

    return min(range(len(cells)), key=rank)


def cell_window(image: Image.Image, box: tuple[int, int, int, int], window_px: int) -> Image.Image:
    """The square window of ``window_px`` around a cell's box centre (at least the box itself), padded with
    the image's background colour where it leaves the image."""
    x0, y0, x1, y1 = box
    side = max(int(window_px), x1 - x0, y1 - y0, 1)
    cx, cy = (x0 + x1) // 2, (y0 + y1) // 2
    left, top = cx - side // 2, cy - side // 2
    width, height = image.size
    if left >= 0 and top >= 0 and left + side <= width and top + side <= height:
        return image.crop((left, top, left + side, top + side))
    pixels = np.asarray(image, dtype=np.float32)
    fill = tuple(int(v) for v in _background(pixels[:: max(1, height // 64), :: max(1, width // 64)]))
    canvas = Image.new("RGB", (side, side), fill)
    canvas.paste(image.crop((max(0, left), max(0, top), min(width, left + side), min(height, top + side))),
                 (max(0, -left), max(0, -top)))  # fmt: skip
    return canvas


def classification_windows(image: Image.Image, location: Location) -> list[Image.Image]:
    """What the classifier sees for each located cell: its window at the canonical scale. A crop whose cell
    sits near the centre is classified whole, as the single-cell training crops were."""
    windows = []
    for cell in location.cells:
        if location.layout == "crop" and _off_centre(cell.box, location.size) <= CROP_CENTRE_TOLERANCE:
            windows.append(image)
        else:
            windows.append(cell_window(image, cell.box, location.window_px))
    return windows
