import assert from "node:assert/strict";
import { test } from "node:test";

import { createBusClient } from "../../mail/static/bus/index.js";
import { ChannelHub, PollServer, VirtualTime } from "./support.mjs";

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
