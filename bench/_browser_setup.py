"""Run by bench/browser.py in the benchmark's environment: one technician who signs in with a password,
a new case, and the bundled model registered and active. Prints one JSON object."""

import json
import secrets
import sys

import django

django.setup()

from allauth.account.models import EmailAddress  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402

from accounts.models import User  # noqa: E402
from accounts.roles import Role  # noqa: E402
from cases.models import Case  # noqa: E402
from inference.services import ensure_bundled_model  # noqa: E402


def main(run_id: str) -> dict:
    version = ensure_bundled_model()
    email = "bench-browser-technician@bench.hematovision.local"
    password = secrets.token_urlsafe(16)
    user, _ = User.objects.get_or_create(email=email)
    user.set_password(password)
    user.save()
    user.groups.add(Group.objects.get(name=Role.TECHNICIAN))
    EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
    case = Case.objects.create(accession_id=f"BENCH-BROWSER-{run_id}", created_by=user)
    return {"model": version.name, "email": email, "password": password, "case_id": case.pk}


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1])))
