"""Run the agent API: ``python -m ragkeeper_agent`` (console script ``ragkeeper-agent``).

Serves ``create_app(Settings())`` with uvicorn on ``HOST``/``PORT``. On SIGTERM or
SIGINT the app starts draining at once (readiness turns 503, running turns get
``SHUTDOWN_GRACE_SECONDS`` to finish and otherwise end with a final error line)
while uvicorn stops accepting connections and waits for in-flight responses.
"""

from __future__ import annotations

import asyncio
import sys
from types import FrameType

import uvicorn
from fastapi import FastAPI
from pydantic import ValidationError

from .app import create_app, request_shutdown
from .logs import configure_logging
from .settings import Settings, describe_invalid


class DrainingServer(uvicorn.Server):
    """A uvicorn server that tells the app to drain as soon as a stop signal arrives."""

    def __init__(self, config: uvicorn.Config, app: FastAPI) -> None:
        super().__init__(config)
        self._app = app
        self._loop: asyncio.AbstractEventLoop | None = None

    async def serve(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        self._loop = asyncio.get_running_loop()
        await super().serve(sockets)  # type: ignore[arg-type]

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        if self._loop is not None:
            self._loop.call_soon_threadsafe(request_shutdown, self._app)
        super().handle_exit(sig, frame)


def build_server(settings: Settings, app: FastAPI) -> DrainingServer:
    config = uvicorn.Config(
        app,
        host=settings.host,
        port=settings.port,
        log_config=None,
        access_log=False,
        # The app resolves the client through TRUSTED_PROXIES (audit.py); uvicorn's own
        # FORWARDED_ALLOW_IPS handling would rewrite the peer before the app can judge it.
        proxy_headers=False,
        server_header=False,
        timeout_graceful_shutdown=int(settings.shutdown_grace_seconds) + 5,
    )
    return DrainingServer(config, app)


def main() -> int:
    try:
        settings = Settings()  # type: ignore[call-arg]  # read from the environment
    except ValidationError as exc:
        sys.stderr.write(f"invalid configuration:\n{describe_invalid(exc)}\n")
        return 2
    configure_logging(settings.log_level, settings.log_format)
    server = build_server(settings, create_app(settings))
    server.run()
    return 0 if server.started else 1


if __name__ == "__main__":
    raise SystemExit(main())
