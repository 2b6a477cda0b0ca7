"""Demo accounts of the embedded default: one per role, with passwords anyone may read."""

from django.conf import settings

from .roles import Role

DEMO_EMAIL_DOMAIN = "demo.hematovision.local"


def demo_email(role: str) -> str:
    return f"{role}@{DEMO_EMAIL_DOMAIN}"


def demo_password(role: str) -> str:
    return f"demo-{role}-hematovision"


DEMO_ACCOUNTS = [(Role(role), demo_email(role), demo_password(role)) for role in Role.values]


def is_demo_user(user) -> bool:
    """Only meaningful while DEMO_MODE is on: elsewhere a demo address is an ordinary account."""
    return bool(settings.DEMO_MODE and user.email.lower().endswith("@" + DEMO_EMAIL_DOMAIN))
