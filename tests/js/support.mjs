/**
 * The environment a bus client runs in, simulated for Node's test runner:
 * a virtual clock with timers, BroadcastChannels between simulated tabs,
 * a long-polling server that parks polls and answers them, and a WebSocket
 * endpoint that pushes the same notifications.
 *
 * Nothing here is the code under test: the tests drive the real modules
 * from mail/static/bus/ through the environment they are given.
 */

/** Let every promise continuation that is ready run (the modules under test
 * wait on nothing but these fakes, whose callbacks all run as timers). */
export function flush() {
    return new Promise((resolve) => setImmediate(resolve));
}

export class VirtualTime {
    constructor(start = 1_700_000_000_000) {
        this.time = start;
        this.queue = []; // {id, due, callback, owner}
        this.sequence = 0;
        this.frozen = new Set();
        this.now = () => this.time;
    }

    /** Timers for one simulated tab, which can be frozen (a hung or closed page). */
    timers(owner = "page") {
        return {
            setTimeout: (callback, ms = 0) => this._add(callback, ms, owner),
            clearTimeout: (id) => {
                this.queue = this.queue.filter((timer) => timer.id !== id);
            },
        };
    }

    freeze(owner) {
        this.frozen.add(owner);
    }

    thaw(owner) {
        this.frozen.delete(owner);
    }

    /** Move the clock forward, running each timer when its time comes. */
    async advance(ms) {
        const end = this.time + ms;
        await flush();
        for (;;) {
            const next = this.queue
                .filter((timer) => timer.due <= end && !this.frozen.has(timer.owner))
                .sort((a, b) => a.due - b.due || a.id - b.id)[0];
            if (!next) break;
            this.queue.splice(this.queue.indexOf(next), 1);
            this.time = Math.max(this.time, next.due);
            next.callback();
            await flush();
        }
        this.time = end;
        await flush();
    }

    _add(callback, ms, owner) {
        const id = ++this.sequence;
        this.queue.push({ id, due: this.time + Math.max(0, ms), callback, owner });
        return id;
    }
}

/** BroadcastChannel as browsers implement it: other tabs' channels of the
 * same name get a structured clone of each message, later, never the sender. */
export class ChannelHub {
    constructor(time) {
        this.time = time;
        this.channels = new Set();
        this.posted = [];
    }

    opener(owner) {
        return (name) => {
            const channel = {
                name, owner, onmessage: null, closed: false,
                postMessage: (data) => this._post(channel, data),
                close: () => {
                    channel.closed = true;
                    this.channels.delete(channel);
                },
            };
            this.channels.add(channel);
            return channel;
        };
    }

    _post(sender, data) {
        if (sender.closed) throw new Error("InvalidStateError: the channel is closed");
        this.posted.push({ owner: sender.owner, data: structuredClone(data) });
        for (const channel of this.channels) {
            if (channel === sender || channel.name !== sender.name) continue;
            const copy = structuredClone(data);
            // Delivered on the receiving tab's own timers: a frozen tab gets it when it thaws.
            this.time.timers(channel.owner).setTimeout(() => {
                if (!channel.closed && channel.onmessage) channel.onmessage({ data: copy });
            }, 0);
        }
    }
}

function abortError() {
    const error = new Error("The operation was aborted.");
    error.name = "AbortError";
    return error;
}

/**
 * A long-polling server: notifications with increasing ids; a poll with
 * news answers at once, one without parks until a notification comes or
 * `timeoutMs` passes, as /longpolling/poll does.
 */
export class PollServer {
    constructor(time, { timeoutMs = 50_000 } = {}) {
        this.time = time;
        this.timeoutMs = timeoutMs;
        this.log = [];
        this.polls = []; // every poll received: {tab, params, at}
        this.parked = new Set();
        this.inFlight = 0;
        this.maxInFlight = 0;
        this.failWith = null; // () => Error, to make polls fail at once
        this.listeners = new Set(); // called after each notification is committed
    }

    /** The `rpc` function one tab's client is given. */
    rpcFor(tab) {
        return (path, params, { signal } = {}) => new Promise((resolve, reject) => {
            const poll = { tab, path, params: structuredClone(params), at: this.time.now(), resolve, reject, open: true };
            this.polls.push(poll);
            this._open(poll);
            if (this.failWith) {
                this._close(poll);
                reject(this.failWith());
                return;
            }
            signal?.addEventListener("abort", () => {
                if (!poll.open) return;
                this._close(poll);
                reject(abortError());
            });
            if (!this._answer(poll)) {
                this.parked.add(poll);
                poll.timer = this.time.timers("server").setTimeout(() => this._settle(poll, []), this.timeoutMs);
            }
        });
    }

    /** Commit a notification: parked polls that hear it answer now. */
    send(type, payload = {}) {
        const id = this.log.length ? this.log[this.log.length - 1].id + 1 : 1;
        this.log.push({ id, message: { type, payload } });
        for (const poll of [...this.parked]) this._answer(poll);
        for (const listener of this.listeners) listener();
        return id;
    }

    /** A tab's page hung or its process died: its connections close, and
     * its fetches fail if it ever runs again. */
    dropTab(tab) {
        for (const poll of [...this.parked]) {
            if (poll.tab !== tab) continue;
            this._close(poll);
            this.time.timers(tab).setTimeout(() => poll.reject(new TypeError("Failed to fetch")), 0);
        }
    }

