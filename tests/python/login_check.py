#!/usr/bin/env python3
"""Logs one account in with slixmpp and says how it went. Run by the Rust tests
(`billing::…`) to see a hosted domain through a real client's eyes.

    login_check.py HOST PORT JID PASSWORD CA_FILE

Prints "logged in" and exits 0 after the session starts (STARTTLS, SCRAM, bind, roster),
or prints "refused: <why>" and exits 2 when authentication fails or the server closes the
stream (a suspended domain answers with a policy-violation stream error).
"""
import asyncio
import sys

import slixmpp

HOST, PORT, JID, PASSWORD, CA = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]


class Client(slixmpp.ClientXMPP):
    def __init__(self):
        super().__init__(JID, PASSWORD)
        self.ca_certs = CA
        self.outcome = asyncio.get_event_loop().create_future()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.finish("refused: not-authorized"))
        self.add_event_handler("stream_error", lambda e: self.finish(f"refused: stream error {e['condition']}"))
        self.add_event_handler("disconnected", lambda _: self.finish("refused: disconnected"))

    def finish(self, what):
        if not self.outcome.done():
            self.outcome.set_result(what)

    async def on_start(self, _):
        await self.get_roster()
        self.finish("logged in")


async def main():
    c = Client()
    c.connect(host=HOST, port=PORT)
    try:
        what = await asyncio.wait_for(c.outcome, 20)
    except asyncio.TimeoutError:
        what = "refused: timeout"
    print(what, flush=True)
    c.disconnect()
    sys.exit(0 if what == "logged in" else 2)


asyncio.run(main())
