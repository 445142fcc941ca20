import assert from "node:assert/strict";
import { test } from "node:test";

import { BusClient } from "../../mail/static/bus/client.js";
import { CROSSTAB_DEFAULTS } from "../../mail/static/bus/crosstab.js";
import { RpcError } from "../../mail/static/bus/rpc.js";
import { ChannelHub, PollServer, VirtualTime, seeded } from "./support.mjs";

const { electionMs, heartbeatMs, leaderTimeoutMs } = CROSSTAB_DEFAULTS;
/** Time for a follower to notice a silent leader and win the election after it. */
const TAKEOVER_MS = leaderTimeoutMs + heartbeatMs + electionMs + 100;

/** One browser: tabs of one origin sharing BroadcastChannels, one server. */
function browser() {
    const time = new VirtualTime();
    const hub = new ChannelHub(time);
    const server = new PollServer(time);
    const tabs = [];
    let seed = 1;
    const open = (name = `tab${tabs.length + 1}`) => {
        const client = new BusClient({
            rpc: server.rpcFor(name),
            openChannel: hub.opener(name),
            timers: time.timers(name),
            now: time.now,
            random: seeded(seed++),
        });
        const tab = { name, client, received: [], outdated: [], connection: [], errors: [] };
        client.addEventListener("notification", (event) => tab.received.push(event.detail.id));
        client.addEventListener("outdated", (event) => tab.outdated.push(event.detail.id));
        client.addEventListener("connection", (event) => tab.connection.push(event.detail.state));
        client.addEventListener("error", (event) => tab.errors.push(event.detail.error));
        tabs.push(tab);
        client.start();
        return tab;
    };
    const leaders = () => tabs.filter((tab) => tab.client.isLeader);
    /** A tab whose page hangs or whose process dies: no more timers, messages or connections. */
    const crash = (tab) => {
        time.freeze(tab.name);
        server.dropTab(tab.name);
    };
    return { time, hub, server, tabs, open, leaders, crash };
}

function pollers(server, since = 0) {
    return new Set(server.polls.slice(since).map((poll) => poll.tab));
}

test("among tabs opened together one is elected, and only it polls", async () => {
    const { time, server, open, leaders, tabs } = browser();
    for (let i = 0; i < 5; i += 1) open();
    await time.advance(electionMs + 100);
    assert.equal(leaders().length, 1);
    const [leader] = leaders();
    for (let i = 0; i < 20; i += 1) {
        server.send("x/tick", { i });
        await time.advance(7_000);
    }
    await time.advance(120_000); // parked polls time out and are sent again
    assert.equal(server.maxInFlight, 1, "never two polls at once");
    assert.deepEqual(pollers(server), new Set([leader.name]));
    assert.ok(server.polls.length > 20);
    for (const tab of tabs) assert.deepEqual(tab.received, server.log.map((item) => item.id), tab.name);
});

test("tabs opened later follow the leader already there", async () => {
    const { time, server, open, leaders } = browser();
    const first = open();
    await time.advance(2_000);
    assert.deepEqual(leaders(), [first]);
    for (let i = 0; i < 4; i += 1) {
        open();
        await time.advance(1_234);
    }
    await time.advance(60_000);
    assert.deepEqual(leaders(), [first]);
    assert.deepEqual(pollers(server), new Set([first.name]));
    assert.equal(server.maxInFlight, 1);
});

test("followers get the leader's notifications relayed, each once and in order", async () => {
    const { time, server, open, tabs } = browser();
    open();
    open();
    await time.advance(1_000);
    server.send("x/one");
    await time.advance(10);
    const late = open(); // still electing when the next ones arrive
    server.send("x/two");
    server.send("bus/outdated");
    server.send("x/three");
    await time.advance(1_000);
    for (const tab of tabs.slice(0, 2)) {
        assert.deepEqual(tab.received, [1, 2, 4], tab.name);
        assert.deepEqual(tab.outdated, [3], tab.name);
    }
    assert.deepEqual(late.received, [2, 4]);
    assert.deepEqual(late.outdated, [3]);
    assert.equal(late.client.last, 4);
});

