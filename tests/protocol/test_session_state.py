"""The order-entry session driven directly, sans I/O: bytes in through ``receive_data``, time
through ``tick(now_ns)`` on a fake clock (plain integers of ns since the epoch), bytes out
through ``data_to_send``.  No sockets, no sleeps, no event loop.  Login (in literal bytes too),
rejects, heartbeats both ways and the heartbeat timeout, the login timeout (today's behaviour,
with what issue 14 changes), replay requests, logout both ways, refusals before login and by
role, malformed frames.  The table itself, walked cell by cell, and random sequences of inputs:
tests/protocol/test_session_table.py.
"""
from __future__ import annotations

import pytest
from support.session_inputs import (
    ACTIVE,
    ADMIN,
    AWAIT_LOGIN,
    BAD_SOFH,
    CANCEL,
    CLOSED,
    DROPCOPY,
    EOS,
    GOOD,
    LIVE_NEXT_SEQ,
    LOGIN_ACCEPTED_LITERAL,
    LOGIN_LITERAL,
    MS,
    NEW_ORDER,
    POSITION_QUERY,
    SERVER_ONLY,
    T0,
    UNKNOWN_TEMPLATE,
    answers,
    frame,
    logged_in,
    login,
    make_session,
    reject,
    report,
)

from matching.records import LoginRejectReason, RejectReason
from protocol.messages import (
    EndOfSession,
    Heartbeat,
    LoginAccepted,
    LoginRejected,
    Logout,
    Message,
    NewOrder,
    PositionQuery,
)
from protocol.session import LogoutReason, ServerSession


# -- login --------------------------------------------------------------------------------------
@pytest.mark.parametrize("sofh", [True, False], ids=["tcp", "websocket"])
def test_a_login_in_literal_bytes_is_accepted(sofh: bool) -> None:
    s, gw = make_session(sofh)
    data = LOGIN_LITERAL if sofh else LOGIN_LITERAL[6:]     # WebSocket: no SOFH
    for i in range(len(data)):                               # a partial frame waits for the rest
        assert s.state is AWAIT_LOGIN and s.data_to_send() == b""
        s.receive_data(data[i:i + 1], T0 + i)
    assert s.data_to_send() == (LOGIN_ACCEPTED_LITERAL if sofh else LOGIN_ACCEPTED_LITERAL[6:])
    assert s.state is ACTIVE and s.session_id == 7 and s.account_id == 3 and s.role == "trader"
    assert s.cancel_on_disconnect and s.heartbeat_ms == 1000
    assert [(m.token, m.next_expected_seq_num) for m in gw.logins] == [(GOOD, 5)]


def test_a_rejected_login_closes_without_a_logout_and_ignores_the_rest() -> None:
    s, gw = make_session()
    s.receive_data(frame(login("wrong")) + frame(NEW_ORDER), T0)
    assert answers(s) == [LoginRejected(reason=LoginRejectReason.LOGIN_BAD_TOKEN)]
    assert s.state is CLOSED and s.closed and s.close_reason == LoginRejectReason.LOGIN_BAD_TOKEN
    assert s.counters.login_failures == {LoginRejectReason.LOGIN_BAD_TOKEN: 1}
    s.receive_data(frame(login()), T0 + MS)
    s.tick(T0 + 10_000 * MS)
    s.shutdown()
    assert s.data_to_send() == b"" and len(gw.logins) == 1 and len(s.ring) == 0


@pytest.mark.parametrize(("asked", "agreed"), [(0, 1000), (5, 100), (250, 250), (10**9, 60_000)])
def test_the_heartbeat_interval_is_clamped_and_echoed(asked: int, agreed: int) -> None:
    s, _ = make_session()
    s.receive_data(frame(login(hb=asked)), T0)
    (accepted,) = answers(s)
    assert isinstance(accepted, LoginAccepted) and accepted.heartbeat_interval_ms == agreed
    assert s.heartbeat_ms == agreed


