"""Type stub of the compiled protocol.mdfeed (see mdfeed.pyx for the documentation)."""
from protocol.symbols import SymbolTable

TRADE_MESSAGE_SIZE: int

def encode_trades(fills: bytes | bytearray | memoryview, symbols: SymbolTable, binary: bool = True,
                  json: bool = True) -> dict[int, tuple[bytes | None, bytes | None]]: ...
