"""{% validity_warning case %}: the case-level "not validated for images like these" banner (cases.selectors)."""

from django import template

from cases import selectors

register = template.Library()


@register.inclusion_tag("cases/_validity_warning.html")
def validity_warning(case):
    return {"validity": selectors.model_validity(case=case)}
