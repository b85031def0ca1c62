"""Google credentials for the Drive source, chosen the way a Kubernetes Job has them.

A scheduled job cannot open a browser, so only non-interactive credentials are
accepted, in this order:

1. ``GOOGLE_DRIVE_CREDENTIALS_JSON``: the service-account key inline (an env var
   filled from a Secret);
2. ``GOOGLE_APPLICATION_CREDENTIALS``: the same key as a mounted file (the
   Kubernetes way: the Secret mounted read-only);
3. ``GOOGLE_OAUTH_TOKEN_FILE``: an OAuth *authorized user* token file (with a
   refresh token) produced once on a workstation.

An ``authorized_user`` JSON is accepted in the first two places as well. The
token URI always comes from the credentials themselves, as Google's libraries do;
tests point it at a local fake.

Every failure raises :class:`~ragkeeper_rag.errors.CredentialsError` with a
one-line reason that names *what* was wrong (which variable, which field) and
never repeats the secret: the key material, refresh tokens and access tokens
never reach a message or a log line.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from google.auth import exceptions as gexc
from google.auth.credentials import Credentials
from google.oauth2 import credentials as user_credentials
from google.oauth2 import service_account

from ragkeeper_rag.errors import CredentialsError
from ragkeeper_rag.settings import RagSettings

log = logging.getLogger(__name__)

DRIVE_SCOPES = ("https://www.googleapis.com/auth/drive.readonly",)
"""Read-only: the job never writes to Drive."""


@dataclass(frozen=True, slots=True)
class CredentialsSource:
    """How to (re)build credentials, and a safe label for messages.

    Kept as the parsed JSON rather than a ``Credentials`` object because
    google-auth credentials are not thread-safe: every worker thread builds its
    own from this.
    """

    kind: str
    """``service_account`` or ``authorized_user``."""
    info: dict[str, Any]
    origin: str
    """Where it came from, e.g. ``GOOGLE_APPLICATION_CREDENTIALS=/var/secrets/key.json``."""

    @property
    def principal(self) -> str:
        """Who the credentials act as, for messages (an email, or the client id)."""
        if self.kind == "service_account":
            return str(self.info.get("client_email", "?"))
        return f"OAuth client {self.info.get('client_id', '?')}"

    def build(self) -> Credentials:
        """A fresh, scoped credentials object (one per thread)."""
        factory: Any = (
            service_account.Credentials.from_service_account_info
            if self.kind == "service_account"
            else user_credentials.Credentials.from_authorized_user_info
        )
        try:
            credentials: Any = factory(self.info, scopes=list(DRIVE_SCOPES))
        except ValueError as exc:
            raise CredentialsError(f"{self.origin}: {_safe_value_error(exc)}") from None
        if self.kind == "authorized_user" and self.info.get("token_uri"):
            # from_authorized_user_info always uses Google's endpoint; the file's own
            # token_uri (written by google-auth's to_json) is honoured like a key's.
            credentials = credentials.with_token_uri(self.info["token_uri"])
        built: Credentials = credentials
        return built


def load_credentials(settings: RagSettings) -> CredentialsSource:
    """Pick and validate the credentials named by the settings."""
    source: CredentialsSource
    if settings.google_drive_credentials_json is not None:
        source = _parse(
            settings.google_drive_credentials_json.get_secret_value(),
            "GOOGLE_DRIVE_CREDENTIALS_JSON",
        )
    elif settings.google_application_credentials is not None:
        path = settings.google_application_credentials
        source = _parse(
            _read(path, "GOOGLE_APPLICATION_CREDENTIALS"), f"GOOGLE_APPLICATION_CREDENTIALS={path}"
        )
    elif settings.google_oauth_token_file is not None:
        path = settings.google_oauth_token_file
        source = _parse(
            _read(path, "GOOGLE_OAUTH_TOKEN_FILE"),
            f"GOOGLE_OAUTH_TOKEN_FILE={path}",
            expect="authorized_user",
        )
    else:
        raise CredentialsError(
            "no Google credentials: set GOOGLE_DRIVE_CREDENTIALS_JSON, "
            "GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_OAUTH_TOKEN_FILE"
        )
    source.build()  # parses the private key now: a broken key fails before any call
    log.info("google drive credentials: %s from %s", source.principal, source.origin)
    return source


def _read(path: Path, variable: str) -> str:
    try:
        return path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise CredentialsError(f"{variable}={path}: file not found") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise CredentialsError(
            f"{variable}={path}: cannot read file ({type(exc).__name__})"
        ) from None


def _parse(text: str, origin: str, expect: str | None = None) -> CredentialsSource:
    try:
        info = json.loads(text)
    except json.JSONDecodeError:
        raise CredentialsError(f"{origin}: not valid JSON") from None
    if not isinstance(info, dict):
        raise CredentialsError(f"{origin}: expected a JSON object")
    kind = info.get("type")
    if kind is None and "refresh_token" in info:
        kind = "authorized_user"  # token files written by google-auth-oauthlib omit "type"
    if expect is not None and kind != expect:
        raise CredentialsError(f"{origin}: expected type {expect!r}, got {kind!r}")
    if kind == "service_account":
        required = ("client_email", "private_key", "token_uri")
    elif kind == "authorized_user":
        required = ("client_id", "client_secret", "refresh_token")
    else:
        raise CredentialsError(
            f"{origin}: unsupported credentials type {kind!r} "
            "(expected 'service_account' or 'authorized_user')"
        )
    missing = [name for name in required if not info.get(name)]
    if missing:
        raise CredentialsError(f"{origin}: missing field(s) {', '.join(missing)}")
    return CredentialsSource(kind=kind, info=info, origin=origin)


def _safe_value_error(exc: ValueError) -> str:
    """google-auth's ValueErrors name fields, but a key parse error may quote key bytes."""
    text = str(exc)
    if "private" in text.lower() or "key" in text.lower() or "deserialize" in text.lower():
        return "private_key could not be parsed as a PEM RSA key"
    return text.splitlines()[0][:200] if text else type(exc).__name__


def describe_refresh_error(exc: gexc.RefreshError, source: CredentialsSource) -> str:
    """One line naming who was refused and the endpoint's error code, without secrets."""
    code = ""
    if len(exc.args) > 1 and isinstance(exc.args[1], dict):
        body = exc.args[1]
        code = str(body.get("error", ""))
        description = body.get("error_description")
        if description:
            code = f"{code}: {str(description)[:160]}"
    elif exc.args:
        code = str(exc.args[0]).splitlines()[0][:160]
    return (
        f"Google token endpoint refused the credentials of {source.principal} "
        f"from {source.origin}" + (f" ({code})" if code else "")
    )
