"""Plain text, Markdown and HTML: bytes to text with the structure kept as ``#`` lines.

Decoding is strict UTF-8 first (nearly every file today, and it is fast on a
5 MB line), then a byte-order mark, then charset detection with
charset-normalizer. Content that is not text (NUL bytes without a UTF-16/32
BOM, or mostly control characters) is refused with ``ExtractionError`` rather
than stored as garbage that would pollute search results.

HTML becomes text by marking the tree, not by recursion: headings are replaced
by ``#`` lines, block elements get paragraph or line-break sentinels, scripts
and styles (and navigation menus, which repeat on every page of a site) are
dropped, and a single ``get_text`` pass plus whitespace
folding produces the result. That keeps the work linear in the document size.
"""

from __future__ import annotations

import codecs
import logging
import re

from bs4 import BeautifulSoup, Tag
from charset_normalizer import from_bytes

from ragkeeper_knowledge.extraction.model import Extracted, ExtractionError

log = logging.getLogger(__name__)

_BOMS: tuple[tuple[bytes, str], ...] = (
    (codecs.BOM_UTF32_LE, "utf-32-le"),
    (codecs.BOM_UTF32_BE, "utf-32-be"),
    (codecs.BOM_UTF8, "utf-8"),
    (codecs.BOM_UTF16_LE, "utf-16-le"),
    (codecs.BOM_UTF16_BE, "utf-16-be"),
)
"""UTF-32 LE first: its BOM starts with the UTF-16 LE one."""

CONTROL_SAMPLE_CHARS = 65536
CONTROL_MAX_RATIO = 0.10
"""More than this share of control characters in the sample means binary content."""

_CONTROL = re.compile(r"[\x00-\x08\x0e-\x1a\x1c-\x1f\x7f]")
"""C0 controls except tab, newlines, vertical tab, form feed and escape (coloured logs)."""

_FRONT_MATTER = re.compile(r"\A---[ \t]*\n(.*?\n)(?:---|\.\.\.)[ \t]*(?:\n|\Z)", re.DOTALL)
_FRONT_MATTER_MAX_CHARS = 8192
_FRONT_MATTER_TITLE = re.compile(r"^title:[ \t]*(.+?)[ \t]*$", re.MULTILINE)
_ATX_H1 = re.compile(r"^ {0,3}#[ \t]+(.+?)(?:[ \t]+#+)?[ \t]*$", re.MULTILINE)
_META_CHARSET = re.compile(rb"""<meta[^>]{0,200}?charset\s*=\s*["']?([A-Za-z0-9_.:-]+)""", re.I)


def decode_text(data: bytes, declared: str | None = None) -> str:
    """Decode ``data`` to ``str`` with newlines normalised to ``\\n``.

    Args:
        data: raw file content.
        declared: an encoding the file declares for itself (HTML ``<meta charset>``),
            tried after UTF-8 and a BOM, before detection.

    Raises:
        ExtractionError: the content is binary or no encoding fits.
    """
    text = _decode(data, declared)
    sample = text[:CONTROL_SAMPLE_CHARS]
    if sample and len(_CONTROL.findall(sample)) > CONTROL_MAX_RATIO * len(sample):
        raise ExtractionError("binary content: mostly control characters, not text")
    if "\r" in text:
        text = text.replace("\r\n", "\n").replace("\r", "\n")
    return text


def _decode(data: bytes, declared: str | None) -> str:
    for bom, encoding in _BOMS:
        if data.startswith(bom):
            try:
                return data[len(bom) :].decode(encoding)
            except UnicodeDecodeError as exc:
                raise ExtractionError(f"undecodable text: invalid {encoding} after BOM") from exc
    if b"\x00" in data:
        raise ExtractionError("binary content: NUL bytes in a text file")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        pass
    if declared:
        try:
            return data.decode(declared)
        except (LookupError, UnicodeDecodeError):
            log.debug("declared charset %s does not fit, detecting", declared)
    best = from_bytes(data).best()
    if best is None:
        raise ExtractionError("undecodable text: no character encoding fits")
    log.debug("detected charset %s", best.encoding)
    return str(best)


