"""The REDIS_* settings: a refused one is named with the reason, never with its value (a
REDIS_URL may hold the password)."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from ragkeeper_agent import Settings
from ragkeeper_agent.settings import describe_invalid

SECRET_PART = "pw-8c1f"  # pragma: allowlist secret
OTHER_PART = "other-pw"  # pragma: allowlist secret


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"redis_url": f"http://:{SECRET_PART}@cache:6379"}, "REDIS_URL must start with redis://"),
        ({"redis_url": f"redis://:{SECRET_PART}@cache:port"}, "REDIS_URL is not a valid URL"),
        ({"redis_url": f"redis://:{SECRET_PART}@:6379"}, "REDIS_URL names no host"),
        ({"redis_url": f"redis://:{SECRET_PART}@cache/x"}, "REDIS_URL's path must be"),
        (
            {"redis_url": f"rediss://:{SECRET_PART}@cache?ssl_cert_reqs=none"},
            "REDIS_URL must have no query string",
        ),
        (
            {"redis_url": f"redis://:{SECRET_PART}@cache", "redis_password": OTHER_PART},
            "REDIS_URL holds a password other than REDIS_PASSWORD",
        ),
        ({"redis_password": SECRET_PART}, "REDIS_PASSWORD is set but REDIS_URL is not"),
        (
            {"redis_url": "redis://cache", "redis_socket_timeout_seconds": 0},
            "REDIS_SOCKET_TIMEOUT_SECONDS: Input should be greater than 0",
        ),
        (
            {"redis_url": "redis://cache", "redis_key_prefix": "rag keeper"},
            "REDIS_KEY_PREFIX: String should match pattern",
        ),
    ],
)
def test_redis_settings_are_refused_by_name_never_by_value(
    values: dict[str, Any], message: str
) -> None:
    with pytest.raises(ValidationError) as refused:
        Settings(database_url="postgresql://x/y", auth_mode="disabled", **values)
    described = describe_invalid(refused.value)
    assert message in described
    assert SECRET_PART not in described and OTHER_PART not in described


def test_redis_defaults_and_accepted_urls() -> None:
    base = {"database_url": "postgresql://x/y", "auth_mode": "disabled"}
    off = Settings(**base)
    assert not off.redis_configured
    assert (
        off.redis_socket_timeout_seconds,
        off.redis_connect_timeout_seconds,
        off.redis_max_connections,
        off.redis_embedding_ttl_seconds,
        off.redis_search_ttl_seconds,
        off.redis_retry_seconds,
        off.redis_key_prefix,
    ) == (0.1, 0.5, 20, 604_800, 300, 5.0, "ragkeeper:")
    for url in (
        "redis://cache",
        "redis://cache:6379/0",
        f"rediss://agent:{SECRET_PART}@cache.example:6380/3",
        "redis://[::1]:6379",
    ):
        assert Settings(**base, redis_url=url).redis_configured
    assert Settings(**base, redis_url="rediss://cache", redis_password=SECRET_PART).redis_configured
    # The same password in both places (a Secret's URL and its password key) is not a conflict.
    both = {"redis_url": f"redis://:{SECRET_PART}@cache", "redis_password": SECRET_PART}
    assert Settings(**base, **both).redis_configured
