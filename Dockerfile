# One image for every maskloop process: web (gunicorn), Celery workers (queues default and gpu)
# and beat. docker-compose.yml picks the process with `command:`.

# The annotation tool's browser runtime (onnxruntime-web), pinned by package-lock.json; only its
# three runtime files reach the final image (what `make web-deps` copies to vendor/static/).
FROM node:20-slim AS web-deps
WORKDIR /web
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund --loglevel=error \
 && mkdir -p vendor/static/onnxruntime-web \
 && cd node_modules/onnxruntime-web/dist \
 && cp ort.wasm.min.mjs ort-wasm-simd-threaded.mjs ort-wasm-simd-threaded.wasm \
       /web/vendor/static/onnxruntime-web/

FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    MASKLOOP_VAR_DIR=/app/var

WORKDIR /app

# Dependencies first, so that a code change does not reinstall them. The pins are the same as
# `make run` uses: requirements.txt constrained by the full pin set in constraints.txt.
# On x86_64, PyPI's torch wheel carries the CUDA runtime, so the GPU worker runs this same image.
COPY requirements.txt constraints.txt ./
RUN pip install -r requirements.txt -c constraints.txt

# The code stays owned by root; the app user can write only under var/: static files, tmp/
# (exports are assembled there before upload) and beat's schedule file. Blobs, database and
# broker live in S3, PostgreSQL and Redis.
RUN useradd --system --uid 10001 --create-home --home-dir /home/maskloop maskloop
COPY . .
COPY --from=web-deps /web/vendor/static/onnxruntime-web /app/vendor/static/onnxruntime-web
RUN mkdir -p /app/var/tmp && chown -R maskloop:maskloop /app/var
USER maskloop

# Static files at build time; the secret is a throwaway that only satisfies the DEBUG=0 check.
RUN DJANGO_DEBUG=0 DJANGO_SECRET_KEY=build-time-collectstatic-only \
    python manage.py collectstatic --noinput -v 0

EXPOSE 8000
CMD ["gunicorn", "config.wsgi", "--bind", "0.0.0.0:8000", "--workers", "4", "--threads", "4", \
     "--timeout", "120", "--access-logfile", "-"]
