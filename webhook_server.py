"""The Flask web tier: `create_app(settings)` mounts each provider's webhook blueprint.

Views only verify, parse and `accept()`; everything slow happens in workers. Errors become
JSON bodies with a reason, and status codes chosen for the sender's retry logic: 4xx for what
a retry cannot fix, 2xx once the event is stored, 5xx only where a retry should happen.
"""

from __future__ import annotations

import logging
from typing import Any

import orjson
from flask import Flask, Response, abort, jsonify, request
from flask.json.provider import DefaultJSONProvider
from werkzeug.exceptions import HTTPException
from werkzeug.middleware.proxy_fix import ProxyFix

from integrations.config import Settings
from integrations.errors import (
    ConfigurationError,
    DeskbridgeError,
    PayloadError,
    StoreUnavailable,
    VerificationError,
)
from integrations.logs import LogThrottle
from integrations.providers import CHANNEL_BLUEPRINTS, HELPDESK_BLUEPRINTS
from integrations.runtime import Runtime

log = logging.getLogger("deskbridge.web")

STATUS_FOR_ERROR: list[tuple[type[DeskbridgeError], int, str]] = [
    (VerificationError, 401, "unverified"),
    (PayloadError, 400, "bad_payload"),
    (StoreUnavailable, 503, "store_unavailable"),
    (ConfigurationError, 500, "misconfigured"),
]


def create_app(settings: Settings, *, runtime: Runtime | None = None,
               refusals: LogThrottle | None = None) -> Flask:
    """Return the web application for these settings (a new `Runtime` unless one is given).

    `refusals` bounds the log lines refused requests write (a new `LogThrottle` by default).
    """
    runtime = runtime or Runtime(settings)
    throttle = refusals or LogThrottle()
    app = Flask("deskbridge")
    app.json = FastJSONProvider(app)
    app.config["MAX_CONTENT_LENGTH"] = settings.server.max_body_bytes
    app.extensions["deskbridge"] = runtime
    for name, factory in CHANNEL_BLUEPRINTS.items():
        app.register_blueprint(factory(runtime), url_prefix=f"/webhooks/{name}")
    for name, factory in HELPDESK_BLUEPRINTS.items():
        app.register_blueprint(factory(runtime), url_prefix=f"/webhooks/{name}")
    app.before_request(_refuse_oversized)
    app.after_request(lambda response: _log_refusal(response, throttle))
    app.add_url_rule("/healthz", "healthz", lambda: jsonify(status="ok"))
    app.add_url_rule("/readyz", "readyz", lambda: _readyz(runtime))
    app.register_error_handler(HTTPException, _http_error)
    app.register_error_handler(DeskbridgeError, _deskbridge_error)
    app.register_error_handler(Exception, _unexpected_error)
    if settings.server.trusted_proxies:
        # Only the hops the admin vouches for: each appends the address it saw.
        app.wsgi_app = ProxyFix(  # type: ignore[method-assign]
            app.wsgi_app, x_for=settings.server.trusted_proxies, x_proto=0, x_host=0)
    return app


class FastJSONProvider(DefaultJSONProvider):
    """Flask's JSON answers, written by orjson (`integrations/jsontext.py` says why).

    The views answer with plain dicts of strings, numbers and lists; anything orjson cannot
    write (a type it does not know, a lone surrogate) goes to Flask's own provider. Unlike
    Flask's, keys keep their order and non-ASCII characters are written as UTF-8.
    """

    def response(self, *args: Any, **kwargs: Any) -> Response:
        obj = self._prepare_response_obj(args, kwargs)
        try:
            body = orjson.dumps(obj, option=orjson.OPT_APPEND_NEWLINE)
        except TypeError:
            return super().response(*args, **kwargs)  # type: ignore[return-value]
        return Response(body, mimetype=self.mimetype)


def _refuse_oversized() -> None:
    # Checked before any view reads the body, so every route answers 413 the same way.
    limit = request.max_content_length
    if limit is not None and request.content_length is not None and request.content_length > limit:
        abort(413, description=f"body larger than the limit of {limit} bytes")


def _readyz(runtime: Runtime) -> tuple[Response, int]:
    ready, details = runtime.readiness()
    return jsonify(status="ready" if ready else "not_ready", **details), 200 if ready else 503


def error_body(status: int, error: str, reason: str) -> tuple[Response, int]:
    return jsonify(error=error, reason=reason), status


def _http_error(err: HTTPException) -> tuple[Response, int]:
    status = err.code or 500
    name = (err.name or "error").lower().replace(" ", "_")
    response, status = error_body(status, name, err.description or name)
    # werkzeug's own headers, such as a 405's `Allow`, minus its HTML content type.
    response.headers.extend((k, v) for k, v in err.get_headers() if k.lower() != "content-type")
    return response, status


def _deskbridge_error(err: DeskbridgeError) -> tuple[Response, int]:
    for cls, status, name in STATUS_FOR_ERROR:
        if isinstance(err, cls):
            if status >= 500:
                log.error("request failed", extra={"error": str(err), "path": request.path})
            return error_body(status, name, str(err))
    return _unexpected_error(err)


def _unexpected_error(err: Exception) -> tuple[Response, int]:
    if isinstance(err, HTTPException):
        return _http_error(err)
    log.exception("unexpected error", extra={"path": request.path})
    return error_body(500, "internal_error", "unexpected error; it has been logged")


def _log_refusal(response: Response, throttle: LogThrottle) -> Response:
    """Log a 4xx answer at WARNING (rate-limited), so an admin sees why a sender is refused.

    Every refusal passes here, whether an error handler or a view wrote it: the reason
    logged is the one the sender was told. Never the query string (a CRC token) or a
    header value (a signature). The address is the TCP peer's, or with
    `server.trusted_proxies` the one those proxies put in `X-Forwarded-For`.
    """
    status = response.status_code
    if not 400 <= status < 500:
        return response
    body = response.get_json(silent=True) if response.is_json else None
    error, reason = (body.get("error"), body.get("reason")) if isinstance(body, dict) else (
        None, None)
    # The route's rule, not the path, keys the throttle: a path is the sender's to vary.
    route = request.url_rule.rule if request.url_rule is not None else "<no route>"
    kind = (route, str(error))
    admitted = throttle.admit(kind)
    fields = {"route": route, "error": error, "status": status}
    if admitted.suppressed:
        log.warning(f"{admitted.suppressed} more refusals like this were suppressed",
                    extra={**fields, "suppressed": admitted.suppressed,
                           "interval_seconds": throttle.interval})
    if admitted.write:
        log.warning("request refused", extra={
            **fields, "reason": _clip(reason), "method": request.method,
            "path": _clip(request.path), "remote_addr": request.remote_addr})
    return response


def _clip(text: object, limit: int = 300) -> str:
    value = str(text)
    return value if len(value) <= limit else value[:limit] + "..."
