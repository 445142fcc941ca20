import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../mail/static/bus/backoff.js";
import { BusSocket, CLOSE } from "../../mail/static/bus/socket.js";
import { PollServer, SocketServer, VirtualTime, sequence } from "./support.mjs";

const URL = "ws://chat.test/websocket";

function setup({ random = () => 0.5, options, openSocket } = {}) {
    const time = new VirtualTime();
    const polls = new PollServer(time);
    const server = new SocketServer(time, polls);
    const received = [];
    const errors = [];
    const connection = [];
    const socket = new BusSocket({
        openSocket: openSocket || server.openerFor("tab"),
        url: URL,
        timers: time.timers(),
        now: time.now,
        backoff: new Backoff({ minMs: 1000, maxMs: 30000, random }),
        options,
        onNotifications: (items) => received.push(...items.map((item) => ({ id: item.id, last: socket.last }))),
        onConnection: (state) => connection.push(state),
        onError: (error, retryInMs) => errors.push({ error, retryInMs, at: time.now() }),
    });
    const ids = () => received.map((item) => item.id);
    return { time, polls, server, socket, received, ids, errors, connection };
}

test("an open socket subscribes with the channels, last and options, and nothing is sent before it opens", async () => {
    const sent = [];
    const { time, server, socket, connection } = setup({ options: () => ({ bus_inactivity: 7 }) });
    const opener = server.openerFor("tab");
    socket.openSocket = (url) => {
        const ws = opener(url);
        const send = ws.send.bind(ws);
        ws.send = (data) => {
            sent.push(data);
            send(data);
        };
        return ws;
    };
    socket.setChannels(["b", "a", "b"]);
    socket.last = 4;
    socket.start();
    assert.equal(server.sockets.length, 1);
    assert.equal(server.sockets[0].url, URL);
    assert.deepEqual(sent, []);
    await time.advance(0);
    assert.deepEqual(sent.map((data) => JSON.parse(data)), [
        { event_name: "subscribe", data: { channels: ["a", "b"], last: 4, options: { bus_inactivity: 7 } } },
    ]);
    assert.deepEqual(connection, ["online"]);
    socket.stop();
});

test("new channels while open subscribe again at once, from the same last; the same channels send nothing", async () => {
    const { time, polls, server, socket } = setup();
    socket.setChannels(["a"]);
    socket.start();
    polls.send("x/one");
    await time.advance(1000);
    const [ws] = server.sockets;
    socket.setChannels(["a", "b"]);
    assert.deepEqual(ws.subscriptions.map((params) => [params.channels, params.last]), [[["a"], 0], [["a", "b"], 1]]);
    socket.setChannels(["b", "a", "a"]);
    assert.equal(ws.subscriptions.length, 2);
    assert.equal(server.sockets.length, 1, "the same socket");
    socket.stop();
});

test("channels set while the socket is connecting go in its first subscribe", async () => {
    const { time, server, socket } = setup();
    socket.start();
    socket.setChannels(["late"]);
    await time.advance(0);
    assert.deepEqual(server.sockets[0].subscriptions.map((params) => params.channels), [["late"]]);
    socket.stop();
});

test("notifications come in order and never twice, after last moved past them", async () => {
    const { time, polls, server, socket, received, ids } = setup();
    socket.start();
    await time.advance(0);
    polls.send("x/one");
    polls.send("x/two");
    await time.advance(0);
    polls.send("x/three");
    await time.advance(0);
    const [ws] = server.sockets;
    server.push(ws, JSON.stringify([2, 3, 1, 4, 4, 5].map((id) => ({ id, message: { type: "x/again", payload: {} } }))));
    server.push(ws, JSON.stringify([{ id: 3, message: {} }]));
    await time.advance(0);
    assert.deepEqual(ids(), [1, 2, 3, 4, 5]);
    assert.deepEqual(received.map((item) => item.last), [1, 2, 3, 5, 5], "last is past each batch when it is delivered");
    assert.equal(socket.last, 5);
    socket.stop();
});

