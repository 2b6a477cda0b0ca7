"""The people page: approve pending users, change roles, deactivate; who may do what."""

import pytest
from django.urls import reverse

from accounts.models import ApiToken, User
from accounts.roles import Role
from accounts.selectors import list_people
from accounts.services import UserManagementError, approve_user, change_role, create_api_token, deactivate_user
from audit.models import AuditEvent


@pytest.mark.django_db
def test_people_page_lists_pending_users_first(client, supervisor, technician, make_user):
    pending = make_user(None, email="zz.pending@lab.example")
    client.force_login(supervisor)

    response = client.get(reverse("accounts:people"))

    assert response.status_code == 200
    assert list(response.context["people"])[0] == pending


@pytest.mark.django_db
def test_deactivated_users_are_listed_last(supervisor, technician, make_user):
    gone = make_user(Role.PATHOLOGIST, email="aa.gone@lab.example")
    deactivate_user(actor=supervisor, user=gone)

    assert list(list_people())[-1] == gone


@pytest.mark.django_db
def test_people_page_is_refused_to_a_technician(client, technician):
    client.force_login(technician)

    assert client.get(reverse("accounts:people")).status_code == 403


@pytest.mark.django_db
def test_approving_gives_the_role_and_records_who_approved(client, supervisor, pending_user):
    client.force_login(supervisor)

    client.post(reverse("accounts:approve", args=[pending_user.pk]), {"role": Role.PATHOLOGIST})

    pending_user.refresh_from_db()
    assert pending_user.role == Role.PATHOLOGIST
    assert pending_user.approved_by == supervisor
    assert pending_user.approved_at is not None


@pytest.mark.django_db
def test_approval_is_audited(supervisor, pending_user):
    approve_user(actor=supervisor, user=pending_user, role=Role.TECHNICIAN)

    event = AuditEvent.objects.get(action=AuditEvent.Action.USER_APPROVED)
    assert (event.actor, event.object_id, event.details["role"]) == (supervisor, str(pending_user.pk), "technician")


@pytest.mark.django_db
def test_approved_user_reaches_clinical_pages_instead_of_the_pending_page(client, supervisor, pending_user):
    approve_user(actor=supervisor, user=pending_user, role=Role.RESEARCHER)
    client.force_login(pending_user)

    assert client.get(reverse("accounts:pending"))["Location"] == reverse("home")


@pytest.mark.django_db
def test_role_change_is_audited_with_old_and_new_role(supervisor, technician):
    change_role(actor=supervisor, user=technician, role=Role.PATHOLOGIST)

    event = AuditEvent.objects.get(action=AuditEvent.Action.ROLE_CHANGED)
    assert (event.details["from"], event.details["to"]) == ("technician", "pathologist")
    assert User.objects.get(pk=technician.pk).role == Role.PATHOLOGIST


@pytest.mark.django_db
def test_role_change_through_the_page_shows_success(client, supervisor, technician):
    client.force_login(supervisor)

    response = client.post(
        reverse("accounts:change_role", args=[technician.pk]), {"role": Role.RESEARCHER}, follow=True
    )

    assert f"{technician.email} has a new role." in response.content.decode()
    assert User.objects.get(pk=technician.pk).role == Role.RESEARCHER


@pytest.mark.django_db
def test_supervisor_cannot_grant_the_admin_role(supervisor, pending_user):
    with pytest.raises(UserManagementError, match="Only an administrator"):
        approve_user(actor=supervisor, user=pending_user, role=Role.ADMIN)

    assert User.objects.get(pk=pending_user.pk).role is None


@pytest.mark.django_db
def test_supervisor_cannot_change_an_admins_role(supervisor, admin_user):
    with pytest.raises(UserManagementError, match="Only an administrator"):
        change_role(actor=supervisor, user=admin_user, role=Role.TECHNICIAN)


@pytest.mark.django_db
def test_supervisor_cannot_deactivate_an_admin(supervisor, admin_user):
    with pytest.raises(UserManagementError, match="Only an administrator"):
        deactivate_user(actor=supervisor, user=admin_user)


@pytest.mark.django_db
def test_admin_can_grant_the_admin_role(admin_user, technician):
    change_role(actor=admin_user, user=technician, role=Role.ADMIN)

    assert User.objects.get(pk=technician.pk).role == Role.ADMIN


@pytest.mark.django_db
def test_supervisor_is_not_offered_the_admin_role(client, supervisor):
    client.force_login(supervisor)

    choices = dict(client.get(reverse("accounts:people")).context["role_form"].fields["role"].choices)

    assert Role.ADMIN not in choices
    assert Role.TECHNICIAN in choices


