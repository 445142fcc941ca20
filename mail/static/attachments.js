// Files in the composer and on messages: upload through Odoo's
// /mail/attachment/upload (each file pending until the message is posted),
// shown on a message as a thumbnail (/web/image) or a download link
// (/web/content). Only the image types the server shows inline get a preview.

import { h } from "./dom.js";

const INLINE_IMAGES = new Set(["image/png", "image/jpeg", "image/gif", "image/webp"]);

/** Pending uploads of the composer: { key, name, progress, attachment, error }. */
const pending = [];
let currentChannel = () => null;
let report = () => {};
let call = async () => {};

/** Upload with XMLHttpRequest: fetch cannot report upload progress. */
function send(channelId, file, entry) {
    return new Promise((resolve) => {
        const form = new FormData();
        form.append("thread_model", "mail.channel");
        form.append("thread_id", String(channelId));
        form.append("is_pending", "true");
        form.append("ufile", file, file.name);
        const xhr = new XMLHttpRequest();
        entry.xhr = xhr;
        xhr.open("POST", "/mail/attachment/upload");
        xhr.upload.onprogress = (event) => {
            if (event.lengthComputable) {
                entry.progress = Math.round((100 * event.loaded) / event.total);
                render();
            }
        };
        xhr.onload = () => {
            let answer = null;
            try { answer = JSON.parse(xhr.responseText); } catch { /* not JSON: reported below */ }
            if (answer && !answer.error && xhr.status === 200) entry.attachment = answer;
            else entry.error = (answer && answer.error) || `upload failed (HTTP ${xhr.status})`;
            resolve();
        };
        xhr.onerror = () => { entry.error = "upload failed: the connection was lost"; resolve(); };
        xhr.onabort = () => resolve();
        xhr.send(form);
    });
}

async function addFiles(files) {
    const channelId = currentChannel();
    if (!channelId) return;
    await Promise.all([...files].map((file) => {
        const entry = { key: `${Date.now()}-${Math.random()}`, name: file.name, progress: 0, attachment: null,
            error: null, channelId };
        pending.push(entry);
        render();
        return send(channelId, file, entry).then(() => {
            entry.xhr = null;
            if (entry.removed) discard(entry); // removed while it was uploading
            else if (entry.error) {
                report(`${file.name}: ${entry.error}`);
                forget(entry);
            }
            render();
        });
    }));
}

function forget(entry) {
    const index = pending.indexOf(entry);
    if (index >= 0) pending.splice(index, 1);
}

/** The × of a chip: an upload still going is aborted; one done is deleted
 * on the server, which would otherwise keep it pending for ever. */
function remove(entry) {
    entry.removed = true;
    forget(entry);
    if (entry.xhr) entry.xhr.abort();
    else discard(entry);
    render();
}

function discard(entry) {
    if (entry.attachment) call("/mail/attachment/delete", { attachment_id: entry.attachment.id });
}

function render() {
    const list = document.querySelector("[data-testid=composer-attachments]");
    if (!list) return;
    const shown = pending.filter((entry) => entry.channelId === currentChannel());
    list.replaceChildren(...shown.map((entry) => {
        const close = h("button", { type: "button", class: "chip-remove", "aria-label": `Remove ${entry.name}`,
            text: "×" });
        close.addEventListener("click", () => remove(entry));
        const state = entry.attachment ? "" : ` ${entry.progress}%`;
        return h("span", { class: "attachment-chip" + (entry.attachment ? "" : " uploading"),
            "data-testid": "pending-attachment", "data-state": entry.attachment ? "uploaded" : "uploading" },
        h("span", { text: entry.name + state }), close);
    }));
    list.hidden = shown.length === 0;
}

/** Wire the composer's attach button, drag and drop and paste. */
/**
 * @param {object} kit
 * @param {() => number|null} kit.channelId the open channel
 * @param {(text: string) => void} kit.onError
 * @param {(route: string, params: object) => Promise<any>} kit.rpc the page's JSON-RPC call, errors reported
 */
export function setupComposer({ channelId, onError, rpc }) {
    currentChannel = channelId;
    report = onError;
    call = rpc;
    const input = document.querySelector("[data-testid=attach-input]");
    const composer = document.querySelector("[data-testid=composer]");
    document.querySelector("[data-testid=attach-button]").addEventListener("click", () => input.click());
    input.addEventListener("change", () => { addFiles(input.files); input.value = ""; });
    composer.addEventListener("dragover", (event) => { event.preventDefault(); composer.classList.add("dropping"); });
    composer.addEventListener("dragleave", () => composer.classList.remove("dropping"));
    composer.addEventListener("drop", (event) => {
        event.preventDefault();
        composer.classList.remove("dropping");
        if (event.dataTransfer.files.length) addFiles(event.dataTransfer.files);
    });
    composer.addEventListener("paste", (event) => {
        if (event.clipboardData.files.length) { event.preventDefault(); addFiles(event.clipboardData.files); }
    });
}

/** The composer's uploads for the current channel: ready ids, and whether one is still going. */
export function pendingUploads() {
    const shown = pending.filter((entry) => entry.channelId === currentChannel());
    return { ids: shown.filter((e) => e.attachment).map((e) => e.attachment.id), busy: shown.some((e) => !e.attachment) };
}

/** Forget the uploads a post just took. */
export function posted(ids) {
    for (const entry of [...pending]) {
        if (entry.attachment && ids.includes(entry.attachment.id)) forget(entry);
    }
    render();
}

/** Show the composer's uploads of the channel just opened. */
export const refresh = render;

/** A message's attachments: thumbnails for images, links for the rest. */
export function attachmentList(message) {
    const files = Array.isArray(message.attachment_ids) ? message.attachment_ids : [];
    if (!files.length) return null;
    return h("div", { class: "message-attachments", "data-testid": "message-attachments" }, ...files.map((file) => {
        const download = `/web/content/${file.id}?download=true`;
        if (INLINE_IMAGES.has(file.mimetype)) {
            const link = h("a", { href: `/web/content/${file.id}`, target: "_blank", rel: "noopener",
                class: "attachment-image", title: file.name },
            h("img", { src: `/web/image/${file.id}`, alt: file.name, loading: "lazy", "data-testid": "attachment-image" }));
            return link;
        }
        return h("a", { href: download, class: "attachment-file", download: file.name,
            "data-testid": "attachment-link", text: file.name });
    }));
}
