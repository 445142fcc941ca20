"""Fixtures for the chat: a MailApp with the demo data on the test's own
database, served over real HTTP, and logged-in clients."""
import pytest

from mail.app import create_app
from mail.demo_data import install_demo_data
from tests.mail.support import TEST_SECRET, FakeClock, login


@pytest.fixture
def clock():
    return FakeClock()

@pytest.fixture
def make_mail_app(database_url):
    """Build chat apps on the test's database (demo data included); all are
    closed at the end."""
    apps = []

    def make(**options):
        options.setdefault("timeout", 5.0)
        options.setdefault("secret_key", TEST_SECRET)
        app = create_app(database_url, **options)
        apps.append(app)
        install_demo_data(app.database)
        return app

    yield make
    for app in apps:
        app.close()

@pytest.fixture
def mail_app(make_mail_app):
    return make_mail_app()

@pytest.fixture
def mail_http(mail_app, serve):
    return serve(mail_app)

@pytest.fixture
def url(mail_http):
    return mail_http.url

@pytest.fixture
def admin(url):
    return login(url, "admin")

@pytest.fixture
def demo(url):
    return login(url, "demo")

@pytest.fixture
def jane(url):
    return login(url, "jane")
