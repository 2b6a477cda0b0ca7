"""hematovision.settings.base._social_providers: a provider exists only when its credentials do."""

from hematovision.settings.base import _social_providers


def test_no_provider_without_credentials(monkeypatch):
    monkeypatch.delenv("GOOGLE_CLIENT_ID", raising=False)
    monkeypatch.delenv("LINKEDIN_CLIENT_ID", raising=False)

    assert _social_providers() == {}


def test_google_from_the_environment(monkeypatch):
    monkeypatch.setenv("GOOGLE_CLIENT_ID", "gid")
    monkeypatch.setenv("GOOGLE_CLIENT_SECRET", "gsecret")
    monkeypatch.delenv("LINKEDIN_CLIENT_ID", raising=False)

    google = _social_providers()["google"]

    assert google["APPS"] == [{"client_id": "gid", "secret": "gsecret"}]


def test_linkedin_is_an_openid_connect_app_with_provider_id_linkedin(monkeypatch):
    monkeypatch.setenv("LINKEDIN_CLIENT_ID", "lid")
    monkeypatch.setenv("LINKEDIN_CLIENT_SECRET", "lsecret")
    monkeypatch.delenv("GOOGLE_CLIENT_ID", raising=False)

    (app,) = _social_providers()["openid_connect"]["APPS"]

    assert (app["provider_id"], app["client_id"], app["secret"]) == ("linkedin", "lid", "lsecret")
    assert app["settings"]["server_url"] == "https://www.linkedin.com/oauth"
