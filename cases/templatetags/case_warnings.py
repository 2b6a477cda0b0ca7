"""{% validity_warning case %}: the case-level "not validated for images like these" banner (cases.selectors).

{% validity_warning case live=True %} (the case page): when the case is not warned yet, the banner's markup
waits in a <template> for live_grid.js to show when an event says the case is escalated."""

from django import template

from cases import selectors

register = template.Library()


@register.inclusion_tag("cases/_validity_warning.html")
def validity_warning(case, live=False):
    return {"validity": selectors.model_validity(case=case), "live": live}
