from django.apps import AppConfig
from django.db.models.signals import post_migrate
from django.utils.translation import gettext_lazy as _


def _register_bundled_candidate(sender, **kwargs):
    from django.db import DatabaseError

    from .services import register_bundled_candidate

    try:
        register_bundled_candidate()
    except DatabaseError:  # migrating backwards: the table may be gone
        pass


class InferenceConfig(AppConfig):
    name = "inference"
    verbose_name = _("Models and inference")

    def ready(self):
        # An upgrade runs `migrate`: a new bundled model is registered then as a candidate beside an
        # adapted, trained or imported active version (which it never replaces by itself).
        post_migrate.connect(_register_bundled_candidate, sender=self, dispatch_uid="inference-bundled-candidate")

    def recover_after_crash(self) -> dict[str, int]:
        """`manage.py recover` calls this on every app that has it: adaptation jobs whose worker died end
        as failed (cases runs the command but knows nothing of them)."""
        from .adaptation import recover_after_crash

        return recover_after_crash()
