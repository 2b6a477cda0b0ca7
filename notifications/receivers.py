"""The four events people are told about, wired to the signals of the apps where they happen."""

from __future__ import annotations

from allauth.account.signals import user_signed_up
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Group
from django.db import connection
from django.db.models.signals import post_save
from django.dispatch import receiver
from django.urls import reverse
from django.utils import translation
from django.utils.translation import gettext, ngettext

from accounts.roles import Role
from accounts.signals import signup_details_given
from cases.models import Case, CellImage, Prediction, Review
from cases.review_labels import is_critical

from .models import Notification
from .services import notify, roles_with, users_with


def _who(user) -> str:
    name = user.get_full_name()
    return f"{name} ({user.email})" if name else user.email


def _provider_name(request, sociallogin) -> str:
    try:
        return str(sociallogin.account.get_provider(request).name)
    except Exception:  # noqa: BLE001 - a provider no longer configured still has its id
        return sociallogin.account.provider.title()


@receiver(user_signed_up)
def signup_awaits_approval(sender, request, user, sociallogin=None, **kwargs):
    # Name, laboratory and requested role as given at sign-up. A Google or LinkedIn sign-up skips the form
    # (the provider vouches for the email), so it has no laboratory or role yet: the managers are told how
    # the person signed up, that the pending page asks them on their first sign-in, and are told again when
    # they answer (signup_details_completed). Written in the site's language, not the signer's.
    with translation.override(settings.LANGUAGE_CODE):
        title = gettext("%(who)s signed up and awaits approval") % {"who": _who(user)}
        if sociallogin is not None and not (user.laboratory and user.requested_role):
            body = gettext(
                "They signed up with %(provider)s, which does not tell us their laboratory or the role they want. "
                "They are asked for both when they first sign in, and you will be notified when they answer. "
                "Give them a role on the people page, or leave them pending."
            ) % {"provider": _provider_name(request, sociallogin)}
        else:
            body = (
                _details_sentence(user) + " " + gettext("Give them a role on the people page, or leave them pending.")
            )
    _tell_people_managers(title=title, body=body, key=f"signup:{user.pk}")


def _details_sentence(user) -> str:
    role = str(Role(user.requested_role).label) if user.requested_role else gettext("none given")
    return gettext("Laboratory: %(laboratory)s. Requested role: %(role)s.") % {
        "laboratory": user.laboratory or gettext("none given"),
        "role": role,
    }


@receiver(signup_details_given)
def signup_details_completed(sender, user, **kwargs):
    """A person who signed up with Google or LinkedIn gave their laboratory and requested role (pending page)."""
    if user.role is not None or not user.is_active:
        return
    with translation.override(settings.LANGUAGE_CODE):
        title = gettext("%(who)s gave their laboratory and requested role") % {"who": _who(user)}
        body = _details_sentence(user) + " " + gettext("Give them a role on the people page, or leave them pending.")
    _tell_people_managers(title=title, body=body, key=f"signup-details:{user.pk}")


def _tell_people_managers(*, title: str, body: str, key: str) -> None:
    notify(
        recipients=users_with("manage_users"),
        kind=Notification.Kind.SIGNUP_PENDING,
        title=title,
        body=body,
        link=reverse("accounts:people"),
        key=key,
    )


@receiver(post_save, sender=get_user_model())
def account_approved(sender, instance, created, update_fields=None, **kwargs):
    if created or not update_fields or "approved_at" not in update_fields or instance.approved_at is None:
        return
    with translation.override(settings.LANGUAGE_CODE):
        title = gettext("Your HematoVision account is approved")
        body = gettext("You can now sign in and use the pages of your role.")
    notify(
        recipients=[instance],
        kind=Notification.Kind.ACCOUNT_APPROVED,
        title=title,
        body=body,
        link=reverse("home"),
        key=f"approved:{instance.pk}:{instance.approved_at.isoformat()}",
        once="ever",
    )


@receiver(post_save, sender=Case)
def case_status_changed(sender, instance, created, update_fields=None, **kwargs):
    if created or instance.status != Case.Status.AWAITING_REVIEW:
        return
    if update_fields is not None and "status" not in update_fields:
        return
    # Every classification batch flips the case back to awaiting review; almost always everyone has been told
    # already. One query says whether anyone would be, before the cell count, recipient lists and key checks.
    if not _anyone_to_tell_about(instance):
        return
    images = CellImage.objects.filter(case=instance)
    if images.filter(predictions__isnull=False).exists():
        cells = images.cells().count()
        with translation.override(settings.LANGUAGE_CODE):
            title = gettext("Case %(accession)s awaits review") % {"accession": instance.accession_id}
            body = ngettext(
                "%(count)d cell is classified or finished; the case can be reviewed and signed.",
                "%(count)d cells are classified or finished; the case can be reviewed and signed.",
                cells,
            ) % {"count": cells}
        notify(
            recipients=users_with("review_cells"),
            kind=Notification.Kind.CASE_AWAITING_REVIEW,
            title=title,
            body=body,
            link=reverse("cases:review", args=[instance.pk]),
            key=f"review:{instance.pk}",
        )
    failed = list(images.filter(status=CellImage.Status.FAILED).order_by("pk").values_list("pk", "status_message"))
    for image_id, message in failed:
        with translation.override(settings.LANGUAGE_CODE):
            title = gettext("Classification failed for image %(image)s of case %(accession)s") % {
                "image": image_id,
                "accession": instance.accession_id,
            }
            body = message or gettext("No reason was recorded.")
        notify(
            recipients=users_with("view_errors"),
            kind=Notification.Kind.CLASSIFICATION_FAILED,
            title=title,
            body=body,
            link=reverse("cases:detail", args=[instance.pk]),
            key=f"failed:{image_id}",
            once="ever",
        )


