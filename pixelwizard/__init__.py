"""PixelWizard: native 2K/4K text-to-video from an anchor video and a shortcut detail stage.

Importing this package is cheap (no torch); the pipeline lives in ``pixelwizard.pipeline``.
"""

__version__ = "0.1.0"
