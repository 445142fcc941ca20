/**
 * The bus over a WebSocket (`/websocket`), as Odoo 16's client speaks it:
 * a `subscribe` frame carries what a poll's parameters carry (channels,
 * `last`, options), and the server pushes arrays of notifications on the
 * same socket until it closes. It has the shape of `Poller`, so the client
 * can run either.
 *
 * A dropped socket is opened again after the back-off and subscribes from
 * `last`, so nothing is received twice or skipped. A socket that opens and
 * stays quiet is healthy: the server pings it and the browser answers, out
 * of sight of scripts, so there is nothing here to time out.
 *
 * The server closes with 4001 when the session has expired: then it waits,
 * without reconnecting, until it is started again (a new sign-in), since
 * every attempt would be refused the same way.
 */
import { Backoff } from "./backoff.js";
import { RpcError } from "./rpc.js";

export const SOCKET_ROUTE = "/websocket";

/** Close codes the server sends (RFC 6455's, and the bus's own 4001). */
export const CLOSE = Object.freeze({
    NORMAL: 1000,
    GOING_AWAY: 1001,
    UNSUPPORTED: 1003,
    ABNORMAL: 1006,
    POLICY: 1008,
    TOO_BIG: 1009,
    SERVER_ERROR: 1011,
    TRY_AGAIN_LATER: 1013,
    SESSION_EXPIRED: 4001,
});

/** The server refused what this client sent: a bug here, not an outage. */
const REJECTED = new Set([CLOSE.UNSUPPORTED, CLOSE.POLICY, CLOSE.TOO_BIG]);

export class BusSocket {
    /**
     * @param {object} env
     * @param {(url: string) => WebSocket} env.openSocket  `new WebSocket(url)` (or a fake with its
     *   `readyState`, `send`, `close` and `onopen`/`onmessage`/`onclose`/`onerror`)
     * @param {string} env.url
     * @param {{setTimeout: Function, clearTimeout: Function}} [env.timers]
     * @param {() => number} [env.now]
     * @param {Backoff} [env.backoff]
     * @param {() => object} [env.options]  the subscription's `options`, read at every subscribe
     * @param {(notifications: object[]) => void} [env.onNotifications] after `last` has moved past them
     * @param {(state: "online"|"offline") => void} [env.onConnection] on changes only
     * @param {(error: RpcError, retryInMs: number|null) => void} [env.onError] null: no retry
     *   until started again (the session expired)
     */
    constructor({
        openSocket, url, timers = globalThis, now = Date.now, backoff = new Backoff(),
        options = () => ({}), onNotifications = () => {}, onConnection = () => {}, onError = () => {},
    }) {
        Object.assign(this, { openSocket, url, timers, now, backoff, options, onNotifications, onConnection, onError });
        this.last = 0;
        this.channels = [];
        this.connection = "connecting";
        /** Whether a socket has ever opened: the server does speak WebSocket. */
        this.everOpened = false;
        /** Attempts in a row that closed before opening. */
        this.refusals = 0;
        this._run = 0;
        this._running = false;
        this._socket = null; // {ws, openedAt}
        this._retry = null;
    }

    get running() {
        return this._running;
    }

    start() {
        if (this._running) return;
        this._running = true;
        this._connect(++this._run);
    }

    stop() {
        if (!this._running) return;
        this._running = false;
        this._run += 1;
        this.timers.clearTimeout(this._retry);
        this._retry = null;
        this._discard(CLOSE.NORMAL);
    }

    /** Listen to these channels from now on; an open socket subscribes again at once. */
    setChannels(channels) {
        const next = [...new Set(channels)].sort();
        if (next.length === this.channels.length && next.every((name, i) => name === this.channels[i])) return;
        this.channels = next;
        if (this._socket && this._socket.openedAt !== null) this._subscribe();
    }

    _connect(run) {
        let ws;
        try {
            ws = this.openSocket(this.url);
        } catch (error) {
            this.refusals += 1;
            this._failed(run, new RpcError(String(error && error.message || error), { transport: true }));
            return;
        }
        const socket = { ws, openedAt: null };
        this._socket = socket;
        const current = () => run === this._run && this._socket === socket;
        ws.onopen = () => {
            if (!current()) return;
            socket.openedAt = this.now();
            this.everOpened = true;
            this.refusals = 0;
            this._setConnection("online");
            this._subscribe();
        };
        ws.onmessage = (event) => {
            if (current()) this._receive(run, event.data);
        };
        ws.onclose = (event) => {
            if (current()) this._closed(run, socket, event);
        };
        ws.onerror = () => {}; // always followed by a close, which says more
    }

    _subscribe() {
        const frame = { event_name: "subscribe", data: { channels: this.channels, last: this.last, options: this.options() } };
        this._socket.ws.send(JSON.stringify(frame));
    }

    _receive(run, data) {
        const items = parseFrame(data);
        if (!items) {
            this._discard(CLOSE.NORMAL);
            this._failed(run, new RpcError("The server sent a frame that is not a list of notifications.", { transport: true }));
            return;
        }
        const fresh = [];
        for (const item of items) {
            if (!item || !Number.isSafeInteger(item.id) || item.id <= this.last) continue;
            this.last = item.id;
            fresh.push(item);
        }
        this.backoff.reset();
        if (fresh.length) this.onNotifications(fresh);
    }

    _closed(run, socket, { code, reason }) {
        this._socket = null;
        if (socket.openedAt === null) {
            this.refusals += 1;
            this._failed(run, new RpcError("The WebSocket could not be opened.", { data: { close_code: code }, transport: true }));
            return;
        }
        // A socket that lived longer than the longest delay was no retry loop.
        if (this.now() - socket.openedAt >= this.backoff.maxMs) this.backoff.reset();
        if (code === CLOSE.SESSION_EXPIRED) {
            this._setConnection("offline");
            this.onError(sessionExpired(reason), null);
            return;
        }
        const message = reason || `The WebSocket closed (${code}).`;
        this._failed(run, new RpcError(message, { data: { close_code: code }, transport: !REJECTED.has(code) }));
    }

    /** The attempt the back-off is waiting for, now. */
    retryNow() {
        if (this._retry === null) return;
        this.timers.clearTimeout(this._retry);
        this._schedule(this._run, 0);
    }

    /** Offline, an error, then another attempt after the back-off. */
    _failed(run, error) {
        const delay = this.backoff.next();
        this._schedule(run, delay);
        this._setConnection("offline");
        if (run === this._run) this.onError(error, delay);
    }

    _schedule(run, delay) {
        this._retry = this.timers.setTimeout(() => {
            this._retry = null;
            if (run === this._run) this._connect(run);
        }, delay);
    }

    _discard(code) {
        const socket = this._socket;
        this._socket = null;
        if (!socket) return;
        socket.ws.onopen = socket.ws.onmessage = socket.ws.onclose = socket.ws.onerror = null;
        socket.ws.close(code);
    }

    _setConnection(state) {
        if (this.connection === state) return;
        this.connection = state;
        this.onConnection(state);
    }
}

/** A server frame's notifications, or null when it is not a list of them. */
function parseFrame(data) {
    if (typeof data !== "string") return null;
    try {
        const value = JSON.parse(data);
        return Array.isArray(value) ? value : null;
    } catch {
        return null;
    }
}

/** The error a poll gets when the session has expired (Odoo's code 100). */
function sessionExpired(reason) {
    const message = reason || "Session expired";
    return new RpcError(message, { code: 100, data: { name: "odoo.http.SessionExpiredException", message } });
}
