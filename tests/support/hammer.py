#!/usr/bin/env python3
"""Load generators and probes for tapnet's hardening tests and RELIABILITY.md, run inside
sandboxes with `tapnet exec` (root there: raw sockets allowed). Results go to stdout, one line.

  hammer.py mac-flood IFACE COUNT [SECS]     COUNT broadcast frames (ethertype 0x88b5), each from
                                             a new random unicast source MAC, repeated until SECS
                                             have passed; prints "FRAMES SECONDS"
  hammer.py raw-count IFACE ETHERTYPE SECS   count frames of ETHERTYPE (hex) arriving for SECS;
                                             prints "ready" first, then the count
  hammer.py ping ADDR COUNT INTERVAL         ICMP echo (raw socket); prints "SENT RECEIVED RTT_MS_AVG"
  hammer.py udp-burst ADDR PORT COUNT        COUNT datagrams, each from a new socket (a new
                                             source port), closed at once; prints "COUNT"
  hammer.py dns-burst SERVER COUNT WAIT      COUNT A queries for a local name, each from a new
                                             socket, all sent before any reply is read; waits
                                             WAIT seconds for replies; prints "SENT ANSWERED"
  hammer.py tcp-hold ADDR PORT COUNT SECS    open up to COUNT connections and hold them SECS;
                                             prints "OPENED REFUSED"
  hammer.py dns-rate SERVER RATE SECS        RATE queries a second for SECS, each from a new
                                             socket closed at once (a resolver with a new port per
                                             query); prints "SENT"
  hammer.py tcp-stream ADDR PORT SECS        send as fast as possible for SECS; prints "BYTES SECONDS"
  hammer.py tcp-sink ADDR PORT               accept one connection, read to EOF; prints "BYTES"
"""
import errno
import os
import select
import socket
import struct
import sys
import time


def send_raw(sock, frame):
    """Send one frame on a packet socket. A TAP with the noqueue qdisc (tapnet's) refuses a
    frame its full queue cannot take with ENOBUFS, as a veth does, instead of a qdisc dropping it
    unseen: wait a moment and send it again, so that every frame of the flood is offered."""
    while True:
        try:
            sock.send(frame)
            return
        except BlockingIOError:
            return
        except OSError as e:
            if e.errno != errno.ENOBUFS:
                raise
            time.sleep(0.0005)


def mac_flood(iface, count, secs="0"):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    frame = bytearray(b"\xff" * 6 + b"\x02" + b"\x00" * 5 + b"\x88\xb5" + b"\xab" * 46)
    seed = int.from_bytes(os.urandom(4), "big")
    count, secs = int(count), float(secs)
    start = time.monotonic()
    sent = 0
    while True:
        for i in range(count):
            # Locally administered unicast (0x02 first byte), the rest a counter mixed with a
            # seed: COUNT distinct source MACs.
            frame[8:12] = ((i * 2654435761 + seed) & 0xFFFFFFFF).to_bytes(4, "big")
            frame[7] = (i >> 24) & 0xFF
            send_raw(sock, frame)
        sent += count
        if time.monotonic() - start >= secs:
            break
    print(sent, round(time.monotonic() - start, 2), flush=True)


def raw_count(iface, ethertype, secs):
    proto = int(ethertype, 16)
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(proto))
    sock.bind((iface, proto))
    print("ready", flush=True)
    deadline = time.monotonic() + float(secs)
    seen = 0
    while True:
        left = deadline - time.monotonic()
        if left <= 0:
            break
        ready, _, _ = select.select([sock], [], [], left)
        if ready:
            sock.recv(65535)
            seen += 1
    print(seen, flush=True)


