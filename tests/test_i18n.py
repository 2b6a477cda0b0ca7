"""English and Spanish: the language comes from the switcher's cookie, else the browser's Accept-Language, else
English; the Spanish catalogues are complete and compiled; dates and numbers follow the language."""

import datetime as dt
import re
from pathlib import Path

import polib
import pytest
from django.conf import settings
from django.urls import reverse
from django.utils import timezone

from notifications.models import Notification
from tests.conftest import skip_or_fail

LOCALE = Path(settings.BASE_DIR) / "locale" / "es" / "LC_MESSAGES"
CATALOGUES = ("django", "djangojs")
SPANISH = {"HTTP_ACCEPT_LANGUAGE": "es-ES,es;q=0.9,en;q=0.5"}


def html_lang(response) -> str:
    return re.search(r'<html lang="([^"]+)"', response.content.decode()).group(1)


@pytest.mark.django_db
def test_without_accept_language_the_pages_stay_english(client):
    response = client.get(reverse("account_login"))
    assert html_lang(response) == "en-gb"
    assert "Sign In" in response.content.decode()


@pytest.mark.django_db
def test_a_spanish_browser_gets_the_sign_in_page_in_spanish(client):
    response = client.get(reverse("account_login"), **SPANISH)
    content = response.content.decode()
    assert html_lang(response) == "es"
    assert "Iniciar sesión" in content  # allauth's own Spanish
    assert 'aria-label="Idioma"' in content  # ours: the switcher
    assert response["Content-Language"] == "es"


@pytest.mark.django_db
def test_a_spanish_browser_gets_the_case_list_in_spanish(client, technician):
    client.force_login(technician)
    content = client.get(reverse("cases:list"), HTTP_ACCEPT_LANGUAGE="es-MX").content.decode()
    assert '<html lang="es">' in content
    assert ">Casos</a>" in content
    assert ">Cerrar sesión</button>" in content
    assert ">Cases</a>" not in content


@pytest.mark.django_db
def test_the_switcher_is_on_every_page_signed_in_or_not(client, technician):
    for response in (client.get(reverse("account_login")), client.get(reverse("account_signup"))):
        content = response.content.decode()
        assert 'data-testid="language-switcher"' in content
        assert 'name="language" value="es"' in content and 'name="language" value="en-gb"' in content
    client.force_login(technician)
    content = client.get(reverse("cases:list")).content.decode()
    assert f'action="{reverse("set_language")}"' in content
    assert 'value="en-gb" lang="en-gb" class="btn btn-light" aria-pressed="true"' in content


@pytest.mark.django_db
def test_the_switcher_sets_the_language_over_the_browsers_choice(client, technician):
    client.force_login(technician)
    response = client.post(reverse("set_language"), {"language": "es", "next": reverse("cases:list")})
    assert response.status_code == 302
    assert response["Location"] == reverse("cases:list")
    assert response.cookies[settings.LANGUAGE_COOKIE_NAME].value == "es"

    # The cookie wins over an English browser.
    content = client.get(reverse("cases:list"), HTTP_ACCEPT_LANGUAGE="en-US").content.decode()
    assert '<html lang="es">' in content and ">Casos</a>" in content
    assert 'value="es" lang="es" class="btn btn-light" aria-pressed="true"' in content

    client.post(reverse("set_language"), {"language": "en-gb", "next": reverse("cases:list")})
    content = client.get(reverse("cases:list"), **SPANISH).content.decode()
    assert ">Cases</a>" in content


@pytest.mark.django_db
def test_the_switcher_does_not_redirect_off_site(client):
    response = client.post(reverse("set_language"), {"language": "es", "next": "https://evil.example/"})
    assert response.status_code == 302
    assert "evil.example" not in response["Location"]


@pytest.mark.django_db
def test_the_scripts_catalogue_is_spanish_and_cacheable(client):
    response = client.get(reverse("javascript-catalog"), {"l": "es"}, **SPANISH)
    assert response.status_code == 200
    content = response.content.decode()
    assert "leucocitos contados" in content
    assert "public" in response["Cache-Control"] and "max-age=3600" in response["Cache-Control"]
    english = client.get(reverse("javascript-catalog")).content.decode()
    assert "leucocitos contados" not in english


