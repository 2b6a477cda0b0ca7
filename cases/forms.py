from django import forms
from django.utils.translation import gettext_lazy as _

from .models import Case, Laboratory


class CaseForm(forms.ModelForm):
    class Meta:
        model = Case
        fields = ["accession_id", "patient_reference", "laboratory"]
        labels = {
            "accession_id": _("Accession id"),
            "patient_reference": _("Patient reference"),
            "laboratory": _("Laboratory"),
        }
        help_texts = {
            "accession_id": _("The laboratory's id of this sample; unique."),
            "patient_reference": _("Your system's patient id. Shown only on the case page, never in lists or exports."),
            "laboratory": (
                _("Where the smear was imaged. Its scale (µm per pixel), when known, sets how cells are cropped.")
            ),
        }

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["laboratory"].queryset = Laboratory.objects.order_by("name")
        self.fields["laboratory"].empty_label = _("Not stated (scale estimated from the red cells)")

    def clean_accession_id(self) -> str:
        return self.cleaned_data["accession_id"].strip()


class CaseFilterForm(forms.Form):
    status = forms.ChoiceField(label=_("Status"), choices=[("", _("Any status")), *Case.Status.choices], required=False)
    accession = forms.CharField(required=False, max_length=64, label=_("Accession id"))


class LaboratoryForm(forms.ModelForm):
    class Meta:
        model = Laboratory
        fields = ["name", "instrument", "um_per_pixel"]
        labels = {"name": _("Name"), "instrument": _("Instrument"), "um_per_pixel": _("µm per pixel")}

    def clean_name(self) -> str:
        return self.cleaned_data["name"].strip()
