from django.contrib.admin.apps import AdminConfig as DjangoAdminConfig


class AdminConfig(DjangoAdminConfig):
    """django.contrib.admin with the site that requires the site's own sign-in and a second factor."""

    default_site = "accounts.admin_site.AdminSite"
