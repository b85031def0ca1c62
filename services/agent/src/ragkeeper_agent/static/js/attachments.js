// Files attached to a chat message: the attach control by the message box.
//
// GET /web-config.json's "attachments" gives the limits (null: attachments are off, and the
// control stays hidden). Files come from the Attach button's file picker or are dropped onto
// the conversation; each is checked here against the limits and the accepted extensions
// (the API checks again) and shown as a removable chip. On send they go as base64 in the
// body's `files`; they stay chosen until an answer completes, so a refused message (413,
// 422) can be sent again without choosing them again.

const $ = (id) => document.getElementById(id);

const IMAGES = new Set([".png", ".jpg", ".jpeg", ".webp"]);
/** Extensions that are another spelling of one already listed in the limits. */
const SPELLINGS = new Set([".htm", ".markdown", ".jpg"]);
const NAMES = { ".webp": "WebP" };

/** A size for people: "312 bytes", "2.9 KB", "5 MB". */
export function formatBytes(n) {
  if (n < 1024) return `${n} byte${n === 1 ? "" : "s"}`;
  const units = ["KB", "MB", "GB"];
  let value = n / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit += 1;
  }
  const shown = value < 10 ? Math.round(value * 10) / 10 : Math.round(value);
  return `${shown} ${units[unit]}`;
}

