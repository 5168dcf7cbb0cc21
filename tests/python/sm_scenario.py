#!/usr/bin/env python3
"""End-to-end XEP-0198 stream management scenarios against a running Rookery node, with
slixmpp's `xep_0198` plugin (a client library written by others). Run by the Rust tests in
`tests/tests/e2e/node_sm.rs`.

    sm_scenario.py HOST PORT DOMAIN CA_FILE resume|timeout|takeover METRICS_URL   (see scenario_lib.py)

Accounts alice and bob @DOMAIN must exist with the passwords "pass-alice-1" and
"pass-bob-1". Alice enables stream management with resumption and tells bob (directed
presence) she is online; bob sends her messages; her TCP connection is cut without
`</stream:stream>`; bob sends more.

- resume: alice reconnects and resumes: every message arrives exactly once, and bob never
  hears her go offline.
- takeover: instead of a cut, a second connection resumes the session while the first is
  still open: the first ends with `conflict`, the second gets what follows, once.
- timeout (the node's resume timeout is short): alice stays away; bob hears her go offline
  once the timeout passed, and her next login (a fresh session) gets every message she
  had not acknowledged from offline storage, with a delay, each once.

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every step
passed.
"""
import asyncio
import re
import sys
import urllib.request

from scenario_lib import EXTRA, HOST, PORT, Client, exit_code, jid, report

MODE, METRICS = EXTRA
ALICE, BOB = jid("alice"), jid("bob")
DELAY = "{urn:xmpp:delay}delay"


class SmClient(Client):
    def __init__(self, bare, resource, sm):
        super().__init__(bare, resource, plugins=("xep_0198",) if sm else ())
        self.enabled = asyncio.Event()
        self.resumed = asyncio.Event()
        self.gone = asyncio.Event()
        self.bodies = []
        self.delayed = []
        self.presences = []
        self.add_event_handler("sm_enabled", lambda _: self.enabled.set())
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("presence", self.on_presence)

    def on_message(self, m):
        if m["body"]:
            self.bodies.append(m["body"])
            if m.xml.find(DELAY) is not None:
                self.delayed.append(m["body"])
            self.arrived.set()

    def on_presence(self, p):
        self.presences.append((str(p["from"]), p["type"]))
        self.arrived.set()


def gauge(name):
    """A gauge of the node's Prometheus metrics."""
    text = urllib.request.urlopen(METRICS, timeout=5).read().decode()
    found = re.search(rf"^{name}(?:{{[^}}]*}})? (\d+)", text, re.M)
    return int(found.group(1)) if found else None


def send(bob, n):
    bob.send_message(mto=f"{ALICE}/phone", mbody=f"m{n}", mtype="chat")


