import pytest
from django.core.cache import cache


@pytest.fixture(autouse=True)
def fresh_cache():
    """Rate-limit counters and used TOTP codes live in the cache; no test may see another's."""
    cache.clear()
    yield
    cache.clear()
