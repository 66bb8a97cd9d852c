#!/usr/bin/env python3
"""An example network plugin for tapnet's remote driver: libnetwork's remote protocol (JSON over
HTTP/1.1 on a unix socket). It records every call as a JSON line in LOG and keeps the networks
it was told about, so tests can check what tapnet sent and that nothing is left half-made.

usage: remote_plugin.py SOCKET LOG [--fail CALL] [--hang CALL] [--garbage CALL] [--not-network]

--fail CALL     answer CALL (e.g. NetworkDriver.CreateNetwork) with {"Err": "refused CALL"}
--hang CALL     never answer CALL (the connection stays open)
--garbage CALL  answer CALL with bytes that are not JSON
--not-network   implement VolumeDriver instead of NetworkDriver
"""
import json
import os
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
    server = Server(SOCKET, Handler)
    print("ready", flush=True)
    server.serve_forever()