@pytest.mark.django_db
def test_admin_role_posted_by_a_supervisor_is_refused_with_a_message(client, supervisor, pending_user):
    client.force_login(supervisor)

    response = client.post(reverse("accounts:approve", args=[pending_user.pk]), {"role": Role.ADMIN}, follow=True)

    assert "Choose one of the roles offered to you." in response.content.decode()
    assert User.objects.get(pk=pending_user.pk).role is None


@pytest.mark.django_db
def test_nobody_can_change_their_own_role(admin_user):
    with pytest.raises(UserManagementError, match="your own"):
        change_role(actor=admin_user, user=admin_user, role=Role.TECHNICIAN)


@pytest.mark.django_db
def test_nobody_can_deactivate_themselves(supervisor):
    with pytest.raises(UserManagementError, match="your own"):
        deactivate_user(actor=supervisor, user=supervisor)


@pytest.mark.django_db
def test_unknown_role_is_refused_by_name(admin_user, pending_user):
    with pytest.raises(UserManagementError, match="“janitor” is not a role"):
        approve_user(actor=admin_user, user=pending_user, role="janitor")


@pytest.mark.django_db
def test_approving_someone_who_already_has_a_role_is_refused(supervisor, technician):
    with pytest.raises(UserManagementError, match="already has the technician role"):
        approve_user(actor=supervisor, user=technician, role=Role.PATHOLOGIST)


@pytest.mark.django_db
def test_deactivation_signs_the_user_out_and_revokes_their_token(client, supervisor, technician):
    create_api_token(user=technician, second_factor=False)
    client.force_login(technician)

    deactivate_user(actor=supervisor, user=technician)

    assert client.get(reverse("accounts:pending"))["Location"].startswith(reverse("account_login"))
    assert not ApiToken.objects.filter(user=technician).exists()


@pytest.mark.django_db
def test_deactivation_is_audited(supervisor, technician):
    deactivate_user(actor=supervisor, user=technician)

    event = AuditEvent.objects.get(action=AuditEvent.Action.ROLE_CHANGED)
    assert event.details == {"email": technician.email, "from": "technician", "to": None, "deactivated": True}


@pytest.mark.django_db
def test_deactivated_user_can_be_approved_again(supervisor, technician):
    deactivate_user(actor=supervisor, user=technician)

    approve_user(actor=supervisor, user=User.objects.get(pk=technician.pk), role=Role.TECHNICIAN)

    user = User.objects.get(pk=technician.pk)
    assert user.is_active and user.role == Role.TECHNICIAN


@pytest.mark.django_db
def test_people_actions_refuse_get(client, supervisor, pending_user):
    client.force_login(supervisor)

    assert client.get(reverse("accounts:approve", args=[pending_user.pk])).status_code == 405


@pytest.mark.django_db
def test_supervisor_cannot_reapprove_someone_an_admin_deactivated(supervisor, admin_user, technician):
    deactivate_user(actor=admin_user, user=technician)

    with pytest.raises(UserManagementError, match="deactivated by an administrator"):
        approve_user(actor=supervisor, user=User.objects.get(pk=technician.pk), role=Role.TECHNICIAN)

    assert not User.objects.get(pk=technician.pk).is_active


@pytest.mark.django_db
def test_supervisor_cannot_reapprove_a_deactivated_admin(supervisor, admin_user, make_user):
    other_admin = make_user(Role.ADMIN, mfa=True)
    deactivate_user(actor=admin_user, user=other_admin)

    with pytest.raises(UserManagementError):
        approve_user(actor=supervisor, user=User.objects.get(pk=other_admin.pk), role=Role.TECHNICIAN)


@pytest.mark.django_db
def test_supervisor_cannot_reapprove_an_account_deactivated_outside_the_people_page(supervisor, technician):
    User.objects.filter(pk=technician.pk).update(is_active=False)  # e.g. unticked in Django's admin

    with pytest.raises(UserManagementError, match="only an administrator"):
        approve_user(actor=supervisor, user=User.objects.get(pk=technician.pk), role=Role.TECHNICIAN)


@pytest.mark.django_db
def test_the_people_page_refuses_a_supervisors_reapproval_with_a_message(client, supervisor, admin_user, technician):
    deactivate_user(actor=admin_user, user=technician)
    client.force_login(supervisor)

    response = client.post(reverse("accounts:approve", args=[technician.pk]), {"role": Role.TECHNICIAN}, follow=True)

    assert "only an administrator" in response.content.decode()
    assert not User.objects.get(pk=technician.pk).is_active


@pytest.mark.django_db
def test_admin_can_reapprove_what_an_admin_deactivated(admin_user, technician):
    deactivate_user(actor=admin_user, user=technician)

    approve_user(actor=admin_user, user=User.objects.get(pk=technician.pk), role=Role.TECHNICIAN)

    user = User.objects.get(pk=technician.pk)
    assert user.is_active and user.deactivated_by is None and not user.deactivated_by_admin
