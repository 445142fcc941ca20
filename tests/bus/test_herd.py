"""Pacing the herd (bus/herd.py): rows that come while the polls a read woke
are still coming back wait for them, then for as long again, and all arrive
in one later answer; a row after a quiet spell is read at once."""
import time

from bus.herd import HerdPacer
from tests.support import ParkedPoll, post, wait_for, wait_parked


class Joins:
    """The hub's running count of polls that joined, moved by hand."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self) -> int:
        return self.count


def test_a_small_wake_up_is_never_paced():
    joins = Joins()
    pacer = HerdPacer(joins, herd=100)
    pacer.woke(99, now=10.0)
    assert pacer.hold(10.001) == 0.0


def test_rows_during_a_herd_wait_for_it_to_come_back_then_as_long_again():
    joins = Joins()
    pacer = HerdPacer(joins, herd=100, settle_max=1.0)
    pacer.woke(100, now=10.0)
    assert pacer.hold(10.1) > 0  # rows came: none of the herd is back yet
    joins.count = 89
    assert pacer.hold(10.2) > 0  # 89 % back is not back
    joins.count = 90
    assert abs(pacer.hold(10.3) - 0.3) < 1e-9  # back after 0.3 s: a pause of 0.3 s
    assert abs(pacer.hold(10.5) - 0.1) < 1e-9
    assert pacer.hold(10.61) == 0.0
    assert pacer.hold(10.62) == 0.0  # the herd is forgotten


def test_a_herd_back_before_any_row_came_costs_the_next_row_nothing():
    joins = Joins()
    pacer = HerdPacer(joins, herd=10)
    pacer.woke(10, now=10.0)
    joins.count = 10
    assert pacer.hold(10.4) == 0.0


def test_clients_that_never_come_back_hold_rows_for_at_most_twice_settle_max():
    joins = Joins()
    pacer = HerdPacer(joins, herd=10, settle_max=0.5)
    pacer.woke(1000, now=10.0)
    assert 0 < pacer.hold(10.2) <= 0.3
    assert abs(pacer.hold(10.5) - 0.5) < 1e-9  # waited long enough: now the pause
    assert pacer.hold(11.0) == 0.0


def test_a_read_no_row_asked_for_waits_for_the_herd_but_brings_no_pause():
    joins = Joins()
    pacer = HerdPacer(joins, herd=10)
    pacer.woke(10, now=10.0)
    assert pacer.hold(10.1, rows=False) > 0  # a gap's recheck, say
    joins.count = 10
    assert pacer.hold(10.2, rows=False) == 0.0


def test_a_later_small_wake_up_ends_the_pacing():
    joins = Joins()
    pacer = HerdPacer(joins, herd=10)
    pacer.woke(10, now=10.0)
    pacer.woke(2, now=10.1)
    assert pacer.hold(10.2) == 0.0


def test_pacing_turned_off_never_holds_a_read(make_app):
    assert make_app(pace_herds=False).dispatcher.pacer.herd is None
    pacer = HerdPacer(Joins(), herd=None)
    pacer.woke(1_000_000, now=10.0)
    assert pacer.hold(10.001) == 0.0


def _herd_heard_one(app, http, herd: int = 3) -> int:
    """``herd`` polls (pacing from that many on) woken by a post; its id."""
    app.dispatcher.pacer.herd = herd
    app.dispatcher.pacer.settle_max = 5.0
    first = [ParkedPoll(http.url, ["room"], 0) for _ in range(herd)]
    wait_parked(app, herd)
    post(app, "room", "one")
    answers = [p.result(5) for p in first]
    one = answers[0][-1]["id"]
    assert all([entry["id"] for entry in answer] == [one] for answer in answers)
    return one


def _payloads(polls: list[ParkedPoll]) -> list[list[str]]:
    return [[entry["message"]["payload"] for entry in p.result(10)] for p in polls]


def test_rows_posted_while_a_herd_is_out_all_come_in_one_answer_once_it_is_back(app, http):
    one = _herd_heard_one(app, http)
    # Nobody has polled again: the next rows wait for the herd.
    post(app, "room", "two")
    post(app, "room", "three")
    time.sleep(0.3)
    assert app.dispatcher.position == one

    again = [ParkedPoll(http.url, ["room"], one) for _ in range(3)]
    assert _payloads(again) == [["two", "three"]] * 3


def test_a_row_after_a_quiet_spell_is_read_at_once_whatever_the_herd(app, http):
    one = _herd_heard_one(app, http)
    again = [ParkedPoll(http.url, ["room"], one) for _ in range(3)]
    wait_parked(app, 3)
    wait_for(lambda: app.dispatcher.hub.joins >= 6, 5, "the herd back")

    started = time.monotonic()
    post(app, "room", "two")
    assert _payloads(again) == [["two"]] * 3
    # Far less than the pause a flood would get (settle_max is 5 s here).
    assert time.monotonic() - started < 2.0