@pytest.mark.django_db
def test_dates_and_numbers_follow_the_language(client, technician):
    notification = Notification.objects.create(
        recipient=technician, kind=Notification.Kind.CASE_AWAITING_REVIEW, title="A case awaits review"
    )
    moment = timezone.make_aware(dt.datetime(2026, 3, 5, 14, 30))
    Notification.objects.filter(pk=notification.pk).update(created_at=moment)
    client.force_login(technician)

    spanish = client.get(reverse("notifications:inbox"), **SPANISH).content.decode()
    assert "5 de marzo de 2026 a las 14:30" in spanish
    assert "Todavía no hay nada" not in spanish and "Marcar como leída" in spanish

    english = client.get(reverse("notifications:inbox")).content.decode()
    assert "5 Mar 2026, 14:30" in english  # 24-hour clock (hematovision/formats/en_GB)


def test_numbers_follow_the_language():
    from django.template import Context, Template
    from django.utils import translation

    template = Template("{{ value|floatformat:3 }}")
    with translation.override("es"):
        assert template.render(Context({"value": 0.9534})) == "0,953"
    with translation.override("en-gb"):
        assert template.render(Context({"value": 0.9534})) == "0.953"


@pytest.mark.parametrize("domain", CATALOGUES)
def test_every_spanish_string_is_translated_and_none_is_fuzzy(domain):
    catalogue = polib.pofile(str(LOCALE / f"{domain}.po"))
    assert catalogue.metadata.get("Language") == "es"
    assert not catalogue.metadata_is_fuzzy
    untranslated = [entry.msgid for entry in catalogue.untranslated_entries()]
    fuzzy = [entry.msgid for entry in catalogue.fuzzy_entries()]
    half_plural = [entry.msgid for entry in catalogue if entry.msgid_plural and not all(entry.msgstr_plural.values())]
    assert not untranslated, f"{len(untranslated)} without Spanish, e.g. {untranslated[:5]}"
    assert not fuzzy, f"{len(fuzzy)} fuzzy, e.g. {fuzzy[:5]}"
    assert not half_plural, half_plural[:5]
    assert len(catalogue) > (200 if domain == "django" else 10)


@pytest.mark.parametrize("domain", CATALOGUES)
def test_the_compiled_catalogue_is_the_po_file(domain):
    """The .mo files are committed (a machine without gettext serves Spanish). Compare contents, not file
    times: a fresh clone gives both files the time of the checkout."""
    source = {
        (entry.msgctxt, entry.msgid): entry.msgstr or entry.msgstr_plural[0]
        for entry in polib.pofile(str(LOCALE / f"{domain}.po")).translated_entries()
    }
    compiled = {
        (entry.msgctxt, entry.msgid): entry.msgstr or entry.msgstr_plural[0]
        for entry in polib.mofile(str(LOCALE / f"{domain}.mo"))
        if entry.msgid
    }
    assert compiled == source, "locale/es/LC_MESSAGES: run locale/assemble.sh (it compiles) and commit the .mo"


# Words that stay as they are in every language: names, units, abbreviations, key names.
UNTRANSLATED_WORDS = {
    "HematoVision",
    "CSV",
    "IP",
    "AUC",
    "px",
    "ms",
    "PDF",
    "FHIR",
    "ROC",
    "JSON",
    "API",
    "Esc",
    "Grad",
    "CAM",
}
_TRANSLATED_BLOCKS = re.compile(
    r"{%\s*(comment|blocktranslate|blocktrans)\b.*?{%\s*end(comment|blocktranslate|blocktrans)\s*%}", re.S
)
_TEMPLATE_TAGS = re.compile(r"{%.*?%}|{{.*?}}|{#.*?#}", re.S)
_NOT_TEXT = re.compile(r"<(script|style|code|template)\b.*?</\1>", re.S | re.I)
_TEXT_ATTRIBUTES = re.compile(r'\b(aria-label|title|alt|placeholder)="([^"]*)"')
_HTML_TAGS = re.compile(r"<[^>]+>", re.S)
_WORD = re.compile(r"[A-Za-z]{2,}")


