"""Image-quality metrics, one value per image: (B, C, H, W) tensors in [-1, 1] -> (B,).

Pure PyTorch; nothing is loaded at import time. LPIPS needs its weights file, passed explicitly
(see ``restora_core.metrics.lpips``); check with ``lpips_available(path)`` first.
"""

from .lpips import LPIPS, lpips_available
from .quality import consistency, psnr, psnr_hole, ssim
from .uncertainty import uncertainty_summary

__all__ = ["LPIPS", "consistency", "lpips_available", "psnr", "psnr_hole", "ssim",
           "uncertainty_summary"]
