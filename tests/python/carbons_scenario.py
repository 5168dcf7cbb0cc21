#!/usr/bin/env python3
"""End-to-end XEP-0280 message carbons against a running Rookery node, with slixmpp's
`xep_0280` plugin (a client library written by others). Run by the Rust test in
`tests/tests/e2e/node_carbons.rs`.

    carbons_scenario.py HOST PORT DOMAIN CA_FILE   (see scenario_lib.py)

Accounts alice and bob @DOMAIN must exist with the passwords "pass-alice-1" and
"pass-bob-1". alice is online three times: phone and laptop enable carbons, tablet does
not. bob writes to alice's phone and the phone answers: the laptop sees both sides of the
conversation as carbons, each naming its id in alice's archive; the tablet sees nothing.
A message marked private is not copied and reaches bob without the marker; after the
laptop disables carbons it gets no more copies.

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every step
passed.
"""
import asyncio
import sys
import xml.etree.ElementTree as ET

from scenario_lib import DOMAIN, Client, exit_code, jid, report

ALICE, BOB = jid("alice"), jid("bob")
SID = "{urn:xmpp:sid:0}stanza-id"
PRIVATE = "{urn:xmpp:carbons:2}private"


class CarbonsClient(Client):
    def __init__(self, bare, resource):
        super().__init__(bare, resource, plugins=("xep_0030", "xep_0280"))
        # (body, stanza) of messages received directly.
        self.messages = []
        # ("received" | "sent", body, archive id by alice, from, to) of carbons.
        self.carbons = []
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("carbon_received", lambda m: self.on_carbon("received", m["carbon_received"]))
        self.add_event_handler("carbon_sent", lambda m: self.on_carbon("sent", m["carbon_sent"]))

    def on_message(self, m):
        if m["body"]:
            self.messages.append((m["body"], m))
            self.arrived.set()

    def on_carbon(self, kind, inner):
        sid = inner.xml.find(SID)
        by_alice = sid.get("id") if sid is not None and sid.get("by") == ALICE else None
        self.carbons.append((kind, inner["body"], by_alice, str(inner["from"]), str(inner["to"])))
        self.arrived.set()


def bodies(client):
    return [b for b, _ in client.messages]


async def main():
    bob = CarbonsClient(BOB, "desk")
    phone, laptop, tablet = (CarbonsClient(ALICE, r) for r in ("phone", "laptop", "tablet"))
    for name, c in (("bob", bob), ("alice's phone", phone), ("alice's laptop", laptop), ("alice's tablet", tablet)):
        if not report(f"{name} logs in", await c.login()):
            return
    info = await bob["xep_0030"].get_info(jid=DOMAIN)
    report("the server advertises carbons", "urn:xmpp:carbons:2" in info["disco_info"]["features"])
    for name, c in (("phone", phone), ("laptop", laptop)):
        try:
            await c["xep_0280"].enable()
            report(f"the {name} enables carbons", True)
        except Exception as e:  # noqa: BLE001 - any failure is the step failing
            report(f"the {name} enables carbons", False, repr(e))
            return

    bob.send_message(mto=f"{ALICE}/phone", mbody="b1", mtype="chat")
    report("the phone gets bob's message", await phone.wait_for(lambda: "b1" in bodies(phone)), str(bodies(phone)))
    got = await laptop.wait_for(lambda: any(c[0] == "received" and c[1] == "b1" for c in laptop.carbons))
    report("the laptop gets a received carbon of it", got, str(laptop.carbons))
    phone_sid = next((m.xml.find(SID) for b, m in phone.messages if b == "b1"), None)
    carbon = next((c for c in laptop.carbons if c[1] == "b1"), None)
    report(
        "the received carbon names the message's id in alice's archive",
        carbon is not None and phone_sid is not None and carbon[2] == phone_sid.get("id"),
        f"{carbon} vs {None if phone_sid is None else phone_sid.attrib}",
    )

    phone.send_message(mto=f"{BOB}/desk", mbody="a1", mtype="chat")
    report("bob gets the phone's answer", await bob.wait_for(lambda: "a1" in bodies(bob)), str(bodies(bob)))
    got = await laptop.wait_for(lambda: any(c[0] == "sent" and c[1] == "a1" for c in laptop.carbons))
    report("the laptop gets a sent carbon of it", got, str(laptop.carbons))
    carbon = next((c for c in laptop.carbons if c[1] == "a1"), None)
    report(
        "the sent carbon is addressed to bob and names alice's archive id",
        carbon is not None and carbon[4] == f"{BOB}/desk" and bool(carbon[2]),
        str(carbon),
    )

    private = phone.make_message(mto=f"{BOB}/desk", mbody="p1", mtype="chat")
    private.xml.append(ET.Element(PRIVATE))
    private.send()
    report("bob gets the private message", await bob.wait_for(lambda: "p1" in bodies(bob)), str(bodies(bob)))
    stanza = next((m for b, m in bob.messages if b == "p1"), None)
    report("without the private marker", stanza is not None and stanza.xml.find(PRIVATE) is None)

    await laptop["xep_0280"].disable()
    bob.send_message(mto=f"{ALICE}/phone", mbody="b2", mtype="chat")
    await phone.wait_for(lambda: "b2" in bodies(phone))
    await asyncio.sleep(1)
    report("a private message is not copied", all(c[1] != "p1" for c in laptop.carbons), str(laptop.carbons))
    report("after disabling, the laptop gets no more copies", all(c[1] != "b2" for c in laptop.carbons), str(laptop.carbons))
    report("the tablet, without carbons, got nothing", tablet.carbons == [] and tablet.messages == [], f"{tablet.carbons} {bodies(tablet)}")
    report("each carbon came once", len(laptop.carbons) == 2, str(laptop.carbons))
    for c in (bob, phone, laptop, tablet):
        c.disconnect()
    await asyncio.sleep(0.5)


asyncio.run(main())
sys.exit(exit_code())
