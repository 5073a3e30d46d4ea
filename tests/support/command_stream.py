"""Command streams for the differential tests of the matching core (hftgw issue 3, item 2).

Two generators of ``matching.records`` Command dicts:

* ``make_command(seq, t)`` maps a tuple of small integers to one command, so that hypothesis can
  generate and shrink streams field by field (tiny id and price spaces: duplicates, hits, misses,
  self-trades and crossing prices are all common);
* ``seeded_stream(n, seed)`` is a long realistic stream: 3 symbols (and a fourth added at run
  time), 8 sessions sharing 4 accounts, prices clustered around a mid that random-walks, every
  order type (limit GTC/DAY/IOC/FOK, market, post-only, iceberg, stop, stop-limit), cancels and
  replaces of recently sent orders, self-trade prevention in every mode, mass cancels by session,
  account, symbol and side, end-of-session, book queries and invalid commands.
"""
from __future__ import annotations

import random

from matching.records import COMMAND_FIELDS, UNKNOWN_SYMBOL, CommandType

SYMBOLS = [(100, 400), (5, 150), (1, 60)]
ADDED_SYMBOL = (10, 80)            # the book seeded_stream adds half-way
SESSIONS = 8


def account_of(session: int) -> int:
    """Sessions 1-2 share account 1, 3-4 account 2, ...: STP and mass cancel by account act
    across sessions."""
    return (session + 1) // 2


NEW, CANCEL, REPLACE = int(CommandType.CMD_NEW), int(CommandType.CMD_CANCEL), int(CommandType.CMD_REPLACE)
MASS, QUERY, EOS = (int(CommandType.CMD_MASS_CANCEL), int(CommandType.CMD_BOOK_QUERY),
                    int(CommandType.CMD_END_OF_SESSION))
OPEN, ADD = int(CommandType.CMD_SESSION_OPEN), int(CommandType.CMD_SYMBOL_ADD)
RISK_REJECT, ADMIN = int(CommandType.CMD_RISK_REJECT), int(CommandType.CMD_ADMIN)
BUY, SELL = 1, 2
LIMIT, MARKET, STOP, STOP_LIMIT = 1, 2, 3, 4
DAY, GTC, IOC, FOK = 0, 1, 3, 4


def blank(seq: int, session: int, symbol: int) -> dict[str, int]:
    c = dict.fromkeys(COMMAND_FIELDS, 0)
    c.update(seq=seq, ts=1_700_000_000_000_000_000 + seq * 1000, session_id=session,
             account_id=account_of(session), symbol_id=symbol)
    return c


# -- hypothesis: one command from a tuple of small ints ---------------------------------------------
HYP_SYMBOLS = [(100, 40), (5, 25)]
HYP_SESSIONS = 4                   # accounts 1 (sessions 1, 2) and 2 (3, 4)
CL_IDS = 12
KINDS = 24

FIELD_RANGES = (
    (0, KINDS - 1),       # kind
    (1, HYP_SESSIONS),    # session
    (0, 2),               # symbol: 0, 0, 1
    (1, CL_IDS),          # cl_ord_id
    (1, CL_IDS),          # orig_cl_ord_id / second id
    (1, 2),               # side
    (-4, 4),              # price level around 100 ticks
    (1, 12),              # qty
    (0, 15),              # extra: variant selector
    (0, 4),               # stp mode
)


