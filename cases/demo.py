"""The demo case of the embedded default: licensed sample cells (cases/demo_cells, credited in its CREDITS.md)
uploaded through the normal upload service, so a newcomer without any images has a case to review.

The cells go through everything a real upload does: validation, encrypted storage, the audit trail and
classification by the active model (the bundled one on a fresh install) through the normal task path.
"""

from __future__ import annotations

import logging
import random
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import transaction

from accounts.demo import demo_email
from accounts.models import User
from accounts.roles import Role

from .models import Case
from .services import add_images, create_case

logger = logging.getLogger(__name__)

DEMO_CELLS_DIR = Path(__file__).resolve().parent / "demo_cells"
DEMO_ACCESSION = "DEMO-0001"
DEMO_PATIENT_REFERENCE = "demo (public sample cells)"


@dataclass(frozen=True)
class DemoCaseResult:
    case: Case | None
    created: bool
    cells: int
    message: str


def demo_cell_files() -> list[tuple[str, Path]]:
    """(label given by the source, file) for every shipped sample cell, in a fixed order."""
    return [(path.parent.name, path) for path in sorted(DEMO_CELLS_DIR.glob("*/*.jpg"))]


def demo_uploads() -> list[tuple[str, str, Path]]:
    """(name given at upload, source's label, file). Shuffled (always the same way) and renamed, so the names
    do not give the class away to the reviewer."""
    files = demo_cell_files()
    random.Random(13).shuffle(files)  # noqa: S311 - an order for a demo, not a secret
    return [(f"demo-cell-{number:02d}.jpg", label, path) for number, (label, path) in enumerate(files, start=1)]


def load_demo_case() -> DemoCaseResult:
    """Create the demo case once, owned by the demo technician; does nothing when it exists already."""
    if not settings.DEMO_MODE:
        return DemoCaseResult(None, False, 0, "Not the embedded default (DEMO_MODE is off); no demo case made.")
    existing = Case.objects.filter(accession_id=DEMO_ACCESSION).first()
    if existing is not None:
        return DemoCaseResult(existing, False, 0, f"The demo case {DEMO_ACCESSION} exists already; nothing to do.")
    owner = User.objects.filter(email=demo_email(Role.TECHNICIAN), is_active=True).first()
    if owner is None or owner.role != Role.TECHNICIAN:
        return DemoCaseResult(None, False, 0, "No demo technician (run create_demo_users first); no demo case made.")
    uploads = [
        SimpleUploadedFile(name, path.read_bytes(), content_type="image/jpeg") for name, _, path in demo_uploads()
    ]
    with transaction.atomic():
        case = create_case(accession_id=DEMO_ACCESSION, patient_reference=DEMO_PATIENT_REFERENCE, created_by=owner)
    accepted, rejected = add_images(case=case, files=uploads, uploaded_by=owner)
    for item in rejected:
        logger.warning("demo case: %s", item.message)
    case.refresh_from_db()
    return DemoCaseResult(case, True, len(accepted), f"Demo case {DEMO_ACCESSION}: {len(accepted)} cells uploaded.")