def extract_txt(data: bytes) -> Extracted:
    """Plain text: decoded, with the headings a plain-text manual uses marked as ``#`` lines.

    Without them a text file would be one section with no heading path, and a chunk
    would not say which part of the manual it comes from (see :func:`mark_plain_headings`).
    """
    text, title = mark_plain_headings(decode_text(data))
    return Extracted(text=text, title=title, tables=[])


_PLAIN_HEADING_MAX_CHARS = 80
_UNDERLINE = re.compile(r"(=+|-+)[ \t]*")
_CAPS_HEADING = re.compile(
    r"(?:\d+(?:\.\d+)*\.?\s+)?[^a-z.,;:!?]*[A-Z][^a-z.,;:!?]*[A-Z][^a-z.,;:!?]*"
)
"""An optional section number, then at least two capitals, no lower-case letter and no
sentence punctuation."""


def mark_plain_headings(text: str) -> tuple[str, str | None]:
    """Plain-text headings as ``#`` lines; the title is the heading that opens the text.

    A heading is a line of at most 80 characters after a blank line (or at the start):
    either in capitals ("RESETTING", "2. BEFORE YOU START"), or underlined with ``=``
    (level 1) or ``-`` (level 2, the underline is dropped). A capitals heading that opens
    the text is level 1 and the document's title; the others are level 2. Linear in the text.
    """
    lines = text.split("\n")
    title: str | None = None
    blank_before = True
    seen_text = False
    for i, line in enumerate(lines):
        stripped = line.strip()
        level = 0
        if blank_before and 3 <= len(stripped) <= _PLAIN_HEADING_MAX_CHARS:
            following = lines[i + 1] if i + 1 < len(lines) else ""
            underline = _UNDERLINE.fullmatch(following.strip())
            if underline and len(following.strip()) >= 3 and not _UNDERLINE.fullmatch(stripped):
                level = 1 if underline.group(1)[0] == "=" else 2
                lines[i + 1] = ""
            elif _CAPS_HEADING.fullmatch(stripped) and not stripped.startswith("#"):
                level = 2 if seen_text else 1
        if level:
            if level == 1 and title is None and not seen_text:
                title = stripped
            lines[i] = f"{'#' * level} {stripped}"
        blank_before = not stripped or bool(level)
        seen_text = seen_text or bool(stripped)
    return "\n".join(lines), title


def extract_markdown(data: bytes) -> Extracted:
    """Markdown is already the target shape; YAML front matter gives the title and is dropped."""
    text = decode_text(data)
    title: str | None = None
    front = _FRONT_MATTER.match(text[:_FRONT_MATTER_MAX_CHARS])
    if front:
        found = _FRONT_MATTER_TITLE.search(front.group(1))
        if found:
            title = found.group(1).strip("'\"") or None
        text = text[front.end() :]
    if title is None:
        title = _first_h1(text)
    return Extracted(text=text, title=title, tables=[])


def _first_h1(text: str) -> str | None:
    in_fence = False
    for line in text.split("\n", 2000)[:2000]:
        stripped = line.lstrip()
        if stripped.startswith(("```", "~~~")):
            in_fence = not in_fence
        elif not in_fence and (found := _ATX_H1.match(line)):
            return found.group(1).strip()
    return None


# --- HTML -------------------------------------------------------------------

_PARA = "\ue000"
_LINE = "\ue001"
_KEEP_SPACE = "\ue002"
"""Private-use sentinels for paragraph breaks, line breaks and the spaces of ``<pre>``:
all other whitespace in the source is folded."""

