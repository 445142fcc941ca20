/**
 * Delays between retries after failures: doubling from `minMs` up to
 * `maxMs`, with "equal jitter" (a delay is drawn between half the step and
 * the step), so that the clients of a restarted server do not all come back
 * in the same instant, and a failing client never retries in a tight loop.
 */
export class Backoff {
    /** @param {{minMs?: number, maxMs?: number, random?: () => number}} options */
    constructor({ minMs = 1000, maxMs = 30000, random = Math.random } = {}) {
        if (!(minMs > 0) || !(maxMs >= minMs)) throw new RangeError("need 0 < minMs <= maxMs");
        this.minMs = minMs;
        this.maxMs = maxMs;
        this.random = random;
        this.failures = 0;
    }

    /** The delay before the next try, after one more failure. */
    next() {
        const step = Math.min(this.maxMs, this.minMs * 2 ** this.failures);
        this.failures += 1;
        return step / 2 + this.random() * (step / 2);
    }

    /** A success: the next failure starts from `minMs` again. */
    reset() {
        this.failures = 0;
    }
}
