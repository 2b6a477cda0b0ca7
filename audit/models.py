from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class AuditEvent(models.Model):
    """One thing that happened, append-only: who did what to which object, and when."""

    class Action(models.TextChoices):
        SIGN_IN = "sign_in", _("Sign-in")
        SIGN_IN_FAILED = "sign_in_failed", _("Failed sign-in")
        SIGN_OUT = "sign_out", _("Sign-out")
        USER_APPROVED = "user_approved", _("User approved")
        ROLE_CHANGED = "role_changed", _("Role changed")
        CASE_CREATED = "case_created", _("Case created")
        UPLOAD = "upload", _("Image uploaded")
        UPLOAD_REJECTED = "upload_rejected", _("Upload rejected")
        IMAGE_VIEWED = "image_viewed", _("Image viewed")
        CLASSIFICATION_RETRIED = "classification_retried", _("Classification retried")
        REVIEW = "review", _("Review")
        SIGN_OFF = "sign_off", _("Case signed")
        AMENDMENT = "amendment", _("Amendment")
        EXPORT = "export", _("Export")
        MODEL_IMPORTED = "model_imported", _("Model imported")
        MODEL_ACTIVATED = "model_activated", _("Model activated")
        LABORATORY_CREATED = "laboratory_created", _("Laboratory added")
        LABORATORY_CHANGED = "laboratory_changed", _("Laboratory changed")
        CASE_ESCALATED = "case_escalated", _("Case escalated for review (imaged unlike the training data)")

    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    # Users are deactivated, never deleted: an event keeps pointing at its actor.
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    actor_email = models.CharField(max_length=254, blank=True)
    action = models.CharField(max_length=40, choices=Action.choices, db_index=True)
    object_type = models.CharField(max_length=60, blank=True)
    object_id = models.CharField(max_length=64, blank=True)
    details = models.JSONField(default=dict, blank=True)
    ip_address = models.GenericIPAddressField(null=True, blank=True)
    # The hash chain (audit.chain): filled in batches by `seal`, after the event is written, so recording an
    # event stays one plain INSERT. The database lets an update fill these two and change nothing else.
    chain_seq = models.PositiveBigIntegerField(null=True, blank=True, unique=True, editable=False)
    chain_hash = models.CharField(max_length=64, blank=True, default="", editable=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["object_type", "object_id"])]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.actor_email or 'system'} {self.action}"

    def save(self, *args, **kwargs):
        if self.pk is not None:
            raise PermissionError("Audit events are append-only.")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise PermissionError("Audit events are append-only.")
