"""A fake of the webui's `modules` package for the adapter's unit tier.

It mirrors the signatures and the call order of A1111 1.10.1 (modules/processing.py process_images_inner,
modules/scripts.py ScriptRunner, shared_state.State, images.save_image/image_grid, script_callbacks), written
from reading that source; it is not a copy of it. The master's own sampler draws seeded noise in place of a
diffusion model, so the master's images are deterministic per seed.
"""
