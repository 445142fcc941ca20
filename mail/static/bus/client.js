/**
 * The bus client an application talks to: channels in, events out.
 *
 * It joins the other tabs of the origin (`CrossTab`); the tab elected leader
 * listens to the bus for all of them (`Transport`: a WebSocket, long-polling,
 * or a WebSocket that falls back to long-polling) and relays what it
 * receives, so every tab gets every notification once, in order, whichever
 * tab listens and however often that changes.
 *
 * Events (`addEventListener`), each with a `detail`:
 * - `notification` `{id, type, payload}`: one per notification, in id order;
 * - `outdated` `{id}`: notifications were missed, so the application must
 *   reload its state: the server dropped some this client had not received
 *   (`bus/outdated`), or the tab started again (back from the browser's
 *   back/forward cache) behind the other tabs;
 * - `connection` `{state}`: "online" or "offline" (the poll fails, or the
 *   socket closes, and is retried with back-off), the same in every tab;
 * - `error` `{error, retryInMs}`: a poll or socket failed (an `RpcError`;
 *   check `error.sessionExpired`; `retryInMs` null: no retry until the
 *   client is started again), relayed to every tab;
 * - `transport` `{transport}`: "websocket" or "longpolling", what the
 *   leader uses, in every tab; "auto" fell back to long-polling;
 * - `leader` `{leader}`: this tab started or stopped listening for the others.
 */
import { Backoff } from "./backoff.js";
import { CrossTab } from "./crosstab.js";
import { Poller } from "./poller.js";
import { RpcError } from "./rpc.js";
import { BusSocket } from "./socket.js";
import { Transport } from "./transport.js";

export const OUTDATED = "bus/outdated";

export class BusEvent extends Event {
    constructor(type, detail) {
        super(type);
        this.detail = detail;
    }
}

export class BusClient extends EventTarget {
    /**
     * @param {object} env
     * @param {Function} env.rpc `createRpc()`'s function
     * @param {(name: string) => (BroadcastChannel|null)} [env.openChannel] null: this tab polls alone
     * @param {{setTimeout: Function, clearTimeout: Function}} [env.timers]
     * @param {() => number} [env.now]
     * @param {() => number} [env.random]
     * @param {"auto"|"websocket"|"longpolling"} [env.transport] "auto": a WebSocket, long-polling
     *   if none opens (see Transport)
     * @param {(url: string) => WebSocket} [env.openSocket] `(url) => new WebSocket(url)`, unless "longpolling"
     * @param {string} [env.socketUrl] the `/websocket` URL (ws: or wss:), unless "longpolling"
     * @param {string} [env.route] the poll's path
     * @param {number} [env.answerTimeoutMs]
     * @param {{minMs?: number, maxMs?: number}} [env.backoff]
     * @param {object} [env.crosstab] CrossTab timings and channel name (see CROSSTAB_DEFAULTS)
     */
    constructor({
        rpc, openChannel = () => null, timers = globalThis, now = Date.now, random = Math.random,
        transport = "longpolling", openSocket, socketUrl, route, answerTimeoutMs, backoff = {}, crosstab = {},
    }) {
        super();
        this.now = now;
        this.connection = "connecting";
        this._channels = new Set();
        this._activity = now();
        this._last = 0;
        this._running = false;
        this._started = false;
        this._rejoined = false;
        this._transportKind = null;
        const options = () => ({ bus_inactivity: Math.max(0, now() - this._crossTab.merged().activity) });
        this._transport = new Transport({
            mode: transport,
            createPoller: (callbacks) => new Poller({
                rpc, timers, route, answerTimeoutMs, options, backoff: new Backoff({ random, ...backoff }), ...callbacks,
            }),
            createSocket: openSocket && socketUrl ? (callbacks) => new BusSocket({
                openSocket, url: socketUrl, timers, now, options, backoff: new Backoff({ random, ...backoff }), ...callbacks,
            }) : null,
            onNotifications: (items) => this._fromTransport(items),
            onConnection: (state) => {
                this._setConnection(state);
                this._crossTab.publish("connection", state);
            },
            onError: (error, retryInMs) => {
                this._emit("error", { error, retryInMs });
                this._crossTab.publish("error", { error: error.toJSON(), retryInMs });
            },
            onChange: (kind) => {
                this._setTransport(kind);
                this._crossTab.publish("transport", kind);
            },
        });
        this._crossTab = new CrossTab({ openChannel, timers, now, random, ...crosstab }, {
            contribution: () => ({ channels: [...this._channels], activity: this._activity }),
            leaderState: () => ({ last: this._last, connection: this.connection, transport: this._transport.kind }),
            onRole: (isLeader) => this._onRole(isLeader),
            onPeersChanged: () => this._transport.setChannels(this._crossTab.merged().channels),
            onRelay: (items, last) => this._fromRelay(items, last),
            onLeaderState: ({ last, connection, transport: kind }) => {
                this._noticeGap(last);
                this._last = Math.max(this._last, last);
                if (connection === "online" || connection === "offline") this._setConnection(connection);
                this._fromLeaderTransport(kind);
            },
            onLeaderEvent: (name, detail) => this._fromLeaderEvent(name, detail),
        });
    }

