from django.contrib.auth.decorators import login_required
from django.shortcuts import redirect, render
from django.utils.http import url_has_allowed_host_and_scheme
from django.views.decorators.http import require_GET, require_POST

from . import selectors, services


@require_GET
@login_required
def inbox(request):
    """Everyone signed in has their own notifications (pending people too: they are told of their approval)."""
    return render(request, "notifications/inbox.html", {"notifications": selectors.recent(user=request.user)})


@require_POST
@login_required
def mark_read(request):
    ids = request.POST.getlist("notification")
    services.mark_read(user=request.user, notification_ids=[int(i) for i in ids if i.isdigit()] if ids else None)
    target = request.POST.get("next", "")
    if target and url_has_allowed_host_and_scheme(target, allowed_hosts={request.get_host()}):
        return redirect(target)
    return redirect("notifications:inbox")
