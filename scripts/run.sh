#!/usr/bin/env bash
# Start one Celery worker (both queues) in the background and the web server in the foreground;
# Ctrl+C stops both.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=.venv/bin
HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8000}


# --beat: the scheduler (round schedules, housekeeping) runs inside this one worker.
"$BIN/celery" -A config worker -Q default,gpu --concurrency 1 --loglevel INFO --beat \
  --hostname "maskloop-local@%h" &
worker=$!
trap 'kill "$worker" 2>/dev/null || true; wait "$worker" 2>/dev/null || true' EXIT INT TERM

# Each web process decodes on one thread with one OpenMP team (engine.services.serving): give
# the processes cores / workers threads each, or under load their teams spin on each other's
# cores (2 workers on 2 cores, 20 annotators: p95 3.6 s with 2 threads each, 0.5 s with 1;
# bench/decode_latency.py --workers 2 --torch-threads N).
WEB_WORKERS=${WEB_WORKERS:-2}
cores=$(nproc)
WEB_TORCH_THREADS=${WEB_TORCH_THREADS:-$(( cores / WEB_WORKERS > 0 ? cores / WEB_WORKERS : 1 ))}

echo "maskloop: http://$HOST:$PORT/  (API docs: http://$HOST:$PORT/api/docs/)"
case "$HOST" in
  127.*|localhost|::1|\[::1\]) ;;
  *) if [ -z "${DJANGO_ALLOWED_HOSTS:-}" ]; then
       echo "maskloop: other machines get 400 until DJANGO_ALLOWED_HOSTS names the host they use," \
            "e.g. DJANGO_ALLOWED_HOSTS=myhost.example make run HOST=$HOST (docs/configuration.md)"
     fi ;;
esac
OMP_NUM_THREADS=$WEB_TORCH_THREADS MKL_NUM_THREADS=$WEB_TORCH_THREADS \
  "$BIN/gunicorn" config.wsgi --bind "$HOST:$PORT" --workers "$WEB_WORKERS" --threads 4 \
  --timeout 120 --access-logfile -
