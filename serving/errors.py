"""Errors of the feature server: branches of the one tree in :mod:`featurestream.errors`.

They extend the documented tree (they belong there; they live here only because
this package was written while ``featurestream/errors.py`` was being edited)::

    FeaturestreamError
    ├── RequestError            terminal for this request: the caller must change it
    │   ├── InvalidRequest      malformed JSON, wrong type, unequal lengths, ...
    │   ├── UnknownName         unknown feature, view or feature service
    │   ├── RequestTooLarge     more entities or bytes than the server accepts
    │   ├── Unauthenticated     no API key, or not a known one
    │   └── Forbidden           the key is not granted what the request reads
    ├── TransientError
    │   ├── OnlineStoreUnavailable   (featurestream.errors) Redis did not answer in time
    │   ├── Overloaded          too many requests in flight; retry after a moment
    │   └── NotReady            the registry is not loaded yet
    └── TransformFailed         an on-demand view's function raised

The errors carry a stable machine-readable ``code`` and know nothing of HTTP:
:mod:`serving.app` maps each class to a status code at the boundary.
"""

from __future__ import annotations

from featurestream.errors import FeaturestreamError, TransientError

__all__ = [
    "Forbidden",
    "InvalidRequest",
    "NotReady",
    "Overloaded",
    "RequestError",
    "RequestTooLarge",
    "TransformFailed",
    "Unauthenticated",
    "UnknownName",
]


class RequestError(FeaturestreamError):
    """The request cannot be served as sent; retrying it unchanged fails the same way."""

    code = "invalid_request"


class InvalidRequest(RequestError):
    """The body is not a valid lookup: bad JSON, a wrong type, unequal entity lists, ..."""

    code = "invalid_request"


class UnknownName(RequestError):
    """A feature, feature view or feature service that the registry does not hold."""

    code = "not_found"


class RequestTooLarge(RequestError):
    """More entities per request, or more body bytes, than the server settings allow."""

    code = "too_large"


class Unauthenticated(RequestError):
    """No API key was sent, or the key sent is not one the server knows."""

    code = "unauthenticated"


class Forbidden(RequestError):
    """The API key is valid but not granted the feature service or views requested."""

    code = "forbidden"


class Overloaded(TransientError):
    """The server already serves its maximum number of concurrent requests."""

    code = "overloaded"


class NotReady(TransientError):
    """The feature registry has not been loaded (yet); the server cannot plan lookups."""

    code = "not_ready"


class TransformFailed(FeaturestreamError):
    """The function of an on-demand feature view raised or returned unusable values."""

    code = "transform_failed"
