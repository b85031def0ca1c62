"""GoogleDriveSource.scan against the Drive fake: full listings and the change feed.

The real google-api-python-client and google-auth talk HTTP to the fake; each
test builds a tree, scans, mutates Drive, and checks what the next scan reports.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import pytest

from tests.rag.drive_fake import FORM, DriveFake, by_id, make_source


@pytest.fixture
def fake() -> Iterator[DriveFake]:
    with DriveFake() as f:
        yield f


async def test_first_scan_lists_every_level_and_resolves_shortcuts(fake: DriveFake) -> None:
    root = fake.add_folder("Handbook", fake.root_id)
    sub = fake.add_folder("Policies", root)
    deep = fake.add_folder("2024", sub)
    outside = fake.add_folder("Elsewhere", fake.root_id)
    linked = fake.add_folder("Linked", fake.root_id)
    a = fake.add_file("intro.md", root, "# Intro\nhello")
    b = fake.add_file("leave.pdf", sub, b"%PDF-1.4 fake")
    doc = fake.add_doc("Travel", deep, "# Travel\nbook early")
    sheet = fake.add_sheet("Budget", deep, {"Q1": [["item", "eur"], ["laptop", 900]]})
    slides = fake.add_slides("Kickoff", sub, "slide one")
    fake.add_file("backup.zip", root, b"PK\x05\x06")  # no extractor: not listed
    fake.add_native("Survey", root, FORM)  # no useful export: not listed
    target = fake.add_file("shared.txt", outside, "reached through a shortcut")
    fake.add_shortcut("shared link.txt", root, target)
    via_folder = fake.add_file("inside-linked.txt", linked, "below a folder shortcut")
    fake.add_shortcut("Linked folder", sub, linked)
    fake.add_file("unrelated.txt", outside, "never listed")

    source = make_source(fake, root)
    result = await source.scan(None)
    await source.aclose()

    files = by_id(result)
    assert result.full is True
    assert set(files) == {a, b, doc, sheet, slides, target, via_folder}
    assert files[doc].path == "Policies/2024/Travel"
    assert files[target].path == "shared link.txt"
    assert files[target].metadata["shortcut_id"]
    assert files[via_folder].path == "Policies/Linked folder/inside-linked.txt"
    assert files[b].version.startswith("md5:")
    assert files[doc].version == "v:1"
    assert files[doc].url == f"https://docs.google.com/document/d/{doc}/edit"
    assert files[a].title == "intro.md"
    assert result.next_cursor["page_token"]
    # one listing query per tree level (batched parents), not one per folder or file
    assert fake.calls["files.list"] == 3  # root, Policies, {2024, Linked}
    assert fake.calls["files.get"] == 2  # the root check and one file-shortcut target


async def test_every_page_is_followed_beyond_1000_files(fake: DriveFake) -> None:
    root = fake.add_folder("Bulk", fake.root_id)
    ids = {fake.add_file(f"note-{i:04d}.txt", root, f"note {i}") for i in range(1234)}
    source = make_source(fake, root)
    result = await source.scan(None)
    await source.aclose()
    assert {f.source_id for f in result.files} == ids
    assert fake.calls["files.list"] == 2


async def test_incremental_scan_reports_each_kind_of_change(fake: DriveFake) -> None:
    root = fake.add_folder("Team", fake.root_id)
    sub = fake.add_folder("Specs", root)
    outside = fake.add_folder("Archive", fake.root_id)
    keep = fake.add_file("keep.txt", root, "unchanged")
    modify = fake.add_file("modify.txt", root, "v1")
    rename = fake.add_file("old-name.txt", sub, "same bytes")
    move_out = fake.add_file("leaving.txt", sub, "bye")
    trash = fake.add_file("trash.txt", root, "to the bin")
    delete = fake.add_file("delete.txt", root, "gone for good")
    move_in = fake.add_file("arriving.txt", outside, "hello")
    source = make_source(fake, root)
    first = await source.scan(None)
    assert set(by_id(first)) == {keep, modify, rename, move_out, trash, delete}

    added = fake.add_file("added.md", sub, "# New")
    fake.update(modify, "v2")
    fake.rename(rename, "new-name.txt")
    fake.move(move_out, outside)
    fake.move(move_in, sub)
    fake.trash(trash)
    fake.delete(delete)
    outside_edit = fake.add_file("outside.txt", outside, "not ours")
    calls_before = fake.api_calls

    second = await source.scan(first.next_cursor)
    await source.aclose()

    files = by_id(second)
    assert second.full is False
    assert set(files) == {added, modify, rename, move_in}
    assert files[rename].path == "Specs/new-name.txt"
    assert files[rename].version == by_id(first)[rename].version  # rename: no re-download
    assert files[modify].version != by_id(first)[modify].version
    assert files[move_in].path == "Specs/arriving.txt"
    assert {move_out, trash, delete} <= set(second.deleted)
    assert outside_edit not in files
    assert keep not in files and keep not in second.deleted
    # O(changes): the root check and one page of the change feed
    assert fake.api_calls - calls_before == 2


async def test_unchanged_tree_rescan_costs_two_calls(fake: DriveFake) -> None:
    root = fake.add_folder("Quiet", fake.root_id)
    for i in range(50):
        fake.add_file(f"f{i}.txt", root, str(i))
    source = make_source(fake, root)
    first = await source.scan(None)
    before = fake.api_calls
    second = await source.scan(first.next_cursor)
    await source.aclose()
    assert second.files == [] and second.deleted == [] and second.full is False
    assert fake.api_calls - before == 2
    assert second.next_cursor["page_token"] == first.next_cursor["page_token"]


async def test_folder_moved_in_or_renamed_relists_only_that_subtree(fake: DriveFake) -> None:
    root = fake.add_folder("Root", fake.root_id)
    inner = fake.add_folder("Inner", root)
    nested = fake.add_file("nested.txt", inner, "x")
    elsewhere = fake.add_folder("Incoming", fake.root_id)
    deeper = fake.add_folder("Deeper", elsewhere)
    arriving = fake.add_file("arriving.txt", deeper, "y")
    source = make_source(fake, root)
    first = await source.scan(None)

    fake.rename(inner, "Renamed")
    fake.move(elsewhere, root)
    second = await source.scan(first.next_cursor)
    await source.aclose()

    files = by_id(second)
    assert second.full is False
    assert files[nested].path == "Renamed/nested.txt"
    assert files[arriving].path == "Incoming/Deeper/arriving.txt"
    assert second.next_cursor["folders"][deeper] == "Incoming/Deeper"


async def test_folder_leaving_the_tree_falls_back_to_a_full_listing(fake: DriveFake) -> None:
    root = fake.add_folder("Root", fake.root_id)
    going = fake.add_folder("Going", root)
    below = fake.add_file("below.txt", going, "z")
    stays = fake.add_file("stays.txt", root, "s")
    source = make_source(fake, root)
    first = await source.scan(None)
    assert below in by_id(first)

    fake.move(going, fake.root_id)
    second = await source.scan(first.next_cursor)
    await source.aclose()
    assert second.full is True
    assert set(by_id(second)) == {stays}
    assert going not in second.next_cursor["folders"]


async def test_trashed_folder_and_shortcut_removal_delete_what_they_covered(
    fake: DriveFake,
) -> None:
    root = fake.add_folder("Root", fake.root_id)
    sub = fake.add_folder("Sub", root)
    below = fake.add_file("below.txt", sub, "z")
    outside = fake.add_folder("Out", fake.root_id)
    target = fake.add_file("target.txt", outside, "t")
    shortcut = fake.add_shortcut("link", root, target)
    source = make_source(fake, root)
    first = await source.scan(None)
    assert {below, target} <= set(by_id(first))

    fake.delete(shortcut)
    second = await source.scan(first.next_cursor)
    assert second.full is False and target in second.deleted

    fake.trash(sub)
    third = await source.scan(second.next_cursor)
    await source.aclose()
    assert third.full is True and below not in by_id(third)


async def test_shortcut_target_edit_is_picked_up_incrementally(fake: DriveFake) -> None:
    root = fake.add_folder("Root", fake.root_id)
    outside = fake.add_folder("Out", fake.root_id)
    target = fake.add_file("target.txt", outside, "t1")
    fake.add_shortcut("link.txt", root, target)
    source = make_source(fake, root)
    first = await source.scan(None)
    fake.update(target, "t2")
    second = await source.scan(first.next_cursor)
    await source.aclose()
    assert by_id(second)[target].path == "link.txt"
    assert by_id(second)[target].version != by_id(first)[target].version


async def test_expired_page_token_falls_back_to_full_listing(fake: DriveFake) -> None:
    root = fake.add_folder("Root", fake.root_id)
    one = fake.add_file("one.txt", root, "1")
    source = make_source(fake, root)
    first = await source.scan(None)
    two = fake.add_file("two.txt", root, "2")
    fake.expire_page_tokens()

    second = await source.scan(first.next_cursor)
    assert second.full is True
    assert set(by_id(second)) == {one, two}
    assert second.next_cursor["page_token"] != first.next_cursor["page_token"]
    third = await source.scan(second.next_cursor)  # the fresh token works
    await source.aclose()
    assert third.full is False


async def test_periodic_reconciliation_lists_everything_again(fake: DriveFake) -> None:
    root = fake.add_folder("Root", fake.root_id)
    fake.add_file("one.txt", root, "1")
    now = datetime(2026, 1, 1, tzinfo=UTC)
    source = make_source(fake, root, drive_full_resync_hours=6, clock=lambda: now)
    first = await source.scan(None)
    now += timedelta(hours=5)
    assert (await source.scan(first.next_cursor)).full is False
    now += timedelta(hours=2)
    later = await source.scan(first.next_cursor)
    await source.aclose()
    assert later.full is True
    assert later.next_cursor["full_listing_at"] == now.isoformat()


async def test_another_folder_or_unreadable_cursor_lists_everything(fake: DriveFake) -> None:
    a = fake.add_folder("A", fake.root_id)
    b = fake.add_folder("B", fake.root_id)
    fake.add_file("b.txt", b, "b")
    source_a = make_source(fake, a)
    first = await source_a.scan(None)
    await source_a.aclose()
    source_b = make_source(fake, b)
    assert (await source_b.scan(first.next_cursor)).full is True
    assert (await source_b.scan({"v": 1, "folder_id": b})).full is True
    await source_b.aclose()


async def test_shared_drive_folder_is_listed_and_followed(fake: DriveFake) -> None:
    drive = fake.add_shared_drive("Engineering")
    root = fake.add_folder("Runbooks", drive)
    sub = fake.add_folder("Databases", root)
    first_file = fake.add_file("postgres.md", sub, "# Postgres")
    fake.add_file("other.md", drive, "outside the watched folder")
    source = make_source(fake, root)
    first = await source.scan(None)
    assert set(by_id(first)) == {first_file}
    assert by_id(first)[first_file].metadata["drive_id"] == drive
    assert first.next_cursor["drive_id"] == drive

    added = fake.add_file("redis.md", sub, "# Redis")
    fake.trash(first_file)
    second = await source.scan(first.next_cursor)
    await source.aclose()
    assert set(by_id(second)) == {added}
    assert first_file in second.deleted
