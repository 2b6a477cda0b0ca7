from django.conf import settings
from django.db import models
from django.utils.translation import gettext_lazy as _


class Notification(models.Model):
    """One message to one person, shown in the app (until read) and sent by email."""

    class Kind(models.TextChoices):
        SIGNUP_PENDING = "signup_pending", _("Sign-up awaiting approval")
        ACCOUNT_APPROVED = "account_approved", _("Account approved")
        CASE_AWAITING_REVIEW = "case_awaiting_review", _("Case awaiting review")
        CLASSIFICATION_FAILED = "classification_failed", _("Classification failed")
        CRITICAL_FINDING = "critical_finding", _("Critical finding")

    recipient = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="notifications")
    kind = models.CharField(max_length=40, choices=Kind.choices)
    title = models.CharField(max_length=200)
    body = models.TextField(blank=True)
    link = models.CharField(max_length=300, blank=True, help_text="A path inside the site, e.g. /cases/12/review/.")
    # The same event is notified once per person (e.g. "case 12 awaits review" while unread).
    key = models.CharField(max_length=120, blank=True, db_index=True)
    created_at = models.DateTimeField(auto_now_add=True, db_index=True)
    read_at = models.DateTimeField(null=True, blank=True)
    emailed = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at", "-id"]
        indexes = [models.Index(fields=["recipient", "read_at"], name="notification_unread")]

    def __str__(self) -> str:
        return f"{self.get_kind_display()} for {self.recipient_id}: {self.title}"
