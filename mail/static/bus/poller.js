/**
 * The long-polling loop against `/longpolling/poll`, as Odoo's client runs
 * it: poll again as soon as an answer arrives, following `last` (the highest
 * notification id received, so nothing is received twice or skipped); after
 * a failure wait as the back-off says, and start from its shortest delay
 * again after the next success.
 *
 * A parked poll is aborted and sent again at once when the channels change,
 * so the server hears the new ones now rather than at the poll's timeout.
 */
import { Backoff } from "./backoff.js";
import { RpcError } from "./rpc.js";

export const POLL_ROUTE = "/longpolling/poll";

/** Aborts that are not failures: the loop was stopped, or must re-poll. */
const STOP = "stop";
const RESTART = "restart";
const TIMEOUT = "timeout";

export class Poller {
    /**
     * @param {object} env
     * @param {Function} env.rpc            `createRpc()`'s function (or a fake)
     * @param {{setTimeout: Function, clearTimeout: Function}} [env.timers]
     * @param {Backoff} [env.backoff]
     * @param {string} [env.route]
     * @param {number} [env.answerTimeoutMs] a poll unanswered for this long is a dead connection
     * @param {() => object} [env.options]  the poll's `options`, read at every poll
     * @param {(notifications: object[]) => void} [env.onNotifications] after `last` has moved past them
     * @param {(state: "online"|"offline") => void} [env.onConnection] on changes only
     * @param {(error: RpcError, retryInMs: number) => void} [env.onError]
     */
    constructor({
        rpc, timers = globalThis, backoff = new Backoff(), route = POLL_ROUTE, answerTimeoutMs = 75000,
        options = () => ({}), onNotifications = () => {}, onConnection = () => {}, onError = () => {},
    }) {
        Object.assign(this, { rpc, timers, backoff, route, answerTimeoutMs, options, onNotifications, onConnection, onError });
        this.last = 0;
        this.channels = [];
        this.connection = "connecting";
        this._run = 0;
        this._running = false;
        this._inFlight = null; // {controller, reason}
        this._sleeping = null; // {timer, wake}
    }

    get running() {
        return this._running;
    }

    start() {
        if (this._running) return;
        this._running = true;
        this._loop(++this._run);
    }

    stop() {
        if (!this._running) return;
        this._running = false;
        this._run += 1;
        this._abort(STOP);
        if (this._sleeping) this._sleeping.wake();
    }

    /** Poll these channels from now on; a parked poll is sent again at once. */
    setChannels(channels) {
        const next = [...new Set(channels)].sort();
        if (next.length === this.channels.length && next.every((name, i) => name === this.channels[i])) return;
        this.channels = next;
        this._abort(RESTART);
    }

    async _loop(run) {
        while (run === this._run) {
            const outcome = await this._pollOnce();
            if (run !== this._run || outcome.restart) continue;
            if (outcome.error) {
                const delay = this.backoff.next();
                this._setConnection("offline");
                this.onError(outcome.error, delay);
                await this._sleep(delay);
                continue;
            }
            this.backoff.reset();
            this._setConnection("online");
            if (outcome.notifications.length) this.onNotifications(outcome.notifications);
        }
    }

    /** One poll: `{notifications}`, `{error}`, or `{restart: true}`. */
    async _pollOnce() {
        const controller = new AbortController();
        const flight = { controller, reason: null };
        this._inFlight = flight;
        const watchdog = this.timers.setTimeout(() => this._abort(TIMEOUT), this.answerTimeoutMs);
        const params = { channels: this.channels, last: this.last, options: this.options() };
        try {
            const result = await this.rpc(this.route, params, { signal: controller.signal });
            if (!Array.isArray(result)) {
                return { error: new RpcError("The poll's answer is not a list.", { transport: true }) };
            }
            for (const notification of result) {
                if (Number.isSafeInteger(notification.id) && notification.id > this.last) this.last = notification.id;
            }
            return { notifications: result };
        } catch (error) {
            if (flight.reason === RESTART || flight.reason === STOP) return { restart: true };
            if (flight.reason === TIMEOUT) {
                return { error: new RpcError("The poll was not answered in time.", { transport: true }) };
            }
            if (error instanceof RpcError) return { error };
            return { error: new RpcError(String(error && error.message || error), { transport: true }) };
        } finally {
            this.timers.clearTimeout(watchdog);
            if (this._inFlight === flight) this._inFlight = null;
        }
    }

    _abort(reason) {
        const flight = this._inFlight;
        if (!flight || flight.reason) return;
        flight.reason = reason;
        flight.controller.abort();
    }

    _sleep(ms) {
        return new Promise((resolve) => {
            const wake = () => {
                this.timers.clearTimeout(timer);
                this._sleeping = null;
                resolve();
            };
            const timer = this.timers.setTimeout(wake, ms);
            this._sleeping = { wake };
        });
    }

    _setConnection(state) {
        if (this.connection === state) return;
        this.connection = state;
        this.onConnection(state);
    }
}
