"""The dispatcher's row observers: every final row, once, in id order,
handed over before any poll can be answered past it."""
from bus import sendmany
from tests.support import ParkedPoll, wait_for


def test_observers_see_every_row_before_the_polls_do(app, http):
    seen = []

    def observe(rows):
        # Nothing of these rows is visible to polls yet: not the position,
        # not the window.
        seen.append(([row[0] for row in rows], app.dispatcher.position,
                     app.dispatcher.window.answer([rows[0][1]], rows[0][0] - 1, rows[0][0])))

    app.dispatcher.observe(observe)
    parked = ParkedPoll(http.url, ["room"], 0)
    wait_for(lambda: app.dispatcher.waiter_count == 1, 5, "the poll parking")
    for batch in range(3):
        with app.database.transaction() as tx:
            sendmany(tx, [("room", "test", {"n": batch * 10 + i}) for i in range(batch + 1)])
    assert parked.result(5)
    wait_for(lambda: sum(len(ids) for ids, _, _ in seen) == 6, 5, "every row being observed")
    ids = [row_id for row_ids, _, _ in seen for row_id in row_ids]
    assert ids == sorted(set(ids))
    for row_ids, position, window in seen:
        assert position < row_ids[0] and list(window) == []


def test_a_failing_observer_does_not_stop_the_bus(app, http):
    def fail(rows):
        raise RuntimeError("observer bug")

    app.dispatcher.observe(fail)
    parked = ParkedPoll(http.url, ["room"], 0)
    wait_for(lambda: app.dispatcher.waiter_count == 1, 5, "the poll parking")
    with app.database.transaction() as tx:
        sendmany(tx, [("room", "test", {"n": 1})])
    assert [entry["message"]["payload"] for entry in parked.result(5)] == [{"n": 1}]
