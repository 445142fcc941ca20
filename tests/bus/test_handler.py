"""gevent pywsgi's handler as ``bus.handler`` fits it: a list body goes out
with its head in gathered ``sendmsg`` calls, memoryviews as they are, more
buffers than one call takes, and sends the kernel cuts short resumed; a
keep-alive connection then goes on with the next request. Served by a real
gevent process, read over a real socket."""
import socket
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime

import pytest

SERVER = """
from gevent import monkey
monkey.patch_all()
from gevent.pywsgi import WSGIServer
from bus.handler import Handler
from bus.jsonrpc import GATHERED_WRITE

def app(environ, start_response):
    count = int(environ["PATH_INFO"].strip("/"))
    chunks = [b"<", *(memoryview(bytes([65 + i % 26]) * 1000)[1:] for i in range(count)), b">"]
    start_response("200 OK", [("Content-Length", str(sum(map(len, chunks)))),
                              ("X-Gathered", str(environ.get(GATHERED_WRITE)))])
    return chunks

server = WSGIServer(("127.0.0.1", 0), app, log=None, handler_class=Handler)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""


def expected_body(count):
    return b"<" + b"".join(bytes([65 + i % 26]) * 999 for i in range(count)) + b">"


@pytest.fixture
def gevent_server():
    process = subprocess.Popen([sys.executable, "-c", SERVER], stdout=subprocess.PIPE)
    try:
        yield int(process.stdout.readline())
    finally:
        process.kill()
        process.wait()


def read_answer(stream):
    head = b""
    while not head.endswith(b"\r\n\r\n"):
        byte = stream.read(1)
        assert byte, "the connection closed inside a head"
        head += byte
    fields = dict(line.split(": ", 1) for line in head.decode("latin-1").split("\r\n")[1:] if line)
    body = stream.read(int(fields["Content-Length"]))
    return head.split(b"\r\n", 1)[0], fields, body


def test_a_list_body_of_memoryviews_arrives_whole_and_the_connection_goes_on(gevent_server):
    with socket.create_connection(("127.0.0.1", gevent_server)) as sock:
        stream = sock.makefile("rb")
        # 3,000 buffers (three sendmsg calls' worth) and 3 MB, far more than
        # the socket takes at once while this side is not reading yet.
        sock.sendall(b"GET /3000 HTTP/1.1\r\nHost: t\r\n\r\nGET /2 HTTP/1.1\r\nHost: t\r\n\r\n")
        time.sleep(0.3)
        status, fields, body = read_answer(stream)
        assert status == b"HTTP/1.1 200 OK"
        assert fields["X-Gathered"] == "True"
        assert abs(parsedate_to_datetime(fields["Date"]).timestamp() - time.time()) < 5
        assert body == expected_body(3000)
        status, _, body = read_answer(stream)
        assert status == b"HTTP/1.1 200 OK"
        assert body == expected_body(2)
