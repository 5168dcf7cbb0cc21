#!/usr/bin/env python3
"""Multi-user chat (XEP-0045) against a running Rookery node, with slixmpp's xep_0045
plugin: a three-user room at conference.DOMAIN. Run by the Rust test `node_muc`.

    muc_scenario.py HOST PORT DOMAIN CA_FILE room|check|off   (see scenario_lib.py)

`room`: alice creates a persistent room, bob joins, they talk, carol joins late and gets
the history, a nick conflict is refused, a private message and a mediated invitation go
through, self-pings answer, alice kicks carol (who may come back) and bans bob (who may
not), and the room's archive is queried. `check` (after a node restart) finds the room
again with its archive and its ban; `off` runs on a domain whose spec switches group chat
off: it lists and has no conference service. Accounts alice/bob/carol ("pass-<user>-1") must exist.
"""
import asyncio
import sys

from scenario_lib import DOMAIN, EXTRA, Client, exit_code, jid, report
from slixmpp import JID
from slixmpp.exceptions import IqError, PresenceError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

(MODE,) = EXTRA
ALICE, BOB, CAROL = jid("alice"), jid("bob"), jid("carol")
SERVICE = f"conference.{DOMAIN}"
ROOM = JID(f"tea@{SERVICE}")
USER = "http://jabber.org/protocol/muc#user"
MAM, FWD, SID = "urn:xmpp:mam:2", "urn:xmpp:forward:0", "urn:xmpp:sid:0"
OCCUPANT_ID = "urn:xmpp:occupant-id:0"


def codes(presence):
    return {s.get("code") for s in presence.xml.findall(f"{{{USER}}}x/{{{USER}}}status")}