_DROP = (
    "script", "style", "noscript", "template", "svg", "canvas", "iframe", "object", "head", "nav",
)  # fmt: skip
_HEADINGS = ("h1", "h2", "h3", "h4", "h5", "h6")
_BLOCKS = (
    "p", "div", "section", "article", "main", "aside", "header", "footer", "nav", "form",
    "blockquote", "figure", "figcaption", "ul", "ol", "dl", "table", "address", "details",
    "summary", "fieldset", "hr", "body",
)  # fmt: skip
_LINES = ("li", "dt", "dd", "tr", "caption")
_CELLS = ("td", "th")
_SPACES = re.compile(r"[ \t\n\r\f\v\u00a0\u200b]+")
_BREAKS = re.compile(f"[ {_LINE}{_PARA}]*[{_LINE}{_PARA}][ {_LINE}{_PARA}]*")


def extract_html(data: bytes) -> Extracted:
    """HTML to Markdown-ish text: ``#`` headings, paragraphs, ``-`` list items, ``|`` cells."""
    soup = _parse_html(data)
    title_tag = soup.find("title")
    title = " ".join(title_tag.get_text(" ").split()) if isinstance(title_tag, Tag) else ""
    for tag in soup.find_all(_DROP):
        tag.decompose()
    _mark_preformatted(soup)
    first_h1 = _mark_headings(soup)
    _mark_breaks(soup)

    flat = _SPACES.sub(" ", soup.get_text())
    text = _BREAKS.sub(_join_breaks, flat).strip()
    text = text.replace(_KEEP_SPACE, " ")
    return Extracted(text=text, title=title or first_h1 or None, tables=[])


def _parse_html(data: bytes) -> BeautifulSoup:
    """Decode (``<meta charset>`` as the declared encoding) and parse with lxml.

    Sentinel characters already in the source become spaces, so only the marks set
    by this module carry meaning.
    """
    declared = _META_CHARSET.search(data[:4096])
    markup = decode_text(data, declared.group(1).decode("ascii") if declared else None)
    for sentinel in (_PARA, _LINE, _KEEP_SPACE):
        markup = markup.replace(sentinel, " ")
    if markup.lstrip().startswith("<?xml"):
        # XHTML: drop the XML declaration, it is still HTML to us.
        markup = markup.lstrip().split("?>", 1)[-1]
    return BeautifulSoup(markup, "lxml")


def _mark_preformatted(soup: BeautifulSoup) -> None:
    """Keep the line breaks and spaces of ``<pre>`` through the whitespace folding."""
    for pre in soup.find_all("pre"):
        for string in list(pre.find_all(string=True)):
            kept = string.replace("\n", _LINE).replace(" ", _KEEP_SPACE)
            string.replace_with(kept.replace("\t", _KEEP_SPACE * 4))
        pre.insert_before(_PARA)
        pre.insert_after(_PARA)


def _mark_headings(soup: BeautifulSoup) -> str:
    """Replace headings by ``#`` paragraphs; returns the first ``<h1>``'s text (or "")."""
    first_h1 = ""
    for heading in soup.find_all(_HEADINGS):
        level = int(heading.name[1])
        words = " ".join(heading.get_text(" ").split())
        if level == 1 and not first_h1:
            first_h1 = words
        heading.replace_with(f"{_PARA}{'#' * level} {words}{_PARA}" if words else _PARA)
    return first_h1


def _mark_breaks(soup: BeautifulSoup) -> None:
    """Paragraph breaks around blocks, line breaks for ``<br>``/list items/rows, ``|`` cells."""
    for tag in soup.find_all("br"):
        tag.replace_with(_LINE)
    for tag in soup.find_all(_BLOCKS):
        tag.insert_before(_PARA)
        tag.insert_after(_PARA)
    for tag in soup.find_all(_LINES):
        tag.insert_before(_LINE + ("- " if tag.name == "li" else ""))
    for tag in soup.find_all(_CELLS):
        if tag.find_previous_sibling(_CELLS) is not None:
            tag.insert_before(" | ")


def _join_breaks(match: re.Match[str]) -> str:
    return "\n\n" if _PARA in match.group(0) else "\n"
