"""Small helpers shared by the test tiers."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import numpy as np
import requests
from PIL import Image

TIMEOUT = (5, 120)


def txt2img(url: str, auth: tuple[str, str] | None = None, **payload: Any) -> requests.Response:
    body = {"prompt": "a red fox in snow", "width": 64, "height": 64, "steps": 4, "cfg_scale": 7.0, **payload}
    return requests.post(f"{url}/sdapi/v1/txt2img", json=body, auth=auth, timeout=TIMEOUT)


def ok(response: requests.Response) -> dict[str, Any]:
    assert response.status_code == 200, f"{response.status_code}: {response.text[:500]}"
    body: dict[str, Any] = response.json()
    return body


def info(body: dict[str, Any]) -> dict[str, Any]:
    result: dict[str, Any] = json.loads(body["info"])
    return result


def pixels(encoded: str) -> np.ndarray:
    return np.asarray(Image.open(io.BytesIO(base64.b64decode(encoded))).convert("RGB"), dtype=np.int16)


def max_diff(a: str, b: str) -> int:
    return int(np.abs(pixels(a) - pixels(b)).max())


def png_b64(image: Image.Image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return base64.b64encode(buffer.getvalue()).decode()
