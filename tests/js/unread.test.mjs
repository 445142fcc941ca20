import assert from "node:assert/strict";
import { test } from "node:test";

import { firstUnreadId } from "../../mail/static/unread.js";

const message = (id, author) => ({ id, author_id: [author, `p${author}`] });

test("the line goes above the first message after the seen marker", () => {
    const history = [message(1, 7), message(2, 7), message(3, 7)];
    assert.equal(firstUnreadId(history, 1, 3), 2);
    assert.equal(firstUnreadId(history, 0, 3), 1);
});

test("no line when everything was seen or the rest is one's own", () => {
    assert.equal(firstUnreadId([message(1, 7), message(2, 3)], 1, 3), null);
    assert.equal(firstUnreadId([message(1, 7)], 1, 3), null);
    assert.equal(firstUnreadId([message(1, 3), message(2, 7)], 0, 3), 2);
});
