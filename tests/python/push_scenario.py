#!/usr/bin/env python3
"""End-to-end XEP-0357 push notifications against a running Rookery node. The clients are
slixmpp (a client library written by others; it has no XEP-0357 plugin, so the enable and
disable requests are written here) and the app server is a fake one: a slixmpp client
logged in as app@DOMAIN/server that records each notification published to it and
answers it. Run by the Rust test in `tests/tests/e2e/node_push.rs`.

    push_scenario.py HOST PORT DOMAIN CA_FILE   (see scenario_lib.py)

Accounts alice, bob and app @DOMAIN must exist with the passwords "pass-<name>-1". alice's
phone enables push (with a secret in its publish options) and stream management. When
its connection breaks (detached, resumable) and when it is offline, bob's messages wake
it through the app server, without their text; while it is online they do not; after it
disables push nothing more is sent.

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every step
passed.
"""
import asyncio
import sys
import xml.etree.ElementTree as ET

from scenario_lib import HOST, PORT, Client, exit_code, jid, report
from slixmpp.exceptions import IqError
from slixmpp.xmlstream.handler import Callback
from slixmpp.xmlstream.matcher import MatchXPath

ALICE, BOB, APP = jid("alice"), jid("bob"), jid("app")
PUSH = "urn:xmpp:push:0"
PUBSUB = "http://jabber.org/protocol/pubsub"
XDATA = "jabber:x:data"


class PushClient(Client):
    def __init__(self, bare, resource, sm=False):
        super().__init__(bare, resource, plugins=("xep_0030", "xep_0198") if sm else ("xep_0030",))
        self.gone = asyncio.Event()
        self.resumed = asyncio.Event()
        self.bodies = []
        # Notifications: (from, node, {field: value}, publish-options secret).
        self.notifications = []
        self.add_event_handler("session_resumed", lambda _: self.resumed.set())
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("message", self.on_message)
        self.register_handler(Callback(
            "push notification",
            MatchXPath(f"{{jabber:client}}iq/{{{PUBSUB}}}pubsub"),
            self.on_publish,
        ))

    def on_message(self, m):
        if m["body"]:
            self.bodies.append(m["body"])
            self.arrived.set()

    def on_publish(self, iq):
        if iq["type"] != "set":
            return
        pubsub = iq.xml.find(f"{{{PUBSUB}}}pubsub")
        publish = pubsub.find(f"{{{PUBSUB}}}publish")
        form = publish.find(f"{{{PUBSUB}}}item/{{{PUSH}}}notification/{{{XDATA}}}x")
        fields = {}
        if form is not None:
            for f in form.findall(f"{{{XDATA}}}field"):
                v = f.find(f"{{{XDATA}}}value")
                fields[f.get("var")] = v.text if v is not None else None
        secret = None
        options = pubsub.find(f"{{{PUBSUB}}}publish-options/{{{XDATA}}}x")
        if options is not None:
            for f in options.findall(f"{{{XDATA}}}field"):
                if f.get("var") == "secret":
                    secret = f.find(f"{{{XDATA}}}value").text
        self.notifications.append((str(iq["from"]), publish.get("node"), fields, secret))
        iq.reply().send()
        self.arrived.set()

    async def push_request(self, name, app_server, node=None, secret=None):
        iq = self.make_iq_set()
        el = ET.Element(f"{{{PUSH}}}{name}", {"jid": app_server})
        if node:
            el.set("node", node)
        if secret:
            x = ET.SubElement(el, f"{{{XDATA}}}x", {"type": "submit"})
            for var, value in (("FORM_TYPE", f"{PUBSUB}#publish-options"), ("secret", secret)):
                f = ET.SubElement(x, f"{{{XDATA}}}field", {"var": var})
                ET.SubElement(f, f"{{{XDATA}}}value").text = value
        iq.append(el)
        return await iq.send(timeout=10)


async def main():
    app, bob = PushClient(APP, "server"), PushClient(BOB, "desk")
    alice = PushClient(ALICE, "phone", sm=True)
    for name, c in (("the app server", app), ("bob", bob), ("alice", alice)):
        if not report(f"{name} logs in", await c.login()):
            return
    info = await alice["xep_0030"].get_info(jid=ALICE)
    report("alice's account advertises push", PUSH in info["disco_info"]["features"])
    # An app server on another domain is reached over federation: accepted, then
    # disabled again (this test has no such server to send to).
    try:
        await alice.push_request("enable", "push.elsewhere.example", "n", "x")
        await alice.push_request("disable", "push.elsewhere.example", "n")
        report("an app server on another domain is accepted", True)
    except IqError as e:
        report("an app server on another domain is accepted", False, e.condition)
    try:
        await alice.push_request("enable", f"{APP}/server", "alice-phone", "s3cret")
        report("alice enables push", True)
    except IqError as e:
        report("alice enables push", False, e.condition)
        return
    await asyncio.sleep(0.5)

    bob.send_message(mto=ALICE, mtype="chat", mbody="while online")
    await alice.wait_for(lambda: "while online" in alice.bodies)
    await asyncio.sleep(1)
    report("while alice is online nobody is woken", app.notifications == [], str(app.notifications))

    # The connection breaks: the session waits, detached, to be resumed.
    alice.gone.clear()
    alice.abort()
    await asyncio.wait_for(alice.gone.wait(), 10)
    await asyncio.sleep(0.5)
    bob.send_message(mto=ALICE, mtype="chat", mbody="secret plans")
    got = await app.wait_for(lambda: len(app.notifications) >= 1)
    report("a detached session's message wakes the phone through the app server", got, str(app.notifications))
    if got:
        frm, node, fields, secret = app.notifications[0]
        report("from alice's account, to her node, with her publish options",
               (frm, node, secret) == (ALICE, "alice-phone", "s3cret"), str(app.notifications[0]))
        report("a summary without the sender or the text",
               fields.get("FORM_TYPE") == "urn:xmpp:push:summary"
               and "last-message-body" not in fields and "last-message-sender" not in fields,
               str(fields))
    alice.connect(host=HOST, port=PORT)
    try:
        await asyncio.wait_for(alice.resumed.wait(), 15)
        report("alice resumes and reads it", await alice.wait_for(lambda: "secret plans" in alice.bodies), str(alice.bodies))
    except asyncio.TimeoutError:
        report("alice resumes and reads it", False, "no <resumed/>")

    # Offline: a clean end of the stream.
    alice.disconnect()
    await asyncio.wait_for(alice.gone.wait(), 10)
    await asyncio.sleep(0.5)
    bob.send_message(mto=ALICE, mtype="chat", mbody="are you there")
    got = await app.wait_for(lambda: len(app.notifications) >= 2)
    report("an offline account's message wakes it too", got, str(app.notifications))

    # Disabled: no more notifications.
    later = PushClient(ALICE, "phone")
    if not report("alice logs in again", await later.login()):
        return
    try:
        await later.push_request("disable", f"{APP}/server", "alice-phone")
        report("alice disables push", True)
    except IqError as e:
        report("alice disables push", False, e.condition)
    later.disconnect()
    await asyncio.sleep(1)
    bob.send_message(mto=ALICE, mtype="chat", mbody="hello?")
    await asyncio.sleep(1.5)
    report("after disabling nothing more is sent", len(app.notifications) == 2, str(app.notifications))
    for c in (app, bob):
        c.disconnect()
    await asyncio.sleep(0.5)


asyncio.run(main())
sys.exit(exit_code())
