"""`manage.py load_demo_case`: the shipped sample cells become a case for the demo technician, classified by the
bundled model through the normal upload and task path; a second run does nothing. Needs no ../shared."""

from io import StringIO

import pytest
from django.core.management import call_command

from accounts.demo import demo_email
from accounts.roles import Role
from cases.demo import DEMO_ACCESSION, DEMO_CELLS_DIR, demo_cell_files, demo_uploads
from cases.models import Case, CellImage, Prediction
from inference.models import ModelVersion
from inference.predictor import reset_predictor

pytestmark = pytest.mark.django_db


@pytest.fixture
def demo_mode(settings):
    settings.DEMO_MODE = True


@pytest.fixture
def demo_technician(make_user, demo_mode):
    return make_user(Role.TECHNICIAN, email=demo_email(Role.TECHNICIAN))


@pytest.fixture
def bundled_model():
    """No active version: the task path installs the bundled model, as on a fresh `make run`."""
    assert not ModelVersion.objects.exists()
    reset_predictor()
    yield
    reset_predictor()


def load(**kwargs) -> str:
    out = StringIO()
    call_command("load_demo_case", stdout=out, **kwargs)
    return out.getvalue()


def test_the_shipped_cells_are_a_few_dozen_credited_and_small():
    files = demo_cell_files()
    assert 30 <= len(files) <= 60
    assert sum(path.stat().st_size for _, path in files) <= 3 * 1024 * 1024
    credits = (DEMO_CELLS_DIR / "CREDITS.md").read_text()
    assert "CC BY 4.0" in credits and "MIT" in credits
    for label, path in files:
        assert f"`{path.name}`" in credits, f"{label}/{path.name} is not credited"


def test_loads_the_cells_classified_by_the_bundled_model_and_a_second_run_adds_none(
    demo_technician, bundled_model, django_capture_on_commit_callbacks
):
    with django_capture_on_commit_callbacks(execute=True):
        output = load()

    case = Case.objects.get(accession_id=DEMO_ACCESSION)
    expected = len(demo_cell_files())
    assert f"{expected} cells uploaded" in output
    assert case.created_by == demo_technician
    uploads = CellImage.objects.filter(case=case, parent__isnull=True)
    assert uploads.count() == expected
    assert all(image.uploaded_by == demo_technician for image in uploads)
    # Stored through the upload service: encrypted, and the file names do not give the class away.
    assert not any(image.original_name.startswith(("pbc_", "lisc_")) for image in uploads)
    predictions = Prediction.objects.filter(image__case=case).select_related("model_version")
    assert {prediction.model_version.source for prediction in predictions} == {ModelVersion.Source.BUNDLED}
    assert predictions.count() >= expected
    assert not CellImage.objects.filter(case=case, status=CellImage.Status.FAILED).exists()
    # The bundled model calls most of them as the source's haematologists did (it saw these in training).
    truth = {name: label for name, label, _ in demo_uploads()}
    agreed = sum(truth[p.image.original_name] == p.label for p in predictions.filter(image__parent__isnull=True))
    print(f"demo case: bundled model agrees with the source on {agreed} of {expected} cells")
    assert agreed >= 0.8 * expected, f"{agreed} of {expected}"
    case.refresh_from_db()
    assert case.status == Case.Status.AWAITING_REVIEW

    with django_capture_on_commit_callbacks(execute=True):
        second = load()

    assert "exists already" in second
    assert Case.objects.filter(accession_id=DEMO_ACCESSION).count() == 1
    assert CellImage.objects.filter(case=case, parent__isnull=True).count() == expected


def test_without_the_demo_technician_it_skips_with_a_message(demo_mode):
    output = load()

    assert "create_demo_users" in output
    assert not Case.objects.exists()


def test_outside_the_embedded_default_it_makes_no_case(make_user, settings):
    settings.DEMO_MODE = False
    make_user(Role.TECHNICIAN, email=demo_email(Role.TECHNICIAN))

    assert "DEMO_MODE" in load()
    assert not Case.objects.exists()