def checksum(data):
    if len(data) % 2:
        data += b"\0"
    total = sum(struct.unpack("!%dH" % (len(data) // 2), data))
    total = (total >> 16) + (total & 0xFFFF)
    total += total >> 16
    return ~total & 0xFFFF


def ping(addr, count, interval):
    sock = socket.socket(socket.AF_INET, socket.SOCK_RAW, socket.IPPROTO_ICMP)
    ident = os.getpid() & 0xFFFF
    received, rtts = 0, []
    for seq in range(int(count)):
        body = struct.pack("!BBHHH", 8, 0, 0, ident, seq) + b"tapnet-hammer"
        body = body[:2] + struct.pack("!H", checksum(body)) + body[4:]
        sent_at = time.monotonic()
        sock.sendto(body, (addr, 0))
        deadline = sent_at + max(float(interval), 1.0)
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([sock], [], [], left)
            if not ready:
                break
            packet = sock.recv(65535)
            icmp = packet[(packet[0] & 0x0F) * 4:]
            if icmp[0] == 0 and struct.unpack("!HH", icmp[4:8]) == (ident, seq):
                received += 1
                rtts.append((time.monotonic() - sent_at) * 1000)
                break
        rest = float(interval) - (time.monotonic() - sent_at)
        if rest > 0:
            time.sleep(rest)
    avg = round(sum(rtts) / len(rtts), 3) if rtts else 0
    print(count, received, avg, flush=True)


def udp_burst(addr, port, count):
    for i in range(int(count)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        try:
            sock.sendto(b"burst %d" % i, (addr, int(port)))
        except OSError:
            pass
        sock.close()
    print(count, flush=True)


def dns_query(name, ident):
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return ident.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question + b"\x00\x01\x00\x01"


def raise_fd_limit():
    import resource
    _, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))


def dns_burst(server, count, wait, name="hammer-target"):
    raise_fd_limit()
    socks = []
    for i in range(int(count)):
        sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sock.setblocking(False)
        try:
            sock.sendto(dns_query(name, i & 0xFFFF), (server, 53))
            socks.append(sock)
        except OSError:
            sock.close()
    answered = 0
    poller = select.poll()
    by_fd = {}
    for sock in socks:
        poller.register(sock, select.POLLIN)
        by_fd[sock.fileno()] = sock
    deadline = time.monotonic() + float(wait)
    while by_fd and time.monotonic() < deadline:
        for fd, _ in poller.poll(50):
            sock = by_fd.pop(fd, None)
            if sock is None:
                continue
            poller.unregister(fd)
            try:
                sock.recv(65535)
                answered += 1
            except OSError:
                pass
    for sock in socks:
        sock.close()
    print(len(socks), answered, flush=True)


def tcp_hold(addr, port, count, secs):
    raise_fd_limit()
    held, refused = [], 0
    for _ in range(int(count)):
        try:
            held.append(socket.create_connection((addr, int(port)), timeout=3))
        except OSError:
            refused += 1
    print(len(held), refused, flush=True)
    time.sleep(float(secs))


def dns_rate(server, rate, secs, name="hammer-target"):
    rate, secs = int(rate), float(secs)
    start = time.monotonic()
    sent = 0
    while True:
        elapsed = time.monotonic() - start
        if elapsed >= secs:
            break
        due = int(elapsed * rate) + 1
        while sent < due:
            sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                sock.sendto(dns_query(name, sent & 0xFFFF), (server, 53))
            except OSError:
                pass
            sock.close()
            sent += 1
        time.sleep(0.001)
    print(sent, flush=True)


def tcp_stream(addr, port, secs):
    conn = socket.create_connection((addr, int(port)), timeout=10)
    block = b"\x5a" * (1 << 16)
    total, start = 0, time.monotonic()
    while time.monotonic() - start < float(secs):
        conn.sendall(block)
        total += len(block)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    print(total, round(time.monotonic() - start, 2), flush=True)


def tcp_sink(addr, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(1)
    print("ready", flush=True)
    conn, _ = srv.accept()
    total = 0
    while True:
        chunk = conn.recv(1 << 20)
        if not chunk:
            break
        total += len(chunk)
    conn.close()
    print(total, flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    modes = {
        "mac-flood": mac_flood,
        "raw-count": raw_count,
        "ping": ping,
        "udp-burst": udp_burst,
        "dns-burst": dns_burst,
        "tcp-hold": tcp_hold,
        "dns-rate": dns_rate,
        "tcp-stream": tcp_stream,
        "tcp-sink": tcp_sink,
    }
    modes[mode](*args)
