import assert from "node:assert/strict";
import { test } from "node:test";

import { BusClient } from "../../mail/static/bus/client.js";
import { PollServer, VirtualTime } from "./support.mjs";

const EVENTS = ["notification", "outdated", "connection", "error", "leader"];

/** One tab in a browser without BroadcastChannel: it polls alone. */
function lone({ rpc } = {}) {
    const time = new VirtualTime();
    const server = new PollServer(time);
    const client = new BusClient({ rpc: rpc || server.rpcFor("tab"), timers: time.timers(), now: time.now });
    const events = [];
    for (const name of EVENTS) client.addEventListener(name, (event) => events.push({ event: name, ...event.detail }));
    return { time, server, client, events };
}

test("a tab alone polls at once and emits each notification with its id, type and payload", async () => {
    const { time, server, client, events } = lone();
    client.start();
    await time.advance(0);
    assert.equal(server.polls.length, 1);
    assert.equal(client.isLeader, true);
    server.send("mail.channel/new_message", { id: 7, message: { body: "hi" } });
    server.send("bus/im_status", { partner_id: 3, im_status: "online" });
    await time.advance(0);
    assert.deepEqual(events, [
        { event: "leader", leader: true },
        { event: "connection", state: "online" },
        { event: "notification", id: 1, type: "mail.channel/new_message", payload: { id: 7, message: { body: "hi" } } },
        { event: "notification", id: 2, type: "bus/im_status", payload: { partner_id: 3, im_status: "online" } },
    ]);
    assert.equal(client.last, 2);
    client.stop();
});

test("bus/outdated is an event of its own, in its place among the notifications", async () => {
    const { time, server, client, events } = lone();
    client.start();
    server.send("bus/outdated");
    server.send("x/after");
    await time.advance(0);
    assert.deepEqual(events.filter((event) => event.event !== "leader" && event.event !== "connection"), [
        { event: "outdated", id: 1 },
        { event: "notification", id: 2, type: "x/after", payload: {} },
    ]);
    client.stop();
});

test("a notification is emitted once even when an answer repeats it", async () => {
    let answered = false;
    const rpc = async () => {
        if (answered) return new Promise(() => {});
        answered = true;
        return [1, 1, 2, 1].map((id) => ({ id, message: { type: "x/y", payload: {} } }));
    };
    const { time, client, events } = lone({ rpc });
    client.start();
    await time.advance(0);
    assert.deepEqual(events.filter((event) => event.event === "notification").map((event) => event.id), [1, 2]);
    client.stop();
});

test("adding or removing a channel re-sends the parked poll with the new list", async () => {
    const { time, server, client } = lone();
    client.addChannel("public-uuid");
    client.start();
    await time.advance(0);
    assert.deepEqual(server.polls[0].params.channels, ["public-uuid"]);
    client.addChannel("other");
    await time.advance(0);
    assert.deepEqual(server.polls.at(-1).params.channels, ["other", "public-uuid"]);
    client.addChannel("other");
    client.removeChannel("public-uuid");
    await time.advance(0);
    assert.deepEqual(server.polls.map((poll) => poll.params.channels), [["public-uuid"], ["other", "public-uuid"], ["other"]]);
    assert.equal(server.inFlight, 1);
    client.stop();
});

test("bus_inactivity is the time since the user last did something", async () => {
    const { time, server, client } = lone();
    client.start();
    await time.advance(0);
    assert.equal(server.polls[0].params.options.bus_inactivity, 0);
    await time.advance(30_000);
    server.send("x/y");
    await time.advance(0);
    assert.equal(server.polls.at(-1).params.options.bus_inactivity, 30_000);
    client.noteActivity();
    await time.advance(5_000);
    server.send("x/y");
    await time.advance(0);
    assert.equal(server.polls.at(-1).params.options.bus_inactivity, 5_000);
    client.stop();
});

test("a stopped client can start again (log out, log in) and goes on from its last", async () => {
    const { time, server, client } = lone();
    client.start();
    server.send("x/one");
    await time.advance(0);
    client.stop();
    await time.advance(0);
    assert.equal(server.inFlight, 0);
    assert.equal(client.isLeader, false);
    client.start();
    await time.advance(0);
    assert.equal(server.polls.at(-1).params.last, 1);
    assert.equal(server.inFlight, 1);
    client.stop();
});
