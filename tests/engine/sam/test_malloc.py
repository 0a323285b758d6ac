"""engine.sam.malloc: glibc keeps freed tensor blocks for reuse in a tuned process.

Each check runs in a child interpreter: mallopt settings are process-wide and cannot be undone.
"""

import json
import os
import platform
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]

# Allocate six 4 MiB tensors at once (a vit_b decoder's activations) and free them, 50 times;
# count the minor page faults of the last 40 rounds (the kernel handing out fresh pages).
_PROBE = """
import json, resource, sys
from engine.sam.malloc import tune_malloc, tuned_env
applied = tune_malloc()
import torch
def touch():
    live = [torch.empty(1024 * 1024) for _ in range(6)]
    for t in live:
        t.fill_(1.0)
    del live, t
for _ in range(10):
    touch()
before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
for _ in range(40):
    touch()
faults = resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before
print(json.dumps({"applied": applied, "faults": faults, "env": tuned_env()}))
"""


def _clean_env() -> dict[str, str]:
    """This environment without glibc's malloc variables and the opt-out."""
    return {
        k: v
        for k, v in os.environ.items()
        if not k.startswith("MALLOC_") and k != "MASKLOOP_TUNE_MALLOC"
    }


def _probe(**env: str) -> dict[str, object]:
    done = subprocess.run(
        [sys.executable, "-c", _PROBE],
        cwd=REPO,
        env={**_clean_env(), "OMP_NUM_THREADS": "1", **env},
        capture_output=True,
        text=True,
        timeout=120,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


glibc_only = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc",
    reason="the settings are glibc's",
)


@glibc_only
def test_a_tuned_process_reuses_freed_blocks_without_page_faults() -> None:
    tuned = _probe()
    untuned = _probe(MASKLOOP_TUNE_MALLOC="0")
    assert tuned["applied"] is True
    assert untuned["applied"] is False
    # Untuned, the heap top above glibc's trim limit goes back to the kernel at each round and
    # comes again as fresh pages: about 1,000 faults (4 KiB pages) a round here. Tuned, the
    # freed blocks are reused.
    assert isinstance(untuned["faults"], int)
    assert untuned["faults"] > 40 * 500
    assert isinstance(tuned["faults"], int)
    assert tuned["faults"] < 40 * 50
    assert tuned["env"] == {
        "MALLOC_MMAP_THRESHOLD_": str(32 * 1024 * 1024),
        "MALLOC_TRIM_THRESHOLD_": str(256 * 1024 * 1024),
    }
    assert untuned["env"] == {}


@glibc_only
def test_the_operators_own_glibc_settings_win() -> None:
    result = _probe(MALLOC_TRIM_THRESHOLD_="131072")
    assert result["applied"] is False
    assert result["env"] == {}


@glibc_only
def test_the_web_server_and_the_worker_tune_it_at_start() -> None:
    for module in ("config.wsgi", "config.celery", "config.settings"):
        done = subprocess.run(
            [
                sys.executable,
                "-c",
                f"import {module}, engine.sam.malloc as m; print(bool(m.tuned_env()))",
            ],
            cwd=REPO,
            env=_clean_env(),
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        )
        assert done.stdout.strip().splitlines()[-1] == "True", module
