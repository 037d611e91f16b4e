from __future__ import annotations

import pytest

from distributed.engine.config import parse_api_auth


def test_api_auth_parsing() -> None:
    assert parse_api_auth("a:b,c:d:e") == {"a": "b", "c": "d:e"}
    assert parse_api_auth(None) == {}
    with pytest.raises(ValueError, match="user:password"):
        parse_api_auth("nocolon")
