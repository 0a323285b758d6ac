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

echo "maskloop: http://$HOST:$PORT/  (API docs: http://$HOST:$PORT/api/docs/)"
"$BIN/gunicorn" config.wsgi --bind "$HOST:$PORT" --workers 2 --threads 4 --timeout 120 \
  --access-logfile -
