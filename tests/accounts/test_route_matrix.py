"""Role x route matrix: every named URL of the project, requested as every persona.

The expectations live in tests/accounts/route_expectations.py (how to add a row is at its top).
"""

from __future__ import annotations

import itertools
from io import BytesIO

import pytest
from django.contrib.auth.models import AnonymousUser
from django.core.files import File
from django.core.files.uploadedfile import SimpleUploadedFile
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from PIL import Image

from accounts.roles import Role
from cases import storage
from cases.models import Case, CellImage, Review
from inference.models import AdaptationJob, ModelImport
from tests.accounts.route_expectations import (
    ANONYMOUS,
    IGNORED_NAMES,
    IGNORED_NAMESPACES,
    IGNORED_URLCONFS,
    IGNORED_VIEW_MODULES,
    PENDING,
    PERSONAS,
    ROUTES,
    Route,
)
from tests.factories import (
    DEFAULT_PASSWORD,
    CaseFactory,
    CellImageFactory,
    LaboratoryFactory,
    ModelVersionFactory,
    PredictionFactory,
)

ROUTES_BY_NAME = {route.name: route for route in ROUTES}


def _view_module(pattern: URLPattern) -> str:
    callback = pattern.callback
    view = getattr(callback, "view_class", None) or getattr(callback, "cls", None) or callback
    return getattr(view, "__module__", "") or ""


def _urlconf_module(resolver: URLResolver) -> str | None:
    urlconf = resolver.urlconf_name
    return urlconf if isinstance(urlconf, str) else getattr(urlconf, "__name__", None)


def project_url_names() -> tuple[set[str], list[str]]:
    """(named URLs that need a row, patterns without a name) over the whole URLconf, minus the ignored."""
    names, unnamed = set(), []

    def walk(resolver: URLResolver, namespace: str, prefix: str) -> None:
        for pattern in resolver.url_patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace in IGNORED_NAMESPACES or _urlconf_module(pattern) in IGNORED_URLCONFS:
                    continue
                inner = ":".join(filter(None, [namespace, pattern.namespace]))
                walk(pattern, inner, prefix + str(pattern.pattern))
                continue
            if _view_module(pattern).startswith(tuple(IGNORED_VIEW_MODULES)):
                continue
            if pattern.name is None:
                unnamed.append(prefix + str(pattern.pattern))
                continue
            name = f"{namespace}:{pattern.name}" if namespace else pattern.name
            if name not in IGNORED_NAMES:
                names.add(name)

    walk(get_resolver(), "", "/")
    return names, unnamed


def test_every_project_url_has_a_row():
    names, _ = project_url_names()

    missing = sorted(names - ROUTES_BY_NAME.keys())

    assert not missing, (
        "URL names without a row in tests/accounts/route_expectations.py (add one; see the top of that file): "
        + ", ".join(missing)
    )


def test_every_row_names_an_existing_url():
    names, _ = project_url_names()

    assert not sorted(ROUTES_BY_NAME.keys() - names), "rows for URLs that no longer exist (remove them)"


def test_every_project_url_has_a_name():
    _, unnamed = project_url_names()

    assert not unnamed, f"name these URL patterns so the matrix can list them: {unnamed}"


def test_no_route_name_is_listed_twice():
    assert len(ROUTES_BY_NAME) == len(ROUTES)


