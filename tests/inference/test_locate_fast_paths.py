"""The locator's cheap paths (shifted-array morphology, histogram quantiles, density lookup tables, packed
flat-pixel count) give the same pixels and figures as the straightforward numpy/scipy computations."""

import numpy as np
import pytest
from PIL import Image
from scipy import ndimage

from inference import locate


def random_mask(seed: int, shape=(61, 47), density=0.55) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return ndimage.binary_opening(rng.random(shape) < density) | (rng.random(shape) < 0.05)


@pytest.mark.parametrize("seed", range(5))
def test_opening_matches_scipy(seed):
    mask = random_mask(seed)
    assert np.array_equal(locate._opening(mask), ndimage.binary_opening(mask, iterations=1))


@pytest.mark.parametrize("iterations", [1, 2, 3])
def test_dilation_matches_scipy(iterations):
    mask = random_mask(iterations, density=0.2)
    assert np.array_equal(locate._dilate(mask, iterations), ndimage.binary_dilation(mask, iterations=iterations))


@pytest.mark.parametrize(("seed", "iterations"), [(0, 1), (1, 3), (2, 8), (3, 12)])
def test_closing_matches_scipy_including_at_the_image_edge(seed, iterations):
    mask = random_mask(seed, density=0.3)
    mask[:, :3] = True  # objects touching the edge: the erosion treats the outside as empty
    expected = ndimage.binary_closing(mask, iterations=iterations)
    assert np.array_equal(locate._closing(mask, iterations), expected)


def test_closing_of_an_empty_mask_is_empty():
    assert not locate._closing(np.zeros((20, 30), dtype=bool), 4).any()


@pytest.mark.parametrize("seed", range(5))
def test_fill_holes_matches_scipy(seed):
    mask = random_mask(seed, density=0.6)
    assert np.array_equal(locate._fill_holes(mask), ndimage.binary_fill_holes(mask))


@pytest.mark.parametrize("q", [0.1, 0.5, 0.8, 0.9])
@pytest.mark.parametrize("size", [1, 2, 7, 1000])
def test_histogram_quantile_matches_numpy(q, size):
    values = np.random.default_rng(size).integers(0, 766, size)
    assert locate._integer_quantile(values, q) == pytest.approx(float(np.quantile(values, q)), abs=1e-9)


@pytest.mark.parametrize("size", [1, 2, 9, 1000])
def test_histogram_median_matches_numpy(size):
    values = np.random.default_rng(size).integers(0, 256, size)
    assert locate._counts_median(np.bincount(values)) == float(np.median(values))


def test_background_and_densities_from_integers_match_the_float_computation():
    pixels = np.random.default_rng(3).integers(0, 256, (40, 50, 3), dtype=np.uint8)
    as_float = pixels.astype(np.float32)
    assert np.array_equal(locate._background(pixels), locate._background(as_float))
    assert np.allclose(locate.optical_density(pixels), locate.optical_density(as_float), atol=1e-6)


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "L"])
def test_flat_fraction_counts_pixels_equal_to_both_neighbours(mode):
    pixels = np.random.default_rng(0).integers(0, 256, (30, 40, 3), dtype=np.uint8)
    pixels[5:15, 5:25] = (200, 100, 50)  # a flat patch: 9 x 19 pixels equal to both neighbours
    pixels[20, :] = pixels[21, :]  # a repeated row alone is not flat (the right neighbour differs)
    image = Image.fromarray(pixels).convert(mode)
    generic = np.asarray(image, dtype=np.int16).reshape(30, 40, -1)
    across = (np.diff(generic, axis=1) == 0).all(axis=2)[:-1, :]
    down = (np.diff(generic, axis=0) == 0).all(axis=2)[:, :-1]
    assert locate.flat_fraction(image) == float((across & down).mean())
    if mode != "L":
        assert locate.flat_fraction(image) == pytest.approx(9 * 19 / (29 * 39))


