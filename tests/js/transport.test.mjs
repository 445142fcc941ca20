import assert from "node:assert/strict";
import { test } from "node:test";

import { BusClient } from "../../mail/static/bus/client.js";
import { CROSSTAB_DEFAULTS } from "../../mail/static/bus/crosstab.js";
import { ChannelHub, PollServer, SocketServer, VirtualTime, seeded } from "./support.mjs";

const { electionMs } = CROSSTAB_DEFAULTS;
const EVENTS = ["notification", "outdated", "connection", "error", "leader", "transport"];

/** One browser (tabs sharing BroadcastChannels) and a server with both endpoints. */
function browser() {
    const time = new VirtualTime();
    const hub = new ChannelHub(time);
    const polls = new PollServer(time);
    const sockets = new SocketServer(time, polls);
    const tabs = [];
    let seed = 1;
    const open = ({ name = `tab${tabs.length + 1}`, transport = "auto", channels = [], shared = true } = {}) => {
        const client = new BusClient({
            rpc: polls.rpcFor(name),
            openSocket: sockets.openerFor(name),
            socketUrl: "ws://chat.test/websocket",
            transport,
            openChannel: shared ? hub.opener(name) : () => null,
            timers: time.timers(name),
            now: time.now,
            random: seeded(seed++),
        });
        const tab = { name, client, events: [] };
        for (const type of EVENTS) client.addEventListener(type, (event) => tab.events.push({ event: type, ...event.detail }));
        for (const channel of channels) client.addChannel(channel);
        tabs.push(tab);
        client.start();
        return tab;
    };
    const of = (tab, type) => tab.events.filter((event) => event.event === type);
    const ids = (tab) => of(tab, "notification").map((event) => event.id);
    return { time, polls, sockets, tabs, open, of, ids };
}

test("auto uses the WebSocket when the server speaks it, and never polls", async () => {
    const { time, polls, sockets, open, of, ids } = browser();
    const tab = open({ channels: ["a"] });
    await time.advance(electionMs + 100);
    assert.equal(tab.client.transport, "websocket");
    assert.deepEqual(of(tab, "transport"), [{ event: "transport", transport: "websocket" }]);
    polls.send("x/one");
    polls.send("x/two");
    await time.advance(60_000);
    assert.deepEqual(ids(tab), [1, 2]);
    assert.deepEqual(sockets.open.map((ws) => ws.subscriptions[0].channels), [["a"]]);
    assert.deepEqual(of(tab, "connection"), [{ event: "connection", state: "online" }]);
    assert.equal(polls.polls.length, 0);
    tab.client.stop();
});

test("auto long-polls after two attempts that never opened, quietly, with the same channels", async () => {
    const { time, polls, sockets, open, of, ids } = browser();
    sockets.accepting = false; // /websocket is 404: WebSockets are off
    polls.send("x/before");
    const tab = open({ channels: ["a", "b"] });
    await time.advance(electionMs + 100);
    assert.equal(sockets.sockets.length, 2);
    const startedAt = sockets.sockets[0].at;
    assert.deepEqual([sockets.sockets[1].at, polls.polls[0].at], [startedAt, startedAt], "the probe's attempts and the first poll follow each other at once");
    assert.equal(tab.client.transport, "longpolling");
    assert.deepEqual(of(tab, "transport").map((event) => event.transport), ["websocket", "longpolling"]);
    assert.deepEqual(polls.polls.map((poll) => poll.params.channels), [["a", "b"], ["a", "b"]]);
    assert.deepEqual(polls.polls.map((poll) => poll.params.last), [0, 1]);
    assert.deepEqual(of(tab, "error"), [], "the probe is not an outage");
    assert.deepEqual(of(tab, "connection"), [{ event: "connection", state: "online" }]);
    polls.send("x/after");
    await time.advance(600_000);
    assert.deepEqual(ids(tab), [1, 2]);
    assert.equal(sockets.sockets.length, 2, "no socket is tried again");

    tab.client.stop(); // signed out and in again: still long-polling
    tab.client.start();
    await time.advance(electionMs + 100);
    assert.equal(sockets.sockets.length, 2);
    assert.equal(polls.inFlight, 1);
    tab.client.stop();
});

test("a tab taking over in auto falls back from the shared last, with every tab's channels, missing and repeating nothing", async () => {
    const { time, polls, sockets, open, ids } = browser();
    const first = open({ channels: ["a"] });
    await time.advance(electionMs + 100);
    const second = open({ channels: ["b"] });
    await time.advance(2_000);
    assert.equal(first.client.isLeader, true);
    polls.send("x/one");
    polls.send("x/two");
    await time.advance(0);
    // WebSockets turned off, and the server restarted.
    sockets.accepting = false;
    sockets.closeAll(1001);
    polls.send("x/while-restarting");
    await time.advance(100);
    first.client.stop();
    await time.advance(5_000);
    assert.equal(second.client.isLeader, true);
    assert.equal(second.client.transport, "longpolling");
    const [takeover] = polls.pollsBy("tab2");
    assert.deepEqual([takeover.params.channels, takeover.params.last], [["b"], 2]);
    polls.send("x/four");
    await time.advance(0);
    assert.deepEqual(ids(first), [1, 2]);
    assert.deepEqual(ids(second), [1, 2, 3, 4]);
    second.client.stop();
});

