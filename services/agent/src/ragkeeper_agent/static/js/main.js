// The chat page: sign-in, the conversation list, and streaming answers.
//
// State that must survive a reload lives in the browser: the token in sessionStorage
// (auth.js) and the open conversation in the URL fragment (#/c/<session_id>). A load
// carrying an SSO provider's answer (?code= or ?error=) finishes that sign-in first.
// Everything else is fetched from the agent API (api.js) and rendered with
// textContent or through the Markdown sanitizer (render.js) — never raw HTML.
// Files chosen for the next message live in the attach control (attachments.js).

import { Api, ApiError, explain } from "./api.js";
import { Attachments, attachedList, encodeFiles } from "./attachments.js";
import { Session, SignInError } from "./auth.js";
import { MemoryPanel } from "./memories.js";
import {
  linkCitations, renderMarkdown, sourcesFromInstructions, sourcesFromToolMessage, sourcesList,
  withoutSourcesSection,
} from "./render.js";

const $ = (id) => document.getElementById(id);
const NARROW = window.matchMedia("(max-width: 720px)");

const state = {
  session: null,
  api: null,
  sessionId: null,
  controller: null,
  memories: null,
  attachments: null,
};

// ------------------------------------------------------------------ notices

function notify(message, kind = "error") {
  $("notice-text").textContent = message;
  $("notice").dataset.kind = kind;
  $("notice").hidden = false;
}

function clearNotice() {
  $("notice").hidden = true;
  $("notice-text").textContent = "";
}

/** Show an API failure; a 401 also sends the user back to the sign-in form. */
function fail(err) {
  notify(explain(err));
  if (err instanceof ApiError && err.status === 401 && !state.session.disabled) {
    state.session.signOut();
    showSignIn();
  }
}

// ------------------------------------------------------------------ views

function showSignIn() {
  $("chat").hidden = true;
  $("sign-out").hidden = true;
  $("toggle-list").hidden = true;
  $("who").textContent = "";
  $("sign-in").hidden = false;
  $("sso-form").hidden = !state.session.oidc;
  $("password-form").hidden = !state.session.supabase;
  if (state.session.oidc) $("sso-button").focus();
  else (state.session.supabase ? $("email") : $("token")).focus();
}

async function showChat() {
  $("sign-in").hidden = true;
  $("chat").hidden = false;
  $("toggle-list").hidden = false;
  $("sign-out").hidden = state.session.disabled;
  $("who").textContent = state.session.user;
  $("token").value = "";
  $("password").value = "";
  await refreshConversations();
  await openFromLocation();
  $("prompt").focus();
  // After the conversation opens: a click on the list meanwhile must not meet a second load.
  await state.memories.refresh(true);
}

function setSidebar(open) {
  $("sidebar").dataset.open = String(open);
  $("toggle-list").setAttribute("aria-expanded", String(open));
}

// ------------------------------------------------------------------ conversations

function formatWhen(iso) {
  const when = new Date(iso);
  const sameDay = when.toDateString() === new Date().toDateString();
  return sameDay
    ? when.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : when.toLocaleDateString([], { day: "numeric", month: "short" });
}

function renderConversations(conversations) {
  const list = $("conversations");
  list.replaceChildren();
  for (const c of conversations) {
    const item = document.createElement("li");
    const button = document.createElement("button");
    button.type = "button";
    button.dataset.session = c.session_id;
    if (c.session_id === state.sessionId) button.setAttribute("aria-current", "page");
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = c.title || "Untitled conversation";
    const time = document.createElement("time");
    time.dateTime = c.last_message_at;
    time.textContent = formatWhen(c.last_message_at);
    button.append(title, time);
    item.append(button);
    list.append(item);
  }
  $("no-conversations").hidden = conversations.length > 0;
}

async function refreshConversations() {
  try {
    renderConversations(await state.api.conversations());
  } catch (err) {
    fail(err);
  }
}

function markCurrent() {
  for (const b of $("conversations").querySelectorAll("button[data-session]")) {
    if (b.dataset.session === state.sessionId) b.setAttribute("aria-current", "page");
    else b.removeAttribute("aria-current");
  }
}

function resetMessages() {
  const empty = $("empty");
  $("messages").replaceChildren(empty);
  empty.hidden = false;
}

function newChat() {
  stop();
  state.sessionId = null;
  history.replaceState(null, "", location.pathname + location.search);
  $("conversation-title").textContent = "New chat";
  resetMessages();
  markCurrent();
  setSidebar(false);
  $("prompt").focus();
}

