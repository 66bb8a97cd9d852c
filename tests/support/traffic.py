#!/usr/bin/env python3
"""Traffic endpoints for tapnet's end-to-end tests, run inside sandboxes with `tapnet exec`.

  traffic.py tcp-serve ADDR PORT          accept one connection, read to EOF, print "BYTES SHA256"
  traffic.py tcp-send ADDR PORT BYTES     send BYTES of a fixed pattern, print "BYTES SHA256"
  traffic.py tcp-trickle ADDR PORT BYTES SECONDS
                                          the same, spread evenly over SECONDS (a connection
                                          that lives through a daemon restart)
  traffic.py udp-echo ADDR PORT COUNT     echo COUNT datagrams back to their sender
  traffic.py raw-send IFACE HEXFRAME...   write raw Ethernet frames on IFACE (AF_PACKET)
  traffic.py tcp-count-serve ADDR PORT N  accept N connections; each: read to EOF, reply the count
  traffic.py tcp-many ADDR PORT N BYTES   N connections, each sends BYTES, half-closes, reads the
                                          reply; prints how many got the right count
  traffic.py tcp-connect ADDR PORT        try to connect; print "ok", or the errno name, and ms
  traffic.py udp-ping ADDR PORT COUNT     send COUNT datagrams, print how many echoes came back
  traffic.py dns-serve ADDR PORT IP       a fake upstream name server: every A query gets IP
  traffic.py dns-tcp SERVER NAME          an A query over TCP; prints the rcode and addresses

Servers print "ready" on a line of its own once they listen, so a test can wait for it. Given
PORT 0 they bind a port the kernel picks and print "ready PORT": a test needs no free-port guess.
"""
import hashlib
import socket
import sys


def ready(sock, port):
    if port == "0":
        print("ready", sock.getsockname()[1], flush=True)
    else:
        print("ready", flush=True)


def pattern(n):
    block = bytes((i * 31 >> 3) & 0xFF for i in range(65536))
    full, rest = divmod(n, len(block))
    return block * full + block[:rest]


def family(addr):
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def accept_one(addr, port):
    """Listen on ADDR PORT, say "ready", and return the first connection."""
    srv = socket.socket(family(addr), socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(1)
    srv.settimeout(60)
    ready(srv, port)
    conn, _ = srv.accept()
    conn.settimeout(60)
    return conn


def print_digest_of_all(conn):
    """Read until the peer closes; print "BYTES SHA256"."""
    digest, total = hashlib.sha256(), 0
    while True:
        chunk = conn.recv(1 << 16)
        if not chunk:
            break
        digest.update(chunk)
        total += len(chunk)
    print(total, digest.hexdigest(), flush=True)


def tcp_serve(addr, port):
    print_digest_of_all(accept_one(addr, port))


def tcp_give(addr, port, count):
    """Serve one connection COUNT bytes of the pattern, close, and print "COUNT SHA256"."""
    data = pattern(int(count))
    conn = accept_one(addr, port)
    conn.sendall(data)
    conn.close()
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)


def tcp_fetch(addr, port):
    """Connect, read until the server closes, print "BYTES SHA256"."""
    conn = socket.create_connection((addr, int(port)), timeout=10)
    conn.settimeout(60)
    print_digest_of_all(conn)


def tcp_send(addr, port, count):
    data = pattern(int(count))
    conn = socket.create_connection((addr, int(port)), timeout=10)
    conn.settimeout(60)
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)


def tcp_trickle(addr, port, count, seconds):
    import time
    data = pattern(int(count))
    conn = socket.create_connection((addr, int(port)), timeout=10)
    conn.settimeout(60)
    steps = 100
    chunk = -(-len(data) // steps)
    for i in range(0, len(data), chunk):
        conn.sendall(data[i:i + chunk])
        time.sleep(float(seconds) / steps)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    print(len(data), hashlib.sha256(data).hexdigest(), flush=True)


def udp_echo(addr, port, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, int(port)))
    sock.settimeout(30)
    ready(sock, port)
    for _ in range(int(count)):
        data, peer = sock.recvfrom(65535)
        sock.sendto(data, peer)


def raw_send(iface, *frames):
    sock = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
    sock.bind((iface, 0))
    for frame in frames:
        sock.send(bytes.fromhex(frame))
    print("sent", len(frames), flush=True)


