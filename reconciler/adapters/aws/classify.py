"""
What a failed AWS call means and what to do about it, for every AWS adapter.

botocore raises one ``ClientError`` for every refusal; only its code says whether the identity
lacks a permission, the credentials are bad, AWS is throttling or failing, or the request itself
was refused. ``explain`` sorts an exception into one of those causes and words the advice (which
IAM action to allow, the credentials, the endpoint, waiting); each adapter decides what the cause
means for it (a per-group error, or the error taxonomy of ``reconciler.core.errors``).

The code sets cover Auto Scaling, EC2 and SQS (with the KMS codes of an encrypted queue). SQS
answers in the JSON protocol with query compatibility: the legacy code is in ``Error.Code``, the
modelled one in ``Error.QueryErrorCode``, so sets list both spellings and ``error_codes`` returns
both.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

from botocore.exceptions import (
    ClientError,
    HTTPClientError,
    NoCredentialsError,
    PartialCredentialsError,
)
from botocore.exceptions import ConnectionError as BotoConnectionError
from botocore.parsers import ResponseParserError


#: Auto Scaling ``Throttling``; EC2 ``RequestLimitExceeded`` / ``EC2ThrottledException``; SQS
#: ``RequestThrottled``, ``KmsThrottled`` and ``OverLimit`` (too many messages in flight).
THROTTLING_CODES = frozenset(
    {
        "Throttling",
        "ThrottlingException",
        "TooManyRequestsException",
        "RequestLimitExceeded",
        "EC2ThrottledException",
        "RequestThrottled",
        "KmsThrottled",
        "KMS.ThrottlingException",
        "OverLimit",
    }
)
ACCESS_DENIED_CODES = frozenset(
    {
        "AccessDenied",
        "AccessDeniedException",
        "UnauthorizedOperation",
        "UnauthorizedAccess",
        "KmsAccessDenied",
        "KMS.AccessDeniedException",
    }
)
BAD_CREDENTIALS_CODES = frozenset(
    {
        "AuthFailure",
        "ExpiredToken",
        "ExpiredTokenException",
        "InvalidClientTokenId",
        "InvalidSecurity",
        "RequestExpired",
        "SignatureDoesNotMatch",
        "UnrecognizedClientException",
    }
)
#: How much of an AWS error message goes into an explanation.
MAX_REASON_CHARS = 200


class Cause(enum.Enum):
    """Why a call failed, which decides who has to act."""

    #: The identity lacks a permission: the user must grant it.
    ACCESS = "access"
    #: Credentials are missing, wrong or expired: the user must fix them.
    CREDENTIALS = "credentials"
    #: Throttling, an AWS-side failure, or no (AWS-like) answer at all: trying later may work.
    TRANSIENT = "transient"
    #: Anything else: AWS refused this request, or a failure we have no advice for.
    OTHER = "other"


@dataclass(frozen=True)
class Explanation:
    """A failed call in words: its cause, what happened, and what to do about it."""

    cause: Cause
    #: ``<Code>: <message>`` for an AWS refusal, ``<ExceptionType>: <message>`` otherwise.
    what: str
    advice: str


def error_codes(exc: BaseException) -> frozenset[str]:
    """
    The AWS error codes of *exc*: ``Error.Code`` and, for SQS, ``Error.QueryErrorCode``
    (empty when *exc* is not an AWS error reply). Match them against a code set with ``&``.
    """
    if not isinstance(exc, ClientError):
        return frozenset()
    error = exc.response.get("Error", {})
    # The stubs do not know QueryErrorCode, hence the str().
    return frozenset(str(code) for code in (error.get("Code"), error.get("QueryErrorCode")) if code)


def explain(
    action: str, exc: BaseException, *, again: str = "the next cycle tries again"
) -> Explanation:
    """
    Explain *exc*, raised by the call that needs IAM *action* (``sqs:ReceiveMessage``...).
    *again* is the caller's own words for when the call will be tried again.
    """
    if isinstance(exc, ClientError):
        error = exc.response.get("Error", {})
        what = _what(error.get("Code") or "?", error.get("Message", ""))
        codes = error_codes(exc)
        if codes & ACCESS_DENIED_CODES:
            # An encrypted SQS queue also needs the KMS key, and says so with a KMS code.
            kms = any(code.lower().startswith("kms") for code in codes)
            needs = "kms:Decrypt on the encrypting KMS key" if kms else action
            return Explanation(Cause.ACCESS, what, f"allow {needs} for this identity")
        if codes & BAD_CREDENTIALS_CODES:
            # AWS also refuses good keys in an opt-in region the account has not enabled.
            advice = (
                "check the AWS credentials (wrong or expired keys, or a skewed clock) "
                "and that the account has the region enabled"
            )
            return Explanation(Cause.CREDENTIALS, what, advice)
        if _throttled(exc):
            advice = f"AWS kept throttling; {again} (if it persists, ask AWS for a higher quota)"
            return Explanation(Cause.TRANSIENT, what, advice)
        if _status(exc) >= 500:
            return Explanation(Cause.TRANSIENT, what, f"AWS failed internally; {again}")
        return Explanation(Cause.OTHER, what, f"{again}; report it if this persists")
    what = _what(type(exc).__name__, str(exc))
    if isinstance(exc, NoCredentialsError | PartialCredentialsError):
        advice = "provide AWS credentials (environment, profile or instance role)"
        return Explanation(Cause.CREDENTIALS, what, advice)
    if isinstance(exc, ResponseParserError):
        advice = "the endpoint did not answer like AWS; check AWS_ENDPOINT_URL and any proxy"
        return Explanation(Cause.TRANSIENT, what, advice)
    if isinstance(exc, BotoConnectionError | HTTPClientError):
        advice = "cannot reach AWS; check the network path, proxy and AWS_ENDPOINT_URL"
        return Explanation(Cause.TRANSIENT, what, advice)
    return Explanation(Cause.OTHER, what, f"{again}; report it if this persists")


def _what(name: str, message: str) -> str:
    # Parser errors quote the whole unparsable body after their first line, and an HTML error
    # page from a proxy or emulator would swamp the log line: keep the start of the first line.
    first_line = message.strip().partition("\n")[0]
    return f"{name}: {first_line[:MAX_REASON_CHARS]}"


def _status(exc: ClientError) -> int:
    return exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)


def _throttled(exc: ClientError) -> bool:
    return bool(error_codes(exc) & THROTTLING_CODES) or _status(exc) == 429
