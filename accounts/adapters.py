from allauth.account.adapter import DefaultAccountAdapter
from allauth.core import ratelimit
from allauth.core.internal import ratelimit as ratelimit_impl
from allauth.socialaccount.adapter import DefaultSocialAccountAdapter
from django.conf import settings

# Wrong passwords count in their own rate-limit bucket (ACCOUNT_RATE_LIMITS["password_failed"]: per
# client address and per account). allauth's "login_failed" is then left to the second factor (its
# TOTP step keys it by user), so wrong TOTP codes do not use up a workstation's password attempts.
PASSWORD_FAILED = "password_failed"  # noqa: S105 - the name of a rate-limit action, not a password


class AccountAdapter(DefaultAccountAdapter):
    def is_open_for_signup(self, request) -> bool:
        return getattr(settings, "ACCOUNT_ALLOW_SIGNUP", True)

    # allauth 65.21: the same as DefaultAccountAdapter.pre_authenticate / _delete_login_attempts_cached_email,
    # on the password bucket. authenticate() rolls the usage back after a correct password.
    def pre_authenticate(self, request, **credentials) -> None:
        cache_key = self._get_login_attempts_cache_key(request, **credentials)
        self._login_failed_rl_usage = ratelimit_impl.consume(
            request, app="allauth.account", action=PASSWORD_FAILED, key=cache_key
        )
        if not self._login_failed_rl_usage:
            raise self.validation_error("too_many_login_attempts")

    def _delete_login_attempts_cached_email(self, request, **credentials) -> None:
        cache_key = self._get_login_attempts_cache_key(request, **credentials)
        ratelimit.clear(request, action=PASSWORD_FAILED, key=cache_key)


class SocialAccountAdapter(DefaultSocialAccountAdapter):
    def is_open_for_signup(self, request, sociallogin) -> bool:
        return getattr(settings, "ACCOUNT_ALLOW_SIGNUP", True)
