"""In the real browser: click -> mask overlay drawn, decoding on the server vs in the browser.

    .venv/bin/python bench/browser_latency.py  # tiny, vit_b, official, seed; 1500x1000, 40 clicks
    .venv/bin/python bench/browser_latency.py --models tiny --clicks 20 --width 800 --height 600

A temporary platform (SQLite, local blobs, ``DJANGO_DEBUG=0``, static files collected) served
by gunicorn on loopback, and Debian's chromium (headless, through Playwright) running the
annotation tool. Four model versions, each the deployed version of its own project, with one
synthetic image:

* ``tiny``: the golden vit_tiny checkpoint of the tests, with the embedding its encoder computes;
* ``vit_b``: a seeded random-weight vit_b checkpoint (the official decoder's size: 256 channels,
  MLP 2048, 8 heads; its ONNX decoder exported by ``engine/sam/onnx_export.py`` at import) with
  a seeded random 1 x 256 x 64 x 64 embedding stored as a worker would. Decoding time does not
  depend on the weights' values;
* ``official``: the official decoder (the same size) with trained weights on vit_tiny's
  encoder (bench/trained_decoder.py, trained once and cached under var/), on a synthetic scene
  of its domain: the decoder of every official checkpoint, answering with real masks;
* ``seed``: the trained seed model (training/seed, vit_tiny) on a synthetic scene of its domain,
  embedded by its encoder. ``tiny`` and ``vit_b`` answer with noise-like masks (hundreds of
  thousands of runs to send, decode and draw); the masks of ``official`` and the seed are real
  objects, so their rows are the figures an annotator meets (with official weights and the
  demo model).

For each model and path (``?decoder=server``: ``POST /api/images/{id}/decode/``;
``?decoder=browser``: onnxruntime-web, WebAssembly, in the page, running the version's low-res
decoder variant ``GET .../onnx/?variant=low_res`` and resizing only the shown candidate in
JavaScript, ``annotation/static/annotation/tool/upscale.js``) the tool is opened, warmed up
with a few clicks (model load, wasm compile), then clicked ``--clicks`` times at seeded random
points (on the scene's objects for ``official`` and ``seed``, as an annotator clicks), each a
fresh first click (Esc in between: one point, three candidates). The figure is
the tool's own measurement: from the click's ``pointerup`` event to the end of the animation
frame that draws the new mask (``window.maskloopTool.latencies``), i.e. decode + upscale of the
chosen candidate + drawing. Prints p50 / p95 / mean per model and path.

Measured (this 2-core box, chromium headless, wasm threads 2, default arguments; noisy: another
engineer shares the CPUs), p50 ms server / browser:
  before the low-res variant (official graph, 4 masks upscaled in wasm): tiny 92.9 / 68.0,
  vit_b 143.7 / 145.1;
  with it (server path also sped up meanwhile by other work): tiny 66.7 / 46.0,
  vit_b 107.9 / 121.0.
2026-12-06, same machine, A/B in one session: the export's upscaling channel-last with the pixel
shuffle deferred to the mask logits (MaskDecoder.predict_masks(deferred_shuffle=True); Python
onnxruntime on the vit_b low-res graph: 69.7 -> 30.5 ms): vit_b browser 142.3 -> 129.0
(server 113.5 / 119.3 in the two runs), tiny browser 44.4 -> 43.4.
2026-12-06, eighth session, a 2-core AMD VM (AVX2), `27271da` + the seed rows, two runs:
tiny 72.1 / 46.8 and 73.7 / 53.3, vit_b 116.5 / 146.5 and 112.9 / 142.3, seed 57.7 / 38.5.
Where the seed's server click goes (Resource Timing and Server-Timing read in the page,
throwaway probe): fetch 43 ms, of which the server's decoder call 30 ms and its view 35 ms,
then 4.4 ms to compose and paint the mask and the wait for the next animation frame. The same
server answers the HTTP bench's first clicks in 20 ms: on one 2-core machine chromium's own
work after the click shares the cores with the decoder, which a remote browser does not.
"""

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))
from bench.decode_clients import clicks as object_clicks  # noqa: E402 - after the path insert
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

CHROMIUM = "/usr/bin/chromium"
WARMUP_CLICKS = 3


def build_platform(root: Path, models: list[str], width: int, height: int) -> dict[str, int]:
    """Migrate, collect static files; a user, one project per model, its image and embedding.
    Returns {model name: project id}."""
    import django
    from django.core.management import call_command

    django.setup()
    call_command("migrate", verbosity=0)
    call_command("collectstatic", "--noinput", verbosity=0)
    from django.contrib.auth.models import User

    from annotation.services.ingest import images_ingest_batch
    from annotation.services.projects import project_create
    from engine.services.embeddings import embedding_compute
    from engine.services.registry import model_version_import

    user = User.objects.create_user("bench", password="bench-pass-123")
    projects = {}
    for name in models:
        project = project_create(name=f"bench-{name}", creator=user)
        png = bench_png(name, width, height)
        [outcome] = images_ingest_batch(project=project, files=[("bench.png", png)])
        assert outcome.image is not None
        image = outcome.image
        path = bench_checkpoint(name, root)
        version = model_version_import(project=project, path_or_file=path, deploy=True)
        if name not in RANDOM_EMBEDDING:
            embedding_compute(image_id=image.pk, model_version_id=version.pk)
        else:
            path.unlink()
            store_random_embedding(
                version_id=version.pk, image_sha256=image.sha256, width=width, height=height
            )
        projects[name] = project.pk
    return projects


