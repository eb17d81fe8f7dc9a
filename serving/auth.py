"""API keys: who may read what (pure).

A request carries its key as ``Authorization: Bearer <key>`` or ``X-API-Key: <key>``.
Keys are compared as SHA-256 digests with :func:`hmac.compare_digest`, against
every known key (no early exit), so the time taken says nothing about the keys.

What a key may read (grants, see :mod:`serving.settings`):

* ``*`` reads everything;
* a feature service name reads that service (whatever views it holds: granting a
  service is the decision to expose its features, ``pii`` ones included);
* a raw ``features`` list needs ``features`` (or ``pii``), and when it reads a view
  tagged ``pii`` (directly, or as the input of an on-demand view) it needs ``pii``.

No key, or an unknown one: 401. A known key without the grant: 403.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping

from featurestream.errors import Forbidden, Unauthenticated

from .plan import Plan
from .settings import ALL_GRANT, FEATURES_GRANT, PII_GRANT

__all__ = ["KeyTable", "authorize_plan", "authorize_selection", "bearer_token"]


def _digest(key: str) -> bytes:
    return hashlib.sha256(key.encode()).digest()


class KeyTable:
    """The known API keys, held as digests.

    Args:
        api_keys: Key -> grants (``ServerSettings.api_keys``).
    """

    def __init__(self, api_keys: Mapping[str, frozenset[str]]) -> None:
        self._entries = [(_digest(key), grants) for key, grants in api_keys.items()]

    @property
    def enabled(self) -> bool:
        """True when requests must carry a key."""
        return bool(self._entries)

    def grants(self, token: str | None) -> frozenset[str]:
        """The grants of ``token``.

        Raises:
            Unauthenticated: when there is no token or it is not a known key.
        """
        if not token:
            raise Unauthenticated(
                "this server needs an API key: send 'Authorization: Bearer <key>' or "
                "'X-API-Key: <key>'"
            )
        presented = _digest(token)
        found: frozenset[str] | None = None
        for digest, grants in self._entries:
            if hmac.compare_digest(presented, digest):
                found = grants
        if found is None:
            raise Unauthenticated("the API key sent is not valid; check the key or ask for one")
        return found


def bearer_token(authorization: str | None, api_key: str | None) -> str | None:
    """The key of a request from its ``Authorization`` or ``X-API-Key`` header."""
    if authorization:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() == "bearer" and token.strip():
            return token.strip()
    if api_key and api_key.strip():
        return api_key.strip()
    return None


def authorize_selection(grants: frozenset[str], feature_service: str | None) -> None:
    """Check, before planning, that a key with ``grants`` may ask for this selection.

    Raises:
        Forbidden: naming what is missing.
    """
    if ALL_GRANT in grants:
        return
    if feature_service:
        if feature_service not in grants:
            raise Forbidden(
                f"this API key is not granted feature service {feature_service!r}; ask for the "
                "grant or use a service the key is granted"
            )
        return
    if FEATURES_GRANT not in grants and PII_GRANT not in grants:
        raise Forbidden(
            "this API key may not read raw feature lists (it needs the 'features' grant); "
            "request a feature service the key is granted instead"
        )


def authorize_plan(grants: frozenset[str], plan: Plan) -> None:
    """Check, after planning, that a key with ``grants`` may read what ``plan`` reads.

    Raises:
        Forbidden: when a raw feature list reads views tagged ``pii`` without the grant.
    """
    if ALL_GRANT in grants or plan.service is not None:
        return
    if plan.pii_views and PII_GRANT not in grants:
        raise Forbidden(
            f"features of {', '.join(plan.pii_views)} (tagged pii) need an API key granted "
            "'pii'; leave them out or use a feature service the key is granted"
        )
