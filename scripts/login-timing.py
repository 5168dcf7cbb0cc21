#!/usr/bin/env python3
"""Measures how long the panel takes to refuse a log-in with a wrong password and with an
unknown email. The two must cost the same (both run argon2id), so timing cannot tell which
addresses have accounts. Starts its own panel (SQLite, temp folder, raised log-in limits)
and prints the medians.

    cargo build --release -p rookery
    python3 scripts/login-timing.py [target/release/rookery] [rounds]
"""
import http.cookiejar, os, re, socket, statistics, subprocess, sys, tempfile, time, urllib.error, urllib.parse, urllib.request

binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else "target/release/rookery")
rounds = int(sys.argv[2]) if len(sys.argv) > 2 else 40

with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
base = f"http://127.0.0.1:{port}"
data = tempfile.mkdtemp(prefix="rookery-timing-")
env = {k: v for k, v in os.environ.items() if not k.startswith("ROOKERY_")}
env.update(ROOKERY_LISTEN=f"127.0.0.1:{port}", ROOKERY_DATA_DIR=data, ROOKERY_PUBLIC_URL=base,
           ROOKERY_LOGIN_LIMITS__PER_ACCOUNT="100000", ROOKERY_LOGIN_LIMITS__PER_IP="100000", RUST_LOG="warn")
panel = subprocess.Popen([binary, "serve"], cwd=data, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


class NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args):
        return None


opener = urllib.request.build_opener(urllib.request.HTTPCookieProcessor(http.cookiejar.CookieJar()), NoRedirect)


def request(path, form=None):
    body = urllib.parse.urlencode(form).encode() if form else None
    try:
        with opener.open(base + path, data=body) as r:
            return r.status, r.read().decode()
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode()


try:
    for _ in range(100):
        try:
            if request("/healthz")[0] == 200:
                break
        except OSError:
            time.sleep(0.1)
    csrf = re.search(r'name="csrf" value="([0-9a-f]+)"', request("/login")[1]).group(1)
    email = "timing@example.com"
    status, _ = request("/signup", {"email": email, "password": "correct-horse-battery-staple-42", "org_name": "", "csrf": csrf})
    assert status == 303, status
    request("/logout", {"csrf": csrf})

    def attempt(address):
        started = time.perf_counter()
        status, body = request("/login", {"email": address, "password": "not-the-password-at-all", "csrf": csrf})
        elapsed = time.perf_counter() - started
        assert status == 401 and "Incorrect email or password." in body, status
        return elapsed

    wrong, unknown = [], []
    for i in range(rounds):  # interleaved, so drift in machine load hits both alike
        wrong.append(attempt(email))
        unknown.append(attempt(f"nobody-{i}@example.com"))
    mw, mu = statistics.median(wrong), statistics.median(unknown)
    print(f"rounds: {rounds}")
    print(f"wrong password: median {mw * 1000:.1f} ms (p10 {sorted(wrong)[rounds // 10] * 1000:.1f}, p90 {sorted(wrong)[rounds * 9 // 10] * 1000:.1f})")
    print(f"unknown email:  median {mu * 1000:.1f} ms (p10 {sorted(unknown)[rounds // 10] * 1000:.1f}, p90 {sorted(unknown)[rounds * 9 // 10] * 1000:.1f})")
    print(f"difference of medians: {abs(mw - mu) * 1000:.1f} ms ({abs(mw - mu) / max(mw, mu) * 100:.1f} %)")
finally:
    panel.terminate()
    panel.wait(timeout=20)
