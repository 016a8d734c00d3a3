"""Training the tiny PixelWizard models: data, the shortcut objective (SPEC.md 7), trainers, reports.

Importing this package is cheap (no torch); each module imports what it needs.
"""
