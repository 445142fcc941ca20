from setuptools import find_packages, setup

setup(
    name="imbus",
    version="0.1.0",
    description="Odoo 15-style long-polling chat server over PostgreSQL LISTEN/NOTIFY",
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.9",
    packages=find_packages(include=["bus", "bus.*", "mail", "mail.*"]),
    package_data={"mail": ["static/*", "static/bus/*"]},
    install_requires=[
        "psycopg2-binary>=2.9",
        "werkzeug>=2.3",
        "gevent>=22.10",
        "psycogreen>=1.0.2",
        "itsdangerous>=2.1",
        "nh3>=0.2.14",
        "wsproto>=1.2",
    ],
    extras_require={
        "test": ["pytest>=7", "requests>=2.28", "PyYAML>=6", "playwright>=1.40", "gunicorn>=21"],
        "bench": ["uvloop>=0.17", "py-spy>=0.3", "gunicorn>=21"],
        "gunicorn": ["gunicorn>=21"],
        "check": ["ruff>=0.5", "mypy>=1.8"],
    },
    entry_points={
        "console_scripts": [
            "imbus-demo=mail.demo:main",
            "imbus-bus=bus.__main__:main",
        ],
    },
)
