"""manage.py activate_model NAME [--force --reason TEXT]: make a version the serving one, from the shell.

Like the page and the API, it refuses a version without a recorded evaluation, unless --force is given
with a --reason (recorded in the audit trail).
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from inference.selectors import find_version
from inference.services import ActivationRefused, activate_version, rollback_version


class Command(BaseCommand):
    help = "Activate a model version (gated on a recorded evaluation unless forced with a reason), or roll back."

    def add_arguments(self, parser):
        parser.add_argument("name", nargs="?", help="model version name or id")
        parser.add_argument("--force", action="store_true", help="activate without a recorded evaluation")
        parser.add_argument("--reason", default="", help="why it is forced (required with --force; audited)")
        parser.add_argument("--rollback", action="store_true", help="bring back the version the active one replaced")

    def handle(self, *args, **options):
        if options["rollback"] and (options["name"] or options["force"] or options["reason"]):
            raise CommandError("--rollback brings back the previous version: a name, --force or --reason do nothing")
        if options["reason"] and not options["force"]:
            raise CommandError("--reason does nothing without --force")
        if options["rollback"]:
            try:
                version = rollback_version()
            except ActivationRefused as exc:
                raise CommandError(str(exc)) from exc
            self.stdout.write(f"rolled back: {version.name} is active")
            return
        if not options["name"]:
            raise CommandError("name a model version (or --rollback)")
        version = find_version(name_or_id=options["name"])
        if version is None:
            raise CommandError(f"no model version named {options['name']!r}")
        if options["force"] and not options["reason"].strip():
            raise CommandError("--force needs a --reason (it is recorded in the audit trail)")
        if version.is_active:
            self.stdout.write(f"{version.name} is already active")
            return
        try:
            activate_version(
                version,
                require_evaluation=not options["force"],
                forced_reason=options["reason"].strip() if options["force"] else "",
            )
        except ActivationRefused as exc:
            raise CommandError(f"{exc}; or force it: --force --reason TEXT") from exc
        self.stdout.write(f"{version.name} is active" + (" (forced, audited)" if options["force"] else ""))
