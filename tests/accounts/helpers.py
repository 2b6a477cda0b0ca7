import re
import time

from allauth.mfa import app_settings as mfa_settings
from allauth.mfa.totp.internal.auth import format_hotp_value, hotp_value

from tests.conftest import TOTP_TEST_SECRET

CODE_LINE = re.compile(r"^\s*([A-Z0-9]{3,8}(?:-[A-Z0-9]{3,8})?)\s*$", re.MULTILINE)


def code_from_email(message) -> str:
    """The one-time code allauth mails (verification or sign-in), alone on its line."""
    match = CODE_LINE.search(message.body)
    assert match, f"no code in email:\n{message.body}"
    return match.group(1)


def current_totp_code(secret: str = TOTP_TEST_SECRET) -> str:
    return format_hotp_value(hotp_value(secret, int(time.time()) // mfa_settings.TOTP_PERIOD))
