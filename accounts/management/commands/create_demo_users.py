from allauth.account.models import EmailAddress
from django.conf import settings
from django.core.management.base import BaseCommand, CommandError
from django.db import transaction
from django.utils import timezone

from accounts.demo import DEMO_ACCOUNTS
from accounts.models import User
from accounts.roles import set_role


class Command(BaseCommand):
    help = "Create (or reset) one verified demo user per role and print their logins. Embedded default only."

    def handle(self, *args, **options):
        if not settings.DEMO_MODE:
            raise CommandError(
                "Demo users are only for the embedded default (DEMO_MODE=True in local settings); "
                "their passwords are public. Refusing to create them here."
            )
        with transaction.atomic():
            for role, email, password in DEMO_ACCOUNTS:
                user, _ = User.objects.get_or_create(email=email)
                user.set_password(password)
                user.is_active = True
                user.approved_at = user.approved_at or timezone.now()
                user.save()
                set_role(user, role)
                EmailAddress.objects.update_or_create(
                    user=user, email=email, defaults={"verified": True, "primary": True}
                )
        self.stdout.write(self.style.WARNING("Demo users (DEMO_MODE; passwords are public, never use in production):"))
        width = max(len(email) for _, email, _ in DEMO_ACCOUNTS)
        self.stdout.write(f"  {'role':<12} {'email':<{width}}  password")
        for role, email, password in DEMO_ACCOUNTS:
            self.stdout.write(f"  {role.value:<12} {email:<{width}}  {password}")
