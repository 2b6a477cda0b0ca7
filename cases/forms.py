from django import forms

from .models import Case


class CaseForm(forms.ModelForm):
    class Meta:
        model = Case
        fields = ["accession_id", "patient_reference"]
        labels = {"accession_id": "Accession id", "patient_reference": "Patient reference"}
        help_texts = {
            "accession_id": "The laboratory's id of this sample; unique.",
            "patient_reference": "Your system's patient id. Shown only on the case page, never in lists or exports.",
        }

    def clean_accession_id(self) -> str:
        return self.cleaned_data["accession_id"].strip()


class CaseFilterForm(forms.Form):
    status = forms.ChoiceField(choices=[("", "Any status"), *Case.Status.choices], required=False)
    accession = forms.CharField(required=False, max_length=64, label="Accession id")
