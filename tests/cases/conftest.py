import pytest

from cases import classification
from tests.cases.test_field_uploads import FakeAnalysis


@pytest.fixture
def analysis(monkeypatch, tiny_model):
    """Install a fake pipeline: `analysis(answer)` (the tiny model stands as the active version); the fake is
    test_field_uploads', whose builders (crop_of, field_of, found) make its answers."""

    def install(answer) -> FakeAnalysis:
        fake = FakeAnalysis(answer)
        monkeypatch.setattr(classification, "analyse_images", fake)
        return fake

    return install
