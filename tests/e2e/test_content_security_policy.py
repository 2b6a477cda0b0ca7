"""Under the Content-Security-Policy the pages still work in a real browser: nothing is refused (no CSP
violation in the console, no script error), and the Swagger UI of the API docs renders."""

import pytest

from cases import storage
from cases.models import Case
from tests.cases.images import cell_png
from tests.e2e.conftest import sign_in
from tests.factories import DEFAULT_PASSWORD, CaseFactory, CellImageFactory, ModelVersionFactory, PredictionFactory

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]


def watch(page) -> list[str]:
    problems: list[str] = []
    page.on(
        "console",
        lambda message: (
            problems.append(f"console {message.type}: {message.text}")
            if "Content Security Policy" in message.text
            # Failed loads are checked by status below (the browser's own /favicon.ico request is not a page's).
            or (message.type == "error" and not message.text.startswith("Failed to load resource"))
            else None
        ),
    )
    page.on("pageerror", lambda error: problems.append(f"page error: {error}"))
    page.on(
        "response",
        lambda response: problems.append(f"{response.status} {response.url}") if response.status >= 400 else None,
    )
    return problems


def test_pages_and_the_api_docs_run_under_the_policy(live_server, page, technician, pathologist):
    case = CaseFactory(created_by=technician, status=Case.Status.AWAITING_REVIEW)
    version = ModelVersionFactory(is_active=True)
    for n in range(2):
        data = cell_png(n, seed=n)
        image = CellImageFactory(case=case, storage_key=storage.save(data), thumbnail_key=storage.save(data))
        PredictionFactory(image=image, model_version=version, label="neutrophil")
    problems = watch(page)
    sign_in(page, live_server, pathologist.email, DEFAULT_PASSWORD)

    for path in ("/cases/", f"/cases/{case.pk}/", f"/cases/{case.pk}/review/", f"/cases/{case.pk}/differential/"):
        response = page.goto(f"{live_server.url}{path}")
        assert response.status == 200, path
        assert "script-src 'self'" in response.headers["content-security-policy"]
        page.wait_for_load_state("networkidle")

    page.goto(f"{live_server.url}/api/docs/")
    page.locator(".swagger-ui .info .title").wait_for(timeout=30_000)
    assert "HematoVision API" in page.locator(".swagger-ui .info .title").inner_text()

    assert not problems, "\n".join(problems)
