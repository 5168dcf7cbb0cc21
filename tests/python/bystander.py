#!/usr/bin/env python3
"""A logged-in pair that must keep working while other connections misbehave. Run by the
Rust test `node::hostile_xml_closes_only_its_own_stream`.

    bystander.py HOST PORT DOMAIN CA_FILE GO_FILE

Logs alice and bob in, prints "ready", waits until GO_FILE exists (the test creates it after
its attacks), then checks that a message from alice still reaches bob.
"""
import asyncio
import os
import sys

import slixmpp

HOST, PORT, DOMAIN, CA, GO = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


class Client(slixmpp.ClientXMPP):
    def __init__(self, jid, password):
        super().__init__(jid, password)
        self.ca_certs = CA
        self.received = asyncio.Queue()
        self.ready = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", lambda m: self.received.put_nowait(m))

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        self.ready.set()


async def main():
    alice = Client(f"alice@{DOMAIN}/bystander", "pass-alice-1")
    bob = Client(f"bob@{DOMAIN}/bystander", "pass-bob-1")
    for c in (alice, bob):
        c.connect(host=HOST, port=PORT)
        await asyncio.wait_for(c.ready.wait(), 15)
    print("ready", flush=True)
    for _ in range(600):
        if os.path.exists(GO):
            break
        await asyncio.sleep(0.1)
    alice.send_message(mto=f"bob@{DOMAIN}/bystander", mbody="still here", mtype="chat")
    m = await asyncio.wait_for(bob.received.get(), 10)
    ok = m["body"] == "still here"
    print("ok the logged-in session kept working" if ok else f"FAIL got {m}", flush=True)
    alice.disconnect()
    bob.disconnect()
    await asyncio.sleep(0.3)
    return ok


sys.exit(0 if asyncio.run(main()) else 1)
