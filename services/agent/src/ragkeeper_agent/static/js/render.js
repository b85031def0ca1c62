// Markdown to safe HTML, and citations turned into links.
//
// Answers are Markdown written by a language model, so they are untrusted: marked
// turns them into HTML and DOMPurify (both vendored under /static/vendor) keeps only
// a small set of formatting tags and http(s)/mailto links. Images are dropped — the
// page loads nothing from other origins (the CSP would block them anyway).
// Inline "[n]" markers become links to source n once the sources are known, and the
// page lists the sources itself, one entry per document with its cited passages under
// it; a "Sources:" section the answer ends with (the offline model writes one, and a
// language model is asked to) is left out of the rendered text so the list appears once.

const { marked, DOMPurify } = globalThis;

const PURIFY = {
  ALLOWED_TAGS: [
    "a", "p", "br", "hr", "strong", "em", "del", "code", "pre", "blockquote",
    "ul", "ol", "li", "h1", "h2", "h3", "h4", "h5", "h6",
    "table", "thead", "tbody", "tr", "th", "td", "span", "sup",
  ],
  ALLOWED_ATTR: ["href", "title", "start", "colspan", "rowspan", "align"],
  ALLOWED_URI_REGEXP: /^(?:https?:|mailto:)/i,
};

DOMPurify.addHook("afterSanitizeAttributes", (node) => {
  if (node.tagName === "A") {
    node.setAttribute("target", "_blank");
    node.setAttribute("rel", "noopener noreferrer");
  }
});

/** Only absolute http(s) URLs become links; anything else stays text. */
export function safeUrl(url) {
  if (typeof url !== "string") return null;
  try {
    const parsed = new URL(url);
    return parsed.protocol === "https:" || parsed.protocol === "http:" ? parsed.href : null;
  } catch {
    return null;
  }
}

export function renderMarkdown(element, text) {
  const html = marked.parse(text, { async: false, gfm: true, breaks: true });
  element.innerHTML = DOMPurify.sanitize(html, PURIFY);
}

function link(url, text, title) {
  const a = document.createElement("a");
  a.href = url;
  a.target = "_blank";
  a.rel = "noopener noreferrer";
  a.textContent = text;
  if (title) a.title = title;
  return a;
}

/** Replace "[n]" in the rendered answer (outside links and code) with links to source n. */
export function linkCitations(element, sources) {
  const byN = new Map(sources.map((s) => [String(s.n), s]));
  const walker = document.createTreeWalker(element, NodeFilter.SHOW_TEXT, {
    acceptNode: (node) =>
      node.parentElement.closest("a, code, pre") ? NodeFilter.FILTER_REJECT
        : /\[\d+\]/.test(node.data) ? NodeFilter.FILTER_ACCEPT : NodeFilter.FILTER_SKIP,
  });
  const nodes = [];
  while (walker.nextNode()) nodes.push(walker.currentNode);
  for (const node of nodes) {
    const fragment = document.createDocumentFragment();
    let last = 0;
    for (const match of node.data.matchAll(/\[(\d+)\]/g)) {
      const source = byN.get(match[1]);
      const url = safeUrl(source?.url);
      if (!url) continue;
      fragment.append(node.data.slice(last, match.index));
      const a = link(url, match[0], source.title);
      a.className = "citation";
      fragment.append(a);
      last = match.index + match[0].length;
    }
    if (last === 0) continue;
    fragment.append(node.data.slice(last));
    node.replaceWith(fragment);
  }
}

const SOURCES_LINE =
  /^\s*(?:#{1,6}\s*)?(?:\*\*|__)?(?:sources|references)(?:\*\*|__)?\s*:?\s*(?:\*\*|__)?\s*(.*)$/i;
const LIST_LINE = /^\s*(?:$|[-*+]\s|\d+[.)]\s|\[\d+\])/;

/** The answer without the "Sources:" section it ends with, if it ends with one: a
 * "Sources" (or "References") line, alone or followed by "[n] ...", then only list lines. */
export function withoutSourcesSection(text) {
  const lines = text.split("\n");
  for (let i = lines.length - 1; i >= 0; i--) {
    const heading = SOURCES_LINE.exec(lines[i]);
    if (heading && (heading[1] === "" || heading[1].startsWith("["))) {
      return lines.slice(0, i).join("\n").trimEnd();
    }
    if (!LIST_LINE.test(lines[i])) break;
  }
  return text;
}

const SNIPPET_CHARS = 140;

