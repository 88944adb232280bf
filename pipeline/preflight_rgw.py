"""The RGW check of ``egresswatch worker``'s start-up (``pipeline.preflight``), in time bounds.

Contract: :func:`check_rgw` returns when the S3 endpoint answers a signed ListBuckets (the
credentials work) and HeadBucket does not refuse the bucket (a missing bucket is fine: the
worker creates it). Otherwise it raises :class:`~pipeline.startup_errors.StartupError`,
with ``unreachable`` set when RGW did not answer at all (an outage may be short; the caller
may start anyway) and not when it refused (credentials, a malformed endpoint).
"""

from __future__ import annotations

from typing import Any, Final
from urllib.parse import urlsplit

from pipeline.preflight import CONNECT_TIMEOUT_S, tcp_problem
from pipeline.settings import WorkerSettings
from pipeline.startup_errors import StartupError

__all__ = ["check_rgw"]

RGW_TIMEOUT_S: Final = 5.0
_RGW_HINT: Final = "check EGRESSWATCH_S3_ENDPOINT (or --allow-rgw-down to start and spool)"
_CREDENTIALS_HINT: Final = "check EGRESSWATCH_S3_ACCESS_KEY / EGRESSWATCH_S3_SECRET_KEY"
_CREDENTIAL_CODES: Final = frozenset(
    {"InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "403"}
)


def check_rgw(settings: WorkerSettings) -> None:
    """A signed ListBuckets answers (credentials), then HeadBucket (missing is fine).

    An RGW that does not answer raises a StartupError with ``unreachable`` set.
    """
    endpoint = settings.s3_endpoint or ""
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise StartupError(
            f"bad S3 endpoint {endpoint!r} (expected a URL such as http://127.0.0.1:17480)",
            "check EGRESSWATCH_S3_ENDPOINT",
        )
    try:
        port = parts.port or (443 if parts.scheme == "https" else 80)
    except ValueError as exc:
        raise StartupError(
            f"bad S3 endpoint {endpoint!r} ({exc})", "check EGRESSWATCH_S3_ENDPOINT"
        ) from exc
    problem = tcp_problem(parts.hostname, port)
    if problem is not None:
        raise StartupError(
            f"cannot reach RGW at {endpoint} ({problem})", _RGW_HINT, unreachable=True
        )
    client = _s3_client(settings)
    _s3_call(client.list_buckets, endpoint, settings)
    _s3_call(lambda: client.head_bucket(Bucket=settings.s3_bucket), endpoint, settings)


def _s3_client(settings: WorkerSettings) -> Any:
    from botocore.config import Config  # type: ignore[import-untyped]
    from botocore.session import get_session  # type: ignore[import-untyped]

    return get_session().create_client(
        "s3",
        endpoint_url=settings.s3_endpoint,
        aws_access_key_id=settings.s3_access_key,
        aws_secret_access_key=settings.s3_secret_key,
        region_name="us-east-1",
        config=Config(
            connect_timeout=CONNECT_TIMEOUT_S,
            read_timeout=RGW_TIMEOUT_S,
            retries={"total_max_attempts": 1},
            s3={"addressing_style": "path"},
        ),
    )


def _s3_call(call: Any, endpoint: str, settings: WorkerSettings) -> None:
    from botocore.exceptions import (  # type: ignore[import-untyped]
        BotoCoreError,
        ClientError,
        NoCredentialsError,
        PartialCredentialsError,
    )

    try:
        call()
    except (NoCredentialsError, PartialCredentialsError) as exc:
        raise StartupError(f"no credentials for RGW at {endpoint}", _CREDENTIALS_HINT) from exc
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
        if code in ("404", "NoSuchBucket"):
            return  # the worker creates its bucket
        if code in _CREDENTIAL_CODES or status == 403:
            what = f"bucket {settings.s3_bucket!r}" if code == "403" else "the credentials"
            raise StartupError(
                f"RGW at {endpoint} refuses {what} ({code or status})", _CREDENTIALS_HINT
            ) from exc
        raise StartupError(
            f"RGW at {endpoint} answered {code or status} {error.get('Message') or ''}".rstrip(),
            "check EGRESSWATCH_S3_ENDPOINT / EGRESSWATCH_S3_BUCKET",
        ) from exc
    except BotoCoreError as exc:
        raise StartupError(
            f"RGW at {endpoint} did not answer ({exc})", _RGW_HINT, unreachable=True
        ) from exc
