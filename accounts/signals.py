from django.contrib.auth.models import Group
from django.contrib.auth.signals import user_logged_in, user_logged_out, user_login_failed
from django.db.models.signals import m2m_changed, post_save, pre_delete, pre_save
from django.dispatch import Signal, receiver

from audit.models import AuditEvent
from audit.services import record

from .models import User
from .roles import KNOWN_ROLE, Role

# Sent (with `user`) when a person who signed up without them (Google, LinkedIn) gives their laboratory and
# requested role on the pending page; notifications tells the people managers.
signup_details_given = Signal()


@receiver(user_logged_in)
def audit_sign_in(sender, request, user, **kwargs):
    record(action=AuditEvent.Action.SIGN_IN, actor=user, obj=user, request=request)


@receiver(user_logged_out)
def audit_sign_out(sender, request, user, **kwargs):
    if user is not None:
        record(action=AuditEvent.Action.SIGN_OUT, actor=user, obj=user, request=request)


@receiver(user_login_failed)
def audit_failed_sign_in(sender, credentials, request=None, **kwargs):
    record(
        action=AuditEvent.Action.SIGN_IN_FAILED,
        details={"email": str(credentials.get("email", credentials.get("username", "")))[:254]},
        request=request,
    )


@receiver(post_save, sender=User)
def revoke_api_tokens_on_password_change(sender, instance, created, **kwargs):
    """A new password (changed, reset, set by an admin or `changepassword`) ends every API token.

    Django keeps the new raw password on the instance until save() has run the validators'
    password_changed hooks; it is set only by set_password().
    """
    if not created and getattr(instance, "_password", None) is not None:
        from .services import revoke_api_tokens

        revoke_api_tokens(user=instance)


@receiver(m2m_changed, sender=User.groups.through)
def revoke_api_tokens_on_role_change(sender, instance, action, reverse, pk_set, **kwargs):
    """A role is a group: however it changes (the people page, Django's admin, a shell), the user's API
    tokens end, since each carries the trust of a sign-in under the old role."""
    from .services import revoke_api_tokens

    if reverse:  # group.user_set changed: instance is the group
        if instance.name not in Role.values:
            return
        if action == "pre_clear":
            users = list(instance.user_set.all())
        elif action in {"post_add", "post_remove"}:
            users = list(User.objects.filter(pk__in=pk_set or ()))
        else:
            return
        for user in users:
            revoke_api_tokens(user=user)
        return
    role_groups_changed = action in {"post_add", "post_remove"} and (
        Group.objects.filter(pk__in=pk_set or (), name__in=Role.values).exists()
    )
    if action == "post_clear" or role_groups_changed:
        instance.__dict__.pop(KNOWN_ROLE, None)
        revoke_api_tokens(user=instance)


@receiver(pre_delete, sender=Group)
def revoke_api_tokens_on_role_group_deletion(sender, instance, **kwargs):
    """Deleting a role group takes the role from its members without an m2m_changed signal: their tokens end
    too (token sign-in keeps the role read at a token's first use for as long as the token lives)."""
    if instance.name in Role.values:
        _revoke_members_tokens(instance)


@receiver(pre_save, sender=Group)
def revoke_api_tokens_on_role_group_rename(sender, instance, raw=False, **kwargs):
    """Renaming a group to or from a role's name changes its members' role without an m2m_changed signal."""
    if raw or instance.pk is None:
        return
    previous = Group.objects.filter(pk=instance.pk).values_list("name", flat=True).first()
    if previous is not None and previous != instance.name and (previous in Role.values or instance.name in Role.values):
        _revoke_members_tokens(instance)


def _revoke_members_tokens(group) -> None:
    from .models import ApiToken

    ApiToken.objects.filter(user__groups=group).delete()
