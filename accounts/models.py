from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models


class UserManager(BaseUserManager):
    use_in_migrations = True

    def _create_user(self, email, password, **extra_fields):
        if not email:
            raise ValueError("An email address is required.")
        user = self.model(email=self.normalize_email(email).lower(), **extra_fields)
        user.set_password(password)
        user.save(using=self._db)
        return user

    def create_user(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", False)
        extra_fields.setdefault("is_superuser", False)
        return self._create_user(email, password, **extra_fields)

    def create_superuser(self, email, password=None, **extra_fields):
        extra_fields.setdefault("is_staff", True)
        extra_fields.setdefault("is_superuser", True)
        return self._create_user(email, password, **extra_fields)


class User(AbstractUser):
    """A person who signs in with an email address. Clinical access comes only with an approved role."""

    username = None
    email = models.EmailField("email address", unique=True)
    approved_at = models.DateTimeField(null=True, blank=True)
    approved_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")

    USERNAME_FIELD = "email"
    REQUIRED_FIELDS: list[str] = []

    objects = UserManager()

    class Meta:
        ordering = ["email"]
        permissions = [
            ("create_case", "Create cases and upload images"),
            ("view_cases", "See cases, images and predictions"),
            ("retry_classification", "Retry a failed classification"),
            ("review_cells", "Confirm or reclassify cells"),
            ("sign_case", "Sign off a case and amend a signed case"),
            ("view_dashboard", "See model performance dashboards"),
            ("view_audit", "See and download the audit trail"),
            ("manage_users", "Approve users and assign roles"),
            ("export_data", "Download anonymized exports"),
            ("manage_models", "Import and activate model versions"),
            ("view_errors", "See failed classifications and overrides"),
            ("manage_laboratories", "Add and edit laboratories and their instruments"),
        ]

    def __str__(self) -> str:
        return self.email

    @property
    def role(self) -> str | None:
        from .roles import role_of

        return role_of(self)

    @property
    def is_pending(self) -> bool:
        return self.is_authenticated and self.role is None
