"""Click -> mask on the server endpoint, next to the bare decoder call, in the same run.

    .venv/bin/python bench/decode_latency.py     # tiny, vit_b, official, seed; 1500 x 1000
    .venv/bin/python bench/decode_latency.py --models tiny --requests 50 --clicks 5

A real server process (gunicorn, as in production: ``config.wsgi``; ``--server runserver`` for
Django's) on loopback, on a temporary SQLite database and blob folder, serves
``POST /api/images/{id}/decode/`` with token authentication. Four model versions:

* ``tiny``: the golden vit_tiny checkpoint of the tests, with the embedding its encoder computes
  for a synthetic image (what a worker stores);
* ``vit_b``: a seeded random-weight vit_b checkpoint (the official decoder's size: 256
  channels, MLP 2048, 8 heads) with a seeded random 1 x 256 x 64 x 64 embedding stored as a
  worker would (float16 blob). The decoder's arithmetic does not depend on the weights'
  values, but its masks are noise-like: hundreds of thousands of runs, encoded in full;
* ``official``: the official decoder (the same size) with trained weights, on vit_tiny's
  encoder (bench/trained_decoder.py: trained once, 7.5 minutes here, then cached under var/),
  on a synthetic scene of its domain: what a click costs with an official vit_b / vit_l /
  vit_h checkpoint, whose decoders are all this one, and its real-looking masks;
* ``seed``: the trained seed model (training/seed, vit_tiny: a 64-channel decoder) on a
  synthetic scene of its domain, embedded by its encoder: the demo's model. Real masks are
  mostly constant tiles, decided from the low-res logits (engine.sam.boundary_masks).

The reference is the bare decoder call, ``SamPredictor.predict`` on the same embedding (set
once) with the same prompts, in this process with the same torch thread count. Each simulated
annotator works like the tool: a first click (multimask, three candidates), then clicks that
add a point and send the best candidate's ``mask_ref`` back; every ``--clicks`` clicks a new
object. On the scenes (``official``, ``seed``) the clicks land on the scene's objects (positive
on the object, negative in its box beside it); on the synthetic images anywhere. Round trip =
request sent -> JSON answer parsed, on one keep-alive connection per annotator (as a browser),
after warm-up requests that load the model and the embedding. ``--think-ms`` pauses before
each click, on both sides alike: a person looks at the mask between clicks, and meanwhile an
idle process's threads go to sleep (back to back, they never do; on a VM their wake-ups cost
milliseconds). A connection the server closed while idle (gunicorn's ``--keep-alive``, 2 s by
default, as ``make run``) is reopened, as a browser does, and that click is timed from the
reconnect; the report counts them.

Measured for each model: alone (one annotator, ``--requests`` clicks back to back, in blocks of
``--block`` clicks sent over HTTP and then, the same prompts, to the bare decoder: the machine's
speed drifts within a minute, so both are timed in alternating blocks) and with
``--annotators`` concurrent annotators (threads, ``--requests`` clicks in all, bounded). The
concurrent figures are compared with the bare decoder alone and with the bare decoder called
from as many threads at once (the same CPU contention without HTTP). Goal: HTTP p50 <= 1.2 x
the bare call. ``--torch-threads`` caps torch's intra-op threads on both sides: with many
concurrent requests, one OpenMP team per request thread oversubscribes the cores.

Figures, their history, the speed-ups behind them and the fixed per-request cost: docs/api.md
("Latency"). ``--workers 2 --torch-threads 1`` is ``make run``'s web server on 2 cores (its
workers share mask refs through the file cache, or ``--cache-url redis://...``).
"""

import argparse
import http.client
import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.decode_clients import (  # noqa: E402 - after the path insert
    Annotator,
    BareDecoder,
    Target,
    clicks,
    percentiles,
    prompt_steps,
    run_threads,
)
from bench.platform_setup import (  # noqa: E402 - after the path insert
    MODELS,
    RANDOM_EMBEDDING,
    bench_checkpoint,
    bench_objects,
    bench_png,
    free_port,
    platform_env,
    store_random_embedding,
)

# --- the temporary platform -----------------------------------------------------------------------