class MucClient(Client):
    def __init__(self, bare, resource="muc"):
        super().__init__(bare, resource, plugins=("xep_0030", "xep_0045", "xep_0059", "xep_0199", "xep_0313"))
        self.groupchat = []  # groupchat messages with a body
        self.private = []  # private messages from occupants
        self.invites = []
        self.unavailable = []  # unavailable presence from the room
        self.mam = {}
        self.add_event_handler("groupchat_message", self.on_groupchat)
        self.add_event_handler("groupchat_presence", self.on_presence)
        self.add_event_handler("message", self.on_message)
        self.register_handler(
            Callback("mam results", MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"), self.on_result)
        )
        self.register_handler(
            Callback("invitations", MatchXPath(f"{{jabber:client}}message/{{{USER}}}x/{{{USER}}}invite"),
                     self.on_invite)
        )

    def on_groupchat(self, msg):
        if msg["body"] and msg.xml.find("{urn:xmpp:delay}delay") is None:
            self.groupchat.append(msg)
            self.arrived.set()

    def on_message(self, msg):
        if msg["type"] == "chat" and JID(msg["from"]).bare == ROOM.bare:
            self.private.append(msg)
            self.arrived.set()

    def on_invite(self, msg):
        # slixmpp's groupchat_invite skips rooms it has been in, and its message event needs
        # a body: the invitation is caught here.
        self.invites.append(msg)
        self.arrived.set()

    def on_presence(self, pres):
        if pres["type"] == "unavailable":
            self.unavailable.append(pres)
            self.arrived.set()

    def on_result(self, msg):
        qid = msg.xml.find(f"{{{MAM}}}result").get("queryid")
        self.mam.setdefault(qid, []).append(msg)

    @property
    def muc(self):
        return self.plugin["xep_0045"]

    async def ping_self(self, nick):
        iq = self.make_iq_get(ito=f"{ROOM}/{nick}")
        iq.enable("ping")
        try:
            await iq.send(timeout=10)
            return "result"
        except IqError as e:
            return e.iq["error"]["condition"]

    async def room_archive(self):
        """The bodies in the room's archive, and the count of its fin."""
        iq = self.make_iq_set(ito=ROOM)
        iq["mam"]["queryid"] = qid = iq["id"]
        answer = await iq.send(timeout=20)
        bodies = []
        for m in self.mam.pop(qid, []):
            body = m.xml.find(f"{{{MAM}}}result/{{{FWD}}}forwarded/{{jabber:client}}message/{{jabber:client}}body")
            bodies.append(body.text if body is not None else None)
        count = answer.xml.find(f"{{{MAM}}}fin/{{http://jabber.org/protocol/rsm}}set/{{http://jabber.org/protocol/rsm}}count")
        return bodies, int(count.text) if count is not None else None


async def join_error(client, nick):
    """The condition a join is refused with, or None if it succeeds."""
    try:
        await client.muc.join_muc_wait(ROOM, nick, maxstanzas=0, timeout=10)
        return None
    except PresenceError as e:
        return e.presence["error"]["condition"]


async def room(alice, bob, carol):
    items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN)
    report("the domain lists its conference service",
           any(i[0] == SERVICE for i in items["disco_items"]["items"]), items)
    info = await alice.plugin["xep_0030"].get_info(jid=SERVICE)
    report("the service is a conference service with muc and occupant ids",
           ("conference", "text") in {(i[0], i[1]) for i in info["disco_info"]["identities"]}
           and "http://jabber.org/protocol/muc" in info["disco_info"]["features"]
           and OCCUPANT_ID in info["disco_info"]["features"], info)

    own, _, _, _ = await alice.muc.join_muc_wait(ROOM, "Alice", maxstanzas=0, timeout=10)
    report("alice creates the room (201) as its owner", {"110", "201"} <= codes(own)
           and own["muc"]["affiliation"] == "owner", own)
    form = await alice.muc.get_room_config(ROOM)
    form.field["muc#roomconfig_persistentroom"]["value"] = True
    form.field["muc#roomconfig_roomname"]["value"] = "Tea room"
    await alice.muc.set_room_config(ROOM, form)
    report("alice configures it as persistent", True)
    items = await alice.plugin["xep_0030"].get_items(jid=SERVICE)
    report("the service lists the public room",
           [(str(i[0]), i[2]) for i in items["disco_items"]["items"]] == [(str(ROOM), "Tea room")], items)
    info = await alice.plugin["xep_0030"].get_info(jid=ROOM)
    features = info["disco_info"]["features"]
    report("the room's disco#info says persistent, public, open, unmoderated, archived",
           {"muc_persistent", "muc_public", "muc_open", "muc_unmoderated", "muc_semianonymous", MAM} <= set(features),
           features)

    own, _, occupants, _ = await bob.muc.join_muc_wait(ROOM, "Bob", maxstanzas=0, timeout=10)
    report("bob joins and sees alice", "110" in codes(own)
           and "Alice" in {p["from"].resource for p in occupants}, occupants)
    for i in range(3):
        alice.send_message(mto=ROOM, mbody=f"hello {i}", mtype="groupchat")
    await bob.wait_for(lambda: len(bob.groupchat) >= 3)
    bob.send_message(mto=ROOM, mbody="hi alice", mtype="groupchat")
    ok = await bob.wait_for(lambda: len(bob.groupchat) >= 4) and await alice.wait_for(lambda: len(alice.groupchat) >= 4)
    report("groupchat messages reach every occupant, in order",
           ok and [m["body"] for m in bob.groupchat] == ["hello 0", "hello 1", "hello 2", "hi alice"],
           [m["body"] for m in bob.groupchat])
    last = bob.groupchat[-1]
    sid = last.xml.find(f"{{{SID}}}stanza-id")
    oid = last.xml.find(f"{{{OCCUPANT_ID}}}occupant-id")
    report("a room message carries the room's stanza-id and the sender's occupant id",
           sid is not None and sid.get("by") == str(ROOM) and oid is not None and oid.get("id"), last)

    _, _, occupants, history = await carol.muc.join_muc_wait(ROOM, "Carol", maxstanzas=3, timeout=10)
    report("carol, joining late, gets the last 3 messages as history",
           [m["body"] for m in history] == ["hello 1", "hello 2", "hi alice"]
           and {"Alice", "Bob"} <= {p["from"].resource for p in occupants},
           [m["body"] for m in history])

    other = MucClient(BOB, "other")
    if report("bob logs in a second resource", await other.login()):
        report("a taken nickname is a conflict", await join_error(other, "Alice") == "conflict")
        other.disconnect()

    bob.send_message(mto=f"{ROOM}/Carol", mbody="psst", mtype="chat")
    ok = await carol.wait_for(lambda: carol.private)
    report("a private message goes from bob to carol through the room",
           ok and carol.private[0]["body"] == "psst" and carol.private[0]["from"] == JID(f"{ROOM}/Bob"),
           carol.private)

    alice.muc.invite(ROOM, jid("dave"), reason="tea?")
    report("a mediated invitation is accepted (the invitee is offline: nothing comes back)", True)
    alice.muc.invite(ROOM, CAROL, reason="again")
    ok = await carol.wait_for(lambda: carol.invites)
    report("a mediated invitation reaches the invitee from the room",
           ok and carol.invites[0]["from"] == ROOM and carol.invites[0]["muc"]["invite"]["from"].bare == ALICE,
           carol.invites)

    report("bob's self-ping answers while he is joined", await bob.ping_self("Bob") == "result")

    await alice.muc.set_role(ROOM, "Carol", "none", reason="out you go")
    ok = await carol.wait_for(lambda: any("307" in codes(p) for p in carol.unavailable))
    report("alice kicks carol: carol gets 307", ok, [p.xml for p in carol.unavailable])
    ok = await bob.wait_for(lambda: any("307" in codes(p) for p in bob.unavailable))
    report("and bob sees her kicked", ok)
    report("carol's self-ping is not-acceptable once kicked", await carol.ping_self("Carol") == "not-acceptable")
    report("a kicked user may come back", await join_error(carol, "Carol") is None)

    try:
        await bob.muc.set_role(ROOM, "Carol", "none")
        report("bob, no moderator, may not kick", False, "no error")
    except IqError as e:
        report("bob, no moderator, may not kick", e.iq["error"]["condition"] == "forbidden", e.iq)

    await alice.muc.set_affiliation(ROOM, "outcast", jid=BOB, reason="enough")
    ok = await bob.wait_for(lambda: any("301" in codes(p) for p in bob.unavailable))
    report("alice bans bob: bob gets 301", ok, [p.xml for p in bob.unavailable])
    report("the banned user cannot rejoin", await join_error(bob, "Bob") == "forbidden")
    outcasts = await alice.muc.get_affiliation_list(ROOM, "outcast")
    report("the outcast list holds bob", [str(j) for j in outcasts] == [BOB], outcasts)

    bodies, count = await carol.room_archive()
    report("the room's archive (MAM at the room) holds the 4 messages",
           bodies == ["hello 0", "hello 1", "hello 2", "hi alice"] and count == 4, (bodies, count))


