"""Files attached to a chat message (``attachments.py``): read by the shared extractors, given
to the model with their own citations, kept with the conversation, and refused with a reason.

Real server, real Postgres, real extractors (python-docx, tesseract for images); the model is
the offline extractive one, or a ``FunctionModel`` that records what it is sent.
"""

from __future__ import annotations

import base64
import io
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import asyncpg
import pytest
from PIL import Image
from pydantic_ai.messages import BinaryContent, ModelMessage, ModelRequest, UserPromptPart
from pydantic_ai.models.function import AgentInfo, FunctionModel

from tests.rag.corpus import docx_bytes, image_bytes

from .conftest import RunningServer, auth

DOCX_MIME = "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
KESTREL = "The Kestrel launch code is AMBER-42 and it changes every quarter."
BACKUP = "The backup window opens at two in the morning on Sundays."


def attached(name: str, data: bytes, mime: str) -> dict[str, str]:
    return {"fileName": name, "content": base64.b64encode(data).decode(), "mimeType": mime}


def kestrel_docx() -> dict[str, str]:
    body = ["Project notes for the spring release.", KESTREL]
    return attached("kestrel.docx", docx_bytes("Kestrel", body), DOCX_MIME)


async def ask(c: Any, user: str, body: dict[str, Any]) -> tuple[int, Any]:
    """One NDJSON turn: (status, the final line) or (status, the error body)."""
    r = await c.post("/api/pydantic-agent", json={"user_id": user, **body}, headers=auth(user))
    if r.status_code != 200:
        return r.status_code, r.json()
    return 200, json.loads(r.text.strip().splitlines()[-1])


@pytest.fixture(scope="module")
async def limited(server_factory: Callable[..., Any]) -> AsyncIterator[RunningServer]:
    """Small limits: 4 KiB per file, 6 KiB per message, a 2 KiB body for other routes, 3,950
    characters of prompt."""
    async with server_factory(
        max_attachment_bytes=4096,
        max_message_attachment_bytes=6144,
        max_request_bytes=2048,
        max_query_chars=500,
        max_prompt_chars=3950,
    ) as srv:
        yield srv


async def test_a_docx_answers_with_its_own_citation_and_stays_for_follow_ups(
    server: RunningServer,
) -> None:
    async with server.client() as c:
        status, done = await ask(
            c, "ada", {"query": "What is the Kestrel launch code?", "files": [kestrel_docx()]}
        )
        assert status == 200, done
        assert "AMBER-42" in done["text"]
        [source] = [s for s in done["sources"] if s["document_id"].startswith("attachment:")]
        assert source["title"] == "kestrel.docx" and source["url"] is None
        assert source["n"] == 1 and "[1]" in done["text"]
        [listed] = done["attachments"]
        assert listed["file_name"] == "kestrel.docx" and listed["mime_type"] == DOCX_MIME
        assert source["document_id"] == f"attachment:{listed['id']}"

        # A follow-up without files still reads it: it is stored with the conversation.
        session = done["session_id"]
        status, again = await ask(
            c, "ada", {"query": "How often does the launch code change?", "session_id": session}
        )
        assert status == 200, again
        assert "every quarter" in again["text"] and "attachments" not in again
        assert any(s["title"] == "kestrel.docx" for s in again["sources"])

        # Reloading the conversation shows which question carried the file.
        r = await c.get(f"/api/conversations/{session}/messages", headers=auth("ada"))
        users = [m for m in r.json() if m["role"] == "user"]
        # The file's text is stored once per turn (with its question), not per model request.
        r = await c.get(
            f"/api/conversations/{session}/messages?include_tools=true", headers=auth("ada")
        )
        stored = [json.dumps(m["message"]) for m in r.json()]
        assert len(stored) > 4  # each turn: question, search call, passages, answer
        assert sum("AMBER-42" in m and "instructions" in m for m in stored) == 2
        assert [len(m["attachments"]) for m in users] == [1, 0]
        assert users[0]["attachments"][0] == listed

        # Another conversation of the same user does not see it.
        status, other = await ask(c, "ada", {"query": "What is the Kestrel launch code?"})
        assert status == 200 and "AMBER-42" not in other["text"]
        # Nor does another user, not even the conversation.
        r = await c.get(f"/api/conversations/{session}/messages", headers=auth("bob"))
        assert r.status_code == 404


async def test_offline_an_image_is_read_by_ocr(server: RunningServer) -> None:
    image = attached("whiteboard.png", image_bytes([BACKUP]), "image/png")
    async with server.client() as c:
        status, done = await ask(
            c, "cy", {"query": "When does the backup window open?", "files": [image]}
        )
    assert status == 200, done
    assert "two in the morning" in done["text"]
    assert [s["title"] for s in done["sources"] if s["url"] is None][:1] == ["whiteboard.png"]


async def test_an_image_over_the_ocr_pixel_cap_is_refused(server: RunningServer) -> None:
    out = io.BytesIO()
    Image.new("L", (5000, 4100), 255).save(out, format="PNG")  # 20.5 MP, a few KiB
    async with server.client() as c:
        code, body = await ask(
            c,
            "ivy",
            {"query": "Read it", "files": [attached("wall.png", out.getvalue(), "image/png")]},
        )
    assert code == 413, body
    assert "'wall.png' is too large to read: image of 5000x4100 pixels" in body["detail"]


