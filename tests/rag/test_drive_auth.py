"""Credentials and resilience of the Drive source against the fake.

Bad credentials must end in ``CredentialsError`` (exit 3) with a one-line reason
that names what was wrong and never the secret; rate limits and 5xx are retried;
a lost network becomes ``TransientError`` (exit 1).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from ragkeeper_rag.errors import ConfigurationError, CredentialsError, TransientError
from ragkeeper_rag.settings import RagSettings
from ragkeeper_rag.sources.google_drive import GoogleDriveSource
from tests.rag.drive_fake import FAST_RETRY, DriveFake, by_id, make_source


@pytest.fixture
def fake() -> Iterator[DriveFake]:
    with DriveFake() as f:
        yield f


def source_with(fake: DriveFake, folder_id: str | None = "x", **kw: Any) -> GoogleDriveSource:
    settings = RagSettings(folder_id=folder_id, google_drive_api_endpoint=fake.url, **kw)
    return GoogleDriveSource.from_settings(settings, retry=FAST_RETRY)


async def test_service_account_key_mounted_as_file_works(fake: DriveFake, tmp_path: Path) -> None:
    root = fake.add_folder("R", fake.root_id)
    note = fake.add_file("a.txt", root, "a")
    key = tmp_path / "key.json"
    key.write_text(json.dumps(fake.service_account()))
    source = source_with(fake, root, google_application_credentials=key)
    assert set(by_id(await source.scan(None))) == {note}
    await source.aclose()
    assert 1 <= fake.calls["token"] <= 4  # one token per worker thread, not per call


async def test_oauth_token_file_is_the_fallback(fake: DriveFake, tmp_path: Path) -> None:
    root = fake.add_folder("R", fake.root_id)
    note = fake.add_file("a.txt", root, "a")
    token = tmp_path / "token.json"
    body = fake.authorized_user()
    del body["type"]  # files written by google-auth-oauthlib carry no type
    token.write_text(json.dumps(body))
    source = source_with(fake, root, google_oauth_token_file=token)
    assert set(by_id(await source.scan(None))) == {note}
    await source.aclose()


async def test_unknown_key_is_refused_with_the_account_named(
    fake: DriveFake, caplog: pytest.LogCaptureFixture
) -> None:
    root = fake.add_folder("R", fake.root_id)
    info = fake.service_account("stranger@evil.iam.gserviceaccount.com", register=False)
    caplog.set_level(logging.DEBUG)
    source = source_with(fake, root, google_drive_credentials_json=json.dumps(info))
    with pytest.raises(CredentialsError) as raised:
        await source.scan(None)
    await source.aclose()
    message = str(raised.value)
    assert "stranger@evil.iam.gserviceaccount.com" in message and "\n" not in message
    secret_line = info["private_key"].splitlines()[1]
    assert secret_line not in message and secret_line not in caplog.text


async def test_revoked_refresh_token_is_a_credentials_error(
    fake: DriveFake, tmp_path: Path
) -> None:
    body = fake.authorized_user()
    body["refresh_token"] = "1//revoked"
    token = tmp_path / "token.json"
    token.write_text(json.dumps(body))
    source = source_with(fake, "x", google_oauth_token_file=token)
    with pytest.raises(CredentialsError, match="OAuth client"):
        await source.scan(None)
    await source.aclose()


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("{not json", "GOOGLE_DRIVE_CREDENTIALS_JSON: not valid JSON"),
        ('{"type": "service_account", "client_email": "a@b"}', "missing field(s) private_key"),
        ('{"type": "external_account"}', "unsupported credentials type 'external_account'"),
        (
            '{"type": "service_account", "client_email": "a@b", "token_uri": "http://x",'
            ' "private_key": "-----BEGIN PRIVATE KEY-----\\nAAAA\\n-----END PRIVATE KEY-----\\n"}',
            "private_key could not be parsed",
        ),
    ],
)
def test_malformed_inline_credentials_fail_before_any_call(
    fake: DriveFake, value: str, reason: str
) -> None:
    with pytest.raises(CredentialsError) as raised:
        source_with(fake, google_drive_credentials_json=value)
    assert reason in str(raised.value)
    assert "AAAA" not in str(raised.value)
    assert fake.api_calls == 0


def test_missing_credentials_and_folder_are_named(fake: DriveFake, tmp_path: Path) -> None:
    with pytest.raises(CredentialsError, match="no Google credentials"):
        source_with(fake)
    with pytest.raises(CredentialsError, match="file not found"):
        source_with(fake, google_application_credentials=tmp_path / "absent.json")
    with pytest.raises(ConfigurationError, match="RAG_WATCH_FOLDER_ID"):
        source_with(fake, None, google_drive_credentials_json=json.dumps(fake.service_account()))


async def test_unknown_folder_is_a_configuration_error(fake: DriveFake) -> None:
    source = make_source(fake, "no-such-folder")
    with pytest.raises(ConfigurationError, match="not found or not shared with ingest@"):
        await source.scan(None)
    plain = fake.add_file("a.txt", fake.root_id, "a")
    source2 = make_source(fake, plain)
    with pytest.raises(ConfigurationError, match="not a folder"):
        await source2.scan(None)
    await source.aclose()
    await source2.aclose()


async def test_disabled_api_is_a_credentials_error(fake: DriveFake) -> None:
    root = fake.add_folder("R", fake.root_id)
    source = make_source(fake, root)
    fake.fail(1, 403, "accessNotConfigured")
    with pytest.raises(CredentialsError, match="not enabled"):
        await source.scan(None)
    await source.aclose()


async def test_rate_limit_storm_is_ridden_out(fake: DriveFake) -> None:
    root = fake.add_folder("R", fake.root_id)
    sub = fake.add_folder("S", root)
    ids = {fake.add_file(f"{i}.txt", sub, str(i)) for i in range(30)}
    source = make_source(fake, root)
    fake.fail(1, 429, retry_after=0)
    fake.storm(90)  # 429, 403 userRateLimitExceeded / rateLimitExceeded, 503, in turn
    result = await source.scan(None)
    assert set(by_id(result)) == ids
    contents = {f.source_id: (await source.fetch(f)).data for f in result.files}
    await source.aclose()
    assert contents == {i: fake.files[i].content for i in ids}
    assert fake.faults_pending == 0  # the whole storm was met, and every call got through
    assert sum(source.api.calls.values()) == fake.api_calls > 30 + 4


async def test_network_loss_is_transient(fake: DriveFake) -> None:
    root = fake.add_folder("R", fake.root_id)
    note = fake.add_file("a.txt", root, "a")
    source = make_source(fake, root)
    files = by_id(await source.scan(None))
    fake.cut_network_after(0)
    with pytest.raises(TransientError, match="unreachable"):
        await source.fetch(files[note])
    fake.restore_network()
    assert (await source.fetch(files[note])).data == b"a"
    await source.aclose()
