"""``python -m cli`` runs the ``pixelwizard`` command."""

from cli.main import app

app(prog_name="pixelwizard")
