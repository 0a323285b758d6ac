"""Blob store on S3 (or any S3-compatible endpoint such as MinIO) through boto3.

Retries with backoff on 5xx, throttling and connection errors are left to botocore's
``standard`` retry mode; whatever still fails afterwards surfaces as
:class:`BlobStoreUnavailable`, so Celery tasks can retry on that one exception. Large objects are
written as multipart uploads (aborted on failure) and read as streams.
"""

import io
import re
import threading
from collections.abc import Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Any, BinaryIO, NoReturn
from urllib.parse import quote, urlsplit

import boto3
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    ConnectionError,
    HTTPClientError,
    IncompleteReadError,
    NoCredentialsError,
    PartialCredentialsError,
)

from storage.blobs.base import (
    BlobError,
    BlobNotFound,
    BlobStore,
    BlobStoreUnavailable,
    validate_key,
)

MIB = 1024 * 1024
# S3 refuses parts below 5 MiB (except the last one), so chunks never go below that.
_MIN_PART_SIZE = 5 * MIB
_MAX_PRESIGN_SECONDS = 7 * 24 * 3600  # the SigV4 limit
_READ_BUFFER = 1 * MIB
_BUCKET_NAME = re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$")
_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_THROTTLING_CODES = frozenset(
    {"SlowDown", "Throttling", "ThrottlingException", "RequestLimitExceeded"}
)


