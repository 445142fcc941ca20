/**
 * The browser's bus client: `createBusClient()` wires `BusClient` to fetch,
 * WebSocket, the window's timers, BroadcastChannel and the page's life cycle.
 *
 *     import { createBusClient } from "/static/bus/index.js";
 *     const bus = createBusClient();
 *     bus.addEventListener("notification", ({ detail }) => show(detail.type, detail.payload));
 *     bus.addEventListener("outdated", () => reloadEverything());
 *     bus.start();
 */
import { BusClient } from "./client.js";
import { createRpc } from "./rpc.js";
import { SOCKET_ROUTE } from "./socket.js";

export { Backoff } from "./backoff.js";
export { BusClient, BusEvent, OUTDATED } from "./client.js";
export { CROSSTAB_DEFAULTS, CrossTab } from "./crosstab.js";
export { POLL_ROUTE, Poller } from "./poller.js";
export { RpcError, createRpc } from "./rpc.js";
export { BusSocket, CLOSE, SOCKET_ROUTE } from "./socket.js";
export { TRANSPORTS, Transport } from "./transport.js";

const ACTIVITY_EVENTS = ["pointerdown", "keydown", "touchstart", "mousemove", "focus"];

/**
 * The transport is "auto" (a WebSocket to the page's own host, long-polling
 * if none opens) in a browser with WebSocket, else "longpolling".
 *
 * @param {object} [options] any `BusClient` option (`rpc`, `transport`, `route`, `backoff`, `crosstab`, ...)
 * @param {Window} [options.window] the page whose activity and life cycle the client follows
 * @returns {BusClient}
 */
export function createBusClient({ window: page = globalThis.window, ...options } = {}) {
    const location = page && page.location;
    const sockets = typeof WebSocket === "function" && Boolean(location);
    const client = new BusClient({
        rpc: createRpc(),
        openChannel: typeof BroadcastChannel === "function" ? (name) => new BroadcastChannel(name) : () => null,
        transport: sockets ? "auto" : "longpolling",
        openSocket: sockets ? (url) => new WebSocket(url) : undefined,
        socketUrl: location ? socketUrl(location) : undefined,
        ...options,
    });
    if (page) followPage(client, page);
    return client;
}

/** The page's own host, over TLS if the page is. */
export function socketUrl(location) {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    return `${scheme}//${location.host}${SOCKET_ROUTE}`;
}

/** User activity feeds `bus_inactivity`; a hidden page leaves its peers
 * (saying so, so that another tab takes over at once) and joins again if
 * the browser brings it back from its back/forward cache. */
function followPage(client, page) {
    const noteActivity = () => client.noteActivity();
    for (const type of ACTIVITY_EVENTS) page.addEventListener(type, noteActivity, { passive: true, capture: true });
    let resume = false;
    page.addEventListener("pagehide", () => {
        resume = client.running;
        client.stop();
    });
    page.addEventListener("pageshow", (event) => {
        if (event.persisted && resume) client.start();
    });
}
