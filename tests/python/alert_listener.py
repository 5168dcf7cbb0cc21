#!/usr/bin/env python3
"""Logs one account in with slixmpp, stays online and waits for a chat message whose body
contains a given text: a person waiting for an XMPP alert. Run by the Rust tests
(`alerts::…`).

    alert_listener.py HOST PORT JID PASSWORD CA_FILE TEXT TIMEOUT_SECS

Prints "ready" once the session is up (roster fetched, presence sent), then "msg: <from>
<body>" for every message, and exits 0 after one whose body contains TEXT; prints
"timeout" and exits 2 when none came in time, "refused: …" and exits 3 when the login fails.
"""
import asyncio
import sys

import slixmpp

HOST, PORT, JID, PASSWORD, CA, TEXT, TIMEOUT = (
    sys.argv[1],
    int(sys.argv[2]),
    sys.argv[3],
    sys.argv[4],
    sys.argv[5],
    sys.argv[6],
    float(sys.argv[7]),
)


class Listener(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(JID, PASSWORD)
        self.ca_certs = CA
        self.outcome = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("message", self.on_message)
        self.add_event_handler("failed_auth", lambda _: self.finish("refused: not-authorized"))
        self.add_event_handler("disconnected", lambda _: self.finish("refused: disconnected"))

    def finish(self, what):
        if not self.outcome.done():
            self.outcome.set_result(what)

    async def on_start(self, _):
        await self.get_roster()
        self.send_presence()
        print("ready", flush=True)

    def on_message(self, msg):
        body = msg["body"]
        print(f"msg: {msg['from']} {body!r}", flush=True)
        if msg["type"] in ("chat", "normal") and TEXT in body:
            self.finish("got")


async def main():
    c = Listener()
    c.connect(host=HOST, port=PORT)
    try:
        what = await asyncio.wait_for(c.outcome, TIMEOUT)
    except asyncio.TimeoutError:
        what = "timeout"
    print(what, flush=True)
    c.disconnect()
    sys.exit({"got": 0, "timeout": 2}.get(what, 3))


asyncio.run(main())
