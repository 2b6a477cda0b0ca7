"""Words of the case pages that come from codes: {{ image.located_as|located_kind }}, {{ label|class_name }}."""

from django import template
from django.utils.translation import gettext_lazy as _

from cases.differential import display_name

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
