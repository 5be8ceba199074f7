"""ICCLD: Inter-Coder Connected Latent Diffusion for domain-adaptive semantic segmentation."""

__version__ = "0.1.0"
