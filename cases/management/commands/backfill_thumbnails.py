"""Store a thumbnail for every image uploaded before uploads stored one (cases/thumbnails.py).

Safe to run while the site is up, to stop at any point and to run again: it only reads rows that still have no
thumbnail. Images that cannot be read are counted and listed in the log, and the run goes on.
"""

from django.core.management.base import BaseCommand, CommandError

from cases.thumbnails import DEFAULT_BATCH_SIZE, backfill_thumbnails, count_missing


class Command(BaseCommand):
    help = "Store thumbnails for older images that have none (batched, resumable, safe to run again)."

    def add_arguments(self, parser):
        parser.add_argument(
            "--batch-size", type=int, default=DEFAULT_BATCH_SIZE, help="Rows read per batch (default 100)."
        )
        parser.add_argument(
            "--after-id",
            type=int,
            default=0,
            help="Start after this image id (the 'last id' a previous run printed): skips rows already tried.",
        )
        parser.add_argument("--limit", type=int, default=None, help="Try at most this many images, then stop.")
        parser.add_argument("--dry-run", action="store_true", help="Only count the images without a thumbnail.")

    def handle(self, **options):
        if options["batch_size"] < 1 or (options["limit"] is not None and options["limit"] < 0):
            raise CommandError("--batch-size must be at least 1 and --limit not negative.")
        missing = count_missing()
        self.stdout.write(f"{missing} image(s) without a stored thumbnail")
        if options["dry_run"] or not missing:
            return

        def report(progress):
            self.stdout.write(
                f"  {progress.made} made, {progress.unreadable} unreadable so far (last id {progress.last_id})"
            )

        progress = backfill_thumbnails(
            batch_size=options["batch_size"],
            after_id=options["after_id"],
            limit=options["limit"],
            on_batch=report,
        )
        self.stdout.write(
            f"{progress.made} thumbnail(s) made, {progress.unreadable} image(s) unreadable (see the log), "
            f"{progress.already_made} already made meanwhile; last id {progress.last_id}; "
            f"{count_missing()} image(s) still without a stored thumbnail"
        )
