"""What the node's client scenarios share (`tests/python/*_scenario.py`): their arguments,
step reporting, and a slixmpp client that logs in and waits for what it expects.

A scenario is run as `SCRIPT HOST PORT DOMAIN CA_FILE [more…]`; each step prints
"ok <step>" or "FAIL <step>: why", and the script exits 0 only when every step passed
(`exit_code()`). The Rust side is `NodeProcess::scenario` in `tests/src/node.rs`.
"""
import asyncio
import sys

import slixmpp

HOST, PORT, DOMAIN, CA = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4]
EXTRA = sys.argv[5:]
failures = []


def jid(user):
    return f"{user}@{DOMAIN}"


def password(bare):
    """The test password of an account: pass-<user>-1."""
    return f"pass-{bare.split('@')[0]}-1"


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + str(why)[:2000]), flush=True)
    if not ok:
        failures.append(step)
    return ok


def exit_code():
    return 1 if failures else 0


class Client(slixmpp.ClientXMPP):
    """A slixmpp client of the node under test: sends initial presence when the session
    starts; `arrived` is set by the subclass's handlers whenever something it records
    arrives, which `wait_for` re-checks on."""

    def __init__(self, bare, resource, plugins=()):
        super().__init__(f"{bare}/{resource}", password(bare))
        self.ca_certs = CA
        for plugin in plugins:
            self.register_plugin(plugin)
        self.ready = asyncio.Event()
        self.arrived = asyncio.Event()
        self.add_event_handler("session_start", self._on_start)

    async def _on_start(self, _):
        await self.session_started()
        self.ready.set()

    async def session_started(self):
        """What the client does before it counts as logged in: initial presence."""
        self.send_presence()

    async def wait_for(self, what, timeout=10):
        """Waits until what() is true, re-checking on every arrival; its last answer."""
        deadline = asyncio.get_running_loop().time() + timeout
        while not what():
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                return False
            self.arrived.clear()
            try:
                await asyncio.wait_for(self.arrived.wait(), left)
            except asyncio.TimeoutError:
                return what()
        return True

    async def login(self):
        self.connect(host=HOST, port=PORT)
        try:
            await asyncio.wait_for(self.ready.wait(), 15)
            return True
        except asyncio.TimeoutError:
            return False
