"""Where folder and S3 imports read from: listing in order, safe names, bounded reads.

Used by :func:`annotation.services.ingest.images_import`. Nothing here touches the database.
"""

import os
from pathlib import Path
from typing import Protocol

from annotation.errors import DomainError
from storage.blobs import BlobError, BlobStore, open_location


class TooLarge(Exception):
    """The file is over the byte limit; raised before (or instead of) reading all of it."""


class ImportSource(Protocol):
    """Names to import in order, and a bounded read of each."""

    location: str
    skipped: int
    unreadable: list[tuple[str, str]]  # (name, reason) found while listing

    def names(self) -> list[str]: ...

    def unsafe_reason(self, name: str) -> str | None: ...

    def read(self, name: str, limit: int) -> bytes: ...


class FolderSource:
    """Regular files under a folder, recursively, in path order; hidden entries are skipped."""

    def __init__(self, root: Path) -> None:
        self.root = root
        self.location = str(root)
        self.skipped = 0
        self.unreadable: list[tuple[str, str]] = []

    def names(self) -> list[str]:
        found: list[str] = []

        def on_error(exc: OSError) -> None:
            where = Path(os.path.relpath(exc.filename or self.root, self.root)).as_posix()
            self.unreadable.append((f"{where}/", f"folder cannot be read: {exc.strerror}"))

        for dirpath, dirnames, filenames in os.walk(self.root, onerror=on_error):
            self.skipped += sum(1 for d in dirnames if d.startswith("."))
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for file_name in filenames:
                path = Path(dirpath, file_name)
                if file_name.startswith(".") or not path.is_file():
                    self.skipped += 1
                    continue
                found.append(path.relative_to(self.root).as_posix())
        return sorted(found)

    def unsafe_reason(self, name: str) -> str | None:
        return None  # names come from walking the folder: they cannot leave it

    def read(self, name: str, limit: int) -> bytes:
        with (self.root / name).open("rb") as fh:
            size = os.fstat(fh.fileno()).st_size
            if size > limit:
                raise TooLarge(f"file is {size} bytes, over the limit of {limit} bytes")
            data = fh.read(limit + 1)
        if len(data) > limit:  # grew while we read it
            raise TooLarge(f"file is over the limit of {limit} bytes")
        return data


def unsafe_key_reason(key: str) -> str | None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in key):
        return "unsafe key: contains control characters"
    if key.startswith("/") or "\\" in key:
        return "unsafe key: absolute or contains a backslash"
    if any(part in {"", ".", ".."} for part in key.split("/")):
        return "unsafe key: contains an empty, '.' or '..' path segment (path traversal)"
    return None


class PrefixSource:
    """Objects under an S3 prefix (keys relative to it), in key order; never reads unsafe keys."""

    def __init__(self, store: BlobStore) -> None:
        self.store = store
        self.location = store.location
        self.skipped = 0
        self.unreadable: list[tuple[str, str]] = []

    def names(self) -> list[str]:
        found: list[str] = []
        for key in self.store.list():
            base = key.rsplit("/", 1)[-1]
            if key.endswith("/") or (base.startswith(".") and base not in {".", ".."}):
                self.skipped += 1  # folder markers and hidden objects
                continue
            found.append(key)
        return found

    def unsafe_reason(self, name: str) -> str | None:
        return unsafe_key_reason(name)

    def read(self, name: str, limit: int) -> bytes:
        with self.store.open(name) as fh:
            data = fh.read(limit + 1)
        if len(data) > limit:
            raise TooLarge(f"object is over the limit of {limit} bytes")
        return data


def open_source(source: str) -> ImportSource:
    """A folder path or ``s3://bucket/prefix``; :class:`DomainError` when it cannot be used."""
    text = source.strip()
    if not text:
        raise DomainError("no source given: use a folder or s3://bucket/prefix")
    if text.lower().startswith("s3://"):
        try:
            return PrefixSource(open_location(text))
        except ValueError as exc:
            raise DomainError(str(exc)) from exc
    if "://" in text:
        raise DomainError(f"unsupported source {text!r}: use a folder or s3://bucket/prefix")
    root = Path(text).expanduser()
    if not root.exists():
        raise DomainError(f"source folder {text!r} does not exist")
    if not root.is_dir():
        raise DomainError(f"source {text!r} is not a folder (use a folder or s3://bucket/prefix)")
    if not os.access(root, os.R_OK | os.X_OK):
        raise DomainError(f"source folder {text!r} cannot be read (permission denied)")
    return FolderSource(root.resolve())


def list_names(source: ImportSource) -> list[str]:
    """The names to import; :class:`DomainError` when the source cannot be listed."""
    try:
        return source.names()
    except BlobError as exc:
        raise DomainError(f"cannot list {source.location}: {exc}") from exc
