"""BOSH (XEP-0124, XEP-0206) on the node's HTTP port, scripted with urllib: alice opens a
session at /http-bind, authenticates (SASL PLAIN), restarts the stream, binds, and chats
with bob, a slixmpp client on c2s; then terminates. A request with a wrong rid ends its
session with item-not-found.

Arguments: HOST PORT DOMAIN CA_FILE HTTP_PORT
"""
import asyncio
import base64
import random
import re
import urllib.request

from scenario_lib import DOMAIN, EXTRA, HOST, Client, exit_code, jid, password, report

URL = f"http://{HOST}:{EXTRA[0]}/http-bind"
NS = "xmlns='http://jabber.org/protocol/httpbind'"
FROM_BOSH = "Hello from BOSH"
REPLY = "Hello back, BOSH"


def post(body):
    request = urllib.request.Request(
        URL, data=body.encode(), headers={"Content-Type": "text/xml; charset=utf-8"}
    )
    with urllib.request.urlopen(request, timeout=30) as answer:
        return answer.read().decode()


class Bosh:
    def __init__(self):
        self.rid = random.randint(1_000_000, 9_000_000)
        self.sid = None

    def next_rid(self):
        self.rid += 1
        return self.rid

    def create(self):
        out = post(
            f"<body {NS} xmlns:xmpp='urn:xmpp:xbosh' rid='{self.rid}' to='{DOMAIN}' "
            "wait='5' hold='1' ver='1.6' xmpp:version='1.0'/>"
        )
        self.sid = re.search(r"sid='([^']+)'", out).group(1)
        return out

    def send(self, payload="", extra=""):
        return post(
            f"<body {NS} xmlns:xmpp='urn:xmpp:xbosh' rid='{self.next_rid()}' "
            f"sid='{self.sid}'{extra}>{payload}</body>"
        )

    def until(self, what, payload="", tries=6):
        """Sends payload, then polls until a response contains what; all responses."""
        seen = self.send(payload)
        for _ in range(tries):
            if what in seen:
                break
            seen += self.send()
        return seen


class Bob(Client):
    def __init__(self):
        super().__init__(jid("bob"), "slixmpp")
        self.received = []
        self.add_event_handler("message", self._on_message)

    async def session_started(self):
        await self.get_roster()
        self.send_presence()

    def _on_message(self, msg):
        if msg["body"]:
            self.received.append(msg)
            self.arrived.set()


async def main():
    bob = Bob()
    if not report("bob logs in over TCP", await bob.login()):
        return
    alice = Bosh()
    created = await asyncio.to_thread(alice.create)
    report(
        "a BOSH session starts with its sid and the stream features",
        alice.sid and "xmpp:version='1.0'" in created and "<mechanism>PLAIN</mechanism>" in created,
        created,
    )
    token = base64.b64encode(f"\0alice\0{password('alice')}".encode()).decode()
    auth = await asyncio.to_thread(
        alice.until,
        "success",
        f"<auth xmlns='urn:ietf:params:xml:ns:xmpp-sasl' mechanism='PLAIN'>{token}</auth>",
    )
    report("alice authenticates over BOSH", "<success" in auth, auth)
    restarted = await asyncio.to_thread(
        alice.send, "", f" xmpp:restart='true' to='{DOMAIN}'"
    )
    report("the restarted stream offers bind", "urn:ietf:params:xml:ns:xmpp-bind" in restarted, restarted)
    bound = await asyncio.to_thread(
        alice.until,
        "<jid>",
        "<iq xmlns='jabber:client' type='set' id='b1'><bind xmlns='urn:ietf:params:xml:ns:xmpp-bind'>"
        "<resource>bosh</resource></bind></iq>",
    )
    report("alice binds a resource", f"<jid>alice@{DOMAIN}/bosh</jid>" in bound, bound)
    await asyncio.to_thread(
        alice.send,
        "<presence xmlns='jabber:client'/>"
        f"<message xmlns='jabber:client' type='chat' to='bob@{DOMAIN}'><body>{FROM_BOSH}</body></message>",
    )
    got = await bob.wait_for(lambda: any(m["body"] == FROM_BOSH for m in bob.received), 15)
    report("bob gets alice's message sent over BOSH", got, [m["body"] for m in bob.received])
    bob.send_message(mto=f"alice@{DOMAIN}/bosh", mbody=REPLY, mtype="chat")
    answer = await asyncio.to_thread(alice.until, REPLY)
    report("alice receives bob's answer in a BOSH response", REPLY in answer, answer)
    ended = await asyncio.to_thread(alice.send, "<presence xmlns='jabber:client' type='unavailable'/>", " type='terminate'")
    report("terminate ends the session", "type='terminate'" in ended, ended)
    gone = await asyncio.to_thread(alice.send)
    report("the ended session is unknown", "item-not-found" in gone or "type='terminate'" in gone, gone)

    other = Bosh()
    await asyncio.to_thread(other.create)
    other.rid += 5
    wrong = await asyncio.to_thread(other.send)
    report("a wrong rid ends the session with item-not-found", "item-not-found" in wrong, wrong)
    bob.disconnect()


asyncio.run(main())
raise SystemExit(exit_code())
