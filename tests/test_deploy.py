"""docker-compose.yml and the Dockerfile are wired consistently.

No Docker engine runs here, so the files are checked against what they
point at: the database URL against the PostgreSQL service's settings, the
published port and the health check against the port the container's
command listens on (read with the module's own argument parser), the
command's module against the code, and, last, the command itself is run
with ``DATABASE_URL`` only, as the container runs it, and must pass the
compose health check.
"""
import importlib
import importlib.util
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import psycopg2.extensions
import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]


def load_compose():
    return yaml.safe_load((REPO / "docker-compose.yml").read_text())


def env_of(service):
    environment = service.get("environment") or {}
    if isinstance(environment, list):
        environment = dict(item.split("=", 1) for item in environment)
    return {key: str(value) for key, value in environment.items()}


def dockerfile_instructions():
    """(instruction, argument) pairs, continuation lines joined."""
    text = re.sub(r"\\\n", " ", (REPO / "Dockerfile").read_text())
    pairs = []
    for line in text.splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            keyword, _, argument = line.partition(" ")
            pairs.append((keyword.upper(), argument.strip()))
    return pairs


def exec_form(argument):
    """A CMD/ENTRYPOINT as argv; the shell form is split like sh would."""
    return json.loads(argument) if argument.startswith("[") else shlex.split(argument)


def services():
    compose = load_compose()
    all_services = compose["services"]
    [db_name] = [name for name, s in all_services.items() if str(s.get("image", "")).startswith("postgres:15")]
    [app_name] = [name for name, s in all_services.items() if "build" in s]
    return db_name, all_services[db_name], app_name, all_services[app_name]


def container_argv(app_service):
    """What the app container runs: ENTRYPOINT + (compose command or CMD)."""
    entrypoint, cmd = [], []
    for keyword, argument in dockerfile_instructions():
        if keyword == "ENTRYPOINT":
            entrypoint = exec_form(argument)
        elif keyword == "CMD":
            cmd = exec_form(argument)
    if "entrypoint" in app_service:
        entrypoint = app_service["entrypoint"]
        entrypoint = shlex.split(entrypoint) if isinstance(entrypoint, str) else list(entrypoint)
    if "command" in app_service:
        command = app_service["command"]
        cmd = shlex.split(command) if isinstance(command, str) else list(command)
    return entrypoint + cmd


def parse_module_args(module, argv):
    """Parse ``argv`` with the real parser of ``python -m module``."""
    if module == "bus":
        return importlib.import_module("bus.__main__").build_parser().parse_args(argv)
    if module == "mail.demo":
        return importlib.import_module("mail.demo").parse_args(argv)
    pytest.fail(f"the container runs python -m {module}, which this test does not know how to check")


def served_module(app_service):
    argv = container_argv(app_service)
    assert argv[:2] in (["python", "-m"], ["python3", "-m"]), f"expected 'python -m MODULE ...', got {argv}"
    return argv[2], argv[3:]


def published_container_ports(app_service):
    """Container ports the app service publishes (short and long syntax)."""
    ports = []
    for entry in app_service.get("ports", []):
        if isinstance(entry, dict):
            ports.append(int(entry["target"]))
        else:
            ports.append(int(str(entry).split("/")[0].rsplit(":", 1)[-1]))
    return ports


def test_database_url_points_at_the_database_service():
    db_name, db, _, app = services()
    db_env = env_of(db)
    # libpq's own reading of the URL, the one the application will make.
    dsn = psycopg2.extensions.parse_dsn(env_of(app)["DATABASE_URL"])
    user = db_env.get("POSTGRES_USER", "postgres")
    assert dsn["host"] == db_name
    assert int(dsn.get("port", 5432)) == 5432
    assert dsn["user"] == user
    assert dsn["password"] == db_env["POSTGRES_PASSWORD"]
    assert dsn["dbname"] == db_env.get("POSTGRES_DB", user)


def test_app_waits_for_a_healthy_database():
    db_name, db, _, app = services()
    assert app["depends_on"][db_name]["condition"] == "service_healthy"
    check = " ".join(db["healthcheck"]["test"]) if isinstance(db["healthcheck"]["test"], list) else db["healthcheck"]["test"]
    assert "pg_isready" in check


def test_container_command_is_a_real_module_listening_on_the_published_port():
    _, _, _, app = services()
    module, argv = served_module(app)
    assert importlib.util.find_spec(module) is not None, f"no module {module}"
    args = parse_module_args(module, argv)
    if module == "bus":
        assert args.command == "serve"
    assert args.host == "0.0.0.0", "inside a container the server must listen on every interface"
    assert args.db_url is None, "the database comes from DATABASE_URL, set in docker-compose.yml"
    assert published_container_ports(app) == [args.port]
    exposed = [int(argument.split("/")[0]) for keyword, argument in dockerfile_instructions() if keyword == "EXPOSE"]
    assert exposed == [args.port]


def test_healthcheck_asks_the_health_route_on_the_served_port():
    _, _, _, app = services()
    module, argv = served_module(app)
    port = parse_module_args(module, argv).port
    check = " ".join(app["healthcheck"]["test"])
    assert f"http://127.0.0.1:{port}/longpolling/health" in check


def test_image_contains_what_the_command_needs():
    copied = []
    for keyword, argument in dockerfile_instructions():
        if keyword in ("COPY", "ADD") and "--from" not in argument:
            *sources, _ = shlex.split(argument)
            copied.extend(source.rstrip("/") for source in sources)
    for source in copied:
        assert (REPO / source).exists(), f"the Dockerfile copies {source}, which does not exist"
    ignored = {line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()
               if line.strip() and not line.startswith("#")}
    assert not ignored & set(copied), "the Dockerfile copies what .dockerignore leaves out"
    _, _, _, app = services()
    module, _ = served_module(app)
    assert "setup.py" in copied
    assert module.split(".")[0] in copied
    setup = (REPO / "setup.py").read_text()
    for package in re.findall(r'"(\w+)", "\1\.\*"', setup):
        assert package in copied, f"setup.py installs {package}, which the image lacks"
    if "README.md" in setup:
        assert "README.md" in copied


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.mark.slow
def test_container_command_serves_the_health_check(database_url, tmp_path):
    """The container's command, run with only DATABASE_URL for configuration,
    answers the compose health check. Host and port are swapped for a free
    loopback port: this machine is not a container."""
    _, _, _, app = services()
    module, argv = served_module(app)
    args = parse_module_args(module, argv)
    port = free_port()
    argv = [str(port) if value == str(args.port) else "127.0.0.1" if value == "0.0.0.0" else value
            for value in argv]
    env = {key: value for key, value in os.environ.items() if not key.startswith("PG")}
    env["DATABASE_URL"] = database_url
    log_path = tmp_path / "container.log"
    with open(log_path, "wb") as log:
        # From the source folder, like the image's WORKDIR.
        process = subprocess.Popen([sys.executable, "-m", module, *argv], cwd=REPO, env=env,
                                   stdout=log, stderr=subprocess.STDOUT)
    try:
        check = [sys.executable if part in ("python", "python3") else part for part in app["healthcheck"]["test"][1:]]
        check = [part.replace(f":{args.port}/", f":{port}/") for part in check]
        deadline = time.monotonic() + 30
        while subprocess.run(check, capture_output=True).returncode != 0:
            assert process.poll() is None, f"the container command exited:\n{log_path.read_text()}"
            assert time.monotonic() < deadline, f"not healthy within 30s:\n{log_path.read_text()}"
            time.sleep(0.2)
        process.send_signal(signal.SIGTERM)
        assert process.wait(10) == 0, log_path.read_text()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