def test_a_second_login_is_refused_and_the_session_goes_on() -> None:
    s, gw = logged_in()
    s.receive_data(frame(login()) + frame(POSITION_QUERY), T0 + MS)
    assert answers(s) == [LoginRejected(reason=LoginRejectReason.LOGIN_ALREADY_LOGGED_IN),
                          report(9)]
    assert s.state is ACTIVE and len(gw.logins) == 1     # the gateway was not asked again
    assert s.counters.login_failures == {LoginRejectReason.LOGIN_ALREADY_LOGGED_IN: 1}


@pytest.mark.parametrize(("next_expected", "next_seq"), [(0, LIVE_NEXT_SEQ), (5, 5), (43, 43)])
def test_a_replay_request_reaches_the_gateway_and_its_next_seq_num_is_sent(
        next_expected: int, next_seq: int) -> None:
    """nextExpectedSeqNum goes to the gateway's decision (which replays from it); LoginAccepted
    carries the decision's nextSeqNum: the first replayed message, or the next live one."""
    s, gw = make_session()
    s.receive_data(frame(login(next_expected=next_expected)), T0)
    assert answers(s) == [LoginAccepted(session_id=7, next_seq_num=next_seq, heartbeat_interval_ms=1000)]
    assert gw.logins[0].next_expected_seq_num == next_expected


# -- heartbeats and the heartbeat timeout --------------------------------------------------------
def test_the_server_heartbeats_after_an_interval_with_nothing_sent() -> None:
    s, _ = logged_in()                                    # LoginAccepted sent at T0
    timeline = []
    for t in (999, 1000, 1500, 1999, 2000):
        s.tick(T0 + t * MS)
        timeline.append((t, answers(s)))
    assert timeline == [(999, []), (1000, [Heartbeat()]), (1500, []), (1999, []),
                        (2000, [Heartbeat()])]
    s.note_sent(T0 + 2500 * MS)                          # business messages reset the interval
    s.tick(T0 + 3000 * MS)
    assert answers(s) == []


