from __future__ import annotations

from django import forms
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from audit.models import AuditEvent
from inference.models import ModelVersion

from .selectors import AuditFilter, ExportFilter, Period, audit_object_types, period_problem, resolve_period

DATE_INPUT = forms.DateInput(attrs={"type": "date", "class": "form-control form-control-sm"})


class PeriodFormMixin:
    """Optional `start`/`end` dates; both ends included."""

    def clean(self):
        cleaned = super().clean()
        problem = period_problem(start=cleaned.get("start"), end=cleaned.get("end"))
        if problem:
            self.add_error("end", problem)
        return cleaned

    def period(self, *, required: bool) -> Period | None:
        return resolve_period(start=self.cleaned_data.get("start"), end=self.cleaned_data.get("end"), required=required)


class DashboardForm(PeriodFormMixin, forms.Form):
    model_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.order_by("-is_active", "-created_at"),
        required=False,
        empty_label=None,
        widget=forms.Select(attrs={"class": "form-select form-select-sm", "data-testid": "dashboard-version"}),
    )
    start = forms.DateField(required=False, widget=DATE_INPUT)
    end = forms.DateField(required=False, widget=DATE_INPUT)


class ExportForm(PeriodFormMixin, forms.Form):
    model_version = forms.ModelChoiceField(
        queryset=ModelVersion.objects.order_by("-created_at"),
        required=False,
        empty_label=_("All model versions"),
        widget=forms.Select(attrs={"class": "form-select"}),
    )
    start = forms.DateField(required=False, widget=DATE_INPUT, help_text=_("Classified on or after"))
    end = forms.DateField(required=False, widget=DATE_INPUT, help_text=_("Classified on or before"))
    reviewed_only = forms.BooleanField(
        required=False, widget=forms.CheckboxInput(attrs={"class": "form-check-input"}), label=_("Reviewed cells only")
    )

    def export_filter(self) -> ExportFilter:
        return ExportFilter(
            model_version=self.cleaned_data.get("model_version"),
            period=self.period(required=False),
            reviewed_only=bool(self.cleaned_data.get("reviewed_only")),
        )


class AuditFilterForm(PeriodFormMixin, forms.Form):
    action = forms.ChoiceField(
        choices=[("", _("Any action")), *AuditEvent.Action.choices],
        required=False,
        widget=forms.Select(attrs={"class": "form-select form-select-sm"}),
    )
    actor = forms.CharField(
        required=False,
        max_length=254,
        widget=forms.TextInput(attrs={"class": "form-control form-control-sm", "placeholder": _("email contains")}),
    )
    object_type = forms.ChoiceField(required=False, widget=forms.Select(attrs={"class": "form-select form-select-sm"}))
    object_id = forms.CharField(
        required=False, max_length=64, widget=forms.TextInput(attrs={"class": "form-control form-control-sm"})
    )
    start = forms.DateField(required=False, widget=DATE_INPUT)
    end = forms.DateField(required=False, widget=DATE_INPUT)

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["object_type"].choices = [("", gettext("Any object"))] + [
            (name, name) for name in audit_object_types()
        ]

    def audit_filter(self) -> AuditFilter:
        data = self.cleaned_data
        return AuditFilter(
            action=data.get("action") or "",
            actor=(data.get("actor") or "").strip(),
            object_type=data.get("object_type") or "",
            object_id=(data.get("object_id") or "").strip(),
            period=self.period(required=False),
        )