def reference_red_cell_diameter(pixels: np.ndarray, stain_mask: np.ndarray) -> float | None:
    """The locator's red-cell diameter written plainly with numpy and scipy (float pixels, sorting quantiles,
    scipy morphology and distances)."""
    grey = pixels.astype(np.float32).mean(axis=2)
    background = np.quantile(grey, 0.9)
    spread = background - np.quantile(grey, 0.1)
    if spread < 12.0:
        return None
    cells = grey < background - 0.35 * spread
    cells = ndimage.binary_fill_holes(ndimage.binary_opening(cells, iterations=1))
    cells &= ~ndimage.binary_dilation(stain_mask, iterations=2)
    if not 0.04 <= cells.mean() <= 0.9:
        return None
    distance = ndimage.distance_transform_edt(cells)
    radii = distance[(distance == ndimage.maximum_filter(distance, size=5)) & (distance >= 3.0)]
    if len(radii) < 4:
        return None
    return float(2.0 * np.median(np.sort(radii)[len(radii) // 2 :]) + 1.0)


@pytest.mark.parametrize(("rbc", "seed"), [(24, 0), (40, 1), (56, 2)])
def test_red_cell_diameter_matches_the_plain_computation(rbc, seed):
    from tests.inference.smears import smear

    image, _ = smear(size=(320, 240), rbc_diameter=rbc, leukocytes=[(160, 120)], red_cells=40, seed=seed)
    pixels = np.asarray(image)
    stain_mask = locate._opening(locate.stain_map(pixels) > 0.3)
    expected = reference_red_cell_diameter(pixels, stain_mask)
    assert expected is not None
    assert locate.red_cell_diameter(pixels, stain_mask) == pytest.approx(expected, abs=1e-9)


@pytest.mark.parametrize(("seed", "iterations"), [(0, 1), (1, 4), (2, 9)])
def test_closing_of_a_small_object_matches_scipy(seed, iterations):
    # The mask's box grown by the iterations is worked out alone: objects near an edge and in the middle.
    rng = np.random.default_rng(seed)
    mask = np.zeros((80, 90), dtype=bool)
    for top, left in ((2, 3), (40, 45), (70, 80)):
        mask[top : top + 8, left : left + 7] = rng.random((8, 7)) < 0.5
    expected = ndimage.binary_closing(mask, iterations=iterations)
    assert np.array_equal(locate._closing(mask, iterations), expected)
    single = mask & (np.arange(90) >= 40)[None, :] & (np.arange(80) < 60)[:, None]
    assert np.array_equal(locate._closing(single, iterations), ndimage.binary_closing(single, iterations=iterations))


def test_a_centred_crop_or_a_laboratory_scale_does_not_measure_the_red_cells(monkeypatch):
    from tests.inference.smears import smear

    measured = []
    original = locate.red_cell_diameter
    monkeypatch.setattr(locate, "red_cell_diameter", lambda *a: measured.append(1) or original(*a))
    crop, _ = smear(size=(224, 224), rbc_diameter=40, leukocytes=[(112, 112)], red_cells=12, seed=3)
    location = locate.locate_cells(crop)
    assert len(location.cells) == 1 and measured == []
    assert (location.scale_source, location.um_per_pixel) == ("default", None)
    field, _ = smear(rbc_diameter=40, leukocytes=[(320, 240)])
    assert locate.locate_cells(field, um_per_pixel=0.1).scale_source == "laboratory" and measured == []
    assert locate.locate_cells(field).scale_source == "red_cells" and measured == [1]


def test_an_off_centre_crop_is_cut_at_the_red_cell_scale():
    from tests.inference.smears import smear

    crop, _ = smear(size=(300, 300), rbc_diameter=30, leukocytes=[(75, 80)], red_cells=30, seed=4)
    location = locate.locate_cells(crop)
    (cell,) = location.cells
    assert locate._off_centre(cell.box, crop.size) > locate.CROP_CENTRE_TOLERANCE
    assert location.scale_source == "red_cells" and location.rbc_diameter_px == pytest.approx(30, rel=0.25)
    assert location.window_px == round(locate.WINDOW_RBC_DIAMETERS * location.rbc_diameter_px)
    (window,) = locate.classification_windows(crop, location)
    assert window.size == (location.window_px, location.window_px)


@pytest.mark.parametrize("shifted_up_to", [0, 99])
@pytest.mark.parametrize("iterations", [1, 2, 5, 6, 9])
def test_closing_by_shifted_arrays_and_by_distance_transforms_match_scipy(monkeypatch, shifted_up_to, iterations):
    # Both ways of closing (shifted arrays for a few iterations, chamfer distances beyond) on the same masks.
    monkeypatch.setattr(locate, "SHIFTED_CLOSING_MAX_ITERATIONS", shifted_up_to)
    for seed in range(3):
        mask = random_mask(seed, shape=(23 + seed, 40), density=0.25)
        mask[-2:, 5:9] = True
        assert np.array_equal(locate._closing(mask, iterations), ndimage.binary_closing(mask, iterations=iterations))
