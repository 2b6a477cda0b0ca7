"""Who may reach which route: the table behind tests/accounts/test_route_matrix.py.

The matrix test requests every named URL of the project as each persona (anonymous, pending,
technician, pathologist, supervisor, researcher, admin) and compares the outcome with this table.
It FAILS when a URL name has no row here (and when a row names a URL that no longer exists).

HOW TO ADD A ROW — one `Route(...)` per URL name, in ROUTES below:

    Route("cases:detail", roles_with("view_cases"), kwargs=lambda world: {"pk": world.case.pk}),

  name     the URL name as reverse() takes it, namespace included ("cases:detail", "api-case-list").
  allowed  the personas that must get through; every other persona must be denied. Build it from
           roles_with("capability", ...) (roles having ANY of them, read from accounts/roles.py),
           SIGNED_IN (pending + all roles), ROLES (all roles), or EVERYONE (anonymous too).
  method   "get" (default) for pages and API reads; "post" for POST-only routes.
  kwargs   callable(world) -> URL kwargs, called afresh for every persona. `world`
           (tests/accounts/test_route_matrix.py: World) gives shared objects (world.case,
           world.image, ...) and fresh ones (world.fresh_case(), world.fresh_user(role), ...).
  data     POST body: a dict or callable(world) -> dict. Give data that succeeds for an allowed persona.
  also     further checks of the same URL with another method where the rules differ, e.g. an API
           list that everyone with view_cases reads but only create_case writes:
               also=[Check("post", roles_with("create_case"), data=...)]
  ok_statuses  extra status codes that still mean "got through", with the reason in `note`.

"Allowed": status < 400 (plus ok_statuses), or a redirect that is not to the sign-in or pending page.
"Denied": 401, 403, 404, 405, or a redirect to the sign-in or the pending page.
URLs deliberately left out of the matrix are in IGNORED_* below, each with its reason.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from accounts.roles import ROLE_CAPABILITIES, Role
from tests.factories import DEFAULT_PASSWORD

ANONYMOUS = "anonymous"
PENDING = "pending"
ROLES = frozenset(role.value for role in Role)
SIGNED_IN = ROLES | {PENDING}
EVERYONE = SIGNED_IN | {ANONYMOUS}
PERSONAS = (ANONYMOUS, PENDING, *(role.value for role in Role))


def roles_with(*capabilities: str) -> frozenset[str]:
    return frozenset(role.value for role, held in ROLE_CAPABILITIES.items() if held & set(capabilities))


@dataclass(frozen=True)
class Check:
    method: str
    allowed: frozenset[str]
    data: dict | Callable | None = None
    ok_statuses: frozenset[int] = frozenset()


@dataclass(frozen=True)
class Route:
    name: str
    allowed: frozenset[str]
    method: str = "get"
    kwargs: Callable | None = None
    data: dict | Callable | None = None
    also: list[Check] = field(default_factory=list)
    ok_statuses: frozenset[int] = frozenset()
    note: str = ""

    def checks(self) -> list[Check]:
        return [Check(self.method, self.allowed, self.data, self.ok_statuses), *self.also]


# Left out on purpose.
IGNORED_NAMESPACES = {
    "admin": "Django's admin site: staff only, and only in a session signed in through allauth with a second "
    "factor (accounts/admin_site.py, tests/accounts/test_admin_site.py).",
}
IGNORED_URLCONFS = {
    "allauth.urls": "allauth's own pages (/accounts/: sign-in, sign-up, codes, TOTP, providers) are for anyone "
    "by design; their flows are tested in tests/accounts/test_auth_flows.py, test_mfa_required.py and "
    "test_social_login.py.",
}
IGNORED_VIEW_MODULES = {"django.contrib.staticfiles": "static files (served so only with DEBUG) are public."}
IGNORED_NAMES = {
    "api-schema": "the OpenAPI schema (drf-spectacular; SERVE_PERMISSIONS: signed-in) describes, holds no data.",
    "api-docs": "the Swagger UI page that renders the schema.",
}


def _pk(attribute: str):
    return lambda world: {"pk": getattr(world, attribute).pk}


def _fresh(method: str, *args):
    return lambda world: {"pk": getattr(world, method)(*args).pk}


ROUTES = [
    # hematovision
    Route(
        "home",
        ROLES | {ANONYMOUS},
        note="Visitors see what HematoVision is; each role is sent to its work; pending people to the pending page.",
    ),
    Route("guide", EVERYONE, note="The guide for each role: no data, open to visitors deciding to sign up."),
    Route("healthz", EVERYONE, note="Liveness probe."),
    Route("readyz", EVERYONE, ok_statuses=frozenset({503}), note="Readiness probe; 503 reports a dependency."),
    Route(
        "set_language",
        EVERYONE,
        method="post",
        data={"language": "es", "next": "/healthz"},
        note="The language switcher (django.views.i18n.set_language): anyone, signed in or not, on every page.",
    ),
    Route("javascript-catalog", EVERYONE, note="Translations of the scripts' strings: no data, every page loads it."),
    # accounts
    Route("accounts:pending", SIGNED_IN, note="People with a role are redirected home from it."),
    Route("accounts:people", roles_with("manage_users")),
    Route(
        "accounts:approve",
        roles_with("manage_users"),
        method="post",
        kwargs=_fresh("fresh_user", None),
        data={"role": Role.TECHNICIAN},
    ),
    Route(
        "accounts:change_role",
        roles_with("manage_users"),
        method="post",
        kwargs=_fresh("fresh_user", Role.TECHNICIAN),
        data={"role": Role.PATHOLOGIST},
    ),
    Route(
        "accounts:deactivate",
        roles_with("manage_users"),
        kwargs=_fresh("fresh_user", Role.TECHNICIAN),
        also=[Check("post", roles_with("manage_users"), data={"confirm": "yes"})],
        note="GET asks first; the POST deactivates.",
    ),
    Route(
        "notifications:inbox", SIGNED_IN, note="Each person's own notifications; pending people are told of approval."
    ),
    Route("notifications:mark_read", SIGNED_IN, method="post", data={}),
    Route("api-me", SIGNED_IN, note="Describes the caller only; tells a pending client it has no role."),
    Route(
        "api-token",
        EVERYONE,
        method="post",
        data=lambda world: world.token_credentials(),
        note="The API's sign-in: open to all, it checks the credentials sent, not the caller's session.",
    ),
    # cases: pages
    Route("cases:list", roles_with("view_cases")),
    Route(
        "cases:create",
        roles_with("create_case"),
        also=[Check("post", roles_with("create_case"), data=lambda world: {"accession_id": world.new_accession()})],
    ),
    Route("cases:detail", roles_with("view_cases"), kwargs=_pk("case")),
    Route("cases:cells", roles_with("view_cases"), kwargs=_pk("case")),
    Route("cases:cards", roles_with("view_cases"), kwargs=_pk("case")),
    Route("cases:events", roles_with("view_cases"), kwargs=_pk("case")),
    Route("cases:upload", roles_with("create_case"), method="post", kwargs=_pk("case"), data=lambda w: w.upload()),
    Route("cases:image", roles_with("view_cases"), kwargs=_pk("image")),
    Route("cases:retry", roles_with("retry_classification"), method="post", kwargs=_fresh("fresh_failed_image")),
    Route("cases:review", roles_with("review_cells"), kwargs=_pk("case")),
    Route(
        "cases:review_submit",
        roles_with("review_cells"),
        method="post",
        kwargs=_pk("case"),
        data=lambda world: {"confirm_cell": str(world.image.pk)},
    ),
    Route(
        "cases:review_confirm_unreviewed",
        roles_with("review_cells"),
        kwargs=_fresh("fresh_reviewed_case"),
        also=[Check("post", roles_with("review_cells"), data={"confirm": "yes"})],
    ),
    Route(
        "cases:review_sign",
        roles_with("sign_case"),
        kwargs=_fresh("fresh_reviewed_case"),
        also=[Check("post", roles_with("sign_case"), data={"password": DEFAULT_PASSWORD})],
        note="Signing asks for the password (or a TOTP code) again.",
    ),
    Route(
        "cases:review_amend",
        roles_with("sign_case"),
        method="post",
        kwargs=_pk("signed_case"),
        data=lambda world: world.amendment(),
    ),
    Route("cases:differential", roles_with("view_cases", "review_cells"), kwargs=_pk("case")),
    Route("cases:report", roles_with("view_cases", "review_cells"), kwargs=_pk("case")),
    Route("cases:report_pdf", roles_with("view_cases", "review_cells"), kwargs=_pk("case")),
    Route("cases:report_fhir", roles_with("view_cases", "review_cells"), kwargs=_pk("case")),
    Route(
        "cases:report_comment",
        roles_with("review_cells"),
        method="post",
        kwargs=_pk("case"),
        data={"text": "route matrix comment"},
    ),
    Route(
        "cases:laboratories",
        roles_with("manage_laboratories"),
        also=[
            Check(
                "post", roles_with("manage_laboratories"), data=lambda world: {"name": f"Lab {world.new_accession()}"}
            )
        ],
    ),
    Route(
        "cases:laboratory_edit",
        roles_with("manage_laboratories"),
        kwargs=_fresh("fresh_laboratory"),
        also=[
            Check(
                "post", roles_with("manage_laboratories"), data=lambda world: {"name": f"Lab {world.new_accession()}"}
            )
        ],
    ),
    Route(
        "cases:review_gradcam",
        roles_with("view_cases", "review_cells"),
        kwargs=_pk("image"),
        ok_statuses=frozenset({409}),
        note="409: the fixture's model version has no Keras file, so there is no heat map; access was granted.",
    ),
    # cases: API
    Route(
        "api-case-list",
        roles_with("view_cases"),
        also=[Check("post", roles_with("create_case"), data=lambda world: {"accession_id": world.new_accession()})],
    ),
    Route("api-case-detail", roles_with("view_cases"), kwargs=_pk("case")),
    Route(
        "api-case-images",
        roles_with("view_cases"),
        kwargs=_pk("case"),
        also=[Check("post", roles_with("create_case"), data=lambda world: world.upload())],
    ),
    Route("api-image-detail", roles_with("view_cases"), kwargs=_pk("image")),
    Route("api-laboratory-list", roles_with("view_cases", "create_case", "manage_laboratories")),
    Route(
        "api-case-reviews",
        roles_with("view_cases", "review_cells"),
        kwargs=_pk("case"),
        also=[Check("post", roles_with("review_cells"), data=lambda world: {"cells": [world.image.pk]})],
    ),
    Route(
        "api-case-sign",
        roles_with("sign_case"),
        method="post",
        kwargs=_fresh("fresh_reviewed_case"),
        data={"password": DEFAULT_PASSWORD},
    ),
    Route(
        "api-case-amendments",
        roles_with("sign_case"),
        method="post",
        kwargs=_pk("signed_case"),
        data=lambda world: world.amendment(),
    ),
    Route("api-case-differential", roles_with("view_cases", "review_cells"), kwargs=_pk("case")),
    Route("api-case-fhir", roles_with("view_cases", "review_cells"), kwargs=_pk("case")),
    Route("api-image-retry", roles_with("retry_classification"), method="post", kwargs=_fresh("fresh_failed_image")),
    # inference (model registry)
    Route("inference:list", roles_with("manage_models")),
    Route("inference:import", roles_with("manage_models")),
    Route("inference:activate", roles_with("manage_models"), method="post", kwargs=_fresh("fresh_model_version")),
    Route(
        "api-model-versions",
        roles_with("manage_models", "view_dashboard"),
        also=[Check("post", roles_with("manage_models"), data={}, ok_statuses=frozenset({400}))],
        note="POST imports a model file; the empty POST gets past the permission check and fails validation (400).",
    ),
    Route(
        "api-model-version-detail", roles_with("manage_models", "view_dashboard"), kwargs=_fresh("fresh_model_version")
    ),
    Route(
        "api-model-version-activate",
        roles_with("manage_models"),
        method="post",
        kwargs=_fresh("fresh_model_version"),
        ok_statuses=frozenset({409}),
        note="409: a fresh version has no recorded evaluation, so the gate refuses it; access was granted.",
    ),
    Route(
        "inference:compare", roles_with("manage_laboratories", "manage_models"), kwargs=_fresh("fresh_model_version")
    ),
    Route("inference:rollback", roles_with("manage_models"), method="post"),
    Route(
        "inference:shadow_start",
        roles_with("manage_models"),
        method="post",
        kwargs=_fresh("fresh_model_version"),
        note="A fresh version has no recorded evaluation: the refusal redirects to the models page; access granted.",
    ),
    Route("inference:shadow_stop", roles_with("manage_models"), method="post"),
    Route(
        "inference:adapt",
        roles_with("manage_laboratories"),
        also=[Check("post", roles_with("manage_laboratories"), data={}, ok_statuses=frozenset({400}))],
        note="POST starts an adaptation; the empty POST gets past the permission check and fails validation (400).",
    ),
    Route("inference:adaptation", roles_with("manage_laboratories"), kwargs=_fresh("fresh_adaptation_job")),
    Route(
        "inference:adaptation_cancel",
        roles_with("manage_laboratories"),
        method="post",
        kwargs=_fresh("fresh_adaptation_job"),
    ),
    Route("api-model-import-detail", roles_with("manage_models"), kwargs=_fresh("fresh_model_import")),
    # reports
    Route("reports:dashboard", roles_with("view_dashboard")),
    Route("reports:dashboard_csv", roles_with("view_dashboard")),
    Route(
        "reports:exports",
        roles_with("export_data"),
        also=[Check("post", roles_with("export_data"), data={"start": ""})],
    ),
    Route("reports:audit", roles_with("view_audit")),
    Route("reports:audit_csv", roles_with("view_audit")),
    Route("reports:errors", roles_with("view_errors")),
    Route("api-report-metrics", roles_with("view_dashboard")),
    Route("api-export-cells", roles_with("export_data")),
    Route("api-audit-events", roles_with("view_audit")),
]