    pollsBy(tab) {
        return this.polls.filter((poll) => poll.tab === tab);
    }

    _answer(poll) {
        const news = this.log.filter((item) => item.id > poll.params.last);
        if (!news.length) return false;
        this._settle(poll, news);
        return true;
    }

    _settle(poll, result) {
        if (!poll.open) return;
        this._close(poll);
        poll.resolve(structuredClone(result));
    }

    _open(poll) {
        this.inFlight += 1;
        this.maxInFlight = Math.max(this.maxInFlight, this.inFlight);
    }

    _close(poll) {
        poll.open = false;
        this.parked.delete(poll);
        if (poll.timer) this.time.timers("server").clearTimeout(poll.timer);
        this.inFlight -= 1;
    }
}

const CONNECTING = 0;
const OPEN = 1;
const CLOSING = 2;
const CLOSED = 3;

/** The browser's WebSocket as a script sees it: `readyState`, `send`,
 * `close`, and events that come later, on the tab's own timers. */
class FakeWebSocket {
    constructor(endpoint, url, tab) {
        Object.assign(this, { endpoint, url, tab, readyState: CONNECTING, at: endpoint.time.now() });
        this.onopen = this.onmessage = this.onclose = this.onerror = null;
        this.subscriptions = []; // every subscribe frame received, parsed
        this.cursor = null; // the server's `last` for it, once subscribed
        this.closedBy = null; // {side, code, reason}
    }

    send(data) {
        if (this.readyState === CONNECTING) throw new Error("InvalidStateError: still connecting");
        if (this.readyState !== OPEN) return;
        this.endpoint._receive(this, data);
    }

    close(code, reason = "") {
        if (this.readyState >= CLOSING) return;
        this._closed("client", code ?? 1005, reason);
    }

    _fire(type, event) {
        this.endpoint.time.timers(this.tab).setTimeout(() => {
            const handler = this[`on${type}`];
            if (handler) handler(event);
        }, 0);
    }

    _closed(side, code, reason) {
        this.readyState = CLOSED;
        this.closedBy = { side, code, reason };
        this._fire("close", { code, reason, wasClean: code !== 1006 });
    }
}

/**
 * `/websocket`: sockets open (or, with `accepting` false, as a server with
 * WebSockets off or a proxy that refuses the upgrade, close with 1006 before
 * opening), take subscribe frames, and push the poll server's notifications
 * after their cursor, as the bus's WebSocket does. A subscribe frame that is
 * not one closes the socket with 1003.
 */
export class SocketServer {
    constructor(time, polls) {
        this.time = time;
        this.polls = polls; // the PollServer whose notifications it pushes
        this.sockets = [];
        this.accepting = true;
        polls.listeners.add(() => this._pushAll());
    }

    /** The `openSocket` function one tab's client is given. */
    openerFor(tab) {
        return (url) => {
            const socket = new FakeWebSocket(this, url, tab);
            this.sockets.push(socket);
            this.time.timers("server").setTimeout(() => this._handshake(socket), 0);
            return socket;
        };
    }

    get open() {
        return this.sockets.filter((socket) => socket.readyState === OPEN);
    }

    /** The server closes a socket (or all of them: a restart). */
    close(socket, code, reason = "") {
        if (socket.readyState !== OPEN) return;
        socket._closed("server", code, reason);
    }

    closeAll(code, reason = "") {
        for (const socket of this.open) this.close(socket, code, reason);
    }

    /** A text frame as it is, for frames the protocol does not allow. */
    push(socket, data) {
        if (socket.readyState === OPEN) socket._fire("message", { data });
    }

    _handshake(socket) {
        if (socket.readyState !== CONNECTING) return;
        if (!this.accepting) {
            socket._closed("server", 1006, "");
            return;
        }
        socket.readyState = OPEN;
        socket._fire("open", {});
    }

    _receive(socket, data) {
        let frame;
        try {
            frame = JSON.parse(data);
        } catch {
            frame = null;
        }
        const params = frame && frame.event_name === "subscribe" && frame.data;
        if (!params || !Array.isArray(params.channels) || !Number.isSafeInteger(params.last) || params.last < 0) {
            this.close(socket, 1003, "not a subscribe frame");
            return;
        }
        socket.subscriptions.push(params);
        socket.cursor = params.last;
        this._push(socket);
    }

    _pushAll() {
        for (const socket of this.open) this._push(socket);
    }

    _push(socket) {
        if (socket.cursor === null) return;
        const news = this.polls.log.filter((item) => item.id > socket.cursor);
        if (!news.length) return;
        socket.cursor = news.at(-1).id;
        this.push(socket, JSON.stringify(news));
    }
}

/** Random numbers from a fixed list, round and round: jitter a test can predict. */
export function sequence(...values) {
    let index = 0;
    return () => values[index++ % values.length];
}

/** A small seeded PRNG (mulberry32), so each simulated tab draws its own ids. */
export function seeded(seed) {
    let state = seed >>> 0;
    return () => {
        state = (state + 0x6d2b79f5) >>> 0;
        let t = state;
        t = Math.imul(t ^ (t >>> 15), t | 1);
        t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
        return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
    };
}