test("once a socket has opened, drops reconnect it (with back-off) and never fall back", async () => {
    const { time, polls, sockets, open, of, ids } = browser();
    const tab = open({ shared: false });
    polls.send("x/one");
    await time.advance(0);
    sockets.accepting = false; // a restart that takes a while
    sockets.closeAll(1001, "going away");
    polls.send("x/two");
    await time.advance(120_000);
    assert.ok(sockets.sockets.length > 4, `${sockets.sockets.length} sockets`);
    assert.ok(sockets.sockets.length < 12, `${sockets.sockets.length} sockets in two minutes`);
    assert.equal(polls.polls.length, 0);
    assert.equal(tab.client.transport, "websocket");
    assert.equal(tab.client.connection, "offline");
    assert.ok(of(tab, "error").length >= 4, "a socket that once opened reports its drops");
    sockets.accepting = true;
    await time.advance(30_000);
    assert.equal(tab.client.connection, "online");
    assert.deepEqual(ids(tab), [1, 2]);
    assert.equal(sockets.open.at(-1).subscriptions[0].last, 1);
    tab.client.stop();
});

test("websocket never falls back: refusals are reported as an outage", async () => {
    const { time, polls, sockets, open, of } = browser();
    sockets.accepting = false;
    const tab = open({ transport: "websocket", shared: false });
    await time.advance(60_000);
    assert.equal(polls.polls.length, 0);
    assert.equal(tab.client.transport, "websocket");
    assert.deepEqual(of(tab, "connection"), [{ event: "connection", state: "offline" }]);
    assert.equal(of(tab, "error").length, sockets.sockets.length);
    assert.ok(of(tab, "error").every((event) => event.error.transport && event.retryInMs > 0));
    tab.client.stop();
});

test("longpolling opens no socket", async () => {
    const { time, polls, sockets, open, ids } = browser();
    const tab = open({ transport: "longpolling", shared: false });
    polls.send("x/one");
    await time.advance(60_000);
    assert.equal(sockets.sockets.length, 0);
    assert.equal(tab.client.transport, "longpolling");
    assert.deepEqual(ids(tab), [1]);
    tab.client.stop();
});

test("only the leader holds a socket; followers hear its notifications and its transport", async () => {
    const { time, polls, sockets, open, tabs, ids } = browser();
    for (let i = 0; i < 3; i += 1) open({ channels: [`c${i}`] });
    await time.advance(3_000);
    const leaders = tabs.filter((tab) => tab.client.isLeader);
    assert.equal(leaders.length, 1);
    assert.equal(sockets.open.length, 1);
    assert.deepEqual(sockets.open[0].subscriptions.at(-1).channels, ["c0", "c1", "c2"]);
    polls.send("x/one");
    await time.advance(100);
    for (const tab of tabs) {
        assert.deepEqual(ids(tab), [1], tab.name);
        assert.equal(tab.client.transport, "websocket", tab.name);
    }
    for (const tab of tabs) tab.client.stop();
    await time.advance(0);
    assert.equal(sockets.open.length, 0);
});

test("a tab that heard its leader long-polls after a fallback long-polls at once when it leads", async () => {
    const { time, polls, sockets, open, of } = browser();
    sockets.accepting = false;
    const first = open();
    await time.advance(3_000);
    const second = open();
    await time.advance(2_000);
    assert.equal(first.client.transport, "longpolling");
    assert.equal(second.client.transport, "longpolling");
    assert.deepEqual(of(second, "transport").map((event) => event.transport), ["longpolling"]);
    const tried = sockets.sockets.length;
    first.client.stop();
    await time.advance(1_000);
    assert.equal(second.client.isLeader, true);
    assert.equal(sockets.sockets.length, tried, "no second probe");
    assert.equal(polls.pollsBy("tab2").length, 1);
    second.client.stop();
});

test("the socket's session-expired close reaches every tab as an error, and the socket stays closed", async () => {
    const { time, sockets, open, tabs, of } = browser();
    open();
    open();
    await time.advance(3_000);
    sockets.closeAll(4001, "Session expired");
    await time.advance(60_000);
    for (const tab of tabs) {
        const errors = of(tab, "error");
        assert.equal(errors.length, 1, tab.name);
        assert.equal(errors[0].error.sessionExpired, true, tab.name);
        assert.equal(errors[0].retryInMs, null, tab.name);
        assert.equal(tab.client.connection, "offline", tab.name);
    }
    assert.equal(sockets.sockets.length, 1);
    for (const tab of tabs) tab.client.stop();
});

test("a transport that needs a socket and has no way to open one is a mistake, said at once", () => {
    const rpc = () => new Promise(() => {});
    assert.throws(() => new BusClient({ rpc, transport: "auto" }), TypeError);
    assert.throws(() => new BusClient({ rpc, transport: "sse" }), RangeError);
});
