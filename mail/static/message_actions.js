/*
 * What one can do with a message once it is there: reply to it, react to it,
 * edit or delete one's own, and mention people while writing. The server
 * renders bodies (links, mentions, formatting), so the composer sends plain
 * text (``plain_text``: a typed "<b>" shows as typed) and only adds who is
 * mentioned and what is answered.
 */

import { h } from "./dom.js";

export const EMOJIS = ["👍", "❤️", "😂", "🎉", "😮", "😢", "🙏", "👀"];

/**
 * @param {object} kit  {rpc, attempt, state, render, membersOf}
 *   render() redraws the open thread; membersOf(channelId) lists the
 *   partners ({id, name}) who can be mentioned there.
 */
export function createMessageActions(kit) {
    const { rpc, attempt, state } = kit;
    const composer = { replyTo: null, mentions: new Map(), suggestions: [] };

    function findMessage(messageId) {
        for (const entry of state.threads.values()) {
            const message = entry.messages.find((m) => m.id === messageId);
            if (message) return { entry, message };
        }
        return null;
    }

    // ------------------------------------------------------------ the message

    function decorate(article, message, mine) {
        const main = article.querySelector(".message-main");
        const body = article.querySelector("[data-testid=message-body]");
        for (const link of body.querySelectorAll("a.o_mail_redirect")) {
            link.classList.add("mention");
            if (Number(link.dataset.oeId) === state.user.partnerId) link.classList.add("mention-me");
            link.addEventListener("click", (event) => event.preventDefault());
        }
        if (Array.isArray(message.parent_id)) main.prepend(parentQuote(message.parent_id));
        const groups = message.messageReactionGroups || [];
        if (groups.length) main.append(reactionPills(message.id, groups));
        article.append(toolbar(message, mine));
    }

    function parentQuote([parentId, preview]) {
        return h("button", {
            type: "button", class: "reply-quote", "data-testid": "reply-quote", "data-parent-id": parentId,
            text: `↳ ${preview}`,
            onclick: () => {
                const target = document.querySelector(`[data-message-id="${parentId}"]`);
                if (!target) return;
                target.scrollIntoView({ block: "center", behavior: "smooth" });
                target.classList.add("flash");
                setTimeout(() => target.classList.remove("flash"), 1500);
            },
        });
    }

    function reactionPills(messageId, groups) {
        return h("div", { class: "reactions", "data-testid": "reactions" }, ...groups.map((group) => {
            const mineToo = group.partners.some((p) => p.id === state.user.partnerId);
            return h("button", {
                type: "button", class: "reaction" + (mineToo ? " reacted" : ""), "data-testid": "reaction",
                "data-content": group.content, title: group.partners.map((p) => p.name).join(", "),
                onclick: () => toggleReaction(messageId, group.content, mineToo),
            }, h("span", { text: group.content }), h("span", { class: "count", text: String(group.count) }));
        }));
    }

    function toolbar(message, mine) {
        const bar = h("div", { class: "message-actions", "data-testid": "message-actions" },
            h("button", { type: "button", class: "btn btn-ghost btn-small", "data-testid": "reply",
                text: "Reply", onclick: () => startReply(message) }),
            h("button", { type: "button", class: "btn btn-ghost btn-small", "data-testid": "react",
                text: "☺+", "aria-label": "React", onclick: () => picker.hidden = !picker.hidden }));
        if (mine) {
            bar.append(
                h("button", { type: "button", class: "btn btn-ghost btn-small", "data-testid": "edit",
                    text: "Edit", onclick: () => startEdit(message) }),
                h("button", { type: "button", class: "btn btn-ghost btn-small", "data-testid": "delete",
                    text: "Delete", onclick: () => deleteMessage(message) }));
        }
        const picker = h("div", { class: "emoji-picker", "data-testid": "emoji-picker", hidden: true },
            ...EMOJIS.map((emoji) => h("button", {
                type: "button", "data-testid": "emoji", text: emoji,
                onclick: () => {
                    picker.hidden = true;
                    const group = (message.messageReactionGroups || []).find((g) => g.content === emoji);
                    toggleReaction(message.id, emoji, Boolean(group && group.partners.some(
                        (p) => p.id === state.user.partnerId)));
                },
            })));
        bar.append(picker);
        return bar;
    }

    async function toggleReaction(messageId, content, remove) {
        const route = remove ? "/mail/message/remove_reaction" : "/mail/message/add_reaction";
        const answer = await attempt(() => rpc(route, { message_id: messageId, content }));
        if (answer) update(answer);
    }

    function startEdit(message) {
        const article = document.querySelector(`[data-message-id="${message.id}"]`);
        const body = article && article.querySelector("[data-testid=message-body]");
        if (!body) return;
        const input = h("textarea", { class: "edit-input", "data-testid": "edit-input" });
        input.value = body.innerText;
        const save = async () => {
            const answer = await attempt(() => rpc("/mail/message/update_content",
                { message_id: message.id, body: input.value, attachment_ids: [], plain_text: true }));
            if (answer && answer.message_ids) remove(answer.message_ids);
            else if (answer) update(answer);
        };
        input.addEventListener("keydown", (event) => {
            if (event.key === "Enter" && !event.shiftKey) {
                event.preventDefault();
                save();
            } else if (event.key === "Escape") {
                kit.render();
            }
        });
        body.replaceWith(input);
        input.focus();
    }

    async function deleteMessage(message) {
        if (!window.confirm("Delete this message?")) return;
        const answer = await attempt(() => rpc("/mail/message/update_content",
            { message_id: message.id, body: "", attachment_ids: [] }));
        if (answer) remove(answer.message_ids);
    }

    /** ``mail.message/insert``: fields of a message that changed. */
    function update(payload) {
        const found = findMessage(payload.id);
        if (!found) return;
        Object.assign(found.message, payload);
        kit.render();
    }

    /** ``mail.message/delete`` */
    function remove(messageIds) {
        const gone = new Set(messageIds);
        for (const entry of state.threads.values()) {
            entry.messages = entry.messages.filter((m) => !gone.has(m.id));
            for (const message of entry.messages) {
                if (Array.isArray(message.parent_id) && gone.has(message.parent_id[0])) message.parent_id = false;
            }
        }
        kit.render();
    }

    // ------------------------------------------------------------ the composer

    function startReply(message) {
        const author = Array.isArray(message.author_id) ? message.author_id[1] : "";
        composer.replyTo = message.id;
        const bar = document.querySelector("[data-testid=replying-to]");
        bar.replaceChildren(h("span", { text: `Replying to ${author}` }),
            h("button", { type: "button", class: "btn btn-ghost btn-small", "data-testid": "cancel-reply",
                text: "×", "aria-label": "Cancel reply", onclick: cancelReply }));
        bar.hidden = false;
        document.querySelector("[data-testid=composer-input]").focus();
    }

    function cancelReply() {
        composer.replyTo = null;
        const bar = document.querySelector("[data-testid=replying-to]");
        bar.hidden = true;
        bar.replaceChildren();
    }

    /** ``post_data`` for what was typed; the reply and mentions are used up. */
    function postData(text) {
        const partnerIds = [...composer.mentions].filter(([name]) => text.includes(`@${name}`)).map(([, id]) => id);
        const data = { body: text.trim(), message_type: "comment", subtype_xmlid: "mail.mt_comment",
            partner_ids: partnerIds, plain_text: true };
        if (composer.replyTo) data.parent_id = composer.replyTo;
        return data;
    }

    function sent() {
        composer.mentions.clear();
        cancelReply();
    }

    /** The "@term" just before the caret, if one is being typed. */
    function mentionTerm(input) {
        const before = input.value.slice(0, input.selectionStart);
        const match = /(?:^|\s)@([^\s@]{0,30})$/.exec(before);
        return match ? match[1] : null;
    }

    function onInput(input) {
        const list = document.querySelector("[data-testid=mention-suggestions]");
        const term = mentionTerm(input);
        composer.suggestions = term === null ? [] : kit.membersOf(state.currentId)
            .filter((p) => p.id !== state.user.partnerId && p.name.toLowerCase().includes(term.toLowerCase()))
            .slice(0, 6);
        list.replaceChildren(...composer.suggestions.map((partner) => h("li", {},
            h("button", { type: "button", "data-testid": "mention-suggestion", text: partner.name,
                onmousedown: (event) => {
                    event.preventDefault();
                    pick(input, partner);
                } }))));
        list.hidden = !composer.suggestions.length;
    }

    function pick(input, partner) {
        const caret = input.selectionStart;
        const before = input.value.slice(0, caret).replace(/@([^\s@]*)$/, `@${partner.name} `);
        input.value = before + input.value.slice(caret);
        input.setSelectionRange(before.length, before.length);
        composer.mentions.set(partner.name, partner.id);
        onInput(input);
        input.focus();
    }

    /** Enter or Tab picks the first suggestion while the list is open. */
    function onKey(event, input) {
        if (!composer.suggestions.length || !["Enter", "Tab"].includes(event.key)) return false;
        event.preventDefault();
        pick(input, composer.suggestions[0]);
        return true;
    }

    return { decorate, update, remove, postData, sent, cancelReply, onInput, onKey };
}
