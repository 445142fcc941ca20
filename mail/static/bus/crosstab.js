/**
 * One connection to the bus per browser: the tabs of an origin elect a
 * leader over a BroadcastChannel, as Odoo 15's `crosstab_bus.js` does over
 * localStorage. Only the leader polls (or holds the WebSocket); it relays
 * every answer to the other tabs, listens to the channels of all of them,
 * and its heartbeat carries `last`, so a tab that takes over goes on from
 * where the leader was.
 *
 * Messages are `{type, from, term, ...}`:
 * - `claim`: a tab without a leader asks for the role. Tabs that claim within
 *   one election window (each claims again on hearing a claimant it did not
 *   know) compare ids, and the smallest, the oldest tab's, wins; a live
 *   leader answers with a heartbeat, which ends the claim.
 * - `heartbeat {last, connection, transport}`: the leader, every `heartbeatMs`. A tab
 *   that hears none for `leaderTimeoutMs` (the leader's tab was closed,
 *   crashed or froze) starts an election.
 * - `hello {channels, activity}`: a follower's channels and last user
 *   activity, on change, to a new leader, and every `peerMs`; the leader
 *   forgets a tab silent for `peerTimeoutMs`.
 * - `bye`: a tab leaves; a leaving leader's followers elect at once.
 * - `notifications {items, last}` and `event {name, detail}`: relayed by the
 *   leader.
 *
 * Each election raises the `term`: two leaders (after a race, or a frozen
 * leader waking up) settle on the higher term, then on the smaller id, so a
 * stale leader steps down as soon as it hears the current one.
 *
 * Without BroadcastChannel (`openChannel` returns null) the tab leads alone.
 */

export const CROSSTAB_DEFAULTS = Object.freeze({
    name: "imbus.bus",
    heartbeatMs: 1000,
    leaderTimeoutMs: 4000,
    electionMs: 300,
    peerMs: 10000,
    // Longer than Chrome's one-minute timer alignment for long-hidden tabs,
    // so a throttled follower keeps its channels.
    peerTimeoutMs: 90000,
});

export class CrossTab {
    /**
     * @param {object} env
     * @param {(name: string) => (BroadcastChannel|null)} env.openChannel
     * @param {{setTimeout: Function, clearTimeout: Function}} [env.timers]
     * @param {() => number} [env.now]
     * @param {() => number} [env.random]
     * @param {object} tab what this tab contributes and how it reacts
     * @param {() => {channels: string[], activity: number}} tab.contribution
     * @param {() => {last: number, connection: string, transport: string}} tab.leaderState what the heartbeat carries
     * @param {(isLeader: boolean) => void} tab.onRole
     * @param {() => void} tab.onPeersChanged the merged channels or activity may have changed (leader)
     * @param {(items: object[], last: number) => void} tab.onRelay notifications relayed by a leader
     * @param {(state: {last: number, connection: string, transport: string}) => void} tab.onLeaderState a heartbeat's content
     * @param {(name: string, detail: any) => void} tab.onLeaderEvent an event relayed by the leader
     */
    constructor({ openChannel, timers = globalThis, now = Date.now, random = Math.random, ...timing }, tab) {
        Object.assign(this, CROSSTAB_DEFAULTS, timing, { openChannel, timers, now, random, tab });
        this.role = "stopped";
        this._timers = new Set();
    }

    get isLeader() {
        return this.role === "leader";
    }

    /**
     * @param {string} [scope] whose tabs these are (a user): tabs of different
     *   users in one browser must not share a leader, or one would hear the
     *   other's notifications.
     */
    start(scope = this.scope) {
        if (this.role !== "stopped") return;
        this.scope = scope;
        this.id = `${this.now().toString(36)}-${this.random().toString(36).slice(2, 10)}`;
        this.term = 0;
        this.leaderId = null;
        this.leaderSeenAt = 0;
        this.helloAt = 0;
        this.peers = new Map();
        this.channel = this.openChannel(scope ? `${this.name}:${scope}` : this.name);
        if (!this.channel) {
            this._lead();
            return;
        }
        this.channel.onmessage = (event) => this._receive(event.data);
        this._elect();
        this._tick();
    }

    stop() {
        if (this.role === "stopped") return;
        const wasLeader = this.isLeader;
        this._post("bye");
        for (const timer of this._timers) this.timers.clearTimeout(timer);
        this._timers.clear();
        if (this.channel) this.channel.close();
        this.channel = null;
        this.role = "stopped";
        if (wasLeader) this.tab.onRole(false);
    }

    /** This tab's channels changed: tell the leader (or, leading, re-merge). */
    announce() {
        if (this.isLeader) this.tab.onPeersChanged();
        else if (this.role !== "stopped") this._hello();
    }

    /** The channels and latest user activity of every live tab (what the leader polls). */
    merged() {
        const own = this.tab.contribution();
        const channels = new Set(own.channels);
        let activity = own.activity;
        for (const peer of this.isLeader ? this.peers.values() : []) {
            for (const name of peer.channels) channels.add(name);
            activity = Math.max(activity, peer.activity);
        }
        return { channels: [...channels], activity };
    }

