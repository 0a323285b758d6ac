"""The site's Content-Security-Policy in a real browser (gunicorn, Debian chromium).

Every page a user meets loads under the enforced policy with nothing refused (the
``browser_context`` fixture fails any browser test on a refusal, so the tool's browser-side
decoding with onnxruntime-web's WebAssembly and workers is checked by its own tests); here the
pages no other browser test opens: the API docs (Swagger UI, its script a request of its own),
Django's admin, and every page of a project in one walk. A script injected into a page does
not run, and a page cannot be framed by another site.
"""

from typing import Any

import pytest
from django.contrib.auth.models import User

from annotation.models import Project
from tests.e2e.conftest import LiveWeb
from tests.e2e.test_narrow_pages import engine_rows
from tests.e2e.test_review import closes_its_connection
from tests.e2e.test_rounds_page import log_in

pytestmark = [pytest.mark.e2e, pytest.mark.django_db(transaction=True)]

# An inline script added at run time, as an injected one would be: it must not run, and the
# browser reports the refusal as a securitypolicyviolation event.
INJECT_SCRIPT = """() => new Promise((resolve) => {
    document.addEventListener('securitypolicyviolation', (event) => {
        resolve({ran: window.__injected === true, directive: event.effectiveDirective});
    }, {once: true});
    const script = document.createElement('script');
    script.textContent = 'window.__injected = true;';
    document.body.appendChild(script);
    setTimeout(() => resolve({ran: window.__injected === true, directive: null}), 3000);
})"""


def policy_of(page: Any, url: str) -> str:
    response = page.goto(url)
    assert response is not None, url
    assert response.ok, f"{url}: {response.status}"
    header = response.headers.get("content-security-policy")
    assert header, f"{url} has no Content-Security-Policy"
    return str(header)


@closes_its_connection
def test_every_page_of_a_project_loads_under_the_policy(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    rows = engine_rows(project, admin_user)
    page = browser_context.new_page()
    login = policy_of(page, f"{live_web.url}/accounts/login/")
    assert "script-src 'self' 'wasm-unsafe-eval'" in login
    assert "frame-ancestors 'none'" in login
    log_in(page, live_web, "alice")
    base = f"{live_web.url}/projects/{project.pk}"
    pages = {
        f"{live_web.url}/": "main",
        f"{base}/": "#jobs-table",
        f"{base}/stats/": "main",
        f"{base}/review/": "main",
        f"{base}/dashboard/": f'[data-promote="{rows["seed"].pk}"]',
        f"{base}/rounds/": "#rounds-table",
        f"{live_web.url}/jobs/{rows['run'].pk}/": "main",
    }
    for url, ready in pages.items():
        policy_of(page, url)
        page.wait_for_selector(ready)
        page.wait_for_load_state("networkidle")
    # The fixture fails the test on any refusal these pages caused.


@closes_its_connection
def test_the_api_docs_render_with_their_script_from_the_server(
    project: Project, admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    policy_of(page, f"{live_web.url}/api/docs/")
    # Swagger UI drew the operations from the schema: its script ran.
    page.wait_for_selector("#operations-images-images_decode", timeout=60_000)
    assert page.locator(".opblock").count() > 20
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert background == "rgb(250, 250, 250)"  # the style moved out of the inline <style>


@closes_its_connection
def test_the_django_admin_loads_under_the_policy(
    admin_user: User, live_web: LiveWeb, browser_context: Any
) -> None:
    User.objects.filter(pk=admin_user.pk).update(is_staff=True, is_superuser=True)
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    for path in ("/admin/", "/admin/auth/user/", f"/admin/auth/user/{admin_user.pk}/change/"):
        policy_of(page, f"{live_web.url}{path}")
        page.wait_for_selector("#content")
        page.wait_for_load_state("networkidle")


@pytest.mark.csp_refusals
@closes_its_connection
def test_an_injected_script_does_not_run(
    project: Project, live_web: LiveWeb, browser_context: Any
) -> None:
    page = browser_context.new_page()
    log_in(page, live_web, "alice")
    policy_of(page, f"{live_web.url}/projects/{project.pk}/")
    outcome = page.evaluate(INJECT_SCRIPT)
    assert outcome == {"ran": False, "directive": "script-src-elem"}


@pytest.mark.csp_refusals
@closes_its_connection
def test_another_site_cannot_frame_a_page(live_web: LiveWeb, browser_context: Any) -> None:
    page = browser_context.new_page()

    def other_site(route: Any) -> None:
        body = f'<!doctype html><iframe id="f" src="{live_web.url}/accounts/login/"></iframe>'
        route.fulfill(body=body, content_type="text/html")

    page.route("http://elsewhere.test/**", other_site)
    page.goto("http://elsewhere.test/")
    page.wait_for_timeout(1500)
    frame = page.frame_locator("#f")
    assert frame.locator("#id_username").count() == 0