/** The start of a passage on one line, headings' "#" marks removed, cut at a word. */
export function snippet(content) {
  const flat = String(content ?? "").replace(/^\s*#{1,6}\s+/gm, "").replace(/\s+/g, " ").trim();
  if (flat.length <= SNIPPET_CHARS) return flat;
  const cut = flat.lastIndexOf(" ", SNIPPET_CHARS);
  return `${flat.slice(0, cut > SNIPPET_CHARS / 2 ? cut : SNIPPET_CHARS)}…`;
}

/** A passage of a file attached to the chat (document_id "attachment:<id>"): no URL, titled
 * by the file name, with ", page N" for a PDF's pages. */
export function isAttachment(source) {
  return String(source.document_id ?? "").startsWith("attachment:");
}

/** Passages grouped by document (an attached file's pages apart), in order of their first
 * number. */
export function byDocument(sources) {
  const groups = new Map();
  for (const source of [...sources].sort((a, b) => a.n - b.n)) {
    const key = isAttachment(source) ? `${source.document_id} ${source.title}`
      : source.document_id || source.url || source.title || `#${source.n}`;
    if (!groups.has(key)) groups.set(key, []);
    const passages = groups.get(key);
    if (!passages.some((p) => p.n === source.n)) passages.push(source);
  }
  return [...groups.values()];
}

/** The "Sources" list under an answer: one entry per document (a link when it has an
 * http(s) URL; an attached file's is marked so), with the numbers and the opening words of
 * its cited passages under it. */
export function sourcesList(sources) {
  const nav = document.createElement("nav");
  nav.className = "sources";
  nav.setAttribute("aria-label", "Sources");
  const heading = document.createElement("h3");
  heading.textContent = "Sources";
  const list = document.createElement("ul");
  for (const passages of byDocument(sources)) {
    const [first] = passages;
    const item = document.createElement("li");
    item.className = "source";
    const url = safeUrl(first.url);
    const label = first.title || first.document_id || `Source ${first.n}`;
    const title = url ? link(url, label, url) : document.createElement("span");
    if (!url) title.textContent = label;
    title.classList.add("source-title");
    item.append(title);
    if (isAttachment(first)) {
      item.classList.add("attachment");
      const kind = document.createElement("span");
      kind.className = "source-kind";
      kind.textContent = "attached file";
      item.append(" ", kind);
    }
    const cited = document.createElement("ul");
    cited.className = "passages";
    for (const passage of passages) {
      const entry = document.createElement("li");
      const number = document.createElement("span");
      number.className = "passage-n";
      number.textContent = `[${passage.n}]`;
      entry.append(number);
      const text = snippet(passage.content);
      if (text) entry.append(" ", text);
      cited.append(entry);
    }
    item.append(cited);
    list.append(item);
  }
  nav.append(heading, list);
  return nav;
}

/** Sources of stored turns: the passages the search tool returned, as Pydantic AI saved them. */
export function sourcesFromToolMessage(message) {
  const found = [];
  for (const part of message?.parts ?? []) {
    if (part.part_kind === "tool-return" && part.tool_name === "search_documents" &&
        Array.isArray(part.content)) {
      for (const p of part.content) {
        if (p && typeof p.n === "number") {
          found.push({
            n: p.n, title: p.title, url: p.url, document_id: p.document_id, content: p.content,
          });
        }
      }
    }
  }
  return found;
}

/** The header under which the agent's instructions list the conversation's attached files, as
 * one line of JSON passages (agent.ATTACHMENTS_HEADER; each turn's stored request keeps them). */
const ATTACHED_HEADER = "Files the user attached to this conversation, as JSON passages";

/** Sources of stored turns: the attached files' passages, from the turn's stored instructions. */
export function sourcesFromInstructions(message) {
  const instructions = message?.instructions;
  const at = typeof instructions === "string" ? instructions.indexOf(ATTACHED_HEADER) : -1;
  if (at < 0) return [];
  const start = instructions.indexOf("\n", at) + 1;
  const end = instructions.indexOf("\n", start);
  let listed;
  try {
    listed = JSON.parse(instructions.slice(start, end < 0 ? undefined : end));
  } catch {
    return [];
  }
  if (!start || !Array.isArray(listed)) return [];
  return listed
    .filter((p) => p && typeof p.n === "number" && isAttachment(p))
    .map((p) => ({
      n: p.n, title: p.title, url: null, document_id: p.document_id, content: p.content,
    }));
}
