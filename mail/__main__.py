"""``python -m mail`` runs the demo, like ``python -m mail.demo``."""
import sys

if "threaded" not in sys.argv:
    from gevent import monkey

    monkey.patch_all()

from mail.demo import main  # noqa: E402

main()
