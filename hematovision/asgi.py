import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "hematovision.settings.local")
django.setup(set_prefix=False)  # before the middleware module, which imports django.contrib.auth's

from hematovision.django_middleware import get_loop_asgi_application  # noqa: E402
from hematovision.request_threads import ReusedRequestThreads  # noqa: E402

application = ReusedRequestThreads(get_loop_asgi_application())
