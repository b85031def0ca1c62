"""The offline extractive answer on passages cut from the real example files.

The passages are what ``make run`` stores: each file of ``examples/docs`` through the real
extraction and chunker (overlapping chunks included), numbered as the search tool numbers
them. No database: :func:`compose_answer` is a pure function of the question and passages.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ragkeeper_agent.agent import Passage
from ragkeeper_agent.extractive import LABEL, compose_answer
from ragkeeper_knowledge.extraction import extract
from ragkeeper_rag.chunking import chunk_document

DOCS = Path(__file__).resolve().parents[2] / "examples" / "docs"
QUICK_START = "kestrel-quick-start.txt"
FAQ = "kestrel-faq.html"
PRICES = "price-list.csv"
DATASHEET = "kestrel-datasheet.pdf"
QUOTE = re.compile(r"^> (.*) \[(\d+)\]$", re.MULTILINE)


def chunks(name: str, size: int = 1200, overlap: int = 150) -> list[str]:
    path = DOCS / name
    text = extract(path.read_bytes(), path.suffix[1:]).text
    return [p.text for p in chunk_document(text, size=size, overlap=overlap)]


def passages(*parts: tuple[str, str]) -> list[Passage]:
    """(file name, chunk text) pairs as numbered passages, in the order given."""
    return [
        Passage(
            n=n,
            document_id=f"local/examples:{name}",
            title=name,
            url=f"file:///docs/{name}",
            score=1.0 / n,
            content=text,
        )
        for n, (name, text) in enumerate(parts, 1)
    ]


def whole(*names: str) -> list[tuple[str, str]]:
    return [(name, text) for name in names for text in chunks(name)]


def quotes(answer: str) -> list[tuple[str, int]]:
    return [(text, int(n)) for text, n in QUOTE.findall(answer)]


def cited_document(answer: str, found: list[Passage], needle: str) -> str:
    """The document cited by the quote containing ``needle``."""
    by_n = {p.n: p for p in found}
    matching = [by_n[n].title for text, n in quotes(answer) if needle in text]
    assert matching, f"no quote contains {needle!r}:\n{answer}"
    return matching[0]


def heading_lines() -> set[str]:
    """Every heading-like line of the example files' extracted text, normalised."""
    found: set[str] = set()
    for path in DOCS.iterdir():
        for line in extract(path.read_bytes(), path.suffix[1:]).text.splitlines():
            line = " ".join(line.split())
            letters = [c for c in line if c.isalpha()]
            capitals = bool(letters) and not any(c.islower() for c in letters)
            if line.startswith("#"):
                found.add(line.lstrip("#").strip())
            elif capitals or line.startswith("Columns: ") or re.fullmatch(r"\w+:", line):
                found.add(line)
    return found


def assert_well_formed(answer: str) -> None:
    """No heading quoted, no sentence quoted twice or inside another quote."""
    quoted = [" ".join(text.split()).casefold() for text, _ in quotes(answer)]
    headings = {h.casefold() for h in heading_lines()}
    for text in quoted:
        assert text not in headings, f"a heading was quoted: {text!r}"
        assert len(re.findall(r"[^\W_]+", text)) >= 3, f"no sentence content: {text!r}"
    assert len(set(quoted)) == len(quoted), f"a sentence was quoted twice:\n{answer}"
    for a in quoted:
        assert not any(a != b and a in b for b in quoted), f"{a!r} is inside another quote"


def test_reset_question_quotes_the_factory_reset_procedure() -> None:
    # The datasheet and the FAQ say "Kestrel" and "thermostat" everywhere; only the
    # quick-start guide's RESETTING section says "reset".
    found = passages(*whole(DATASHEET, FAQ, QUICK_START))
    answer = compose_answer("How do I reset the Kestrel thermostat?", found)
    assert answer.startswith(LABEL)
    assert "hold the dial for 30 seconds" in answer
    assert cited_document(answer, found, "30 seconds") == QUICK_START
    assert_well_formed(answer)
    assert "> RESETTING" not in answer and "KESTREL K2 SMART THERMOSTAT" not in answer


