"""Errors raised by the service. None of them knows about HTTP: ``service.main`` maps them to status codes in one
place (``_STATUS``), together with kf_core's errors.

    ServiceError
    ├── NotFoundError             a catalog row that does not exist (404)
    ├── ConflictError             the request contradicts the current state: a duplicate name, a finished job (409)
    ├── InvalidInputError         the request's content is wrong: a bad model file, an unknown task (422)
    ├── UnsupportedMediaError     the request body is not of the expected type, e.g. not multipart (415)
    ├── PayloadTooLargeError      an upload over KF_MAX_UPLOAD_BYTES (413)
    ├── QueueUnavailableError     the job queue (Redis) cannot be reached (503)
    ├── ArtifactError             an artifact file is missing or does not match its sha256 (500)
    │   ├── ArtifactMissingError
    │   ├── ArtifactCorruptError
    │   └── ArtifactStoreUnavailableError  the object store (KF_ARTIFACT_URL) cannot be reached (503)
    ├── UnauthorizedError         no API key, or one that is unknown or revoked (401)
    ├── ForbiddenError            a valid key whose scope does not allow the operation (403)
    ├── DeviceUnavailableError    KF_DEVICE=cuda but the CUDA provider does not load (refuses to start)
    ├── CatalogNotMigratedError   the catalog's schema is behind the code: run `kf db upgrade` (refuses to start)
    └── LeaseLostError            a job run lost ownership of its job (another run took over, or it was cancelled)

Every message says what was wrong and what to do about it.
"""

from __future__ import annotations

__all__ = [
    "ArtifactCorruptError",
    "ArtifactError",
    "ArtifactMissingError",
    "ArtifactStoreUnavailableError",
    "CatalogNotMigratedError",
    "ConflictError",
    "DeviceUnavailableError",
    "ForbiddenError",
    "InvalidInputError",
    "LeaseLostError",
    "NotFoundError",
    "PayloadTooLargeError",
    "QueueUnavailableError",
    "ServiceError",
    "UnauthorizedError",
    "UnsupportedMediaError",
]


class ServiceError(Exception):
    """Base class of every error the service raises on purpose."""


class NotFoundError(ServiceError, LookupError):
    """A teacher, dataset, job, factor set or artifact that the catalog does not hold."""

    def __init__(self, kind: str, key: object) -> None:
        self.kind, self.key = kind, key
        super().__init__(f"{kind} {key} does not exist; {_FIND.get(kind, 'check the id')}")


# Where a user finds the ones that do exist; every kind has a real route or command (no guessed plurals).
_FIND = {
    "teacher": "list them with GET /v1/teachers",
    "dataset": "list them with GET /v1/datasets",
    "job": "list them with GET /v1/jobs",
    "factor set": "list them with GET /v1/factor-sets",
    "alias": "list a factor set's aliases with GET /v1/factor-sets/{name}/aliases",
    "assembly": "create one with POST /v1/assemblies",
    "artifact": "artifact hashes are listed on their factor set, teacher or dataset",
    "api key": "list them with kf keys list",
}


class ConflictError(ServiceError):
    """The request is valid but conflicts with what the catalog holds."""


class InvalidInputError(ServiceError, ValueError):
    """The request's content is wrong; the message says which part and how to fix it."""


class UnsupportedMediaError(ServiceError):
    """The request body has the wrong content type."""


class PayloadTooLargeError(ServiceError):
    """An upload exceeded the configured size limit."""


class QueueUnavailableError(ServiceError):
    """The job queue cannot be reached, so nothing was queued."""


class ArtifactError(ServiceError):
    """An artifact cannot be served as stored."""


class ArtifactStoreUnavailableError(ArtifactError):
    """The object store holding the artifacts cannot be reached or refuses access."""


class ArtifactMissingError(ArtifactError):
    """The catalog references an artifact whose file is gone."""


class ArtifactCorruptError(ArtifactError):
    """An artifact file's content no longer matches its sha256."""


class LeaseLostError(ServiceError):
    """A job run no longer owns its job row; it must stop without writing anything else."""


class DeviceUnavailableError(ServiceError):
    """The configured inference device cannot be used; raised at start-up, never per request."""


class CatalogNotMigratedError(ServiceError, RuntimeError):
    """The catalog database is not at the code's schema revision; raised at start-up and by the CLI, never per
    request."""


class UnauthorizedError(ServiceError):
    """The request has no valid API key."""


class ForbiddenError(ServiceError):
    """The request's API key may not do this."""
