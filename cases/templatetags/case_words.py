"""Words of the case pages that come from codes: {{ image.located_as|located_kind }}, {{ label|class_name }}."""

from django import template
from django.utils.translation import gettext
from django.utils.translation import gettext_lazy as _

from cases.differential import display_name
from cases.models import Case

register = template.Library()

# What the cell finder took a cell for (inference.locate kinds); the codes stay in the database.
LOCATED_KINDS = {
    "leukocyte": _("leukocyte"),
    "platelet": _("platelet"),
    "nucleated red cell": _("nucleated red cell"),
    "cell": _("cell"),
}


@register.filter
def located_kind(code):
    """The kind in the page's language; an unknown code is shown as it is, no code as "cell"."""
    code = code or "cell"
    return str(LOCATED_KINDS.get(code, code))


@register.filter
def class_name(label):
    """A model class or reviewer-only label as people read it ("neutrophil" -> "Neutrophil" / "Neutrófilo")."""
    return display_name(label) if label else ""


@register.simple_tag
def live_grid_words():
    """What static/js/live_grid.js needs to show a cell's label from its pushed event without fetching the
    card (issue 12), in the page's language: the active model's class names as class_name shows them, and
    the card's words. A label not among them (an older model's) makes the script fetch the card instead."""
    from inference.registry import get_active_version

    version = get_active_version()
    labels = version.classes if version is not None and isinstance(version.classes, list) else []
    return {
        "names": {str(label): display_name(str(label)) for label in labels},
        "classified": gettext("Classified"),
        "confidence": gettext("confidence"),
        # The case badge (_case_status.html) set from an event's case status, without fetching a card for it.
        "case_statuses": {str(value): str(label) for value, label in Case.Status.choices},
    }
