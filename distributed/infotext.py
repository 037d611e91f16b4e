"""A1111 infotexts: the text stored in each PNG's `parameters` chunk and in `info.infotexts`.

Built the way `modules.processing.create_infotext` builds it (A1111 1.10.1): the prompt, an optional
"Negative prompt:" line, then "Key: value" pairs joined by ", ", with values that hold a comma, colon or newline
JSON-quoted. Parsing follows `infotext_utils.parse_generation_parameters` closely enough to read them back.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping

ParamValue = str | int | float | bool | None

_PARAM_RE = re.compile(r'\s*(\w[\w \-/]+):\s*("(?:\\.|[^\\"])+"|[^,]*)(?:,|$)')


def quote(value: ParamValue) -> str:
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def build_infotext(prompt: str, negative_prompt: str, params: Mapping[str, ParamValue]) -> str:
    """One image's infotext; keys whose value is None are left out, as A1111 does."""
    text = ", ".join(
        key if key == value else f"{key}: {quote(value)}" for key, value in params.items() if value is not None
    )
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{text}".strip()


def _unquote(text: str) -> str:
    if len(text) < 2 or text[0] != '"' or text[-1] != '"':
        return text
    try:
        value = json.loads(text)
    except ValueError:
        return text
    return value if isinstance(value, str) else text


def parse_infotext(text: str) -> tuple[str, str, dict[str, str]]:
    """Split an infotext into (prompt, negative prompt, parameters as strings)."""
    *lines, last = text.strip().split("\n")
    if len(_PARAM_RE.findall(last)) < 3:
        lines.append(last)
        last = ""
    prompt_lines: list[str] = []
    negative_lines: list[str] = []
    in_negative = False
    for line in lines:
        text = line
        if text.startswith("Negative prompt:"):
            in_negative = True
            text = text[len("Negative prompt:") :].lstrip()
        (negative_lines if in_negative else prompt_lines).append(text)
    params = {key.strip(): _unquote(value.strip()) for key, value in _PARAM_RE.findall(last)}
    return "\n".join(prompt_lines), "\n".join(negative_lines), params
