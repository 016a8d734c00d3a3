"""Converting released weights into one PixelWizard bundle (diffusers layout, ``load_bundle``).

Sources (docs/conversion.md): a Wan2.2-TI2V-5B folder in the diffusers layout or in the original
Wan layout (base model: text encoder, VAE, anchor transformer), plus optionally a PixelWizard
release checkpoint (``.pt``) for the detail transformer (SPEC.md 4 and 7).
"""

from pixelwizard.conversion.common import ConversionError

__all__ = ["ConversionError"]