test("the leader polls the channels of every tab, and drops those of a tab that left", async () => {
    const { time, server, open, leaders } = browser();
    const a = open();
    await time.advance(1_000);
    const b = open();
    const c = open();
    await time.advance(1_000);
    assert.deepEqual(leaders(), [a]);
    const lastChannels = () => server.polls.filter((poll) => poll.tab === a.name).at(-1).params.channels;

    b.client.addChannel("uuid-b");
    await time.advance(10);
    assert.deepEqual(lastChannels(), ["uuid-b"], "the parked poll was sent again with b's channel");
    c.client.addChannel("uuid-c");
    a.client.addChannel("uuid-a");
    await time.advance(10);
    assert.deepEqual(lastChannels(), ["uuid-a", "uuid-b", "uuid-c"]);
    b.client.stop();
    await time.advance(10);
    assert.deepEqual(lastChannels(), ["uuid-a", "uuid-c"]);
    c.client.removeChannel("uuid-c");
    await time.advance(10);
    assert.deepEqual(lastChannels(), ["uuid-a"]);
    assert.equal(server.maxInFlight, 1);
});

test("when the leader's tab closes another takes over at once, from the shared last", async () => {
    const { time, server, open, leaders, tabs } = browser();
    const [a] = [open(), open(), open()];
    await time.advance(1_000);
    assert.deepEqual(leaders(), [a]);
    server.send("x/one");
    server.send("x/two");
    await time.advance(1_000);

    const before = server.polls.length;
    a.client.stop(); // pagehide: says bye
    await time.advance(electionMs + 100);
    assert.equal(leaders().length, 1);
    const [successor] = leaders();
    assert.notEqual(successor, a);
    const takeover = server.polls.slice(before);
    assert.deepEqual(pollers(server, before), new Set([successor.name]));
    assert.equal(takeover[0].params.last, 2, "no replay, no gap");

    server.send("x/three");
    await time.advance(1_000);
    for (const tab of tabs.slice(1)) assert.deepEqual(tab.received, [1, 2, 3], tab.name);
    assert.equal(server.maxInFlight, 1);
});

test("when the leader stops heart-beating a follower takes over, and the old leader steps down when it wakes", async () => {
    const { time, server, open, leaders, crash, tabs } = browser();
    const [a, b, c] = [open(), open(), open()];
    await time.advance(1_000);
    assert.deepEqual(leaders(), [a]);
    server.send("x/one");
    await time.advance(1_000);

    crash(a);
    server.send("x/lost-with-the-leader's-poll");
    const before = server.polls.length;
    await time.advance(TAKEOVER_MS);
    const alive = leaders().filter((tab) => tab !== a);
    assert.equal(alive.length, 1, "one of the others polls");
    assert.equal(server.polls[before].params.last, 1, "from the last the leader shared");
    for (const tab of [b, c]) assert.deepEqual(tab.received, [1, 2], tab.name);

    // The frozen page comes back: it hears the newer leader and stops polling.
    time.thaw(a.name);
    await time.advance(3 * heartbeatMs);
    assert.equal(leaders().length, 1);
    assert.notEqual(leaders()[0], a);
    server.maxInFlight = server.inFlight;
    server.send("x/three");
    await time.advance(60_000);
    assert.equal(server.maxInFlight, 1);
    for (const tab of tabs) assert.deepEqual(tab.received.at(-1), 3, tab.name);
});

test("tabs that keep closing hand the poll on, never two at once", async () => {
    const { time, server, open, leaders } = browser();
    for (let i = 0; i < 4; i += 1) open();
    await time.advance(1_000);
    for (let round = 0; round < 3; round += 1) {
        const [leader] = leaders();
        leader.client.stop();
        await time.advance(electionMs + 100);
        assert.equal(leaders().length, 1, `round ${round}`);
        server.send("x/round", { round });
        await time.advance(1_000);
    }
    assert.equal(server.maxInFlight, 1);
    const [survivor] = leaders();
    assert.deepEqual(survivor.received, [1, 2, 3]);
});

