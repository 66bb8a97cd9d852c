#!/usr/bin/env python3
# Why --iface ports use TPACKET_V2 rings, not V3: the wake-up latency of a lone frame. A packet
# socket with a V2 or V3 RX ring (V3: 64 KiB blocks, retire timeout TOV ms) on veth end vetb;
# 60 frames sent one at a time, 10 ms apart, on the other end veta; prints the time from the
# send to poll() saying the socket is readable. Root; its own namespace:
#
#   ip netns add tpringlat
#   ip -n tpringlat link add veta type veth peer name vetb
#   ip -n tpringlat link set veta up; ip -n tpringlat link set vetb up
#   for v in 2 3 2 3; do ip netns exec tpringlat scripts/ring-wake-latency.py $v 1; done
#   ip netns del tpringlat
#
# Figures: BENCHMARKS.md, "--iface: ring vs plain packet socket".
import mmap, select, socket, struct, sys, time
SOL_PACKET, PACKET_VERSION, PACKET_RX_RING = 263, 10, 5
ver = int(sys.argv[1]); tov = int(sys.argv[2]) if len(sys.argv) > 2 else 1
rx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW, socket.htons(0x88b5))
rx.setsockopt(SOL_PACKET, PACKET_VERSION, 2 if ver == 3 else 1)
bs, bn, fs = 1 << 16, 8, 2048
if ver == 3:
    req = struct.pack("IIIIIII", bs, bn, fs, bs * bn // fs, tov, 0, 0)
else:
    req = struct.pack("IIII", bs, bn, fs, bs * bn // fs)
rx.setsockopt(SOL_PACKET, PACKET_RX_RING, req)
m = mmap.mmap(rx.fileno(), bs * bn)
rx.bind(("vetb", 0x88b5))
tx = socket.socket(socket.AF_PACKET, socket.SOCK_RAW)
tx.bind(("veta", 0))
frame = b"\xff" * 6 + b"\x02\x00\x00\x00\x00\x01" + b"\x88\xb5" + b"x" * 50
p = select.poll(); p.register(rx, select.POLLIN)
lat = []; blk = 0; slot = 0
for i in range(60):
    t0 = time.perf_counter(); tx.send(frame)
    p.poll(1000); lat.append((time.perf_counter() - t0) * 1e3)
    if ver == 3:
        off = blk * bs
        m[off + 8:off + 12] = struct.pack("I", 0); blk = (blk + 1) % bn
    else:
        off = slot * fs
        m[off:off + 4] = struct.pack("I", 0); slot = (slot + 1) % (bs * bn // fs)
    time.sleep(0.01)
lat.sort()
print("TPACKET_V%d%s: send to readable, 60 lone frames: p50 %.3f ms, p90 %.3f ms, max %.3f ms" % (ver, " tov %d ms" % tov if ver == 3 else "", lat[30], lat[54], lat[-1]))
