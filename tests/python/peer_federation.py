#!/usr/bin/env python3
"""Federation scenario between two XMPP servers, with slixmpp (a client library written by
others): a user on each side subscribes to the other's presence (both approve), each sees
the other come online, and they exchange messages in both directions, all over s2s.

    peer_federation.py A_HOST A_PORT A_DOMAIN A_CA B_HOST B_PORT B_DOMAIN B_CA [TIMEOUT]

The two endpoints are arbitrary: Prosody and ejabberd (tests/tests/e2e/federation_peers.rs),
later a Rookery node and either of them, or two Rookery nodes. Each endpoint is the
address of its c2s port (STARTTLS), the server's domain, and a CA file that verifies the
server's certificate for that domain. The accounts alice@A_DOMAIN and bob@B_DOMAIN must
exist with the passwords "pass-alice-1" and "pass-bob-1". TIMEOUT (default 20) bounds
each wait, in seconds.

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every
step passed. The clients answer nothing on their own (slixmpp would accept and return
every subscription request by default): each subscription stanza is sent explicitly, as a
user would.
"""
import asyncio
import sys

import slixmpp

if len(sys.argv) not in (9, 10):
    sys.exit(__doc__)
A = (sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4])
B = (sys.argv[5], int(sys.argv[6]), sys.argv[7], sys.argv[8])
WAIT = float(sys.argv[9]) if len(sys.argv) == 10 else 20.0
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + str(why)[:2000]), flush=True)
    if not ok:
        failures.append(step)
    return ok


class Client(slixmpp.ClientXMPP):
    """A client of one endpoint that records every presence and chat message it receives."""

    def __init__(self, user, endpoint):
        host, port, domain, ca = endpoint
        super().__init__(f"{user}@{domain}/fed", f"pass-{user}-1")
        self.host, self.port = host, port
        self.ca_certs = ca
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.seen = []  # ("presence" | "message", stanza)
        self.arrived = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        self.add_event_handler("presence", lambda p: self.record("presence", p))
        self.add_event_handler("message", lambda m: self.record("message", m))

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    def record(self, kind, stanza):
        self.seen.append((kind, stanza))
        self.arrived.set()

    async def login(self):
        self.connect(host=self.host, port=self.port)
        waits = [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.failed.wait())]
        await asyncio.wait(waits, timeout=WAIT, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return self.ready.is_set()

    async def wait_for(self, kind, pred):
        """Takes the first recorded stanza of `kind` matching `pred`, waiting for it."""
        deadline = asyncio.get_running_loop().time() + WAIT
        while True:
            for i, (k, x) in enumerate(self.seen):
                if k == kind and pred(x):
                    del self.seen[i]
                    return x
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def presence(self, ptype, bare_from):
        return await self.wait_for(
            "presence",
            lambda p: p["type"] == ptype and p["from"].bare == bare_from,
        )

    def received(self, kind):
        return [str(x) for k, x in self.seen if k == kind]


async def subscribe(asker, contact, step):
    """`asker` asks for `contact`'s presence, `contact` approves; both ends must see it."""
    asker.send_presence(pto=contact.boundjid.bare, ptype="subscribe")
    got = await contact.presence("subscribe", asker.boundjid.bare)
    if not report(f"{step} request arrives", got is not None, contact.received("presence")):
        return False
    contact.send_presence(pto=asker.boundjid.bare, ptype="subscribed")
    got = await asker.presence("subscribed", contact.boundjid.bare)
    return report(f"{step} approval arrives", got is not None, asker.received("presence"))


async def main():
    alice, bob = Client("alice", A), Client("bob", B)
    if not report("alice logs in", await alice.login(), f"{A[2]} at {A[0]}:{A[1]}"):
        return
    if not report("bob logs in", await bob.login(), f"{B[2]} at {B[0]}:{B[1]}"):
        alice.disconnect()
        return
    a, b = alice.boundjid.bare, bob.boundjid.bare

    if await subscribe(alice, bob, "alice->bob subscription"):
        # On approval the contact's server sends the contact's current presence (RFC 6121
        # 3.1.5, 4.3.2).
        got = await alice.presence("available", b)
        report("alice sees bob online", got is not None, alice.received("presence"))
    if await subscribe(bob, alice, "bob->alice subscription"):
        got = await bob.presence("available", a)
        report("bob sees alice online", got is not None, bob.received("presence"))

    # Rosters on both sides say "both".
    for who, other in ((alice, bob), (bob, alice)):
        await who.get_roster()
        sub = who.client_roster[other.boundjid.bare]["subscription"]
        report(f"{who.boundjid.user}'s roster has {other.boundjid.user} as both", sub == "both", sub)

    # A presence change reaches the contact.
    bob.send_presence(pstatus="busy", pshow="dnd")
    got = await alice.wait_for(
        "presence",
        lambda p: p["from"].bare == b and p["show"] == "dnd" and p["status"] == "busy",
    )
    report("alice sees bob's new status", got is not None, alice.received("presence"))

    alice.send_message(mto=b, mbody="hello bob, from alice", mtype="chat")
    got = await bob.wait_for(
        "message", lambda m: m["from"].bare == a and m["body"] == "hello bob, from alice"
    )
    report("message alice->bob", got is not None, bob.received("message"))
    bob.send_message(mto=a, mbody="hello alice, from bob", mtype="chat")
    got = await alice.wait_for(
        "message", lambda m: m["from"].bare == b and m["body"] == "hello alice, from bob"
    )
    report("message bob->alice", got is not None, alice.received("message"))

    # Going offline is seen across the link as well.
    bob.send_presence(ptype="unavailable")
    got = await alice.presence("unavailable", b)
    report("alice sees bob go offline", got is not None, alice.received("presence"))

    alice.disconnect()
    bob.disconnect()
    await asyncio.sleep(0.3)


asyncio.run(asyncio.wait_for(main(), WAIT * 12))
sys.exit(1 if failures else 0)
