"""A refused setting is reported by name and reason, never with the value that was given.

pydantic's own ``ValidationError`` text quotes each ``input_value`` (for a model-level check,
the whole environment it read), so printing it would put AUTH_JWT_SECRET or the OTLP export
headers into the pod's log. Both entry points run here in-process, reading the environment.
"""

from __future__ import annotations

import pytest

from ragkeeper_agent.__main__ import main as agent_main
from ragkeeper_operator.__main__ import main as operator_main

SHORT_SECRET = "tail-of-a-jwt-secret-Q7x"  # under 32 bytes: refused
HEADERS = "Authorization=Basic%20c2stbGYtc2VjcmV0LWhlYWRlcg=="


@pytest.mark.parametrize(
    ("extra", "reason"),
    [
        ({}, "settings: Value error, AUTH_JWT_SECRET is a placeholder or shorter than 32 bytes"),
        ({"PORT": "not-a-port"}, "PORT: Input should be a valid integer"),
    ],
)
def test_agent_prints_the_setting_and_reason_but_no_secret(
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    extra: dict[str, str],
    reason: str,
) -> None:
    env = {
        "DATABASE_URL": "postgresql://agent:dbpass-Z9@db.example/rk",
        "AUTH_MODE": "jwt",
        "AUTH_JWT_SECRET": SHORT_SECRET,
        "OTEL_EXPORTER_OTLP_HEADERS": HEADERS,
        **extra,
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)

    assert agent_main() == 2

    err = capsys.readouterr().err
    assert reason in err
    for value in (SHORT_SECRET, "Q7x", "c2stbGYtc2VjcmV0", "dbpass-Z9", "not-a-port"):
        assert value not in err, err
    assert "input_value" not in err


def test_operator_prints_the_setting_and_reason_but_no_value(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("DATABASE_SECRET_NAME", "Not_A_Dns_Label-s3cr3t")
    monkeypatch.setenv("METRICS_PORT", "70000")

    with pytest.raises(SystemExit) as exited:
        operator_main()

    assert exited.value.code == 2
    err = capsys.readouterr().err
    assert "DATABASE_SECRET_NAME: String should match pattern" in err
    assert "METRICS_PORT: Input should be less than or equal to 65535" in err
    assert "s3cr3t" not in err and "70000" not in err
    assert "input_value" not in err
