/*
 * imbus chat: the demo client for the Discuss-style API.
 *
 * No build step and no framework, so the page can be served as is by
 * `python -m mail.demo`; the bus client (./bus/) listens to the bus (over a
 * WebSocket, or by long-polling where the server has none), one connection
 * per browser for all its tabs. Everything the page renders is built with DOM
 * nodes and textContent; the only HTML inserted verbatim is a message body,
 * which the server has already sanitised.
 */
import { RpcError, createBusClient, createRpc } from "./bus/index.js";
import { attachmentList, pendingUploads, posted, refresh as refreshAttachments, setupComposer } from "./attachments.js";
import { createMessageActions } from "./message_actions.js";
import { NotificationLedger, notifyMessage, setUpBell } from "./notifications.js";
import { $, h } from "./dom.js";
import { firstUnreadId, unreadSeparator } from "./unread.js";

const HISTORY_PAGE = 30;
const TYPING_IDLE_MS = 5000;          // stop "typing" after this much silence
const TYPING_REFRESH_MS = 50000;      // re-announce long typing so peers' timers do not expire
const TYPING_PEER_TIMEOUT_MS = 60000; // forget a peer who never said they stopped
const IM_STATUS_REFRESH_MS = 50000;
const GROUP_WINDOW_MS = 5 * 60 * 1000; // consecutive messages closer than this share a header

// ---------------------------------------------------------------- JSON-RPC

const rpc = createRpc();
const bus = createBusClient();

// ------------------------------------------------------------------ state

const state = {
    generation: 0,       // bumped on login/logout so stale loops and callbacks stop
    user: null,          // {uid, name, partnerId}
    partners: new Map(), // id -> {id, name, im_status}
    channels: new Map(), // id -> channel_info (members hold partner ids, see partners)
    threads: new Map(),  // channel id -> {messages, ids, hasOlder, loadingOlder}
    typing: new Map(),   // channel id -> Map(partner id -> {name, timer})
    currentId: null,
    /** Where the "new messages" line goes: the channel and its seen marker when it was opened. */
    readFrom: null,
    early: null,         // notifications that came while the session's state was loading
    imStatusTimer: null,
    notified: new NotificationLedger(),
};

const composerState = { channelId: null, announced: false, announcedAt: 0, idleTimer: null, sending: false };

// ----------------------------------------------------------------- DOM kit

function icon(path) {
    const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
    svg.setAttribute("viewBox", "0 0 20 20");
    svg.setAttribute("aria-hidden", "true");
    const shape = document.createElementNS("http://www.w3.org/2000/svg", "path");
    shape.setAttribute("d", path);
    svg.append(shape);
    return svg;
}

const ICON_HASH = "M7.5 3.5L6 16.5M14 3.5l-1.5 13M3.5 7.5h13M3 12.5h13";
const ICON_LOCK = "M5.5 9h9v7.5h-9zM7.5 9V6.5a2.5 2.5 0 015 0V9";

function initials(name) {
    const words = String(name || "").split(/[^\p{L}\p{N}]+/u).filter(Boolean);
    const letters = words.length > 1 ? words[0][0] + words[words.length - 1][0] : (words[0] || "?").slice(0, 2);
    return letters.toUpperCase();
}

function avatarColor(id) {
    const hue = (Number(id) * 137.508) % 360;
    return `hsl(${hue.toFixed(0)} 52% 46%)`;
}

function avatar(id, name, { size = "", status = null } = {}) {
    const node = h("span", { class: `avatar ${size}`, "aria-hidden": "true", text: initials(name) });
    node.style.background = avatarColor(id);
    if (status) node.append(presenceDot(status));
    return node;
}

function presenceDot(status) {
    const known = ["online", "away", "offline"].includes(status) ? status : "offline";
    return h("span", { class: `presence presence-${known}`, "data-testid": "presence", "data-status": known, title: known });
}

function parseServerDate(text) {
    return new Date(String(text).replace(" ", "T") + "Z");
}

const timeFormat = new Intl.DateTimeFormat(undefined, { hour: "numeric", minute: "2-digit" });
const dayFormat = new Intl.DateTimeFormat(undefined, { weekday: "long", month: "long", day: "numeric" });
const fullFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "full", timeStyle: "short" });

function dayLabel(date) {
    const today = new Date();
    const yesterday = new Date(today.getFullYear(), today.getMonth(), today.getDate() - 1);
    if (date.toDateString() === today.toDateString()) return "Today";
    if (date.toDateString() === yesterday.toDateString()) return "Yesterday";
    return dayFormat.format(date);
}

// ------------------------------------------------------------------ toasts

function toast(message, kind = "error") {
    const node = h("div", { class: `toast toast-${kind}`, role: "status", "data-testid": "toast", text: message });
    $(".toasts").append(node);
    setTimeout(() => node.classList.add("leaving"), 4500);
    setTimeout(() => node.remove(), 5000);
}

function explain(error) {
    if (error instanceof RpcError) return error.message;
    return "Something went wrong.";
}

/** Run an action started by the user; a lost session sends them to the login screen. */
async function attempt(action) {
    try {
        return await action();
    } catch (error) {
        if (error instanceof RpcError && error.sessionExpired) {
            sessionLost();
        } else if (error.name !== "AbortError") {
            toast(explain(error));
        }
        return undefined;
    }
}

// ---------------------------------------------------------------- partners

function rememberPartner(partner) {
    if (!partner || partner.id === undefined) return null;
    const known = state.partners.get(partner.id) || { id: partner.id, name: "", im_status: "offline" };
    if (partner.name) known.name = partner.name;
    if (partner.im_status) known.im_status = partner.im_status;
    state.partners.set(partner.id, known);
    return known;
}

function setImStatus(partnerId, status) {
    const partner = state.partners.get(partnerId);
    if (!partner || partner.im_status === status) return false;
    partner.im_status = status;
    return true;
}

// ---------------------------------------------------------------- channels

