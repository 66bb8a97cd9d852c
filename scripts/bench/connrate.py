#!/usr/bin/env python3
"""TCP connection rate for scripts/bench.sh (standard library only).

  serve ADDR PORTFILE      listen on ADDR (IPv4 or IPv6), a port the kernel picks (written to PORTFILE); for
                           every connection: read 1 byte, answer 1 byte, close (the server
                           closes first, so TIME_WAIT stays on the server's side)
  client ADDR PORT SECS    for SECS seconds, one connection after the other: connect, send
                           1 byte, wait for the answer, close. Prints
                           "CONNS_PER_S COMPLETED FAILED MEAN_MS P99_MS"

A connection counts only when the server's byte came back, so a NAT that answers the SYN
itself (before its own connection to the server exists) is still measured end to end.
"""

import math
import os
import signal
import socket
import sys
import time


def family(addr):
    """AF_INET6 for an IPv6 address (the nat6 cases), AF_INET otherwise."""
    return socket.AF_INET6 if ":" in addr else socket.AF_INET


def serve(addr, portfile):
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    ls = socket.socket(family(addr), socket.SOCK_STREAM)
    ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    ls.bind((addr, 0))
    ls.listen(1024)
    with open(portfile + ".tmp", "w") as f:
        f.write(f"{ls.getsockname()[1]}\n")
    os.rename(portfile + ".tmp", portfile)
    while True:
        try:
            c, _ = ls.accept()
        except OSError:
            continue
        try:
            c.settimeout(5)
            if c.recv(1):
                c.sendall(b"y")
        except OSError:
            pass
        finally:
            c.close()


def client(addr, port, secs):
    port, secs = int(port), float(secs)
    done = failed = 0
    lat = []
    start = time.monotonic()
    deadline = start + secs
    while True:
        t0 = time.monotonic()
        if t0 >= deadline:
            break
        s = socket.socket(family(addr), socket.SOCK_STREAM)
        s.settimeout(3)
        try:
            s.connect((addr, port))
            s.sendall(b"x")
            if s.recv(1) != b"y":
                raise OSError("no answer")
            done += 1
            lat.append(time.monotonic() - t0)
        except OSError:
            failed += 1
        finally:
            s.close()
    wall = time.monotonic() - start
    if not done:
        print(f"0 0 {failed} 0 0")
        sys.exit(1)
    lat.sort()
    p99 = lat[max(1, math.ceil(0.99 * len(lat))) - 1]
    print(f"{done / wall:.1f} {done} {failed} {1000 * sum(lat) / len(lat):.3f} {1000 * p99:.3f}")


def main():
    if len(sys.argv) >= 4 and sys.argv[1] == "serve":
        serve(sys.argv[2], sys.argv[3])
    elif len(sys.argv) >= 5 and sys.argv[1] == "client":
        client(*sys.argv[2:5])
    else:
        print(__doc__, file=sys.stderr)
        sys.exit(2)


if __name__ == "__main__":
    main()
