"""The bench server as two workers on one port (bench/app_server.py
``--reuse-port --stats-port``): both take connections on the shared port,
and each reports its own parked polls on its own stats port, which serves
nothing else."""
import json
import socket
import urllib.error
import urllib.request

import pytest

from bench import client
from bench.processes import free_port, start_bus
from tests.support import wait_for

POLLS = 200


def stats(port: int) -> dict:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/bench/stats", timeout=10) as answer:
        return json.load(answer)


def test_two_workers_share_the_port_and_report_their_own_polls(database_url):
    port = free_port()
    workers = [start_bus(database_url, port=port, shared=True, poll_timeout=30) for _ in range(2)]
    sockets = []
    try:
        assert len({worker.stats_port for worker in workers} | {port}) == 3
        for _ in range(POLLS):
            sock = socket.create_connection(("127.0.0.1", port))
            sock.sendall(client.poll_request(["shared"], 0))
            sockets.append(sock)

        def parked() -> list[int]:
            return [stats(worker.stats_port)["waiters"] for worker in workers]

        wait_for(lambda: sum(parked()) == POLLS, 30, f"{POLLS} polls parked across both workers")
        # The kernel hashes each connection to one of the two sockets: with
        # 200 connections, one worker getting none is a 1-in-2^199 chance.
        assert all(parked()), parked()
        with pytest.raises(urllib.error.HTTPError) as refused:
            urllib.request.urlopen(f"http://127.0.0.1:{workers[0].stats_port}/longpolling/poll", timeout=10)
        assert refused.value.code == 404
    finally:
        for sock in sockets:
            sock.close()
        for worker in workers:
            worker.stop()
