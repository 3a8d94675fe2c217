"""Hetzner's error format: `{"error": {"code", "message", "details"}}` with the HTTP status of its code."""

from __future__ import annotations

from typing import Any

# Statuses of the general codes as Hetzner's error table gives them; the call-specific codes
# (server_not_stopped, invalid_server_type, firewall_*, resource_in_use) are not in that table:
# clients decide by the code alone, so they get the 4xx that says what happened.
STATUS: dict[str, int] = {
    "forbidden": 403,
    "token_readonly": 403,
    "unauthorized": 401,
    "invalid_input": 400,
    "json_error": 400,
    "locked": 423,
    "not_found": 404,
    "rate_limit_exceeded": 429,
    "resource_limit_exceeded": 403,
    # "The requested resource is currently unavailable (e.g. not available for order)": Hetzner's
    # OpenAPI description of 2026.
    "resource_unavailable": 412,
    "server_error": 500,
    "service_error": 503,
    "uniqueness_error": 409,
    "protected": 423,
    "conflict": 409,
    "unsupported_error": 400,
    "deprecated_api_endpoint": 410,
    "server_not_stopped": 412,
    "invalid_server_type": 400,
    "resource_in_use": 422,
    "firewall_already_applied": 409,
    "firewall_resource_not_found": 404,
    "firewall_managed_by_label_selector": 422,
    "server_already_added": 409,
    # "This operation is not supported for this Zone's mode" (Hetzner's zone reference).
    "incorrect_zone_mode": 422,
}


class ApiError(Exception):
    def __init__(self, code: str, message: str, details: dict[str, Any] | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.details: dict[str, Any] = details if details is not None else {}

    @property
    def status(self) -> int:
        return STATUS[self.code]

    def body(self) -> dict[str, Any]:
        return {"error": {"code": self.code, "message": self.message, "details": self.details}}


def invalid_input(field: str, message: str) -> ApiError:
    return ApiError(
        "invalid_input",
        f"invalid input in field '{field}': {message}",
        {"fields": [{"name": field, "messages": [message]}]},
    )


def not_found(kind: str) -> ApiError:
    return ApiError("not_found", f"{kind} not found")
