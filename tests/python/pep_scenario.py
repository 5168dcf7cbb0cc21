#!/usr/bin/env python3
"""PEP (XEP-0163) with entity capabilities (XEP-0115), publish-options (XEP-0223), avatars
(XEP-0084, XEP-0398) and bookmarks (XEP-0402 #compat with XEP-0048) against a running
Rookery node, with slixmpp. Run by the Rust test `node_pep`.

    pep_scenario.py HOST PORT DOMAIN CA_FILE publish|check

`publish`: alice publishes an OMEMO device list (access model open, by publish-options) and
a bundle; bob, subscribed to alice with `+notify` for device lists in his caps, gets the
event; carol, subscribed without it, does not; bob's second resource gets the last item
when it comes online; dave, a stranger, reads the open node but not a presence one; the
avatar becomes alice's vCard PHOTO; bookmarks go from private storage to the PEP node and
back. `check` (after a node restart) reads the PEP data again. Accounts alice, bob, carol,
dave @DOMAIN with passwords "pass-NAME-1" must exist.
"""
import asyncio
import base64
import hashlib
import sys

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

HOST, PORT, DOMAIN, CA, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
DEVICES = "urn:xmpp:omemo:2:devices"
BUNDLES = "urn:xmpp:omemo:2:bundles"
OMEMO = "urn:xmpp:omemo:2"
NICK = "http://jabber.org/protocol/nick"
BOOKMARKS = "urn:xmpp:bookmarks:1"
PUBSUB = "http://jabber.org/protocol/pubsub"
ROOM = f"council@conference.{DOMAIN}"
ROOM2 = f"lobby@conference.{DOMAIN}"
AVATAR = b"\x89PNG\r\n\x1a\nrookery-test-avatar"
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + why), flush=True)
    if not ok:
        failures.append(step)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password, interests=()):
        super().__init__(jid, password)
        self.ca_certs = CA
        self.ready = asyncio.Event()
        self.interests = interests
        self.events = []
        self.got_event = asyncio.Event()
        for p in ("xep_0030", "xep_0004", "xep_0115", "xep_0060", "xep_0163", "xep_0084",
                  "xep_0054", "xep_0049", "xep_0048"):
            self.register_plugin(p)
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("pubsub_publish", self.on_publish)

    async def on_start(self, _):
        for ns in self.interests:
            self.plugin["xep_0163"].add_interest(ns)
        await self.plugin["xep_0115"].update_caps(broadcast=False)
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    def on_publish(self, msg):
        items = msg["pubsub_event"]["items"]
        self.events.append((items["node"], items["item"]["id"], items["item"]["payload"],
                            msg.xml.find("{urn:xmpp:delay}delay") is not None))
        self.got_event.set()

    async def login(self):
        self.connect(host=HOST, port=PORT)
        try:
            await asyncio.wait_for(self.ready.wait(), 15)
            return True
        except asyncio.TimeoutError:
            return False

    async def wait_event(self, node, seconds):
        """The first event of `node`, waiting up to `seconds`."""
        deadline = asyncio.get_running_loop().time() + seconds
        while True:
            for e in self.events:
                if e[0] == node:
                    return e
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self.got_event.clear()
            try:
                await asyncio.wait_for(self.got_event.wait(), left)
            except asyncio.TimeoutError:
                return None

    def options(self, **fields):
        form = self.plugin["xep_0004"].make_form("submit")
        form.add_field(var="FORM_TYPE", ftype="hidden",
                       value="http://jabber.org/protocol/pubsub#publish-options")
        for var, value in fields.items():
            form.add_field(var="pubsub#" + var, value=value)
        return form

    async def publish(self, node, item_id, xml, **options):
        return await self.plugin["xep_0060"].publish(
            self.boundjid.bare, node, id=item_id, payload=ET.fromstring(xml),
            options=self.options(**options) if options else None, timeout=10)

    async def items(self, owner, node):
        """{item id: payload element} of `owner`'s node."""
        answer = await self.plugin["xep_0060"].get_items(owner, node, timeout=10)
        return {i["id"]: i["payload"] for i in answer["pubsub"]["items"]}


async def error_of(coro):
    try:
        await coro
        return "no error"
    except IqError as e:
        return e.iq["error"]["condition"]


async def subscribe(contact, alice):
    """`contact` subscribes to alice (slixmpp accepts on alice's behalf)."""
    contact.send_presence_subscription(pto=alice.boundjid.bare)
    for _ in range(100):
        sub = alice.client_roster[contact.boundjid.bare]["subscription"]
        if sub in ("from", "both"):
            return True
        await asyncio.sleep(0.1)
    return False


def device_ids(payload):
    return sorted(d.get("id") for d in payload.iter(f"{{{OMEMO}}}device")) if payload is not None else []


