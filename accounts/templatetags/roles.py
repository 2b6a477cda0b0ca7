"""{{ value|role_label }}: a role's name in the reader's language ("pathologist" -> "Patólogo/a" in Spanish)."""

from django import template

from accounts.roles import Role

register = template.Library()


@register.filter
def role_label(value):
    if not value:
        return value
    try:
        return Role(value).label
    except ValueError:
        return value
