"""Recovery at start-up: send interrupted classifications again, remove orphan store files, seal the audit trail.

`make run` runs it before the server (the embedded default has no periodic tasks); in production run it
after a crash or at deploy (it then requeues only stale images; beat does that every minute anyway).
"""

from django.core.management.base import BaseCommand

from audit.chain import seal
from cases.recovery import recover
from cases.thumbnails import count_missing


class Command(BaseCommand):
    help = "Recover after a crash: requeue interrupted images, remove orphan encrypted files, seal the audit trail."

    def add_arguments(self, parser):
        parser.add_argument(
            "--all-pending",
            action="store_true",
            default=None,
            help="Requeue every queued/classifying image (default only in the embedded default, where no worker "
            "can be busy with them).",
        )
        parser.add_argument(
            "--grace-seconds",
            type=float,
            default=None,
            help="Only files older than this are orphans (default ORPHAN_FILE_GRACE_SECONDS, 3600).",
        )

    def handle(self, **options):
        result = recover(all_pending=options["all_pending"], grace_seconds=options["grace_seconds"])
        self.stdout.write(f"{result['orphans_removed']} orphan file(s) removed from the private store")
        self.stdout.write(f"{result['requeued']} interrupted image(s) sent for classification")
        for description, count in result.get("others", {}).items():
            self.stdout.write(f"{count} {description}")
        self.stdout.write(f"{seal()} audit event(s) sealed")
        without_thumbnail = count_missing()
        if without_thumbnail:
            # Not made here: decoding every older image would hold up the start; it is a one-off, run on its own.
            self.stdout.write(
                f"{without_thumbnail} older image(s) have no stored thumbnail: run `manage.py backfill_thumbnails`"
            )