class World:
    """The objects the routes act on. Shared ones are created once per test; `fresh_*` ones per request,
    so that one persona's POST never changes what the next persona sees."""

    def __init__(self, make_user):
        self.make_user = make_user
        self.counter = itertools.count(1)
        self.technician = make_user(Role.TECHNICIAN)
        self.pathologist = make_user(Role.PATHOLOGIST)
        self.case = self.fresh_case()
        self.image = self._stored_image(case=self.case)
        # Cells are added before signing: the database refuses new cells in a signed case.
        self.signed_case = self.fresh_case()
        self.signed_image = self._stored_image(case=self.signed_case)
        Case.objects.filter(pk=self.signed_case.pk).update(status=Case.Status.SIGNED, signed_by=self.pathologist)
        self.signed_case.refresh_from_db()

    def fresh_user(self, role):
        return self.make_user(role)

    def fresh_case(self, **fields):
        fields.setdefault("status", Case.Status.AWAITING_REVIEW)
        return CaseFactory(created_by=self.technician, **fields)

    def fresh_reviewed_case(self):
        """Every cell has a final label, so the case can be signed."""
        case = self.fresh_case()
        image = self._stored_image(case=case)
        Review.objects.create(
            image=image,
            reviewer=self.pathologist,
            kind=Review.Kind.CONFIRM,
            from_label="neutrophil",
            to_label="neutrophil",
        )
        return case

    def fresh_laboratory(self):
        return LaboratoryFactory()

    def fresh_model_version(self):
        return ModelVersionFactory()

    def fresh_model_import(self):
        return ModelImport.objects.create(original_name="model.h5", stored_file="uploads/absent.h5")

    def fresh_adaptation_job(self):
        return AdaptationJob.objects.create(name=f"adapt-{self.new_accession()}", source_label="all laboratories")

    def fresh_failed_image(self):
        return CellImageFactory(case=self.case, status=CellImage.Status.FAILED, status_message="worker lost")

    def _stored_image(self, *, case):
        key = storage.save(self.png_bytes())
        image = CellImageFactory(case=case, storage_key=key, uploaded_by=self.technician)
        PredictionFactory(image=image, label="neutrophil")
        return image

    def new_accession(self) -> str:
        return f"MATRIX-{next(self.counter):04d}"

    def token_credentials(self) -> dict:
        user = self.make_user(Role.TECHNICIAN)
        return {"email": user.email, "password": DEFAULT_PASSWORD}

    def amendment(self) -> dict:
        return {"cells": [str(self.signed_image.pk)], "to_label": "lymphocyte", "reason": "route matrix"}

    def upload(self) -> dict:
        return {"files": [SimpleUploadedFile("cell.png", self.png_bytes(), content_type="image/png")]}

    @staticmethod
    def png_bytes() -> bytes:
        buffer = BytesIO()
        Image.new("RGB", (64, 64), (180, 60, 120)).save(buffer, format="PNG")
        return buffer.getvalue()


@pytest.fixture
def personas(make_user, supervisor, admin_user):
    """A signed-in client per persona (supervisor and admin with TOTP, as the MFA middleware requires)."""
    users = {
        ANONYMOUS: AnonymousUser(),
        PENDING: make_user(None),
        Role.TECHNICIAN.value: make_user(Role.TECHNICIAN),
        Role.PATHOLOGIST.value: make_user(Role.PATHOLOGIST),
        Role.SUPERVISOR.value: supervisor,
        Role.RESEARCHER.value: make_user(Role.RESEARCHER),
        Role.ADMIN.value: admin_user,
    }
    clients = {}
    for persona, user in users.items():
        client = Client()
        if user.is_authenticated:
            client.force_login(user)
        clients[persona] = client
    return clients


def outcome(response, ok_statuses) -> str:
    """'allowed' or 'denied', with what was seen, for the report."""
    status = response.status_code
    if status in (301, 302, 303, 307, 308):
        location = response["Location"].split("?")[0]
        denied_targets = {reverse("account_login"), reverse("accounts:pending"), reverse("mfa_activate_totp")}
        return ("denied" if location in denied_targets else "allowed", f"{status} -> {location}")
    if status < 400 or status in ok_statuses:
        return "allowed", str(status)
    if status in (401, 403, 404, 405):
        return "denied", str(status)
    return "error", str(status)


def request_as(client, route: Route, method: str, data, world):
    url = reverse(route.name, kwargs=route.kwargs(world) if route.kwargs else None)
    if callable(data):
        data = data(world)
    if method == "get":
        return client.get(url)
    if route.name.startswith("api-") and data and not _has_files(data):
        return client.post(url, data or {}, content_type="application/json")
    return client.post(url, data or {})


def _has_files(data) -> bool:
    values = itertools.chain.from_iterable(v if isinstance(v, list) else [v] for v in (data or {}).values())
    return any(isinstance(value, File) for value in values)


@pytest.mark.django_db
@pytest.mark.parametrize("route", ROUTES, ids=[route.name for route in ROUTES])
def test_route_allows_exactly_the_expected_personas(route, personas, make_user):
    world = World(make_user)
    mismatches = []
    for check in route.checks():
        for persona in PERSONAS:
            response = request_as(personas[persona], route, check.method, check.data, world)
            verdict, seen = outcome(response, check.ok_statuses)
            expected = "allowed" if persona in check.allowed else "denied"
            if verdict != expected:
                mismatches.append(f"{check.method.upper()} as {persona}: expected {expected}, got {verdict} ({seen})")

    assert not mismatches, f"{route.name}:\n  " + "\n  ".join(mismatches)
