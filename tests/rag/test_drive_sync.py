"""The ingestion job with ``--pipeline google_drive``, end to end.

A real process (``python -m ragkeeper_rag``) with the production retry policy,
the embedded Postgres of tests/conftest.py, and the Drive v3 fake in this test
process; each test checks the job's stats line, its exit code and the tables.
"""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import pytest

from tests.rag.corpus import markdown_doc, pdf_bytes
from tests.rag.drive_fake import DriveFake
from tests.rag.test_cli import job_env, run_job


@pytest.fixture
def fake() -> Iterator[DriveFake]:
    with DriveFake() as f:
        yield f


def drive_job(
    fake: DriveFake,
    database_url: str,
    tmp_path: Path,
    folder_id: str,
    pipeline_id: str,
    key: dict[str, Any] | None = None,
) -> dict[str, str]:
    key_file = tmp_path / "service-account.json"
    if key is not None or not key_file.exists():
        key_file.write_text(json.dumps(key or fake.service_account()))
    return job_env(
        database_url,
        tmp_path,
        RAG_PIPELINE_TYPE="google_drive",
        RAG_WATCH_FOLDER_ID=folder_id,
        RAG_PIPELINE_ID=pipeline_id,
        GOOGLE_APPLICATION_CREDENTIALS=str(key_file),
        GOOGLE_DRIVE_API_ENDPOINT=fake.url,
    )


async def stored(database_url: str, pipeline_id: str) -> dict[str, dict[str, Any]]:
    conn = await asyncpg.connect(database_url)
    try:
        rows = await conn.fetch(
            "SELECT m.source_id, m.title, m.url, m.path, m.version, count(d.id) AS chunks "
            "FROM document_metadata m LEFT JOIN documents d ON d.document_id = m.id "
            "WHERE m.pipeline_id = $1 GROUP BY m.id",
            pipeline_id,
        )
        return {r["source_id"]: dict(r) for r in rows}
    finally:
        await conn.close()


async def test_first_sync_then_every_kind_of_change(
    fake: DriveFake, database_url: str, tmp_path: Path
) -> None:
    rng = random.Random(3)
    root = fake.add_folder("Handbook", fake.root_id)
    sub = fake.add_folder("Policies", root)
    archive = fake.add_folder("Archive", fake.root_id)
    intro = fake.add_file("intro.md", root, markdown_doc(rng))
    leave = fake.add_file("leave.pdf", sub, pdf_bytes(["Annual leave is 25 days."]))
    doc = fake.add_doc("Travel policy", sub, "# Travel\nBook trains early.\n")
    sheet = fake.add_sheet(
        "Budget",
        root,
        {
            "Q1": [["item", "eur"], ["laptop", 900], ["desk", 300]],
            "Q2": [["item", "eur"], ["chair", 200]],
        },
    )
    slides = fake.add_slides("Kickoff", root, "Welcome\nRoadmap for the year")
    modify = fake.add_file("faq.md", root, "# FAQ\nfirst answer")
    rename = fake.add_file("old-name.md", sub, markdown_doc(rng))
    move_out = fake.add_file("leaving.md", sub, markdown_doc(rng))
    trash = fake.add_file("trash.md", root, markdown_doc(rng))
    delete = fake.add_file("delete.md", root, markdown_doc(rng))
    move_in = fake.add_file("arriving.md", archive, markdown_doc(rng))
    env = drive_job(fake, database_url, tmp_path, root, "ns/drive")

    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["status"] == "success" and stats["files_added"] == 10, stats
    docs = await stored(database_url, "ns/drive")
    assert set(docs) == {intro, leave, doc, sheet, slides, modify, rename, move_out, trash, delete}
    assert docs[doc]["url"] == f"https://docs.google.com/document/d/{doc}/edit"
    assert docs[leave]["url"] == f"https://drive.google.com/file/d/{leave}/view"
    assert docs[leave]["path"] == "Policies/leave.pdf" and docs[slides]["chunks"] >= 1
    conn = await asyncpg.connect(database_url)
    rows = await conn.fetch(
        "SELECT sheet, row_data FROM document_rows WHERE dataset_id = $1 "
        "ORDER BY sheet, row_number",
        f"ns/drive:{sheet}",
    )
    schema = await conn.fetchval(
        "SELECT schema FROM document_metadata WHERE id = $1", f"ns/drive:{sheet}"
    )
    await conn.close()
    assert [r["sheet"] for r in rows] == ["Q1", "Q1", "Q2"]
    assert json.loads(rows[0]["row_data"]) == {"item": "laptop", "eur": 900}
    assert json.loads(schema) == {"Q1": ["item", "eur"], "Q2": ["item", "eur"]}

    code, stats, _ = run_job(env)  # nothing changed: nothing downloaded, nothing embedded
    assert code == 0 and stats["files_seen"] == 0 and stats["chunks_embedded"] == 0
    assert stats["full_scan"] is False

    added = fake.add_file("added.md", sub, "# Added\nbrand new")
    fake.update(modify, "# FAQ\nsecond answer")
    fake.rename(rename, "new-name.md")
    fake.move(move_out, archive)
    fake.move(move_in, sub)
    fake.trash(trash)
    fake.delete(delete)
    fake.add_file("elsewhere.md", archive, "not watched")
    media_before = fake.calls["files.get_media"]

    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert (stats["files_added"], stats["files_updated"], stats["files_deleted"]) == (2, 1, 3)
    assert stats["status"] == "success" and stats["full_scan"] is False
    assert fake.calls["files.get_media"] - media_before == 3  # added, modified, moved in
    docs = await stored(database_url, "ns/drive")
    assert set(docs) == {intro, leave, doc, sheet, slides, modify, rename, added, move_in}


