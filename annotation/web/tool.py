"""The annotation tool page: the canvas app under ``annotation/static/annotation/tool/``.

The page itself is a shell; everything the tool does goes through the REST API. It is served
cross-origin isolated (COOP ``same-origin`` + COEP ``require-corp``) so that onnxruntime-web
may use SharedArrayBuffer, i.e. WebAssembly threads, for browser-side decoding. Everything the
page loads is same-origin (static files, the API), which ``require-corp`` allows.
"""

from django.conf import settings
from django.contrib.auth.decorators import login_required
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET

from annotation.ids import id_from_query
from annotation.permissions import ANNOTATOR, require_role, role_in
from annotation.selectors.projects import project_get_for_user
from annotation.selectors.review import masks_sent_back

DECODER_CHOICES = ("auto", "browser", "server")
ISOLATION_HEADERS = {
    "Cross-Origin-Opener-Policy": "same-origin",
    "Cross-Origin-Embedder-Policy": "require-corp",
}


@require_GET
@login_required
def annotate(request: HttpRequest, project_id: int) -> HttpResponse:
    """The tool for one project: ``?image=<id>`` opens that image, else the next one needing
    work; ``?decoder=server|browser`` forces a decoding path (default ``auto``: the browser
    when it can, else the server)."""
    project = project_get_for_user(user=request.user, project_id=project_id)
    require_role(user=request.user, project=project, role=ANNOTATOR)
    decoder = request.GET.get("decoder", "auto")
    context = {
        "project": project,
        "role": role_in(user=request.user, project=project),
        "image_id": id_from_query(request.GET.get("image")),
        "decoder": decoder if decoder in DECODER_CHOICES else "auto",
        "idle_cap_seconds": settings.MASKLOOP_TOOL_IDLE_CAP_SECONDS,
        # The annotator's own masks reviewers rejected, anywhere in the project (a link).
        "sent_back": masks_sent_back(project=project, annotator_id=request.user.pk).count(),
    }
    response = render(request, "annotation/tool.html", context)
    for header, value in ISOLATION_HEADERS.items():
        response[header] = value
    return response