def tcp_count_serve(addr, port, count):
    srv = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, int(port)))
    srv.listen(64)
    srv.settimeout(60)
    ready(srv, port)
    for _ in range(int(count)):
        conn, _ = srv.accept()
        total = 0
        while True:
            chunk = conn.recv(1 << 16)
            if not chunk:
                break
            total += len(chunk)
        conn.sendall(str(total).encode())
        conn.close()


def tcp_many(addr, port, count, size):
    good = 0
    for _ in range(int(count)):
        conn = socket.create_connection((addr, int(port)), timeout=10)
        conn.sendall(pattern(int(size)))
        conn.shutdown(socket.SHUT_WR)
        reply = b""
        while True:
            chunk = conn.recv(64)
            if not chunk:
                break
            reply += chunk
        conn.close()
        good += reply == size.encode()
    print(good, flush=True)


def tcp_connect(addr, port):
    import errno
    import time
    start = time.monotonic()
    try:
        socket.create_connection((addr, int(port)), timeout=10).close()
        result = "ok"
    except OSError as e:
        result = errno.errorcode.get(e.errno, "timeout") if e.errno else "timeout"
    print(result, int((time.monotonic() - start) * 1000), flush=True)


def udp_ping(addr, port, count):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.settimeout(2)
    sock.connect((addr, int(port)))
    echoed = 0
    for i in range(int(count)):
        message = b"datagram %d" % i
        sock.send(message)
        try:
            echoed += sock.recv(65535) == message
        except OSError:
            pass
    print(echoed, flush=True)


def dns_query(name, ident=0x4242):
    question = b"".join(bytes([len(p)]) + p.encode() for p in name.split(".")) + b"\0"
    return ident.to_bytes(2, "big") + b"\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + question + b"\x00\x01\x00\x01"


def dns_serve(addr, port, ip):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((addr, int(port)))
    ready(sock, port)
    while True:
        query, peer = sock.recvfrom(512)
        end = 12
        while query[end] != 0:
            end += query[end] + 1
        question = query[12:end + 5]
        answer = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04" + socket.inet_aton(ip)
        sock.sendto(query[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + question + answer, peer)


def dns_tcp(server, name):
    query = dns_query(name)
    conn = socket.create_connection((server, 53), timeout=5)
    conn.sendall(len(query).to_bytes(2, "big") + query)
    length = int.from_bytes(conn.recv(2), "big")
    reply = b""
    while len(reply) < length:
        reply += conn.recv(length - len(reply))
    rcode = reply[3] & 0x0F
    answers = int.from_bytes(reply[6:8], "big")
    # Answers follow the question; each A record ends with 4 address bytes.
    addresses, at = [], len(query)
    for _ in range(answers):
        rdlength = int.from_bytes(reply[at + 10:at + 12], "big")
        addresses.append(socket.inet_ntoa(reply[at + 12:at + 12 + rdlength]))
        at += 12 + rdlength
    print(rcode, " ".join(addresses), flush=True)


def tcp_send_timed(addr, port, count):
    """Like tcp-send, but prints the bytes and the seconds from connect to the server's close."""
    import time
    data = pattern(int(count))
    start = time.monotonic()
    conn = socket.create_connection((addr, int(port)), timeout=10)
    conn.settimeout(60)
    conn.sendall(data)
    conn.shutdown(socket.SHUT_WR)
    conn.recv(1)
    print(len(data), "%.4f" % (time.monotonic() - start), flush=True)


if __name__ == "__main__":
    mode, args = sys.argv[1], sys.argv[2:]
    modes = {
        "tcp-serve": tcp_serve,
        "tcp-send": tcp_send,
        "tcp-give": tcp_give,
        "tcp-fetch": tcp_fetch,
        "tcp-trickle": tcp_trickle,
        "tcp-send-timed": tcp_send_timed,
        "udp-echo": udp_echo,
        "raw-send": raw_send,
        "tcp-count-serve": tcp_count_serve,
        "tcp-many": tcp_many,
        "tcp-connect": tcp_connect,
        "udp-ping": udp_ping,
        "dns-serve": dns_serve,
        "dns-tcp": dns_tcp,
    }
    modes[mode](*args)