/** Store channel information from the server. Answers can arrive out of
 * order (a bus notification built before a message, read after it), so
 * the message counters never move backwards. */
function upsertChannel(info) {
    const existing = state.channels.get(info.id) || {};
    const previous = {
        last_message_id: existing.last_message_id || 0,
        message_unread_counter: existing.message_unread_counter || 0,
        seen_message_id: existing.seen_message_id || 0,
    };
    const channel = Object.assign(existing, info);
    if ((info.last_message_id || 0) < previous.last_message_id) {
        channel.last_message_id = previous.last_message_id;
        channel.message_unread_counter = previous.message_unread_counter;
    }
    channel.seen_message_id = Math.max(channel.seen_message_id || 0, previous.seen_message_id);
    if (Array.isArray(info.seen_partners_info)) {
        channel.seenBy = new Map(info.seen_partners_info.map((seen) => [seen.partner_id, seen.seen_message_id || 0]));
    }
    channel.seenBy = channel.seenBy || new Map();
    if (Array.isArray(info.members)) {
        channel.memberIds = info.members.map((member) => rememberPartner(member)).filter(Boolean).map((p) => p.id);
    }
    channel.memberIds = channel.memberIds || [];
    channel.message_unread_counter = channel.message_unread_counter || 0;
    channel.last_message_id = channel.last_message_id || 0;
    state.channels.set(channel.id, channel);
    return channel;
}

function isDirect(channel) {
    return channel.channel_type === "chat" || channel.channel_type === "group";
}

function chatPeer(channel) {
    if (channel.channel_type !== "chat") return null;
    const me = state.user && state.user.partnerId;
    const peerId = channel.memberIds.find((id) => id !== me);
    return peerId === undefined ? null : state.partners.get(peerId);
}

function channelName(channel) {
    const peer = chatPeer(channel);
    if (peer) return peer.name;
    if (channel.channel_type === "group" && !channel.name) {
        const me = state.user && state.user.partnerId;
        return channel.memberIds.filter((id) => id !== me)
            .map((id) => (state.partners.get(id) || {}).name).filter(Boolean).join(", ") || "Group";
    }
    return channel.name || "Untitled";
}

function sortedChannels(direct) {
    const list = [...state.channels.values()].filter((channel) => isDirect(channel) === direct);
    if (direct) {
        // Most recent conversation first; the server's UTC "YYYY-MM-DD HH:MM:SS" sorts as text.
        const interest = (channel) => channel.last_interest_dt || "";
        return list.sort((a, b) => interest(b).localeCompare(interest(a)) || b.id - a.id);
    }
    return list.sort((a, b) => channelName(a).localeCompare(channelName(b)));
}

// ----------------------------------------------------------------- sidebar

function renderSidebar() {
    fillChannelList($("[data-testid=channel-list]"), sortedChannels(false), "No channels yet.");
    fillChannelList($("[data-testid=chat-list]"), sortedChannels(true), "No conversations yet.");
    const unread = [...state.channels.values()].reduce((sum, c) => sum + (c.message_unread_counter || 0), 0);
    document.title = unread ? `(${unread}) imbus chat` : "imbus chat";
}

function fillChannelList(list, channels, emptyText) {
    list.replaceChildren(...channels.map(channelItem));
    if (!channels.length) list.append(h("li", { class: "list-empty", text: emptyText }));
}

function channelItem(channel) {
    const name = channelName(channel);
    const unread = channel.message_unread_counter || 0;
    const peer = chatPeer(channel);
    let mark;
    if (peer) mark = avatar(peer.id, peer.name, { size: "avatar-small", status: peer.im_status });
    else if (channel.channel_type === "group") mark = avatar(channel.id, name, { size: "avatar-small" });
    else mark = h("span", { class: "channel-icon" }, icon(channel.public === "private" ? ICON_LOCK : ICON_HASH));
    const button = h("button", {
        type: "button",
        class: "channel-item" + (channel.id === state.currentId ? " active" : "") + (unread ? " unread" : ""),
        "data-testid": "channel-item",
        "data-channel-id": channel.id,
        "data-channel-name": name,
        "aria-current": channel.id === state.currentId ? "page" : null,
        onclick: () => openChannel(channel.id),
    },
    mark,
    h("span", { class: "channel-name", text: name }),
    unread ? h("span", { class: "badge", "data-testid": "unread-badge", text: unread > 99 ? "99+" : String(unread) }) : null);
    return h("li", {}, button);
}

// ----------------------------------------------------------------- header

function renderHeader() {
    const channel = state.channels.get(state.currentId);
    const title = $("[data-testid=channel-title]");
    const description = $("[data-testid=channel-description]");
    const count = $("[data-testid=member-count]");
    title.replaceChildren();
    if (!channel) {
        title.textContent = "Welcome";
        description.textContent = "";
        count.hidden = true;
        $(".members").hidden = true;
        count.setAttribute("aria-pressed", "false");
        return;
    }
    const peer = chatPeer(channel);
    if (peer) {
        title.append(presenceDot(peer.im_status));
    } else if (channel.channel_type !== "group") {
        title.append(h("span", { class: "title-icon" }, icon(channel.public === "private" ? ICON_LOCK : ICON_HASH)));
    }
    title.append(h("span", { text: channelName(channel) }));
    if (peer) {
        description.textContent = { online: "Online", away: "Away" }[peer.im_status] || "Offline";
    } else {
        description.textContent = channel.description || "";
    }
    const members = channel.memberIds.length;
    count.hidden = false;
    count.replaceChildren(
        icon("M7 9a3 3 0 100-6 3 3 0 000 6zM2 17c0-3 2.5-5 5-5s5 2 5 5M13.5 9a2.5 2.5 0 100-5M14 12c2.2.3 4 2 4 4.5"),
        h("span", { text: `${members} ${members === 1 ? "member" : "members"}` }),
    );
    renderMembers();
}

