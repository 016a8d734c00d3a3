"""``python -m cli`` runs the ``pixelwizard`` command."""

from cli.main import run

run()