def test_a_rare_question_word_outweighs_common_ones_and_its_variants_match() -> None:
    found = passages(*whole(QUICK_START, FAQ))
    answer = compose_answer("Resetting my Kestrel thermostat", found)
    first, _ = quotes(answer)[0]
    assert "Factory reset" in first, answer
    # Stems: "resets" in the question, "reset" in the text; the heading RESETTING lifts
    # the sentence under it that does not say "reset" itself.
    answer = compose_answer("What resets the Kestrel?", found)
    assert "Restart: press and hold the dial for 10 seconds." in answer


def test_price_question_quotes_the_price_row_of_the_csv() -> None:
    # The FAQ's "How much does it cost?" section only points to the price list: the rows,
    # which name the Kestrel and its price, answer the question.
    found = passages(*whole(FAQ, QUICK_START, PRICES))
    answer = compose_answer("How much does the Kestrel cost?", found)
    first, n = quotes(answer)[0]
    assert first == (
        "sku: KST-K2-WHT | product: Kestrel K2 (white) | … | price_eur: 229.0 | price_nok: 2690 | …"
    )
    assert found[n - 1].title == PRICES
    assert "See the current price list" not in answer and "©" not in answer
    assert_well_formed(answer)


@pytest.mark.parametrize(
    "question",
    ["What is the price of the Kestrel?", "How much is the Kestrel?", "Kestrel prices in EUR"],
)
def test_price_words_of_any_form_find_the_price(question: str) -> None:
    found = passages(*whole(FAQ, PRICES))
    answer = compose_answer(question, found)
    assert "price_eur: 229.0" in quotes(answer)[0][0], answer


def test_a_heading_lifts_the_paragraph_under_it_not_a_footer() -> None:
    # Without the price list, the FAQ's "How much does it cost?" answer is the best there
    # is; the page footer after it in the same chunk is not part of that answer.
    found = passages(*whole(FAQ))
    answer = compose_answer("How much does the Kestrel cost?", found)
    assert quotes(answer)[0][0] == "See the current price list."
    assert "©" not in answer and "Lyon" not in answer


def test_how_much_of_something_is_not_a_price_question() -> None:
    found = passages(*whole("employee-handbook.md", PRICES))
    answer = compose_answer("How much annual leave do I get?", found)
    assert "25 days of paid annual leave" in quotes(answer)[0][0], answer
    assert "price_eur" not in answer


def test_overlapping_chunks_are_quoted_once() -> None:
    parts = chunks(QUICK_START, size=300, overlap=120)  # its sections are longer than 300
    assert len(parts) > 2 and any(
        parts[i][-60:].strip() in parts[i + 1] for i in range(len(parts) - 1)
    ), "the example chunks overlap"
    # every chunk twice (a second pipeline with the same files), then the overlaps
    found = passages(*[(QUICK_START, t) for t in parts + parts])
    for question in (
        "Are thick wires joined with wire nuts a line-voltage system?",
        "When do I switch the power back on after fitting the wall plate?",
        "What does a slow red blink mean?",
    ):
        answer = compose_answer(question, found)
        assert quotes(answer), answer
        assert_well_formed(answer)
        assert not any(text[0].islower() for text, _ in quotes(answer)), answer


def test_headings_labels_and_bare_lines_are_never_quoted() -> None:
    found = passages(
        ("notes.txt", "RESETTING\n\nSources:\n\n# Resetting\n\n1.\n\n---\n\nReset"),
        ("guide.md", "## Resetting the unit\n\nRESET BUTTON\nHold the reset button for 5 s."),
    )
    answer = compose_answer("How do I reset it?", found)
    assert [text for text, _ in quotes(answer)] == ["Hold the reset button for 5 s."]
    alone = compose_answer("How do I reset it?", found[:1])
    assert alone == f"{LABEL}: the documents do not contain an answer to this question."


def test_sources_list_names_each_document_once_with_its_passages() -> None:
    parts = chunks(QUICK_START)
    reset = next(t for t in parts if "RESETTING" in t)
    wires = next(t for t in parts if "wire nuts" in t)
    found = passages((QUICK_START, wires), (PRICES, chunks(PRICES)[0]), (QUICK_START, reset))
    answer = compose_answer("Wire nuts, restart, KST-K2-WHT?", found)
    cited = {n for _, n in quotes(answer)}
    assert cited == {1, 2, 3}, answer
    sources = answer.split("\n\nSources:\n", 1)[1].splitlines()
    assert sources == [
        f"[1], [3] {QUICK_START} — file:///docs/{QUICK_START}",
        f"[2] {PRICES} — file:///docs/{PRICES}",
    ]