async function openConversation(sessionId, title) {
  stop();
  state.sessionId = sessionId;
  const fragment = `#/c/${encodeURIComponent(sessionId)}`;
  if (location.hash !== fragment) history.replaceState(null, "", fragment);
  markCurrent();
  setSidebar(false);
  resetMessages();
  const listed = $("conversations").querySelector(
    `button[data-session="${CSS.escape(sessionId)}"] .title`,
  );
  $("conversation-title").textContent = title ?? listed?.textContent ?? "Conversation";
  let messages;
  try {
    messages = await state.api.messages(sessionId);
  } catch (err) {
    fail(err);
    return;
  }
  let sources = [];
  for (const m of messages) {
    if (m.role === "user") {
      addMessage("user", m.content, m.attachments);
      sources = sourcesFromInstructions(m.message);
    } else if (m.role === "tool") {
      sources.push(...sourcesFromToolMessage(m.message));
    } else if (m.role === "assistant" && m.content) {
      const bubble = addMessage("assistant", "");
      finishAnswer(bubble, m.content, sources);
    }
  }
  scrollToEnd();
}

async function openFromLocation() {
  const match = /^#\/c\/(.+)$/.exec(location.hash);
  if (match) await openConversation(decodeURIComponent(match[1]));
}

// ------------------------------------------------------------------ messages

/** A message in the transcript; a user message lists its attached `files` under it. */
function addMessage(role, text, files = []) {
  $("empty").hidden = true;
  const article = document.createElement("article");
  article.className = `message ${role}`;
  const label = document.createElement("h3");
  label.className = "visually-hidden";
  label.textContent = role === "user" ? "You said" : "Answer";
  const content = document.createElement("div");
  content.className = "content";
  if (role === "user") content.textContent = text;
  else renderMarkdown(content, text);
  article.append(label, content);
  if (files?.length) article.append(attachedList(files));
  $("messages").append(article);
  article.scrollIntoView({ block: "end" });
  return article;
}

function scrollToEnd() {
  const messages = $("messages");
  messages.scrollTop = messages.scrollHeight;
}

function finishAnswer(bubble, text, sources) {
  const content = bubble.querySelector(".content");
  if (!sources.length) {
    renderMarkdown(content, text);
    return;
  }
  // The page lists the sources itself, so the answer's own "Sources:" section is left out.
  const body = withoutSourcesSection(text);
  renderMarkdown(content, body);
  linkCitations(content, sources);
  // List the passages the answer cites (in its text, else in its own list); all if none.
  const citedIn = (t) => sources.filter((s) => t.includes(`[${s.n}]`));
  const cited = citedIn(body).length ? citedIn(body) : citedIn(text);
  bubble.append(sourcesList(cited.length ? cited : sources));
}

function addNote(bubble, text, kind) {
  const note = document.createElement("p");
  note.className = `note ${kind}`;
  note.textContent = text;
  bubble.append(note);
}

function setStreaming(on) {
  $("send").hidden = on;
  $("stop").hidden = !on;
  $("composer").setAttribute("aria-busy", String(on));
}

function stop() {
  state.controller?.abort();
}

/** The chosen files as the body's `files`; null (and the reason shown) when one cannot be
 * read or the user pressed Stop meanwhile. */
async function readFiles(chosen, controller) {
  try {
    const files = await encodeFiles(chosen);
    return controller.signal.aborted ? null : files;
  } catch (err) {
    notify(err.message);
    return null;
  }
}

