"""The dispatcher's window of recent rows: whatever rows came in whatever
batches, and however its blocks were merged and trimmed, an answer holds
exactly the rows after ``last``, and its JSON array on the wire (the
slices of shared blocks a server writes) says the same."""
import json
import random

from bus.channels import array_parts, encode_message
from bus.window import SMALL_ANSWER, Window


def wire_ids(answer):
    return [entry["id"] for entry in json.loads(b"".join(array_parts(answer)))]


def fill(window, batches, channels, rng, start=1):
    """Add ``batches`` reads of random sizes on random channels; return the rows."""
    rows, row_id = [], start
    for _ in range(batches):
        batch = []
        for _ in range(rng.randint(1, 12)):
            batch.append((row_id, rng.choice(channels), encode_message("t", {"n": row_id, "pad": "x" * rng.randint(0, 80)})))
            row_id += 1
        window.add(batch)
        rows.extend(batch)
    return rows


def test_every_answer_is_exact_across_merges_and_trims():
    rng = random.Random(7)
    channels = ["a", "b", "c"]
    window = Window(size=60, block_max=700)
    rows = fill(window, 80, channels, rng)
    position = rows[-1][0]
    assert window.floor > 0, "the window was never trimmed"
    assert any(len(log.blocks[1]) > 1 for log in window.logs.values())
    for wanted in (["a"], ["b", "c"], channels):
        for last in range(0, position + 1):
            answer = window.answer(wanted, last, position)
            if last < window.floor:
                assert answer is None, "rows that left the window must be read from the database"
                continue
            expected = [i for i, channel, _ in rows if i > last and channel in wanted]
            assert [json.loads(entry)["id"] for entry in answer] == expected, (wanted, last)
            assert wire_ids(answer) == expected, (wanted, last)


def test_an_answer_stops_at_the_position_it_was_asked_for():
    """Rows past the dispatcher's published position are not answered yet."""
    window = Window(size=1000, block_max=700)
    rows = fill(window, 30, ["a"], random.Random(3))
    for position in (rows[5][0], rows[-3][0]):
        answer = window.answer(["a"], 0, position)
        expected = [i for i, _, _ in rows if i <= position]
        assert [json.loads(entry)["id"] for entry in answer] == expected
        assert wire_ids(answer) == expected


def test_a_large_answer_is_slices_of_shared_blocks_and_a_small_one_is_one_string():
    window = Window(size=100_000)
    rows = fill(window, 600, ["a"], random.Random(5))
    big = window.answer(["a"], 0, rows[-1][0])
    parts = array_parts(big)
    assert sum(map(len, parts)) > SMALL_ANSWER
    assert any(isinstance(part, memoryview) for part in parts), "the blocks were copied"
    assert len(parts) < 40, f"{len(parts)} buffers: the blocks were not merged"
    small = window.answer(["a"], rows[-2][0], rows[-1][0])
    assert [type(part) for part in array_parts(small)] == [bytes]


def test_an_answer_behaves_as_the_list_of_its_entries():
    """What an overridden BusApp.poll or a test gets: a read-only sequence."""
    window = Window(size=1000)
    rows = fill(window, 5, ["a"], random.Random(11))
    ids = [i for i, _, _ in rows]
    answer = window.answer(["a"], ids[1], ids[-1])
    entries = [json.loads(entry)["id"] for entry in answer]
    assert entries == ids[2:]
    assert len(answer) == len(ids) - 2 and answer
    assert json.loads(answer[0])["id"] == ids[2] and json.loads(answer[-1])["id"] == ids[-1]
    assert [json.loads(entry)["id"] for entry in answer[1:3]] == ids[3:5]
    assert answer == list(answer) and list(answer) == answer[:]
    assert not window.answer(["a"], ids[-1], ids[-1])
    assert window.answer(["a"], ids[-1], ids[-1]) == []


def test_polls_of_different_channel_sets_share_one_answer_when_one_channel_has_news():
    """One message in a channel of 1,000 members wakes 1,000 audiences (each
    member also hears a channel of its own): the answer, and its JSON, are
    built once for them all, and anew once the channel has more."""
    window = Window(size=100)
    window.add([(1, "general", encode_message("t", {"n": 1})), (2, "alice", encode_message("t", {"n": 2}))])
    first = window.answer(["general", "bob"], 0, 2)
    assert window.answer(["general", "carol"], 0, 2) is first
    assert wire_ids(first) == [1]
    window.add([(3, "general", encode_message("t", {"n": 3}))])
    later = window.answer(["general", "bob"], 0, 3)
    assert later is not first and wire_ids(later) == [1, 3]
    assert wire_ids(window.answer(["general", "alice"], 0, 3)) == [1, 2, 3]
