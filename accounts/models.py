from django.contrib.auth.models import AbstractUser, BaseUserManager
from django.db import models
from django.utils.translation import gettext_lazy as _

from .roles import Role


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
    # Who ended the account's access. An account an administrator deactivated (or one deactivated
    # outside the people page, e.g. in Django's admin) can be given a role again only by an administrator.
    deactivated_at = models.DateTimeField(null=True, blank=True)
    deactivated_by = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    deactivated_by_admin = models.BooleanField(default=False)
    # What the person told us at sign-up. The laboratory is free text: accounts sits below cases (where
    # Laboratory lives) and a newcomer's lab may not be registered yet. The requested role is only a
    # request: the account stays pending until a people manager grants a role (pre-selected from this).
    laboratory = models.CharField(_("laboratory"), max_length=120, blank=True)
    requested_role = models.CharField(_("requested role"), max_length=20, blank=True, choices=Role.choices)

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


class ApiToken(models.Model):
    """A credential for the API. Only a hash of the key is stored: the key is shown once, when issued.

    Tokens expire (settings.API_TOKEN_TTL_DAYS) and are revoked when the password changes, the role
    changes or the account is deactivated (accounts.services.revoke_api_tokens).
    """

    user = models.ForeignKey(User, on_delete=models.CASCADE, related_name="api_tokens")
    key_hash = models.CharField(max_length=64, unique=True, editable=False)
    # The key's first characters, to tell one's tokens apart without revealing them.
    prefix = models.CharField(max_length=8, editable=False)
    created_at = models.DateTimeField(auto_now_add=True)
    expires_at = models.DateTimeField(db_index=True)
    last_used_at = models.DateTimeField(null=True, blank=True)
    # Issued after a TOTP code was checked; roles that require a second factor accept only such tokens.
    second_factor = models.BooleanField(default=False)

    class Meta:
        ordering = ["-created_at"]

    def __str__(self) -> str:
        return f"{self.prefix}… ({self.user})"
