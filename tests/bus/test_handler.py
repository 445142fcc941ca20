"""gevent pywsgi's handler as ``bus.handler`` fits it: a list body goes out
with its head in gathered ``sendmsg`` calls, memoryviews as they are, more
buffers than one call takes, and sends the kernel cuts short resumed; a
keep-alive connection then goes on with the next request; over TLS, where a
socket has no ``sendmsg``, pywsgi writes as usual. Served by a real gevent
process, read over a real socket."""
import socket
import ssl
import subprocess
import sys
import time
from email.utils import parsedate_to_datetime

import pytest

from bus.handler import MAX_BUFFERS, Handler

SERVER = """
from gevent import monkey
monkey.patch_all()
import sys
from gevent.pywsgi import WSGIServer
from bus.handler import Handler
from bus.jsonrpc import GATHERED_WRITE

def app(environ, start_response):
    count = int(environ["PATH_INFO"].strip("/"))
    chunks = [b"<", *(memoryview(bytes([65 + i % 26]) * 1000)[1:] for i in range(count)), b">"]
    start_response("200 OK", [("Content-Length", str(sum(map(len, chunks)))),
                              ("X-Gathered", str(environ.get(GATHERED_WRITE)))])
    return chunks

tls = dict(zip(("certfile", "keyfile"), sys.argv[1:]))
server = WSGIServer(("127.0.0.1", 0), app, log=None, handler_class=Handler, **tls)
server.start()
print(server.server_port, flush=True)
server.serve_forever()
"""


def expected_body(count):
    return b"<" + b"".join(bytes([65 + i % 26]) * 999 for i in range(count)) + b">"


def start(*tls_files):
    process = subprocess.Popen([sys.executable, "-c", SERVER, *map(str, tls_files)], stdout=subprocess.PIPE)
    return process, int(process.stdout.readline())


@pytest.fixture
def gevent_server():
    process, port = start()
    try:
        yield port
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


def test_over_tls_answers_are_written_the_usual_way(tmp_path):
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subprocess.run(["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1", "-subj", "/CN=localhost",
                    "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    process, port = start(cert, key)
    try:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        with context.wrap_socket(socket.create_connection(("127.0.0.1", port))) as sock:
            stream = sock.makefile("rb")
            sock.sendall(b"GET /300 HTTP/1.1\r\nHost: t\r\n\r\n")
            status, fields, body = read_answer(stream)
        assert status == b"HTTP/1.1 200 OK"
        assert fields["X-Gathered"] == "None"
        assert body == expected_body(300)
    finally:
        process.kill()
        process.wait()


class ScriptedSocket:
    """Takes at most the next scripted number of bytes per sendmsg (0: the
    socket would block), the rest whole."""

    def __init__(self, counts):
        self.counts = list(counts)
        self.received = bytearray()
        self.calls = []

    def sendmsg(self, buffers):
        assert len(buffers) <= MAX_BUFFERS
        self.calls.append(len(buffers))
        data = b"".join(buffers)
        sent = min(len(data), self.counts.pop(0)) if self.counts else len(data)
        self.received += data[:sent]
        return sent


def test_short_sends_resume_where_the_kernel_stopped():
    buffers = [b"head", memoryview(b"abcdef")[1:], b"", b"0123456789", *[bytes([i % 256]) for i in range(2500)]]
    # Cut mid-buffer, nothing at all, exactly at a buffer's end, and in the
    # second batch of MAX_BUFFERS.
    sock = ScriptedSocket([2, 0, 7, 9, 1500])
    handler = Handler.__new__(Handler)
    handler.socket, handler.response_length, handler.code = sock, 0, 200
    handler._send_gathered(list(buffers))
    assert bytes(sock.received) == b"".join(buffers)
    assert handler.response_length == len(sock.received)
    assert max(sock.calls) == MAX_BUFFERS
