"""A cell's thumbnail is served from the one stored at upload: decrypted, never decoded, and kept by the
user's own browser (private, max-age) so the grid, the gallery and the report do not ask again."""

import io
from unittest import mock

import pytest
from django.http import HttpResponse
from django.test import RequestFactory
from django.urls import reverse
from PIL import Image

from cases import services, storage, views
from hematovision.security_headers import SecurityHeadersMiddleware
from tests.cases import images
from tests.factories import CaseFactory, CellImageFactory


@pytest.fixture
def uploaded(technician):
    picture = Image.new("RGB", (300, 200), (180, 90, 160))
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    (image,), _ = services.add_images(
        case=CaseFactory(created_by=technician),
        files=[images.upload("cell.png", buffer.getvalue())],
        uploaded_by=technician,
    )
    return image


def test_a_thumbnail_request_never_decodes_an_image(client, technician, uploaded):
    client.force_login(technician)
    url = reverse("cases:image", args=[uploaded.pk])
    client.get(url, {"variant": "thumb"})  # session and user warm

    with mock.patch("PIL.Image.open", side_effect=AssertionError("decoded on request")) as image_open:
        response = client.get(url, {"variant": "thumb"})

    assert response.status_code == 200
    image_open.assert_not_called()
    assert response.content == storage.load(uploaded.thumbnail_key)
    assert response["Content-Type"] == "image/jpeg"


def test_a_stored_thumbnail_may_be_kept_by_the_users_browser_only(client, technician, uploaded):
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[uploaded.pk]), {"variant": "thumb"})

    directives = {part.strip() for part in response["Cache-Control"].split(",")}
    assert directives == {"private", f"max-age={views.THUMBNAIL_MAX_AGE_SECONDS}"}


def test_the_full_image_is_still_never_cached(client, technician, uploaded):
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[uploaded.pk]))

    assert response["Cache-Control"] == "private, no-store"


def test_a_thumbnail_made_on_request_for_an_old_image_is_not_cached(client, technician):
    buffer = io.BytesIO()
    Image.new("RGB", (40, 40), "pink").save(buffer, format="PNG")
    old = CellImageFactory(case=CaseFactory(), storage_key=storage.save(buffer.getvalue()), thumbnail_key="")
    client.force_login(technician)

    response = client.get(reverse("cases:image", args=[old.pk]), {"variant": "thumb"})

    assert response.status_code == 200
    assert response["Cache-Control"] == "private, no-store"


@pytest.mark.parametrize(
    ("set_by_view", "kept"),
    [("private, max-age=600", True), ("public, max-age=3600", True), ("private", False), ("max-age=600", False)],
)
def test_only_explicitly_cacheable_answers_escape_no_store(set_by_view, kept):
    def view(request):
        response = HttpResponse("x", content_type="image/jpeg")
        response["Cache-Control"] = set_by_view
        return response

    response = SecurityHeadersMiddleware(view)(RequestFactory().get("/"))

    assert ("no-store" not in response["Cache-Control"]) == kept
