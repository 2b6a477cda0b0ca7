"""Image datasets in the ImageFolder layout (one sub-folder per class), their splits and augmentation.

Augmentation works on PIL images before `preprocessing.fit_to_input`, so every augmented view reaches the
model through the same preprocessing as a served image. It is chosen for microscopy and for the gap
between the shared training files (224 px, Lanczos, JPEG quality 90 with 4:2:0 chroma) and real uploads
(about 360 px, JPEG quality 75 without chroma subsampling): dihedral flips and rotations, small zoom and
shift, stain (optical-density) and colour jitter, random rescaling with random filters, and JPEG
re-encoding at random qualities and subsamplings.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import logging
import warnings
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from PIL import Image, ImageEnhance, ImageFilter, UnidentifiedImageError

from .preprocessing import RESAMPLING_FILTERS, fit_to_input, to_rgb

logger = logging.getLogger(__name__)

IMAGE_SUFFIXES = {".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".gif", ".webp"}


class DatasetError(ValueError):
    """The data cannot be used for training or evaluation; the message says why."""


@dataclass
class ImageDataset:
    classes: list[str]
    paths: list[Path]
    labels: np.ndarray
    skipped: list[tuple[Path, str]] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.paths)

    def counts(self) -> dict[str, int]:
        return {name: int((self.labels == index).sum()) for index, name in enumerate(self.classes)}

    def subset(self, indices: Sequence[int]) -> ImageDataset:
        indices = np.asarray(indices, dtype=np.int64)
        return ImageDataset(
            classes=self.classes, paths=[self.paths[i] for i in indices], labels=self.labels[indices], skipped=[]
        )

    def fingerprint(self) -> str:
        """sha256 over (class, relative path, size, mtime): identifies the data a model was trained on
        without reading every byte again."""
        digest = hashlib.sha256()
        for path, label in zip(self.paths, self.labels, strict=True):
            stat = path.stat()
            digest.update(f"{self.classes[label]}\0{path.parent.name}/{path.name}\0{stat.st_size}\n".encode())
        return digest.hexdigest()


def class_folders(root: Path) -> list[str]:
    root = Path(root)
    if not root.exists():
        raise DatasetError(f"data folder not found: {root}")
    if not root.is_dir():
        raise DatasetError(f"not a folder: {root}")
    return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))


def load_image_folder(
    roots: Path | Iterable[Path], *, classes: Sequence[str] | None = None, verify: bool = True
) -> ImageDataset:
    """Every image under root/<class>/ for one or more roots (their classes are merged by name).

    Files that cannot be decoded are skipped and listed in a warning. With `classes`, folders must be a
    subset of them (evaluation against a model's classes); otherwise the classes are the folder names.
    """
    roots = [Path(roots)] if isinstance(roots, str | Path) else [Path(r) for r in roots]
    if not roots:
        raise DatasetError("no data folder given")
    found: dict[str, list[Path]] = {}
    for root in roots:
        names = class_folders(root)
        if not names:
            raise DatasetError(f"{root} has no class folders (expected {root}/<class name>/<images>)")
        for name in names:
            files = sorted(p for p in (root / name).rglob("*") if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file())
            found.setdefault(name, []).extend(files)
    if classes is None:
        classes = sorted(name for name, files in found.items() if files)
        if len(classes) < 2:
            raise DatasetError(
                f"need images of at least two classes to train a classifier, found {len(classes)} "
                f"({', '.join(classes) or 'none'}) in {', '.join(map(str, roots))}"
            )
    else:
        unknown = sorted(set(name for name, files in found.items() if files) - set(classes))
        if unknown:
            raise DatasetError(f"folders {unknown} are not classes of the model ({', '.join(classes)})")
    paths, labels, skipped = [], [], []
    for index, name in enumerate(classes):
        for path in found.get(name, []):
            problem = _unreadable(path) if verify else None
            if problem:
                skipped.append((path, problem))
                continue
            paths.append(path)
            labels.append(index)
    if not paths:
        raise DatasetError(f"no readable images in {', '.join(map(str, roots))}")
    if skipped:
        listing = "; ".join(f"{path}: {problem}" for path, problem in skipped[:20])
        more = f" (and {len(skipped) - 20} more)" if len(skipped) > 20 else ""
        message = f"skipped {len(skipped)} unreadable image(s): {listing}{more}"
        warnings.warn(message, stacklevel=2)
        logger.warning(message)
    return ImageDataset(classes=list(classes), paths=paths, labels=np.asarray(labels, dtype=np.int64), skipped=skipped)


def _unreadable(path: Path) -> str | None:
    try:
        with Image.open(path) as image:
            image.verify()
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return None


def stratified_split(labels: np.ndarray, *, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(train indices, validation indices), `fraction` of every class (at least one image) held out."""
    if not 0 < fraction < 1:
        raise DatasetError(f"validation fraction must be between 0 and 1, got {fraction}")
    rng = np.random.default_rng(seed)
    train, val = [], []
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        rng.shuffle(members)
        if len(members) < 2:
            raise DatasetError(f"class {label} has {len(members)} image(s); a split needs at least two")
        held = max(1, int(round(len(members) * fraction)))
        val.extend(members[:held])
        train.extend(members[held:])
    return np.sort(np.asarray(train)), np.sort(np.asarray(val))


def load_rgb(path: Path) -> Image.Image:
    with Image.open(path) as image:
        image.load()
        return to_rgb(image)


@dataclass(frozen=True)
class AugmentationConfig:
    zoom: tuple[float, float] = (0.85, 1.0)  # side of the random square crop, relative to the image
    stain_gain: float = 0.15  # per-channel optical density scale 1 ± gain
    stain_shift: float = 0.05  # per-channel optical density offset
    brightness: float = 0.12
    saturation: float = 0.2
    rescale_probability: float = 0.6  # resize to a random size with a random filter (as a scanner would)
    rescale_sizes: tuple[int, int] = (180, 400)
    jpeg_probability: float = 0.8
    jpeg_quality: tuple[int, int] = (65, 95)
    # Another lamp, filter or camera: each channel scaled by 1 ± white_balance (tints whole fields)...
    white_balance: float = 0.0
    # ...and another focus or objective: a Gaussian blur of a random radius, sometimes.
    blur_probability: float = 0.0
    blur_radius: tuple[float, float] = (0.3, 1.5)
    # Another laboratory's look (Fourier domain adaptation, Yang & Soatto 2020, as a training augmentation):
    # the low-frequency amplitude spectrum of an augmented view moved towards that of another training
    # folder's image (another laboratory's in the multilab recipe) by a random share, its phase kept.
    # Stain, lamp and camera live mostly in the amplitude's lowest frequencies, the cell's shape in the
    # phase, so the network sees its cells in the other laboratories' colours (``style_mix``).
    style_mix_probability: float = 0.0
    style_mix_window: float = 0.01  # half-side of the low-frequency square, relative to the side (FDA L)
    style_mix_strength: tuple[float, float] = (0.0, 1.0)  # share of the other image's amplitude


# Several laboratories' cells: stronger colour, focus and camera variation than one lab's analyser shows.
MULTILAB_AUGMENTATION = AugmentationConfig(
    zoom=(0.8, 1.0),
    stain_gain=0.25,
    stain_shift=0.08,
    brightness=0.15,
    saturation=0.3,
    white_balance=0.2,
    blur_probability=0.3,
)

# The multilab augmentation with cross-laboratory style mixing: the bundled model's since 2026-12-01 (fifth session).
MULTILAB_STYLE_MIX_AUGMENTATION = dataclasses.replace(MULTILAB_AUGMENTATION, style_mix_probability=0.8)

# Named augmentations (``manage.py train --augmentation NAME``).
AUGMENTATIONS = {
    "default": AugmentationConfig(),
    "multilab": MULTILAB_AUGMENTATION,
    "multilab-style-mix": MULTILAB_STYLE_MIX_AUGMENTATION,
}


def augment(image: Image.Image, *, rng: np.random.Generator, config: AugmentationConfig) -> Image.Image:
    """One random view of an RGB cell image."""
    k = int(rng.integers(8))
    if k & 4:
        image = image.transpose(Image.Transpose.FLIP_LEFT_RIGHT)
    if k & 3:
        image = image.transpose(
            (Image.Transpose.ROTATE_90, Image.Transpose.ROTATE_180, Image.Transpose.ROTATE_270)[(k & 3) - 1]
        )
    width, height = image.size
    side = int(min(width, height) * rng.uniform(*config.zoom))
    left = int(rng.integers(0, width - side + 1))
    top = int(rng.integers(0, height - side + 1))
    image = image.crop((left, top, left + side, top + side))
    image = _stain_jitter(image, rng=rng, config=config)
    if config.white_balance:
        gains = 1 + rng.uniform(-config.white_balance, config.white_balance, size=3)
        image = Image.fromarray(np.clip(np.asarray(image, dtype=np.float32) * gains + 0.5, 0, 255).astype(np.uint8))
    if config.blur_probability and rng.random() < config.blur_probability:
        image = image.filter(ImageFilter.GaussianBlur(float(rng.uniform(*config.blur_radius))))
    if config.brightness:
        image = ImageEnhance.Brightness(image).enhance(1 + rng.uniform(-config.brightness, config.brightness))
    if config.saturation:
        image = ImageEnhance.Color(image).enhance(1 + rng.uniform(-config.saturation, config.saturation))
    if rng.random() < config.rescale_probability:
        size = int(rng.integers(config.rescale_sizes[0], config.rescale_sizes[1] + 1))
        resample = RESAMPLING_FILTERS[rng.choice(["bilinear", "bicubic", "lanczos", "box", "hamming"])]
        image = image.resize((size, size), resample)
    if rng.random() < config.jpeg_probability:
        buffer = io.BytesIO()
        quality = int(rng.integers(config.jpeg_quality[0], config.jpeg_quality[1] + 1))
        image.save(buffer, format="JPEG", quality=quality, subsampling=int(rng.choice([0, 2])))
        buffer.seek(0)
        image = Image.open(buffer)
        image.load()
    return image


def _stain_jitter(image: Image.Image, *, rng: np.random.Generator, config: AugmentationConfig) -> Image.Image:
    """Scale and shift each channel's optical density: a different stain batch or lamp, roughly."""
    if not config.stain_gain and not config.stain_shift:
        return image
    pixels = np.asarray(image, dtype=np.float32)
    density = -np.log((pixels + 1.0) / 256.0)
    gain = 1 + rng.uniform(-config.stain_gain, config.stain_gain, size=3)
    shift = rng.uniform(-config.stain_shift, config.stain_shift, size=3)
    density = density * gain + shift
    pixels = np.exp(-np.maximum(density, 0.0)) * 256.0 - 1.0
    return Image.fromarray(np.clip(pixels + 0.5, 0, 255).astype(np.uint8))


def style_mix(
    pixels: np.ndarray, reference: np.ndarray, *, rng: np.random.Generator, config: AugmentationConfig
) -> np.ndarray:
    """uint8 [S, S, 3] ``pixels`` with the low-frequency amplitude spectrum of each channel moved towards
    ``reference``'s (same shape) by a random share, the phase unchanged; with probability
    ``config.style_mix_probability``, otherwise ``pixels`` as they are."""
    if not config.style_mix_probability or rng.random() >= config.style_mix_probability:
        return pixels
    if pixels.shape != reference.shape:
        raise ValueError(f"style reference of shape {reference.shape} for pixels of shape {pixels.shape}")
    share = float(rng.uniform(*config.style_mix_strength))
    height, width = pixels.shape[:2]
    half = max(1, int(min(height, width) * config.style_mix_window))
    spectrum = np.fft.fftshift(np.fft.fft2(pixels.astype(np.float32), axes=(0, 1)), axes=(0, 1))
    target = np.fft.fftshift(np.fft.fft2(reference.astype(np.float32), axes=(0, 1)), axes=(0, 1))
    amplitude, phase = np.abs(spectrum), np.angle(spectrum)
    cy, cx = height // 2, width // 2
    window = (slice(cy - half, cy + half + 1), slice(cx - half, cx + half + 1))
    amplitude[window] = (1 - share) * amplitude[window] + share * np.abs(target[window])
    mixed = np.fft.ifft2(np.fft.ifftshift(amplitude * np.exp(1j * phase), axes=(0, 1)), axes=(0, 1)).real
    return np.clip(mixed + 0.5, 0, 255).astype(np.uint8)


def style_groups(dataset: ImageDataset) -> np.ndarray:
    """int [N]: which training folder each image came from (its class folder's parent: one laboratory in
    the multilab recipe; a folder given twice is one group), for ``style_mix`` to take its references
    from the other groups."""
    _, groups = np.unique([str(path.parent.parent) for path in dataset.paths], return_inverse=True)
    return groups.astype(np.int64)


def style_reference(groups: np.ndarray, index: int, *, rng: np.random.Generator) -> int:
    """A random image of another group than image ``index``'s, each other group equally likely (the small
    laboratories as often as the large one); any other image when there is a single group."""
    others = np.unique(groups[groups != groups[index]])
    if not len(others):
        return int(rng.integers(len(groups)))
    members = np.flatnonzero(groups == others[int(rng.integers(len(others)))])
    return int(members[int(rng.integers(len(members)))])


def model_input_pixels(
    path: Path,
    preprocessing: dict,
    *,
    rng: np.random.Generator | None = None,
    config: AugmentationConfig | None = None,
) -> np.ndarray:
    """uint8 [S, S, 3] pixels of one file as the model sees them (augmented when rng is given);
    `preprocessing.scale_pixels` maps them to the model's input range."""
    image = load_rgb(path)
    if rng is not None:
        image = augment(image, rng=rng, config=config or AugmentationConfig())
    return np.asarray(fit_to_input(image, preprocessing), dtype=np.uint8)
