"""A fake OpenAI-compatible vision model, served over real HTTP on 127.0.0.1.

:class:`FakeVision` answers ``POST /v1/chat/completions`` with a caption derived from the image
it was sent (:func:`caption_for`: two words picked by the SHA-256 of the image's bytes, so a
test knows what to search for), records every request (its JSON and ``Authorization`` header)
and may answer a scripted status instead (``fail_with``). It checks what the job sends: one
user message with a text part and an ``image_url`` part holding a base64 ``data:`` URI.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from tests.support import serve_asgi

MODEL = "fake-vision"
WORDS = (
    "lighthouse",
    "giraffe",
    "saxophone",
    "volcano",
    "penguin",
    "cactus",
    "umbrella",
    "bicycle",
    "harbour",
    "tractor",
    "violin",
    "glacier",
    "kangaroo",
    "windmill",
    "canoe",
    "pyramid",
)


def caption_for(image: bytes) -> str:
    """The fake's caption of ``image``: two of :data:`WORDS`, chosen by the image's hash."""
    digest = hashlib.sha256(image).digest()
    first, second = WORDS[digest[0] % len(WORDS)], WORDS[digest[1] % len(WORDS)]
    return f"A photograph of a {first} beside a {second}."


@dataclass
class FakeVision:
    """``POST /v1/chat/completions``: a caption of the request's image; counts the requests."""

    requests: list[dict[str, Any]] = field(default_factory=list)
    authorizations: list[str | None] = field(default_factory=list)
    fail_with: int | None = None
    """Answer every request with this status (and an OpenAI-style error body)."""

    @property
    def calls(self) -> int:
        return len(self.requests)

    def app(self) -> FastAPI:
        app = FastAPI()

        @app.post("/v1/chat/completions")
        async def completions(request: Request) -> JSONResponse:
            body = await request.json()
            self.requests.append(body)
            self.authorizations.append(request.headers.get("authorization"))
            if self.fail_with is not None:
                error = {"message": f"scripted failure {self.fail_with}"}
                return JSONResponse({"error": error}, status_code=self.fail_with)
            [message] = body["messages"]
            parts = {part["type"]: part for part in message["content"]}
            uri = parts["image_url"]["image_url"]["url"]
            header, data = uri.split(",", 1)
            assert header.startswith("data:image/") and header.endswith(";base64"), header
            caption = caption_for(base64.b64decode(data))
            return JSONResponse(
                {
                    "id": f"chatcmpl-{len(self.requests)}",
                    "object": "chat.completion",
                    "model": body["model"],
                    "choices": [
                        {
                            "index": 0,
                            "message": {"role": "assistant", "content": caption},
                            "finish_reason": "stop",
                        }
                    ],
                }
            )

        return app


@asynccontextmanager
async def vision_server(fake: FakeVision | None = None) -> AsyncIterator[tuple[FakeVision, str]]:
    """The fake served until the block exits; yields it and its base URL (``.../v1``)."""
    fake = fake or FakeVision()
    async with serve_asgi(fake.app()) as url:
        yield fake, f"{url}/v1"