function renderMembers() {
    const channel = state.channels.get(state.currentId);
    const panel = $(".members");
    if (!channel) return;
    const members = channel.memberIds.map((id) => state.partners.get(id)).filter(Boolean)
        .sort((a, b) => a.name.localeCompare(b.name));
    $("[data-testid=member-list]").replaceChildren(...members.map((partner) => h("li", {
        class: "member", "data-testid": "member", "data-partner-id": partner.id,
    },
    avatar(partner.id, partner.name, { size: "avatar-small", status: partner.im_status }),
    h("span", { class: "member-name", text: partner.name }),
    partner.id === state.user.partnerId ? h("span", { class: "member-you", text: "you" }) : null)));
    $("[data-testid=add-members]", panel).hidden = channel.channel_type === "chat";
}

// ---------------------------------------------------------------- messages

function thread(channelId) {
    let entry = state.threads.get(channelId);
    if (!entry) {
        entry = { messages: [], ids: new Set(), hasOlder: true, loaded: false, loadingOlder: false };
        state.threads.set(channelId, entry);
    }
    return entry;
}

/** Merge messages into a thread, keeping it sorted and free of duplicates (the
 * poster gets its own message both from the post answer and from the bus). */
function mergeMessages(entry, messages) {
    let added = 0;
    for (const message of messages) {
        if (entry.ids.has(message.id)) continue;
        entry.ids.add(message.id);
        entry.messages.push(message);
        added += 1;
    }
    if (added) entry.messages.sort((a, b) => a.id - b.id);
    return added;
}

function messagesBox() {
    return $("[data-testid=messages]");
}

function isNearBottom(box) {
    return box.scrollHeight - box.scrollTop - box.clientHeight < 80;
}

function renderMessages({ keep = "bottom" } = {}) {
    const box = messagesBox();
    const channel = state.channels.get(state.currentId);
    if (!channel) {
        box.replaceChildren(h("div", { class: "empty-state", "data-testid": "empty-state" },
            h("div", { class: "empty-mark", "aria-hidden": "true", text: "#" }),
            h("p", { text: "Pick a channel or start a conversation." })));
        return;
    }
    const entry = thread(channel.id);
    const fromBottom = box.scrollHeight - box.scrollTop;
    const nodes = [];
    if (entry.hasOlder && entry.loaded) {
        nodes.push(h("div", { class: "older" }, h("button", {
            type: "button", class: "btn btn-ghost btn-small", "data-testid": "load-older",
            disabled: entry.loadingOlder, onclick: () => loadOlder(),
            text: entry.loadingOlder ? "Loading…" : "Load older messages",
        })));
    } else if (entry.loaded) {
        nodes.push(channelIntro(channel));
    }
    let previous = null;
    const readFrom = state.readFrom && state.readFrom.channelId === channel.id
        ? firstUnreadId(entry.messages, state.readFrom.seenId, state.user.partnerId) : null;
    for (const message of entry.messages) {
        const date = parseServerDate(message.date);
        if (message.id === readFrom) {
            nodes.push(unreadSeparator());
            previous = null;
        }
        if (!previous || parseServerDate(previous.date).toDateString() !== date.toDateString()) {
            nodes.push(h("div", { class: "day-separator", role: "separator" }, h("span", { text: dayLabel(date) })));
            previous = null;
        }
        nodes.push(messageNode(message, date, previous));
        previous = message;
    }
    if (entry.loaded && !entry.messages.length) {
        nodes.push(h("p", { class: "thread-empty", text: "No messages yet. Say hello!" }));
    }
    box.replaceChildren(...nodes);
    renderSeenStatus();
    if (keep === "bottom") box.scrollTop = box.scrollHeight;
    else box.scrollTop = box.scrollHeight - fromBottom;
}

/** "Seen" under the caller's latest message in a chat, once the other
 * person has read it (the information Odoo shows as ticks). */
function renderSeenStatus() {
    const box = messagesBox();
    const previous = $("[data-testid=seen-status]", box);
    if (previous) previous.remove();
    const channel = state.channels.get(state.currentId);
    if (!channel || channel.channel_type !== "chat") return;
    const entry = thread(channel.id);
    const last = entry.messages[entry.messages.length - 1];
    if (!last || authorOf(last).id !== state.user.partnerId) return;
    const peer = chatPeer(channel);
    if (!peer || (channel.seenBy.get(peer.id) || 0) < last.id) return;
    const node = box.querySelector(`[data-message-id="${last.id}"] .message-main`);
    if (node) node.append(h("div", { class: "seen-status", "data-testid": "seen-status", text: "Seen" }));
}

function channelIntro(channel) {
    const name = channelName(channel);
    const text = channel.channel_type === "chat"
        ? `This is the beginning of your conversation with ${name}.`
        : `This is the very beginning of ${name}.`;
    return h("div", { class: "intro" }, h("h2", { text: name }), h("p", { text }));
}

function authorOf(message) {
    const author = Array.isArray(message.author_id) ? message.author_id : [0, "Unknown"];
    return { id: author[0], name: author[1] || "Unknown" };
}

const actions = createMessageActions({
    rpc, attempt, state,
    render: () => renderMessages({ keep: "position" }),
    membersOf: (channelId) => {
        const channel = state.channels.get(channelId);
        return channel ? channel.memberIds.map((id) => state.partners.get(id)).filter(Boolean) : [];
    },
});

function messageNode(message, date, previous) {
    const node = plainMessageNode(message, date, previous);
    actions.decorate(node, message, state.user && authorOf(message).id === state.user.partnerId);
    return node;
}

