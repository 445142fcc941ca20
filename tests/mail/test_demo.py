"""The demo: its data bootstrap, the web page's files, and the server itself
started the way a user starts it."""
import ast
import http.client
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import pytest
import requests

from mail.demo_data import DEMO_USERS, install_demo_data
from tests.mail.support import login, ok, query

ROOT = Path(__file__).resolve().parents[2]

COUNTS = ("SELECT (SELECT count(*) FROM res_users), (SELECT count(*) FROM res_partner),"
          " (SELECT count(*) FROM mail_channel), (SELECT count(*) FROM mail_channel_partner),"
          " (SELECT count(*) FROM mail_message)")


def test_demo_data_is_idempotent(mail_app, database_url):
    first = query(database_url, COUNTS)
    assert first == [(len(DEMO_USERS), len(DEMO_USERS) + 3, 1, len(DEMO_USERS), 1)]
    install_demo_data(mail_app.database)
    threads = [threading.Thread(target=install_demo_data, args=(mail_app.database,)) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert query(database_url, COUNTS) == first


def test_demo_data_fills_in_what_is_missing(mail_app, database_url):
    with mail_app.database.transaction() as tx:
        tx.execute("DELETE FROM res_users WHERE login = 'jane'")
    install_demo_data(mail_app.database)
    assert query(database_url, "SELECT count(*) FROM res_users WHERE login = 'jane'") == [(1,)]
    assert query(database_url, "SELECT count(*) FROM mail_channel WHERE name = 'general'") == [(1,)]


@pytest.fixture
def static_site(tmp_path, make_mail_app, serve):
    (tmp_path / "index.html").write_text("<!doctype html><title>imbus</title>")
    (tmp_path / "style.css").write_text("body { margin: 0 }")
    (tmp_path / "outside.txt").write_text("nope")
    site = tmp_path / "site"
    site.mkdir()
    (site / "index.html").write_text("<!doctype html><title>imbus chat</title>")
    (site / "app.js").write_text("console.log('hi')")
    return serve(make_mail_app(static_dir=site)).url


def test_the_page_and_its_files_are_served(static_site):
    page = requests.get(static_site + "/")
    assert page.status_code == 200 and "imbus chat" in page.text and page.headers["Content-Type"].startswith("text/html")
    script = requests.get(static_site + "/static/app.js")
    assert script.status_code == 200 and "javascript" in script.headers["Content-Type"]
    assert requests.get(static_site + "/static/missing.css").status_code == 404
    assert requests.post(static_site + "/").status_code == 405


@pytest.mark.parametrize("path", ["/static/../outside.txt", "/static/%2e%2e/outside.txt", "/static/..%2foutside.txt",
                                  "/static//etc/passwd", "/static/%2Fetc%2Fpasswd"])
def test_files_outside_the_folder_are_not_served(static_site, path):
    host, port = static_site.removeprefix("http://").split(":")
    for _ in range(3):
        conn = http.client.HTTPConnection(host, int(port), timeout=10)
        conn.request("GET", path)
        answer = conn.getresponse()
        body = answer.read()
        conn.close()
        if answer.status != 308:
            break
        # Werkzeug merges "//" with a redirect; the target must stay in the folder.
        path = answer.getheader("Location").split(port, 1)[-1]
        assert path.startswith("/static/")
    assert answer.status == 404 and b"nope" not in body and b"root:" not in body


def test_the_bus_client_modules_are_served_as_javascript(make_mail_app, serve):
    """A browser runs a module script only when it is served as JavaScript."""
    url = serve(make_mail_app()).url
    modules = sorted((ROOT / "mail" / "static" / "bus").glob("*.js"))
    assert {module.name for module in modules} >= {"index.js", "client.js", "crosstab.js", "poller.js"}
    for module in modules:
        answer = requests.get(f"{url}/static/bus/{module.name}")
        assert answer.status_code == 200, module.name
        assert "javascript" in answer.headers["Content-Type"], module.name
        assert answer.text == module.read_text(encoding="utf-8")


def test_the_package_ships_every_static_file():
    """setup.py's package_data globs do not recurse: each folder of the page
    needs its own, or an installed package serves a page without its bus."""
    tree = ast.parse((ROOT / "setup.py").read_text(encoding="utf-8"))
    setup_call = next(node for node in ast.walk(tree) if isinstance(node, ast.Call)
                      and getattr(node.func, "id", None) == "setup")
    package_data = ast.literal_eval(next(k.value for k in setup_call.keywords if k.arg == "package_data"))
    shipped = {path for pattern in package_data["mail"] for path in (ROOT / "mail").glob(pattern) if path.is_file()}
    static = {path for path in (ROOT / "mail" / "static").rglob("*") if path.is_file()}
    assert static - shipped == set()


def test_no_page_is_a_404(tmp_path, make_mail_app, serve):
    url = serve(make_mail_app(static_dir=tmp_path)).url
    assert requests.get(url + "/").status_code == 404


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class Demo:
    """``python -m mail.demo`` in a child process."""

    def __init__(self, args, cwd, unset=()):
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        environment = {key: value for key, value in os.environ.items() if key not in unset}
        environment.pop("IMBUS_TEST_MODE", None)
        # Run this checkout's code whatever the working folder.
        environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), environment.get("PYTHONPATH")]))
        self.process = subprocess.Popen(
            [sys.executable, "-m", "mail.demo", "--port", str(self.port), "--poll-timeout", "2", *args],
            cwd=cwd, env=environment, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        deadline = time.monotonic() + 60
        while True:
            try:
                requests.get(self.url + "/longpolling/health", timeout=1)
                return
            except requests.ConnectionError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise AssertionError("the demo did not start:\n" + self.output) from None
                time.sleep(0.1)

    def stop(self) -> int:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.output = self.process.stdout.read()
        self.process.stdout.close()
        return self.process.returncode


@pytest.mark.slow
def test_demo_server_on_a_given_database(database_url, tmp_path):
    demo = Demo(["--db-url", database_url], cwd=tmp_path)
    try:
        admin = login(demo.url, "admin")
        general = ok(demo.url, "/mail/init_messaging", {}, admin)["channels"][0]
        assert general["name"] == "general"
    finally:
        code = demo.stop()
    assert code == 0, demo.output
    assert "admin/admin" in demo.output and f"http://127.0.0.1:{demo.port}" in demo.output
    assert not (tmp_path / ".imbus").exists()


@pytest.fixture
def open_folder():
    """A working folder PostgreSQL's own user can reach: as root the cluster
    runs as ``postgres``, which cannot enter pytest's private tmp folders."""
    folder = Path(tempfile.mkdtemp(prefix="imbus-demo-"))
    folder.chmod(0o755)
    yield folder
    shutil.rmtree(folder, ignore_errors=True)


@pytest.mark.slow
def test_demo_keeps_its_own_postgres_and_history_across_restarts(open_folder):
    tmp_path = open_folder
    pg_port = str(_free_port())
    unset = ["DATABASE_URL", "PGHOST", "PGDATABASE", "PGPORT", "PGUSER", "PGSERVICE"]
    demo = Demo(["--server", "threaded", "--pg-port", pg_port], cwd=tmp_path, unset=unset)
    try:
        admin = login(demo.url, "admin")
        general = ok(demo.url, "/mail/init_messaging", {}, admin)["channels"][0]["id"]
        posted = ok(demo.url, "/mail/message/post", {"thread_model": "mail.channel", "thread_id": general,
                                                     "post_data": {"body": "remember me"}}, admin)
    finally:
        assert demo.stop() == 0, demo.output
    assert (tmp_path / ".imbus" / "pgdata" / "PG_VERSION").exists()
    with socket.socket() as probe:  # PostgreSQL stopped with the demo
        assert probe.connect_ex(("127.0.0.1", int(pg_port))) != 0
    demo = Demo(["--server", "threaded", "--pg-port", pg_port], cwd=tmp_path, unset=unset)
    try:
        admin = login(demo.url, "admin")
        history = ok(demo.url, "/mail/channel/messages", {"channel_id": general}, admin)
        assert history[0]["id"] == posted["id"] and history[0]["body"] == "remember me"
        assert len(history) == 2  # the welcome message was not posted twice
    finally:
        assert demo.stop() == 0, demo.output
