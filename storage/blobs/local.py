"""Blob store on the local filesystem: writes go to a temp file in the folder, then rename."""

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import AbstractContextManager
from pathlib import Path
from typing import BinaryIO

from storage.blobs.base import BlobError, BlobNotFound, BlobStore, validate_key

_CHUNK = 1024 * 1024
# mkstemp creates 0600 files; a blob gets the mode open() would give it (0666 less the umask),
# so exports copied out of the store are readable as the user's other files are. The umask is
# read once here: os.umask can only be read by setting it, which is not thread-safe later.
_UMASK = os.umask(0o022)
os.umask(_UMASK)
_FILE_MODE = 0o666 & ~_UMASK


class LocalBlobStore(BlobStore):
    def __init__(self, root: Path | str) -> None:
        self.root = Path(root).resolve()

    @property
    def location(self) -> str:
        return str(self.root)

    def _path(self, key: str) -> Path:
        path = (self.root / validate_key(key)).resolve()
        # validate_key already refuses "..": this guards against symlinks pointing outside.
        if self.root not in path.parents:
            raise BlobNotFound(key)
        return path

    def put_file(self, key: str, fileobj: BinaryIO, *, content_type: str | None = None) -> int:
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
        written = 0
        try:
            with os.fdopen(fd, "wb") as out:
                while chunk := fileobj.read(_CHUNK):
                    out.write(chunk)
                    written += len(chunk)
                out.flush()
                os.fchmod(out.fileno(), _FILE_MODE)
                os.fsync(out.fileno())
            os.replace(tmp_name, path)
        except BaseException:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(tmp_name)
            raise
        return written

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        path = self._path(key)
        try:
            return path.open("rb")
        except (FileNotFoundError, IsADirectoryError, NotADirectoryError) as exc:
            raise BlobNotFound(key) from exc

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def probe(self, *, timeout: float) -> None:
        # The folder is created by the first write; until then its parent must take it.
        where = self.root if self.root.exists() else self.root.parent
        if not where.is_dir():
            raise BlobError(f"blob folder {self.root} is missing (and so is its parent)")
        if not os.access(where, os.W_OK | os.X_OK):
            raise BlobError(f"blob folder {where} is not writable by this process")

    def size(self, key: str) -> int:
        try:
            return self._path(key).stat().st_size
        except FileNotFoundError as exc:
            raise BlobNotFound(key) from exc

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list(self, prefix: str = "") -> Iterator[str]:
        if not self.root.is_dir():
            return
        keys = []
        for dirpath, _dirs, files in os.walk(self.root):
            for name in files:
                if name.startswith(".tmp-"):
                    continue
                key = Path(dirpath, name).relative_to(self.root).as_posix()
                if key.startswith(prefix):
                    keys.append(key)
        yield from sorted(keys)

    def url(self, key: str, *, expires: int = 3600, filename: str | None = None) -> str | None:
        return None

    def copy_to_path(self, key: str, dest: Path) -> None:
        """Copy ``key`` to a local path (used by exports to a folder)."""
        with self.open(key) as src, dest.open("wb") as out:
            shutil.copyfileobj(src, out, _CHUNK)
