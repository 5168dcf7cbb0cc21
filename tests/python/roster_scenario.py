#!/usr/bin/env python3
"""End-to-end roster and presence-subscription scenario (RFC 6121, XEP-0237) against a
running Rookery node, with slixmpp (a client library written by others). Run by the Rust
test `node_roster::rosters_and_subscriptions_work_with_slixmpp_and_persist`.

    roster_scenario.py HOST PORT DOMAIN CA_FILE

Accounts alice, bob and carol @DOMAIN must exist with the passwords "pass-alice-1",
"pass-bob-1" and "pass-carol-1". Each step prints "ok <step>" or "FAIL <step>: why"; the
exit code is 0 only when every step passed.

The clients answer nothing on their own (slixmpp would accept and return every request by
default): each subscription stanza below is sent explicitly, as a user would.
"""
import asyncio
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout
from slixmpp.xmlstream import ET

HOST, PORT, DOMAIN, CA = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
ALICE, BOB, CAROL = f"alice@{DOMAIN}", f"bob@{DOMAIN}", f"carol@{DOMAIN}"
PASSWORDS = {ALICE: "pass-alice-1", BOB: "pass-bob-1", CAROL: "pass-carol-1"}
ROSTER = "{jabber:iq:roster}"
WAIT = 10
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + why), flush=True)
    if not ok:
        failures.append(step)
    return ok