def build_platform(
    root: Path, models: list[str], width: int, height: int
) -> tuple[str, list[Target]]:
    """Migrate; a user with a token; per model a project, its deployed version, an image and its
    embedding."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from annotation.services.ingest import images_ingest_batch
    from annotation.services.projects import project_create
    from engine.models import ModelVersion
    from engine.sam.checkpoint import file_sha256, read_checkpoint
    from engine.services.embeddings import embedding_compute
    from engine.services.registry import checkpoint_key, model_version_deploy
    from storage.blobs import get_blob_store

    user = User.objects.create_user("bench", password=secrets.token_urlsafe(16))
    token = Token.objects.create(user=user).key
    store = get_blob_store()
    targets = []
    for name in models:
        # One project per model with its version deployed: the tool asks for the deployed
        # version, which the image query reads along (a non-deployed one costs a query more).
        project = project_create(name=f"bench-{name}", creator=user)
        png = bench_png(name, width, height)
        (ingested,) = images_ingest_batch(project=project, files=[(f"{name}.png", png)])
        image = ingested.image
        assert image is not None
        path = bench_checkpoint(name, root)
        sha256 = file_sha256(path)
        with path.open("rb") as handle:
            store.put_file(checkpoint_key(sha256), handle)
        loaded = read_checkpoint(path)
        version = ModelVersion.objects.create(
            project=project,
            name=name,
            arch=loaded.arch,
            config=loaded.config.to_dict(),
            checkpoint_key=checkpoint_key(sha256),
            sha256=sha256,
        )
        model_version_deploy(project=project, version=version)
        if name not in RANDOM_EMBEDDING:
            embedding_compute(image_id=image.pk, model_version_id=version.pk)
        else:
            store_random_embedding(
                version_id=version.pk, image_sha256=image.sha256, width=width, height=height
            )
        targets.append(Target(name, version.pk, image.pk, bench_objects(name, width, height)))
    return token, targets


def start_server(
    args: argparse.Namespace, env: dict[str, str], port: int
) -> subprocess.Popen[bytes]:
    if args.server == "gunicorn":
        command = [
            sys.executable, "-m", "gunicorn", "config.wsgi",
            "--bind", f"127.0.0.1:{port}",
            "--workers", str(args.workers), "--threads", str(args.threads),
            "--timeout", "120", "--log-level", "warning", "--keep-alive", str(args.keep_alive),
        ]  # fmt: skip
    else:
        command = [sys.executable, "manage.py", "runserver", "--noreload", f"127.0.0.1:{port}"]
        if args.threads <= 1:
            command.append("--nothreading")
    return subprocess.Popen(command, cwd=REPO, env=env)


def wait_ready(port: int, token: str, server: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        if server.poll() is not None:
            raise SystemExit(f"the server exited with {server.returncode}")
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
            connection.request("GET", "/api/projects/", headers={"Authorization": f"Token {token}"})
            if connection.getresponse().status == 200:
                return
        except OSError:
            pass
        time.sleep(0.2)
    raise SystemExit("the server did not answer within 120 s")


# --- main -----------------------------------------------------------------------------------------


def measure(
    args: argparse.Namespace, port: int, token: str, target: Target, width: int, height: int
) -> dict[str, Any]:
    bare = BareDecoder(target)

    def sequence(seed: int, count: int) -> list[tuple[list[list[float]], list[int], bool]]:
        placed = clicks(seed, width, height, count, objects=target.objects, per_object=args.clicks)
        return prompt_steps(placed, args.clicks)

    warm = sequence(999, 5)
    warmer = Annotator(port, token, target)
    for step in warm:  # loads the model and the embedding in the server
        warmer.click(*step)
    bare.session(warm)

    # Alone: one annotator, clicks back to back, in blocks of whole objects that go over HTTP
    # and then, the same prompts, to the bare decoder: the machine's speed drifts by tens of
    # percent within a minute, so both are timed in alternating blocks. (Click by click, the
    # other process's idle OpenMP team still spins on the cores at the start of each call.)
    think = args.think_ms / 1000
    alone = Annotator(port, token, target, think=think)
    http_alone: list[float] = []
    bare_alone: list[float] = []
    steps = sequence(1, args.requests)
    block = args.clicks * max(1, -(-args.block // args.clicks))
    floor: list[float] = []
    for start in range(0, len(steps), block):
        http_alone += [alone.click(*step) for step in steps[start : start + block]]
        bare_alone += bare.session(steps[start : start + block], think=think)
        for _ in steps[start : start + block]:
            if think:
                time.sleep(think)
            floor.append(alone.floor())

    # Concurrent: N annotators, requests split between them (bounded); 0 skips this part.
    http_many: list[float] = []
    bare_many: list[float] = []
    wall = 0.0
    if args.annotators > 0:
        each = max(1, args.requests // args.annotators)
        sessions = [sequence(100 + index, each) for index in range(args.annotators)]

        def annotate(index: int) -> list[float]:
            annotator = Annotator(port, token, target)
            return [annotator.click(*step) for step in sessions[index]]

        http_many, wall = run_threads(args.annotators, annotate)
        bare_many, _ = run_threads(args.annotators, lambda index: bare.session(sessions[index]))
    return {
        "model": target.name,
        "bare_alone": percentiles(bare_alone),
        "http_alone": percentiles(http_alone),
        "bare_concurrent": percentiles(bare_many) if bare_many else None,
        "http_concurrent": percentiles(http_many) if http_many else None,
        "throughput": len(http_many) / wall if wall else None,
        "answer_kb": float(np.mean(alone.answer_bytes)) / 1024,
        "empty": (alone.empty, alone.candidates),
        "reconnects": alone.reconnects,
        # Alone, p50 ms: the server's decoder call and its whole view (after authentication).
        "server_alone": {
            part: float(np.percentile([timing[part] for timing in alone.server_ms], 50))
            for part in ("decoder", "view")
        },
        # Alone, p50 ms: GET /healthz on the same connection, as often and at the same pace.
        "floor_alone": percentiles(floor)[0],
        "requests": (len(http_alone), len(http_many)),
    }


def report(
    results: list[dict[str, Any]], args: argparse.Namespace, width: int, height: int
) -> None:
    print(
        f"\nclick -> mask, {width} x {height} image, {args.server} "
        f"({args.workers} worker(s) x {args.threads} thread(s)), torch threads "
        f"{torch.get_num_threads()}, {os.cpu_count()} CPUs; times in ms (p50 / p95); "
        f"alone: {args.think_ms:g} ms between clicks"
    )
    header = (
        f"{'model':<7} {'case':<28} {'bare':>15} {'HTTP':>15} {'ratio p50':>10} {'ratio p95':>10}"
    )
    print(header)
    print("-" * len(header))
    for row in results:
        many = args.annotators
        cases = [
            ("alone", row["bare_alone"], row["http_alone"]),
            (f"{many} annotators vs bare alone", row["bare_alone"], row["http_concurrent"]),
            (f"{many} annotators vs bare x{many}", row["bare_concurrent"], row["http_concurrent"]),
        ]
        for case, bare, served in cases:
            if served is None or bare is None:  # --annotators 0: no concurrent phase
                continue
            print(
                f"{row['model']:<7} {case:<28} {bare[0]:7.1f} /{bare[1]:6.1f} "
                f"{served[0]:7.1f} /{served[1]:6.1f} {served[0] / bare[0]:9.2f}x "
                f"{served[1] / bare[1]:9.2f}x"
            )
        alone, concurrent = row["requests"]
        rate = f" at {row['throughput']:.1f} req/s" if row["throughput"] else ""
        print(
            f"{row['model']:<7} {'':<28} {alone} requests alone, {concurrent} concurrent{rate}, "
            f"answers {row['answer_kb']:.1f} KB on average ({row['empty'][0]} of "
            f"{row['empty'][1]} candidates empty), {row['reconnects']} reconnects alone"
        )
        server = row["server_alone"]
        print(
            f"{row['model']:<7} {'':<28} alone, server side (p50): decoder {server['decoder']:.1f}"
            f" ms, view {server['view']:.1f} ms (the rest: authentication, HTTP, JSON); "
            f"GET /healthz round trip {row['floor_alone']:.1f} ms"
        )
    print(json.dumps({"results": results}, indent=None))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma-separated: {', '.join(MODELS)}"
    )
    parser.add_argument("--size", default="1500x1000", help="image width x height")
    parser.add_argument("--requests", type=int, default=100, help="clicks per phase per model")
    parser.add_argument(
        "--annotators", type=int, default=20, help="concurrent annotators (0: alone only)"
    )
    parser.add_argument("--clicks", type=int, default=4, help="clicks per object")
    parser.add_argument(
        "--block",
        type=int,
        default=20,
        help="alone: clicks per block (whole objects), alternately over HTTP and bare",
    )
    parser.add_argument(
        "--think-ms",
        type=float,
        default=0.0,
        help="alone: pause before each click, HTTP and bare alike, not timed (an annotator "
        "looking at the mask); 0: back to back",
    )
    parser.add_argument("--server", choices=["gunicorn", "runserver"], default="gunicorn")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--threads", type=int, default=8)
    parser.add_argument(
        "--keep-alive",
        type=int,
        default=2,
        help="gunicorn's --keep-alive: seconds an idle connection stays open",
    )
    parser.add_argument(
        "--torch-threads",
        type=int,
        default=0,
        help="torch intra-op threads of the server and the bare calls (OMP_NUM_THREADS); "
        "0: torch's default (one per core)",
    )
    parser.add_argument(
        "--cache-url",
        default="",
        help="MASKLOOP_CACHE_URL, e.g. redis://... (default: the file cache of make run, which "
        "the workers of one machine share)",
    )
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.lower().split("x"))
    models = [name.strip() for name in args.models.split(",") if name.strip()]
    if set(models) - set(MODELS):
        parser.error(f"unknown models {models}")
    torch.set_grad_enabled(False)
    if args.torch_threads > 0:
        torch.set_num_threads(args.torch_threads)
    with tempfile.TemporaryDirectory(prefix="maskloop-decode-bench-") as folder:
        root = Path(folder)
        env = platform_env(root, args.cache_url)
        if args.torch_threads > 0:
            env["OMP_NUM_THREADS"] = env["MKL_NUM_THREADS"] = str(args.torch_threads)
        os.environ.update(env)
        token, targets = build_platform(root, models, width, height)
        port = free_port()
        server = start_server(args, env, port)
        try:
            wait_ready(port, token, server)
            results = [measure(args, port, token, t, width, height) for t in targets]
        finally:
            server.terminate()
            server.wait(timeout=30)
    report(results, args, width, height)


if __name__ == "__main__":
    main()