async def main():
    bob = SmClient(BOB, "desk", sm=False)
    alice = SmClient(ALICE, "phone", sm=True)
    if not report("bob logs in", await bob.login()):
        return
    if not report("alice logs in", await alice.login()):
        return
    try:
        await asyncio.wait_for(alice.enabled.wait(), 10)
        sm = alice.plugin["xep_0198"]
        report("alice enabled resumable stream management", bool(sm.sm_id), "no SM id")
    except asyncio.TimeoutError:
        report("alice enabled resumable stream management", False, "no <enabled/>")
        return
    alice.send_presence(pto=f"{BOB}/desk")
    report(
        "bob sees alice online",
        await bob.wait_for(lambda: (f"{ALICE}/phone", "available") in bob.presences),
        str(bob.presences),
    )

    for n in (1, 2, 3):
        send(bob, n)
    report(
        "alice receives the first messages",
        await alice.wait_for(lambda: len(alice.bodies) >= 3),
        str(alice.bodies),
    )
    if MODE == "takeover":
        # Another connection resumes the session while this one still looks alive to the
        # server (§5): the old stream ends with `conflict`, the new one carries on.
        other = SmClient(ALICE, "phone", sm=True)
        osm = other.plugin["xep_0198"]
        osm.sm_id, osm.handled = sm.sm_id, sm.handled
        alice.gone.clear()
        other.connect(host=HOST, port=PORT)
        try:
            await asyncio.wait_for(other.resumed.wait(), 15)
            report("a second connection resumes the attached session", True)
        except asyncio.TimeoutError:
            report("a second connection resumes the attached session", False, "no <resumed/>")
            return
        try:
            await asyncio.wait_for(alice.gone.wait(), 10)
            report("the old connection is closed", True)
        except asyncio.TimeoutError:
            report("the old connection is closed", False, "still connected")
        send(bob, 4)
        report("the new connection receives new messages", await other.wait_for(lambda: "m4" in other.bodies), str(other.bodies))
        await asyncio.sleep(1)
        report("nothing was resent", other.bodies == ["m4"], str(other.bodies))
        report("the old connection got nothing more", alice.bodies == ["m1", "m2", "m3"], str(alice.bodies))
        report("bob never saw alice go offline", (f"{ALICE}/phone", "unavailable") not in bob.presences, str(bob.presences))
        other.disconnect()
        bob.disconnect()
        await asyncio.sleep(0.5)
        return
    if MODE == "timeout":
        # What the client acknowledged is not handed on when the session ends.
        sm.send_ack()
        await asyncio.sleep(0.5)

    # The TCP connection breaks: no </stream:stream>.
    alice.gone.clear()
    alice.abort()
    await asyncio.wait_for(alice.gone.wait(), 10)
    await asyncio.sleep(0.5)
    for n in (4, 5, 6):
        send(bob, n)
    await asyncio.sleep(1)
    unavailable = (f"{ALICE}/phone", "unavailable")

    if MODE == "resume":
        report("bob does not see alice go offline", unavailable not in bob.presences, str(bob.presences))
        # Detached, the session holds no connection: only bob's is open.
        open_now = gauge("rookery_node_connections")
        report("the detached session holds no connection", open_now == 1, f"{open_now} open")
        alice.connect(host=HOST, port=PORT)
        try:
            await asyncio.wait_for(alice.resumed.wait(), 15)
            report("alice resumes her session", True)
        except asyncio.TimeoutError:
            report("alice resumes her session", False, "no <resumed/>")
            return
        report(
            "alice receives the messages sent while she was away",
            await alice.wait_for(lambda: len(alice.bodies) >= 6),
            str(alice.bodies),
        )
        await asyncio.sleep(1)
        expected = [f"m{n}" for n in range(1, 7)]
        report("every message arrived exactly once", alice.bodies == expected, str(alice.bodies))
        # The resumed session is the same one: it still routes and answers.
        send(bob, 7)
        report("the resumed session receives new messages", await alice.wait_for(lambda: "m7" in alice.bodies), str(alice.bodies))
        await asyncio.sleep(0.5)
        report("bob never saw alice go offline", unavailable not in bob.presences, str(bob.presences))
    else:
        report(
            "bob sees alice go offline once the resume timeout passed",
            await bob.wait_for(lambda: unavailable in bob.presences, 15),
            str(bob.presences),
        )
        # A fresh session, not a resumption.
        later = SmClient(ALICE, "laptop", sm=False)
        if not report("alice logs in again", await later.login()):
            return
        report(
            "alice gets the messages she never acknowledged from offline storage",
            await later.wait_for(lambda: len(later.bodies) >= 3),
            str(later.bodies),
        )
        await asyncio.sleep(1)
        report("each message once", sorted(later.bodies) == ["m4", "m5", "m6"], str(later.bodies))
        report("with a delay saying when", sorted(later.delayed) == ["m4", "m5", "m6"], str(later.delayed))
        later.disconnect()
    bob.disconnect()
    alice.disconnect()
    await asyncio.sleep(0.5)


asyncio.run(main())
sys.exit(exit_code())
