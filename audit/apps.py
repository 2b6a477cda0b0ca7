from django.apps import AppConfig
from django.core.signals import request_finished
from django.db.backends.signals import connection_created
from django.db.models.signals import post_migrate, pre_migrate
from django.utils.translation import gettext_lazy as _


def _drop_guards(sender, using="default", **kwargs):
    from django.db import connections

    from .db_guards import drop_audit_guards

    drop_audit_guards(connections[using])


def _install_guards(sender, using="default", **kwargs):
    from django.db import connections

    from .db_guards import install_audit_guards
    from .models import AuditEvent

    install_audit_guards(connections[using], AuditEvent)


class AuditConfig(AppConfig):
    name = "audit"
    verbose_name = _("Audit trail")

    def ready(self):
        from .db_guards import register_sqlite_functions

        connection_created.connect(register_sqlite_functions, dispatch_uid="hv_register_sqlite_functions")
        # Without beat (the embedded default), the trail is sealed after responses, at most once a minute.
        from .chain import seal_if_due

        request_finished.connect(seal_if_due, dispatch_uid="hv_audit_seal_if_due")
        # Migrations run without the append-only triggers (SQLite rebuilds tables); they are back afterwards.
        pre_migrate.connect(_drop_guards, sender=self, dispatch_uid="hv_audit_drop_guards")
        post_migrate.connect(_install_guards, sender=self, dispatch_uid="hv_audit_install_guards")
