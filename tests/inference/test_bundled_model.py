import json
from pathlib import Path

import pytest
from django.conf import settings
from PIL import Image

from inference.models import ModelVersion
from inference.predictor import Predictor, reset_predictor
from inference.services import ensure_bundled_model

pytestmark = pytest.mark.shared_data


def test_bundled_metadata_describes_its_files():
    metadata = json.loads((Path(settings.BUNDLED_MODEL_DIR) / "metadata.json").read_text())
    assert (Path(settings.BUNDLED_MODEL_DIR) / metadata["serving_artifact"]).is_file()
    assert metadata["preprocessing"]["input_size"] == metadata["input_size"]
    assert set(metadata["checksums"]) >= {metadata["serving_artifact"]}


def test_ensure_bundled_model_registers_and_activates_it_once(db):
    version = ensure_bundled_model()
    assert version.is_active and version.source == ModelVersion.Source.BUNDLED
    assert ensure_bundled_model().pk == version.pk
    assert ModelVersion.objects.count() == 1


def test_bundled_model_classifies_ten_pbc_test_images(db, pbc_dir):
    reset_predictor()
    predictor = Predictor(ensure_bundled_model())
    class_dirs = sorted(p for p in (pbc_dir / "test").iterdir() if p.is_dir())
    # Round-robin over classes: one image of each, then the next of each, until ten.
    ranked = [(rank, d.name, path) for d in class_dirs for rank, path in enumerate(sorted(d.glob("*.jpg"))[:2])]
    chosen = [(label, path) for _, label, path in sorted(ranked)][:10]
    assert len(chosen) == 10
    results = predictor.predict([Image.open(path) for _, path in chosen])
    right = sum(result.label == label for (label, _), result in zip(chosen, results, strict=True))
    assert right >= 9, [(label, r.label, round(r.confidence, 3)) for (label, _), r in zip(chosen, results, strict=True)]
