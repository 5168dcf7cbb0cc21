#!/usr/bin/env python3
"""Message archive management (XEP-0313 with XEP-0059 paging) and stanza ids (XEP-0359)
against a running Rookery node, with slixmpp's xep_0313 and xep_0059 plugins. Run by the
Rust test `node_mam`.

    mam_scenario.py HOST PORT DOMAIN CA_FILE fill|check|off   (see scenario_lib.py)

`fill` has alice@DOMAIN and bob@DOMAIN exchange 600 messages, then pages through the
archives forwards and backwards, filters them, checks the stanza-ids and the preferences;
`check` (after a node restart) counts alice's archive again; `off` runs on a domain whose
archive is switched off: nothing is advertised, stamped or archived there. Accounts
alice/bob ("pass-alice-1", "pass-bob-1") must exist on DOMAIN.
"""
import asyncio
import datetime as dt
import sys

import slixmpp
from scenario_lib import DOMAIN, EXTRA, Client, exit_code, jid, report
from slixmpp import JID
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

(MODE,) = EXTRA
ALICE, BOB = jid("alice"), jid("bob")
MAM, SID, FWD, DELAY = "urn:xmpp:mam:2", "urn:xmpp:sid:0", "urn:xmpp:forward:0", "urn:xmpp:delay"
TOTAL, PAGE = 600, 50


def item(message):
    """(archive id, body, stamp) of a MAM result message."""
    result = message.xml.find(f"{{{MAM}}}result")
    fwd = result.find(f"{{{FWD}}}forwarded")
    body = fwd.find("{jabber:client}message/{jabber:client}body")
    stamp = fwd.find(f"{{{DELAY}}}delay").get("stamp")
    return result.get("id"), body.text if body is not None else None, stamp


class MamClient(Client):
    def __init__(self, bare, resource):
        super().__init__(bare, resource, plugins=("xep_0030", "xep_0059", "xep_0313"))
        self.received = []  # (body, stanza-id by, stanza-id id)
        self.results = {}  # queryid -> result messages
        self.add_event_handler("message", self.on_message)
        self.register_handler(
            Callback("mam results", MatchXPath(f"{{jabber:client}}message/{{{MAM}}}result"), self.on_result)
        )

    async def session_started(self):
        self.send_presence()
        await self.get_roster()

    def on_message(self, msg):
        if msg.xml.find(f"{{{MAM}}}result") is not None or msg["type"] not in ("chat", "normal"):
            return
        sids = msg.xml.findall(f"{{{SID}}}stanza-id")
        by, sid = (sids[-1].get("by"), sids[-1].get("id")) if sids else (None, None)
        self.received.append((msg["body"], by, sid, len(sids)))
        self.arrived.set()

    def on_result(self, msg):
        qid = msg.xml.find(f"{{{MAM}}}result").get("queryid")
        self.results.setdefault(qid, []).append(msg)

    async def query(self, rsm=None, custom=None, **fields):
        """One MAM query with form fields (the plugin's interfaces: with, start, end,
        after_id, before_id, ids) and RSM values; (items, fin element, rsm set)."""
        iq = self.make_iq_set()
        qid = iq["id"]
        iq["mam"]["queryid"] = qid
        for k, v in fields.items():
            iq["mam"][k] = v
        for k, v in (custom or {}).items():
            iq["mam"].set_custom_field(k, v)
        for k, v in (rsm or {}).items():
            iq["mam"]["rsm"][k] = v if v is True else str(v)
        answer = await iq.send(timeout=20)
        fin = answer.xml.find(f"{{{MAM}}}fin")
        return [item(m) for m in self.results.pop(qid, [])], fin, answer["mam_fin"]["rsm"]

    async def forward_pages(self, **kw):
        """Every item, through slixmpp's own RSM iterator (xep_0059), pages of PAGE."""
        items, pages = [], 0
        async for page in self.plugin["xep_0313"].retrieve(iterator=True, rsm={"max": PAGE}, **kw):
            pages += 1
            items.extend(item(m) for m in page["mam"]["results"])
        return items, pages

    async def backward_pages(self):
        """Every item from the last page back to the first, pages of PAGE: the plugin's
        iterator gives the last page (an empty <before/>), then <before>first</before>."""
        iterator = self.plugin["xep_0313"].retrieve(iterator=True, reverse=True, rsm={"max": PAGE})
        last = await iterator.next()
        page = [item(m) for m in last["mam"]["results"]]
        items, pages = list(page), 1
        complete = last.xml.find(f"{{{MAM}}}fin").get("complete") == "true"
        while not complete and page:
            page, fin, _ = await self.query(rsm={"max": PAGE, "before": page[0][0]})
            items = page + items
            pages += 1
            complete = fin.get("complete") == "true"
        return items, pages


