#!/usr/bin/env python3
"""Slow-body flood against a local broker, with probe issuances meanwhile.

Starts `attestation-broker dev` (development issuer and fake STS, loopback
only, default [server] limits), opens FLOOD connections that each send a
complete `POST /issue` head declaring a 200-byte body and then trickle that
body one byte a second (a connection that gets an answer or is closed is
opened again, as a persistent attacker would), and once all are open sends
PROBES real issuances one after another, each on its own connection with a
freshly minted token. Prints how many probes got 200 and the other statuses.

    scripts/slow-body-flood.py [BROKER_BINARY]    # default target/debug/attestation-broker
    FLOOD=1100 PROBES=20 scripts/slow-body-flood.py target/release/attestation-broker

Python standard library only; touches loopback only. Exit status 0 when every
probe got 200, 1 otherwise.
"""

import http.client
import json
import os
import re
import resource
import selectors
import socket
import subprocess
import sys
import threading
import time
import urllib.request

FLOOD = int(os.environ.get("FLOOD", "1100"))
PROBES = int(os.environ.get("PROBES", "20"))
PROBE_INTERVAL = float(os.environ.get("PROBE_INTERVAL", "0.25"))
HEAD = (b"POST /issue HTTP/1.1\r\nHost: broker\r\nContent-Type: application/json\r\n"
        b"Content-Length: 200\r\n\r\n")


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def start_broker(binary):
    listen, admin = free_port(), free_port()
    proc = subprocess.Popen(
        [binary, "dev", "--listen", f"127.0.0.1:{listen}", "--admin-listen", f"127.0.0.1:{admin}"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    mint = None
    deadline = time.monotonic() + 60
    while mint is None and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        found = re.search(r"curl -s '(http://[^']+)'", line)
        if found and "mint a token" in line:
            mint = found.group(1)
    if mint is None:
        proc.kill()
        sys.exit("the broker did not announce itself")
    threading.Thread(target=lambda: proc.stdout.read(), daemon=True).start()
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{admin}/readyz", timeout=2) as resp:
                if resp.status == 200:
                    return proc, listen, mint
        except OSError:
            pass
        time.sleep(0.1)
    proc.kill()
    sys.exit("the broker never became ready")


class Flood:
    """FLOOD slow senders, kept open (reopened when answered or closed)."""

    def __init__(self, port, count):
        self.port, self.count = port, count
        self.selector = selectors.DefaultSelector()
        self.sent = {}
        self.reopened = 0
        self.stop = threading.Event()
        for _ in range(count):
            self.open()

    def open(self):
        sock = socket.create_connection(("127.0.0.1", self.port), timeout=5)
        sock.sendall(HEAD + b"{")
        sock.setblocking(False)
        self.sent[sock] = 1
        self.selector.register(sock, selectors.EVENT_READ)

    def replace(self, sock):
        self.selector.unregister(sock)
        self.sent.pop(sock, None)
        sock.close()
        self.reopened += 1
        try:
            self.open()
        except OSError:
            pass

    def run(self):
        next_trickle = time.monotonic() + 1
        while not self.stop.is_set():
            for key, _ in self.selector.select(timeout=0.1):
                self.replace(key.fileobj)  # answered (503/408) or closed
            if time.monotonic() >= next_trickle:
                next_trickle += 1
                for sock in list(self.sent):
                    if self.sent[sock] >= 199:
                        continue  # never complete the body
                    try:
                        sock.send(b" ")
                        self.sent[sock] += 1
                    except OSError:
                        self.replace(sock)

    def close(self, thread):
        self.stop.set()
        thread.join(timeout=10)
        for sock in list(self.sent):
            sock.close()


def probe(port, mint):
    with urllib.request.urlopen(mint, timeout=10) as resp:
        token = json.load(resp)["value"]
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/issue", body=b"",
                     headers={"Authorization": f"Bearer {token}", "Content-Length": "0"})
        return conn.getresponse().status
    finally:
        conn.close()


def main():
    binary = sys.argv[1] if len(sys.argv) > 1 else "target/debug/attestation-broker"
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * FLOOD + 1024)), hard))
    proc, port, mint = start_broker(binary)
    flood = thread = None
    try:
        started = time.monotonic()
        flood = Flood(port, FLOOD)
        thread = threading.Thread(target=flood.run, daemon=True)
        thread.start()
        print(f"flood: {FLOOD} slow connections open after {time.monotonic() - started:.1f} s")
        time.sleep(0.5)
        statuses = {}
        for _ in range(PROBES):
            try:
                status = probe(port, mint)
            except OSError as err:
                status = f"error: {err}"
            statuses[status] = statuses.get(status, 0) + 1
            time.sleep(PROBE_INTERVAL)
        print(f"flood still open: {len(flood.sent)} connections; reopened meanwhile: {flood.reopened}")
        ok = statuses.get(200, 0)
        print(f"probes: {ok}/{PROBES} got 200; all answers: {statuses}")
        return 0 if ok == PROBES else 1
    finally:
        if flood:
            flood.close(thread)
        proc.terminate()
        proc.wait(timeout=30)


if __name__ == "__main__":
    sys.exit(main())