    /** Leader: relay a poll's notifications to the other tabs. */
    relay(items, last) {
        if (this.isLeader) this._post("notifications", { items, last });
    }

    /** Leader: relay an event (connection state, poll error, transport) to the other tabs. */
    publish(name, detail) {
        if (this.isLeader) this._post("event", { name, detail });
    }

    // -- roles -------------------------------------------------------------------

    _elect() {
        this.role = "candidate";
        this.leaderId = null;
        this.candidates = new Set([this.id]);
        this._post("claim");
        this._after(this.electionMs, () => this._conclude());
    }

    _conclude() {
        if (this.role !== "candidate") return;
        const winner = [...this.candidates].sort()[0];
        if (winner === this.id) this._lead();
        else this._follow(null); // the winner's heartbeat is due; if it never comes, elect again
    }

    _lead() {
        this.term += 1;
        this.role = "leader";
        this.leaderId = this.id;
        this._heartbeat();
        this.tab.onRole(true);
    }

    _follow(leaderId) {
        const wasLeader = this.isLeader;
        const newLeader = leaderId !== null && leaderId !== this.leaderId;
        this.role = "follower";
        this.leaderId = leaderId;
        this.leaderSeenAt = this.now();
        if (wasLeader) this.tab.onRole(false);
        if (newLeader) this._hello();
    }

    /** Every `heartbeatMs`, whatever the role; one chain of timers per tab. */
    _tick() {
        const now = this.now();
        if (this.isLeader) {
            this._heartbeat();
            this._forgetSilentPeers(now);
        } else if (this.role === "follower") {
            if (now - this.leaderSeenAt > this.leaderTimeoutMs) this._elect();
            else if (now - this.helloAt >= this.peerMs) this._hello();
        }
        this._after(this.heartbeatMs, () => this._tick());
    }

    _forgetSilentPeers(now) {
        let forgot = false;
        for (const [id, peer] of this.peers) {
            if (now - peer.seenAt > this.peerTimeoutMs) forgot = this.peers.delete(id);
        }
        if (forgot) this.tab.onPeersChanged();
    }

    // -- messages ----------------------------------------------------------------

    _receive(message) {
        if (this.role === "stopped" || !message || typeof message !== "object" || message.from === this.id) return;
        const term = Number.isSafeInteger(message.term) ? message.term : 0;
        if (message.type === "heartbeat") {
            this._onHeartbeat(message, term);
            return;
        }
        // A leader learns of newer terms from heartbeats only (see _onHeartbeat).
        if (!this.isLeader) this.term = Math.max(this.term, term);
        if (message.type === "claim") this._onClaim(message);
        else if (message.type === "hello") this._onHello(message);
        else if (message.type === "bye") this._onBye(message);
        else if (message.type === "notifications" && Array.isArray(message.items)) {
            if (message.from === this.leaderId) this.leaderSeenAt = this.now();
            this.tab.onRelay(message.items, Number(message.last) || 0);
        } else if (message.type === "event" && !this.isLeader) {
            this.tab.onLeaderEvent(message.name, message.detail);
        }
    }

    _onHeartbeat(message, term) {
        if (term < this.term) {
            if (this.isLeader) this._heartbeat(); // a stale leader: make it step down
            return;
        }
        if (this.isLeader && term === this.term && this.id < message.from) {
            this._heartbeat();
            return;
        }
        this.term = term;
        this._follow(message.from);
        this.tab.onLeaderState({ last: Number(message.last) || 0, connection: message.connection, transport: message.transport });
    }

    _onClaim(message) {
        if (this.isLeader) {
            this._heartbeat();
        } else if (this.role === "candidate") {
            // A tab that opened after our claim never heard it: claim again for it.
            if (!this.candidates.has(message.from)) this._post("claim");
            this.candidates.add(message.from);
        } else {
            this._hello(); // tells the claimant the term in force, and the leader-to-be our channels
        }
    }

    _onHello(message) {
        this.peers.set(message.from, {
            channels: Array.isArray(message.channels) ? message.channels.filter((c) => typeof c === "string") : [],
            activity: Number(message.activity) || 0,
            seenAt: this.now(),
        });
        if (this.isLeader) this.tab.onPeersChanged();
    }

    _onBye(message) {
        const known = this.peers.delete(message.from);
        if (this.role === "candidate") this.candidates.delete(message.from);
        if (this.isLeader && known) this.tab.onPeersChanged();
        if (this.role === "follower" && message.from === this.leaderId) this._elect();
    }

    _heartbeat() {
        const { last, connection, transport } = this.tab.leaderState();
        this._post("heartbeat", { last, connection, transport });
    }

    _hello() {
        const { channels, activity } = this.tab.contribution();
        this.helloAt = this.now();
        this._post("hello", { channels, activity });
    }

    _post(type, fields = {}) {
        if (this.channel) this.channel.postMessage({ type, from: this.id, term: this.term, ...fields });
    }

    _after(ms, callback) {
        const timer = this.timers.setTimeout(() => {
            this._timers.delete(timer);
            callback();
        }, ms);
        this._timers.add(timer);
    }
}
