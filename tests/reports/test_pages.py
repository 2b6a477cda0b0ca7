import csv
import io

import pytest
from django.urls import reverse

from audit.models import AuditEvent
from audit.services import record
from cases.models import CellImage
from tests.factories import CellImageFactory


def csv_rows(response):
    return list(csv.reader(io.StringIO(b"".join(response.streaming_content).decode())))


def test_dashboard_shows_metrics_of_the_chosen_version_and_period(scored_version, supervisor, client):
    client.force_login(supervisor)
    response = client.get(
        reverse("reports:dashboard"), {"model_version": scored_version.pk, "start": "2025-03-01", "end": "2025-03-03"}
    )
    assert response.status_code == 200
    assert response.context["metrics"].accuracy == pytest.approx(0.6)
    assert b'data-testid="chart-roc"' in response.content
    assert b"vendor/chart.umd.min.js" in response.content


def test_dashboard_defaults_to_the_latest_version_and_last_30_days(scored_version, supervisor, client):
    client.force_login(supervisor)
    response = client.get(reverse("reports:dashboard"))
    assert response.status_code == 200
    metrics = response.context["metrics"]
    assert metrics.model_version == scored_version
    assert (metrics.period.end - metrics.period.start).days == 29


def test_dashboard_rejects_a_reversed_period(scored_version, supervisor, client):
    client.force_login(supervisor)
    response = client.get(reverse("reports:dashboard"), {"start": "2025-03-03", "end": "2025-03-01"})
    assert response.status_code == 400
    assert "The end date is before the start date." in response.content.decode()


def test_dashboard_metrics_download_as_csv(scored_version, supervisor, client):
    client.force_login(supervisor)
    response = client.get(
        reverse("reports:dashboard_csv"),
        {"model_version": scored_version.pk, "start": "2025-03-01", "end": "2025-03-03"},
    )
    assert response["Content-Type"].startswith("text/csv")
    assert ["summary", "cells", "", "", "6"] in csv_rows(response)


@pytest.mark.parametrize("role_fixture", ["technician", "pathologist", "researcher"])
def test_dashboard_is_refused_to_other_roles(db, role_fixture, request, client):
    client.force_login(request.getfixturevalue(role_fixture))
    assert client.get(reverse("reports:dashboard")).status_code == 403


def test_audit_viewer_filters_by_action_and_actor(supervisor, pathologist, client):
    record(action=AuditEvent.Action.SIGN_IN, actor=pathologist)
    record(action=AuditEvent.Action.SIGN_IN, actor=supervisor)
    record(action=AuditEvent.Action.UPLOAD, actor=pathologist)
    client.force_login(supervisor)
    response = client.get(reverse("reports:audit"), {"action": "sign_in", "actor": pathologist.email})
    events = list(response.context["events"])
    assert [(event.action, event.actor) for event in events] == [("sign_in", pathologist)]


def test_audit_csv_download_is_filtered_and_audited(supervisor, pathologist, client):
    record(action=AuditEvent.Action.SIGN_IN, actor=pathologist)
    record(action=AuditEvent.Action.UPLOAD, actor=pathologist)
    client.force_login(supervisor)
    rows = csv_rows(client.get(reverse("reports:audit_csv"), {"action": "upload"}))
    assert rows[0][:3] == ["time", "actor_email", "action"]
    assert [row[2] for row in rows[1:]] == ["upload"]
    assert AuditEvent.objects.filter(action=AuditEvent.Action.EXPORT, actor=supervisor).exists()


def test_audit_viewer_reports_bad_dates(supervisor, client):
    client.force_login(supervisor)
    response = client.get(reverse("reports:audit"), {"start": "not-a-date"})
    assert response.status_code == 400
    assert "Enter a valid date." in response.content.decode()


@pytest.mark.parametrize("role_fixture", ["technician", "pathologist", "researcher"])
def test_audit_viewer_is_refused_to_other_roles(db, role_fixture, request, client):
    client.force_login(request.getfixturevalue(role_fixture))
    assert client.get(reverse("reports:audit")).status_code == 403


def test_errors_page_lists_failed_images_and_overrides(scored_version, admin_user, client):
    failed = CellImageFactory(status=CellImage.Status.FAILED, status_message="model file missing")
    client.force_login(admin_user)
    response = client.get(reverse("reports:errors"))
    assert response.status_code == 200
    assert list(response.context["failed"]) == [failed]
    assert {review.to_label for review in response.context["overridden"]} == {"lymphocyte", "monocyte"}
    assert reverse("cases:image", args=[failed.pk]).encode() in response.content


@pytest.mark.parametrize("role_fixture", ["supervisor", "pathologist", "researcher", "technician"])
def test_errors_page_is_for_admins_only(db, role_fixture, request, client):
    client.force_login(request.getfixturevalue(role_fixture))
    assert client.get(reverse("reports:errors")).status_code == 403