def start_server(env: dict[str, str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with log.open("wb") as sink:
        return subprocess.Popen(
            [str(REPO / ".venv" / "bin" / "gunicorn"), "config.wsgi", "--bind",
             f"127.0.0.1:{port}", "--workers", "1", "--threads", "4", "--timeout", "300"],
            cwd=REPO, env=env, stdout=sink, stderr=subprocess.STDOUT,
        )  # fmt: skip


def wait_http(url: str, process: subprocess.Popen[bytes], log: Path) -> None:
    import urllib.request

    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"the server exited:\n{log.read_text()[-3000:]}")
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(0.3)
    raise RuntimeError(f"{url} did not answer")


def measure(
    page: Any,
    url: str,
    path: str,
    clicks: int,
    seed: int,
    objects: list[np.ndarray] | None = None,
) -> list[float]:
    """Open the tool on one decoding path and return its click -> overlay latencies (ms); with
    the image's `objects` (bool H x W masks) each click lands on one, else anywhere."""
    page.goto(url)
    page.wait_for_function(
        "() => document.getElementById('tool').dataset.state === 'ready'", timeout=300_000
    )
    active = page.locator("#tool").get_attribute("data-decoder")
    if active != path:
        raise RuntimeError(f"asked for {path} decoding, the tool uses {active!r}")
    rng = np.random.default_rng(seed)
    width, height = page.evaluate(
        "[window.maskloopTool.image.width, window.maskloopTool.image.height]"
    )
    count = WARMUP_CLICKS + clicks
    if objects is not None:
        points = [(x, y) for x, y, _ in object_clicks(seed, width, height, count, objects=objects)]
    else:
        points = [
            (rng.uniform(0.1, 0.9) * width, rng.uniform(0.1, 0.9) * height) for _ in range(count)
        ]
    for x, y in points:
        page.keyboard.press("Escape")
        before = page.evaluate("window.maskloopTool.latencies.length")
        sx, sy = page.evaluate(
            """([x, y]) => {
                const tool = window.maskloopTool;
                const rect = tool.canvas.getBoundingClientRect();
                const [sx, sy] = tool.view.toScreen(x, y);
                return [rect.left + sx, rect.top + sy];
            }""",
            [x, y],
        )
        page.mouse.click(sx, sy)
        page.wait_for_function(
            f"() => window.maskloopTool.latencies.length > {before}", timeout=300_000
        )
    latencies = page.evaluate("window.maskloopTool.latencies.map((l) => [l.path, l.ms])")
    assert all(p == path for p, _ in latencies), latencies
    return [ms for _, ms in latencies[WARMUP_CLICKS:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument(
        "--models", default=",".join(MODELS), help=f"comma list of {', '.join(MODELS)}"
    )
    parser.add_argument("--clicks", type=int, default=40, help="measured clicks per model/path")
    parser.add_argument("--width", type=int, default=1500)
    parser.add_argument("--height", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    models = [m.strip() for m in args.models.split(",") if m.strip()]
    if set(models) - set(MODELS):
        parser.error(f"unknown models {models}")
    from playwright.sync_api import sync_playwright

    with tempfile.TemporaryDirectory(prefix="maskloop-browser-bench-") as tmp:
        root = Path(tmp)
        env = platform_env(root)
        os.environ.update(env)
        projects = build_platform(root, models, args.width, args.height)
        objects = {model: bench_objects(model, args.width, args.height) for model in models}

        port = free_port()
        log = root / "web.log"
        server = start_server(env, port, log)
        base = f"http://127.0.0.1:{port}"
        rows = []
        try:
            wait_http(f"{base}/accounts/login/", server, log)
            with sync_playwright() as playwright:
                browser = playwright.chromium.launch(
                    executable_path=CHROMIUM, headless=True, args=["--no-sandbox"]
                )
                page = browser.new_page(viewport={"width": 1400, "height": 900})
                page.goto(f"{base}/accounts/login/")
                page.fill("#id_username", "bench")
                page.fill("#id_password", "bench-pass-123")
                page.click("form button[type=submit]")
                page.wait_for_url(f"{base}/")
                threads = None
                for model in models:
                    for path in ("server", "browser"):
                        url = f"{base}/projects/{projects[model]}/annotate/?decoder={path}"
                        ms = measure(page, url, path, args.clicks, args.seed, objects[model])
                        if path == "browser":
                            threads = page.evaluate("window.maskloopTool.decoder.threads")
                        rows.append((model, path, ms))
                browser.close()
        finally:
            server.terminate()
            server.wait(timeout=30)

    print(
        f"click -> overlay drawn, chromium headless, image {args.width}x{args.height}, "
        f"{args.clicks} clicks per row after {WARMUP_CLICKS} warm-up, "
        f"{os.cpu_count()} CPU cores, browser wasm threads {threads}"
    )
    print(f"{'model':<7} {'path':<8} {'p50 ms':>8} {'p95 ms':>8} {'mean ms':>8}")
    p50s: dict[tuple[str, str], float] = {}
    for model, path, ms in rows:
        values = np.array(ms)
        p50s[(model, path)] = float(np.percentile(values, 50))
        print(
            f"{model:<7} {path:<8} {np.percentile(values, 50):8.1f} "
            f"{np.percentile(values, 95):8.1f} {values.mean():8.1f}"
        )
    for model in models:
        ratio = p50s[(model, "browser")] / p50s[(model, "server")]
        print(f"{model}: browser p50 / server p50 = {ratio:.2f}")


if __name__ == "__main__":
    main()
