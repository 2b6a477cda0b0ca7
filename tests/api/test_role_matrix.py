"""Every API endpoint against every role: allowed roles get past authorization, the others get 403."""

import pytest

from .conftest import token_client

ALL_ROLES = ["technician", "pathologist", "supervisor", "researcher", "admin_user", "pending_user", None]


def first_cell(case):
    return case.images.order_by("pk").first().pk


# (id, method, path from the fixture data, JSON body, roles allowed)
ENDPOINTS = [
    ("reviews-list", "get", lambda w: f"/api/v1/cases/{w['open_case'].pk}/reviews/", None,
     {"technician", "pathologist", "supervisor", "admin_user"}),
    ("reviews-create", "post", lambda w: f"/api/v1/cases/{w['open_case'].pk}/reviews/",
     lambda w: {"cells": [first_cell(w["open_case"])]}, {"pathologist"}),
    ("sign", "post", lambda w: f"/api/v1/cases/{w['open_case'].pk}/sign/", None, {"pathologist"}),
    ("amend", "post", lambda w: f"/api/v1/cases/{w['signed_case'].pk}/amendments/",
     lambda w: {"cells": [first_cell(w["signed_case"])], "to_label": "monocyte", "reason": "re-read"}, {"pathologist"}),
    ("differential", "get", lambda w: f"/api/v1/cases/{w['open_case'].pk}/differential/", None,
     {"technician", "pathologist", "supervisor", "admin_user"}),
    ("metrics", "get", lambda w: "/api/v1/reports/metrics/", None, {"supervisor", "admin_user"}),
    ("export", "get", lambda w: "/api/v1/exports/cells/", None, {"researcher", "admin_user"}),
    ("audit", "get", lambda w: "/api/v1/audit-events/", None, {"supervisor", "admin_user"}),
    ("versions-list", "get", lambda w: "/api/v1/model-versions/", None, {"supervisor", "admin_user"}),
    ("versions-detail", "get", lambda w: f"/api/v1/model-versions/{w['version'].pk}/", None,
     {"supervisor", "admin_user"}),
    ("versions-activate", "post", lambda w: f"/api/v1/model-versions/{w['version'].pk}/activate/", None,
     {"admin_user"}),
    ("cases-list", "get", lambda w: "/api/v1/cases/", None, {"technician", "pathologist", "supervisor", "admin_user"}),
    ("case-images", "get", lambda w: f"/api/v1/cases/{w['open_case'].pk}/images/", None,
     {"technician", "pathologist", "supervisor", "admin_user"}),
]  # fmt: skip


@pytest.mark.parametrize("role", ALL_ROLES, ids=lambda role: role or "anonymous")
@pytest.mark.parametrize(
    ("method", "path", "body", "allowed"), [e[1:] for e in ENDPOINTS], ids=[e[0] for e in ENDPOINTS]
)
def test_role_endpoint_matrix(review_world, role, method, path, body, allowed, request):
    user = request.getfixturevalue(role) if role else None
    client = token_client(user)
    kwargs = {"format": "json"} if method == "post" else {}
    response = getattr(client, method)(path(review_world), body(review_world) if body else None, **kwargs)
    if role in allowed:
        assert response.status_code not in (401, 403), response.content
        assert response.status_code < 500
    else:
        assert response.status_code in (401, 403), response.content