async def test_limits_and_bad_files_are_refused_with_a_reason_and_keep_nothing(
    limited: RunningServer, database_url: str
) -> None:
    question = "What is in these files?"
    cases = [
        ([attached("big.txt", b"x" * 5000, "text/plain")], 413, "MAX_ATTACHMENT_BYTES"),
        (
            [attached(f"part{i}.txt", b"y" * 3500, "text/plain") for i in range(2)],
            413,
            "MAX_MESSAGE_ATTACHMENT_BYTES",
        ),
        ([attached("tool.exe", b"MZ\x90\x00", "application/x-msdownload")], 422, "supported"),
        ([attached("broken.docx", b"PK\x03\x04 not a zip", DOCX_MIME)], 422, "could not be read"),
        (
            [attached("long.txt", b"The atrium is open. " * 200, "text/plain")],
            413,
            "too large to read: more than 3950 characters of text (MAX_PROMPT_CHARS)",
        ),
    ]
    conn = await asyncpg.connect(database_url)
    try:
        before = await conn.fetchval("SELECT count(*) FROM conversations WHERE user_id = 'dee'")
        async with limited.client() as c:
            for files, status, reason in cases:
                code, body = await ask(c, "dee", {"query": question, "files": files})
                assert code == status, body
                assert reason in json.dumps(body), body
                if status == 422:
                    assert body["detail"][0]["loc"] == ["body", "files", 0]
            # Within the limits, a body far over MAX_REQUEST_BYTES is the chat route's to take.
            fits = [attached("notes.txt", b"The atrium closes at six. " * 150, "text/plain")]
            code, done = await ask(
                c, "dee", {"query": "When does the atrium close?", "files": fits}
            )
            assert code == 200, done
            assert "closes at six" in done["text"]
            # ... and only that route's: the search route keeps MAX_REQUEST_BYTES.
            r = await c.post(
                "/api/search", json={"query": "x", "pad": "p" * 3000}, headers=auth("dee")
            )
            assert r.status_code == 413
            # Every file is counted by format and outcome.
            exposed = (await c.get("/metrics")).text
        for labels in (
            'format="txt",outcome="too_large"',
            'format="other",outcome="unsupported"',
            'format="docx",outcome="unreadable"',
            'format="txt",outcome="read"',
        ):
            line = next(x for x in exposed.splitlines() if f"attachments_total{{{labels}}}" in x)
            assert float(line.rsplit(" ", 1)[1]) >= 1, line
        assert 'ragkeeper_agent_attachment_read_seconds_count{format="txt"}' in exposed
        after = await conn.fetchval("SELECT count(*) FROM conversations WHERE user_id = 'dee'")
        assert after == before + 1
        stored = await conn.fetch(
            "SELECT a.file_name, a.size_bytes, a.sections FROM attachments a "
            "JOIN conversations c USING (session_id) WHERE c.user_id = 'dee'"
        )
        assert [(r["file_name"], r["size_bytes"]) for r in stored] == [("notes.txt", 3900)]
    finally:
        await conn.close()


async def test_attachments_off_refuses_files(server_factory: Callable[..., Any]) -> None:
    async with server_factory(attachments_enabled=False) as srv, srv.client() as c:
        code, body = await ask(c, "eve", {"query": "Read this", "files": [kestrel_docx()]})
        config = (await c.get("/web-config.json")).json()
    assert code == 422 and "ATTACHMENTS_ENABLED" in json.dumps(body)
    assert config["attachments"] is None


async def test_a_vision_model_gets_the_image_itself_and_again_on_follow_ups(
    server_factory: Callable[..., Any],
) -> None:
    seen: list[list[ModelMessage]] = []

    async def reply(messages: list[ModelMessage], info: AgentInfo) -> AsyncIterator[str]:
        seen.append(list(messages))
        yield "A whiteboard."

    png = image_bytes([BACKUP])
    image = attached("board.png", png, "image/png")
    async with (
        server_factory(llm_vision=True, model=FunctionModel(stream_function=reply)) as srv,
        srv.client() as c,
    ):
        code, done = await ask(c, "fay", {"query": "What is on this?", "files": [image]})
        assert code == 200, done
        code, again = await ask(
            c, "fay", {"query": "And the colour?", "session_id": done["session_id"]}
        )
        assert code == 200, again

    def images(messages: list[ModelMessage]) -> list[BinaryContent]:
        return [
            item
            for m in messages
            if isinstance(m, ModelRequest)
            for p in m.parts
            if isinstance(p, UserPromptPart) and not isinstance(p.content, str)
            for item in p.content
            if isinstance(item, BinaryContent)
        ]

    first, follow_up = seen
    assert [(b.media_type, b.data) for b in images(first)] == [("image/png", png)]
    assert [b.data for b in images(follow_up)] == [png]  # replayed from the stored history
    assert done["sources"] == []  # an image part has no text to cite
