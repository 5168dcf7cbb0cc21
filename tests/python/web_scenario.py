"""The slixmpp side of the web client test (`tests/tests/e2e/node_web.rs`): bob, over TCP,
waits for a message that alice sends from Converse.js (over WebSocket or BOSH), answers it, and
stays online a little so the answer reaches the browser.

Arguments: HOST PORT DOMAIN CA_FILE [WAIT_SECONDS]
"""
import asyncio

from scenario_lib import EXTRA, Client, exit_code, jid, report

FROM_BROWSER = "Hello from Converse.js in Chromium"
REPLY = "Hello back from slixmpp over TCP"


class Bob(Client):
    def __init__(self):
        super().__init__(jid("bob"), "slixmpp")
        self.received = []
        self.add_event_handler("message", self._on_message)

    async def session_started(self):
        # Real clients fetch their roster before presence (DESIGN.md).
        await self.get_roster()
        self.send_presence()

    def _on_message(self, msg):
        if msg["type"] in ("chat", "normal") and msg["body"]:
            self.received.append(msg)
            self.arrived.set()


async def main():
    wait = float(EXTRA[0]) if EXTRA else 120
    bob = Bob()
    if not report("bob logs in over TCP", await bob.login()):
        return
    got = await bob.wait_for(
        lambda: any(m["body"] == FROM_BROWSER for m in bob.received), timeout=wait
    )
    report(
        "bob gets alice's message from Converse.js",
        got,
        [(str(m["from"]), m["body"]) for m in bob.received],
    )
    if got:
        message = next(m for m in bob.received if m["body"] == FROM_BROWSER)
        report(
            "it comes from alice's browser session",
            message["from"].bare == jid("alice"),
            message["from"],
        )
        bob.send_message(mto=message["from"], mbody=REPLY, mtype="chat")
        report("bob answers", True)
        # Stay online while the browser shows the answer.
        await asyncio.sleep(8)
    bob.disconnect()


asyncio.run(main())
raise SystemExit(exit_code())