def bodies(items):
    return [b for _, b, _ in items]


async def exchange(alice, bob):
    """TOTAL messages, each waited for, alternately from alice and from bob."""
    for n in range(TOTAL):
        sender, receiver = (alice, bob) if n % 2 == 0 else (bob, alice)
        to = BOB if n % 2 == 0 else ALICE
        seen = len(receiver.received)
        sender.send_message(mto=f"{to}/mam", mbody=f"m{n}", mtype="chat")
        if not await receiver.wait_for(lambda: len(receiver.received) > seen):
            return report(f"message {n} arrives", False, "timed out")
    return True


async def fill(alice, bob):
    if not await exchange(alice, bob):
        return
    want = [f"m{n}" for n in range(TOTAL)]
    for who in (alice, bob):
        name = str(who.boundjid.bare)
        stamped = [r for r in who.received if r[1] == name]
        report(f"every message to {name} carries its stanza-id", len(stamped) == TOTAL // 2,
               f"{len(stamped)} of {len(who.received)}: {who.received[:3]}")
        report(f"one stanza-id per message to {name}", all(r[3] == 1 for r in who.received))

    items, pages = await alice.forward_pages()
    report("alice pages forward through 600 messages in 12 pages, in order, none missing or twice",
           bodies(items) == want and pages == 12 and len({i for i, _, _ in items}) == TOTAL,
           f"{pages} pages, {len(items)} items, first {bodies(items)[:3]}")
    back, pages = await alice.backward_pages()
    report("alice pages backward through the same 600 messages in 12 pages",
           back == items and pages == 12, f"{pages} pages, {len(back)} items")
    bob_items, _ = await bob.forward_pages()
    report("bob's archive holds the same 600 messages", bodies(bob_items) == want, len(bob_items))

    by_body = {b: i for i, b, _ in bob_items}
    ids = {body: sid for body, by, sid, _ in bob.received}
    report("each stanza-id bob received is the archive id MAM returns for it",
           all(by_body[body] == sid for body, sid in ids.items()) and len(ids) == TOTAL // 2,
           [(body, sid, by_body.get(body)) for body, sid in list(ids.items())[:3]])

    # Filters.
    with_bob, _ = await alice.forward_pages(with_jid=JID(BOB))
    with_nobody, fin, rsm = await alice.query(**{"with": JID(f"nobody@{DOMAIN}")})
    report("with bob: all 600; with someone else: none, complete",
           bodies(with_bob) == want and with_nobody == [] and fin.get("complete") == "true"
           and rsm["count"] == "0", f"{len(with_bob)} / {len(with_nobody)} {rsm}")
    start = dt.datetime.fromisoformat(items[100][2].replace("Z", "+00:00"))
    end = dt.datetime.fromisoformat(items[199][2].replace("Z", "+00:00"))
    window, fin, rsm = await alice.query(start=start, end=end, rsm={"max": 250})
    report("start and end select messages 100 to 199",
           bodies(window) == want[100:200] and rsm["count"] == "100",
           f"{len(window)} {bodies(window)[:2]} {rsm['count']}")
    after, fin, rsm = await alice.query(after_id=items[549][0], rsm={"max": 100})
    report("after-id selects the last 50 messages",
           bodies(after) == want[550:] and fin.get("complete") == "true", bodies(after)[:2])
    listed, _, _ = await alice.query(ids=[items[7][0], items[3][0]])
    report("ids selects exactly those messages", bodies(listed) == ["m3", "m7"], bodies(listed))
    page, fin, rsm = await alice.query(rsm={"max": 50, "after": items[99][0]})
    report("a page after an id starts right after it, with its index and the count",
           bodies(page) == want[100:150] and rsm["first_index"] == "100" and rsm["count"] == "600"
           and fin.get("complete") is None, rsm)
    try:
        await alice.query(rsm={"after": "no-such-id"})
        report("an unknown id is item-not-found", False, "no error")
    except IqError as e:
        report("an unknown id is item-not-found", e.iq["error"]["condition"] == "item-not-found",
               e.iq["error"]["condition"])
    try:
        await alice.query(custom={"fulltext": "hello"})
        report("a form field the node does not know is bad-request", False, "no error")
    except IqError as e:
        report("a form field the node does not know is bad-request",
               e.iq["error"]["condition"] == "bad-request" and "fulltext" in e.iq["error"]["text"],
               (e.iq["error"]["condition"], e.iq["error"]["text"]))
    try:
        iq = bob.make_iq_set(ito=ALICE)
        iq["mam"]["queryid"] = "peek"
        await iq.send(timeout=10)
        report("bob may not read alice's archive", False, "no error")
    except IqError as e:
        report("bob may not read alice's archive", e.iq["error"]["condition"] == "forbidden",
               e.iq["error"]["condition"])

    # Preferences: bob archives nothing any more.
    iq = bob.make_iq_set()
    iq.append(slixmpp.xmlstream.ET.fromstring(f"<prefs xmlns='{MAM}' default='never'/>"))
    answer = await iq.send(timeout=10)
    report("bob sets his preferences to never",
           answer.xml.find(f"{{{MAM}}}prefs").get("default") == "never")
    seen = len(bob.received)
    alice.send_message(mto=f"{BOB}/mam", mbody="unarchived", mtype="chat")
    await bob.wait_for(lambda: len(bob.received) > seen)
    last = bob.received[-1]
    report("with never, a message arrives without a stanza-id", last[0] == "unarchived" and last[2] is None, last)
    _, _, rsm = await bob.query(rsm={"max": 0})
    report("and bob's archive did not grow", rsm["count"] == str(TOTAL), rsm["count"])
    _, _, rsm = await alice.query(rsm={"max": 0})
    report("alice's archive kept what she sent", rsm["count"] == str(TOTAL + 1), rsm["count"])
    iq = bob.make_iq_get()
    iq.append(slixmpp.xmlstream.ET.fromstring(f"<prefs xmlns='{MAM}'/>"))
    answer = await iq.send(timeout=10)
    report("bob's preferences read back as never",
           answer.xml.find(f"{{{MAM}}}prefs").get("default") == "never")


