"""A thread pool per process, for the web processes' background threads (the decoder thread of
``engine.services.serving``, the mask-ref writers of ``engine.services.mask_refs``)."""

import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor


class ProcessThreadPool:
    """A ``ThreadPoolExecutor`` made on first use, and made again in a forked child: gunicorn
    forks its workers, and a child's copy of the parent's executor has no threads behind it."""

    def __init__(
        self, *, workers: int, name: str, initializer: Callable[[], None] | None = None
    ) -> None:
        self._workers = workers
        self._name = name
        self._initializer = initializer
        self._lock = threading.Lock()
        self._executor: ThreadPoolExecutor | None = None
        self._pid = 0

    def get(self) -> ThreadPoolExecutor:
        with self._lock:
            if self._executor is None or self._pid != os.getpid():
                self._executor = ThreadPoolExecutor(
                    max_workers=self._workers,
                    thread_name_prefix=self._name,
                    initializer=self._initializer,
                )
                self._pid = os.getpid()
            return self._executor