test("a dropped socket opens again after the back-off and subscribes from last; what came meanwhile comes once", async () => {
    const { time, polls, server, socket, ids, errors, connection } = setup({ random: () => 0 });
    socket.setChannels(["a"]);
    socket.start();
    polls.send("x/one");
    polls.send("x/two");
    await time.advance(1000);
    server.closeAll(CLOSE.GOING_AWAY, "the server is shutting down");
    polls.send("x/while-down");
    await time.advance(0);
    assert.deepEqual(connection, ["online", "offline"]);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].error.transport, true);
    assert.equal(errors[0].error.sessionExpired, false);
    assert.equal(errors[0].retryInMs, 500);
    await time.advance(499);
    assert.equal(server.sockets.length, 1, "not before the back-off");
    await time.advance(1);
    assert.equal(server.sockets.length, 2);
    await time.advance(0);
    assert.deepEqual(server.sockets[1].subscriptions, [{ channels: ["a"], last: 2, options: {} }]);
    assert.deepEqual(ids(), [1, 2, 3]);
    assert.deepEqual(connection, ["online", "offline", "online"]);
    socket.stop();
});

test("a server that refuses sockets is retried with growing, jittered delays, never in a tight loop", async () => {
    const { time, server, socket, errors, connection } = setup({ random: sequence(0, 1) });
    server.accepting = false;
    socket.start();
    await time.advance(200_000);
    const starts = server.sockets.map((ws) => ws.at);
    const gaps = starts.slice(1).map((at, i) => at - starts[i]);
    assert.deepEqual(gaps.slice(0, 7), [500, 2000, 2000, 8000, 8000, 30000, 15000]);
    assert.ok(gaps.every((gap) => gap >= 500 && gap <= 30000), String(gaps));
    assert.deepEqual(errors.map((error) => error.retryInMs), gaps.concat(errors.at(-1).retryInMs));
    assert.ok(errors.every(({ error }) => error.transport && error.data.close_code === CLOSE.ABNORMAL));
    assert.equal(socket.refusals, server.sockets.length);
    assert.equal(socket.everOpened, false);
    assert.deepEqual(connection, ["offline"]);
    socket.stop();
});

test("a socket the server closes right after each subscribe backs off instead of reconnecting at once", async () => {
    const { time, polls, server, socket, errors } = setup({ random: () => 0 });
    const opener = server.openerFor("tab");
    socket.openSocket = (url) => {
        const ws = opener(url);
        const send = ws.send.bind(ws);
        ws.send = (data) => {
            send(data);
            server.close(ws, CLOSE.SERVER_ERROR, "internal error");
        };
        return ws;
    };
    socket.start();
    await time.advance(60_000);
    // 0.5 + 1 + 2 + 4 + 8 + 15 + 15 s: at most eight sockets in a minute.
    assert.ok(server.sockets.length <= 8, `${server.sockets.length} sockets in a minute`);
    assert.ok(errors.every(({ error }) => error.transport && error.data.close_code === CLOSE.SERVER_ERROR));
    assert.equal(errors[0].error.message, "internal error");
    socket.stop();
});

test("a socket that stayed open long after a failure starts the back-off from its shortest delay again", async () => {
    const { time, polls, server, socket, errors } = setup({ random: () => 0 });
    server.accepting = false;
    socket.start();
    await time.advance(4_000); // refused at 0, 0.5, 1.5 and 3.5 s: the next delay is 4 s
    server.accepting = true;
    await time.advance(10_000);
    assert.equal(server.open.length, 1);
    polls.send("x/news"); // a healthy socket
    await time.advance(0);
    server.closeAll(CLOSE.GOING_AWAY);
    await time.advance(0);
    assert.equal(errors.at(-1).retryInMs, 500);

    await time.advance(500);
    assert.equal(server.open.length, 1);
    await time.advance(60_000); // quiet, but open longer than the longest delay
    server.closeAll(CLOSE.TRY_AGAIN_LATER, "try again later");
    await time.advance(0);
    assert.equal(errors.at(-1).retryInMs, 500);
    socket.stop();
});

