"""Structure-aware chunking: limits, heading paths, overlap, determinism, edit locality."""

from __future__ import annotations

import json
import random
import subprocess
import sys

import pytest

from ragkeeper_rag.chunking import ChunkPiece, chunk_document

from .corpus import WORDS, paragraph


def sentences(rng: random.Random, count: int) -> str:
    return " ".join(paragraph(rng, rng.randint(4, 18)) for _ in range(count))


def structured_doc(rng: random.Random) -> str:
    """Headings at several levels, short and long paragraphs, lists and a code fence."""
    parts = ["Preface without a heading."]
    for chapter in range(3):
        parts.append(f"# Chapter {chapter}")
        for section in range(rng.randint(1, 3)):
            parts.append(f"## Part {chapter}.{section}")
            for _ in range(rng.randint(1, 6)):
                kind = rng.random()
                if kind < 0.2:
                    parts.append("\n".join(f"- {rng.choice(WORDS)} item" for _ in range(8)))
                elif kind < 0.3:
                    parts.append("```\n# shell comment\nrun --all\n```")
                else:
                    parts.append(sentences(rng, rng.randint(1, 12)))
    return "\n\n".join(parts) + "\n"


def check_invariants(text: str, pieces: list[ChunkPiece], size: int) -> None:
    """Exact slices, within size, in order, and nothing but whitespace left out."""
    assert [p.index for p in pieces] == list(range(len(pieces)))
    covered = 0
    for piece in pieces:
        assert 0 < len(piece.text) <= size
        assert text[piece.char_start : piece.char_start + len(piece.text)] == piece.text
        assert piece.text == piece.text.strip()
        assert text[covered : piece.char_start].strip() == "" or piece.char_start < covered
        covered = max(covered, piece.char_start + len(piece.text))
    assert text[covered:].strip() == ""


def test_chunk_rejects_bad_sizes() -> None:
    with pytest.raises(ValueError, match="size"):
        chunk_document("x", size=0)
    with pytest.raises(ValueError, match="overlap"):
        chunk_document("x", size=100, overlap=100)
    with pytest.raises(ValueError, match="overlap"):
        chunk_document("x", size=100, overlap=-1)


@pytest.mark.parametrize("text", ["", "   \n\n\t "])
def test_chunk_empty_text_has_no_pieces(text: str) -> None:
    assert chunk_document(text) == []


def test_chunk_short_document_is_one_piece() -> None:
    assert chunk_document("\n  Hello there.\n\nSecond line.\n") == [
        ChunkPiece(text="Hello there.\n\nSecond line.", index=0, heading=None, char_start=3)
    ]


@pytest.mark.parametrize(("size", "overlap"), [(1200, 150), (400, 60), (120, 30), (60, 0)])
@pytest.mark.parametrize("seed", range(4))
def test_chunk_pieces_are_exact_slices_within_size_covering_the_text(
    size: int, overlap: int, seed: int
) -> None:
    text = structured_doc(random.Random(seed))
    check_invariants(text, chunk_document(text, size=size, overlap=overlap), size)


def test_chunk_heading_path_follows_nesting() -> None:
    body = "Some words here."
    text = "\n\n".join(
        [
            "Intro text.",
            "# Handbook",
            "## Leave",
            "### Sick days",
            body,
            "### Holidays",
            body,
            "## Expenses",
            body,
            "# Appendix #",
            "```\n# not a heading\n```",
            "#hashtag is not a heading either",
        ]
    )
    pieces = chunk_document(text, size=60, overlap=0)
    assert [(p.heading, p.text) for p in pieces] == [
        (None, "Intro text."),
        ("Handbook > Leave > Sick days", "# Handbook\n\n## Leave\n\n### Sick days\n\n" + body),
        ("Handbook > Leave > Holidays", "### Holidays\n\n" + body),
        ("Handbook > Expenses", "## Expenses\n\n" + body),
        ("Appendix", "# Appendix #\n\n```\n# not a heading\n```"),
        ("Appendix", "#hashtag is not a heading either"),
    ]


def test_chunk_trailing_heading_without_body_is_kept() -> None:
    pieces = chunk_document("# A\n\ntext\n\n## Empty\n")
    assert [(p.heading, p.text) for p in pieces] == [
        ("A", "# A\n\ntext"),
        ("A > Empty", "## Empty"),
    ]


def test_chunk_long_section_keeps_heading_with_first_words() -> None:
    text = "## Policy\n\n" + sentences(random.Random(4), 40)
    pieces = chunk_document(text, size=300, overlap=40)
    assert len(pieces) > 3
    assert pieces[0].text.startswith("## Policy\n\n") and len(pieces[0].text) > 100
    assert {p.heading for p in pieces} == {"Policy"}


