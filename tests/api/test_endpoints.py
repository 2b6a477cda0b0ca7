import csv
import io

import pytest

from audit.models import AuditEvent
from cases.models import Case, Review
from inference.models import ModelVersion
from inference.services import record_evaluation
from tests.factories import DEFAULT_PASSWORD, ModelVersionFactory
from tests.reports.conftest import scored_version  # noqa: F401 - fixture

from .conftest import token_client


@pytest.fixture
def pathologist_api(pathologist):
    return token_client(pathologist)


def cells(case):
    return list(case.images.order_by("pk").values_list("pk", flat=True))


def test_an_unknown_class_is_400_and_saves_nothing(review_world, pathologist_api):
    case = review_world["open_case"]
    response = pathologist_api.post(
        f"/api/v1/cases/{case.pk}/reviews/", {"cells": cells(case), "to_label": "dragon"}, format="json"
    )
    assert response.status_code == 400
    assert "is not a class of this case's model" in response.json()["detail"]
    assert not Review.objects.filter(image__case=case).exists()


def test_a_reviewer_only_label_needs_no_reason(review_world, pathologist_api):
    case = review_world["open_case"]
    response = pathologist_api.post(
        f"/api/v1/cases/{case.pk}/reviews/", {"cells": cells(case)[:1], "to_label": "smudge"}, format="json"
    )
    assert response.status_code == 201
    assert [(review["kind"], review["to_label"]) for review in response.json()] == [("override", "smudge")]


def test_override_with_reason_returns_the_reviews(review_world, pathologist_api):
    case = review_world["open_case"]
    response = pathologist_api.post(
        f"/api/v1/cases/{case.pk}/reviews/",
        {"cells": cells(case)[:1], "to_label": "monocyte", "reason": "nucleus"},
        format="json",
    )
    assert response.status_code == 201
    (review,) = response.json()
    assert (review["kind"], review["from_label"], review["to_label"]) == ("override", "neutrophil", "monocyte")


def test_reviewing_a_signed_case_is_409(review_world, pathologist_api):
    case = review_world["signed_case"]
    response = pathologist_api.post(f"/api/v1/cases/{case.pk}/reviews/", {"cells": cells(case)}, format="json")
    assert response.status_code == 409


def test_sign_off_waits_for_every_final_label(review_world, pathologist_api):
    case = review_world["open_case"]
    password = {"password": DEFAULT_PASSWORD}
    assert pathologist_api.post(f"/api/v1/cases/{case.pk}/sign/", password, format="json").status_code == 409
    pathologist_api.post(f"/api/v1/cases/{case.pk}/reviews/", {"cells": cells(case)}, format="json")
    refused = pathologist_api.post(f"/api/v1/cases/{case.pk}/sign/", {"password": "wrong"}, format="json")
    assert refused.status_code == 400 and "password is not right" in refused.json()["detail"]
    response = pathologist_api.post(f"/api/v1/cases/{case.pk}/sign/", password, format="json")
    assert response.status_code == 200
    assert response.json()["status"] == Case.Status.SIGNED


def test_amendment_of_a_signed_case(review_world, pathologist_api):
    case = review_world["signed_case"]
    response = pathologist_api.post(
        f"/api/v1/cases/{case.pk}/amendments/",
        {"cells": cells(case)[:1], "to_label": "basophil", "reason": "re-read"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()[0]["kind"] == "amendment"


def test_review_history_filters_by_kind(review_world, pathologist_api):
    case = review_world["signed_case"]
    pathologist_api.post(
        f"/api/v1/cases/{case.pk}/amendments/",
        {"cells": cells(case)[:1], "to_label": "basophil", "reason": "re-read"},
        format="json",
    )
    body = pathologist_api.get(f"/api/v1/cases/{case.pk}/reviews/", {"kind": "amendment"}).json()
    assert body["count"] == 1 and body["results"][0]["to_label"] == "basophil"


def test_differential_counts(review_world, pathologist_api):
    case = review_world["open_case"]
    body = pathologist_api.get(f"/api/v1/cases/{case.pk}/differential/").json()
    rows = {row["label"]: row for row in body["rows"]}
    assert (body["total_cells"], body["reviewed_cells"], body["unreviewed_cells"]) == (2, 0, 2)
    assert rows["neutrophil"]["value"] == pytest.approx(50.0)
    assert rows["lymphocyte"]["flag"] == "high"


def test_metrics_match_the_dashboard(scored_version, supervisor):  # noqa: F811 - fixture
    response = token_client(supervisor).get(
        "/api/v1/reports/metrics/", {"model_version": scored_version.pk, "start": "2025-03-01", "end": "2025-03-03"}
    )
    body = response.json()
    assert body["accuracy"] == pytest.approx(0.6)
    assert body["confusion"] == [[1, 0, 0], [1, 1, 0], [0, 1, 1]]
    assert body["cells_per_day"][1] == {"day": "2025-03-02", "cells": 5}


def test_metrics_reject_a_reversed_period(review_world, supervisor):
    response = token_client(supervisor).get("/api/v1/reports/metrics/", {"start": "2025-03-03", "end": "2025-03-01"})
    assert response.status_code == 400
    assert response.json()["errors"] == {"end": ["The end date is before the start date."]}


def test_export_is_csv_and_audited(review_world, researcher):
    response = token_client(researcher).get("/api/v1/exports/cells/", {"reviewed_only": "true"})
    assert response["Content-Type"].startswith("text/csv")
    rows = list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))
    assert len(rows) == 1 + 2  # header and the signed case's two reviewed cells
    assert AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT, actor=researcher).exists()


def test_audit_events_filter_by_action(review_world, supervisor):
    body = token_client(supervisor).get("/api/v1/audit-events/", {"action": "sign_off"}).json()
    assert [event["action"] for event in body["results"]] == ["sign_off"]


def test_activation_through_the_api(review_world, admin_user):
    spare = ModelVersionFactory()
    record_evaluation(version=spare, data="a folder (10 cells)", metrics={"n": 10, "accuracy": 0.9})
    response = token_client(admin_user).post(f"/api/v1/model-versions/{spare.pk}/activate/")
    assert response.status_code == 200 and response.json()["is_active"] is True
    assert ModelVersion.objects.get(is_active=True) == spare


def test_model_versions_filter_by_active(review_world, admin_user):
    ModelVersionFactory()
    body = token_client(admin_user).get("/api/v1/model-versions/", {"is_active": "true"}).json()
    assert [version["id"] for version in body["results"]] == [review_world["version"].pk]