class Client(slixmpp.ClientXMPP):
    """A client that fetches the roster, then sends initial presence (as real clients do),
    and records every presence stanza and roster push it receives."""

    def __init__(self, bare, resource):
        super().__init__(f"{bare}/{resource}", PASSWORDS[bare])
        self.ca_certs = CA
        self.roster.auto_authorize = None
        self.roster.auto_subscribe = False
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.seen = []  # ("presence", stanza) or ("push", item attributes)
        self.arrived = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        self.add_event_handler("presence", self.on_presence)
        self.add_event_handler("roster_update", self.on_roster)

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()

    def on_presence(self, p):
        self.seen.append(("presence", p))
        self.arrived.set()

    def on_roster(self, iq):
        if iq["type"] != "set":
            return
        query = iq.xml.find(f"{ROSTER}query")
        for item in query.findall(f"{ROSTER}item"):
            attrs = dict(item.attrib)
            attrs["groups"] = [g.text for g in item.findall(f"{ROSTER}group")]
            attrs["ver"] = query.get("ver")
            self.seen.append(("push", attrs))
        self.arrived.set()

    async def login(self):
        self.connect(host=HOST, port=PORT)
        waits = [asyncio.ensure_future(self.ready.wait()), asyncio.ensure_future(self.failed.wait())]
        await asyncio.wait(waits, timeout=15, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        return self.ready.is_set()

    async def logout(self):
        self.disconnect()
        await asyncio.sleep(0.5)

    async def wait_for(self, kind, pred, timeout=WAIT):
        """Takes the first recorded presence or push matching `pred`, waiting for it."""
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            for i, (k, x) in enumerate(self.seen):
                if k == kind and pred(x):
                    del self.seen[i]
                    return x
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return None
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                pass

    async def presence(self, ptype, pfrom, timeout=WAIT):
        return await self.wait_for(
            "presence",
            lambda p: p["type"] == ptype and str(p["from"]) == pfrom,
            timeout,
        )

    async def push(self, jid, timeout=WAIT, **attrs):
        def matches(item):
            if item.get("jid") != jid:
                return False
            for k, v in attrs.items():
                if item.get(k) != v:
                    return False
            return True

        return await self.wait_for("push", matches, timeout)

    async def nothing(self, kind, pred, timeout=1.5):
        return await self.wait_for(kind, pred, timeout) is None

    def send_sub(self, to, ptype):
        self.send_presence(pto=to, ptype=ptype)

    async def fetch_roster(self, ver=None):
        """A raw roster get; returns (items by JID, ver) or (None, None) for an empty result."""
        iq = self.Iq()
        iq["type"] = "get"
        iq.enable("roster")
        if ver is not None:
            iq["roster"]["ver"] = ver
        resp = await iq.send(timeout=WAIT)
        query = resp.xml.find(f"{ROSTER}query")
        if query is None:
            return None, None
        items = {}
        for item in query.findall(f"{ROSTER}item"):
            attrs = dict(item.attrib)
            attrs["groups"] = [g.text for g in item.findall(f"{ROSTER}group")]
            items[item.get("jid")] = attrs
        return items, query.get("ver")

    async def remove_item(self, jid):
        """A raw roster remove: the server alone tells the contact (RFC 6121 §2.5.2)."""
        iq = self.Iq()
        iq["type"] = "set"
        iq.enable("roster")
        ET.SubElement(iq["roster"].xml, f"{ROSTER}item", jid=jid, subscription="remove")
        return await iq.send(timeout=WAIT)


async def expect(step, coro):
    try:
        got = await coro
    except (IqError, IqTimeout) as e:
        return report(step, False, repr(e))
    return report(step, got is not None and got is not False, "timed out" if got is None else repr(got))


async def subscription_of(client, jid):
    items, _ = await client.fetch_roster("")
    item = (items or {}).get(jid)
    return None if item is None else (item.get("subscription"), item.get("ask"))


async def main():
    alice = Client(ALICE, "laptop")
    bob = Client(BOB, "phone")
    report("alice logs in, fetches the roster and sends initial presence", await alice.login())
    report("bob logs in too", await bob.login())

    items, ver = await alice.fetch_roster("")
    report("a new account's roster is empty and versioned", items == {} and bool(ver), f"{items!r} ver={ver!r}")

    # --- alice asks, bob approves -------------------------------------------------------
    alice.send_sub(BOB, "subscribe")
    await expect("alice's roster gets bob with ask=subscribe", alice.push(BOB, subscription="none", ask="subscribe"))
    await expect("bob receives alice's request, from her bare JID", bob.presence("subscribe", ALICE))
    report(
        "a request alone does not put alice on bob's roster",
        await bob.nothing("push", lambda i: i.get("jid") == ALICE),
    )
    bob.send_sub(ALICE, "subscribed")
    await expect("bob's roster gets alice with subscription=from", bob.push(ALICE, subscription="from"))
    await expect("alice's roster push says subscription=to", alice.push(BOB, subscription="to"))
    await expect("alice receives bob's approval", alice.presence("subscribed", BOB))
    await expect("alice then receives bob's presence", alice.presence("available", f"{BOB}/phone"))

    # --- and back -----------------------------------------------------------------------
    bob.send_sub(ALICE, "subscribe")
    await expect("alice receives bob's request", alice.presence("subscribe", BOB))
    alice.send_sub(BOB, "subscribed")
    await expect("alice's roster says both", alice.push(BOB, subscription="both"))
    await expect("bob's roster says both", bob.push(ALICE, subscription="both"))
    await expect("bob receives alice's presence", bob.presence("available", f"{ALICE}/laptop"))
    report("alice's stored roster has bob: both", await subscription_of(alice, BOB) == ("both", None))
    report("bob's stored roster has alice: both", await subscription_of(bob, ALICE) == ("both", None))

    # --- roster set, pushes to every interested resource, versioning ---------------------
    alice2 = Client(ALICE, "tablet")
    report("alice logs in on a second device", await alice2.login())
    await expect("the second device gets bob's presence at login (probe)", alice2.presence("available", f"{BOB}/phone"))
    _, ver1 = await alice.fetch_roster("")
    items, ver = await alice.fetch_roster(ver1)
    report("a roster get with the current version gets an empty result", items is None, f"{items!r}")
    try:
        await alice.update_roster(BOB, name="Bobby", groups=["Friends"])
        report("alice renames bob and puts him in a group", True)
    except (IqError, IqTimeout) as e:
        report("alice renames bob and puts him in a group", False, repr(e))
    for who, client in (("the device that asked", alice), ("the other device", alice2)):
        push = await client.push(BOB, name="Bobby", subscription="both")
        report(f"{who} gets the push with the name and group", push is not None and push["groups"] == ["Friends"], repr(push))
    items, ver2 = await alice.fetch_roster(ver1)
    report(
        "after a change the old version gets the whole roster with a new version",
        items is not None and ver2 != ver1 and items.get(BOB, {}).get("name") == "Bobby",
        f"{items!r} {ver1!r} -> {ver2!r}",
    )
    await alice2.logout()
    await alice.presence("unavailable", f"{ALICE}/tablet", timeout=3)

    # --- logging out, logging in again: presence and persistence ------------------------
    await bob.logout()
    await expect("alice sees bob go offline", alice.presence("unavailable", f"{BOB}/phone"))
    bob = Client(BOB, "tablet")
    report("bob logs in again", await bob.login())
    await expect("alice sees bob come back", alice.presence("available", f"{BOB}/tablet"))
    await expect("bob gets alice's presence at login (probe)", bob.presence("available", f"{ALICE}/laptop"))
    report("bob's roster survived the reconnection: alice, both", await subscription_of(bob, ALICE) == ("both", None))
    items, _ = await alice.fetch_roster("")
    report("alice's roster kept bob's name and group", (items or {}).get(BOB, {}).get("groups") == ["Friends"], repr(items))

    # --- unsubscribe --------------------------------------------------------------------
    alice.send_sub(BOB, "unsubscribe")
    await expect("alice's roster says from after unsubscribing", alice.push(BOB, subscription="from"))
    await expect("bob's roster says to", bob.push(ALICE, subscription="to"))
    await expect("bob is told", bob.presence("unsubscribe", ALICE))
    await expect("alice gets bob's unavailable presence as her subscription ends", alice.presence("unavailable", f"{BOB}/tablet"))
    report("alice's stored roster has bob: from", await subscription_of(alice, BOB) == ("from", None))
    report("bob's stored roster has alice: to", await subscription_of(bob, ALICE) == ("to", None))

    # --- a request while the contact is offline -----------------------------------------
    await bob.logout()
    carol = Client(CAROL, "desk")
    report("carol logs in", await carol.login())
    carol.send_sub(BOB, "subscribe")
    await expect("carol's roster gets bob with ask=subscribe", carol.push(BOB, subscription="none", ask="subscribe"))
    await asyncio.sleep(0.5)
    bob = Client(BOB, "phone")
    report("bob logs in later", await bob.login())
    await expect("bob receives carol's request at login", bob.presence("subscribe", CAROL))
    bob.send_sub(CAROL, "unsubscribed")
    await expect("carol is told bob declined", carol.presence("unsubscribed", BOB))
    await expect("carol's roster drops the ask", carol.push(BOB, subscription="none"))
    bob2 = Client(BOB, "laptop")
    report("bob logs in on another device", await bob2.login())
    report(
        "a declined request is not delivered again",
        await bob2.nothing("presence", lambda p: p["type"] == "subscribe" and str(p["from"]) == CAROL),
    )
    await bob2.logout()

    # --- pre-approval -------------------------------------------------------------------
    carol.send_sub(ALICE, "subscribed")
    await expect("carol's roster records the pre-approval", carol.push(ALICE, subscription="none", approved="true"))
    report(
        "a pre-approval is not sent to alice",
        await alice.nothing("presence", lambda p: str(p["from"]).startswith(CAROL)),
    )
    alice.send_sub(CAROL, "subscribe")
    await expect("alice's request is approved by the server at once", alice.presence("subscribed", CAROL))
    await expect("alice's roster says to", alice.push(CAROL, subscription="to"))
    await expect("carol's roster says from", carol.push(ALICE, subscription="from"))
    await expect("alice gets carol's presence", alice.presence("available", f"{CAROL}/desk"))
    report(
        "carol was not asked",
        await carol.nothing("presence", lambda p: p["type"] == "subscribe"),
    )

    # --- removal ------------------------------------------------------------------------
    try:
        await alice.remove_item(CAROL)
        report("alice removes carol from her roster", True)
    except (IqError, IqTimeout) as e:
        report("alice removes carol from her roster", False, repr(e))
    await expect("alice's devices get a removal push", alice.push(CAROL, subscription="remove"))
    await expect("carol is told alice unsubscribed", carol.presence("unsubscribe", ALICE))
    await expect("carol's roster says none", carol.push(ALICE, subscription="none"))

    # --- directed presence --------------------------------------------------------------
    carol.send_presence(pto=f"{BOB}/phone", pstatus="just for you")
    await expect("bob receives carol's directed presence", bob.presence("available", f"{CAROL}/desk"))
    await carol.logout()
    await expect("bob hears carol went offline, though not subscribed", bob.presence("unavailable", f"{CAROL}/desk"))

    # --- nobody and elsewhere -----------------------------------------------------------
    alice.send_sub(f"nobody@{DOMAIN}", "subscribe")
    await expect("a request to a non-existent account is answered unsubscribed", alice.presence("unsubscribed", f"nobody@{DOMAIN}"))
    await expect("and the roster item keeps no ask", alice.push(f"nobody@{DOMAIN}", subscription="none", ask=None))
    alice.send_sub("someone@elsewhere.example", "subscribe")
    err = await alice.presence("error", "someone@elsewhere.example")
    report(
        "a request to another server bounces with remote-server-not-found",
        err is not None and err["error"]["condition"] == "remote-server-not-found",
        repr(err),
    )

    await alice.logout()
    await bob.logout()


async def snapshot():
    """Prints each account's roster and the subscription requests waiting for it at login,
    one line each, so two snapshots (before and after a node restart) can be compared."""
    import json

    for bare in (ALICE, BOB, CAROL):
        client = Client(bare, "snapshot")
        if not report(f"{bare} logs in for the snapshot", await client.login()):
            continue
        items, ver = await client.fetch_roster("")
        await asyncio.sleep(1.0)
        waiting = sorted(
            str(p["from"]) for k, p in client.seen if k == "presence" and p["type"] == "subscribe"
        )
        print("roster", bare, ver, json.dumps(items, sort_keys=True), flush=True)
        print("waiting", bare, json.dumps(waiting), flush=True)
        await client.logout()


asyncio.run(snapshot() if sys.argv[5:] == ["snapshot"] else main())
print(f"{'FAILED' if failures else 'PASSED'}: {len(failures)} failed", flush=True)
sys.exit(1 if failures else 0)