def test_client_heartbeats_keep_the_session_alive_and_silence_ends_it() -> None:
    s, _ = logged_in()
    t = T0
    for _ in range(20):                                   # 58 s of heartbeats 2.9 s apart
        t += 2900 * MS
        s.tick(t)
        s.receive_data(frame(Heartbeat()), t)
        assert s.state is ACTIVE
    assert all(isinstance(m, Heartbeat) for m in answers(s))
    s.tick(t + 3000 * MS)                                 # exactly 3 intervals: not yet
    assert s.state is ACTIVE
    answers(s)
    s.tick(t + 3000 * MS + 1)
    assert answers(s) == [Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.HEARTBEAT_TIMEOUT
    assert s.counters.heartbeat_timeouts == 1


def test_the_heartbeat_timeout_follows_the_agreed_interval() -> None:
    s, _ = make_session()
    s.receive_data(frame(login(hb=200)), T0)
    answers(s)
    s.tick(T0 + 600 * MS)
    assert answers(s) == [Heartbeat()] and s.state is ACTIVE
    s.tick(T0 + 601 * MS)
    assert answers(s) == [Logout(reason=LogoutReason.HEARTBEAT_TIMEOUT)]


# -- the login timeout ---------------------------------------------------------------------------
def silent_connection_timeline(s: ServerSession, until_ms: int) -> list[tuple[int, Message]]:
    """Ticks every 100 ms from T0 with the peer silent: (ms, message) of everything sent."""
    out = []
    for t in range(100, until_ms + 1, 100):
        s.tick(T0 + t * MS)
        out += [(t, m) for m in answers(s)]
    return out


def test_a_silent_connection_before_login_gets_no_heartbeats_then_login_timeout() -> None:
    """With the defaults (login timeout 5 s, heartbeat 1 s x 3): nothing is sent before login,
    the silence timeout is not armed, and Logout LOGIN_TIMEOUT ends it at 5.1 s (issue 14:
    before the fix, heartbeats and then Logout HEARTBEAT_TIMEOUT at 3.1 s)."""
    s, _ = make_session()
    assert silent_connection_timeline(s, 6000) == [
        (5100, Logout(reason=LogoutReason.LOGIN_TIMEOUT))]
    assert s.state is CLOSED and s.close_reason == LogoutReason.LOGIN_TIMEOUT
    assert s.counters.login_timeouts == 1 and s.counters.heartbeat_timeouts == 0


def test_without_a_login_timeout_a_silent_connection_before_login_is_left_alone() -> None:
    """login_timeout_ms 0 (the config requires >= 1; the fuzzers use 0): no timer at all before
    login, however long the silence."""
    s, _ = make_session(login_timeout_ms=0)
    assert silent_connection_timeline(s, 20_000) == []
    assert s.state is AWAIT_LOGIN


def test_the_login_timeout_ends_a_peer_that_heartbeats_but_never_logs_in() -> None:
    s, _ = make_session()
    for t in range(1000, 5001, 1000):
        s.receive_data(frame(Heartbeat()), T0 + t * MS)
        s.tick(T0 + t * MS)
    assert s.state is AWAIT_LOGIN                         # at exactly 5 s: not yet
    answers(s)
    s.tick(T0 + 5000 * MS + 1)
    assert answers(s) == [Logout(reason=LogoutReason.LOGIN_TIMEOUT)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.LOGIN_TIMEOUT
    assert s.counters.login_timeouts == 1 and s.counters.heartbeat_timeouts == 0


def test_a_short_login_timeout_fires_at_its_time_with_nothing_before_it() -> None:
    s, _ = make_session(login_timeout_ms=1500)
    assert silent_connection_timeline(s, 3000) == [(1600, Logout(reason=LogoutReason.LOGIN_TIMEOUT))]


def test_the_login_timeout_is_not_armed_after_login() -> None:
    s, _ = logged_in(login_timeout_ms=500)
    s.receive_data(frame(Heartbeat()), T0 + 900 * MS)
    s.tick(T0 + 901 * MS)
    assert s.state is ACTIVE and answers(s) == [] and s.counters.login_timeouts == 0


# -- logout ----------------------------------------------------------------------------------------
def test_a_client_logout_is_answered_and_ends_the_session() -> None:
    s, _ = logged_in()
    s.receive_data(frame(Logout()) + frame(NEW_ORDER), T0 + MS)
    assert answers(s) == [Logout(reason=LogoutReason.NORMAL)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.NORMAL and len(s.ring) == 0
    s.receive_data(frame(Heartbeat()), T0 + 2 * MS)
    s.tick(T0 + 60_000 * MS)
    assert s.data_to_send() == b""


@pytest.mark.parametrize("reason", [LogoutReason.SERVER_SHUTDOWN, LogoutReason.SLOW_CONSUMER])
def test_a_server_logout_says_why(reason: LogoutReason) -> None:
    s, _ = logged_in()
    if reason is LogoutReason.SERVER_SHUTDOWN:
        s.shutdown()
    else:
        s.shutdown(reason)
    assert answers(s) == [Logout(reason=reason)] and s.state is CLOSED and s.close_reason == reason
    s.shutdown()
    assert s.data_to_send() == b""                        # once


# -- refused before login, role checks after it ------------------------------------------------------
def test_business_messages_before_login_are_violations() -> None:
    s, _ = make_session()
    s.receive_data(frame(NEW_ORDER) + frame(POSITION_QUERY), T0)
    assert answers(s) == [reject(RejectReason.REJ_NOT_LOGGED_IN, NewOrder.TEMPLATE_ID),
                          reject(RejectReason.REJ_NOT_LOGGED_IN, PositionQuery.TEMPLATE_ID)]
    assert s.state is AWAIT_LOGIN and len(s.ring) == 0 and s.commands_queued == 0
    assert s.counters.role_violations == 2 and s.violations == 2
    s.receive_data(frame(EOS), T0)                        # the third: logged out
    assert answers(s) == [reject(RejectReason.REJ_NOT_LOGGED_IN, EndOfSession.TEMPLATE_ID),
                          Logout(reason=LogoutReason.POLICY_VIOLATION)]
    assert s.state is CLOSED and s.counters.policy_disconnects == 1


def test_a_server_message_before_login_is_rejected_but_not_a_violation() -> None:
    s, _ = make_session(max_violations=1)
    s.receive_data(frame(SERVER_ONLY) + frame(login()), T0)
    assert answers(s) == [reject(RejectReason.REJ_NOT_LOGGED_IN, LoginAccepted.TEMPLATE_ID),
                          LoginAccepted(session_id=7, next_seq_num=LIVE_NEXT_SEQ,
                                        heartbeat_interval_ms=1000)]
    assert s.violations == 0 and s.state is ACTIVE
    assert s.counters.rejects == {RejectReason.REJ_NOT_LOGGED_IN: 1}


def test_orders_after_login_go_to_the_ring_in_one_batch() -> None:
    s, _ = logged_in()
    order, cancel = frame(NEW_ORDER), frame(CANCEL)
    s.receive_data(order + cancel[:7], T0 + MS)          # the cancel's tail comes later
    assert len(s.ring) == 1 and s.commands_queued == 1
    s.receive_data(cancel[7:], T0 + 2 * MS)
    assert len(s.ring) == 2 and s.commands_queued == 2 and answers(s) == []


def test_a_role_is_checked_after_the_table() -> None:
    """A drop copy may ask for positions but not trade; a trader may not end the session; an
    admin may (the table allows all three in ACTIVE, the role decides)."""
    s, _ = logged_in(DROPCOPY)
    s.receive_data(frame(POSITION_QUERY) + frame(NEW_ORDER) + frame(EOS), T0 + MS)
    assert answers(s) == [report(9), reject(RejectReason.REJ_NOT_AUTHORIZED, NewOrder.TEMPLATE_ID),
                          reject(RejectReason.REJ_NOT_AUTHORIZED, EndOfSession.TEMPLATE_ID)]
    assert len(s.ring) == 0 and s.violations == 2 and s.state is ACTIVE
    admin, _ = logged_in(ADMIN)
    admin.receive_data(frame(EOS), T0 + MS)
    assert answers(admin) == [] and len(admin.ring) == 1 and admin.commands_queued == 1


# -- malformed input -------------------------------------------------------------------------------
@pytest.mark.parametrize("logged", [False, True], ids=["before-login", "after-login"])
@pytest.mark.parametrize(("data", "reason", "template"), [
    (BAD_SOFH, RejectReason.REJ_MALFORMED, 0),
    (UNKNOWN_TEMPLATE, RejectReason.REJ_UNKNOWN_TEMPLATE, 99),
    (bytes.fromhex("00000005eb50"), RejectReason.REJ_MALFORMED, 0),   # frame length below 14
], ids=["bad-sofh", "unknown-template", "short-frame"])
def test_a_malformed_frame_is_rejected_and_logged_out(logged: bool, data: bytes, reason: int,
                                                       template: int) -> None:
    s, _ = logged_in() if logged else make_session()
    s.receive_data(data + frame(Heartbeat()), T0 + MS)
    assert answers(s) == [reject(reason, template), Logout(reason=LogoutReason.PROTOCOL_ERROR)]
    assert s.state is CLOSED and s.close_reason == LogoutReason.PROTOCOL_ERROR
    assert s.counters.rejects == {reason: 1}


def test_websocket_leftovers_and_text_messages_are_protocol_errors() -> None:
    s, _ = make_session(sofh=False)
    s.receive_data(frame(login(), sofh=False), T0)
    answers(s)
    s.receive_data(frame(NEW_ORDER, sofh=False)[:20], T0 + MS)
    s.end_of_message(T0 + MS)                             # the message ended mid-NewOrder
    assert answers(s) == [reject(RejectReason.REJ_MALFORMED, NewOrder.TEMPLATE_ID),
                          Logout(reason=LogoutReason.PROTOCOL_ERROR)]
    t, _ = make_session(sofh=False)
    t.receive_data(frame(Heartbeat(), sofh=False), T0)
    t.end_of_message(T0)                                  # nothing left over: fine
    t.protocol_error(T0 + MS)                             # a WebSocket text message
    assert answers(t) == [reject(RejectReason.REJ_MALFORMED, 0),
                          Logout(reason=LogoutReason.PROTOCOL_ERROR)]
    t.protocol_error(T0 + 2 * MS)
    assert t.data_to_send() == b""