test("4001: a session-expired error, reported once, and no reconnecting until started again", async () => {
    const { time, polls, server, socket, errors, connection } = setup();
    socket.start();
    polls.send("x/one");
    await time.advance(0);
    server.closeAll(CLOSE.SESSION_EXPIRED, "Session expired");
    await time.advance(600_000);
    assert.equal(server.sockets.length, 1, "no new socket");
    assert.equal(errors.length, 1);
    assert.equal(errors[0].error.sessionExpired, true);
    assert.equal(errors[0].error.name, "RpcError");
    assert.equal(errors[0].retryInMs, null);
    assert.equal(JSON.parse(JSON.stringify(errors[0].error)).code, 100, "survives the relay to other tabs");
    assert.deepEqual(connection, ["online", "offline"]);

    socket.stop();
    socket.start(); // signed in again
    await time.advance(0);
    assert.equal(server.sockets.length, 2);
    assert.equal(server.sockets[1].subscriptions[0].last, 1);
    socket.stop();
});

test("1003, 1008 and 1009 are reported as errors that no retry fixes, and retried with back-off", async () => {
    for (const code of [CLOSE.UNSUPPORTED, CLOSE.POLICY, CLOSE.TOO_BIG]) {
        const { time, server, socket, errors } = setup({ random: () => 0 });
        socket.start();
        await time.advance(0);
        server.closeAll(code, "too many channels");
        await time.advance(0);
        assert.equal(errors.length, 1, String(code));
        assert.equal(errors[0].error.transport, false);
        assert.equal(errors[0].error.sessionExpired, false);
        assert.equal(errors[0].error.data.close_code, code);
        assert.equal(errors[0].error.message, "too many channels");
        assert.equal(errors[0].retryInMs, 500);
        await time.advance(499);
        assert.equal(server.sockets.length, 1);
        await time.advance(1);
        assert.equal(server.sockets.length, 2);
        socket.stop();
    }
});

test("a frame that is not a list of notifications closes the socket and reconnects from last, delivering nothing of it", async () => {
    for (const frame of ["not json", JSON.stringify({ id: 9, message: {} }), "null"]) {
        const { time, polls, server, socket, ids, errors } = setup({ random: () => 0 });
        socket.start();
        polls.send("x/one");
        await time.advance(0);
        const [ws] = server.sockets;
        server.push(ws, frame);
        await time.advance(0);
        assert.equal(errors.length, 1, frame);
        assert.equal(errors[0].error.transport, true);
        assert.equal(ws.closedBy && ws.closedBy.side, "client");
        assert.deepEqual(ids(), [1]);
        await time.advance(500);
        assert.equal(server.sockets.length, 2);
        assert.equal(server.sockets[1].subscriptions[0].last, 1);
        socket.stop();
    }
});

test("an openSocket that throws counts as a failed attempt and is retried after the back-off", async () => {
    let calls = 0;
    const { time, socket, errors } = setup({
        random: () => 0,
        openSocket: () => {
            calls += 1;
            throw new SyntaxError("The URL's scheme must be either 'ws' or 'wss'.");
        },
    });
    socket.start();
    await time.advance(0);
    assert.equal(calls, 1);
    assert.equal(errors[0].error.transport, true);
    assert.equal(socket.refusals, 1);
    await time.advance(500);
    assert.equal(calls, 2);
    socket.stop();
});

test("stop closes the socket normally, and a stopped socket opens no other, even from its back-off", async () => {
    const { time, server, socket } = setup();
    socket.start();
    await time.advance(0);
    socket.stop();
    assert.deepEqual(server.sockets[0].closedBy, { side: "client", code: CLOSE.NORMAL, reason: "" });
    await time.advance(120_000);
    assert.equal(server.sockets.length, 1);

    server.accepting = false;
    socket.start();
    await time.advance(0);
    socket.stop();
    await time.advance(120_000);
    assert.equal(server.sockets.length, 2);
    assert.equal(socket.running, false);
});