    /** The highest notification id this tab has received. */
    get last() {
        return this._last;
    }

    /** Whether this tab is the one listening for the others. */
    get isLeader() {
        return this._crossTab.isLeader;
    }

    get running() {
        return this._running;
    }

    /** "websocket" or "longpolling": what the leader uses (null until known). */
    get transport() {
        return this._transportKind;
    }

    /** This tab's own channels (the leader polls those of every tab). */
    get channels() {
        return [...this._channels];
    }

    /** @param {string} [scope] whose tabs may share this client's poll (see CrossTab.start); kept for restarts */
    start(scope) {
        if (this._running) return;
        this._running = true;
        this._rejoined = this._started;
        this._started = true;
        this._crossTab.start(scope);
    }

    stop() {
        if (!this._running) return;
        this._running = false;
        this._crossTab.stop();
        this._transport.stop();
    }

    addChannel(name) {
        if (typeof name !== "string" || this._channels.has(name)) return;
        this._channels.add(name);
        this._crossTab.announce();
    }

    removeChannel(name) {
        if (!this._channels.delete(name)) return;
        this._crossTab.announce();
    }

    /** The user did something: the server tells away from online by it (`bus_inactivity`). */
    noteActivity() {
        this._activity = this.now();
    }

    _onRole(isLeader) {
        if (isLeader) {
            this._rejoined = false; // it listens from its own last: the server tells of any gap
            this._transport.last = Math.max(this._transport.last, this._last);
            this._transport.setChannels(this._crossTab.merged().channels);
            this._transport.start();
            this._setTransport(this._transport.kind);
        } else {
            this._transport.stop();
        }
        this._emit("leader", { leader: isLeader });
    }

    _fromTransport(items) {
        this._crossTab.relay(items, this._transport.last);
        this._deliver(items);
        this._last = Math.max(this._last, this._transport.last);
    }

    _fromRelay(items, last) {
        this._noticeGap(last);
        this._deliver(items);
        this._last = Math.max(this._last, last);
    }

    /** The first `last` a tab hears from the leader after it started again:
     * if the others are ahead, it missed what they received meanwhile. */
    _noticeGap(last) {
        if (this._rejoined && last > this._last) this._emit("outdated", { id: last });
        this._rejoined = false;
    }

    _fromLeaderEvent(name, detail) {
        if (name === "connection") this._setConnection(detail);
        else if (name === "transport") this._fromLeaderTransport(detail);
        else if (name === "error" && detail && detail.error) {
            this._emit("error", { error: RpcError.fromJSON(detail.error), retryInMs: detail.retryInMs });
        }
    }

    /** What the leader uses; a leader that long-polls after probing the socket
     * spares this tab the probe should it lead next. */
    _fromLeaderTransport(kind) {
        if (kind !== "websocket" && kind !== "longpolling") return;
        if (kind === "longpolling") this._transport.fallBack();
        this._setTransport(kind);
    }

    /** Each notification once, in order, wherever it came from. */
    _deliver(items) {
        for (const item of items) {
            if (!item || !Number.isSafeInteger(item.id) || item.id <= this._last) continue;
            this._last = item.id;
            const message = item.message || {};
            if (message.type === OUTDATED) this._emit("outdated", { id: item.id });
            else this._emit("notification", { id: item.id, type: message.type, payload: message.payload });
        }
    }

    _setTransport(kind) {
        if (kind === this._transportKind) return;
        this._transportKind = kind;
        this._emit("transport", { transport: kind });
    }

    _setConnection(state) {
        if (state === this.connection) return;
        this.connection = state;
        this._emit("connection", { state });
    }

    _emit(type, detail) {
        this.dispatchEvent(new BusEvent(type, detail));
    }
}
