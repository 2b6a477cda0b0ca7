import os

from django.conf import settings
from django.core.wsgi import get_wsgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
application = get_wsgi_application()

# The embedded default (runserver, no broker) classifies uploads in this process: load the model and make
# its first-call costs now, in the background, rather than in the first upload. A web process with a
# broker never classifies, and never loads TensorFlow or LiteRT (gunicorn.conf.py).
if settings.CELERY_TASK_ALWAYS_EAGER and os.environ.get("HEMATOVISION_WARM_UP", "1") != "0":
    from inference.warmup import warm_up_in_background

    warm_up_in_background(process=f"web process pid={os.getpid()} (tasks in-process)")
