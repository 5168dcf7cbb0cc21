#!/usr/bin/env python3
"""End-to-end XEP-0077 in-band registration against a running Rookery node, with slixmpp's
`xep_0077` plugin (a client library written by others). Run by the Rust tests in
`tests/tests/e2e/node_register.rs`.

    register_scenario.py HOST PORT DOMAIN CA_FILE off|limited|rate [N]

- off: the domain does not let people register: after TLS the stream features offer no
  `<register/>`, and a register query before logging in is refused with `not-allowed`.
- limited (registration on; the plan allows 2 accounts; alice exists with the password
  "pass-alice-1"): newbie registers, logs in on the same stream and sends alice a message;
  a taken name gets `conflict`, a bad name, an empty or short password `not-acceptable`, a third
  account `resource-constraint`; newbie changes the password in-band (the old one stops
  working), then deletes the account in-band (the stream ends, the login is gone).
- rate N (registration on, no account limit; N registrations from this address are left
  under the node's hourly limit): N registrations pass, the next is refused with
  `resource-constraint` (slixmpp, like other RFC 3920-era clients, cannot read
  `policy-violation`).

Each step prints "ok <step>" or "FAIL <step>: why"; the exit code is 0 only when every step
passed.
"""
import asyncio
import socket
import ssl
import sys

import slixmpp
from slixmpp.exceptions import IqError, IqTimeout

HOST, PORT, DOMAIN, CA, MODE = (
    sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
)
failures = []


def report(step, ok, why=""):
    print(("ok " if ok else "FAIL ") + step + ("" if ok else ": " + why), flush=True)
    if not ok:
        failures.append(step)
    return ok


# ---- a bare stream, for what a client library would not show -------------------------------

HEADER = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    f"xmlns:stream='http://etherx.jabber.org/streams' to='{DOMAIN}' version='1.0'>"
)


def read_until(sock, marker, timeout=10):
    sock.settimeout(timeout)
    data = b""
    while marker.encode() not in data:
        chunk = sock.recv(65536)
        if not chunk:
            break
        data += chunk
    return data.decode(errors="replace")


def raw_after_tls(iq):
    """STARTTLS, then the features over TLS and the answer to `iq` before logging in."""
    sock = socket.create_connection((HOST, PORT), timeout=10)
    sock.sendall(HEADER.encode())
    read_until(sock, "</stream:features>")
    sock.sendall(b"<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>")
    read_until(sock, "<proceed")
    context = ssl.create_default_context(cafile=CA)
    tls = context.wrap_socket(sock, server_hostname=DOMAIN)
    tls.sendall(HEADER.encode())
    features = read_until(tls, "</stream:features>")
    tls.sendall(iq.encode())
    answer = read_until(tls, "</iq>")
    tls.close()
    return features, answer


REGISTER_GET = "<iq type='get' id='reg1'><query xmlns='jabber:iq:register'/></iq>"


# ---- slixmpp clients ---------------------------------------------------------------------------

