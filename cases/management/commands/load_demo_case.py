from django.core.management.base import BaseCommand

from cases.demo import load_demo_case


class Command(BaseCommand):
    help = (
        "Create the demo case (licensed sample cells, see cases/demo_cells/CREDITS.md) for the demo technician, "
        "classified by the active model. Does nothing when the demo case exists or there is no demo technician."
    )

    def handle(self, *args, **options):
        result = load_demo_case()
        style = self.style.SUCCESS if result.created else self.style.WARNING
        self.stdout.write(style(result.message))
