#!/usr/bin/env python3
"""End-to-end XEP-0352 client state indication against a running Rookery node, with
slixmpp's `xep_0352` plugin (a client library written by others). Run by the Rust test in
`tests/tests/e2e/node_csi.rs`.

    csi_scenario.py HOST PORT DOMAIN CA_FILE   (see scenario_lib.py)

Accounts alice and bob @DOMAIN must exist with the passwords "pass-alice-1" and
"pass-bob-1". alice's phone says it is inactive; bob changes his presence twice and types:
nothing reaches the phone. bob's message with a body goes at once, after the newest
presence and the chat state that were held. Inactive again, a presence is held until the
phone says it is active.

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every step
passed.
"""
import asyncio
import sys

from scenario_lib import Client, exit_code, jid, report

ALICE, BOB = jid("alice"), jid("bob")


class CsiClient(Client):
    def __init__(self, bare, resource):
        super().__init__(bare, resource, plugins=("xep_0085", "xep_0352"))
        self.csi = False
        # What arrived from bob, in order: ("presence", show), ("state", name), ("body", text).
        self.seen = []
        self.add_event_handler("csi_enabled", self.on_csi)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("chatstate", self.on_chatstate)
        self.add_event_handler("presence", self.on_presence)

    def on_csi(self, _):
        self.csi = True

    def on_message(self, m):
        if m["from"].bare == BOB and m["body"]:
            self.seen.append(("body", m["body"]))
            self.arrived.set()

    def on_chatstate(self, m):
        # slixmpp's xep_0085 reports chat states on their own event; a body's <active/>
        # comes with the message and is not counted.
        if m["from"].bare == BOB and not m["body"]:
            self.seen.append(("state", m["chat_state"]))
            self.arrived.set()

    def on_presence(self, p):
        if p["from"].bare == BOB and p["type"] in ("available", "away", "xa", "dnd", "chat"):
            self.seen.append(("presence", p["show"] or "available"))
            self.arrived.set()


async def main():
    bob, phone = CsiClient(BOB, "desk"), CsiClient(ALICE, "phone")
    if not report("bob logs in", await bob.login()) or not report("alice's phone logs in", await phone.login()):
        return
    report("the server offers client state indication", phone.csi)
    to = f"{ALICE}/phone"
    bob.send_presence(pto=to, pshow="away")
    report("while active, bob's presence arrives at once", await phone.wait_for(lambda: ("presence", "away") in phone.seen), str(phone.seen))

    phone["xep_0352"].send_inactive()
    await asyncio.sleep(0.5)
    phone.seen.clear()
    bob.send_presence(pto=to, pshow="xa")
    bob.send_presence(pto=to, pshow="dnd")
    typing = bob.make_message(mto=to, mtype="chat")
    typing["chat_state"] = "composing"
    typing.send()
    await asyncio.sleep(1.5)
    report("while inactive, presence and chat states wait", phone.seen == [], str(phone.seen))

    bob.send_message(mto=to, mtype="chat", mbody="wake up")
    got = await phone.wait_for(lambda: ("body", "wake up") in phone.seen)
    report("a message with a body goes at once", got, str(phone.seen))
    report(
        "after the newest held presence and the chat state, in order",
        phone.seen == [("presence", "dnd"), ("state", "composing"), ("body", "wake up")],
        str(phone.seen),
    )

    phone.seen.clear()
    bob.send_presence(pto=to, pshow="chat")
    await asyncio.sleep(1)
    report("inactive, a new presence waits again", phone.seen == [], str(phone.seen))
    phone["xep_0352"].send_active()
    got = await phone.wait_for(lambda: ("presence", "chat") in phone.seen)
    report("becoming active sends what was held", got and phone.seen == [("presence", "chat")], str(phone.seen))
    bob.disconnect()
    phone.disconnect()
    await asyncio.sleep(0.5)


asyncio.run(main())
sys.exit(exit_code())
