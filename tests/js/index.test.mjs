import assert from "node:assert/strict";
import { test } from "node:test";

import { createBusClient, socketUrl } from "../../mail/static/bus/index.js";
import { ChannelHub, PollServer, SocketServer, VirtualTime } from "./support.mjs";

function pageEvent(type, fields = {}) {
    return Object.assign(new Event(type), fields);
}

test("a hidden page leaves at once, so another tab takes over without waiting for its heartbeat", async () => {
    const time = new VirtualTime();
    const hub = new ChannelHub(time);
    const server = new PollServer(time);
    const pages = ["a", "b"].map((name) => {
        const page = new EventTarget();
        const client = createBusClient({
            window: page, rpc: server.rpcFor(name), openChannel: hub.opener(name), timers: time.timers(name), now: time.now,
        });
        client.start();
        return { name, page, client };
    });
    await time.advance(1_000);
    const [leader] = pages.filter(({ client }) => client.isLeader);
    const [other] = pages.filter(({ client }) => !client.isLeader);

    leader.page.dispatchEvent(pageEvent("pagehide", { persisted: true }));
    await time.advance(500);
    assert.equal(leader.client.running, false);
    assert.equal(other.client.isLeader, true);
    assert.equal(server.inFlight, 1);

    // Back from the back/forward cache: it joins again, as a follower.
    leader.page.dispatchEvent(pageEvent("pageshow", { persisted: true }));
    await time.advance(1_000);
    assert.equal(leader.client.running, true);
    assert.equal(leader.client.isLeader, false);
    assert.equal(server.inFlight, 1);
    for (const { client } of pages) client.stop();
});

test("a page stopped by the application stays stopped when the browser shows it again", async () => {
    const time = new VirtualTime();
    const page = new EventTarget();
    const client = createBusClient({ window: page, rpc: new PollServer(time).rpcFor("a"), openChannel: () => null,
        timers: time.timers(), now: time.now });
    client.start();
    client.stop();
    page.dispatchEvent(pageEvent("pagehide", { persisted: true }));
    page.dispatchEvent(pageEvent("pageshow", { persisted: true }));
    assert.equal(client.running, false);
});

test("user activity on the page counts as activity for bus_inactivity", async () => {
    const time = new VirtualTime();
    const server = new PollServer(time);
    const page = new EventTarget();
    const client = createBusClient({ window: page, rpc: server.rpcFor("a"), openChannel: () => null,
        timers: time.timers(), now: time.now });
    await time.advance(20_000);
    page.dispatchEvent(pageEvent("keydown"));
    await time.advance(3_000);
    client.start();
    await time.advance(0);
    assert.equal(server.polls[0].params.options.bus_inactivity, 3_000);
    client.stop();
});

/** Run `body` with `globalThis.WebSocket` as given, then put the real one back. */
async function withWebSocket(value, body) {
    const saved = Object.getOwnPropertyDescriptor(globalThis, "WebSocket");
    Object.defineProperty(globalThis, "WebSocket", { value, configurable: true, writable: true });
    try {
        await body();
    } finally {
        if (saved) Object.defineProperty(globalThis, "WebSocket", saved);
        else delete globalThis.WebSocket;
    }
}

test("in a browser with WebSocket the client listens on /websocket of the page's own host, over TLS if the page is", async () => {
    const time = new VirtualTime();
    const polls = new PollServer(time);
    const sockets = new SocketServer(time, polls);
    const open = sockets.openerFor("a");
    const page = Object.assign(new EventTarget(), { location: { protocol: "https:", host: "chat.example:8443" } });
    await withWebSocket(function WebSocket(url) {
        return open(url);
    }, async () => {
        const client = createBusClient({ window: page, rpc: polls.rpcFor("a"), openChannel: () => null,
            timers: time.timers("a"), now: time.now });
        client.start();
        polls.send("x/one");
        await time.advance(0);
        assert.deepEqual(sockets.sockets.map((ws) => ws.url), ["wss://chat.example:8443/websocket"]);
        assert.equal(client.transport, "websocket");
        assert.equal(client.last, 1);
        assert.equal(polls.polls.length, 0);
        client.stop();
    });
    assert.equal(socketUrl({ protocol: "http:", host: "localhost:8069" }), "ws://localhost:8069/websocket");
});

test("without WebSocket the client long-polls", async () => {
    const time = new VirtualTime();
    const server = new PollServer(time);
    const page = Object.assign(new EventTarget(), { location: { protocol: "http:", host: "localhost:8069" } });
    await withWebSocket(undefined, async () => {
        const client = createBusClient({ window: page, rpc: server.rpcFor("a"), openChannel: () => null,
            timers: time.timers(), now: time.now });
        client.start();
        await time.advance(0);
        assert.equal(client.transport, "longpolling");
        assert.equal(server.inFlight, 1);
        client.stop();
    });
});
