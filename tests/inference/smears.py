"""Synthetic smears for the cell locator's tests: pale background, pink red cells, purple-nucleated
leukocytes with lilac cytoplasm, at a known scale and with known boxes."""

from __future__ import annotations

import numpy as np
from PIL import Image, ImageDraw

BACKGROUND = (232, 226, 200)
RED_CELL = (200, 150, 150)
CYTOPLASM = (214, 180, 214)
NUCLEUS = (105, 40, 145)


def smear(
    *,
    size: tuple[int, int] = (640, 480),
    rbc_diameter: int = 40,
    leukocytes: list[tuple[int, int]] = (),
    red_cells: int = 90,
    seed: int = 0,
) -> tuple[Image.Image, list[tuple[int, int, int, int]]]:
    """A field and the boxes of its leukocytes (centres given, each 2 red-cell diameters across)."""
    rng = np.random.default_rng(seed)
    image = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(image)
    radius = rbc_diameter / 2
    wbc_radius = rbc_diameter
    placed = 0
    for _ in range(red_cells * 20):
        if placed >= red_cells:
            break
        x, y = rng.uniform(0, size[0]), rng.uniform(0, size[1])
        if any(np.hypot(x - cx, y - cy) < wbc_radius + radius for cx, cy in leukocytes):
            continue
        draw.ellipse((x - radius, y - radius, x + radius, y + radius), fill=RED_CELL, outline=(180, 125, 125))
        pallor = radius * 0.35
        draw.ellipse((x - pallor, y - pallor, x + pallor, y + pallor), fill=(215, 175, 170))
        placed += 1
    boxes = []
    for cx, cy in leukocytes:
        draw.ellipse((cx - wbc_radius, cy - wbc_radius, cx + wbc_radius, cy + wbc_radius), fill=CYTOPLASM)
        for dx, dy in ((-0.3, -0.2), (0.25, -0.1), (0.0, 0.3)):  # a lobed nucleus
            lobe = wbc_radius * 0.38
            x, y = cx + dx * wbc_radius, cy + dy * wbc_radius
            draw.ellipse((x - lobe, y - lobe, x + lobe, y + lobe), fill=NUCLEUS)
        boxes.append((int(cx - wbc_radius), int(cy - wbc_radius), int(cx + wbc_radius), int(cy + wbc_radius)))
    pixels = np.asarray(image, dtype=np.float64) + rng.normal(0, 3, (size[1], size[0], 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)), boxes
