"""The changed cards (cases:cards) are rendered without the page's context processors: no unread-notification
count or other page-wide query on each refresh, and the retry buttons still carry their CSRF token."""

import re

import pytest
from django.urls import reverse

from cases.models import CellImage
from tests.factories import CaseFactory, CellImageFactory

pytestmark = pytest.mark.django_db


def test_a_cards_refresh_asks_nothing_for_the_page_around_the_cards(client, technician, django_assert_max_num_queries):
    case = CaseFactory(created_by=technician)
    images = [CellImageFactory(case=case) for _ in range(3)]
    client.force_login(technician)
    url = reverse("cases:cards", args=[case.pk])
    client.get(url, {"ids": str(images[0].pk)})

    with django_assert_max_num_queries(20) as queries:
        response = client.get(url, {"ids": ",".join(str(image.pk) for image in images)})

    assert response.status_code == 200
    assert not [q["sql"] for q in queries.captured_queries if "notifications_notification" in q["sql"]]
    assert all(f'data-cell-col="{image.pk}"' in response.content.decode() for image in images)


def test_a_failed_cells_retry_button_carries_a_csrf_token(client, technician):
    case = CaseFactory(created_by=technician)
    failed = CellImageFactory(case=case, status=CellImage.Status.FAILED, status_message="broken")
    client.force_login(technician)

    response = client.get(reverse("cases:cards", args=[case.pk]), {"ids": str(failed.pk)})

    html = response.content.decode()
    assert 'data-testid="cell-retry"' in html
    token = re.search(r'name="csrfmiddlewaretoken" value="([^"]+)"', html)
    assert token and len(token.group(1)) >= 32
