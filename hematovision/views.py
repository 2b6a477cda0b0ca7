import sys

from django.conf import settings
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.utils.translation import gettext
from django.views import defaults

from accounts.permissions import has_capability
from accounts.roles import Role
from hematovision.api_errors import api_error_response, is_api_request, server_error_response
from hematovision.middleware import database_unavailable_response, is_database_unavailable


def home(request):
    """Visitors see what HematoVision is; signed-in people go to where their role's work is."""
    user = request.user
    if not user.is_authenticated:
        return render(request, "home.html", {"signup_open": getattr(settings, "ACCOUNT_ALLOW_SIGNUP", True)})
    if user.role is None and not user.is_superuser:
        return redirect("accounts:pending")
    if has_capability(user, "create_case") or has_capability(user, "review_cells"):
        return redirect("cases:list")
    if has_capability(user, "view_dashboard"):
        return redirect("reports:dashboard")
    if has_capability(user, "export_data"):
        return redirect("reports:exports")
    return redirect("guide")


# The guide's sections, one per role; the reader's own role comes first.
GUIDE_SECTIONS = [role.value for role in Role]


def guide(request):
    """How to use HematoVision, by role. Open to visitors too: it holds no data and helps newcomers decide."""
    role = request.user.role if request.user.is_authenticated else None
    sections = sorted(GUIDE_SECTIONS, key=lambda section: section != role)
    return render(request, "guide.html", {"sections": sections, "own_role": role})


def healthz(request):
    """Liveness: the process answers. Touches nothing else."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Readiness for load balancers: database, broker and model, each with a short timeout."""
    from hematovision.health import readiness

    report = readiness()
    return JsonResponse(report, status=200 if report["ready"] else 503)


def server_error(request):
    """handler500: a database outage raised outside a view (session, auth middleware) is still a 503; under
    /api/ the answer is JSON (hematovision.api_errors), the exception's text never sent."""
    _, exception, _ = sys.exc_info()
    if is_database_unavailable(exception):
        return database_unavailable_response(request)
    if is_api_request(request):
        return server_error_response()
    return defaults.server_error(request)


# handler400/403/404: the friendly pages, and JSON of the API's shape under /api/ (a URL that names no endpoint).
# The exception's own text is not sent: Django's messages name URL patterns and internals.


def bad_request(request, exception):
    if is_api_request(request):
        return api_error_response(status=400, detail=gettext("The request is malformed."))
    return defaults.bad_request(request, exception)


def permission_denied(request, exception):
    if is_api_request(request):
        return api_error_response(status=403, detail=gettext("You do not have permission to perform this action."))
    return defaults.permission_denied(request, exception)


def page_not_found(request, exception):
    if is_api_request(request):
        return api_error_response(status=404, detail=gettext("Not found."))
    return defaults.page_not_found(request, exception)
