"""The ``pixelwizard`` command line (Typer); imports torch only inside commands that need it."""