function plainMessageNode(message, date, previous) {
    const author = authorOf(message);
    const grouped = previous && authorOf(previous).id === author.id
        && date - parseServerDate(previous.date) < GROUP_WINDOW_MS;
    const body = h("div", { class: "message-body", "data-testid": "message-body" });
    body.innerHTML = message.body || "";
    const time = h("time", { datetime: date.toISOString(), title: fullFormat.format(date), text: timeFormat.format(date) });
    const mine = state.user && author.id === state.user.partnerId;
    if (grouped) {
        return h("article", {
            class: "message grouped" + (mine ? " mine" : ""), "data-testid": "message",
            "data-message-id": message.id, "data-author-id": author.id,
        }, h("div", { class: "gutter" }, time), h("div", { class: "message-main" }, body, attachmentList(message)));
    }
    return h("article", {
        class: "message" + (mine ? " mine" : ""), "data-testid": "message",
        "data-message-id": message.id, "data-author-id": author.id,
    },
    h("div", { class: "gutter" }, avatar(author.id, author.name)),
    h("div", { class: "message-main" },
        h("header", { class: "message-header" },
            h("span", { class: "message-author", "data-testid": "message-author", text: author.name }),
            time),
        body, attachmentList(message)));
}

async function loadHistory(channelId) {
    const generation = state.generation;
    const messages = await rpc("/mail/channel/messages", { channel_id: channelId, limit: HISTORY_PAGE });
    if (generation !== state.generation) return;
    const entry = thread(channelId);
    mergeMessages(entry, messages);
    entry.hasOlder = messages.length >= HISTORY_PAGE;
    if (entry.hasOlder) {
        // Replayed notifications that arrived before this page and are
        // older than it would leave a hole in the history: paging brings
        // them back in order.
        const oldest = messages[messages.length - 1].id;
        entry.messages = entry.messages.filter((message) => message.id >= oldest);
        entry.ids = new Set(entry.messages.map((message) => message.id));
    }
    entry.loaded = true;
}

async function loadOlder() {
    const channelId = state.currentId;
    const entry = thread(channelId);
    if (!entry.loaded || !entry.hasOlder || entry.loadingOlder) return;
    entry.loadingOlder = true;
    renderMessages({ keep: "position" });
    await attempt(async () => {
        const oldest = entry.messages.length ? entry.messages[0].id : undefined;
        const params = { channel_id: channelId, limit: HISTORY_PAGE };
        if (oldest !== undefined) params.max_id = oldest;
        const messages = await rpc("/mail/channel/messages", params);
        mergeMessages(entry, messages);
        entry.hasOlder = messages.length >= HISTORY_PAGE;
    });
    entry.loadingOlder = false;
    if (state.currentId === channelId) renderMessages({ keep: "position" });
}

// ----------------------------------------------------------- open a channel

async function openChannel(channelId) {
    const channel = state.channels.get(channelId);
    if (!channel) return;
    stopTyping();
    if (state.currentId !== channelId) state.readFrom = { channelId, seenId: channel.seen_message_id || 0 };
    state.currentId = channelId;
    history.replaceState(null, "", `#channel-${channelId}`);
    document.body.classList.add("show-conversation");
    const composer = $("[data-testid=composer]");
    composer.hidden = false;
    actions.cancelReply();
    $("[data-testid=composer-input]").placeholder = `Message ${channel.channel_type === "chat" ? "" : "#"}${channelName(channel)}`;
    renderSidebar();
    renderHeader();
    renderTyping();
    refreshAttachments();
    const entry = thread(channelId);
    if (!entry.loaded) {
        messagesBox().replaceChildren(h("div", { class: "loading", text: "Loading messages…" }));
        await attempt(() => loadHistory(channelId));
    }
    if (state.currentId !== channelId) return;
    renderMessages();
    markSeen();
    if (window.matchMedia("(min-width: 721px)").matches) $("[data-testid=composer-input]").focus();
}

/** Tell the server the open channel has been read, which clears its badge
 * here and in the user's other tabs. */
function markSeen() {
    const channel = state.channels.get(state.currentId);
    if (!channel || document.visibilityState !== "visible") return;
    const entry = thread(channel.id);
    const newest = entry.messages.length ? entry.messages[entry.messages.length - 1].id : 0;
    const hadUnread = channel.message_unread_counter > 0;
    channel.message_unread_counter = 0;
    if (hadUnread) renderSidebar();
    if (!newest || newest <= channel.seen_message_id) return;
    channel.seen_message_id = newest;
    attempt(() => rpc("/mail/channel/set_last_seen_message", { channel_id: channel.id, last_message_id: newest }));
}

// ----------------------------------------------------------------- composer

function composerInput() {
    return $("[data-testid=composer-input]");
}

function autoGrow() {
    const input = composerInput();
    input.style.height = "auto";
    input.style.height = `${Math.min(input.scrollHeight, 200)}px`;
}

function announceTyping(channelId, isTyping) {
    attempt(() => rpc("/mail/channel/notify_typing", { channel_id: channelId, is_typing: isTyping }));
}

function onComposerInput() {
    autoGrow();
    actions.onInput(composerInput());
    const channelId = state.currentId;
    if (!channelId) return;
    if (!composerInput().value.trim()) {
        stopTyping();
        return;
    }
    const now = Date.now();
    if (!composerState.announced || composerState.channelId !== channelId
            || now - composerState.announcedAt > TYPING_REFRESH_MS) {
        if (composerState.announced && composerState.channelId !== channelId) stopTyping();
        announceTyping(channelId, true);
        Object.assign(composerState, { channelId, announced: true, announcedAt: now });
    }
    clearTimeout(composerState.idleTimer);
    composerState.idleTimer = setTimeout(stopTyping, TYPING_IDLE_MS);
}

function stopTyping() {
    clearTimeout(composerState.idleTimer);
    if (composerState.announced) {
        announceTyping(composerState.channelId, false);
        composerState.announced = false;
    }
}

async function sendMessage(event) {
    event.preventDefault();
    const input = composerInput();
    const text = input.value;
    const channelId = state.currentId;
    const uploads = pendingUploads();
    if (uploads.busy) {
        toast("Wait for the files to finish uploading.");
        return;
    }
    if ((!text.trim() && !uploads.ids.length) || !channelId || composerState.sending) return;
    stopTyping();
    composerState.sending = true;
    input.disabled = true;
    $("[data-testid=composer-send]").disabled = true;
    $("[data-testid=composer]").classList.add("sending");
    const message = await attempt(() => rpc("/mail/message/post", {
        thread_model: "mail.channel",
        thread_id: channelId,
        post_data: { ...actions.postData(text), attachment_ids: uploads.ids },
    }));
    composerState.sending = false;
    input.disabled = false;
    $("[data-testid=composer-send]").disabled = false;
    $("[data-testid=composer]").classList.remove("sending");
    if (message) {
        if (input.value === text) input.value = "";
        posted(uploads.ids);
        actions.sent();
        autoGrow();
        receiveMessage(channelId, message);
    }
    if (state.currentId === channelId) input.focus();
}