function extension(name) {
  const dot = name.lastIndexOf(".");
  return dot > 0 ? name.slice(dot).toLowerCase() : "";
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

/** The formats in words: "PDF, DOCX, …; images (PNG, JPEG, WebP)". */
export function formatsText(accept) {
  const names = (list) => list.map((e) => NAMES[e] ?? e.slice(1).toUpperCase()).join(", ");
  const shown = accept.filter((e) => !SPELLINGS.has(e));
  const documents = names(shown.filter((e) => !IMAGES.has(e)));
  const images = names(shown.filter((e) => IMAGES.has(e)));
  return [documents, images && `images (${images})`].filter(Boolean).join("; ");
}

/** The limits under the message box. */
export function limitsText(limits) {
  return `Attach up to ${plural(limits.max_files, "file")}, ` +
    `${formatBytes(limits.max_file_bytes)} each, ` +
    `${formatBytes(limits.max_message_bytes)} in all: ${formatsText(limits.accept)}.`;
}

/** A file's bytes as base64 (what the API's `files[].content` carries). */
function base64(file) {
  return new Promise((resolve, reject) => {
    const reader = new FileReader();
    reader.onload = () => {
      const url = String(reader.result);
      resolve(url.slice(url.indexOf(",") + 1));
    };
    reader.onerror = () => reject(new Error(`${file.name} could not be read; choose it again.`));
    reader.readAsDataURL(file);
  });
}

/** `files` as the API's `files` items: {fileName, content (base64), mimeType}. */
export async function encodeFiles(files) {
  return Promise.all(files.map(async (file) => ({
    fileName: file.name,
    content: await base64(file),
    mimeType: file.type || "application/octet-stream",
  })));
}

/** The files attached to a message in the transcript (items: {file_name, size_bytes}). */
export function attachedList(items) {
  const list = document.createElement("ul");
  list.className = "message-files";
  list.setAttribute("aria-label", "Attached files");
  for (const item of items) {
    const entry = document.createElement("li");
    const name = document.createElement("span");
    name.className = "file-name";
    name.textContent = item.file_name;
    entry.append(name);
    if (Number.isFinite(item.size_bytes)) {
      const size = document.createElement("span");
      size.className = "file-size";
      size.textContent = formatBytes(item.size_bytes);
      entry.append(" ", size);
    }
    list.append(entry);
  }
  return list;
}

const carriesFiles = (event) => Boolean(event.dataTransfer?.types?.includes("Files"));

export class Attachments {
  /** @param {object|null} limits  web-config.json's "attachments"
   *  @param {(message: string) => void} notify  shows a refusal to the user
   *  @param {() => void} clearNotice  takes it away once files are attached */
  constructor(limits, notify, clearNotice) {
    this.limits = limits;
    this.notify = notify;
    this.clearNotice = clearNotice;
    /** @type {File[]} the chosen files, in order */
    this.files = [];
    if (!limits) return;
    this.accept = new Set(limits.accept.map((e) => e.toLowerCase()));
    const input = $("attach-input");
    input.accept = limits.accept.join(",");
    $("attach").hidden = false;
    $("attach-limits").textContent = limitsText(limits);
    $("attach-limits").hidden = false;
    $("attach").addEventListener("click", () => input.click());
    input.addEventListener("change", () => {
      this.add([...input.files]);
      input.value = "";
    });
    $("attachment-chips").addEventListener("click", (event) => {
      const button = event.target.closest("button[data-index]");
      if (button) this.removeAt(Number(button.dataset.index));
    });
    this.wireDrop($("conversation"));
  }

  /** Why `file` cannot join the chosen files, or null. */
  refusal(file) {
    const { max_files: maxFiles, max_file_bytes: maxFile, max_message_bytes: maxAll } =
      this.limits;
    if (!this.accept.has(extension(file.name))) {
      return `${file.name} is not a file type that can be attached ` +
        `(${formatsText(this.limits.accept)}).`;
    }
    if (file.size > maxFile) {
      return `${file.name} is ${formatBytes(file.size)}, over the limit of ` +
        `${formatBytes(maxFile)} per file.`;
    }
    if (this.files.some((f) => f.name === file.name && f.size === file.size &&
        f.lastModified === file.lastModified)) {
      return `${file.name} is already attached.`;
    }
    if (this.files.length >= maxFiles) {
      return `${file.name} would be one file too many: at most ` +
        `${plural(maxFiles, "file")} per message.`;
    }
    const total = this.files.reduce((sum, f) => sum + f.size, 0) + file.size;
    if (total > maxAll) {
      return `${file.name} would bring the files to ${formatBytes(total)}, over the limit of ` +
        `${formatBytes(maxAll)} per message.`;
    }
    return null;
  }

  /** Add the files that pass the checks; say why the others were not attached. */
  add(files) {
    const refused = [];
    let added = 0;
    for (const file of files) {
      const why = this.refusal(file);
      if (why) refused.push(why);
      else {
        this.files.push(file);
        added += 1;
      }
    }
    this.render();
    if (added) this.announce(`${plural(added, "file")} attached.`);
    if (refused.length) this.notify(`Not attached: ${refused.join(" ")}`);
    else if (added) this.clearNotice();
  }

  removeAt(index) {
    const [removed] = this.files.splice(index, 1);
    if (!removed) return;
    this.render();
    this.announce(`${removed.name} removed.`);
    const buttons = $("attachment-chips").querySelectorAll("button[data-index]");
    (buttons[Math.min(index, buttons.length - 1)] ?? $("attach")).focus();
  }

  /** After an answer: drop the files that were sent with it (others chosen since stay). */
  forget(sent) {
    this.files = this.files.filter((f) => !sent.includes(f));
    this.render();
  }

  clear() {
    this.forget(this.files);
  }

  announce(text) {
    $("attach-status").textContent = text;
  }

  render() {
    const list = $("attachment-chips");
    list.replaceChildren();
    this.files.forEach((file, index) => {
      const chip = document.createElement("li");
      chip.className = "chip";
      const name = document.createElement("span");
      name.className = "chip-name";
      name.textContent = file.name;
      name.title = file.name;
      const size = document.createElement("span");
      size.className = "chip-size";
      size.textContent = formatBytes(file.size);
      const remove = document.createElement("button");
      remove.type = "button";
      remove.className = "chip-remove";
      remove.dataset.index = String(index);
      remove.setAttribute("aria-label", `Remove ${file.name}`);
      remove.textContent = "×";
      chip.append(name, size, remove);
      list.append(chip);
    });
    list.hidden = this.files.length === 0;
  }

  /** Files dragged over `zone` light it up; dropped there, they are added. A file dropped
   * beside it is ignored rather than opened by the browser in place of the chat. */
  wireDrop(zone) {
    let depth = 0;
    const show = (on) => {
      if (on) zone.dataset.dropping = "true";
      else delete zone.dataset.dropping;
    };
    zone.addEventListener("dragenter", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth += 1;
      show(true);
    });
    zone.addEventListener("dragover", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      event.dataTransfer.dropEffect = "copy";
      show(true);
    });
    zone.addEventListener("dragleave", (event) => {
      if (!carriesFiles(event)) return;
      depth = Math.max(0, depth - 1);
      if (depth === 0) show(false);
    });
    zone.addEventListener("drop", (event) => {
      if (!carriesFiles(event)) return;
      event.preventDefault();
      depth = 0;
      show(false);
      this.add([...event.dataTransfer.files]);
      $("prompt").focus();
    });
    for (const type of ["dragover", "drop"]) {
      window.addEventListener(type, (event) => {
        if (!carriesFiles(event) || zone.contains(event.target)) return;
        event.preventDefault();
        event.dataTransfer.dropEffect = "none";
      });
    }
  }
}