def make_command(seq: int, t: tuple[int, ...]) -> dict[str, int]:
    kind, session, sym, cl, cl2, side, plevel, qty, extra, stp = t
    symbol = 0 if sym < 2 else 1
    tick = HYP_SYMBOLS[symbol][0]
    c = blank(seq, session, symbol)
    px = tick * (100 + plevel + (2 if side == SELL else -2))      # sides overlap, books build up
    c.update(cl_ord_id=cl, side=side, ord_type=LIMIT, tif=GTC, qty=qty, price=px, stp=stp)
    if kind <= 8:
        _limit_market_post_only(c, kind, extra, qty, px)
    elif kind in (9, 10):
        c.update(type=CANCEL, cl_ord_id=100 + cl, orig_cl_ord_id=cl2)
        if extra == 0:
            c["symbol_id"] = 1 - symbol
    elif kind in (11, 12):                          # replace: same id or a new one
        c.update(type=REPLACE, orig_cl_ord_id=cl2, cl_ord_id=cl2 if extra < 6 else cl,
                 qty=qty + (extra % 4) * 10)
        if extra == 15:
            c["price"] += 1                          # off-tick
    elif kind == 13 and extra >= 5:                 # mostly more limit orders: deeper books
        c["type"] = NEW
    elif kind == 13:                                # mass cancel: symbol, all, disconnect, kill, account
        c.update(type=MASS, side=extra % 3, flags=1 if extra == 4 else 2 if extra == 2 else 0,
                 scope=extra & 1)
        if extra >= 3:
            c.update(symbol_id=UNKNOWN_SYMBOL, depth=1 if extra == 3 else 0)
            if extra > 4:                           # a name the table lacks: echoed by the reject
                c["reserved"] = 0x4F4E + (extra << 16)
    elif kind == 14:
        # depth 1..3 keeps a snapshot within the smallest events ring used (8 slots); now and
        # then above the maximum (rejected)
        c.update(type=QUERY, orig_cl_ord_id=cl, depth=1 + extra % 3 if extra else 101)
    elif kind in (15, 16):                          # iceberg
        c.update(type=NEW, qty=qty + 6, display_qty=1 + extra % 5, tif=DAY if extra > 12 else GTC)
        if extra == 11:
            c["display_qty"] = c["qty"]              # not smaller than qty: rejected
    elif kind in (17, 18):                          # stop and stop-limit, around the touch
        spx = tick * (100 + plevel)
        c.update(type=NEW, ord_type=STOP if extra < 6 else STOP_LIMIT, stop_price=spx,
                 price=px if extra >= 6 else 0, tif=(GTC, DAY, IOC, FOK)[extra % 4])
        if extra == 15:
            c["stop_price"] = spx + 1 if tick > 1 else 0
    elif kind == 19:                                # self-trading taker of either account
        c.update(type=NEW, tif=(GTC, IOC, FOK, DAY)[extra % 4], stp=1 + extra % 4,
                 price=tick * (100 + plevel + (-3 if side == SELL else 3)))
    elif kind == 20:                                # end of session (one symbol or all)
        c.update(type=EOS)
        if extra >= 8:
            c.update(symbol_id=UNKNOWN_SYMBOL, depth=1)
    else:
        _invalid_or_rare(c, t, symbol, tick, px)
    return c


def _limit_market_post_only(c: dict[str, int], kind: int, extra: int, qty: int, px: int) -> None:
    """Kinds 0-8 of ``make_command``: new limit orders of every tif, market, post-only."""
    if kind <= 4:                                   # plain limit, GTC or DAY
        c.update(type=NEW, tif=DAY if extra < 4 else GTC)
    elif kind == 5:
        c.update(type=NEW, tif=IOC)
    elif kind == 6:
        c.update(type=NEW, tif=FOK, qty=qty * 2)
    elif kind == 7:                                 # market, any tif
        c.update(type=NEW, ord_type=MARKET, tif=(GTC, IOC, FOK, DAY)[extra % 4], price=extra - 3)
    elif kind == 8:                                 # post-only (sometimes with IOC / market / stop)
        c.update(type=NEW, flags=1)
        if extra == 1:
            c["tif"] = IOC
        elif extra == 2:
            c["ord_type"] = MARKET
        elif extra == 3:
            c.update(ord_type=STOP_LIMIT, stop_price=px)