async function send(query) {
  if (state.controller || !query.trim()) return;
  clearNotice();
  const controller = new AbortController();
  state.controller = controller;
  setStreaming(true);
  const chosen = [...state.attachments.files];
  const files = await readFiles(chosen, controller);
  if (!files) {
    state.controller = null;
    setStreaming(false);
    return;
  }
  const prompt = $("prompt");
  prompt.value = "";
  const asked = addMessage(
    "user", query, chosen.map((f) => ({ file_name: f.name, size_bytes: f.size })),
  );
  const bubble = addMessage("assistant", "");
  bubble.classList.add("streaming");
  const content = bubble.querySelector(".content");
  let text = "";
  let pending = false;
  let finished = false;
  const paint = () => {
    pending = false;
    // A repaint queued during streaming must not overwrite the finished answer (citations).
    if (finished) return;
    renderMarkdown(content, withoutSourcesSection(text));
    bubble.scrollIntoView({ block: "end" });
  };
  const finish = (answer, sources) => {
    finished = true;
    finishAnswer(bubble, answer, sources);
  };
  let final = null;
  let started = false;
  try {
    const body = { query };
    if (state.sessionId) body.session_id = state.sessionId;
    if (files.length) body.files = files;
    for await (const line of state.api.chat(body, controller.signal)) {
      started = true;
      if (typeof line.text === "string" && !line.complete) {
        text = line.text;
        if (!pending) {
          pending = true;
          requestAnimationFrame(paint);
        }
      }
      if (line.complete) final = line;
    }
    if (final?.error) {
      finish(text, []);
      addNote(bubble, "The answer was cut short.", "error");
      notify(`The answer stopped early: ${final.error}`);
    } else if (final) {
      finish(final.text, final.sources ?? []);
      // Sent and answered: the chips go. On any failure they stay for another try.
      state.attachments.forget(chosen);
      if (!state.sessionId || final.conversation_title) {
        state.sessionId = final.session_id;
        history.replaceState(null, "", `#/c/${encodeURIComponent(final.session_id)}`);
        $("conversation-title").textContent = final.conversation_title ?? "Conversation";
      }
      await refreshConversations();
      await state.memories.refresh();
    } else {
      finish(text, []);
      addNote(bubble, "The connection ended before the answer was complete.", "error");
    }
  } catch (err) {
    if (err.name === "AbortError") {
      finish(text, []);
      addNote(bubble, "Stopped. This answer was not saved.", "stopped");
    } else if (!started) {
      // Nothing was answered: take the question back so it can be sent again (with the
      // chosen files, which are still attached).
      bubble.remove();
      asked.remove();
      if (!$("messages").querySelector(".message")) $("empty").hidden = false;
      prompt.value = query;
      fail(err);
    } else {
      finish(text, []);
      addNote(bubble, "The connection was lost.", "error");
      fail(err);
    }
  } finally {
    scrollToEnd();
    bubble.classList.remove("streaming");
    state.controller = null;
    setStreaming(false);
    if (!$("chat").hidden) prompt.focus();
  }
}

// ------------------------------------------------------------------ wiring

function wire() {
  $("notice-close").addEventListener("click", clearNotice);

  /** Submitting a sign-in form runs `signIn`; its SignInError is shown, success opens the chat
   * (SSO succeeds later: the browser goes to the provider and comes back). */
  const onSignIn = (form, signIn) =>
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      try {
        await signIn();
      } catch (err) {
        if (!(err instanceof SignInError)) throw err;
        notify(err.message);
        return;
      }
      clearNotice();
      if (state.session.signedIn) await showChat();
    });
  onSignIn($("sso-form"), () => state.session.ssoSignIn());
  onSignIn($("token-form"), () => state.session.useToken($("token").value));
  onSignIn($("password-form"), () =>
    state.session.passwordSignIn($("email").value, $("password").value));

  $("sign-out").addEventListener("click", async () => {
    stop();
    await state.session.signOut();
    state.sessionId = null;
    state.attachments.clear();
    history.replaceState(null, "", location.pathname + location.search);
    resetMessages();
    $("conversations").replaceChildren();
    showSignIn();
    notify("You are signed out.", "info");
  });

  $("composer").addEventListener("submit", (event) => {
    event.preventDefault();
    send($("prompt").value);
  });
  $("prompt").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      send($("prompt").value);
    }
  });
  $("stop").addEventListener("click", stop);
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && state.controller) stop();
  });

  $("new-chat").addEventListener("click", newChat);
  $("conversations").addEventListener("click", (event) => {
    const button = event.target.closest("button[data-session]");
    if (button) openConversation(button.dataset.session);
  });
  $("toggle-list").addEventListener("click", () => {
    setSidebar($("sidebar").dataset.open !== "true");
  });
  NARROW.addEventListener("change", () => setSidebar(false));
  window.addEventListener("hashchange", openFromLocation);
}

async function boot() {
  let config;
  try {
    const response = await fetch("/web-config.json", { cache: "no-store" });
    if (!response.ok) throw new ApiError(response.status, "", null);
    config = await response.json();
  } catch (err) {
    notify(`The page could not load its settings. ${explain(err)}`);
    return;
  }
  document.title = config.title;
  $("app-title").textContent = config.title;
  state.session = new Session(config);
  state.api = new Api(() => state.session.validToken());
  state.memories = new MemoryPanel(state.api, fail);
  state.attachments = new Attachments(config.attachments ?? null, notify, clearNotice);
  wire();
  setSidebar(false);
  let refused = null;
  try {
    await state.session.completeSsoSignIn();
  } catch (err) {
    if (!(err instanceof SignInError)) throw err;
    refused = err.message;
  }
  if (state.session.signedIn) await showChat();
  else showSignIn();
  if (refused) notify(refused);
  document.body.dataset.ready = "true";
}

boot();
