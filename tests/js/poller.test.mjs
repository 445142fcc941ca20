import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../mail/static/bus/backoff.js";
import { Poller } from "../../mail/static/bus/poller.js";
import { RpcError } from "../../mail/static/bus/rpc.js";
import { PollServer, VirtualTime, sequence } from "./support.mjs";

function setup({ random = () => 0.5, rpc, answerTimeoutMs, options } = {}) {
    const time = new VirtualTime();
    const server = new PollServer(time);
    const received = [];
    const errors = [];
    const connection = [];
    const poller = new Poller({
        rpc: rpc || server.rpcFor("tab"),
        timers: time.timers(),
        backoff: new Backoff({ minMs: 1000, maxMs: 30000, random }),
        answerTimeoutMs,
        options,
        onNotifications: (items) => received.push(...items.map((item) => item.id)),
        onConnection: (state) => connection.push(state),
        onError: (error, retryInMs) => errors.push({ error, retryInMs, at: time.now() }),
    });
    return { time, server, poller, received, errors, connection };
}

test("each poll asks from the highest id received so far", async () => {
    const { time, server, poller, received } = setup();
    poller.setChannels(["b", "a"]);
    poller.start();
    await time.advance(0);
    assert.equal(server.polls.length, 1);
    assert.deepEqual(server.polls[0].params, { channels: ["a", "b"], last: 0, options: {} });

    server.send("x/one");
    await time.advance(0);
    server.send("x/two");
    server.send("x/three");
    await time.advance(0);
    assert.deepEqual(received, [1, 2, 3]);
    // x/two answered the parked poll; x/three came before the next one.
    assert.deepEqual(server.polls.map((poll) => poll.params.last), [0, 1, 2, 3]);
    assert.equal(poller.last, 3);
    assert.equal(server.inFlight, 1, "the next poll is parked at once");
    poller.stop();
});

test("last never moves backwards, and the poll's options are read at every poll", async () => {
    let calls = 0;
    const answers = [[{ id: 9, message: {} }, { id: 4, message: {} }], []];
    const seen = [];
    const rpc = async (path, params) => {
        seen.push(params);
        if (calls < answers.length) return answers[calls++];
        return new Promise(() => {});
    };
    const { time, poller } = setup({ rpc, options: () => ({ bus_inactivity: seen.length * 10 }) });
    poller.start();
    await time.advance(0);
    assert.deepEqual(seen.map((params) => params.last), [0, 9, 9]);
    assert.deepEqual(seen.map((params) => params.options.bus_inactivity), [0, 10, 20]);
    poller.stop();
});

test("failures back off with jitter, growing to the cap, and a success resets the back-off", async () => {
    const { time, server, poller, errors, connection } = setup({ random: sequence(0, 1) });
    server.failWith = () => new RpcError("The server cannot be reached.", { transport: true });
    poller.start();
    await time.advance(200_000);
    const starts = server.polls.map((poll) => poll.at);
    const gaps = starts.slice(1).map((at, i) => at - starts[i]);
    // random() alternates 0 and 1: half a step, a whole step, ... up to the 30 s cap.
    assert.deepEqual(gaps.slice(0, 7), [500, 2000, 2000, 8000, 8000, 30000, 15000]);
    assert.ok(gaps.every((gap) => gap >= 500 && gap <= 30000), String(gaps));
    assert.deepEqual(errors.map((error) => error.retryInMs), gaps.concat(errors.at(-1).retryInMs));
    assert.deepEqual(connection, ["offline"]);

    server.failWith = null;
    await time.advance(30_000);
    assert.deepEqual(connection, ["offline"], "online once a poll is answered, not when it is sent");
    server.send("x/news");
    await time.advance(0);
    assert.deepEqual(connection, ["offline", "online"]);
    const recovered = server.polls.length;
    server.failWith = () => new RpcError("Service Unavailable", { code: -32001, status: 503 });
    server.send("x/wake"); // answers the parked poll; the next one fails
    await time.advance(0);
    assert.equal(server.polls.length, recovered + 1);
    await time.advance(499);
    assert.equal(server.polls.length, recovered + 1, "not before half the first step");
    await time.advance(501);
    assert.equal(server.polls.length, recovered + 2, "within the first step again: the back-off was reset");
    poller.stop();
});

test("a server that fails at once is never polled in a tight loop", async () => {
    const { time, server, poller } = setup({ random: () => 0 });
    server.failWith = () => new RpcError("Internal Server Error", { code: -32603, status: 500 });
    poller.start();
    await time.advance(60_000);
    // 0.5 + 1 + 2 + 4 + 8 + 15 + 15 s: at most eight polls in a minute.
    assert.ok(server.polls.length <= 8, `${server.polls.length} polls in a minute`);
    poller.stop();
});

test("a poll left unanswered is abandoned, counted as a failure and retried after the back-off", async () => {
    const hung = [];
    const rpc = (path, params, { signal }) => new Promise((resolve, reject) => {
        hung.push(params);
        signal.addEventListener("abort", () => reject(Object.assign(new Error("aborted"), { name: "AbortError" })));
    });
    const { time, poller, errors } = setup({ rpc, answerTimeoutMs: 60_000, random: () => 0 });
    poller.start();
    await time.advance(59_999);
    assert.equal(hung.length, 1);
    await time.advance(1);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].error.transport, true);
    await time.advance(500);
    assert.equal(hung.length, 2);
    poller.stop();
});

test("an answer that is not a list is a failure, not notifications", async () => {
    let first = true;
    const rpc = async () => {
        if (first) {
            first = false;
            return { not: "a list" };
        }
        return new Promise(() => {});
    };
    const { time, poller, errors, received } = setup({ rpc });
    poller.start();
    await time.advance(0);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].error.transport, true);
    assert.deepEqual(received, []);
    poller.stop();
});

test("new channels abort the parked poll and send it again at once, from the same last", async () => {
    const { time, server, poller } = setup();
    poller.setChannels(["a"]);
    poller.start();
    server.send("x/one");
    await time.advance(1000);
    assert.equal(server.polls.length, 2);
    const changedAt = time.now();
    poller.setChannels(["a", "b"]);
    await time.advance(0);
    assert.equal(server.polls.length, 3, "re-polled without waiting");
    assert.deepEqual(server.polls[2].params.channels, ["a", "b"]);
    assert.equal(server.polls[2].params.last, 1);
    assert.equal(server.inFlight, 1, "the aborted poll is gone");
    assert.equal(server.polls[2].at, changedAt, "no back-off after a restart");

    poller.setChannels(["b", "a", "a"]);
    await time.advance(0);
    assert.equal(server.polls.length, 3, "the same channels in another order change nothing");
    poller.setChannels(["b"]);
    await time.advance(0);
    assert.deepEqual(server.polls[3].params.channels, ["b"]);
    poller.stop();
});

test("stop aborts the parked poll, and a stopped poller polls no more, even from its back-off", async () => {
    const { time, server, poller } = setup();
    poller.start();
    await time.advance(0);
    assert.equal(server.inFlight, 1);
    poller.stop();
    await time.advance(0);
    assert.equal(server.inFlight, 0);
    await time.advance(120_000);
    assert.equal(server.polls.length, 1);

    server.failWith = () => new RpcError("The server cannot be reached.", { transport: true });
    poller.start();
    await time.advance(0);
    poller.stop();
    await time.advance(120_000);
    assert.equal(server.polls.length, 2);
    assert.equal(poller.running, false);
});
