"""Small helpers shared by the test tiers."""

from __future__ import annotations

import base64
import io
import json
from pathlib import Path
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


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 that no trust store knows, and its key (PEM files in `folder`)."""
    import datetime
    import ipaddress

    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]), False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    return cert_path, key_path
