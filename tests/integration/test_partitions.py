"""Scale-out by symbol partition: two ``hftgw serve`` processes, each owning its symbols, and the
directory (a file, and /directory on the side port) that ``hftgw client`` and ``hftgw
replay-lobster`` route by."""
from __future__ import annotations

import json
from pathlib import Path

import pytest
from support.gateway_harness import BOOKS, MESSAGES, free_port, hftgw, metric_value, scrape, serve_process

from gateway.config.directory import Directory, DirectoryError, PartitionEntry, parse_directory, with_entry


def test_directory_routes_and_refuses_contradictions() -> None:
    d = parse_directory(b'{"partitions": [{"name": "p0", "order_entry": "a:1", "symbols": ["X"]},'
                        b'{"name": "p1", "order_entry": "b:2", "metrics": "b:3", "symbols": ["Y"]}]}')
    assert d.route("Y").order_entry == "b:2"
    with pytest.raises(KeyError, match="no partition of the directory serves 'Z'"):
        d.route("Z")
    with pytest.raises(DirectoryError,
                       match=r"partitions\[1\].symbols: 'X' is also served by partition 'p0'"):
        parse_directory(b'{"partitions": [{"name": "p0", "order_entry": "a:1", "symbols": ["X"]},'
                        b'{"name": "p1", "order_entry": "b:2", "symbols": ["X"]}]}', "dir.json")
    with pytest.raises(DirectoryError, match=r"dir.json: .*order_entry: expected host:port"):
        parse_directory(b'{"partitions": [{"name": "p0", "order_entry": "nope", "symbols": []}]}',
                        "dir.json")
    with pytest.raises(DirectoryError,
                       match=r"Object missing required field `symbols` - at `\$.partitions\[0\]`"):
        parse_directory(b'{"partitions": [{"name": "p0", "order_entry": "a:1"}]}')
    # a partition's live entry replaces its line of the file, in place
    live = with_entry(d, PartitionEntry("p0", "a:1", ["X", "W"], "a:9"))
    assert [p.name for p in live.partitions] == ["p0", "p1"] and live.route("W").name == "p0"
    with pytest.raises(DirectoryError,
                       match="partition 'p0' serves 'Y', which the directory gives to partition 'p1'"):
        with_entry(d, PartitionEntry("p0", "a:1", ["Y"]))


def _partition(name: str, symbols: list[str], directory: Path) -> dict[str, str]:
    return {"HFTGW_LISTEN": f"127.0.0.1:{free_port()}",
            "HFTGW_METRICS_LISTEN": f"127.0.0.1:{free_port()}",
            "HFTGW_PARTITION": name, "HFTGW_DIRECTORY_FILE": str(directory),
            "HFTGW_SYMBOLS": json.dumps([{"name": s} for s in symbols])}


def test_two_partitions_trade_through_the_directory(tmp_path: Path) -> None:
    directory = tmp_path / "directory.json"
    p0 = _partition("p0", ["AAPL", "AMZN"], directory)
    p1 = _partition("p1", ["GOOG", "MSFT"], directory)
    directory.write_bytes(Directory([
        PartitionEntry("p0", p0["HFTGW_LISTEN"], ["AAPL", "AMZN"], p0["HFTGW_METRICS_LISTEN"]),
        PartitionEntry("p1", p1["HFTGW_LISTEN"], ["GOOG", "MSFT"], p1["HFTGW_METRICS_LISTEN"]),
    ]).encode())
    with serve_process(tmp_path / "p0", p0) as (cfg0, _), serve_process(tmp_path / "p1", p1) as (cfg1, _):
        url = f"http://{cfg0.metrics_listen}/directory"  # any partition's side port will do
        for symbol, source in (("AAPL", str(directory)), ("GOOG", url)):
            sell = hftgw("client", "--directory", source, "--account", "alice", "--cl-ord-id", "1",
                         "new", symbol, "sell", "100", "150.00")
            assert "OrderAccepted" in sell.stdout, sell.stdout + sell.stderr
            buy = hftgw("client", "--directory", source, "--account", "bob", "--cl-ord-id", "2",
                        "new", symbol, "buy", "40", "150.01")
            assert "Execution" in buy.stdout and "last_qty=40" in buy.stdout, buy.stdout + buy.stderr
        # each process matched only its own symbol
        for cfg, mine in ((cfg0, "AAPL"), (cfg1, "GOOG")):
            _, text = scrape(cfg)
            assert metric_value(text, "hftgw_fills_total") == 1
            assert metric_value(text, "hftgw_partition_info", f'partition="{cfg.partition}"') == 1
            book = hftgw("client", "--connect", cfg.listen, "book", mine)
            assert "asks=[150 x 60 (1)]" in book.stdout
        wrong = hftgw("client", "--connect", cfg0.listen, "new", "GOOG", "buy", "1", "1.00")
        assert "reason=UNKNOWN_SYMBOL" in wrong.stdout
        # the served directory: p1 from the file, p0 live from the process
        served = json.loads(scrape(cfg0, "/directory")[1])
        assert [(p["name"], p["order_entry"], p["symbols"]) for p in served["partitions"]] == [
            ("p0", cfg0.listen, ["AAPL", "AMZN"]), ("p1", cfg1.listen, ["GOOG", "MSFT"])]
        listing = hftgw("directory", url)
        assert listing.returncode == 0 and "GOOG MSFT" in listing.stdout and cfg1.listen in listing.stdout
        # a symbol no partition serves is a clear error, before connecting anywhere
        nowhere = hftgw("client", "--directory", str(directory), "new", "TSLA", "buy", "1", "1.00")
        assert nowhere.returncode == 2 and "no partition of the directory serves 'TSLA'" in nowhere.stderr
        # a mass cancel without a symbol reaches every partition
        mc = hftgw("client", "--directory", str(directory), "--account", "alice", "mass-cancel")
        assert mc.stdout.count("MassCancelDone") == 2 and mc.stdout.count("canceled_count=1") == 2
        # the replay routes by its symbol too (AMZN lives on p0)
        rp = hftgw("replay-lobster", str(MESSAGES), str(BOOKS), "--symbol", "AMZN", "--limit", "2000",
                   "--json", "--directory", url)
        assert rp.returncode == 0, rp.stderr
        assert json.loads(rp.stdout)["rows"] == 2000
        _, text0 = scrape(cfg0)
        _, text1 = scrape(cfg1)
        assert metric_value(text0, "hftgw_orders_received_total") > 1000
        assert metric_value(text1, "hftgw_orders_received_total") == 2  # sell and buy of GOOG


def test_a_partition_refuses_to_start_when_the_directory_disagrees(tmp_path: Path) -> None:
    directory = tmp_path / "directory.json"
    directory.write_text('{"partitions": [{"name": "p9", "order_entry": "elsewhere:7001", '
                         '"symbols": ["AAPL"]}]}')
    env = _partition("p0", ["AAPL"], directory)
    with pytest.raises(RuntimeError,
                       match=r"exited with 2(.|\n)*'AAPL', which the directory gives to partition 'p9'"):
        with serve_process(tmp_path / "p0", env):
            pass
