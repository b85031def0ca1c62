// The "Your memories" panel: what the agent keeps about the signed-in user across
// conversations (GET /api/memories), each with a Forget button (DELETE /api/memories/{id}).
// With MEMORY_ENABLED=false the API answers 404 and the panel hides itself.

import { ApiError } from "./api.js";

const $ = (id) => document.getElementById(id);

function render(memories) {
  const list = $("memories");
  list.replaceChildren();
  for (const m of memories) {
    const item = document.createElement("li");
    const text = document.createElement("span");
    text.className = "memory-text";
    text.textContent = m.content;
    const forget = document.createElement("button");
    forget.type = "button";
    forget.className = "forget";
    forget.dataset.memory = String(m.id);
    forget.textContent = "Forget";
    forget.setAttribute("aria-label", `Forget: ${m.content}`);
    item.append(text, forget);
    list.append(item);
  }
  $("no-memories").hidden = memories.length > 0;
}

export class MemoryPanel {
  /** @param {import("./api.js").Api} api  @param {(err: Error) => void} fail */
  constructor(api, fail) {
    this.api = api;
    this.fail = fail;
    $("memories-panel").addEventListener("toggle", () => {
      if ($("memories-panel").open) this.refresh();
    });
    $("memories").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-memory]");
      if (button) this.forget(button.dataset.memory);
    });
  }

  /** Reload the list: on sign-in (`always`, which also learns whether memory is on), and
   * while the panel is open after a turn, which may have saved one. */
  async refresh(always = false) {
    if (!always && !$("memories-panel").open) return;
    try {
      render(await this.api.json("/api/memories?limit=200"));
      $("memories-panel").hidden = false;
    } catch (err) {
      if (err instanceof ApiError && err.status === 404) $("memories-panel").hidden = true;
      else this.fail(err);
    }
  }

  async forget(id) {
    try {
      await this.api.request(`/api/memories/${encodeURIComponent(id)}`, { method: "DELETE" });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 404)) {
        this.fail(err);
        return;
      }
    }
    await this.refresh();
  }
}
