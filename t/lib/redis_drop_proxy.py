#!/usr/bin/python3
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A Redis proxy on a unix socket that loses one answer: while the file ARM
# exists, the first command sent through it whose bytes contain the text
# in ARM reaches Redis (which runs it), then Redis's answer is dropped and
# the client's connection closed, as when a reply is lost on the network.
# The file is removed when it fires.  Usage: redis_drop_proxy.py LISTEN
# UPSTREAM ARM
#
# Or it holds one command back: when ARM's first line is "HOLD", the first
# command that contains every further line of ARM waits in the proxy (its
# connection with it, others go on) until the file ARM.release exists,
# and then reaches Redis; its answer is not dropped.  A late writer, made
# to order.

import os
import socket
import sys
import threading
import time

LISTEN, UP, ARM = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()


def serve(client):
    up = socket.socket(socket.AF_UNIX)
    up.connect(UP)
    state = {'drop': False}

    def replies():
        try:
            while True:
                data = up.recv(65536)
                if not data or state['drop']:
                    if state['drop']:
                        print('proxy: answer dropped, connection closed',
                              flush=True)
                    break
                client.sendall(data)
        except OSError:
            pass
        for s in (client, up):
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
            s.close()

    threading.Thread(target=replies, daemon=True).start()
    try:
        while True:
            data = client.recv(65536)
            if not data:
                break
            with lock:
                try:
                    with open(ARM, 'rb') as f:
                        pattern = f.read().strip()
                except FileNotFoundError:
                    pattern = b''
                lines = pattern.split(b'\n')
                hold = lines[0] == b'HOLD' and len(lines) > 1 \
                    and all(p in data for p in lines[1:] if p)
                if hold:
                    os.unlink(ARM)
                elif pattern and lines[0] != b'HOLD' and pattern in data:
                    os.unlink(ARM)
                    state['drop'] = True
                    print('proxy: armed command seen: %r' % pattern,
                          flush=True)
            if hold:
                print('proxy: holding a command', flush=True)
                while not os.path.exists(ARM + '.release'):
                    time.sleep(0.05)
                print('proxy: command released', flush=True)
            up.sendall(data)
    except OSError:
        pass


def main():
    try:
        os.unlink(LISTEN)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX)
    srv.bind(LISTEN)
    srv.listen(128)
    while True:
        client, _ = srv.accept()
        threading.Thread(target=serve, args=(client,), daemon=True).start()


main()