def _invalid_or_rare(c: dict[str, int], t: tuple[int, ...], symbol: int, tick: int, px: int) -> None:
    """Kinds 21-23 of ``make_command``: invalid commands and the rarely sent types."""
    _, _, _, cl, cl2, _, plevel, qty, extra, _ = t
    variant = extra % 14
    if variant == 0:
        c.update(type=NEW, stp=5)
    elif variant == 1:
        c.update(type=NEW, qty=HYP_SYMBOLS[symbol][1] + 1)
    elif variant == 2:
        c.update(type=NEW, price=c["price"] + 1 if tick > 1 else -tick)
    elif variant == 3:
        c.update(type=NEW, side=0)
    elif variant == 4:
        c.update(type=NEW, symbol_id=2)
    elif variant == 5:
        c.update(type=77)
    elif variant == 6:
        c.update(type=OPEN)
    elif variant == 7:
        c.update(type=QUERY, symbol_id=UNKNOWN_SYMBOL, orig_cl_ord_id=cl)
    elif variant == 8:
        c.update(type=NEW, stop_price=px)                          # stop price on a limit
    elif variant == 9:
        c.update(type=NEW, tif=IOC, display_qty=1, qty=qty + 1)    # iceberg IOC
    elif variant == 10:
        c.update(type=MASS, scope=2)
    elif variant == 12:
        # refused by the gateway's risk pass (gateway/risk/pretrade.pyx): answered as the original type
        c.update(type=RISK_REJECT, depth=33 + plevel % 5, orig_cl_ord_id=cl2,
                 stp=(NEW, CANCEL, REPLACE, QUERY)[(plevel + 4) % 4])
    elif variant == 13:
        c.update(type=ADMIN, side=1 + (plevel + 4) % 6)                # the core ignores it
    else:
        c.update(type=EOS, symbol_id=5)


