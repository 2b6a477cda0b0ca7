"""Run by bench/e2e.py in the benchmark's environment: technicians with API tokens, and the bundled
model registered and active (the serving model of the production path). Prints one JSON object."""

import json
import sys

import django

django.setup()

from allauth.account.models import EmailAddress  # noqa: E402
from django.contrib.auth.models import Group  # noqa: E402

from accounts.models import User  # noqa: E402
from accounts.roles import Role  # noqa: E402
from accounts.services import create_api_token  # noqa: E402
from inference.services import ensure_bundled_model  # noqa: E402


def main(users: int) -> dict:
    version = ensure_bundled_model()
    group = Group.objects.get(name=Role.TECHNICIAN)
    tokens = []
    for number in range(1, users + 1):
        email = f"bench-technician-{number}@bench.hematovision.local"
        user, _ = User.objects.get_or_create(email=email)
        user.groups.add(group)
        EmailAddress.objects.get_or_create(user=user, email=email, defaults={"verified": True, "primary": True})
        tokens.append(create_api_token(user=user, second_factor=False)[1])
    return {"model": version.name, "serving_artifact": version.serving_artifact, "tokens": tokens}


if __name__ == "__main__":
    print(json.dumps(main(int(sys.argv[1]))))
