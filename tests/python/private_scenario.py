#!/usr/bin/env python3
"""Private XML storage (XEP-0049) and bookmarks kept in it (XEP-0048) against a running
Rookery node, with slixmpp. Run by the Rust test `node_private`.

    private_scenario.py HOST PORT DOMAIN CA_FILE store|check

`store` writes erin's bookmarks and preferences and checks the XEP's errors; `check` (after
a node restart) reads them back. Accounts erin@DOMAIN ("pass-erin-1") and frank@DOMAIN
("pass-frank-1") must exist.
"""
import asyncio
import sys

import slixmpp
from slixmpp.exceptions import IqError
from slixmpp.xmlstream import ET

HOST, PORT, DOMAIN, CA, MODE = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
PRIVATE = "jabber:iq:private"
PREFS = "rookery:test:prefs"
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + why), flush=True)
    if not ok:
        failures.append(step)


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ca_certs = CA
        self.ready = asyncio.Event()
        for p in ("xep_0030", "xep_0049", "xep_0048"):
            self.register_plugin(p)
        self.add_event_handler("session_start", self.on_start)

    async def on_start(self, _):
        self.send_presence()
        self.ready.set()

    async def login(self):
        self.connect(host=HOST, port=PORT)
        try:
            await asyncio.wait_for(self.ready.wait(), 15)
            return True
        except asyncio.TimeoutError:
            return False

    async def private_iq(self, kind, inner, to=None):
        """Sends a jabber:iq:private query holding the XML `inner`; the answer's query."""
        iq = self.make_iq_get() if kind == "get" else self.make_iq_set()
        if to:
            iq["to"] = to
        iq.append(ET.fromstring(f"<query xmlns='{PRIVATE}'>{inner}</query>"))
        answer = await iq.send(timeout=10)
        return answer.xml.find(f"{{{PRIVATE}}}query")


async def error_of(coro):
    try:
        await coro
        return "no error"
    except IqError as e:
        return e.iq["error"]["condition"]


def conferences(result):
    return sorted(
        (str(c["jid"]), c["nick"], c["autojoin"])
        for c in result["private"]["bookmarks"]["conferences"]
    )


WANTED = [
    (f"council@conference.{DOMAIN}", "Erin", True),
    ("lobby@conference.example.org", "erin", False),
]


async def store(erin, frank):
    marks = erin.plugin["xep_0048"].stanza.Bookmarks()
    marks.add_conference(WANTED[0][0], WANTED[0][1], name="Council", autojoin=True)
    marks.add_conference(WANTED[1][0], WANTED[1][1], name="Lobby", autojoin=False)
    marks.add_url("https://rookery.example/", name="Rookery")
    try:
        await erin.plugin["xep_0048"].set_bookmarks(marks, timeout=10)
        report("erin stores her bookmarks", True)
    except IqError as e:
        report("erin stores her bookmarks", False, repr(e.iq))
    try:
        got = await erin.plugin["xep_0048"].get_bookmarks(timeout=10)
        report("erin's bookmarks round-trip", conferences(got) == WANTED, str(got))
    except IqError as e:
        report("erin's bookmarks round-trip", False, repr(e.iq))

    # Two elements in one set; a later get of each finds it.
    try:
        await erin.private_iq(
            "set",
            f"<prefs xmlns='{PREFS}'><theme>dark</theme></prefs>"
            f"<window xmlns='{PREFS}' width='800'/>",
        )
        q = await erin.private_iq("get", f"<window xmlns='{PREFS}'/>")
        window = q.find(f"{{{PREFS}}}window")
        report("a set of two elements stores both", window is not None and window.get("width") == "800")
    except IqError as e:
        report("a set of two elements stores both", False, repr(e.iq))

    q = await erin.private_iq("get", "<nothing xmlns='rookery:test:none'/>")
    empty = q.find("{rookery:test:none}nothing")
    report(
        "a get of nothing stored returns the empty element",
        empty is not None and len(empty) == 0 and not (empty.text or "").strip(),
        ET.tostring(q).decode(),
    )

    report(
        "frank cannot read erin's storage",
        await error_of(frank.private_iq("get", "<storage xmlns='storage:bookmarks'/>", to=f"erin@{DOMAIN}"))
        == "forbidden",
    )
    report(
        "frank cannot write erin's storage",
        await error_of(frank.private_iq("set", f"<prefs xmlns='{PREFS}'/>", to=f"erin@{DOMAIN}"))
        == "forbidden",
    )
    report(
        "a reserved namespace is not acceptable",
        await error_of(erin.private_iq("set", "<x xmlns='jabber:x:oob'/>")) == "not-acceptable",
    )
    report(
        "an empty query is not acceptable",
        await error_of(erin.private_iq("get", "")) == "not-acceptable",
    )
    # frank's own storage is his alone: erin's bookmarks are not in it.
    got = await frank.plugin["xep_0048"].get_bookmarks(timeout=10)
    report("frank has no bookmarks", conferences(got) == [], str(got))


async def check(erin, _frank):
    try:
        got = await erin.plugin["xep_0048"].get_bookmarks(timeout=10)
        report("erin's bookmarks survived the restart", conferences(got) == WANTED, str(got))
        urls = [u["url"] for u in got["private"]["bookmarks"]["urls"]]
        report("so did her URL bookmark", urls == ["https://rookery.example/"], str(urls))
        q = await erin.private_iq("get", f"<prefs xmlns='{PREFS}'/>")
        theme = q.findtext(f"{{{PREFS}}}prefs/{{{PREFS}}}theme")
        report("and her preferences", theme == "dark", ET.tostring(q).decode())
    except IqError as e:
        report("erin's storage survived the restart", False, repr(e.iq))


async def main():
    erin = Client(f"erin@{DOMAIN}/desk", "pass-erin-1")
    frank = Client(f"frank@{DOMAIN}/phone", "pass-frank-1")
    report("erin and frank log in", await erin.login() and await frank.login())
    if not failures:
        await (store if MODE == "store" else check)(erin, frank)
    for c in (erin, frank):
        c.disconnect()
    await asyncio.sleep(0.3)


asyncio.run(main())
print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed", flush=True)
sys.exit(1 if failures else 0)
