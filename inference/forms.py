from __future__ import annotations

import re
import secrets
from pathlib import Path

from django import forms
from django.utils.functional import lazy
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .import_jobs import queue_model_import
from .importing import DEFAULT_SCALE, KERAS_SUFFIXES, SCALE_MODES, ImportFailed, parse_classes
from .models import ModelImport

MAX_MODEL_FILE_BYTES = 1024 * 1024 * 1024


class ModelImportForm(forms.Form):
    file = forms.FileField(
        help_text=lazy(
            lambda: gettext("A Keras model file (%(suffixes)s).") % {"suffixes": ", ".join(KERAS_SUFFIXES)}, str
        )(),
        widget=forms.ClearableFileInput(attrs={"class": "form-control", "accept": ",".join(KERAS_SUFFIXES)}),
    )
    name = forms.CharField(
        required=False,
        max_length=120,
        help_text=_("Letters, digits, '.', '_' or '-'. Default: the file name and a checksum prefix."),
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )
    classes = forms.CharField(
        required=False,
        help_text=_(
            "Class names in output order, comma-separated (a 4-output model defaults to the Blood_Cell classes)."
        ),
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )
    input_size = forms.IntegerField(
        required=False,
        min_value=16,
        max_value=1024,
        help_text=_("Only for models that accept any input size."),
        widget=forms.NumberInput(attrs={"class": "form-control"}),
    )
    scale = forms.ChoiceField(
        choices=[(mode, mode) for mode in SCALE_MODES],
        initial=DEFAULT_SCALE,
        help_text=_("The pixel scaling the model was trained with."),
        widget=forms.Select(attrs={"class": "form-select"}),
    )

    def clean_file(self):
        upload = self.cleaned_data["file"]
        if not upload.name.lower().endswith(KERAS_SUFFIXES):
            raise forms.ValidationError(
                gettext("%(name)s is not a Keras model file (%(suffixes)s).")
                % {"name": upload.name, "suffixes": ", ".join(KERAS_SUFFIXES)}
            )
        if upload.size > MAX_MODEL_FILE_BYTES:
            raise forms.ValidationError(
                gettext("The file is larger than %(size)d MB.") % {"size": MAX_MODEL_FILE_BYTES // (1024 * 1024)}
            )
        return upload

    def clean_classes(self):
        try:
            return parse_classes(self.cleaned_data.get("classes") or None)
        except ImportFailed as exc:
            raise forms.ValidationError(str(exc)) from exc

    def save(self, *, actor) -> ModelImport:
        """Queue the uploaded file for import by a worker (the importer audits the import)."""
        upload = self.cleaned_data["file"]
        options = {
            "name": self.cleaned_data["name"] or default_name(upload.name),
            "classes": self.cleaned_data["classes"],
            "input_size": self.cleaned_data["input_size"],
            "scale": self.cleaned_data["scale"],
        }
        return queue_model_import(upload=upload, options=options, actor=actor)


def default_name(filename: str) -> str:
    stem = re.sub(r"[^A-Za-z0-9._-]+", "-", Path(filename).stem).strip("-._")[:100] or "model"
    return f"{stem}-{secrets.token_hex(4)}"


class AdaptationForm(forms.Form):
    """Start adapting the active model to a laboratory's reviewed cells. The laboratories come from
    settings.LABORATORY_CHOICES (a `cases` function: `inference` knows nothing of cases)."""

    name = forms.CharField(
        max_length=120,
        help_text=_("Name of the new version (it is registered inactive)."),
        widget=forms.TextInput(attrs={"class": "form-control"}),
    )
    laboratory = forms.ChoiceField(
        help_text=_("Whose signed cases' reviewed cells to adapt on."),
        widget=forms.Select(attrs={"class": "form-select"}),
    )

    ALL = "all"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        from django.conf import settings
        from django.utils.module_loading import import_string

        provider = getattr(settings, "LABORATORY_CHOICES", "cases.lab_cells.laboratory_choices")
        self.laboratories = [(str(pk), label) for pk, label in import_string(provider)()]
        self.fields["laboratory"].choices = [(self.ALL, gettext("All laboratories"))] + self.laboratories

    def clean_name(self):
        name = self.cleaned_data["name"].strip()
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._-]*", name):
            raise forms.ValidationError(gettext("Use letters, digits, '.', '_' or '-'."))
        return name

    def clean(self):
        cleaned = super().clean()
        choice = cleaned.get("laboratory")
        cleaned["laboratory_id"] = None if choice in (None, self.ALL) else int(choice)
        return cleaned

    def source_label(self) -> str:
        choice = self.cleaned_data.get("laboratory")
        return dict([(self.ALL, "all laboratories")] + self.laboratories).get(choice, "all laboratories")
