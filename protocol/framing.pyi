"""Type stub of the compiled protocol.framing (see framing.pyx for the documentation)."""
from typing import Any

__all__ = ["LAYOUT", "GROUPS", "VAR_DATA", "SINCE_VERSION", "is_order_template"]

_Fields = list[tuple[str, int, int, str]]

LAYOUT: dict[int, tuple[str, int, _Fields]]
GROUPS: dict[int, list[tuple[str, int, _Fields]]]
VAR_DATA: dict[int, list[tuple[str, str]]]
SINCE_VERSION: dict[str, dict[int, Any]]

def is_order_template(template_id: int) -> bool: ...
