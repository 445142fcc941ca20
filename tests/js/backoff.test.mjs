import assert from "node:assert/strict";
import { test } from "node:test";

import { Backoff } from "../../mail/static/bus/backoff.js";
import { sequence } from "./support.mjs";

test("delays double from the minimum, jittered between half a step and a step", () => {
    const low = new Backoff({ minMs: 1000, maxMs: 30000, random: () => 0 });
    assert.deepEqual([1, 2, 3, 4].map(() => low.next()), [500, 1000, 2000, 4000]);
    const high = new Backoff({ minMs: 1000, maxMs: 30000, random: () => 0.999999 });
    for (const step of [1000, 2000, 4000, 8000]) {
        const delay = high.next();
        assert.ok(delay > step * 0.999 && delay <= step, `${delay} for a step of ${step}`);
    }
});

test("delays are capped, and start again from the minimum after a reset", () => {
    const backoff = new Backoff({ minMs: 1000, maxMs: 30000, random: sequence(0.3, 0.9, 0.6) });
    const delays = Array.from({ length: 40 }, () => backoff.next());
    assert.ok(delays.every((delay) => delay >= 500 && delay <= 30000), String(delays));
    assert.ok(delays.slice(10).every((delay) => delay >= 15000), "the step stays at the cap");
    backoff.reset();
    const after = backoff.next();
    assert.ok(after >= 500 && after <= 1000, `${after} after a reset`);
});

test("jitter spreads clients that failed together", () => {
    const delays = [0.1, 0.5, 0.9].map((value) => new Backoff({ random: () => value }).next());
    assert.equal(new Set(delays).size, 3);
});

test("a minimum of zero or a maximum under it is refused (it would allow a tight loop)", () => {
    assert.throws(() => new Backoff({ minMs: 0 }), RangeError);
    assert.throws(() => new Backoff({ minMs: 5000, maxMs: 1000 }), RangeError);
});
