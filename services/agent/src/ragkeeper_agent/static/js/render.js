// Markdown to safe HTML, and citations turned into links.
//
// Answers are Markdown written by a language model, so they are untrusted: marked
// turns them into HTML and DOMPurify (both vendored under /static/vendor) keeps only
// a small set of formatting tags and http(s)/mailto links. Images are dropped — the
// page loads nothing from other origins (the CSP would block them anyway).
// Inline "[n]" markers become links to source n once the sources are known.

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

/** The "Sources" list under an answer: numbered titles linking to the documents. */
export function sourcesList(sources) {
  const nav = document.createElement("nav");
  nav.className = "sources";
  nav.setAttribute("aria-label", "Sources");
  const heading = document.createElement("h3");
  heading.textContent = "Sources";
  const list = document.createElement("ol");
  for (const source of sources) {
    const item = document.createElement("li");
    item.value = source.n;
    const url = safeUrl(source.url);
    const label = source.title || source.document_id || `Source ${source.n}`;
    if (url) item.append(link(url, label, url));
    else item.textContent = label;
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
          found.push({ n: p.n, title: p.title, url: p.url, document_id: p.document_id });
        }
      }
    }
  }
  return found;
}
