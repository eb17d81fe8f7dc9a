"""The OpenAPI document of the feature server (``GET /openapi.json``).

Written out, not generated: the server has no framework to generate it from, and
the request schema is Feast's, which clients already rely on.
"""

from __future__ import annotations

from typing import Any

__all__ = ["OPENAPI"]

_ERROR = {
    "type": "object",
    "required": ["error"],
    "properties": {
        "error": {
            "type": "object",
            "required": ["code", "message", "request_id"],
            "properties": {
                "code": {"type": "string"},
                "message": {"type": "string"},
                "request_id": {"type": "string"},
            },
        }
    },
}
_VALUE = {"nullable": True}
_ERRORS = {
    str(code): {
        "description": text,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
    }
    for code, text in (
        (401, "Missing or unknown API key"),
        (403, "The key is not granted what the request reads"),
        (404, "Unknown feature, view or feature service (with close matches)"),
        (413, "Too many entities or too large a body"),
        (422, "Malformed body: which field and why"),
        (503, "Redis slow or down, or overloaded (Retry-After)"),
    )
}

OPENAPI: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "featurestream feature server",
        "version": "1",
        "description": "Feast's feature server API: exact read-time windows, batch and "
        "on-demand features in one response.",
    },
    "paths": {
        "/get-online-features": {
            "post": {
                "summary": "Feature values of entities (Feast's request and response)",
                "requestBody": {
                    "required": True,
                    "content": {
                        "application/json": {
                            "schema": {"$ref": "#/components/schemas/GetOnlineFeaturesRequest"}
                        }
                    },
                },
                "responses": {
                    "200": {
                        "description": "Values, statuses and event timestamps per feature",
                        "content": {
                            "application/json": {
                                "schema": {"$ref": "#/components/schemas/OnlineFeaturesResponse"}
                            }
                        },
                    },
                    **_ERRORS,
                },
            }
        },
        "/features": {
            "get": {
                "summary": "Every view and feature (discovery)",
                "responses": {"200": {"description": "The catalogue"}, **_ERRORS},
            }
        },
        "/health": {"get": {"summary": "Alive", "responses": {"200": {"description": "ok"}}}},
        "/ready": {
            "get": {
                "summary": "Redis reachable and registry loaded",
                "responses": {"200": {"description": "ready"}, **_ERRORS},
            }
        },
        "/metrics": {
            "get": {"summary": "Prometheus metrics", "responses": {"200": {"description": "text"}}}
        },
    },
    "components": {
        "schemas": {
            "Error": _ERROR,
            "GetOnlineFeaturesRequest": {
                "type": "object",
                "required": ["entities"],
                "additionalProperties": False,
                "properties": {
                    "features": {"type": "array", "items": {"type": "string"}},
                    "feature_service": {"type": "string"},
                    "entities": {
                        "type": "object",
                        "additionalProperties": {"type": "array", "items": _VALUE},
                    },
                    "full_feature_names": {"type": "boolean"},
                    "max_staleness_ms": {"type": "integer", "minimum": 0},
                    "include_freshness": {"type": "boolean"},
                    "include_feature_view_version_metadata": {"type": "boolean"},
                },
            },
            "OnlineFeaturesResponse": {
                "type": "object",
                "required": ["metadata", "results"],
                "properties": {
                    "metadata": {
                        "type": "object",
                        "properties": {
                            "feature_names": {"type": "array", "items": {"type": "string"}}
                        },
                    },
                    "results": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "values": {"type": "array", "items": _VALUE},
                                "statuses": {"type": "array", "items": {"type": "string"}},
                                "event_timestamps": {
                                    "type": "array",
                                    "items": {"type": "string"},
                                },
                            },
                        },
                    },
                },
            },
        }
    },
}