class S3BlobStore(BlobStore):
    """Objects live at ``s3://<bucket>/<prefix>/<key>``; keys are relative to the prefix."""

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        endpoint_url: str | None = None,
        region: str = "us-east-1",
        max_attempts: int = 5,
        *,
        multipart_threshold: int = 8 * MIB,
        presign_seconds: int = 3600,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        create_bucket: bool = False,
        public_endpoint_url: str | None = None,
    ) -> None:
        """``public_endpoint_url``: the endpoint presigned URLs name, for browsers that reach
        the S3 server under another host name than this process does (e.g.
        ``http://localhost:9000`` while the containers use ``http://minio:9000``); None or empty
        signs URLs for ``endpoint_url``. It must reach the same server with the host name
        unchanged: the signature covers it."""
        if not _BUCKET_NAME.match(bucket or ""):
            raise ValueError(f"invalid S3 bucket name {bucket!r}")
        if max_attempts < 1:
            raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
        if multipart_threshold < 1:
            raise ValueError(f"multipart_threshold must be positive, got {multipart_threshold}")
        self.bucket = bucket
        self.prefix = validate_key(prefix.strip("/")) if prefix.strip("/") else ""
        self.endpoint_url = endpoint_url or None
        self.region = region or "us-east-1"
        self.presign_seconds = _checked_expiry(presign_seconds)
        public = (public_endpoint_url or "").rstrip("/") or None
        if public is not None and not public.startswith(("http://", "https://")):
            raise ValueError(f"the public S3 endpoint must be an http(s) URL, got {public!r}")
        self.public_endpoint_url = public
        config = Config(
            region_name=self.region,
            signature_version="s3v4",
            # total_max_attempts counts the first request too ("max_attempts" counts retries).
            retries={"mode": "standard", "total_max_attempts": max_attempts},
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            max_pool_connections=32,
        )
        # A private session: boto3's default session is not thread-safe to build clients from.
        self._session = boto3.session.Session()
        self._client = self._session.client(
            "s3", endpoint_url=self.endpoint_url, config=_for_endpoint(config, self.endpoint_url)
        )
        # Signs download URLs for public_endpoint_url; built on the first url() that needs it.
        self._presign_config = config
        self._presign_client: Any = None
        self._presign_lock = threading.Lock()
        self._transfer = TransferConfig(
            multipart_threshold=multipart_threshold,
            multipart_chunksize=max(multipart_threshold, _MIN_PART_SIZE),
            max_concurrency=4,
        )
        if create_bucket:
            self.ensure_bucket()

    @property
    def location(self) -> str:
        return f"s3://{self.bucket}/{self.prefix}" if self.prefix else f"s3://{self.bucket}"

    @property
    def client(self) -> Any:
        """The underlying boto3 client (for callers that need an S3 call this class lacks)."""
        return self._client

    def _presigner(self) -> Any:
        """The client that signs download URLs: for the public endpoint when one is set."""
        same = self.public_endpoint_url == (self.endpoint_url or "").rstrip("/")
        if self.public_endpoint_url is None or same:
            return self._client
        with self._presign_lock:
            if self._presign_client is None:
                self._presign_client = self._session.client(
                    "s3",
                    endpoint_url=self.public_endpoint_url,
                    config=_for_endpoint(self._presign_config, self.public_endpoint_url),
                )
            return self._presign_client

    def _where(self) -> str:
        endpoint = self.endpoint_url or f"AWS S3 ({self.region})"
        return f"bucket {self.bucket!r} at {endpoint}"

    def _full_key(self, key: str) -> str:
        validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    @contextmanager
    def _errors(self, action: str, key: str | None = None) -> Iterator[None]:
        """Translate botocore failures into the blob store's errors."""
        what = f"{action} {key!r}" if key is not None else action
        try:
            yield
        except ClientError as exc:
            self._raise_client_error(exc, what, key)
        except (ConnectionError, HTTPClientError, IncompleteReadError) as exc:
            raise BlobStoreUnavailable(
                f"S3 {what} failed: cannot reach {self._where()} after retries: {exc}"
            ) from exc
        except (NoCredentialsError, PartialCredentialsError) as exc:
            raise BlobError(
                f"S3 {what} failed: no usable credentials for {self._where()} "
                "(set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY)"
            ) from exc
        except BotoCoreError as exc:
            raise BlobError(f"S3 {what} failed on {self._where()}: {exc}") from exc

    def _raise_client_error(self, exc: ClientError, what: str, key: str | None) -> NoReturn:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") or 0)
        if code == "NoSuchBucket":
            raise BlobError(f"S3 {what} failed: {self._where()} does not exist") from exc
        if key is not None and (code in _NOT_FOUND_CODES or status == 404):
            raise BlobNotFound(key) from exc
        if status >= 500 or code in _THROTTLING_CODES:
            raise BlobStoreUnavailable(
                f"S3 {what} failed on {self._where()} after retries: HTTP {status} {code}"
            ) from exc
        message = error.get("Message", "")
        raise BlobError(f"S3 {what} failed on {self._where()}: {code} {message}".rstrip()) from exc

    def probe(self, *, timeout: float) -> None:
        """HEAD the bucket with one attempt and short timeouts (not the store's retries)."""
        quick = self._presign_config.merge(
            Config(
                connect_timeout=timeout,
                read_timeout=timeout,
                retries={"mode": "standard", "total_max_attempts": 1},
            )
        )
        client = self._session.client(
            "s3", endpoint_url=self.endpoint_url, config=_for_endpoint(quick, self.endpoint_url)
        )
        with self._errors("head bucket"):
            try:
                client.head_bucket(Bucket=self.bucket)
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                    missing = f"S3 head bucket failed: {self._where()} does not exist"
                    raise BlobError(missing) from exc
                raise

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist yet (demo set-ups and tests)."""
        with self._errors("head bucket"):
            try:
                self._client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                if exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode") != 404:
                    raise
        kwargs: dict[str, Any] = {"Bucket": self.bucket}
        if self.region != "us-east-1":
            kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
        with self._errors("create bucket"):
            try:
                self._client.create_bucket(**kwargs)
            except ClientError as exc:
                # Another process created it between our HEAD and CREATE: that is the goal.
                if exc.response.get("Error", {}).get("Code") != "BucketAlreadyOwnedByYou":
                    raise

    def put_file(self, key: str, fileobj: BinaryIO, *, content_type: str | None = None) -> int:
        full_key = self._full_key(key)
        counted = _CountingReader(fileobj)
        extra = {"ContentType": content_type} if content_type else None
        with self._errors("upload", key):
            # s3transfer aborts a failed multipart upload itself, so no parts are left behind
            # (unless the abort request also cannot reach the endpoint; a bucket lifecycle rule
            # AbortIncompleteMultipartUpload covers that case).
            self._client.upload_fileobj(
                counted, self.bucket, full_key, ExtraArgs=extra, Config=self._transfer
            )
        return counted.count

    def put_bytes(self, key: str, data: bytes, *, content_type: str | None = None) -> int:
        if len(data) >= self._transfer.multipart_threshold:
            return self.put_file(key, io.BytesIO(data), content_type=content_type)
        kwargs: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full_key(key), "Body": data}
        if content_type:
            kwargs["ContentType"] = content_type
        with self._errors("upload", key):
            self._client.put_object(**kwargs)
        return len(data)

    def open(self, key: str) -> AbstractContextManager[BinaryIO]:
        full_key = self._full_key(key)
        with self._errors("download", key):
            response = self._client.get_object(Bucket=self.bucket, Key=full_key)
        raw = _S3ReadStream(response["Body"], self, key)
        return io.BufferedReader(raw, buffer_size=_READ_BUFFER)

    def exists(self, key: str) -> bool:
        # HEAD answers a bare 404 for a missing bucket too, so that reads as "no such key" here;
        # writes and reads name the missing bucket.
        try:
            self.size(key)
        except BlobNotFound:
            return False
        return True

    def size(self, key: str) -> int:
        full_key = self._full_key(key)
        with self._errors("stat", key):
            response = self._client.head_object(Bucket=self.bucket, Key=full_key)
        return int(response["ContentLength"])

    def delete(self, key: str) -> None:
        full_key = self._full_key(key)
        with self._errors("delete", key):
            # S3 answers 204 for a missing key too, so deleting twice is not an error.
            self._client.delete_object(Bucket=self.bucket, Key=full_key)

    def list(self, prefix: str = "") -> Iterator[str]:
        """Keys under ``prefix`` relative to the store prefix, in S3's (lexicographic) order.

        Keys written by other tools are yielded as they are; :meth:`open` rejects unsafe ones
        with :class:`InvalidBlobKey`, so an importer can report them instead of skipping them.
        """
        if prefix and (prefix.startswith("/") or "\\" in prefix or ".." in prefix.split("/")):
            validate_key(prefix)  # raises InvalidBlobKey with the reason
        base = f"{self.prefix}/" if self.prefix else ""
        paginator = self._client.get_paginator("list_objects_v2")
        with self._errors(f"list {prefix!r}"):
            for page in paginator.paginate(Bucket=self.bucket, Prefix=base + prefix):
                for item in page.get("Contents", []):
                    yield item["Key"][len(base) :]

    def url(
        self, key: str, *, expires: int | None = None, filename: str | None = None
    ) -> str | None:
        """A presigned GET URL; ``filename`` makes browsers save it under that name."""
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": self._full_key(key)}
        if filename:
            params["ResponseContentDisposition"] = _attachment(filename)
        seconds = self.presign_seconds if expires is None else _checked_expiry(expires)
        with self._errors("presign", key):
            url: str = self._presigner().generate_presigned_url(
                "get_object", Params=params, ExpiresIn=seconds
            )
        return url

    def browser_origin(self) -> str | None:
        """The origin of this store's presigned URLs, read off one signed for a probe key
        (signing is local: no request is made), so that it is right for every addressing style
        (AWS virtual-hosted buckets, path-style endpoints, a public endpoint)."""
        parts = urlsplit(self.url("csp-origin-probe", expires=60) or "")
        return f"{parts.scheme}://{parts.netloc}"


def _for_endpoint(config: Config, endpoint_url: str | None) -> Config:
    """``config`` adjusted for ``endpoint_url``: unchanged for AWS S3 (None).

    MinIO and other S3-compatible servers: bucket in the path, not the host name, and checksums
    only where the API requires them (the newer default checksum trailers are not understood by
    every compatible server).
    """
    if not endpoint_url:
        return config
    return config.merge(
        Config(
            s3={"addressing_style": "path"},
            request_checksum_calculation="when_required",
            response_checksum_validation="when_required",
        )
    )


def _checked_expiry(seconds: int) -> int:
    if not 1 <= seconds <= _MAX_PRESIGN_SECONDS:
        raise ValueError(f"presigned URL lifetime must be 1..{_MAX_PRESIGN_SECONDS} s: {seconds}")
    return seconds


def _attachment(filename: str) -> str:
    """A Content-Disposition value with an ASCII fallback and the exact UTF-8 name (RFC 6266)."""
    fallback = "".join(
        c if c.isascii() and c.isprintable() and c not in '"\\' else "_" for c in filename
    )
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(filename, safe='')}"


class _CountingReader:
    """Counts the bytes s3transfer reads. Deliberately not seekable, so each byte is read once."""

    def __init__(self, fileobj: BinaryIO) -> None:
        self._fileobj = fileobj
        self.count = 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return False

    def read(self, size: int = -1) -> bytes:
        chunk = self._fileobj.read(size)
        self.count += len(chunk)
        return chunk


class _S3ReadStream(io.RawIOBase):
    """The response body as a raw stream; network failures mid-read become blob errors."""

    def __init__(self, body: Any, store: S3BlobStore, key: str) -> None:
        super().__init__()
        self._body = body
        self._store = store
        self._key = key

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        with self._store._errors("download", self._key):
            count: int = self._body.readinto(buffer)
        return count

    def close(self) -> None:
        if not self.closed:
            self._body.close()
        super().close()
