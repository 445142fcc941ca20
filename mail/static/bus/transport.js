/**
 * How the leading tab hears the bus: over a WebSocket (`BusSocket`), by
 * long-polling (`Poller`), or, in "auto", over a WebSocket that gives way to
 * long-polling when the server will not speak it.
 *
 * The server answers `/websocket` with 404 when WebSockets are turned off,
 * and a proxy may refuse the upgrade; a browser tells neither from a network
 * failure, only that the socket closed before it opened. So "auto" falls
 * back after `fallbackAfter` attempts in a row that never opened, for the
 * rest of the client's life, going on from the socket's `last` and channels.
 * Those attempts follow each other at once, since each one only delays the
 * first poll, and they are not reported (no "offline", no error): they are
 * the probe, and the poller reports its own. Once a socket has opened, the
 * server does speak WebSocket, and a later drop (a restart) only reconnects.
 */
import { BusSocket } from "./socket.js";

export const TRANSPORTS = Object.freeze(["auto", "websocket", "longpolling"]);

export class Transport {
    /**
     * @param {object} env
     * @param {"auto"|"websocket"|"longpolling"} env.mode
     * @param {(callbacks: object) => import("./poller.js").Poller} env.createPoller
     * @param {((callbacks: object) => BusSocket)|null} [env.createSocket] needed unless "longpolling"
     * @param {number} [env.fallbackAfter] unopened attempts in a row before "auto" long-polls
     * @param {(notifications: object[]) => void} env.onNotifications
     * @param {(state: "online"|"offline") => void} env.onConnection
     * @param {(error: import("./rpc.js").RpcError, retryInMs: number|null) => void} env.onError
     * @param {(kind: "websocket"|"longpolling") => void} [env.onChange] "auto" fell back
     */
    constructor({
        mode, createPoller, createSocket = null, fallbackAfter = 2,
        onNotifications, onConnection, onError, onChange = () => {},
    }) {
        if (!TRANSPORTS.includes(mode)) throw new RangeError(`transport must be one of ${TRANSPORTS.join(", ")}`);
        if (mode !== "longpolling" && !createSocket) throw new TypeError(`transport "${mode}" needs openSocket and socketUrl`);
        Object.assign(this, { mode, createPoller, fallbackAfter, onNotifications, onConnection, onError, onChange });
        this._active = mode === "longpolling" ? this._poller() : this._socket(createSocket);
    }

    /** What is in use: "websocket" or "longpolling". */
    get kind() {
        return this._active instanceof BusSocket ? "websocket" : "longpolling";
    }

    get running() {
        return this._active.running;
    }

    get last() {
        return this._active.last;
    }

    set last(value) {
        this._active.last = value;
    }

    start() {
        this._active.start();
    }

    stop() {
        this._active.stop();
    }

    setChannels(channels) {
        this._active.setChannels(channels);
    }

    /** Long-poll from now on, if "auto" and no socket has opened yet. */
    fallBack() {
        const socket = this._active;
        if (this.mode !== "auto" || !(socket instanceof BusSocket) || socket.everOpened) return;
        const running = socket.running;
        socket.stop();
        const poller = this._poller();
        poller.last = socket.last;
        poller.setChannels(socket.channels);
        this._active = poller;
        this.onChange(this.kind);
        if (running) poller.start();
    }

    _poller() {
        return this.createPoller({
            onNotifications: (items) => this.onNotifications(items),
            onConnection: (state) => this.onConnection(state),
            onError: (error, retryInMs) => this.onError(error, retryInMs),
        });
    }

    _socket(createSocket) {
        const probing = () => this.mode === "auto" && !socket.everOpened;
        const socket = createSocket({
            onNotifications: (items) => this.onNotifications(items),
            onConnection: (state) => {
                if (state === "online" || !probing()) this.onConnection(state);
            },
            onError: (error, retryInMs) => {
                if (!probing()) this.onError(error, retryInMs);
                else if (socket.refusals >= this.fallbackAfter) this.fallBack();
                else socket.retryNow();
            },
        });
        return socket;
    }
}
