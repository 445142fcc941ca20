/**
 * Desktop notifications for messages that arrive where the user is not
 * looking (another channel, or a hidden tab). Permission is asked from a
 * click on the bell, since browsers ignore requests made without a user
 * gesture. Every tab of a user receives each message; only the tab that
 * polls for them all (the bus leader) shows it, so one message makes one
 * notification.
 */

/**
 * Which messages deserve a notification: each at most once, and none the
 * page knew of when its session loaded (a first poll replays recent
 * notifications). The decision is the message's own, not the count's: a
 * channel list re-read from the server may already hold a message whose
 * notification is still on its way, and that message was never announced.
 */
export class NotificationLedger {
    constructor() {
        this.restart(0);
    }

    /** @param {number} knownUpTo the newest message id the loaded session already shows */
    restart(knownUpTo) {
        this.knownUpTo = knownUpTo;
        this.offered = new Set();
    }

    /** Whether message ``id`` is news not offered before; it is not offered again. */
    take(id) {
        if (!(id > this.knownUpTo) || this.offered.has(id)) return false;
        this.offered.add(id);
        return true;
    }
}

const supported = () => typeof Notification === "function";

/** @param {HTMLButtonElement} button the bell; hidden where notifications cannot work */
export function setUpBell(button) {
    const render = () => {
        button.hidden = !supported() || Notification.permission === "denied";
        button.classList.toggle("on", supported() && Notification.permission === "granted");
        button.title = supported() && Notification.permission === "granted"
            ? "Desktop notifications are on" : "Turn on desktop notifications";
    };
    button.addEventListener("click", async () => {
        if (supported() && Notification.permission === "default") await Notification.requestPermission();
        render();
    });
    render();
}

/**
 * @param {object} message
 * @param {string} message.title the channel's name
 * @param {string} message.tag the channel's own: its next message replaces this one, another channel's does not
 * @param {string} message.author
 * @param {string} message.html the message body as the server sent it
 * @param {boolean} message.isLeader whether this tab is the one that shows notifications
 * @param {() => void} message.onClick
 */
export function notifyMessage({ title, tag, author, html, isLeader, onClick }) {
    if (!isLeader || !supported() || Notification.permission !== "granted") return;
    const text = new DOMParser().parseFromString(html || "", "text/html").body.textContent.trim();
    const notification = new Notification(title, { body: `${author}: ${text}`.slice(0, 200), tag });
    notification.onclick = () => {
        window.focus();
        onClick();
        notification.close();
    };
}
