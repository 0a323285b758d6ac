"""Automatic and prefill runs: the generator over many images, fanned out over gpu workers.

- ``lifecycle``: start (settings resolved and pinned, rows created, chunks queued), cancel,
  resume, and the handing out of chunks;
- ``runner``: one chunk on a worker (per image: generate, write masks, mark done);
- ``generation``: the generator with stored-embedding reuse and per-stage timings;
- ``params``: default settings, overrides and their validation;
- ``selectors``: reads for the API, the web page and the CLI.
"""

from engine.services.automatic.lifecycle import (
    AutomaticRefused,
    automatic_cancel,
    automatic_resume,
    automatic_start,
)
from engine.services.automatic.params import (
    AUTOMATIC,
    PREFILL,
    InvalidAutomaticSettings,
    project_automatic_settings_set,
)
from engine.services.automatic.runner import automatic_chunk_run

__all__ = [
    "AUTOMATIC",
    "PREFILL",
    "AutomaticRefused",
    "InvalidAutomaticSettings",
    "automatic_cancel",
    "automatic_chunk_run",
    "automatic_resume",
    "automatic_start",
    "project_automatic_settings_set",
]
