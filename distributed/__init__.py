"""distributed: turn several Stable Diffusion webui machines into one image generator."""

__version__ = "0.1.0"
