import csv
import io
import json

import pytest
from django.core.management import call_command
from django.core.management.base import CommandError

from inference.testing import synthetic_cell_image

pytestmark = pytest.mark.slow


def test_classify_prints_csv_for_a_folder(tiny_model, tmp_path):
    for index in range(3):
        synthetic_cell_image(index, 3, seed=7).save(tmp_path / f"{index}.png")
    out = io.StringIO()
    call_command("classify", str(tmp_path), stdout=out)
    rows = list(csv.DictReader(io.StringIO(out.getvalue())))
    assert [row["label"] for row in rows] == list(tiny_model.classes)


def test_classify_json_reports_unreadable_files_without_losing_the_rest(tiny_model, tmp_path):
    synthetic_cell_image(0, 3).save(tmp_path / "good.png")
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    out = io.StringIO()
    call_command("classify", str(tmp_path / "good.png"), str(tmp_path / "bad.jpg"), "--format", "json", stdout=out)
    predictions = json.loads(out.getvalue())["predictions"]
    assert "unreadable image" in next(p for p in predictions if p["path"].endswith("bad.jpg"))["error"]
    assert next(p for p in predictions if p["path"].endswith("good.png"))["label"] == tiny_model.classes[0]


def test_classify_rejects_a_missing_path(tiny_model, tmp_path):
    with pytest.raises(CommandError, match="no such file"):
        call_command("classify", str(tmp_path / "missing.png"))
