#!/usr/bin/env bash
# Rebuilds the Spanish catalogues from the code and the translators' fragments, then compiles them.
#   locale/es/LC_MESSAGES/django.po    strings of the templates and Python code (makemessages)
#   locale/es/LC_MESSAGES/djangojs.po  strings of static/js (gettext through Django's JavaScript catalogue)
# Every string takes its Spanish from locale/es/fragments/*.po (ha.po first: the i18n owner's choice wins),
# so a corrected fragment corrects the catalogue; fuzzy guesses are emptied. What is still empty afterwards
# is listed: translate it in a fragment and run this again. The .mo files are committed, so a machine without
# gettext serves Spanish too.
# Usage: locale/assemble.sh   (from anywhere; needs GNU gettext for makemessages and msgfmt, and polib)
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-.venv/bin/python}
IGNORE=(-i ".venv/*" -i "tests/*" -i "bench/*" -i "docs/*" -i "var/*" -i "staticfiles/*" -i "node_modules/*"
        -i "static/vendor/*" -i "locale/*")
"$PYTHON" manage.py makemessages -l es --no-location --no-obsolete "${IGNORE[@]}" >/dev/null
"$PYTHON" manage.py makemessages -d djangojs -l es --no-location --no-obsolete "${IGNORE[@]}" >/dev/null

for domain in django djangojs; do
  po=locale/es/LC_MESSAGES/$domain.po
  "$PYTHON" - "$po" locale/es/fragments/*.po <<'PY'
import sys

import polib

path, fragments = sys.argv[1], sys.argv[2:]
# ha.po first: the i18n owner's choice wins over a fragment with the same string.
fragments.sort(key=lambda name: (not name.endswith("/ha.po"), name))
known = {}
for name in fragments:
    try:
        fragment = polib.pofile(name)
    except (OSError, ValueError) as error:
        print(f"skipped {name}: {error}", file=sys.stderr)
        continue
    for entry in fragment:
        if entry.translated() and "fuzzy" not in entry.flags and not entry.obsolete:
            known.setdefault((entry.msgctxt, entry.msgid, entry.msgid_plural or None), entry)

po = polib.pofile(path, wrapwidth=0)
# makemessages writes a template header (fuzzy, no language); msgfmt would skip a fuzzy header.
po.header = "Spanish translation of HematoVision."
po.metadata_is_fuzzy = False
po.metadata.update(
    {
        "Project-Id-Version": "HematoVision",
        "Language": "es",
        "Language-Team": "Spanish",
        "Last-Translator": "HematoVision i18n",
        "PO-Revision-Date": po.metadata.get("POT-Creation-Date", ""),
        "Plural-Forms": "nplurals=2; plural=(n != 1);",
    }
)
filled = 0
for entry in po:
    if "fuzzy" in entry.flags:
        entry.flags.remove("fuzzy")
        entry.msgstr, entry.msgstr_plural = "", {k: "" for k in entry.msgstr_plural}
        entry.previous_msgid = entry.previous_msgid_plural = entry.previous_msgctxt = None
    if entry.msgid_plural:
        # Two plural forms (one, other).
        entry.msgstr_plural = {k: v for k, v in entry.msgstr_plural.items() if int(k) < 2}
        for k in (0, 1):
            entry.msgstr_plural.setdefault(k, "")
    source = known.get((entry.msgctxt, entry.msgid, entry.msgid_plural or None))
    if source is None:
        continue  # a translation made in the catalogue itself stays
    if entry.msgid_plural:
        forms = {int(k): v for k, v in source.msgstr_plural.items()}
        entry.msgstr_plural = {0: forms.get(0, ""), 1: forms.get(1, forms.get(0, ""))}
    else:
        entry.msgstr = source.msgstr
    filled += 1
po.save(path)
missing = [e.msgid for e in po if not e.translated()]
print(f"{path}: {len(po)} strings, {filled} taken from fragments, {len(missing)} still untranslated")
for msgid in missing:
    print("   ", msgid[:110].replace("\n", " "))
PY
  msgfmt --check-format --check-header -o "locale/es/LC_MESSAGES/$domain.mo" "$po"
done
