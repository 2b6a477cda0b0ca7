"""{% validity_warning case %}: the case-level "not validated for images like these" banner (cases.selectors).

{% validity_warning case live=True %} (the case page): when the case is not warned yet, the banner's markup
waits in a <template> for live_grid.js to show when an event says the case is escalated.

{% validity_warning case watch=True %} (the review page, the differential): no grid of their own, so the
<template> carries what validity_watch.js needs to show it by itself: the case's event stream (when push is
available), its cards URL and the images still pending (the polling fallback fetches their cards while any is
pending). A signed case takes no more images: nothing to watch."""

from django import template
from django.urls import reverse

from cases import events, selectors
from cases.models import Case, CellImage

register = template.Library()


@register.inclusion_tag("cases/_validity_warning.html")
def validity_warning(case, live=False, watch=False):
    validity = selectors.model_validity(case=case)
    context = {"validity": validity, "live": live}
    if watch and not validity.warn and case.status != Case.Status.SIGNED:
        pending = CellImage.objects.filter(case=case, status__in=selectors.PENDING_STATUSES).order_by("pk")
        context.update(
            live=True,
            watch={
                "events_url": reverse("cases:events", args=[case.pk]) if events.push_available() else "",
                "cards_url": reverse("cases:cards", args=[case.pk]),
                "pending": ",".join(str(pk) for pk in pending.values_list("pk", flat=True)),
            },
        )
    return context
