"""AUTOMATIC1111's prompt syntax (webui 1.10.1), without the webui and without lark.

Three layers, applied in this order by the webui and by our worker:

1. ``split_and``: "a AND b :1.2" becomes sub-prompts with weights (composable diffusion).
2. ``prompt_schedule``: prompt editing ``[a:b:when]``, ``[a:when]``, ``[a::when]`` and alternation ``[a|b]`` become
   the text to use up to each step.
3. ``parse_attention``: ``(a)``, ``[a]``, ``(a:1.5)``, escapes and ``BREAK`` become text fragments with weights.

Each function reproduces the webui's output exactly, its oddities included (a prompt the editing grammar cannot
parse is used as it is; ``BREAK`` inside brackets has its marker weight multiplied and becomes ordinary text).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

__all__ = ["BREAK", "BREAK_WEIGHT", "parse_attention", "prompt_schedule", "split_and"]

BREAK = "BREAK"
BREAK_WEIGHT = -1.0
_ROUND = 1.1
_SQUARE = 1 / 1.1

# --- attention: (a), [a], (a:w), escapes, BREAK ---------------------------------------------------------------------

# One token per match. The order of the alternatives decides what a character starts: an escape, a lone backslash,
# an opening bracket, a weighted close, a plain close, a run of text, a lone colon.
_ATTENTION_TOKEN = re.compile(
    r"""
    (?P<escape>\\[()\[\]\\]?)
    | (?P<open>[(\[])
    | :\s*(?P<weight>[+-]?[.\d]+)\s*\)
    | (?P<close>[)\]])
    | (?P<text>[^\\()\[\]:]+|:)
    """,
    re.VERBOSE,
)
_BREAK_SPLIT = re.compile(r"\s*\bBREAK\b\s*", re.DOTALL)


def parse_attention(text: str) -> list[tuple[str, float]]:
    """Split a prompt into (text, weight) runs the way the webui's parse_prompt_attention does.

    ``BREAK`` outside brackets is the item ``("BREAK", -1.0)``. A malformed weight such as ``(a:1.2.3)`` raises
    ValueError, as it does in the webui.
    """
    items: list[list[str | float]] = []
    round_opens: list[int] = []
    square_opens: list[int] = []

    def scale_from(start: int, factor: float) -> None:
        for item in items[start:]:
            item[1] = float(item[1]) * factor

    for match in _ATTENTION_TOKEN.finditer(text):
        token = match.group(0)
        if match.group("escape") is not None:
            items.append([token[1:], 1.0])
        elif match.group("open") is not None:
            (round_opens if token == "(" else square_opens).append(len(items))
        elif match.group("weight") is not None and round_opens:
            scale_from(round_opens.pop(), float(match.group("weight")))
        elif token == ")" and round_opens:
            scale_from(round_opens.pop(), _ROUND)
        elif token == "]" and square_opens:
            scale_from(square_opens.pop(), _SQUARE)
        else:
            for index, part in enumerate(_BREAK_SPLIT.split(token)):
                if index:
                    items.append([BREAK, BREAK_WEIGHT])
                items.append([part, 1.0])

    # brackets left open apply to the end of the prompt: round ones first, then square ones
    for start in round_opens:
        scale_from(start, _ROUND)
    for start in square_opens:
        scale_from(start, _SQUARE)

    merged: list[tuple[str, float]] = []
    for item_text, weight in items:
        if merged and merged[-1][1] == weight:
            merged[-1] = (merged[-1][0] + str(item_text), merged[-1][1])
        else:
            merged.append((str(item_text), float(weight)))
    return merged or [("", 1.0)]


# --- AND composition -----------------------------------------------------------------------------------------------

_AND = re.compile(r"\bAND\b")
_SUBPROMPT_WEIGHT = re.compile(r"^(.*?)(?:\s*:\s*([-+]?(?:\d+\.?|\d*\.\d+)))?\s*$", re.DOTALL)


def split_and(prompt: str) -> list[tuple[str, float]]:
    """Sub-prompts of "a AND b :1.2" with their weights (1.0 unless a trailing ``:number`` gives one)."""
    parts: list[tuple[str, float]] = []
    for subprompt in _AND.split(prompt):
        match = _SUBPROMPT_WEIGHT.search(subprompt)
        if match is None:  # the pattern matches every string; kept for type narrowing
            parts.append((subprompt, 1.0))
            continue
        parts.append((match.group(1), float(match.group(2)) if match.group(2) is not None else 1.0))
    return parts


# --- prompt editing: [a:b:when], [a|b] -----------------------------------------------------------------------------

# The number the webui's grammar accepts after the last colon (lark's SIGNED_NUMBER, first matching alternative).
_NUMBER = re.compile(r"[+-]?(?:[0-9]+[eE][+-]?[0-9]+|(?:[0-9]+\.(?:[0-9]+)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|[0-9]+)")
_SPECIAL = frozenset("[]():|")
_CLOSER = {"[": "]", "(": ")"}


class _Unparsable(Exception):
    """The editing grammar rejects the prompt: the webui then uses the prompt unchanged at every step."""


@dataclass
class _Edit:
    before: list[object] | None
    after: list[object]
    when_text: str
    when: int = 0


@dataclass
class _Alternate:
    options: list[list[object]] = field(default_factory=list)


def _units(prompt: str) -> list[str]:
    """Characters, with an escape and its character kept together (they are always text in the grammar)."""
    units: list[str] = []
    index = 0
    while index < len(prompt):
        char = prompt[index]
        if char == "\\":
            if index + 1 >= len(prompt) or prompt[index + 1] == "\n":
                raise _Unparsable
            units.append(prompt[index : index + 2])
            index += 2
        else:
            units.append(char)
            index += 1
    return units


def _matching_close(units: list[str], start: int) -> int | None:
    """Index of the bracket closing units[start]; None when brackets cross or stay open."""
    stack: list[str] = []
    for index in range(start, len(units)):
        unit = units[index]
        if unit in _CLOSER:
            stack.append(_CLOSER[unit])
        elif unit in ("]", ")"):
            if stack.pop() != unit:
                return None
            if not stack:
                return index
    return None


def _structure(units: list[str], start: int) -> tuple[list[object], int] | None:
    """The bracketed construct opening at units[start] as nodes and the index after it; None if it is not one."""
    end = _matching_close(units, start)
    if end is None:
        return None
    segments: list[list[object]] = [[]]
    separators: list[str] = []
    index = start + 1
    while index < end:
        unit = units[index]
        if unit in _CLOSER:
            inner = _structure(units, index)
            if inner is None:  # inside a construct every bracket must be a construct itself
                return None
            segments[-1].extend(inner[0])
            index = inner[1]
            continue
        if unit in (":", "|"):
            separators.append(unit)
            segments.append([])
        else:
            segments[-1].append(unit)
        index += 1
    nodes = _construct(units[start], segments, separators)
    return None if nodes is None else (nodes, end + 1)


def _construct(opener: str, segments: list[list[object]], separators: list[str]) -> list[object] | None:
    closer = _CLOSER[opener]
    if opener == "(" or not separators:  # emphasis keeps its brackets: the text stays as written
        if "|" in separators or len(separators) > 1:
            return None
        body: list[object] = [opener, *segments[0]]
        if separators:
            body += [":", *segments[1]]
        return [*body, closer]
    if all(sep == "|" for sep in separators):
        return [_Alternate(segments)]
    if "|" in separators or len(separators) > 2:
        return None
    tail = segments[-1]
    if not all(isinstance(unit, str) and unit not in _SPECIAL and len(unit) == 1 for unit in tail):
        return None
    tail_text = "".join(str(unit) for unit in tail).lstrip()
    number = _NUMBER.match(tail_text)
    if number is None or tail_text[number.end() :].strip():
        return None
    before = segments[0] if len(segments) == 3 else None
    return [_Edit(before, segments[-2], number.group(0))]


def _parse(prompt: str) -> list[object]:
    units = _units(prompt)
    nodes: list[object] = []
    index = 0
    while index < len(units):
        unit = units[index]
        if unit in _CLOSER:
            found = _structure(units, index)
            if found is not None:
                nodes.extend(found[0])
                index = found[1]
                continue
        elif unit == "|":  # a bar outside an alternation has no place in the grammar
            raise _Unparsable
        nodes.append(unit)  # text, or a bracket or colon that belongs to no construct
        index += 1
    return nodes


def _walk(nodes: list[object]) -> list[_Edit | _Alternate]:
    found: list[_Edit | _Alternate] = []
    for node in nodes:
        if isinstance(node, _Edit):
            found.append(node)
            found += _walk(node.before or []) + _walk(node.after)
        elif isinstance(node, _Alternate):
            found.append(node)
            for option in node.options:
                found += _walk(option)
    return found


def _render(nodes: list[object], step: int) -> str:
    out: list[str] = []
    for node in nodes:
        if isinstance(node, _Edit):
            out.append(_render(node.before or [], step) if step <= node.when else _render(node.after, step))
        elif isinstance(node, _Alternate):
            out.append(_render(node.options[(step - 1) % len(node.options)], step))
        else:
            out.append(str(node))
    return "".join(out)


def prompt_schedule(
    prompt: str, steps: int, hires_steps: int | None = None, *, use_old_scheduling: bool = False
) -> list[tuple[int, str]]:
    """(last step, text) pairs covering the sampling steps, as get_learned_conditioning_prompt_schedules gives.

    With ``hires_steps`` the schedule is the hires pass's: a fraction ``when`` counts from 1.0 (the end of the first
    pass) to 2.0 and an integer one from the first pass's ``steps``. ``use_old_scheduling`` is the webui's
    "Use old prompt editing timelines" option: ``when`` < 1 is a fraction of ``steps``, anything else a step, and
    ``hires_steps`` is ignored (the hires pass then reuses the first pass's schedule, as in the webui).
    """
    int_offset, float_offset, span = 0, 0.0, steps
    if hires_steps is not None and not use_old_scheduling:
        int_offset, float_offset, span = steps, 1.0, hires_steps
    try:
        nodes = _parse(prompt)
    except _Unparsable:
        return [(span, prompt)]

    ends = {span}
    for node in _walk(nodes):
        if isinstance(node, _Alternate):
            ends.update(range(1, span + 1))
            continue
        value = float(node.when_text)
        if use_old_scheduling:
            value = value * span if value < 1 else value
        elif "." in node.when_text:
            value = (value - float_offset) * span
        else:
            value = value - int_offset
        # the webui truncates towards zero; an infinite value (1e999) would crash it, here it saturates
        node.when = min(span, int(value)) if math.isfinite(value) else (span if value > 0 else -1)
        if node.when >= 1:
            ends.add(node.when)
    return [(end, _render(nodes, end)) for end in sorted(ends)]