async def test_shared_drive_with_more_than_1000_files(
    fake: DriveFake, database_url: str, tmp_path: Path
) -> None:
    drive = fake.add_shared_drive("Support")
    root = fake.add_folder("Tickets", drive)
    ids = {
        fake.add_file(f"ticket-{i:04d}.txt", root, f"ticket {i} printer jam") for i in range(1050)
    }
    fake.add_file("outside.txt", drive, "in the drive, not in the folder")
    env = drive_job(fake, database_url, tmp_path, root, "ns/shared")
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["files_added"] == 1050 and stats["status"] == "success"
    assert set(await stored(database_url, "ns/shared")) == ids
    assert fake.calls["files.list"] == 2  # 1000 + 50: every page followed
    assert stats["chunks_embedded"] == 1050


async def test_rate_limit_storm_then_expired_page_token(
    fake: DriveFake, database_url: str, tmp_path: Path
) -> None:
    root = fake.add_folder("Wiki", fake.root_id)
    for i in range(8):
        fake.add_file(f"page-{i}.md", root, f"# Page {i}\ncontent {i}")
    env = drive_job(fake, database_url, tmp_path, root, "ns/storm")
    fake.storm(9)  # 6 refusals: 429, 403 userRateLimitExceeded, 403 rateLimitExceeded, 503
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["files_added"] == 8 and stats["status"] == "success"
    assert fake.faults_pending == 0
    assert stderr.count("drive call retried") == 6

    fake.expire_page_tokens()
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["full_scan"] is True and stats["files_unchanged"] == 8
    assert stats["chunks_embedded"] == 0 and stats["files_deleted"] == 0


async def test_bad_credentials_exit_3_without_leaking_the_key(
    fake: DriveFake, database_url: str, tmp_path: Path
) -> None:
    root = fake.add_folder("Secret", fake.root_id)
    key = fake.service_account("intruder@other.iam.gserviceaccount.com", register=False)
    env = drive_job(fake, database_url, tmp_path, root, "ns/badcreds", key=key)
    code, stats, stderr = run_job(env)
    assert code == 3
    assert stats["status"] == "failed"
    assert "intruder@other.iam.gserviceaccount.com" in stats["error"]
    assert "\n" not in stats["error"]
    key_body = key["private_key"].splitlines()[1]
    assert key_body not in stderr and key_body not in json.dumps(stats)

    (tmp_path / "service-account.json").write_text("{broken")
    code, stats, _ = run_job(env)
    assert code == 3 and "not valid JSON" in stats["error"]


async def test_network_loss_mid_run_exits_1_and_the_rerun_converges(
    fake: DriveFake, database_url: str, tmp_path: Path
) -> None:
    root = fake.add_folder("Notes", fake.root_id)
    ids = {fake.add_file(f"n{i:02d}.md", root, f"# Note {i}\nbody {i}") for i in range(30)}
    env = drive_job(fake, database_url, tmp_path, root, "ns/netloss")
    fake.cut_network_after(3 + 10)  # the scan (3 calls), then 10 downloads
    code, stats, stderr = run_job(env)
    assert code == 1, stderr
    assert stats["status"] == "failed" and "unreachable" in stats["error"]
    partial = await stored(database_url, "ns/netloss")
    assert len(partial) < 30

    fake.restore_network()
    code, stats, stderr = run_job(env)
    assert code == 0, stderr
    assert stats["full_scan"] is True  # the cursor of the failed run was never saved
    assert stats["files_added"] == 30 - len(partial)
    docs = await stored(database_url, "ns/netloss")
    assert set(docs) == ids and all(d["chunks"] == 1 for d in docs.values())
