/**
 * The bus client an application talks to: channels in, events out.
 *
 * It joins the other tabs of the origin (`CrossTab`); the tab elected leader
 * runs the long-polling loop (`Poller`) for all of them and relays what it
 * receives, so every tab gets every notification once, in order, whichever
 * tab polls and however often that changes.
 *
 * Events (`addEventListener`), each with a `detail`:
 * - `notification` `{id, type, payload}`: one per notification, in id order;
 * - `outdated` `{id}`: notifications were missed, so the application must
 *   reload its state: the server dropped some this client had not received
 *   (`bus/outdated`), or the tab started again (back from the browser's
 *   back/forward cache) behind the other tabs;
 * - `connection` `{state}`: "online" or "offline" (the poll fails and is
 *   retried with back-off), the same in every tab;
 * - `error` `{error, retryInMs}`: a poll failed (an `RpcError`; check
 *   `error.sessionExpired`), relayed to every tab;
 * - `leader` `{leader}`: this tab started or stopped polling for the others.
 */
import { Backoff } from "./backoff.js";
import { CrossTab } from "./crosstab.js";
import { Poller } from "./poller.js";
import { RpcError } from "./rpc.js";

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
     * @param {string} [env.route] the poll's path
     * @param {number} [env.answerTimeoutMs]
     * @param {{minMs?: number, maxMs?: number}} [env.backoff]
     * @param {object} [env.crosstab] CrossTab timings and channel name (see CROSSTAB_DEFAULTS)
     */
    constructor({
        rpc, openChannel = () => null, timers = globalThis, now = Date.now, random = Math.random,
        route, answerTimeoutMs, backoff = {}, crosstab = {},
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
        this._poller = new Poller({
            rpc, timers, route, answerTimeoutMs,
            backoff: new Backoff({ random, ...backoff }),
            options: () => ({ bus_inactivity: Math.max(0, now() - this._crossTab.merged().activity) }),
            onNotifications: (items) => this._fromPoll(items),
            onConnection: (state) => {
                this._setConnection(state);
                this._crossTab.publish("connection", state);
            },
            onError: (error, retryInMs) => {
                this._emit("error", { error, retryInMs });
                this._crossTab.publish("error", { error: error.toJSON(), retryInMs });
            },
        });
        this._crossTab = new CrossTab({ openChannel, timers, now, random, ...crosstab }, {
            contribution: () => ({ channels: [...this._channels], activity: this._activity }),
            leaderState: () => ({ last: this._last, connection: this.connection }),
            onRole: (isLeader) => this._onRole(isLeader),
            onPeersChanged: () => this._poller.setChannels(this._crossTab.merged().channels),
            onRelay: (items, last) => this._fromRelay(items, last),
            onLeaderState: ({ last, connection }) => {
                this._noticeGap(last);
                this._last = Math.max(this._last, last);
                if (connection === "online" || connection === "offline") this._setConnection(connection);
            },
            onLeaderEvent: (name, detail) => this._fromLeaderEvent(name, detail),
        });
    }

    /** The highest notification id this tab has received. */
    get last() {
        return this._last;
    }

    /** Whether this tab is the one polling. */
    get isLeader() {
        return this._crossTab.isLeader;
    }

    get running() {
        return this._running;
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
        this._poller.stop();
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
            this._rejoined = false; // it polls from its own last: the server tells of any gap
            this._poller.last = Math.max(this._poller.last, this._last);
            this._poller.setChannels(this._crossTab.merged().channels);
            this._poller.start();
        } else {
            this._poller.stop();
        }
        this._emit("leader", { leader: isLeader });
    }

    _fromPoll(items) {
        this._crossTab.relay(items, this._poller.last);
        this._deliver(items);
        this._last = Math.max(this._last, this._poller.last);
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
        else if (name === "error" && detail && detail.error) {
            this._emit("error", { error: RpcError.fromJSON(detail.error), retryInMs: detail.retryInMs });
        }
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

    _setConnection(state) {
        if (state === this.connection) return;
        this.connection = state;
        this._emit("connection", { state });
    }

    _emit(type, detail) {
        this.dispatchEvent(new BusEvent(type, detail));
    }
}
