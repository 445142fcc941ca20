import assert from "node:assert/strict";
import { test } from "node:test";

import { NotificationLedger } from "../../mail/static/notifications.js";

test("a message is offered once, whichever path brings it again", () => {
    const ledger = new NotificationLedger();
    ledger.restart(3);
    assert.equal(ledger.take(4), true);
    assert.equal(ledger.take(4), false);
    assert.equal(ledger.take(5), true);
});

test("what the loaded session already showed is never news", () => {
    const ledger = new NotificationLedger();
    ledger.restart(10);
    assert.equal(ledger.take(9), false);
    assert.equal(ledger.take(10), false);
    assert.equal(ledger.take(11), true);
});

test("a new session forgets what the last one offered", () => {
    const ledger = new NotificationLedger();
    ledger.restart(0);
    assert.equal(ledger.take(7), true);
    ledger.restart(2);
    assert.equal(ledger.take(7), true);
});
