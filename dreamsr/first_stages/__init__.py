"""First stages: the space a process runs in (pixels, a weight-free pixel-unshuffle, later the VQ-f4 latent).

A first stage maps an HR-sized image [B, 3, H, W] in [-1, 1] to the process's signal space (``encode``) and back
(``decode``); see :mod:`dreamsr.first_stages.unshuffle`.
"""
