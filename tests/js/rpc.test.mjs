import assert from "node:assert/strict";
import { test } from "node:test";

import { RpcError, createRpc } from "../../mail/static/bus/rpc.js";

/** A fetch that records its calls and answers with the given Response. */
function fetchAnswering(makeResponse) {
    const calls = [];
    const fetch = async (url, init) => {
        calls.push({ url, init, body: JSON.parse(init.body) });
        return typeof makeResponse === "function" ? makeResponse() : makeResponse;
    };
    return { fetch, calls };
}

const json = (body, status = 200) => new Response(JSON.stringify(body), {
    status, headers: { "Content-Type": "application/json" },
});

async function rejection(promise) {
    try {
        await promise;
    } catch (error) {
        return error;
    }
    assert.fail("expected a rejection");
}

test("sends a JSON-RPC 2.0 call and resolves with its result", async () => {
    const { fetch, calls } = fetchAnswering(() => json({ jsonrpc: "2.0", id: 1, result: [{ id: 4 }] }));
    const rpc = createRpc({ fetch });
    assert.deepEqual(await rpc("/longpolling/poll", { channels: ["a"], last: 3, options: {} }), [{ id: 4 }]);
    await rpc("/longpolling/poll", {});
    assert.equal(calls[0].url, "/longpolling/poll");
    assert.equal(calls[0].init.method, "POST");
    assert.equal(calls[0].init.headers["Content-Type"], "application/json");
    assert.deepEqual(calls[0].body, {
        jsonrpc: "2.0", method: "call", params: { channels: ["a"], last: 3, options: {} }, id: 1,
    });
    assert.equal(calls[1].body.id, 2, "each call has an id of its own");
});

test("an application error is read from the body of an HTTP 200 answer (Odoo 15)", async () => {
    const { fetch } = fetchAnswering(() => json({
        jsonrpc: "2.0", id: 1,
        error: { code: 200, message: "Odoo Server Error", data: { name: "odoo.exceptions.AccessDenied", message: "Access Denied" } },
    }));
    const error = await rejection(createRpc({ fetch })("/web/session/authenticate", {}));
    assert.ok(error instanceof RpcError);
    assert.equal(error.transport, false);
    assert.equal(error.code, 200);
    assert.equal(error.status, 200);
    assert.equal(error.data.name, "odoo.exceptions.AccessDenied");
    assert.equal(error.message, "Access Denied");
    assert.equal(error.sessionExpired, false);
});

test("session expiry is recognised by code 100 or by the exception's name", async () => {
    for (const error of [
        { code: 100, message: "Odoo Session Expired", data: { name: "session_expired" } },
        { code: 200, message: "Odoo Server Error", data: { name: "odoo.http.SessionExpiredException" } },
    ]) {
        const { fetch } = fetchAnswering(() => json({ jsonrpc: "2.0", id: 1, error }));
        const failure = await rejection(createRpc({ fetch })("/mail/init_messaging"));
        assert.equal(failure.sessionExpired, true, JSON.stringify(error));
    }
});

test("a JSON error body under a 4xx or 5xx status is an application error with that status", async () => {
    const { fetch } = fetchAnswering(() => json(
        { jsonrpc: "2.0", id: 1, error: { code: 413, message: "body over 1048576 bytes", data: { name: "payload_too_large" } } },
        413,
    ));
    const error = await rejection(createRpc({ fetch })("/mail/message/post"));
    assert.equal(error.transport, false);
    assert.equal(error.status, 413);
    assert.equal(error.code, 413);
    assert.match(error.message, /bytes/);
});

test("a body that is not JSON-RPC, or no answer at all, is a transport error", async () => {
    const answers = [
        () => new Response("<html>502 Bad Gateway</html>", { status: 502, headers: { "Content-Type": "text/html" } }),
        () => new Response("", { status: 503 }),
        () => json({ unexpected: true }),
        () => json("just a string"),
    ];
    for (const answer of answers) {
        const { fetch } = fetchAnswering(answer);
        const error = await rejection(createRpc({ fetch })("/longpolling/poll"));
        assert.ok(error instanceof RpcError);
        assert.equal(error.transport, true);
    }
    const offline = async () => {
        throw new TypeError("Failed to fetch");
    };
    const error = await rejection(createRpc({ fetch: offline })("/longpolling/poll"));
    assert.equal(error.transport, true);
    assert.equal(error.status, 0);
});

test("an aborted call rejects with the AbortError, not an RpcError", async () => {
    const fetch = (url, { signal }) => new Promise((resolve, reject) => {
        signal.addEventListener("abort", () => reject(new DOMException("aborted", "AbortError")));
    });
    const controller = new AbortController();
    const call = createRpc({ fetch })("/longpolling/poll", {}, { signal: controller.signal });
    controller.abort();
    const error = await rejection(call);
    assert.equal(error.name, "AbortError");
    assert.ok(!(error instanceof RpcError));
});

test("an RpcError survives the trip to another tab", () => {
    const original = new RpcError("Session expired", { code: 100, data: { name: "session_expired" }, status: 200 });
    const copy = RpcError.fromJSON(structuredClone(original.toJSON()));
    assert.ok(copy instanceof RpcError);
    assert.equal(copy.message, "Session expired");
    assert.equal(copy.sessionExpired, true);
    assert.equal(copy.status, 200);
});
