#!/usr/bin/env python3
"""HTTP file upload (XEP-0363) against a running Rookery node, with slixmpp's xep_0363
plugin (which finds the service through disco and PUTs with aiohttp). Run by the Rust
test `node_upload`.

    upload_scenario.py HOST PORT DOMAIN CA_FILE SIZE   (see scenario_lib.py)

alice@DOMAIN uploads SIZE random bytes over HTTPS; the GET URL returns the same bytes with
the content type asked for, and a byte range returns that range; a second file that would pass
alice's upload quota (the test sets it to less than 2 × SIZE) is refused with
resource-constraint, and a file over the largest size with not-acceptable. The account
alice ("pass-alice-1") must exist on DOMAIN.

The node names DOMAIN as its public host, so slots point at https://DOMAIN:<port>/…; here
DOMAIN resolves to the node's address (HOST) and its self-signed certificate (CA_FILE) is
trusted, so HTTPS is verified as a real client would.
"""
import os
import socket
import sys

# Before anything opens TLS: trust the domain's certificate (aiohttp and urllib read this
# when they make their default contexts).
os.environ["SSL_CERT_FILE"] = sys.argv[4]
_getaddrinfo = socket.getaddrinfo


def _resolve_domain(host, *args, **kwargs):
    return _getaddrinfo(sys.argv[1] if host == sys.argv[3] else host, *args, **kwargs)


socket.getaddrinfo = _resolve_domain

import aiohttp.connector  # noqa: E402 - after the patches above
import aiohttp.resolver  # noqa: E402

# aiohttp asks DNS itself when aiodns is installed; the threaded resolver uses getaddrinfo.
aiohttp.connector.DefaultResolver = aiohttp.resolver.ThreadedResolver

import asyncio
import io
import urllib.request

from scenario_lib import DOMAIN, EXTRA, Client, exit_code, jid, report
from slixmpp.exceptions import IqError

SIZE = int(EXTRA[0])


def fetch(url, headers=None):
    req = urllib.request.Request(url, headers=headers or {})
    with urllib.request.urlopen(req, timeout=10) as r:
        return r.status, r.headers, r.read()


async def main():
    alice = Client(jid("alice"), "phone", plugins=("xep_0030", "xep_0363"))
    if not report("alice logs in", await alice.login()):
        return
    upload = alice.plugin["xep_0363"]
    service = await upload.find_upload_service(DOMAIN)
    report("the upload service is found through disco", service is not None and str(service["from"]) == f"upload.{DOMAIN}", service)

    data = os.urandom(SIZE)
    try:
        url = await upload.upload_file(
            "holiday photo.jpg", size=SIZE, content_type="image/jpeg",
            input_file=io.BytesIO(data), domain=DOMAIN, timeout=30,
        )
        report("alice uploads a file of %d bytes" % SIZE, True)
    except Exception as e:  # noqa: BLE001 - the failure is the report
        report("alice uploads a file of %d bytes" % SIZE, False, repr(e))
        alice.disconnect()
        return
    report("the slot is an HTTPS URL at the domain", url.startswith(f"https://{DOMAIN}:"), url)
    status, headers, body = fetch(url)
    report("the GET URL returns the same bytes", status == 200 and body == data, (status, len(body)))
    report("with the content type of the slot", headers.get("Content-Type") == "image/jpeg", headers.get("Content-Type"))
    status, headers, body = fetch(url, {"Range": "bytes=100-199"})
    report("a byte range returns those bytes", status == 206 and body == data[100:200], (status, len(body)))

    try:
        await upload.upload_file(
            "second.bin", size=SIZE, content_type="application/octet-stream",
            input_file=io.BytesIO(data), domain=DOMAIN, timeout=30,
        )
        report("an upload over the quota is refused", False, "it was accepted")
    except IqError as e:
        report("an upload over the quota is refused", e.condition == "resource-constraint", e.condition)
    except Exception as e:  # noqa: BLE001
        report("an upload over the quota is refused", False, repr(e))

    try:
        await upload.request_slot(service["from"], "huge.iso", 10**12, timeout=10)
        report("a file over the largest size is refused", False, "a slot was given")
    except IqError as e:
        report("a file over the largest size is refused", e.condition == "not-acceptable" and "max-file-size" in str(e.iq), e.condition)
    alice.disconnect()


asyncio.run(main())
raise SystemExit(exit_code())
