from django import forms
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from .models import User
from .roles import Role
from .selectors import grantable_roles


class RoleForm(forms.Form):
    role = forms.ChoiceField(label=_("Role"))

    def __init__(self, *args, actor, **kwargs):
        super().__init__(*args, **kwargs)
        self.fields["role"].choices = grantable_roles(actor=actor)


def requested_role_choices() -> list[tuple[str, str]]:
    """Every role may be requested (granting is another matter), named in the reader's language."""
    return [("", gettext("Choose a role…")), *((role.value, gettext(str(role.label))) for role in Role)]


class SignupForm(forms.Form):
    """What allauth's sign-up asks besides email and password (ACCOUNT_SIGNUP_FORM_CLASS).

    The requested role is a request for the people managers, never a grant: the account stays pending.
    Social sign-ups get the name from the provider and may leave laboratory and role for the pending page.
    """

    first_name = forms.CharField(
        label=_("First name"),
        max_length=150,
        widget=forms.TextInput({"autocomplete": "given-name", "placeholder": _("First name")}),
    )
    last_name = forms.CharField(
        label=_("Last name"),
        max_length=150,
        widget=forms.TextInput({"autocomplete": "family-name", "placeholder": _("Last name")}),
    )
    laboratory = forms.CharField(
        label=_("Laboratory"),
        max_length=120,
        help_text=_("The laboratory or hospital you work for."),
        widget=forms.TextInput({"autocomplete": "organization", "placeholder": _("Laboratory")}),
    )
    requested_role = forms.ChoiceField(
        label=_("Requested role"),
        choices=requested_role_choices,
        widget=forms.Select({"class": "form-select"}),
        help_text=_("A supervisor or administrator reviews your request and grants the role."),
    )

    def signup(self, request, user) -> None:
        # Imported here: allauth imports this class while its own forms load, before accounts.services can.
        from .services import record_signup_details

        record_signup_details(
            user=user,
            first_name=self.cleaned_data["first_name"],
            last_name=self.cleaned_data["last_name"],
            laboratory=self.cleaned_data["laboratory"],
            requested_role=self.cleaned_data["requested_role"],
        )


class SignupDetailsForm(forms.ModelForm):
    """On the pending page: what a social sign-up (name from the provider) has not told us yet."""

    class Meta:
        model = User
        fields = ["first_name", "last_name", "laboratory", "requested_role"]

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        for name, field in self.fields.items():
            field.required = True
            field.widget.attrs["class"] = "form-select" if name == "requested_role" else "form-control"
        self.fields["requested_role"].choices = requested_role_choices
