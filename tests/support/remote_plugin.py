#!/usr/bin/env python3
"""An example network plugin for tapnet's remote driver: libnetwork's remote protocol (JSON over
HTTP/1.1 on a unix socket). It records every call as a JSON line in LOG and keeps the networks
and endpoints it was told about, so tests can check what tapnet sent and that nothing is left
half-made. At Join it makes a TAP (`rp` + 8 hex digits) in its own namespace and holds it;
tapnet moves the link into the sandbox. CreateEndpoint answers a MAC of the plugin's own
(02:70:6c:00:00:NN, which tapnet must use); EndpointOperInfo tells the TAP's name. A relay thread floods every frame to the network's
other TAPs: a tiny hub. Leave closes the TAP, which removes it wherever it is.

usage: remote_plugin.py SOCKET LOG [--fail CALL] [--hang CALL] [--garbage CALL] [--not-network]

--fail CALL     answer CALL (e.g. NetworkDriver.CreateNetwork) with {"Err": "refused CALL"}
--hang CALL     never answer CALL (the connection stays open)
--garbage CALL  answer CALL with bytes that are not JSON
--not-network   implement VolumeDriver instead of NetworkDriver
"""
import fcntl
import json
import os
import select
import struct
import socketserver
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler

args = sys.argv[1:]
SOCKET, LOG = args[0], args[1]
OPTS = {}
i = 2
while i < len(args):
    if args[i] == "--not-network":
        OPTS["not_network"] = True
        i += 1
    else:
        OPTS[args[i].lstrip("-")] = args[i + 1]
        i += 2

LOCK = threading.Lock()
NETWORKS = {}
ENDPOINTS = {}  # EndpointID -> {"network": NetworkID, "tap": fd or None, "name": TAP name}
NEXT_MAC = [1]
TUNSETIFF = 0x400454CA
IFF_TAP, IFF_NO_PI = 0x0002, 0x1000


def open_tap(name):
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_NONBLOCK)
    fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH", name.encode(), IFF_TAP | IFF_NO_PI))
    return fd


def relay():
    """Flood each frame from a TAP to the other TAPs of its network."""
    while True:
        with LOCK:
            taps = {e["tap"]: e["network"] for e in ENDPOINTS.values() if e["tap"] is not None}
        if not taps:
            time.sleep(0.05)
            continue
        try:
            ready, _, _ = select.select(list(taps), [], [], 0.05)
        except OSError:
            continue
        for fd in ready:
            try:
                frame = os.read(fd, 65536)
            except OSError:
                continue
            for other, net in taps.items():
                if other != fd and net == taps[fd]:
                    try:
                        os.write(other, frame)
                    except OSError:
                        pass


def log(entry):
    with LOCK, open(LOG, "a") as f:
        f.write(json.dumps(entry) + "\n")


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *a):
        pass

    def answer(self, status, body):
        data = body if isinstance(body, bytes) else json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/vnd.docker.plugins.v1.2+json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(data)

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length) if length else b""
        try:
            body = json.loads(raw) if raw.strip() else {}
        except ValueError:
            body = {"unparsable": raw.decode(errors="replace")}
        call = self.path.lstrip("/")
        log({"call": call, "body": body})
        if OPTS.get("hang") == call:
            time.sleep(3600)
            return
        if OPTS.get("garbage") == call:
            return self.answer(200, b"this is {not json")
        if OPTS.get("fail") == call:
            return self.answer(200, {"Err": "refused " + call})
        if call == "Plugin.Activate":
            kind = "VolumeDriver" if OPTS.get("not_network") else "NetworkDriver"
            return self.answer(200, {"Implements": [kind]})
        if call == "NetworkDriver.GetCapabilities":
            return self.answer(200, {"Scope": "local", "ConnectivityScope": "local"})
        if call == "NetworkDriver.CreateNetwork":
            with LOCK:
                NETWORKS[body["NetworkID"]] = body
            return self.answer(200, {})
        if call == "NetworkDriver.CreateEndpoint":
            with LOCK:
                if body.get("NetworkID") not in NETWORKS:
                    return self.answer(200, {"Err": "no such network"})
                ENDPOINTS[body["EndpointID"]] = {"network": body["NetworkID"], "tap": None}
                mac = "02:70:6c:00:00:%02x" % (NEXT_MAC[0] % 256)
                NEXT_MAC[0] += 1
            return self.answer(200, {"Interface": {"MacAddress": mac}})
        if call == "NetworkDriver.EndpointOperInfo":
            with LOCK:
                ep = ENDPOINTS.get(body.get("EndpointID"))
                if ep is None:
                    return self.answer(200, {"Err": "no such endpoint"})
                return self.answer(200, {"Value": {"tap": ep.get("name"), "joined": ep["tap"] is not None}})
        if call == "NetworkDriver.Join":
            with LOCK:
                ep = ENDPOINTS.get(body.get("EndpointID"))
                if ep is None:
                    return self.answer(200, {"Err": "no such endpoint"})
                name = "rp" + os.urandom(4).hex()
                ep["tap"] = open_tap(name)
                ep["name"] = name
            return self.answer(
                200,
                {"InterfaceName": {"SrcName": name, "DstPrefix": "eth"}, "StaticRoutes": []},
            )
        if call in ("NetworkDriver.ProgramExternalConnectivity",
                    "NetworkDriver.RevokeExternalConnectivity"):
            with LOCK:
                if body.get("EndpointID") not in ENDPOINTS:
                    return self.answer(200, {"Err": "no such endpoint"})
            return self.answer(200, {})
        if call == "NetworkDriver.Leave":
            with LOCK:
                ep = ENDPOINTS.get(body.get("EndpointID"))
                if ep is None:
                    return self.answer(200, {"Err": "no such endpoint"})
                if ep["tap"] is not None:
                    os.close(ep["tap"])
                    ep["tap"] = None
            return self.answer(200, {})
        if call == "NetworkDriver.DeleteEndpoint":
            with LOCK:
                ep = ENDPOINTS.pop(body.get("EndpointID"), None)
                if ep is None:
                    return self.answer(200, {"Err": "no such endpoint"})
                if ep["tap"] is not None:
                    os.close(ep["tap"])
            return self.answer(200, {})
        if call == "NetworkDriver.DeleteNetwork":
            with LOCK:
                if NETWORKS.pop(body.get("NetworkID"), None) is None:
                    return self.answer(200, {"Err": "no such network"})
            return self.answer(200, {})
        return self.answer(404, {"Err": "unknown call " + call})


class Server(socketserver.ThreadingMixIn, socketserver.UnixStreamServer):
    daemon_threads = True


if __name__ == "__main__":
    try:
        os.unlink(SOCKET)
    except FileNotFoundError:
        pass
    threading.Thread(target=relay, daemon=True).start()
    server = Server(SOCKET, Handler)
    print("ready", flush=True)
    server.serve_forever()