async def check(alice, bob, carol):
    info = await carol.plugin["xep_0030"].get_info(jid=ROOM)
    report("after a restart the persistent room is there", "muc_persistent" in info["disco_info"]["features"], info)
    bodies, count = await carol.room_archive()
    report("with its archive", count == 4 and bodies[-1] == "hi alice", (bodies, count))
    report("and bob is still banned", await join_error(bob, "Bob") == "forbidden")
    own, _, _, _ = await alice.muc.join_muc_wait(ROOM, "Alice", maxstanzas=0, timeout=10)
    report("and alice is still its owner", own["muc"]["affiliation"] == "owner", own)


async def off(alice, bob, carol):
    items = await alice.plugin["xep_0030"].get_items(jid=DOMAIN)
    report("a domain without group chat lists no conference service",
           all(not str(i[0]).startswith("conference.") for i in items["disco_items"]["items"]), items)
    try:
        await alice.plugin["xep_0030"].get_info(jid=SERVICE)
        report("and has no such service", False, "an answer")
    except IqError as e:
        report("and has no such service", e.iq["error"]["condition"] == "remote-server-not-found", e.iq)


async def main():
    clients = [MucClient(u) for u in (ALICE, BOB, CAROL)]
    for c in clients:
        if not report(f"{c.boundjid.bare} logs in", await c.login()):
            return
    try:
        await {"room": room, "check": check, "off": off}[MODE](*clients)
    finally:
        for c in clients:
            c.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(exit_code())
