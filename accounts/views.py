from django.contrib import messages
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils.translation import gettext
from django.views.decorators.http import require_http_methods, require_POST

from .forms import RoleForm, SignupDetailsForm
from .models import User
from .permissions import capability_required
from .selectors import list_people
from .services import (
    UserManagementError,
    approve_user,
    can_manage_admin_roles,
    change_role,
    deactivate_user,
    give_signup_details,
)


@login_required
@require_http_methods(["GET", "POST"])
def pending(request):
    """The one page a signed-in person without a role sees; it needs no capability by design.

    A person who signed up through Google or LinkedIn (name from the provider, no laboratory or requested role
    yet) tells the people managers here who they are; their own details are all this form can change.
    """
    user = request.user
    if user.role is not None or user.is_superuser:
        return redirect("home")
    details_form = None
    if not (user.laboratory and user.requested_role and user.first_name):
        details_form = SignupDetailsForm(request.POST or None, instance=user)
        if request.method == "POST" and details_form.is_valid():
            give_signup_details(user=user, **details_form.cleaned_data)
            messages.success(request, gettext("Thank you: the people managers now see your laboratory and role."))
            return redirect("accounts:pending")
    return render(request, "accounts/pending.html", {"details_form": details_form})


@capability_required("manage_users")
def people(request):
    return render(
        request,
        "accounts/people.html",
        {
            "people": list_people(),
            "role_form": RoleForm(actor=request.user),
            "may_grant_admin": can_manage_admin_roles(request.user),
        },
    )


def _apply(request, pk, action, success_message):
    """Run a people-page action and come back to the page with its outcome."""
    user = get_object_or_404(User, pk=pk)
    try:
        action(user)
    except UserManagementError as error:
        messages.error(request, str(error))
    else:
        messages.success(request, success_message % {"email": user.email})
    return redirect("accounts:people")


def _chosen_role(request):
    form = RoleForm(request.POST, actor=request.user)
    if not form.is_valid():
        raise UserManagementError(gettext("Choose one of the roles offered to you."))
    return form.cleaned_data["role"]


@capability_required("manage_users")
@require_POST
def approve(request, pk):
    return _apply(
        request,
        pk,
        lambda user: approve_user(actor=request.user, user=user, role=_chosen_role(request), request=request),
        gettext("%(email)s is approved."),
    )


@capability_required("manage_users")
@require_POST
def set_role(request, pk):
    return _apply(
        request,
        pk,
        lambda user: change_role(actor=request.user, user=user, role=_chosen_role(request), request=request),
        gettext("%(email)s has a new role."),
    )


@capability_required("manage_users")
@require_http_methods(["GET", "POST"])
def deactivate(request, pk):
    """Asks first (a page that says what deactivation does), then deactivates on a confirmed POST."""
    person = get_object_or_404(User, pk=pk)
    if request.method == "GET" or request.POST.get("confirm") != "yes":
        error = "" if request.method == "GET" else gettext("Tick the box to confirm the deactivation.")
        return render(
            request,
            "accounts/deactivate_confirm.html",
            {"person": person, "error": error},
            status=200 if request.method == "GET" else 400,
        )
    return _apply(
        request,
        pk,
        lambda user: deactivate_user(actor=request.user, user=user, request=request),
        gettext("%(email)s is deactivated and signed out everywhere."),
    )
