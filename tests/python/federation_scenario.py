#!/usr/bin/env python3
"""Federation between two servers (RFC 6120 server-to-server, RFC 6121 subscriptions),
seen from their clients with slixmpp: alice on DOMAIN (served at PORT) and bob on
DOMAIN_B (served at PORT_B, on the same HOST). Run by the Rust test
`node_federation::two_nodes_federate_over_verified_links_and_policy_refuses`.

    federation_scenario.py HOST PORT DOMAIN CA_FILE PORT_B DOMAIN_B PHASE

CA_FILE is the test CA both servers' certificates chain to. Accounts alice@DOMAIN and
bob@DOMAIN_B have the passwords "pass-alice-1" and "pass-bob-1".

PHASE "exchange": alice and bob subscribe to each other's presence (each approving
explicitly), each sees the other online, and messages cross both ways.
PHASE "messages": only messages, both ways.
PHASE "refused": the servers no longer federate: a message from either side comes back
as an error (the condition is printed).

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every
step passed.
"""
import asyncio
import sys

from scenario_lib import DOMAIN, EXTRA, HOST, PORT, Client, exit_code, report

PORT_B, DOMAIN_B, PHASE = int(EXTRA[0]), EXTRA[1], EXTRA[2]
ALICE, BOB = f"alice@{DOMAIN}", f"bob@{DOMAIN_B}"
# Links are made on the first stanza (resolution, TLS, authentication): a little slack.
WAIT = 20


class Peer(Client):
    """A client that answers nothing by itself and records presence and messages."""

    def __init__(self, bare, port, resource="fed"):
        super().__init__(bare, resource)
        self.port = port
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.presences = []
        self.messages = []
        self.add_event_handler("presence", self.on_presence)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("message_error", self.on_message)

    def on_presence(self, p):
        self.presences.append(p)
        self.arrived.set()

    def on_message(self, m):
        self.messages.append(m)
        self.arrived.set()

    async def login(self):
        self.connect(host=HOST, port=self.port)
        try:
            await asyncio.wait_for(self.ready.wait(), 15)
            return True
        except asyncio.TimeoutError:
            return False

    def saw_presence(self, ptype, pfrom):
        return any(
            p["type"] == ptype and p["from"].bare == pfrom for p in self.presences
        )

    def message_from(self, pfrom, body=None, mtype=None):
        for m in self.messages:
            if m["from"].bare != pfrom:
                continue
            if mtype and m["type"] != mtype:
                continue
            if body and m["body"] != body:
                continue
            return m
        return None


async def step(name, client, what, timeout=WAIT):
    return report(name, await client.wait_for(what, timeout), "nothing came in time")


async def exchange(alice, bob):
    alice.send_presence(pto=BOB, ptype="subscribe")
    await step("bob receives alice's subscription request across servers", bob,
               lambda: bob.saw_presence("subscribe", ALICE))
    bob.send_presence(pto=ALICE, ptype="subscribed")
    await step("alice receives bob's approval", alice,
               lambda: alice.saw_presence("subscribed", BOB))
    await step("alice sees bob online", alice,
               lambda: alice.saw_presence("available", BOB))
    bob.send_presence(pto=ALICE, ptype="subscribe")
    await step("alice receives bob's subscription request", alice,
               lambda: alice.saw_presence("subscribe", BOB))
    alice.send_presence(pto=BOB, ptype="subscribed")
    await step("bob receives alice's approval", bob,
               lambda: bob.saw_presence("subscribed", ALICE))
    await step("bob sees alice online", bob,
               lambda: bob.saw_presence("available", ALICE))
    alice.send_message(mto=BOB, mbody="hello from a", mtype="chat")
    await step("bob receives alice's message", bob,
               lambda: bob.message_from(ALICE, "hello from a", "chat"))
    bob.send_message(mto=ALICE, mbody="hello from b", mtype="chat")
    await step("alice receives bob's message", alice,
               lambda: alice.message_from(BOB, "hello from b", "chat"))
    await alice.get_roster()
    sub = alice.client_roster[BOB]["subscription"]
    report("alice's roster says both for bob", sub == "both", f"subscription={sub!r}")
    # A new login gets bob's presence again: the server probes bob's server.
    alice2 = Peer(ALICE, PORT, "second")
    if report("alice logs in a second time", await alice2.login()):
        await step("the second login hears bob is online (probe answered across servers)", alice2,
                   lambda: alice2.saw_presence("available", BOB))
        alice2.disconnect()
    bob.send_presence(ptype="unavailable")
    await step("alice sees bob go offline", alice,
               lambda: alice.saw_presence("unavailable", BOB))


async def messages(alice, bob):
    alice.send_message(mto=BOB, mbody="hello from a", mtype="chat")
    await step("bob receives alice's message", bob,
               lambda: bob.message_from(ALICE, "hello from a", "chat"))
    bob.send_message(mto=ALICE, mbody="hello from b", mtype="chat")
    await step("alice receives bob's message", alice,
               lambda: alice.message_from(BOB, "hello from b", "chat"))


async def refused(alice, bob):
    alice.send_message(mto=BOB, mbody="still there?", mtype="chat")
    ok = await alice.wait_for(lambda: alice.message_from(BOB, mtype="error"), WAIT)
    if report("alice's message to bob comes back as an error", ok, "no error came"):
        err = alice.message_from(BOB, mtype="error")
        print("alice's error:", err["error"]["condition"], flush=True)
    bob.send_message(mto=ALICE, mbody="are you there?", mtype="chat")
    ok = await bob.wait_for(lambda: bob.message_from(ALICE, mtype="error"), WAIT)
    if report("bob's message to alice comes back as an error", ok, "no error came"):
        err = bob.message_from(ALICE, mtype="error")
        print("bob's error:", err["error"]["condition"], flush=True)
    report("alice received nothing from bob",
           alice.message_from(BOB, "are you there?") is None, "it was delivered")


async def main():
    alice, bob = Peer(ALICE, PORT), Peer(BOB, PORT_B)
    if not (report("alice logs in", await alice.login()) and report("bob logs in", await bob.login())):
        return
    if PHASE == "exchange":
        await exchange(alice, bob)
    elif PHASE == "messages":
        await messages(alice, bob)
    else:
        await refused(alice, bob)
    alice.disconnect()
    bob.disconnect()


if __name__ == "__main__":
    asyncio.run(asyncio.wait_for(main(), 200))
    sys.exit(exit_code())
