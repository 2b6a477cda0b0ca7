from django.contrib import admin

from .models import ApiToken


@admin.register(ApiToken)
class ApiTokenAdmin(admin.ModelAdmin):
    """Tokens by prefix: the keys themselves are not stored. Deleting one revokes it."""

    list_display = ("prefix", "user", "created_at", "expires_at", "last_used_at", "second_factor")
    list_select_related = ("user",)
    search_fields = ("user__email", "prefix")
    readonly_fields = ("user", "prefix", "created_at", "expires_at", "last_used_at", "second_factor")
    exclude = ("key_hash",)

    def has_add_permission(self, request) -> bool:
        return False  # issued only by POST /api/v1/auth/token/, which shows the key once
