#!/usr/bin/env python3
"""SOCKS5 bytestreams through the node's proxy (XEP-0065), with slixmpp's xep_0065 plugin.
Run by the Rust test `node_proxy`.

    proxy_scenario.py HOST PORT DOMAIN CA_FILE   (see scenario_lib.py)

alice@DOMAIN finds the proxy through disco, offers bob@DOMAIN a bytestream through it,
both connect, alice activates it and sends 200,000 random bytes, which bob receives
unchanged; bob cannot activate a stream that is not his. Accounts alice and bob
("pass-alice-1", "pass-bob-1") must exist on DOMAIN.
"""
import asyncio
import os

from scenario_lib import DOMAIN, Client, exit_code, jid, report
from slixmpp.exceptions import IqError

SIZE = 200_000


class Receiver(Client):
    def __init__(self, bare, resource):
        super().__init__(bare, resource, plugins=("xep_0030", "xep_0065"))
        self.plugin["xep_0065"].auto_accept = True
        self.data = bytearray()
        self.add_event_handler("socks5_data", self.on_data)

    def on_data(self, data):
        self.data.extend(data)
        self.arrived.set()


async def main():
    alice = Client(jid("alice"), "desk", plugins=("xep_0030", "xep_0065"))
    bob = Receiver(jid("bob"), "phone")
    if not (report("alice logs in", await alice.login()) and report("bob logs in", await bob.login())):
        return
    proxies = await alice.plugin["xep_0065"].discover_proxies()
    proxy = f"proxy.{DOMAIN}"
    report("the proxy is found through disco with its host and port", proxy in proxies and proxies[proxy][0] == "127.0.0.1", proxies)

    data = os.urandom(SIZE)
    try:
        sock = await asyncio.wait_for(alice.plugin["xep_0065"].handshake(bob.boundjid), 20)
        ok = sock is not None
        report("alice opens a bytestream to bob through the proxy", ok, sock)
    except Exception as e:  # noqa: BLE001 - the failure is the report
        report("alice opens a bytestream to bob through the proxy", False, repr(e))
        ok = False
    if ok:
        await sock.write(data)
        got = await bob.wait_for(lambda: len(bob.data) >= SIZE, 20)
        report("bob receives the 200000 bytes unchanged", got and bytes(bob.data) == data, len(bob.data))
        sock.transport.close()

    try:
        await bob.plugin["xep_0065"].activate(proxy, "not-a-stream", alice.boundjid, timeout=10)
        report("a stream that is not connected cannot be activated", False, "it was")
    except IqError as e:
        report("a stream that is not connected cannot be activated", e.condition == "item-not-found", e.condition)
    alice.disconnect()
    bob.disconnect()


asyncio.run(main())
raise SystemExit(exit_code())
