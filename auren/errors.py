"""The exception tree. Domain code raises these; HTTP mapping happens once, in
``services.kernel.problem``.

::

    AurenError                      (500, never shown with details)
    ├── ClientError                 4xx: the request is wrong; never counts against a breaker
    │   ├── MalformedPayload        400 body is not what the provider sends
    │   ├── Unauthorized            401 missing credentials
    │   │   └── SignatureInvalid    401 signature, timestamp or key does not verify
    │   ├── Forbidden               403 authenticated, but not for this resource
    │   ├── NotFound                404
    │   │   └── ProviderNotConfigured 404 the provider has no secret configured
    │   ├── MethodNotAllowed        405 carries the allowed methods
    │   ├── Conflict                409 the resource's state does not allow it now
    │   ├── PayloadTooLarge         413
    │   ├── UnsupportedMediaType    415
    │   ├── InvalidPayload          422 well-formed but semantically wrong (names the bad item)
    │   ├── RateLimited             429 carries Retry-After
    │   └── GrantInvalid            400 a provider refused the person's grant (a code, a
    │                                   revoked or expired token): they must connect again
    ├── UpstreamRejected            424 a provider's API refused a call for good (not retried)
    └── ServiceUnavailable          503 carries Retry-After; ``retriable``: the sender should retry
        ├── Overloaded              admission queue full or wait expired
        ├── StoreUnavailable        the durable write failed or timed out
        └── UpstreamFailed          a provider's API failed for now (5xx, timeout, a broken
            │                           answer)
            └── UpstreamRateLimited its rate limit; Retry-After is the provider's

``retriable`` says whether the same request may succeed later; providers retry on 5xx.
"""

from __future__ import annotations

from typing import Any, ClassVar


class AurenError(Exception):
    status: ClassVar[int] = 500
    title: ClassVar[str] = "Internal Server Error"
    slug: ClassVar[str] = "internal"
    retriable: ClassVar[bool] = False

    def __init__(self, detail: str = "", **extra: Any) -> None:
        super().__init__(detail or self.title)
        self.detail = detail or self.title
        self.extra = extra

    def headers(self) -> dict[str, str]:
        return {}


class ClientError(AurenError):
    status = 400
    title = "Bad Request"
    slug = "bad-request"


class MalformedPayload(ClientError):
    status = 400
    title = "Malformed payload"
    slug = "malformed-payload"


class Unauthorized(ClientError):
    status = 401
    title = "Unauthorized"
    slug = "unauthorized"


class SignatureInvalid(Unauthorized):
    title = "Signature verification failed"
    slug = "signature-invalid"


class Forbidden(ClientError):
    status = 403
    title = "Forbidden"
    slug = "forbidden"


class NotFound(ClientError):
    status = 404
    title = "Not Found"
    slug = "not-found"


class ProviderNotConfigured(NotFound):
    title = "provider not configured"
    slug = "provider-not-configured"


class MethodNotAllowed(ClientError):
    status = 405
    title = "Method Not Allowed"
    slug = "method-not-allowed"

    def __init__(self, allowed: tuple[str, ...], detail: str = "") -> None:
        super().__init__(detail or f"allowed: {', '.join(allowed)}")
        self.allowed = allowed

    def headers(self) -> dict[str, str]:
        return {"Allow": ", ".join(self.allowed)}


class Conflict(ClientError):
    status = 409
    title = "Conflict"
    slug = "conflict"


class PayloadTooLarge(ClientError):
    status = 413
    title = "Payload Too Large"
    slug = "payload-too-large"

    def headers(self) -> dict[str, str]:
        # The rest of the body is still on its way: the connection is closed after the answer
        # (the guard reads and discards what is left first), and the client must know not to
        # send another request on it.
        return {"Connection": "close"}


class UnsupportedMediaType(ClientError):
    status = 415
    title = "Unsupported Media Type"
    slug = "unsupported-media-type"


class InvalidPayload(ClientError):
    status = 422
    title = "Invalid payload"
    slug = "invalid-payload"


class GrantInvalid(ClientError):
    status = 400
    title = "Authorization refused by the provider"
    slug = "grant-invalid"


class UpstreamRejected(AurenError):
    # 424 Failed Dependency: the request was fine, the provider it depends on refused.
    status = 424
    title = "The provider refused the request"
    slug = "upstream-rejected"


class _RetryAfter(AurenError):
    def __init__(self, detail: str = "", retry_after_s: int = 1, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = max(1, int(retry_after_s))

    def headers(self) -> dict[str, str]:
        return {"Retry-After": str(self.retry_after_s)}


class RateLimited(_RetryAfter, ClientError):
    status = 429
    title = "Too Many Requests"
    slug = "rate-limited"


class ServiceUnavailable(_RetryAfter):
    status = 503
    title = "Service Unavailable"
    slug = "unavailable"
    retriable = True


class Overloaded(ServiceUnavailable):
    title = "Overloaded"
    slug = "overloaded"


class StoreUnavailable(ServiceUnavailable):
    title = "Store unavailable"
    slug = "store-unavailable"


class UpstreamFailed(ServiceUnavailable):
    title = "The provider's API failed"
    slug = "upstream-failed"


class UpstreamRateLimited(UpstreamFailed):
    title = "The provider's rate limit"
    slug = "upstream-rate-limited"