test("a tab that joins later starts from the leader's last and would take over from there", async () => {
    const { time, server, open, leaders } = browser();
    const a = open();
    await time.advance(1_000);
    for (let i = 0; i < 5; i += 1) server.send("x/old");
    await time.advance(1_000);
    const b = open();
    await time.advance(electionMs + 100);
    assert.equal(b.client.last, 5);
    assert.deepEqual(b.received, []);
    a.client.stop();
    await time.advance(electionMs + 100);
    assert.deepEqual(leaders(), [b]);
    assert.equal(server.pollsBy(b.name)[0].params.last, 5);
});

test("the connection state and poll errors reach every tab", async () => {
    const { time, server, open, tabs } = browser();
    open();
    open();
    await time.advance(1_000);
    server.send("x/one");
    await time.advance(1_000);
    server.failWith = () => new RpcError("Odoo Session Expired", { code: 100, data: { name: "session_expired" } });
    server.send("x/two"); // answers the parked poll; the next fails
    await time.advance(2_000);
    for (const tab of tabs) {
        assert.deepEqual(tab.connection, ["online", "offline"], tab.name);
        assert.ok(tab.errors.length >= 1, tab.name);
        assert.ok(tab.errors[0] instanceof RpcError);
        assert.equal(tab.errors[0].sessionExpired, true, tab.name);
    }
    server.failWith = null;
    await time.advance(5_000);
    server.send("x/three");
    await time.advance(1_000);
    for (const tab of tabs) assert.deepEqual(tab.connection, ["online", "offline", "online"], tab.name);
});

test("without BroadcastChannel every tab polls on its own, at once", async () => {
    const time = new VirtualTime();
    const server = new PollServer(time);
    const client = new BusClient({ rpc: server.rpcFor("tab"), openChannel: () => null, timers: time.timers(), now: time.now });
    client.start();
    await time.advance(0);
    assert.equal(client.isLeader, true);
    assert.equal(server.inFlight, 1);
    client.stop();
});

test("a tab that starts again behind the others is told it is outdated", async () => {
    const { time, server, open } = browser();
    const a = open();
    const b = open();
    await time.advance(1_000);
    server.send("x/one");
    await time.advance(10);
    b.client.stop(); // hidden into the back/forward cache
    server.send("x/two");
    await time.advance(1_000);
    b.client.start();
    await time.advance(1_000);
    assert.deepEqual(b.outdated, [2]);
    assert.deepEqual(b.received, [1]);
    server.send("x/three");
    await time.advance(10);
    assert.deepEqual(b.received, [1, 3]);
    assert.deepEqual(a.outdated, []);
});

test("a tab that starts again alone polls from its own last, and only a real gap is outdated", async () => {
    const { time, server, open } = browser();
    const a = open();
    await time.advance(1_000);
    server.send("x/one");
    await time.advance(10);
    a.client.stop();
    a.client.start();
    await time.advance(1_000);
    assert.equal(a.client.isLeader, true);
    assert.equal(server.polls.at(-1).params.last, 1);
    assert.deepEqual(a.outdated, []);
});

test("the channels of a tab that vanished without a word are dropped once it has been silent long enough", async () => {
    const { time, server, open, leaders, crash } = browser();
    const a = open();
    await time.advance(1_000);
    const b = open();
    await time.advance(1_000);
    b.client.addChannel("uuid-b");
    await time.advance(10);
    assert.deepEqual(leaders(), [a]);
    const lastChannels = () => server.pollsBy(a.name).at(-1).params.channels;
    assert.deepEqual(lastChannels(), ["uuid-b"]);
    crash(b);
    await time.advance(CROSSTAB_DEFAULTS.peerTimeoutMs - CROSSTAB_DEFAULTS.peerMs);
    assert.deepEqual(lastChannels(), ["uuid-b"], "a throttled tab is not dropped early");
    await time.advance(2 * CROSSTAB_DEFAULTS.peerMs);
    assert.deepEqual(lastChannels(), []);
});
