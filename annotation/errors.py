"""Domain errors raised by services on bad input. The API maps each to a 4xx response.

Services validate before they write, so raising one of these means nothing was changed.
"""


class DomainError(Exception):
    """Bad input a user can fix; ``status_code`` is the HTTP status the API answers with."""

    status_code = 400
    code = "invalid"

    def __init__(
        self, message: str, *, details: object = None, extra: dict[str, object] | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details
        # Top-level fields added to the error body, e.g. {"deployed_version": {...}}.
        self.extra = dict(extra or {})


class ImageRejected(DomainError):
    """Bytes that are not an acceptable image (corrupt, too large, unsupported, unsafe name)."""

    code = "image_rejected"


class InvalidMask(DomainError):
    """A mask or RLE that is malformed or does not fit its image."""

    code = "invalid_mask"


class ExportRefused(DomainError):
    """An export that cannot run as asked (unknown format, unwritable destination, bad filter)."""

    code = "export_refused"


class ConflictError(DomainError):
    """The request conflicts with the current state (e.g. a duplicate name)."""

    status_code = 409
    code = "conflict"


class LeaseTaken(DomainError):
    """Another annotator holds an unexpired lease on the image."""

    status_code = 409
    code = "lease_taken"


class LeaseExpired(DomainError):
    """The caller's lease on the image ran out and another annotator holds the image now."""

    status_code = 409
    code = "lease_expired"


class InvalidReview(DomainError):
    """A review decision that cannot be applied as asked (e.g. a rejection without a reason)."""

    code = "invalid_review"
