from typing import Any

from PIL import Image

saved: list[dict[str, Any]] = []
grids: list[dict[str, Any]] = []


def image_grid(imgs: list[Image.Image], batch_size: int = 1, rows: Any = None) -> Image.Image:
    grids.append({"images": len(imgs), "batch_size": batch_size})
    width, height = imgs[0].size
    return Image.new("RGB", (width * len(imgs), height))


def save_image(image, path, basename, seed=None, prompt=None, extension="png", info=None, short_filename=False,
               no_prompt=False, grid=False, pnginfo_section_name="parameters", p=None, existing_info=None,
               forced_filename=None, suffix="", save_to_dirs=None):  # fmt: skip
    saved.append({"image": image, "seed": seed, "prompt": prompt, "info": info, "grid": grid, "path": path})
    return f"{path}/{len(saved):05d}-{seed}.{extension}", None
