import pytest
from django.core.cache import cache

from hematovision.settings.base import _social_providers


@pytest.fixture(autouse=True)
def fresh_cache():
    """Rate-limit counters and used TOTP codes live in the cache; no test may see another's."""
    cache.clear()
    yield
    cache.clear()


# Google or LinkedIn configured alone, as a deployment would by its environment.


@pytest.fixture
def google_configured(monkeypatch, settings):
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "google-client-id")
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "google-client-secret")
    monkeypatch.delenv("LINKEDIN_CLIENT_ID", raising=False)
    settings.SOCIALACCOUNT_PROVIDERS = _social_providers()


@pytest.fixture
def linkedin_configured(monkeypatch, settings):
    monkeypatch.setenv("LINKEDIN_CLIENT_ID", "linkedin-client-id")
    monkeypatch.setenv("LINKEDIN_CLIENT_SECRET", "linkedin-client-secret")
    monkeypatch.delenv("GOOGLE_CLIENT_ID", raising=False)
    settings.SOCIALACCOUNT_PROVIDERS = _social_providers()
