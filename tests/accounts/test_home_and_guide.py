"""The home page explains HematoVision to visitors; signed-in people go to their work; the guide, by role."""

import pytest
from django.urls import reverse

from accounts.roles import Role


@pytest.mark.django_db
def test_visitors_see_what_the_product_is_with_sign_in_and_sign_up(client):
    response = client.get(reverse("home"))

    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="home-visitor"' in page
    assert "not certified as a medical device" in page
    assert reverse("account_login") in page and reverse("account_signup") in page
    assert reverse("guide") in page


@pytest.mark.django_db
def test_visitors_are_not_offered_sign_up_when_it_is_closed(client, settings):
    settings.ACCOUNT_ALLOW_SIGNUP = False

    page = client.get(reverse("home")).content.decode()

    assert 'data-testid="home-sign-up"' not in page and 'data-testid="home-sign-in"' in page


@pytest.mark.django_db
def test_signed_in_people_still_go_to_their_work(client, technician, researcher, pending_user):
    for user, target in [
        (technician, reverse("cases:list")),
        (researcher, reverse("reports:exports")),
        (pending_user, reverse("accounts:pending")),
    ]:
        client.force_login(user)
        assert client.get(reverse("home"))["Location"] == target


@pytest.mark.django_db
def test_a_signed_in_person_without_pages_of_their_own_gets_the_guide(client, technician, monkeypatch):
    # No role lacks pages today; a role added without any would land on the guide, not on an empty page.
    monkeypatch.setattr("hematovision.views.has_capability", lambda user, capability: False)
    client.force_login(technician)

    assert client.get(reverse("home"))["Location"] == reverse("guide")


@pytest.mark.django_db
def test_the_guide_has_one_section_per_role_with_the_readers_own_first(client, pathologist):
    client.force_login(pathologist)

    page = client.get(reverse("guide")).content.decode()

    order = [page.index(f'data-role="{role.value}"') for role in Role]
    assert len(set(order)) == len(Role)
    assert min(order) == page.index(f'data-role="{Role.PATHOLOGIST.value}"')
    assert "Reviewer-only labels" in page
    assert 'data-testid="nav-guide"' in page


@pytest.mark.django_db
def test_visitors_can_read_the_guide_in_the_roles_order(client):
    page = client.get(reverse("guide")).content.decode()

    order = [page.index(f'data-role="{role.value}"') for role in Role]
    assert order == sorted(order)