def test_chunk_prefers_paragraph_then_sentence_boundaries() -> None:
    rng = random.Random(8)
    text = "\n\n".join(sentences(rng, 3) for _ in range(30))
    for piece in chunk_document(text, size=500, overlap=0):
        assert piece.text.endswith("."), piece.text[-40:]
        assert (
            text[piece.char_start - 2 : piece.char_start] in ("\n\n", "")
            or text[piece.char_start - 1] == " "
            and text[piece.char_start - 2] == "."
        )


def test_chunk_overlap_repeats_the_end_of_the_previous_piece_within_a_section() -> None:
    rng = random.Random(5)
    text = "# One\n\n" + "\n\n".join(paragraph(rng, 30) for _ in range(20))
    text += "\n\n# Two\n\n" + "\n\n".join(paragraph(rng, 30) for _ in range(20))
    pieces = chunk_document(text, size=600, overlap=120)
    overlaps = []
    for previous, piece in zip(pieces, pieces[1:], strict=False):
        previous_end = previous.char_start + len(previous.text)
        if piece.heading != previous.heading:
            assert piece.char_start >= previous_end  # never across a heading
            continue
        shared = previous_end - piece.char_start
        assert 0 < shared <= 120
        assert previous.text.endswith(piece.text[:shared])
        overlaps.append(shared)
    assert min(overlaps) >= 100  # "about" the overlap: cut at a word start, not mid-word


def test_chunk_without_overlap_pieces_are_disjoint() -> None:
    text = structured_doc(random.Random(6))
    pieces = chunk_document(text, size=200, overlap=0)
    for previous, piece in zip(pieces, pieces[1:], strict=False):
        assert piece.char_start >= previous.char_start + len(previous.text)


def test_chunk_huge_line_without_spaces_is_cut_hard() -> None:
    text = "x" * 1_000_003
    pieces = chunk_document(text, size=1000, overlap=100)
    check_invariants(text, pieces, 1000)
    assert sum(len(p.text) for p in pieces) >= len(text)


def test_chunk_same_input_gives_identical_pieces_in_another_process() -> None:
    text = structured_doc(random.Random(9))
    here = [[p.text, p.index, p.heading, p.char_start] for p in chunk_document(text, size=300)]
    script = (
        "import json, sys\n"
        "from ragkeeper_rag.chunking import chunk_document\n"
        "pieces = chunk_document(sys.stdin.read(), size=300)\n"
        "print(json.dumps([[p.text, p.index, p.heading, p.char_start] for p in pieces]))\n"
    )
    for hash_seed in ("1", "2"):
        done = subprocess.run(
            [sys.executable, "-c", script],
            input=text,
            capture_output=True,
            text=True,
            check=True,
            env={"PYTHONHASHSEED": hash_seed, "PATH": ""},
        )
        assert json.loads(done.stdout) == here


@pytest.mark.parametrize(("size", "overlap", "words"), [(1200, 150, (10, 80)), (600, 80, (40, 40))])
@pytest.mark.parametrize("seed", range(12))
def test_chunk_editing_one_paragraph_changes_only_nearby_pieces(
    size: int, overlap: int, words: tuple[int, int], seed: int
) -> None:
    rng = random.Random(seed)
    paragraphs = [paragraph(rng, rng.randint(*words)) for _ in range(40)]
    before = chunk_document("# Long\n\n" + "\n\n".join(paragraphs), size=size, overlap=overlap)
    paragraphs[20] = paragraph(rng, rng.randint(*words))
    after = chunk_document("# Long\n\n" + "\n\n".join(paragraphs), size=size, overlap=overlap)
    assert len(before) >= 10
    old_texts = {p.text for p in before}
    changed = [p for p in after if p.text not in old_texts]
    assert 1 <= len(changed) <= 3
    # the changed pieces sit together around the edit
    assert changed[-1].index - changed[0].index == len(changed) - 1


def test_chunk_inserting_a_paragraph_early_keeps_later_pieces() -> None:
    rng = random.Random(11)
    paragraphs = [paragraph(rng, rng.randint(10, 80)) for _ in range(60)]
    before = chunk_document("\n\n".join(paragraphs))
    paragraphs.insert(3, paragraph(rng, 50))
    after = chunk_document("\n\n".join(paragraphs))
    old_texts = {p.text for p in before}
    assert sum(p.text not in old_texts for p in after) <= 3
