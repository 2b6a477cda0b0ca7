import sys

from django.contrib.auth.decorators import login_required
from django.http import JsonResponse
from django.shortcuts import redirect, render
from django.views import defaults

from accounts.permissions import has_capability
from hematovision.middleware import database_unavailable_response, is_database_unavailable


@login_required
def home(request):
    """Send each role to where its work is."""
    user = request.user
    if user.role is None and not user.is_superuser:
        return redirect("accounts:pending")
    if has_capability(user, "create_case") or has_capability(user, "review_cells"):
        return redirect("cases:list")
    if has_capability(user, "view_dashboard"):
        return redirect("reports:dashboard")
    if has_capability(user, "export_data"):
        return redirect("reports:exports")
    return render(request, "home.html")


def healthz(request):
    """Liveness: the process answers. Touches nothing else."""
    return JsonResponse({"status": "ok"})


def readyz(request):
    """Readiness for load balancers: database, broker and model, each with a short timeout."""
    from hematovision.health import readiness

    report = readiness()
    return JsonResponse(report, status=200 if report["ready"] else 503)


def server_error(request):
    """handler500: a database outage raised outside a view (session, auth middleware) is still a 503."""
    _, exception, _ = sys.exc_info()
    if is_database_unavailable(exception):
        return database_unavailable_response()
    return defaults.server_error(request)