def unmarked_text(source: str) -> list[str]:
    """Words a person would read that are outside {% translate %} / {% blocktranslate %}."""
    text = _TEMPLATE_TAGS.sub(" ", _TRANSLATED_BLOCKS.sub(" ", source))
    found = [
        match.group(0)
        for match in _TEXT_ATTRIBUTES.finditer(text)
        if set(_WORD.findall(match.group(2))) - UNTRANSLATED_WORDS
    ]
    text = _HTML_TAGS.sub(" ", _NOT_TEXT.sub(" ", text))
    found += [chunk.strip() for chunk in re.split(r"\s{2,}|\n", text) if set(_WORD.findall(chunk)) - UNTRANSLATED_WORDS]
    return found


def test_the_scanner_finds_unmarked_text():
    assert unmarked_text('<p>Hello</p><img alt="a cell">') == ['alt="a cell"', "Hello"]
    assert unmarked_text('<p>{% translate "Hello" %}</p><img alt="{% translate "a cell" %}"> <td>{{ n }} px</td>') == []


@pytest.mark.parametrize(
    "template",
    sorted(str(path.relative_to(settings.BASE_DIR)) for path in Path(settings.BASE_DIR, "templates").rglob("*.html")),
)
def test_every_template_marks_its_text_for_translation(template):
    assert unmarked_text(Path(settings.BASE_DIR, template).read_text()) == []


def test_the_pdf_report_writes_dates_in_the_readers_format(settings):
    from django.utils import translation

    from cases.report_pdf import _when

    settings.TIME_ZONE = "Europe/Madrid"
    moment = dt.datetime(2026, 3, 5, 13, 30, tzinfo=dt.UTC)
    with translation.override("es"):
        assert _when(moment) == "05/03/2026 14:30 CET"
    with translation.override("en-gb"):
        assert _when(moment) == "05/03/2026 14:30 CET"
    assert _when(None) == "—"


def test_templates_format_dates_in_the_readers_language():
    """`|date:"Y-m-d H:i"` (or `{% now %}`) writes the same in every language; the named formats follow it."""
    hard_coded = [
        f"{path.relative_to(settings.BASE_DIR)}: {match.group(0)}"
        for path in Path(settings.BASE_DIR, "templates").rglob("*.html")
        for match in re.finditer(r'\|date:"([^"]*)"|{% now "([^"]*)"', path.read_text())
        if not (match.group(1) or match.group(2)).endswith("_FORMAT")
    ]
    assert not hard_coded, hard_coded


SOURCE_DIRS = ("accounts", "audit", "cases", "hematovision", "inference", "notifications", "reports", "templates")


@pytest.mark.parametrize("domain", CATALOGUES)
def test_the_catalogue_holds_every_string_marked_in_the_code(domain, tmp_path, monkeypatch, settings):
    """A string marked after the last `locale/assemble.sh` would stay English without any other test noticing.
    makemessages runs on links to the sources in a scratch folder, so the real catalogues are not touched."""
    import shutil

    from django.core.management import call_command

    if not shutil.which("xgettext"):
        skip_or_fail("GNU gettext (xgettext) is not installed: the catalogue check needs makemessages")
    root = Path(settings.BASE_DIR)
    for name in (*SOURCE_DIRS, "static") if domain == "djangojs" else SOURCE_DIRS:
        if name == "static":
            (tmp_path / "static").mkdir()
            (tmp_path / "static" / "js").symlink_to(root / "static" / "js")
        else:
            (tmp_path / name).symlink_to(root / name)
    (tmp_path / "locale").mkdir()
    settings.LOCALE_PATHS = [tmp_path / "locale"]
    monkeypatch.chdir(tmp_path)
    call_command(
        "makemessages", locale=["es"], domain=domain, symlinks=True, no_location=True, verbosity=0, ignore_patterns=[]
    )
    marked = {
        (entry.msgctxt, entry.msgid) for entry in polib.pofile(str(tmp_path / "locale/es/LC_MESSAGES" / f"{domain}.po"))
    }
    catalogued = {(entry.msgctxt, entry.msgid) for entry in polib.pofile(str(LOCALE / f"{domain}.po"))}
    assert len(marked) > (200 if domain == "django" else 10)  # the scratch run found the sources
    missing = sorted(msgid for _, msgid in marked - catalogued)
    assert not missing, (
        f"{len(missing)} marked strings not in locale/es ({domain}): run locale/assemble.sh. {missing[:5]}"
    )