# -- seeded: long realistic streams -----------------------------------------------------------------
class _Gen:
    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.symbols = list(SYMBOLS)
        self.mid = [tick * 1000 for tick, _ in SYMBOLS]
        self.next_cl = [0] * (SESSIONS + 1)
        self.recent: list[list[tuple[int, int]]] = [[] for _ in range(SESSIONS + 1)]  # (cl, symbol)
        self.seq = 0

    def price(self, sym: int, side: int, aggressive: bool) -> int:
        tick = self.symbols[sym][0]
        # mostly a few ticks from the mid, sometimes far: books of ~10-40 levels a side
        d = int(self.rng.expovariate(0.35))
        d = -(d % 4) - 1 if aggressive else d + 1
        return self.mid[sym] - d * tick if side == BUY else self.mid[sym] + d * tick

    def command(self) -> dict[str, int]:
        r = self.rng
        self.seq += 1
        s = r.randint(1, SESSIONS)
        sym = r.randrange(len(self.symbols))
        tick, max_qty = self.symbols[sym]
        if r.random() < 0.02:                       # the mid moves
            self.mid[sym] = max(50 * tick, self.mid[sym] + r.choice((-1, 1)) * tick * r.randint(1, 3))
        c = blank(self.seq, s, sym)
        side = r.choice((BUY, SELL))
        u = r.random()
        if u < 0.60:
            return self.new_order(c, s, sym, side, tick, max_qty)
        if u < 0.75 and self.recent[s]:
            cl, osym = r.choice(self.recent[s])
            self.next_cl[s] += 1
            c.update(type=CANCEL, symbol_id=osym, cl_ord_id=1_000_000 + self.next_cl[s], orig_cl_ord_id=cl)
            return c
        if u < 0.92 and self.recent[s]:
            i = r.randrange(len(self.recent[s]))
            cl, osym = self.recent[s][i]
            otick, omax = self.symbols[osym]
            new_cl = cl
            if r.random() < 0.5:
                self.next_cl[s] += 1
                new_cl = self.next_cl[s]
                self.recent[s][i] = (new_cl, osym)
            c.update(type=REPLACE, symbol_id=osym, cl_ord_id=new_cl, orig_cl_ord_id=cl, side=side,
                     price=self.price(osym, side, r.random() < 0.15),
                     qty=r.randint(1, min(omax, 40)))
            if r.random() < 0.02:
                c["price"] += 1 if otick > 1 else -c["price"]
            return c
        if u < 0.94:
            c.update(type=MASS, side=r.choice((0, 0, BUY, SELL)), scope=r.choice((0, 0, 1)),
                     cl_ord_id=self.fresh(s), flags=1 if r.random() < 0.1 else 0)
            if r.random() < 0.4:
                c.update(symbol_id=UNKNOWN_SYMBOL, depth=1)
            return c
        if u < 0.945:
            c.update(type=EOS, cl_ord_id=self.fresh(s))
            if r.random() < 0.3:
                c.update(symbol_id=UNKNOWN_SYMBOL, depth=1)
            return c
        if u < 0.97:
            c.update(type=QUERY, orig_cl_ord_id=self.seq, cl_ord_id=self.seq, depth=r.choice((0, 3, 20)))
            return c
        if u < 0.9705 or (self.seq % 20011 == 0):
            # add a book (the first valid one is the fourth symbol; later ones repeat the id: rejected)
            c.update(type=ADD, symbol_id=len(self.symbols), price=ADDED_SYMBOL[0], qty=ADDED_SYMBOL[1])
            if len(self.symbols) == len(SYMBOLS):
                self.symbols.append(ADDED_SYMBOL)
                self.mid.append(ADDED_SYMBOL[0] * 1000)
            else:
                c["symbol_id"] = len(self.symbols) + 3
            return c
        return self.invalid(c, s, side, tick)

    def fresh(self, s: int) -> int:
        self.next_cl[s] += 1
        return self.next_cl[s]

    def new_order(self, c: dict[str, int], s: int, sym: int, side: int, tick: int,
                  max_qty: int) -> dict[str, int]:
        r = self.rng
        cl = self.fresh(s)
        if r.random() < 0.03 and self.recent[s]:
            cl = r.choice(self.recent[s])[0]        # a duplicate of a (maybe) live order
        qty = min(max_qty, int(r.expovariate(1 / 12)) + 1)
        c.update(type=NEW, cl_ord_id=cl, side=side, ord_type=LIMIT, tif=GTC, qty=qty,
                 stp=r.choice((0, 0, 0, 1, 2, 3, 4)))
        u = r.random()
        if u < 0.45:
            c.update(price=self.price(sym, side, r.random() < 0.2), tif=GTC if r.random() < 0.8 else DAY)
        elif u < 0.55:
            c.update(price=self.price(sym, side, True), tif=IOC)
        elif u < 0.62:
            c.update(price=self.price(sym, side, True), tif=FOK)
        elif u < 0.67:
            c.update(ord_type=MARKET, tif=r.choice((GTC, IOC, DAY)))
        elif u < 0.74:
            c.update(price=self.price(sym, side, r.random() < 0.3), flags=1)
        elif u < 0.84:
            qty = min(max_qty, qty + r.randint(5, 40))
            c.update(price=self.price(sym, side, r.random() < 0.3), qty=qty,
                     display_qty=r.randint(1, max(1, qty // 3)), tif=r.choice((GTC, DAY)))
        else:
            # stops just beyond the mid, so that they trigger now and then
            d = r.randint(0, 6) * tick
            spx = self.mid[sym] + d if side == BUY else self.mid[sym] - d
            c.update(ord_type=r.choice((STOP, STOP_LIMIT)), stop_price=max(tick, spx),
                     tif=r.choice((GTC, GTC, DAY, IOC)))
            if c["ord_type"] == STOP_LIMIT:
                c["price"] = max(tick, spx + (3 * tick if side == BUY else -3 * tick))
        self.recent[s].append((c["cl_ord_id"], sym))
        if len(self.recent[s]) > 30:
            self.recent[s].pop(0)
        return c

    def invalid(self, c: dict[str, int], s: int, side: int, tick: int) -> dict[str, int]:
        r = self.rng
        c.update(type=NEW, cl_ord_id=self.fresh(s), side=side, ord_type=LIMIT, tif=GTC, qty=5,
                 price=self.price(c["symbol_id"], side, False))
        v = r.randrange(8)
        if v == 0:
            c["price"] += 1 if tick > 1 else -c["price"]
        elif v == 1:
            c["qty"] = 0
        elif v == 2:
            c["symbol_id"] = 40
        elif v == 3:
            c.update(ord_type=STOP, stop_price=0)
        elif v == 4:
            c.update(display_qty=9)
        elif v == 5:
            c.update(tif=2)
        elif v == 6:
            c.update(type=REPLACE, orig_cl_ord_id=987654321)
        else:
            c.update(type=99)
        return c


def seeded_stream(n: int, seed: int) -> list[dict[str, int]]:
    """n commands (seq 1..n) from the realistic generator."""
    g = _Gen(seed)
    return [g.command() for _ in range(n)]


def iter_seeded_stream(n: int, seed: int):  # type: ignore[no-untyped-def]
    """The same stream as ``seeded_stream``, lazily (for the long runs)."""
    g = _Gen(seed)
    for _ in range(n):
        yield g.command()
