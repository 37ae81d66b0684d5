# orderpipe image for docker-compose.yml: web (gunicorn) and worker (consume_orders).
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first: this layer is rebuilt only when the pins change.
COPY requirements/base.txt requirements/base.txt
RUN pip install -r requirements/base.txt

COPY . .

# Static files for the admin and the browsable API, served by WhiteNoise under gunicorn.
RUN DEBUG=true python manage.py collectstatic --noinput --verbosity 0

RUN useradd --system --uid 10001 --home-dir /app app \
    && mkdir -p /app/logs \
    && chown app /app/logs
USER app

EXPOSE 8000
CMD ["gunicorn", "orderpipe.wsgi", "--bind=0.0.0.0:8000", "--worker-class=gthread", "--threads=4", "--access-logfile=-"]
