"""Cross-laboratory style mixing (``data.style_mix``): Fourier low-frequency amplitude from another training
folder's image, used by ``--augmentation multilab-style-mix``."""

import dataclasses

import numpy as np
import pytest
from django.core.management.base import CommandError
from PIL import Image

from inference.data import (
    AUGMENTATIONS,
    MULTILAB_AUGMENTATION,
    MULTILAB_STYLE_MIX_AUGMENTATION,
    AugmentationConfig,
    load_image_folder,
    style_groups,
    style_mix,
    style_reference,
)

ALWAYS = AugmentationConfig(style_mix_probability=1.0, style_mix_strength=(1.0, 1.0), style_mix_window=0.1)


def _cell(colour, *, seed=0, size=32):
    """A dark disc on a tinted background with a little noise: a cell of one laboratory's look."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    disc = (yy - size / 2) ** 2 + (xx - size / 2) ** 2 < (size / 4) ** 2
    pixels = np.where(disc[..., None], np.asarray(colour) * 0.4, np.asarray(colour)) + rng.normal(0, 4, (size, size, 3))
    return np.clip(pixels, 0, 255).astype(np.uint8)


def test_style_mix_keeps_shape_dtype_and_range():
    pixels, reference = _cell((220, 180, 170)), _cell((170, 170, 215), seed=1)
    mixed = style_mix(pixels, reference, rng=np.random.default_rng(0), config=ALWAYS)
    assert mixed.shape == pixels.shape and mixed.dtype == np.uint8
    assert mixed.min() >= 0 and mixed.max() <= 255


def test_style_mix_moves_the_colours_towards_the_reference_and_keeps_the_shape():
    pixels, reference = _cell((220, 180, 170)), _cell((150, 150, 215), seed=1)
    mixed = style_mix(pixels, reference, rng=np.random.default_rng(0), config=ALWAYS).astype(np.float32)
    means = [image.reshape(-1, 3).astype(np.float32).mean(0) for image in (pixels, reference)]
    assert np.abs(mixed.reshape(-1, 3).mean(0) - means[1]).max() < 3  # the whole share: the reference's colour
    assert np.abs(means[0] - means[1]).max() > 60
    # The phase is kept: the disc is still where it was, darker than its surroundings in every channel.
    size = pixels.shape[0]
    centre, corner = mixed[size // 2 - 3 : size // 2 + 3, size // 2 - 3 : size // 2 + 3], mixed[:4, :4]
    assert (centre.reshape(-1, 3).mean(0) < corner.reshape(-1, 3).mean(0) - 40).all()
    # Frequencies outside the low-frequency window are untouched (up to rounding).
    half = int(size * ALWAYS.style_mix_window)
    spectra = [
        np.abs(np.fft.fftshift(np.fft.fft2(x.astype(np.float32), axes=(0, 1)), axes=(0, 1))) for x in (pixels, mixed)
    ]
    outside = np.ones((size, size), bool)
    outside[size // 2 - half : size // 2 + half + 1, size // 2 - half : size // 2 + half + 1] = False
    assert np.allclose(spectra[0][outside], spectra[1][outside], atol=size * size * 0.6)


def test_style_mix_is_reproducible_for_a_seed_and_varies_between_seeds():
    pixels, reference = _cell((220, 180, 170)), _cell((150, 150, 215), seed=1)
    config = dataclasses.replace(ALWAYS, style_mix_strength=(0.0, 1.0))
    first, second, other = (
        style_mix(pixels, reference, rng=np.random.default_rng(s), config=config) for s in (3, 3, 4)
    )
    assert np.array_equal(first, second)
    assert not np.array_equal(first, other)


def test_style_mix_does_nothing_when_off_or_not_drawn():
    pixels, reference = _cell((220, 180, 170)), _cell((150, 150, 215), seed=1)
    assert style_mix(pixels, reference, rng=np.random.default_rng(0), config=AugmentationConfig()) is pixels
    assert style_mix(pixels, reference, rng=np.random.default_rng(0), config=MULTILAB_AUGMENTATION) is pixels
    never = dataclasses.replace(ALWAYS, style_mix_probability=1e-9)
    assert style_mix(pixels, reference, rng=np.random.default_rng(0), config=never) is pixels
    with pytest.raises(ValueError, match="shape"):
        style_mix(pixels, reference[:16], rng=np.random.default_rng(0), config=ALWAYS)


def test_the_references_come_from_the_other_folders_each_equally_often():
    groups = np.asarray([0] * 90 + [1] * 5 + [2] * 5)
    rng = np.random.default_rng(0)
    picked = np.asarray([style_reference(groups, 0, rng=rng) for _ in range(400)])
    assert set(groups[picked]) == {1, 2}
    assert 150 < (groups[picked] == 1).sum() < 250  # the small folders as often as each other
    assert all(groups[style_reference(groups, 92, rng=rng)] != 1 for _ in range(20))
    assert 0 <= style_reference(np.zeros(4, np.int64), 2, rng=rng) < 4  # one folder: any image


def _lab(root, colour, per_class=2):
    for name in ("A", "B"):
        (root / name).mkdir(parents=True)
        for index in range(per_class):
            Image.fromarray(_cell(colour, seed=index)).save(root / name / f"{index}.png")
    return root


def test_load_views_mixes_other_laboratories_styles_into_the_augmented_view_only(tmp_path):
    from inference.preprocessing import make_preprocessing
    from inference.whole_network import WholeNetworkConfig, load_views

    red, blue = _lab(tmp_path / "red", (220, 170, 160)), _lab(tmp_path / "blue", (150, 150, 220))
    dataset = load_image_folder([red, red, blue])  # a folder given twice is still one style
    assert len(set(style_groups(dataset))) == 2
    plain = dataclasses.replace(
        ALWAYS, zoom=(1.0, 1.0), stain_gain=0, stain_shift=0, brightness=0, saturation=0, rescale_probability=0,
        jpeg_probability=0,
    )  # fmt: skip
    preprocessing = make_preprocessing(input_size=32, scale="raw", resample="bilinear", test_time_flips="none")

    class Bar:
        def update(self, n=1):
            pass

        def close(self):
            pass

    views = [
        load_views(
            dataset,
            views=2,
            preprocessing=preprocessing,
            config=WholeNetworkConfig(augmentation=augmentation),
            progress=lambda *a: Bar(),
        )  # fmt: skip
        for augmentation in (plain, dataclasses.replace(plain, style_mix_probability=0.0))
    ]
    mixed, unmixed = views
    assert np.array_equal(mixed[0], unmixed[0])  # view 0 stays the plain image
    is_red = np.asarray(["red" in str(path) for path in dataset.paths])
    red_blue = mixed[1][is_red].reshape(-1, 3).mean(0)[2] - unmixed[1][is_red].reshape(-1, 3).mean(0)[2]
    blue_blue = mixed[1][~is_red].reshape(-1, 3).mean(0)[2] - unmixed[1][~is_red].reshape(-1, 3).mean(0)[2]
    assert red_blue > 30 and blue_blue < -30  # each lab's augmented cells in the other lab's colours
    assert np.array_equal(dataset.labels, load_image_folder([red, red, blue]).labels)  # labels untouched


def _train_options(*arguments):
    from inference.management.commands.train import Command

    command = Command()
    return command, vars(command.create_parser("manage.py", "train").parse_args(list(arguments)))


def test_train_takes_a_named_augmentation():
    command, options = _train_options(
        "--recipe", "multilab", "--without", "lisc", "--data-root", "d", "--augmentation", "multilab-style-mix"
    )
    recipe, config = command._recipe_and_config(options)
    assert config.augmentation == MULTILAB_STYLE_MIX_AUGMENTATION == AUGMENTATIONS["multilab-style-mix"]
    assert config.without == ("lisc",)
    # The bundled model's recipe mixes styles by default; --augmentation multilab trains the previous model's way.
    _, default = command._recipe_and_config(_train_options("--recipe", "multilab", "--data-root", "d")[1])
    assert default.augmentation == MULTILAB_STYLE_MIX_AUGMENTATION
    _, previous = command._recipe_and_config(
        _train_options("--recipe", "multilab", "--data-root", "d", "--augmentation", "multilab")[1]
    )
    assert previous.augmentation == MULTILAB_AUGMENTATION and not previous.augmentation.style_mix_probability
    assert dataclasses.replace(config.augmentation, style_mix_probability=0.0) == MULTILAB_AUGMENTATION


def test_train_refuses_style_mixing_where_it_would_do_nothing():
    command, options = _train_options("--recipe", "frozen-head", "--data", "d", "--augmentation", "multilab-style-mix")
    with pytest.raises(CommandError, match="does nothing with recipe frozen-head"):
        command._recipe_and_config(options)
    command, options = _train_options("--recipe", "frozen-head", "--data", "d", "--augmentation", "multilab")
    assert command._recipe_and_config(options)[1].augmentation == MULTILAB_AUGMENTATION
