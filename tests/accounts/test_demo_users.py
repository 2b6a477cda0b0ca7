from io import StringIO

import pytest
from allauth.account.models import EmailAddress
from django.core.management import CommandError, call_command

from accounts.demo import DEMO_ACCOUNTS, demo_email, demo_password
from accounts.models import User
from accounts.roles import Role


@pytest.mark.django_db
def test_creates_one_verified_user_per_role(settings):
    settings.DEMO_MODE = True

    call_command("create_demo_users", stdout=StringIO())

    for role in Role:
        user = User.objects.get(email=demo_email(role))
        assert user.role == role
        assert user.check_password(demo_password(role))
        assert EmailAddress.objects.get(user=user).verified


@pytest.mark.django_db
def test_prints_every_login(settings, capsys):
    settings.DEMO_MODE = True

    call_command("create_demo_users")

    output = capsys.readouterr().out
    for _, email, password in DEMO_ACCOUNTS:
        assert email in output and password in output


@pytest.mark.django_db
def test_running_twice_resets_passwords_without_duplicates(settings):
    settings.DEMO_MODE = True
    call_command("create_demo_users", stdout=StringIO())
    technician = User.objects.get(email=demo_email(Role.TECHNICIAN))
    technician.set_password("changed-by-someone")
    technician.save()

    call_command("create_demo_users", stdout=StringIO())

    assert User.objects.filter(email__endswith="@demo.hematovision.local").count() == len(Role)
    assert User.objects.get(email=demo_email(Role.TECHNICIAN)).check_password(demo_password(Role.TECHNICIAN))


@pytest.mark.django_db
def test_refuses_outside_demo_mode(settings):
    settings.DEMO_MODE = False

    with pytest.raises(CommandError, match="only for the embedded default"):
        call_command("create_demo_users")

    assert not User.objects.exists()