def _anyone_to_tell_about(case: Case) -> bool:
    """Whether case_status_changed would write a notification: a reviewer (with an email, as `notify` needs)
    without an unread `review:<case>` notice while the case has a prediction, or a failed image of the case with
    an error viewer who never had its `failed:<image>` notice. The same rules as `notify` and `users_with`,
    asked in one query.

    Every classification task flips the case back to awaiting review, so this runs once per task. Written as
    SQL: the same question built with the ORM (nested Exists over users_with) cost ~6 ms of CPU per task to
    compile, against ~0.5 ms here (bench/task_cpu.py)."""
    sql, parameters = _anyone_to_tell_sql(case)
    with connection.cursor() as cursor:
        cursor.execute(sql, parameters)
        return bool(cursor.fetchone()[0])


def _anyone_to_tell_sql(case: Case) -> tuple[str, list]:
    quote = connection.ops.quote_name
    user_model = get_user_model()
    user, groups_field = user_model._meta, user_model._meta.get_field("groups")
    through = groups_field.remote_field.through._meta
    image, prediction, notice = CellImage._meta, Prediction._meta, Notification._meta

    def table(meta) -> str:
        return quote(meta.db_table)

    def column(meta, name: str) -> str:
        return quote(meta.get_field(name).column)

    def holds(capability: str) -> tuple[str, list]:
        # users_with(capability) with an email: active, and a role holding it or superuser.
        roles = roles_with(capability)
        in_roles = f"g.{column(Group._meta, 'name')} IN ({', '.join(['%s'] * len(roles))})" if roles else "0=1"
        return (
            f"u.{column(user, 'is_active')} AND u.{column(user, 'email')} <> '' AND (u.{column(user, 'is_superuser')}"  # noqa: S608
            f" OR EXISTS (SELECT 1 FROM {table(through)} ug JOIN {table(Group._meta)} g"
            f" ON g.{quote(Group._meta.pk.column)} = ug.{quote(groups_field.m2m_reverse_name())}"
            f" WHERE ug.{quote(groups_field.m2m_column_name())} = u.{quote(user.pk.column)} AND {in_roles}))",
            list(roles),
        )

    reviewers, reviewer_roles = holds("review_cells")
    error_viewers, error_roles = holds("view_errors")
    recipient, key, read_at = column(notice, "recipient"), column(notice, "key"), column(notice, "read_at")
    image_pk, image_case = quote(image.pk.column), column(image, "case")
    # Table and column names come from the models' metadata, quoted; every value is a parameter.
    sql = (
        f"SELECT (EXISTS (SELECT 1 FROM {table(image)} i JOIN {table(prediction)} p"  # noqa: S608
        f" ON p.{column(prediction, 'image')} = i.{image_pk} WHERE i.{image_case} = %s)"
        f" AND EXISTS (SELECT 1 FROM {table(user)} u WHERE {reviewers} AND NOT EXISTS (SELECT 1 FROM"
        f" {table(notice)} n WHERE n.{recipient} = u.{quote(user.pk.column)} AND n.{key} = %s"
        f" AND n.{read_at} IS NULL)))"
        f" OR EXISTS (SELECT 1 FROM {table(image)} i WHERE i.{image_case} = %s AND i.{column(image, 'status')} = %s"
        f" AND EXISTS (SELECT 1 FROM {table(user)} u WHERE {error_viewers} AND NOT EXISTS (SELECT 1 FROM"
        f" {table(notice)} n WHERE n.{recipient} = u.{quote(user.pk.column)}"
        f" AND n.{key} = 'failed:' || CAST(i.{image_pk} AS VARCHAR(20)))))"
    )
    parameters = [case.pk, *reviewer_roles, f"review:{case.pk}", case.pk, CellImage.Status.FAILED, *error_roles]
    return sql, parameters


@receiver(post_save, sender=Review)
def critical_finding(sender, instance, created, **kwargs):
    """A reviewer called a cell other / abnormal (a blast, an atypical cell): pathologists and supervisors hear of
    it at once, once per case while the notice is unread."""
    if not created or not is_critical(instance.to_label):
        return
    case = instance.image.case
    recipients = [user for user in users_with("review_cells") | users_with("view_dashboard")]
    with translation.override(settings.LANGUAGE_CODE):
        title = gettext("Critical finding in case %(accession)s") % {"accession": case.accession_id}
        body = gettext("%(reviewer)s marked cell %(cell)s other / abnormal.") % {
            "reviewer": instance.reviewer.email,
            "cell": instance.image_id,
        }
    notify(
        recipients=[user for user in recipients if user.pk != instance.reviewer_id],
        kind=Notification.Kind.CRITICAL_FINDING,
        title=title,
        body=body,
        link=reverse("cases:review", args=[case.pk]),
        key=f"critical:{case.pk}",
    )