function onComposerKey(event) {
    if (actions.onKey(event, composerInput())) return;
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("[data-testid=composer]").requestSubmit();
    }
}

// ------------------------------------------------------------------ typing

function setPeerTyping(channelId, partnerId, name, isTyping) {
    let peers = state.typing.get(channelId);
    if (!peers) {
        peers = new Map();
        state.typing.set(channelId, peers);
    }
    const previous = peers.get(partnerId);
    if (previous) clearTimeout(previous.timer);
    if (isTyping) {
        const timer = setTimeout(() => setPeerTyping(channelId, partnerId, name, false), TYPING_PEER_TIMEOUT_MS);
        peers.set(partnerId, { name, timer });
    } else {
        peers.delete(partnerId);
    }
    if (channelId === state.currentId) renderTyping();
}

function renderTyping() {
    const node = $("[data-testid=typing-indicator]");
    const peers = [...(state.typing.get(state.currentId) || new Map()).values()].map((peer) => peer.name);
    node.replaceChildren();
    if (!peers.length) return;
    let text;
    if (peers.length === 1) text = `${peers[0]} is typing…`;
    else if (peers.length === 2) text = `${peers[0]} and ${peers[1]} are typing…`;
    else text = `${peers[0]}, ${peers[1]} and ${peers.length - 2} more are typing…`;
    node.append(h("span", { class: "dots", "aria-hidden": "true" }, h("i"), h("i"), h("i")), h("span", { text }));
}

// --------------------------------------------------------------------- bus

function receiveMessage(channelId, message) {
    const channel = state.channels.get(channelId);
    if (!channel) return;
    const author = authorOf(message);
    const mine = author.id === state.user.partnerId;
    const isNew = message.id > channel.last_message_id;
    channel.last_message_id = Math.max(channel.last_message_id, message.id);
    setPeerTyping(channelId, author.id, author.name, false);
    const entry = state.threads.get(channelId);
    const open = channelId === state.currentId;
    // A first poll replays recent notifications; one older than the loaded
    // page would leave a hole in the history, and comes back with paging.
    const beforePage = entry && entry.hasOlder && entry.messages.length && message.id < entry.messages[0].id;
    if (entry && !beforePage) {
        const stick = mine || isNearBottom(messagesBox());
        const added = mergeMessages(entry, [message]);
        if (added && open && entry.loaded) renderMessages({ keep: stick ? "bottom" : "position" });
    }
    const elsewhere = !open || document.visibilityState !== "visible";
    if (mine) {
        channel.seen_message_id = Math.max(channel.seen_message_id, message.id);
    } else if (elsewhere) {
        // A channel list re-read meanwhile may count this message already.
        if (isNew) channel.message_unread_counter += 1;
        if (message.id > channel.seen_message_id && state.notified.take(message.id)) {
            notifyMessage({
                title: channelName(channel), tag: `channel-${channelId}`, author: author.name, html: message.body,
                isLeader: bus.isLeader,
                onClick: () => openChannel(channelId),
            });
        }
    } else if (open && isNearBottom(messagesBox())) {
        markSeen();
    }
    renderSidebar();
}

const handlers = {
    "mail.channel/new_message": (payload) => {
        if (!state.channels.has(payload.id)) {
            refreshChannels();
            return;
        }
        receiveMessage(payload.id, payload.message);
    },
    "mail.channel.partner/typing_status": (payload) => {
        if (payload.partner_id === state.user.partnerId) return;
        setPeerTyping(payload.channel_id, payload.partner_id, payload.partner_name, Boolean(payload.is_typing));
    },
    "mail.channel.partner/seen": (payload) => {
        const channel = state.channels.get(payload.channel_id);
        if (!channel) return;
        if (payload.partner_id !== state.user.partnerId) {
            const before = channel.seenBy.get(payload.partner_id) || 0;
            channel.seenBy.set(payload.partner_id, Math.max(before, payload.last_message_id || 0));
            if (channel.id === state.currentId) renderSeenStatus();
            return;
        }
        channel.seen_message_id = Math.max(channel.seen_message_id, payload.last_message_id);
        if (channel.seen_message_id >= channel.last_message_id && channel.message_unread_counter) {
            channel.message_unread_counter = 0;
            renderSidebar();
        }
    },
    "mail.channel/last_interest_dt_changed": (payload) => {
        const channel = state.channels.get(payload.id);
        if (!channel) return;
        channel.last_interest_dt = payload.last_interest_dt;
        renderSidebar();
    },
    "mail.channel/joined": (payload) => joinedChannel(payload),
    "mail.channel/leave": (payload) => leftChannel(payload.id),
    "mail.channel/insert": (payload) => {
        const channel = state.channels.get(payload.id);
        if (!channel) return;
        Object.assign(channel, payload);
        renderSidebar();
        if (channel.id === state.currentId) renderHeader();
    },
    "mail.message/insert": (payload) => actions.update(payload),
    "mail.message/delete": (payload) => actions.remove(payload.message_ids || []),
    "res.users/session_ended": () => checkSession(),
    "bus/im_status": (payload) => presenceUpdate(payload),
    "bus/outdated": () => resync(),
};

/** A channel the user was added to. The poll that brought this news was
 * not yet listening to the channel, so messages posted there meanwhile
 * may never come on the bus: re-read the channel list for them. */
