# The web, worker and beat image of compose.yaml (production requirements only: LiteRT, no TensorFlow).
# Not built on the machine where it was written (no container engine there); see docs/operations.md.
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements/ requirements/
RUN pip install -r requirements/production.txt

COPY . .
# Production settings refuse to load without their secrets; collectstatic reads none of them, so
# throw-away values that exist only in this build step let it run. The real ones come at run time.
RUN SECRET_KEY=collectstatic-only DATABASE_URL=postgres://unused/unused EXPORT_PSEUDONYM_KEY=collectstatic-only \
    IMAGE_ENCRYPTION_KEYS=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA= \
    DJANGO_SETTINGS_MODULE=hematovision.settings.production python manage.py collectstatic --no-input

RUN useradd --system --uid 10001 hematovision && mkdir -p /data/private /data/models /data/var \
    && chown -R hematovision /data
USER hematovision

EXPOSE 8000
CMD ["gunicorn", "-c", "gunicorn.conf.py"]