class Client(slixmpp.ClientXMPP):
    """Logs in as user@DOMAIN; with `register`, registers (username, password) first, on the
    same stream, through the xep_0077 plugin."""

    def __init__(self, user, password, register=None):
        super().__init__(f"{user}@{DOMAIN}/app", password)
        self.ca_certs = CA
        for plugin in ("xep_0030", "xep_0004", "xep_0066", "xep_0077"):
            self.register_plugin(plugin)
        self.to_register = register
        # The outcome of the registration: None (done), or (condition, text).
        self.registration = asyncio.get_event_loop().create_future()
        self.form = None
        self.ready = asyncio.Event()
        self.failed = asyncio.Event()
        self.gone = asyncio.Event()
        self.stream_error = None
        self.bodies = []
        self.arrived = asyncio.Event()
        self.add_event_handler("session_start", self.on_start)
        self.add_event_handler("failed_auth", lambda _: self.failed.set())
        self.add_event_handler("disconnected", lambda _: self.gone.set())
        self.add_event_handler("stream_error", self.on_stream_error)
        self.add_event_handler("message", self.on_message)
        if register is not None:
            self.add_event_handler("register", self.on_register)

    async def on_register(self, form):
        self.form = form
        username, password = self.to_register
        iq = self.Iq()
        iq["type"] = "set"
        iq["register"]["username"] = username
        iq["register"]["password"] = password
        try:
            await iq.send(timeout=10)
            self.registration.set_result(None)
        except IqError as e:
            self.registration.set_result((e.iq["error"]["condition"], e.iq["error"]["text"]))
            self.disconnect()
        except IqTimeout:
            self.registration.set_result(("timeout", ""))
            self.disconnect()

    async def on_start(self, _):
        self.send_presence()
        self.ready.set()

    def on_stream_error(self, error):
        self.stream_error = error["condition"]

    def on_message(self, m):
        if m["body"]:
            self.bodies.append(m["body"])
            self.arrived.set()

    def start(self):
        self.connect(host=HOST, port=PORT)

    async def logged_in(self, timeout=15):
        """True once the session started, False when the login failed or timed out."""
        ready = asyncio.ensure_future(self.ready.wait())
        failed = asyncio.ensure_future(self.failed.wait())
        gone = asyncio.ensure_future(self.gone.wait())
        await asyncio.wait([ready, failed, gone], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for f in (ready, failed, gone):
            f.cancel()
        return self.ready.is_set()

    async def registered(self, timeout=15):
        """The registration's outcome: None when it worked, else (condition, text)."""
        waits = [asyncio.ensure_future(e.wait()) for e in (self.ready, self.failed, self.gone)]
        await asyncio.wait([asyncio.shield(self.registration), *waits], timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        for w in waits:
            w.cancel()
        if self.registration.done():
            return self.registration.result()
        return ("not offered", "the stream went on without a registration")

    async def close(self):
        if not self.gone.is_set():
            self.disconnect()
            try:
                await asyncio.wait_for(self.gone.wait(), 5)
            except asyncio.TimeoutError:
                pass


async def try_register(username, password):
    """Registers on a new connection; returns the outcome and the client (still connected
    when the registration worked: it logs in next)."""
    c = Client(username if "@" not in username and username else "someone", password, (username, password))
    c.start()
    outcome = await c.registered()
    return outcome, c


async def login(user, password):
    c = Client(user, password)
    c.start()
    ok = await c.logged_in()
    return ok, c


def refused_with(outcome, condition):
    return outcome is not None and outcome[0] == condition


# ---- the scenarios -------------------------------------------------------------------------

async def off():
    features, answer = raw_after_tls(REGISTER_GET)
    report("registration is not offered", "iq-register" not in features, features)
    report("a register query is refused with not-allowed", "<not-allowed" in answer and "type=\"error\"" in answer, answer)
    report("with a sentence", "does not let people create accounts" in answer, answer)
    outcome, c = await try_register("newbie", "pass-newbie-1")
    report("slixmpp cannot register", outcome is not None, str(outcome))
    await c.close()


async def limited():
    features, answer = raw_after_tls(REGISTER_GET)
    report("registration is offered after TLS", "<register xmlns=\"http://jabber.org/features/iq-register\"/>" in features, features)
    report("the form asks for a user name and a password", "<username/><password/>" in answer and "jabber:x:data" in answer, answer)

    ok, alice = await login("alice", "pass-alice-1")
    if not report("alice logs in", ok):
        return
    outcome, newbie = await try_register("newbie", "pass-newbie-1")
    if not report("newbie registers", outcome is None, str(outcome)):
        return
    report("the registration form came through the plugin", newbie.form is not None and newbie.form["register"]["instructions"] != "", str(newbie.form))
    if not report("newbie logs in on the same stream", await newbie.logged_in()):
        return
    newbie.send_message(mto=f"alice@{DOMAIN}", mbody="hello from a new account", mtype="chat")
    try:
        await asyncio.wait_for(alice.arrived.wait(), 10)
    except asyncio.TimeoutError:
        pass
    report("alice gets newbie's message", "hello from a new account" in alice.bodies, str(alice.bodies))
    info = await newbie["xep_0030"].get_info(jid=DOMAIN, timeout=10)
    report("the server's disco#info lists jabber:iq:register", "jabber:iq:register" in info["disco_info"]["features"], str(info["disco_info"]["features"]))

    outcome, c = await try_register("alice", "pass-other-1")
    report("a taken name is refused with conflict", refused_with(outcome, "conflict"), str(outcome))
    await c.close()
    outcome, c = await try_register("not@allowed", "pass-other-1")
    report("a bad name is refused with not-acceptable", refused_with(outcome, "not-acceptable") and "user name" in outcome[1], str(outcome))
    await c.close()
    outcome, c = await try_register("emptypass", "")
    report("an empty password is refused with not-acceptable", refused_with(outcome, "not-acceptable"), str(outcome))
    await c.close()
    outcome, c = await try_register("weakpass", "short")
    report("a short password is refused with not-acceptable", refused_with(outcome, "not-acceptable") and "at least 10" in outcome[1], str(outcome))
    await c.close()
    outcome, c = await try_register("third", "pass-third-1")
    report("past the plan's account limit: resource-constraint", refused_with(outcome, "resource-constraint") and "limit of 2 accounts" in outcome[1], str(outcome))
    await c.close()

    # The password changes in-band: the new one works, the old one no longer.
    try:
        await newbie["xep_0077"].change_password("pass-newbie-2", jid=DOMAIN, timeout=10)
        report("newbie changes the password in-band", True)
    except (IqError, IqTimeout) as e:
        report("newbie changes the password in-band", False, str(e))
    await newbie.close()
    ok, c = await login("newbie", "pass-newbie-1")
    report("the old password no longer works", not ok)
    await c.close()
    ok, newbie = await login("newbie", "pass-newbie-2")
    if not report("the new password works", ok):
        return

    # Removal: answered, then the stream ends; the account is gone.
    try:
        await newbie["xep_0077"].cancel_registration(jid=DOMAIN, timeout=10)
        report("newbie deletes the account in-band", True)
    except (IqError, IqTimeout) as e:
        report("newbie deletes the account in-band", False, str(e))
    try:
        await asyncio.wait_for(newbie.gone.wait(), 10)
        report("the stream ends after the removal", True)
    except asyncio.TimeoutError:
        report("the stream ends after the removal", False, "still connected")
    ok, c = await login("newbie", "pass-newbie-2")
    report("the deleted account cannot log in", not ok)
    await c.close()
    # Its place under the plan's limit is free again.
    outcome, c = await try_register("third", "pass-third-1")
    report("the freed place can be registered again", outcome is None, str(outcome))
    await c.close()
    await alice.close()


async def rate():
    allowed = int(sys.argv[6])
    for n in range(allowed):
        outcome, c = await try_register(f"user{n}", "pass-user-1")
        if not report(f"registration {n + 1} of {allowed} from this address passes", outcome is None, str(outcome)):
            return
        await c.close()
    outcome, c = await try_register("onetoomany", "pass-user-1")
    report("the next one is refused with resource-constraint", refused_with(outcome, "resource-constraint") and "from your address" in outcome[1], str(outcome))
    await c.close()


async def main():
    await {"off": off, "limited": limited, "rate": rate}[MODE]()


if __name__ == "__main__":
    asyncio.run(main())
    sys.exit(1 if failures else 0)
