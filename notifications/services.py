"""Notify people in the app and by email. Emails name HematoVision and link to the page to act on.

`notify` writes one Notification per recipient (skipping people who already have one with the same `key`, while
unread or ever, as asked) and sends the emails after the surrounding transaction commits, so a rolled-back event
sends nothing and a mail server that is down loses nothing but the email (the in-app notification stays).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from django.conf import settings
from django.contrib.auth import get_user_model
from django.core.mail import send_mail
from django.db import transaction
from django.db.models import Q
from django.utils import timezone, translation
from django.utils.translation import gettext

from accounts.roles import ROLE_CAPABILITIES

from .models import Notification

logger = logging.getLogger(__name__)
PRODUCT = "HematoVision"


def roles_with(capability: str) -> list[str]:
    """The names of the roles (groups) holding `capability`."""
    return [role.value for role, held in ROLE_CAPABILITIES.items() if capability in held]


def users_with(capability: str):
    """Active people whose role holds `capability` (superusers included)."""
    roles = roles_with(capability)
    return (
        get_user_model()
        .objects.filter(is_active=True)
        .filter(Q(groups__name__in=roles) | Q(is_superuser=True))
        .distinct()
        .order_by("pk")
    )


def absolute(link: str) -> str:
    base = settings.SITE_URL.rstrip("/")
    return f"{base}{link}" if link.startswith("/") else link


def _email_body(notification: Notification) -> str:
    lines = [gettext("Hello from %(product)s,") % {"product": PRODUCT}, "", notification.title]
    if notification.body:
        lines += ["", notification.body]
    if notification.link:
        lines += ["", gettext("Open it: %(link)s") % {"link": absolute(notification.link)}]
    lines += ["", f"— {PRODUCT}", gettext("You receive this because of your role in HematoVision.")]
    return "\n".join(lines)


def _send_emails(notification_ids: list[int]) -> None:
    # In the site's language, like the notifications' titles (the recipient's own language is not known).
    with translation.override(settings.LANGUAGE_CODE):
        _send_each(notification_ids)


def _send_each(notification_ids: list[int]) -> None:
    for notification in Notification.objects.filter(pk__in=notification_ids).select_related("recipient"):
        try:
            send_mail(
                subject=f"[{PRODUCT}] {notification.title}",
                message=_email_body(notification),
                from_email=None,
                recipient_list=[notification.recipient.email],
            )
        except Exception:  # the in-app notification stays; the mail server's failure is logged
            logger.exception("notification %s could not be emailed to %s", notification.pk, notification.recipient_id)
            continue
        Notification.objects.filter(pk=notification.pk).update(emailed=True)


def notify(
    *,
    recipients: Iterable,
    kind: str,
    title: str,
    body: str = "",
    link: str = "",
    key: str = "",
    once: str = "unread",
    email: bool = True,
) -> list[Notification]:
    """`once`: "unread" skips a recipient with an unread notification of the same key, "ever" with any."""
    recipients = {user.pk: user for user in recipients if user is not None and user.email}
    if key:
        existing = Notification.objects.filter(key=key, recipient_id__in=list(recipients))
        if once == "unread":
            existing = existing.filter(read_at__isnull=True)
        for recipient_id in existing.values_list("recipient_id", flat=True):
            recipients.pop(recipient_id, None)
    created = Notification.objects.bulk_create(
        [
            Notification(recipient=user, kind=kind, title=title[:200], body=body, link=link, key=key)
            for user in recipients.values()
        ]
    )
    if email and created:
        ids = [notification.pk for notification in created]
        transaction.on_commit(lambda: _send_emails(ids))
    return created


def mark_read(*, user, notification_ids=None) -> int:
    unread = Notification.objects.filter(recipient=user, read_at__isnull=True)
    if notification_ids is not None:
        unread = unread.filter(pk__in=list(notification_ids))
    return unread.update(read_at=timezone.now())
