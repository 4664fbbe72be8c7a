"""One exception tree for impasto, mapped to HTTP status and CLI exit code in one place.

::

    ImpastoError                     500  exit 1
    ├── ConfigError                  500  exit 3   config.yaml is invalid
    ├── PackageError                 500  exit 4   the package folder or model class is unusable
    ├── InputError                   422  exit 2   the request failed validation (names the field)
    │   ├── MalformedInput           400  exit 2   the body is not valid JSON / multipart
    │   ├── NotAcceptable            406  exit 2   the result cannot be sent as Accept asks
    │   └── PayloadTooLarge          413  exit 2   a size or pixel limit was exceeded
    ├── NotFound                     404  exit 5   an endpoint, job or model ref does not exist
    ├── NotReady                     503  exit 6   the model is still loading or failed to load
    │   └── ShuttingDown             503  exit 6   the server is stopping; retry elsewhere
    ├── Overloaded                   429  exit 7   the queue is full; retry later
    ├── PredictTimeout               504  exit 8   the request ran past its deadline
    ├── Canceled                     499  exit 9   the client went away or canceled
    ├── ModelError                   500  exit 10  user code raised
    │   ├── ModelHTTPError           any  exit 10  user code raised an HTTPException(status, detail)
    │   └── ModelDefinitionError     412  exit 10  the model's methods cannot serve this call
    ├── StoreError                   400  exit 11  the model store refused an operation
    ├── AddressInUse                      exit 12  `impasto serve`: the port is taken
    ├── Unreachable                       exit 13  `--url`: no server answers there
    └── BuildError                        exit 14  `impasto build`: a wheel, image or upload failed

Every class knows its ``status``, ``exit_code`` and a short ``type`` used in error bodies:
``{"error": {"type": ..., "message": ..., "field": ...}}``.
"""

from __future__ import annotations

from typing import Any, ClassVar


class ImpastoError(Exception):
    """Base of every error impasto raises on purpose."""

    status: ClassVar[int] = 500
    exit_code: ClassVar[int] = 1
    type: ClassVar[str] = "internal_error"

    def __init__(
        self, message: str, *, field: str | None = None, headers: dict[str, str] | None = None
    ):
        super().__init__(message)
        self.message = message
        self.field = field
        self.headers = dict(headers or {})

    def to_dict(self) -> dict[str, Any]:
        """The JSON error body every route answers with."""
        return {"error": {"type": self.type, "message": self.message, "field": self.field}}


class ConfigError(ImpastoError):
    exit_code = 3
    type = "config_error"


class PackageError(ImpastoError):
    exit_code = 4
    type = "package_error"


class InputError(ImpastoError):
    status = 422
    exit_code = 2
    type = "invalid_input"
    details: list[dict[str, Any]] | None = None  # pydantic's errors, when validation failed

    # pydantic's own error list (``loc``, ``msg``, ``type``) when validation failed, for
    # adapters that report validation errors in another protocol's words
    details: list[dict[str, Any]] | None = None


class MalformedInput(InputError):
    status = 400
    type = "malformed_input"


class NotAcceptable(InputError):
    status = 406
    type = "not_acceptable"


class PayloadTooLarge(InputError):
    status = 413
    type = "payload_too_large"


class NotFound(ImpastoError):
    status = 404
    exit_code = 5
    type = "not_found"


class NotReady(ImpastoError):
    status = 503
    exit_code = 6
    type = "not_ready"


class ShuttingDown(NotReady):
    type = "shutting_down"


class Overloaded(ImpastoError):
    status = 429
    exit_code = 7
    type = "overloaded"


class PredictTimeout(ImpastoError):
    status = 504
    exit_code = 8
    type = "timeout"


class Canceled(ImpastoError):
    status = 499
    exit_code = 9
    type = "canceled"


class ModelError(ImpastoError):
    exit_code = 10
    type = "model_error"


class ModelHTTPError(ModelError):
    """The model raised starlette's (or FastAPI's) ``HTTPException``: its status and detail
    are the answer, as the model meant them."""

    type = "http_error"

    def __init__(self, status: int, detail: Any, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail if isinstance(detail, str) else str(detail), headers=headers)
        self.status = status  # type: ignore[misc]
        self.detail = detail


class ModelDefinitionError(ModelError):
    """The model's methods cannot serve this call (a streaming predict with a postprocess)."""

    status = 412
    type = "model_definition_error"


class StoreError(ImpastoError):
    status = 400
    exit_code = 11
    type = "store_error"


class AddressInUse(ImpastoError):
    exit_code = 12
    type = "address_in_use"


class Unreachable(ImpastoError):
    status = 502
    exit_code = 13
    type = "unreachable"


class BuildError(ImpastoError):
    exit_code = 14
    type = "build_error"


_BOUNDS = {"less_than_equal", "less_than", "string_too_long", "too_long"}


def pydantic_errors(exc: Any, prefix: str = "", model: Any = None) -> InputError:
    """Turn a ``pydantic.ValidationError`` into an :class:`InputError` naming the first field.

    A bound that comes from config (a field whose schema carries ``x-limit``, such as
    ``diffusers.limits.max_steps``) is named too, so the message says what to change."""
    errors = exc.errors(include_url=False)
    first = errors[0] if errors else {"loc": (), "msg": str(exc)}
    loc = ".".join(str(p) for p in (prefix, *first.get("loc", ())) if p != "")
    parts = []
    for err in errors[:5]:
        where = ".".join(str(p) for p in err.get("loc", ())) or "input"
        limit = _limit_key(model, err) if err.get("type") in _BOUNDS else None
        parts.append(f"{where}: {err.get('msg')}" + (f" ({limit})" if limit else ""))
    error = InputError("; ".join(parts) or str(exc), field=loc or None)
    error.details = [
        {"loc": tuple(e.get("loc", ())), "msg": e.get("msg"), "type": e.get("type")} for e in errors
    ]
    return error


def _limit_key(model: Any, err: dict[str, Any]) -> str | None:
    fields = getattr(model, "model_fields", None)
    loc = err.get("loc") or ()
    if not fields or not loc or loc[0] not in fields:
        return None
    extra = fields[loc[0]].json_schema_extra
    return extra.get("x-limit") if isinstance(extra, dict) else None
