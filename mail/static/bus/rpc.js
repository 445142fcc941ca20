/**
 * JSON-RPC 2.0 over fetch, as Odoo's `type="json"` routes speak it.
 *
 * The error is read from the JSON body whatever the HTTP status: Odoo 15
 * answers application errors with HTTP 200 and `error.data.name`, other
 * servers with 4xx/5xx. An answer that is not a JSON-RPC object (a proxy's
 * HTML error page, a cut connection, a network failure) is a *transport*
 * error: worth retrying later, unlike an application error.
 */

export class RpcError extends Error {
    /**
     * @param {string} message
     * @param {{code?: number|null, data?: object, status?: number, transport?: boolean}} details
     */
    constructor(message, { code = null, data = {}, status = 0, transport = false } = {}) {
        super(message);
        this.name = "RpcError";
        this.code = code;
        this.data = data || {};
        this.status = status;
        this.transport = transport;
    }

    /** Odoo's "log in again": code 100, or its exception's name. */
    get sessionExpired() {
        return this.code === 100 || /session.?expired/i.test(this.data.name || "");
    }

    /** A plain object that survives `postMessage`, for relaying to other tabs. */
    toJSON() {
        return { message: this.message, code: this.code, data: this.data, status: this.status, transport: this.transport };
    }

    static fromJSON(value) {
        return new RpcError(value.message, value);
    }
}

/**
 * A JSON-RPC caller bound to a fetch function.
 *
 * @param {{fetch?: typeof fetch, credentials?: RequestCredentials, baseUrl?: string}} env
 * @returns {(path: string, params?: object, init?: {signal?: AbortSignal}) => Promise<any>}
 *   resolves with `result`; rejects with an RpcError, or with the fetch's
 *   own AbortError when the signal aborts it.
 */
export function createRpc({ fetch = globalThis.fetch.bind(globalThis), credentials = "same-origin", baseUrl = "" } = {}) {
    let sequence = 0;
    return async function rpc(path, params = {}, { signal } = {}) {
        let response;
        try {
            response = await fetch(baseUrl + path, {
                method: "POST",
                credentials,
                headers: { "Content-Type": "application/json" },
                body: JSON.stringify({ jsonrpc: "2.0", method: "call", params, id: ++sequence }),
                signal,
            });
        } catch (error) {
            if (isAbort(error, signal)) throw error;
            throw new RpcError("The server cannot be reached.", { transport: true });
        }
        const payload = await readJson(response, signal);
        const envelope = payload !== null && typeof payload === "object" ? payload : {};
        if (envelope.error !== null && typeof envelope.error === "object") {
            throw applicationError(envelope.error, response.status);
        }
        if (!("result" in envelope)) {
            throw new RpcError(`The server answered HTTP ${response.status}.`, { status: response.status, transport: true });
        }
        return envelope.result;
    };
}

function isAbort(error, signal) {
    return (signal && signal.aborted) || (error && error.name === "AbortError");
}

/** The body as JSON, or null when it is not JSON (or was cut short). */
async function readJson(response, signal) {
    try {
        return await response.json();
    } catch (error) {
        if (isAbort(error, signal)) throw error;
        return null;
    }
}

function applicationError(error, status) {
    const data = error.data && typeof error.data === "object" ? error.data : {};
    const message = data.message || error.message || `Error ${error.code}`;
    return new RpcError(message, { code: error.code ?? null, data, status });
}
