#!/usr/bin/env python3
"""Traffic endpoints for tapnet's end-to-end tests, run inside sandboxes with `tapnet exec`.

  traffic.py tcp-serve ADDR PORT          accept one connection, read to EOF, print "BYTES SHA256"
  traffic.py tcp-send ADDR PORT BYTES     send BYTES of a fixed pattern, print "BYTES SHA256"
  traffic.py udp-echo ADDR PORT COUNT     echo COUNT datagrams back to their sender
  traffic.py raw-send IFACE HEXFRAME...   write raw Ethernet frames on IFACE (AF_PACKET)

Servers print "ready" on a line of its own once they listen, so a test can wait for it.
"""
import hashlib
import socket
import sys


def pattern(n):
    block = bytes((i * 31 >> 3) & 0xFF for i in range(65536))
    full, rest = divmod(n, len(block))
    return block * full + block[:rest]


def tcp_serve(addr, port):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(1)
    srv.settimeout(60)
    print("ready", flush=True)
    conn, _ = srv.accept()
    conn.settimeout(60)
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)


def tcp_send(addr, port, count):
    data = pattern(int(count))
    conn = socket.create_connection((addr, int(port)), timeout=10)
    conn.settimeout(60)
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)


def udp_echo(addr, port, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, int(port)))
    sock.settimeout(30)
    print("ready", flush=True)
    for _ in range(int(count)):
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def raw_send(iface, *frames):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    for frame in frames:
        sock.send(bytes.fromhex(frame))
    print("sent", len(frames), flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    {"tcp-serve": tcp_serve, "tcp-send": tcp_send, "udp-echo": udp_echo, "raw-send": raw_send}[mode](*args)