async def check(alice, bob):
    items, _ = await alice.forward_pages()
    report("alice's archive survived the restart",
           len(items) == TOTAL + 1 and bodies(items)[:2] == ["m0", "m1"] and bodies(items)[-1] == "unarchived",
           len(items))
    meta = await alice.plugin["xep_0313"].get_archive_metadata()
    start = meta.xml.find(f"{{{MAM}}}metadata/{{{MAM}}}start")
    end = meta.xml.find(f"{{{MAM}}}metadata/{{{MAM}}}end")
    report("the metadata names the first and the last message (#extended)",
           start is not None and end is not None and start.get("id") == items[0][0]
           and end.get("id") == items[-1][0], meta)


async def off(alice, bob):
    info = await alice.plugin["xep_0030"].get_info(jid=ALICE)
    features = info["disco_info"]["features"]
    report("an account on a domain without archive advertises neither MAM nor stanza ids",
           MAM not in features and SID not in features and "urn:xmpp:mam:2#extended" not in features,
           features)
    seen = len(bob.received)
    alice.send_message(mto=f"{BOB}/mam", mbody="plain", mtype="chat")
    await bob.wait_for(lambda: len(bob.received) > seen)
    report("a message arrives without a stanza-id", bob.received[-1][2] is None, bob.received[-1:])
    try:
        await alice.query()
        report("a query is service-unavailable", False, "no error")
    except IqError as e:
        report("a query is service-unavailable", e.iq["error"]["condition"] == "service-unavailable",
               e.iq["error"]["condition"])


async def main():
    alice = MamClient(ALICE, "mam")
    bob = MamClient(BOB, "mam")
    if not (report("alice logs in", await alice.login()) and report("bob logs in", await bob.login())):
        return
    try:
        await {"fill": fill, "check": check, "off": off}[MODE](alice, bob)
    finally:
        alice.disconnect()
        bob.disconnect()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(exit_code())
