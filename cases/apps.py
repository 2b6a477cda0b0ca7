from django.apps import AppConfig
from django.db.models.signals import post_migrate, pre_migrate
from django.utils.translation import gettext_lazy as _


def _drop_guards(sender, using="default", **kwargs):
    from django.db import connections

    from .db_guards import drop_case_guards

    drop_case_guards(connections[using])


def _install_guards(sender, using="default", **kwargs):
    from django.db import connections

    from .db_guards import install_case_guards

    install_case_guards(connections[using])


class CasesConfig(AppConfig):
    name = "cases"
    verbose_name = _("Cases and cell images")

    def ready(self):
        # Reviews and signed cases are guarded by triggers (cases/db_guards.py); migrations run without them.
        pre_migrate.connect(_drop_guards, sender=self, dispatch_uid="hv_cases_drop_guards")
        post_migrate.connect(_install_guards, sender=self, dispatch_uid="hv_cases_install_guards")