async def publish(alice, bob, carol, dave):
    ok = await subscribe(bob, alice) and await subscribe(carol, alice)
    report("bob and carol are subscribed to alice", ok)
    await asyncio.sleep(1.5)  # the node verifies everyone's caps meanwhile

    devices = f"<devices xmlns='{OMEMO}'><device id='31415'/></devices>"
    try:
        await alice.publish(DEVICES, "current", devices, access_model="open")
        bundle = (f"<bundle xmlns='{OMEMO}'><spk id='1'>c3Br</spk><spks>c2ln</spks><ik>aWs=</ik>"
                  "<prekeys><pk id='1'>cGsx</pk></prekeys></bundle>")
        await alice.publish(BUNDLES, "31415", bundle, access_model="open", max_items="max")
        report("alice publishes her OMEMO device list and bundle", True)
    except IqError as e:
        report("alice publishes her OMEMO device list and bundle", False, repr(e.iq))
        return

    got = await bob.wait_event(DEVICES, 5)
    report("bob, with +notify, receives alice's device list",
           got is not None and device_ids(got[2]) == ["31415"], repr(bob.events))
    report("bob gets no bundle event: he did not ask for them",
           await bob.wait_event(BUNDLES, 0.5) is None, repr(bob.events))
    report("carol, without +notify, receives nothing",
           await carol.wait_event(DEVICES, 1.5) is None, repr(carol.events))

    bob2 = Client(f"bob@{DOMAIN}/laptop", "pass-bob-1", interests=[DEVICES])
    report("bob's second resource logs in", await bob2.login())
    got = await bob2.wait_event(DEVICES, 5)
    report("bob's new resource gets the last device list when it comes online",
           got is not None and device_ids(got[2]) == ["31415"] and got[3], repr(bob2.events))
    bob2.disconnect()

    try:
        items = await dave.items(alice.boundjid.bare, DEVICES)
        report("dave, a stranger, reads the open device list", device_ids(items.get("current")) == ["31415"],
               repr(items))
    except IqError as e:
        report("dave, a stranger, reads the open device list", False, repr(e.iq))

    await alice.publish(NICK, "current", f"<nick xmlns='{NICK}'>Alice</nick>")
    report("dave cannot read a presence-access node",
           await error_of(dave.items(alice.boundjid.bare, NICK)) == "not-authorized")
    items = await bob.items(alice.boundjid.bare, NICK)
    report("bob, subscribed, reads it", items.get("current") is not None
           and items["current"].text == "Alice", repr(items))

    report("publish-options a node does not have are refused with conflict",
           await error_of(alice.publish(DEVICES, "current", devices, access_model="presence"))
           == "conflict")

    info = await dave.plugin["xep_0030"].get_items(jid=alice.boundjid.bare, timeout=10)
    nodes = sorted(i[1] for i in info["disco_items"]["items"])
    report("dave's disco#items of alice lists the open nodes only", nodes == [BUNDLES, DEVICES], repr(nodes))
    mine = await alice.plugin["xep_0030"].get_info(jid=alice.boundjid.bare, timeout=10)
    report("alice's account is a PEP service",
           ("pubsub", "pep", None, None) in mine["disco_info"]["identities"]
           and "http://jabber.org/protocol/pubsub#publish-options" in mine["disco_info"]["features"],
           repr(mine["disco_info"]["identities"]))

    # XEP-0084 + XEP-0398: the avatar becomes the vCard's PHOTO.
    avatar_id = hashlib.sha1(AVATAR).hexdigest()
    await alice.plugin["xep_0084"].publish_avatar(AVATAR, timeout=10)
    await alice.plugin["xep_0084"].publish_avatar_metadata(
        {"id": avatar_id, "type": "image/png", "bytes": len(AVATAR)}, timeout=10)
    card = await bob.plugin["xep_0054"].get_vcard(alice.boundjid.bare, timeout=10)
    photo = card["vcard_temp"]["PHOTO"]
    report("alice's avatar is her vCard PHOTO", photo["BINVAL"] == AVATAR and photo["TYPE"] == "image/png",
           repr(card))

    # XEP-0402 #compat: private storage bookmarks appear in the PEP node and back.
    marks = alice.plugin["xep_0048"].stanza.Bookmarks()
    marks.add_conference(ROOM, "Ali", name="Council", autojoin=True)
    await alice.plugin["xep_0048"].set_bookmarks(marks, method="xep_0049", timeout=10)
    items = await alice.items(alice.boundjid.bare, BOOKMARKS)
    conf = items.get(ROOM)
    report("bookmarks stored privately are in the XEP-0402 node",
           conf is not None and conf.get("autojoin") in ("true", "1")
           and conf.findtext(f"{{{BOOKMARKS}}}nick") == "Ali", repr(items))
    await alice.publish(
        BOOKMARKS, ROOM2, f"<conference xmlns='{BOOKMARKS}' name='Lobby' autojoin='false'><nick>A</nick></conference>",
        persist_items="true", max_items="max", send_last_published_item="never", access_model="whitelist")
    got = await alice.plugin["xep_0048"].get_bookmarks(method="xep_0049", timeout=10)
    rooms = sorted(str(c["jid"]) for c in got["private"]["bookmarks"]["conferences"])
    report("a bookmark published to the XEP-0402 node is in private storage", rooms == [ROOM, ROOM2], repr(rooms))
    report("bob cannot read alice's bookmarks",
           await error_of(bob.items(alice.boundjid.bare, BOOKMARKS)) == "not-authorized")


async def check(alice, bob, _carol, dave):
    try:
        items = await dave.items(alice.boundjid.bare, DEVICES)
        report("alice's device list survived the restart", device_ids(items.get("current")) == ["31415"],
               repr(items))
        items = await alice.items(alice.boundjid.bare, BOOKMARKS)
        report("and her bookmarks", sorted(items) == [ROOM, ROOM2], repr(items))
    except IqError as e:
        report("alice's PEP data survived the restart", False, repr(e.iq))


async def main():
    alice = Client(f"alice@{DOMAIN}/desk", "pass-alice-1")
    bob = Client(f"bob@{DOMAIN}/phone", "pass-bob-1", interests=[DEVICES])
    carol = Client(f"carol@{DOMAIN}/pc", "pass-carol-1")
    dave = Client(f"dave@{DOMAIN}/pc", "pass-dave-1")
    clients = (alice, bob, carol, dave)
    logged = [await c.login() for c in clients]
    report("alice, bob, carol and dave log in", all(logged))
    if not failures:
        await (publish if MODE == "publish" else check)(*clients)
    for c in clients:
        c.disconnect()
    await asyncio.sleep(0.3)


asyncio.run(main())
print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed", flush=True)
sys.exit(1 if failures else 0)