function joinedChannel(info) {
    if (!info || info.id === undefined) return;
    const known = state.channels.has(info.id);
    upsertChannel(info);
    renderSidebar();
    if (info.id === state.currentId) renderHeader();
    if (!known && state.currentId === null) openChannel(info.id);
    refreshChannels();
}

function leftChannel(channelId) {
    if (!state.channels.delete(channelId)) return;
    state.threads.delete(channelId);
    if (state.currentId === channelId) {
        state.currentId = null;
        $("[data-testid=composer]").hidden = true;
        renderHeader();
        renderMessages();
    }
    renderSidebar();
}

/** Presence changes: pushed one at a time on the bus, or as the list
 * ``/longpolling/im_status`` answers. */
function presenceUpdate(payload) {
    const updates = Array.isArray(payload) ? payload : [payload];
    let changed = false;
    for (const update of updates) {
        const partnerId = update.partner_id !== undefined ? update.partner_id : update.id;
        if (partnerId !== undefined && update.im_status) changed = setImStatus(partnerId, update.im_status) || changed;
    }
    if (changed) renderPresence();
}

function renderPresence() {
    renderSidebar();
    renderHeader();
}

/** Notification types this page does not know are ignored: a newer
 * server may send more than this client understands. */
function dispatch({ type, payload }) {
    const handler = handlers[type];
    if (handler) handler(payload || {});
}

const CONNECTION_TITLES = { online: "Connected", offline: "Reconnecting…", connecting: "Connecting…" };
const TRANSPORT_NAMES = { websocket: "WebSocket", longpolling: "long-polling" };

function setConnection(status) {
    const node = $("[data-testid=connection-status]");
    node.dataset.state = status;
    titleConnection(node);
}

/** How the bus reaches the server, for whoever hovers the indicator. */
function setTransport(kind) {
    const node = $("[data-testid=connection-status]");
    if (!TRANSPORT_NAMES[kind]) return;
    node.dataset.transport = kind;
    titleConnection(node);
}

function titleConnection(node) {
    const title = CONNECTION_TITLES[node.dataset.state];
    const via = TRANSPORT_NAMES[node.dataset.transport];
    node.title = via && node.dataset.state !== "connecting" ? `${title} (${via})` : title;
}

/** What the bus client tells every tab, whichever tab polls. A handler that
 * throws is reported as an uncaught error, and the next notification still
 * comes. */
function listenToBus() {
    bus.addEventListener("notification", ({ detail }) => {
        if (state.early) state.early.push(detail);
        else if (state.user) dispatch(detail);
    });
    // Notifications were lost; a session still loading reads fresh state anyway.
    bus.addEventListener("outdated", () => {
        if (state.user && !state.early) resync();
    });
    bus.addEventListener("connection", ({ detail }) => {
        if (!state.user) return;
        const wasOffline = $("[data-testid=connection-status]").dataset.state === "offline";
        setConnection(detail.state);
        // Presence changes pushed during the outage were never heard.
        if (wasOffline && detail.state === "online") refreshImStatus();
    });
    bus.addEventListener("error", ({ detail }) => {
        if (detail.error.sessionExpired) sessionLost();
    });
    bus.addEventListener("transport", ({ detail }) => setTransport(detail.transport));
}

// ----------------------------------------------------------------- session

async function refreshChannels() {
    const generation = state.generation;
    const info = await attempt(() => rpc("/mail/init_messaging", {}));
    if (!info || generation !== state.generation) return;
    applyInitMessaging(info);
    renderSidebar();
    renderHeader();
    markSeen();
}

function applyInitMessaging(info) {
    const seen = new Set();
    for (const channelInfo of info.channels || []) {
        upsertChannel(channelInfo);
        seen.add(channelInfo.id);
    }
    for (const channelId of [...state.channels.keys()]) {
        if (!seen.has(channelId)) leftChannel(channelId);
    }
}

/** After ``bus/outdated`` notifications were lost: reload the channel list
 * and the open history from scratch instead of trusting local state. */
async function resync() {
    const generation = state.generation;
    const info = await attempt(() => rpc("/mail/init_messaging", {}));
    if (!info || generation !== state.generation) return;
    state.threads.clear();
    applyInitMessaging(info);
    renderSidebar();
    renderHeader();
    if (state.currentId !== null) {
        await attempt(() => loadHistory(state.currentId));
        renderMessages();
        markSeen();
    }
}

async function refreshImStatus() {
    const ids = [...state.partners.keys()].filter((id) => id !== (state.user && state.user.partnerId));
    if (!ids.length) return;
    const generation = state.generation;
    const statuses = await attempt(() => rpc("/longpolling/im_status", { partner_ids: ids }));
    if (!Array.isArray(statuses) || generation !== state.generation) return;
    presenceUpdate(statuses);
}

/** The bus joins before the state is read, and what it hears meanwhile is
 * applied after: a tab that follows another's poll gets no replay of what
 * was posted before it joined, so the order must leave no gap. */
