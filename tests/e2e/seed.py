"""A case of a hundred-odd classified cells for the browser tests, made cheaply.

The cells are real PBC crops, stored encrypted with their thumbnails exactly as an upload stores them, and each
gets the `Prediction` the bundled model would have written, without running the model a hundred times: the
prediction is the crop's own class (a few marked low-confidence and flagged, as a real case has some). The
model version is the bundled one, so the review's class keys, Grad-CAM and the report work on these cells.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from cases import classification, storage
from cases.models import Case, CellImage, Prediction
from cases.services import create_case
from inference.services import ensure_bundled_model

# A plausible adult differential for 101 cells: one will be marked a smudge cell (counted apart), which
# leaves exactly 100 leukocytes, the review's first target count. Neutrophils come last in the model's class
# order, so the gallery's 80th cell is a neutrophil far down the page.
PROPORTIONS = {"NEUTROPHIL": 56, "LYMPHOCYTE": 27, "MONOCYTE": 7, "EOSINOPHIL": 4, "BASOPHIL": 1, "IG": 6}
FLAGGED_EVERY = 25  # every 25th cell is a low-confidence prediction, shown as "unidentified — needs review"


def seed_review_case(
    *, pbc_dir: Path, technician, accession_id: str, proportions: dict[str, int] = PROPORTIONS
) -> Case:
    """A case awaiting review with sum(proportions) classified single-cell crops."""
    version = ensure_bundled_model()
    classes = list(version.classes)
    case = create_case(accession_id=accession_id, created_by=technician, patient_reference=f"MRN-{accession_id}")
    paths = [
        (label, path)
        for label, count in proportions.items()
        for path in sorted((pbc_dir / "test" / label).glob("*.jpg"))[:count]
    ]
    assert len(paths) == sum(proportions.values()), "not enough PBC test images for the seeded case"
    cells, predictions = [], []
    for number, (label, path) in enumerate(paths, start=1):
        data = path.read_bytes()
        with Image.open(io.BytesIO(data)) as picture:
            picture.load()
            thumbnail = classification.thumbnail_jpeg(picture)
            width, height = picture.size
        cells.append(
            CellImage(
                case=case,
                storage_key=storage.save(data),
                thumbnail_key=storage.save(thumbnail),
                sha256=hashlib.sha256(data).hexdigest(),
                size_bytes=len(data),
                width=width,
                height=height,
                content_type="image/jpeg",
                original_name=path.name,
                uploaded_by=technician,
                status=CellImage.Status.CLASSIFIED,
                kind=CellImage.Kind.CELL,
            )
        )
        flagged = number % FLAGGED_EVERY == 0
        confidence = 0.48 if flagged else 0.80 + (number % 19) / 100
        rest = (1 - confidence) / (len(classes) - 1)
        predictions.append(
            dict(
                model_version=version,
                label=label,
                confidence=confidence,
                probabilities={name: confidence if name == label else rest for name in classes},
                flagged=flagged,
                flag_reasons=["low_confidence"] if flagged else [],
                latency_ms=15.0,
            )
        )
    created = CellImage.objects.bulk_create(cells)
    Prediction.objects.bulk_create(
        [Prediction(image=cell, **fields) for cell, fields in zip(created, predictions, strict=True)]
    )
    classification.refresh_case_statuses(case_ids=[case.pk])
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW
    return case
