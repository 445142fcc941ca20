/**
 * Desktop notifications for messages that arrive where the user is not
 * looking (another channel, or a hidden tab). Permission is asked from a
 * click on the bell, since browsers ignore requests made without a user
 * gesture. Every tab of a user receives each message; only the tab that
 * polls for them all (the bus leader) shows it, so one message makes one
 * notification.
 */

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
 * @param {string} message.author
 * @param {string} message.html the message body as the server sent it
 * @param {boolean} message.isLeader whether this tab is the one that shows notifications
 * @param {() => void} message.onClick
 */
export function notifyMessage({ title, author, html, isLeader, onClick }) {
    if (!isLeader || !supported() || Notification.permission !== "granted") return;
    const text = new DOMParser().parseFromString(html || "", "text/html").body.textContent.trim();
    const notification = new Notification(title, { body: `${author}: ${text}`.slice(0, 200), tag: title });
    notification.onclick = () => {
        window.focus();
        onClick();
        notification.close();
    };
}
