#!/usr/bin/env python3
"""Hostile-client figures for surveyd-collector (run by benches/collector-hostile.sh).

idle:   one source address (127.0.0.1) opens IDLE connections and keeps
        them open, while a client from 127.0.0.2 posts a report over and
        over; prints that client's latencies and how many idle connections
        the collector shed.
memory: ROUNDS rounds of BODIES connections at once, each sending a 64 KiB
        body (max_connections_per_source raised to BODIES, so that the body
        budget is what holds them back); prints the collector's VmRSS before, after each round and its
        peak (VmHWM), and how the requests were answered.

Usage: collector-hostile.py COLLECTOR_BINARY WORKDIR
"""
import asyncio
import json
import os
import socket
import statistics
import subprocess
import sys
import threading
import time

IDLE = int(os.environ.get("IDLE", "10000"))
ROUNDS = int(os.environ.get("ROUNDS", "5"))
BODIES = int(os.environ.get("BODIES", "2000"))
BODY_BYTES = 64 * 1024
SUBMIT = "/api/stats/v1/submit"


def payload(n, size=None):
    stats = {
        "machine_id": {"desc": "", "type": "string", "value": f"{n:032x}"},
        "program_name": {"desc": "", "type": "string", "value": "kopano-server"},
        "usercnt_active": {"desc": "", "type": "int", "mode": "gauge", "value": 1},
    }
    body = json.dumps({"version": 2, "stats": stats}).encode()
    if size:
        body = body.ljust(size, b" ")
    return body


def request(body):
    return (
        f"POST {SUBMIT} HTTP/1.1\r\nHost: bench\r\nContent-Type: application/json\r\n"
        f"X-Kopano-Stats-Request: 1\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    ).encode() + body


def start(binary, workdir, name, extra=""):
    config = os.path.join(workdir, f"{name}.toml")
    with open(config, "w") as f:
        f.write(
            f'listen = "127.0.0.1:0"\ndatabase = "{workdir}/{name}.db"\n'
            f'receipt_key = "{workdir}/{name}-receipt-key.pk8"\n{extra}'
            "[rate_limit]\nenabled = false\n"
        )
    log = open(os.path.join(workdir, f"{name}.log"), "w+")
    proc = subprocess.Popen([binary, "-c", config, "serve"], stderr=log, stdout=log)
    deadline = time.time() + 20
    while time.time() < deadline:
        log.seek(0)
        for line in log:
            if "listening on " in line:
                host, port = line.split("listening on ")[1].split()[0].rsplit(":", 1)
                return proc, (host, int(port)), log
        time.sleep(0.05)
    proc.kill()
    sys.exit(f"{name}: collector did not start")


def status_of(proc):
    fields = {}
    with open(f"/proc/{proc.pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return fields


def mib(kb_field):
    return int(kb_field.split()[0]) / 1024


def post_from(source, addr, n):
    t0 = time.perf_counter()
    s = socket.socket()
    s.settimeout(10)
    s.bind((source, 0))
    s.connect(addr)
    s.sendall(request(payload(n)))
    answer = b""
    while True:
        chunk = s.recv(4096)
        if not chunk:
            break
        answer += chunk
    s.close()
    return answer.split(b" ", 2)[1].decode(), (time.perf_counter() - t0) * 1000


def idle(binary, workdir):
    proc, addr, log = start(binary, workdir, "idle")
    latencies, statuses, stop = [], [], threading.Event()

    def other_client():
        n = 0
        while not stop.is_set():
            status, ms = post_from("127.0.0.2", addr, 10_000_000 + n)
            statuses.append(status)
            latencies.append(ms)
            n += 1
            time.sleep(0.02)

    t = threading.Thread(target=other_client)
    t.start()
    conns, t0 = [], time.perf_counter()
    for _ in range(IDLE):
        s = socket.socket()
        s.connect(addr)
        conns.append(s)
    opened = time.perf_counter() - t0
    during = list(latencies)
    time.sleep(2)  # keep measuring with every idle connection open
    stop.set()
    t.join()
    after = latencies[len(during):]
    shed = 0
    for s in conns:
        s.setblocking(False)
        try:
            if s.recv(64).startswith(b"HTTP/1.1 503"):
                shed += 1
        except BlockingIOError:
            pass
    for s in conns:
        s.close()
    rss = mib(status_of(proc)["VmRSS"])
    proc.terminate()
    proc.wait()
    print(f"idle: {IDLE} connections from 127.0.0.1 opened in {opened:.1f} s; "
          f"{shed} shed with 503, {IDLE - shed} held")
    print(f"idle: client from 127.0.0.2 answered {sorted(set(statuses))}; collector VmRSS {rss:.1f} MiB")
    for what, ms in [("while the idle connections were being opened", during),
                     ("with all of them open", after)]:
        ms = sorted(ms)
        print(f"idle:   {what}: {len(ms)} requests, latency median {statistics.median(ms):.1f} ms, "
              f"p99 {ms[int(len(ms) * 0.99)]:.1f} ms, max {ms[-1]:.1f} ms")


async def upload(addr, body):
    try:
        reader, writer = await asyncio.open_connection(*addr)
        writer.write(request(body))
        await writer.drain()
        head = await asyncio.wait_for(reader.readline(), 60)
        writer.close()
        return head.split(b" ")[1].decode() if head else "closed"
    except (ConnectionResetError, BrokenPipeError):
        return "reset"


async def burst(addr, round_no):
    bodies = [payload(round_no * BODIES + i, BODY_BYTES) for i in range(BODIES)]
    results = await asyncio.gather(*(upload(addr, b) for b in bodies))
    counts = {}
    for r in results:
        counts[r] = counts.get(r, 0) + 1
    return counts


def memory(binary, workdir):
    # All bodies come from one address: the per-source cap is raised so
    # that the body budget, not the connection cap, is what holds.
    proc, addr, log = start(binary, workdir, "memory",
                            f"max_connections_per_source = {BODIES}\n")
    print(f"memory: VmRSS at start {mib(status_of(proc)['VmRSS']):.1f} MiB")
    for r in range(ROUNDS):
        counts = asyncio.run(burst(addr, r))
        time.sleep(1)  # let the collector settle (and trim) before reading RSS
        st = status_of(proc)
        print(f"memory: round {r + 1}: {BODIES} x 64 KiB bodies answered {counts}; "
              f"VmRSS {mib(st['VmRSS']):.1f} MiB, peak VmHWM {mib(st['VmHWM']):.1f} MiB")
    proc.terminate()
    proc.wait()


if __name__ == "__main__":
    binary, workdir = sys.argv[1], sys.argv[2]
    what = os.environ.get("WHAT", "idle memory").split()
    if "idle" in what:
        idle(binary, workdir)
    if "memory" in what:
        memory(binary, workdir)