async function startSession(uid) {
    const generation = ++state.generation;
    state.early = [];
    bus.start(`${location.host}:${uid}`);
    let info;
    try {
        info = await rpc("/mail/init_messaging", {});
    } catch (error) {
        if (generation === state.generation) {
            state.early = null;
            bus.stop();
        }
        throw error;
    }
    if (generation !== state.generation) return;
    state.user = {
        uid: info.current_user_id,
        partnerId: info.current_partner.id,
        name: info.current_partner.name,
    };
    rememberPartner(info.current_partner);
    applyInitMessaging(info);
    state.notified.restart(Math.max(0, ...[...state.channels.values()].map((channel) => channel.last_message_id || 0)));
    $("#login").hidden = true;
    $("#shell").hidden = false;
    const me = $(".me");
    $(".me-avatar", me).replaceChildren(avatar(state.user.partnerId, state.user.name, { size: "avatar-small", status: "online" }));
    $(".me-name", me).textContent = state.user.name;
    renderSidebar();
    renderHeader();
    renderMessages();
    setConnection(bus.connection === "offline" ? "offline" : "online");
    setTransport(bus.transport);
    const early = state.early;
    state.early = null;
    for (const notification of early) dispatch(notification);
    clearInterval(state.imStatusTimer);
    state.imStatusTimer = setInterval(refreshImStatus, IM_STATUS_REFRESH_MS);
    const fromHash = Number((location.hash.match(/^#channel-(\d+)$/) || [])[1]);
    const first = sortedChannels(false)[0] || sortedChannels(true)[0];
    const target = state.channels.has(fromHash) ? fromHash : first && first.id;
    if (target !== undefined) await openChannel(target);
}

function resetSession() {
    state.generation += 1;
    bus.stop();
    clearInterval(state.imStatusTimer);
    clearTimeout(composerState.idleTimer);
    composerState.announced = false;
    for (const peers of state.typing.values()) for (const peer of peers.values()) clearTimeout(peer.timer);
    Object.assign(state, {
        user: null, partners: new Map(), channels: new Map(), threads: new Map(), typing: new Map(),
        currentId: null, readFrom: null, early: null, imStatusTimer: null,
    });
    $("[data-testid=typing-indicator]").replaceChildren();
    composerInput().value = "";
}

function showLogin(message = "") {
    $("#shell").hidden = true;
    $("#login").hidden = false;
    const error = $("[data-testid=login-error]");
    error.textContent = message;
    error.hidden = !message;
    document.title = "Sign in · imbus chat";
    $("[data-testid=login-input]").focus();
}

/** Some sessions of this user ended (a logout, a new password): this
 * one too, unless it is the one that changed the password. */
async function checkSession() {
    const info = await attempt(() => rpc("/web/session/get_session_info", {}));
    if (info && !info.uid) sessionLost();
}

function sessionLost() {
    if (!state.user) return;
    resetSession();
    showLogin("Your session has expired. Please sign in again.");
}

async function login(event) {
    event.preventDefault();
    const form = event.currentTarget;
    const submit = $("[data-testid=login-submit]", form);
    const error = $("[data-testid=login-error]", form);
    submit.disabled = true;
    error.hidden = true;
    try {
        const session = await rpc("/web/session/authenticate", {
            login: form.elements.login.value.trim(),
            password: form.elements.password.value,
        });
        form.elements.password.value = "";
        await startSession(session.uid);
    } catch (failure) {
        const wrong = failure instanceof RpcError && failure.data.name === "odoo.exceptions.AccessDenied";
        error.textContent = wrong ? "Wrong login or password." : explain(failure);
        error.hidden = false;
    } finally {
        submit.disabled = false;
    }
}

async function logout() {
    stopTyping();
    try {
        await rpc("/web/session/destroy", {});
    } catch (_) {
        // Signing out locally is what the user asked for, even offline.
    }
    resetSession();
    history.replaceState(null, "", location.pathname);
    showLogin();
}

// ----------------------------------------------------------------- dialogs

const dialog = $("dialog.modal");

function openDialog(title, body, actions = []) {
    $(".modal-title", dialog).textContent = title;
    $(".modal-body", dialog).replaceChildren(...[body].flat());
    $(".modal-footer", dialog).replaceChildren(...actions);
    $(".modal-footer", dialog).hidden = !actions.length;
    if (!dialog.open) dialog.showModal();
    const first = $(".modal-body input, .modal-body button", dialog);
    if (first) first.focus();
}

function closeDialog() {
    if (dialog.open) dialog.close();
}

function createChannelDialog() {
    const name = h("input", { name: "name", required: true, maxlength: 120, placeholder: "e.g. marketing", "data-testid": "new-channel-name" });
    const description = h("input", { name: "description", placeholder: "What is it about? (optional)", "data-testid": "new-channel-description" });
    const privacy = (value, label, hint, checked) => h("label", { class: "choice" },
        h("input", { type: "radio", name: "privacy", value, checked, "data-testid": `privacy-${value}` }),
        h("span", {}, h("strong", { text: label }), h("small", { text: hint })));
    const submit = h("button", { type: "submit", class: "btn btn-primary", "data-testid": "create-channel-submit", text: "Create channel" });
    const form = h("div", { class: "form" },
        h("label", { class: "field" }, "Name", name),
        h("label", { class: "field" }, "Description", description),
        h("fieldset", { class: "choices" },
            h("legend", { text: "Who can join" }),
            privacy("public", "Public", "Anyone can find and join it.", true),
            privacy("private", "Private", "Only people you invite.", false)));
    openDialog("Create a channel", form, [
        h("button", { type: "button", class: "btn btn-ghost", text: "Cancel", onclick: closeDialog }),
        submit,
    ]);
    dialog.onsubmit = async (event) => {
        event.preventDefault();
        const value = name.value.trim();
        if (!value) return;
        submit.disabled = true;
        const chosen = $("input[name=privacy]:checked", dialog).value;
        const params = { name: value, privacy: chosen };
        if (description.value.trim()) params.description = description.value.trim();
        const info = await attempt(() => rpc("/mail/channel/create", params));
        submit.disabled = false;
        if (!info) return;
        closeDialog();
        upsertChannel(info);
        openChannel(info.id);
    };
}

async function browseChannelsDialog() {
    dialog.onsubmit = (event) => event.preventDefault();
    const filter = h("input", { type: "search", placeholder: "Filter channels", "data-testid": "browse-filter" });
    const list = h("ul", { class: "pick-list", "data-testid": "public-channels" }, h("li", { class: "list-empty", text: "Loading…" }));
    openDialog("Browse channels", [filter, list]);
    const channels = await attempt(() => rpc("/mail/channel/search_public", {}));
    if (!channels) return;
    const draw = () => {
        const term = filter.value.trim().toLowerCase();
        const shown = channels.filter((c) => (c.name || "").toLowerCase().includes(term));
        list.replaceChildren(...shown.map((info) => {
            const member = info.is_member || state.channels.has(info.id);
            const count = Array.isArray(info.members) ? info.members.length : 0;
            const action = h("button", {
                type: "button", class: member ? "btn btn-ghost btn-small" : "btn btn-primary btn-small",
                "data-testid": member ? "open-public-channel" : "join-channel",
                text: member ? "Open" : "Join",
                onclick: () => (member ? (closeDialog(), openChannel(info.id)) : joinChannel(info, action)),
            });
            return h("li", { class: "pick", "data-testid": "public-channel", "data-channel-name": info.name },
                h("span", { class: "channel-icon" }, icon(ICON_HASH)),
                h("span", { class: "pick-main" },
                    h("strong", { text: info.name }),
                    h("small", { text: [info.description, `${count} ${count === 1 ? "member" : "members"}`].filter(Boolean).join(" · ") })),
                action);
        }));
        if (!shown.length) list.append(h("li", { class: "list-empty", text: "No public channel matches." }));
    };
    filter.addEventListener("input", draw);
    draw();
}

async function joinChannel(info, button) {
    button.disabled = true;
    const joined = await attempt(() => rpc("/mail/channel/join", { channel_id: info.id }));
    button.disabled = false;
    if (joined === undefined) return;
    closeDialog();
    if (joined && joined.id === info.id) upsertChannel(joined);
    else if (!state.channels.has(info.id)) upsertChannel(info);
    await refreshChannels();
    openChannel(info.id);
}

/** A partner picker shared by "start a conversation" and "add people". */
function partnerPicker({ title, exclude = [], onPick, testid }) {
    dialog.onsubmit = (event) => event.preventDefault();
    const search = h("input", { type: "search", placeholder: "Search people by name", "data-testid": "partner-search" });
    const list = h("ul", { class: "pick-list", "data-testid": testid });
    let sequence = 0;
    let debounce = null;
    const run = async () => {
        const mine = ++sequence;
        const partners = await attempt(() => rpc("/mail/partner/search", { term: search.value.trim() }));
        if (!partners || mine !== sequence) return;
        const shown = partners.filter((p) => !exclude.includes(p.id));
        list.replaceChildren(...shown.map((partner) => {
            rememberPartner(partner);
            return h("li", {}, h("button", {
                type: "button", class: "pick pick-button", "data-testid": "partner-result", "data-partner-name": partner.name,
                onclick: (event) => onPick(partner, event.currentTarget),
            },
            avatar(partner.id, partner.name, { size: "avatar-small", status: partner.im_status }),
            h("span", { class: "pick-main" }, h("strong", { text: partner.name }),
                h("small", { text: { online: "Online", away: "Away" }[partner.im_status] || "Offline" }))));
        }));
        if (!shown.length) list.append(h("li", { class: "list-empty", text: "Nobody matches." }));
    };
    search.addEventListener("input", () => {
        clearTimeout(debounce);
        debounce = setTimeout(run, 200);
    });
    openDialog(title, [search, list]);
    run();
}

function startChatDialog() {
    partnerPicker({
        title: "Start a conversation",
        exclude: [state.user.partnerId],
        testid: "partner-results",
        onPick: async (partner, button) => {
            button.disabled = true;
            const info = await attempt(() => rpc("/mail/channel/get_or_create_chat", { partner_ids: [partner.id] }));
            button.disabled = false;
            if (!info) return;
            closeDialog();
            upsertChannel(info);
            openChannel(info.id);
        },
    });
}

function addMembersDialog() {
    const channel = state.channels.get(state.currentId);
    if (!channel) return;
    partnerPicker({
        title: `Add people to ${channelName(channel)}`,
        exclude: channel.memberIds,
        testid: "partner-results",
        onPick: async (partner, button) => {
            button.disabled = true;
            const answer = await attempt(() => rpc("/mail/channel/add_members", { channel_id: channel.id, partner_ids: [partner.id] }));
            button.disabled = false;
            if (answer === undefined) return;
            closeDialog();
            if (answer && answer.id === channel.id) upsertChannel(answer);
            else await refreshChannels();
            toast(`${partner.name} was added.`, "success");
            renderHeader();
        },
    });
}

// ------------------------------------------------------------------ wiring

function toggleMembers() {
    const panel = $(".members");
    panel.hidden = !panel.hidden;
    $("[data-testid=member-count]").setAttribute("aria-pressed", String(!panel.hidden));
}

function onAction(event) {
    const target = event.target.closest("[data-action]");
    if (!target) return;
    const action = target.dataset.action;
    if (action === "create-channel") createChannelDialog();
    else if (action === "browse") browseChannelsDialog();
    else if (action === "start-chat") startChatDialog();
    else if (action === "add-members") addMembersDialog();
    else if (action === "logout") logout();
    else if (action === "close-dialog") closeDialog();
    else if (action === "show-sidebar") document.body.classList.remove("show-conversation");
    else if (action === "toggle-members") toggleMembers();
}

async function boot() {
    document.addEventListener("click", onAction);
    listenToBus();
    document.addEventListener("visibilitychange", () => {
        if (document.visibilityState === "visible") markSeen();
    });
    $("[data-testid=login-form]").addEventListener("submit", login);
    setUpBell($("[data-testid=notifications-bell]"));
    $("[data-testid=composer]").addEventListener("submit", sendMessage);
    setupComposer({
        channelId: () => state.currentId, onError: (text) => toast(text),
        rpc: (route, params) => attempt(() => rpc(route, params)),
    });
    composerInput().addEventListener("input", onComposerInput);
    composerInput().addEventListener("keydown", onComposerKey);
    messagesBox().addEventListener("scroll", () => {
        if (messagesBox().scrollTop < 60) loadOlder();
        if (isNearBottom(messagesBox())) markSeen();
    }, { passive: true });
    dialog.addEventListener("close", () => { dialog.onsubmit = null; });
    try {
        const info = await rpc("/web/session/get_session_info", {});
        if (info && info.uid) {
            await startSession(info.uid);
            return;
        }
    } catch (error) {
        if (!(error instanceof RpcError && error.sessionExpired)) {
            showLogin(explain(error));
            return;
        }
    }
    showLogin();
}

boot();
