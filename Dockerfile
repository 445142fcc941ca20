# The demo chat (the mail app on the bus), served by gevent's pywsgi.
# Build and run it with its PostgreSQL: docker compose up --build
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /srv/imbus
# setup.py reads README.md for the package description.
COPY setup.py README.md ./
COPY bus ./bus
COPY mail ./mail
RUN pip install . \
    && useradd --system --no-create-home --uid 10001 imbus

USER imbus
EXPOSE 8069
# The database comes from $DATABASE_URL (set by docker-compose.yml). Inside a
# container the server must listen on every interface, not only loopback.
# On SIGTERM (docker stop) parked polls are answered and the server exits.
CMD ["python", "-m", "mail.demo", "--host", "0.0.0.0", "--port", "8069"]
