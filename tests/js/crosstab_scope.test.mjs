import assert from "node:assert/strict";
import { test } from "node:test";

import { BusClient } from "../../mail/static/bus/client.js";
import { CROSSTAB_DEFAULTS } from "../../mail/static/bus/crosstab.js";
import { ChannelHub, PollServer, VirtualTime, seeded } from "./support.mjs";

/** Tabs of one browser (one origin, shared BroadcastChannels), each signed in as `scope`. */
function browser() {
    const time = new VirtualTime();
    const hub = new ChannelHub(time);
    const server = new PollServer(time);
    const tabs = [];
    const open = (scope) => {
        const name = `tab${tabs.length + 1}`;
        const client = new BusClient({
            rpc: server.rpcFor(name), openChannel: hub.opener(name), timers: time.timers(name),
            now: time.now, random: seeded(tabs.length + 1),
        });
        const tab = { name, client };
        tabs.push(tab);
        client.start(scope);
        return tab;
    };
    return { time, server, hub, open };
}

test("tabs of different users in one browser each poll for themselves", async () => {
    const { time, server, hub, open } = browser();
    const alice = open("127.0.0.1:8069:2");
    const bob = open("127.0.0.1:8069:3");
    await time.advance(CROSSTAB_DEFAULTS.electionMs + 2_000);
    assert.ok(alice.client.isLeader);
    assert.ok(bob.client.isLeader);
    assert.deepEqual(new Set([...hub.channels].map((channel) => channel.name)),
        new Set(["imbus.bus:127.0.0.1:8069:2", "imbus.bus:127.0.0.1:8069:3"]));
    assert.ok(server.polls.some((poll) => poll.tab === alice.name));
    assert.ok(server.polls.some((poll) => poll.tab === bob.name));
});

test("tabs of the same user share one leader, also after a restart", async () => {
    const { time, open } = browser();
    const first = open("host:2");
    const second = open("host:2");
    await time.advance(CROSSTAB_DEFAULTS.electionMs + 2_000);
    assert.equal([first, second].filter((tab) => tab.client.isLeader).length, 1);
    second.client.stop();
    second.client.start();
    await time.advance(CROSSTAB_DEFAULTS.electionMs + 2_000);
    assert.equal([first, second].filter((tab) => tab.client.isLeader).length, 1);
});
