/**
 * Where reading stopped: the "new messages" line drawn above the first
 * message the member had not seen when they opened the channel. It stays
 * where it was while they read on, as in Odoo, until they open the channel
 * again.
 */

import { h } from "./dom.js";

/**
 * @param {{id: number, author_id: [number, string]|false}[]} messages the loaded history, oldest first
 * @param {number} seenId the member's `seen_message_id` when the channel was opened
 * @param {number} partnerId the reader, whose own messages are never "new"
 * @returns {number|null} the id of the message the line goes above
 */
export function firstUnreadId(messages, seenId, partnerId) {
    const first = messages.find((message) => message.id > seenId
        && !(Array.isArray(message.author_id) && message.author_id[0] === partnerId));
    return first ? first.id : null;
}

/** The line itself. */
export function unreadSeparator() {
    return h("div", { class: "unread-separator", role: "separator", "data-testid": "unread-separator" },
        h("span", { text: "New messages" }));
}
