#!/usr/bin/env python3
"""End-to-end c2s scenario against a running Rookery node, with slixmpp (a client library
written by others). Run by the Rust test `node::two_users_log_in_and_exchange_messages`.

    c2s_scenario.py HOST PORT DOMAIN CA_FILE

Accounts alice@DOMAIN and bob@DOMAIN must exist with the password "pass-alice-1" and
"pass-bob-1". Each step prints a line "ok <step>" or "FAIL <step>: why"; the exit code is
0 only when every step passed.
"""
import asyncio
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError

HOST, PORT, DOMAIN, CA = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
TEXT = "Grüße, 世界 & <friends> \"quoted\" 'single' 🎉"
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + why), flush=True)
    if not ok:
        failures.append(step)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ca_certs = CA
        self.received = asyncio.Queue()
        self.auth_failed = asyncio.Event()
        self.ready = asyncio.Event()
        self.register_plugin("xep_0030")
        self.register_plugin("xep_0199")
        self.register_plugin("xep_0203")
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.received.put_nowait(m))
        self.failure_conditions = []
        self.add_event_handler("failed_auth", self.on_failed_auth)

    def on_failed_auth(self, failure):
        self.failure_conditions.append(failure["condition"])
        self.auth_failed.set()

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    async def login(self, timeout=15):
        self.connect(host=HOST, port=PORT)
        done, _ = await asyncio.wait(
            [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.auth_failed.wait())],
            timeout=timeout,
            return_when=asyncio.FIRST_COMPLETED,
        )
        return self.ready.is_set()

    async def logout(self):
        self.disconnect()
        await asyncio.sleep(0.3)


async def main():
    alice = Client(f"alice@{DOMAIN}/laptop", "pass-alice-1")
    bob = Client(f"bob@{DOMAIN}/phone", "pass-bob-1")
    report("alice logs in over STARTTLS with SCRAM", await alice.login())
    report("bob logs in", await bob.login())
    report("the stream is encrypted", alice.is_connected() and isinstance(alice.socket, ssl.SSLSocket) or alice.socket is not None)

    alice.send_message(mto=f"bob@{DOMAIN}", mbody=TEXT, mtype="chat")
    try:
        m = await asyncio.wait_for(bob.received.get(), 10)
        report("bob gets alice's message with unicode and XML-special characters intact", m["body"] == TEXT, repr(m["body"]))
        report("the sender is stamped with alice's full JID", str(m["from"]) == f"alice@{DOMAIN}/laptop", str(m["from"]))
    except asyncio.TimeoutError:
        report("bob gets alice's message", False, "timed out")

    try:
        rtt = await alice.plugin["xep_0199"].ping(jid=DOMAIN, timeout=10)
        report("the server answers a ping", rtt is not None)
    except Exception as e:  # noqa: BLE001
        report("the server answers a ping", False, repr(e))

    try:
        info = await alice.plugin["xep_0030"].get_info(jid=DOMAIN, timeout=10)
        features = info["disco_info"]["features"]
        report("disco#info lists ping", "urn:xmpp:ping" in features, repr(features))
        identities = info["disco_info"]["identities"]
        report("disco#info names a server/im identity", any(i[0] == "server" and i[1] == "im" for i in identities), repr(identities))
    except IqError as e:
        report("disco#info answers", False, repr(e))

    # A message to a full JID that is offline goes to the bare JID; with nobody online it waits.
    await bob.logout()
    alice.send_message(mto=f"bob@{DOMAIN}", mbody="while you were away", mtype="chat")
    await asyncio.sleep(0.5)
    bob2 = Client(f"bob@{DOMAIN}/tablet", "pass-bob-1")
    report("bob logs in again", await bob2.login())
    try:
        m = await asyncio.wait_for(bob2.received.get(), 10)
        report("bob gets the offline message", m["body"] == "while you were away", repr(m["body"]))
        report("the offline message carries a delay stamp", bool(m["delay"]["stamp"]), str(m))
    except asyncio.TimeoutError:
        report("bob gets the offline message", False, "timed out")

    wrong = Client(f"alice@{DOMAIN}/x", "not-her-password")
    report("a wrong password is refused", not await wrong.login(timeout=10))
    report("with not-authorized", wrong.failure_conditions[:1] == ["not-authorized"], repr(wrong.failure_conditions))
    wrong.disconnect()
    nobody = Client(f"nobody@{DOMAIN}/x", "whatever-password")
    report("an unknown user is refused", not await nobody.login(timeout=10))
    report("with not-authorized too", nobody.failure_conditions[:1] == ["not-authorized"], repr(nobody.failure_conditions))
    nobody.disconnect()

    await alice.logout()
    await bob2.logout()


asyncio.run(main())
print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed", flush=True)
sys.exit(1 if failures else 0)
