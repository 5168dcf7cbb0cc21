#!/usr/bin/env python3
"""vCards (XEP-0054), blocking (XEP-0191) and last activity (XEP-0012) against a running
Rookery node, with slixmpp. Run by the Rust test `node::vcards_blocking_and_last_activity_work`.

    profile_scenario.py HOST PORT DOMAIN CA_FILE

Accounts carol@DOMAIN ("pass-carol-1") and dave@DOMAIN ("pass-dave-1") must exist.
"""
import asyncio
import sys

import slixmpp
from slixmpp.exceptions import IqError

HOST, PORT, DOMAIN, CA = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + why), flush=True)
    if not ok:
        failures.append(step)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ca_certs = CA
        self.auto_authorize = True
        self.auto_subscribe = True
        self.received = asyncio.Queue()
        self.ready = asyncio.Event()
        for p in ("xep_0030", "xep_0054", "xep_0191", "xep_0012"):
            self.register_plugin(p)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.received.put_nowait(m))
        # slixmpp reports bounced messages as a separate event.
        self.add_event_handler("message_error", lambda m: self.received.put_nowait(m))

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    async def login(self):
        self.connect(host=HOST, port=PORT)
        try:
            await asyncio.wait_for(self.ready.wait(), 15)
            return True
        except asyncio.TimeoutError:
            return False


async def next_message(client, timeout=5):
    try:
        return await asyncio.wait_for(client.received.get(), timeout)
    except asyncio.TimeoutError:
        return None


async def main():
    carol = Client(f"carol@{DOMAIN}/desk", "pass-carol-1")
    dave = Client(f"dave@{DOMAIN}/phone", "pass-dave-1")
    report("carol and dave log in", await carol.login() and await dave.login())

    # vCard: carol publishes hers, dave reads it.
    card = carol.plugin["xep_0054"].make_vcard()
    card["FN"] = "Carol Danvers"
    card["NICKNAME"] = "Captain"
    try:
        await carol.plugin["xep_0054"].publish_vcard(card, timeout=10)
        report("carol stores her vCard", True)
    except IqError as e:
        report("carol stores her vCard", False, repr(e.iq))
    try:
        got = await dave.plugin["xep_0054"].get_vcard(f"carol@{DOMAIN}", cached=False, timeout=10)
        report("dave reads carol's vCard", got["vcard_temp"]["FN"] == "Carol Danvers", str(got))
    except IqError as e:
        report("dave reads carol's vCard", False, repr(e.iq))
    try:
        got = await dave.plugin["xep_0054"].get_vcard(f"dave@{DOMAIN}", cached=False, timeout=10)
        report("an account without a vCard gets an empty one", got["vcard_temp"]["FN"] == "", str(got))
    except IqError as e:
        report("an account without a vCard gets an empty one", False, repr(e.iq))

    # Subscriptions both ways, so last activity may be asked.
    carol.send_presence(pto=f"dave@{DOMAIN}", ptype="subscribe")
    await asyncio.sleep(1.5)

    # Blocking: carol blocks dave.
    try:
        await carol.plugin["xep_0191"].block([f"dave@{DOMAIN}"], timeout=10)
        blocked = await carol.plugin["xep_0191"].get_blocked(timeout=10)
        items = [i.get("jid") for i in blocked.xml.iter("{urn:xmpp:blocking}item")]
        report("carol's block list names dave", items == [f"dave@{DOMAIN}"], repr(items))
    except IqError as e:
        report("carol blocks dave", False, repr(e.iq))
    while not dave.received.empty():
        dave.received.get_nowait()
    dave.send_message(mto=f"carol@{DOMAIN}", mbody="can you hear me?", mtype="chat")
    answer = await next_message(dave)
    report("dave's message to carol bounces", answer is not None and answer["type"] == "error", str(answer))
    if answer is not None:
        report("with service-unavailable", answer["error"]["condition"] == "service-unavailable", str(answer))
    report("carol does not get it", await next_message(carol, 1.5) is None)
    carol.send_message(mto=f"dave@{DOMAIN}", mbody="hello blocked", mtype="chat")
    answer = await next_message(carol)
    report("carol cannot message dave while blocking him", answer is not None and answer["error"]["condition"] == "not-acceptable", str(answer))

    await carol.plugin["xep_0191"].unblock([f"dave@{DOMAIN}"], timeout=10)
    dave.send_message(mto=f"carol@{DOMAIN}", mbody="and now?", mtype="chat")
    got = await next_message(carol)
    report("after unblocking, messages flow again", got is not None and got["body"] == "and now?", str(got))

    # Last activity: carol logs out; dave, her subscriber, asks.
    carol.disconnect()
    await asyncio.sleep(1.5)
    try:
        last = await dave.plugin["xep_0012"].get_last_activity(f"carol@{DOMAIN}", timeout=10)
        seconds = int(last["last_activity"]["seconds"])
        report("dave learns how long carol has been away", 0 <= seconds < 60, str(last))
    except IqError as e:
        report("dave learns how long carol has been away", False, repr(e.iq))

    dave.disconnect()
    await asyncio.sleep(0.3)


asyncio.run(main())
print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed", flush=True)
sys.exit(1 if failures else 0)
