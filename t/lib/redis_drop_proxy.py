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

import os
import socket
import sys
import threading

LISTEN, UP, ARM = sys.argv[1], sys.argv[2], sys.argv[3]


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
            try:
                with open(ARM, 'rb') as f:
                    pattern = f.read().strip()
            except FileNotFoundError:
                pattern = b''
            if pattern and pattern in data:
                os.unlink(ARM)
                state['drop'] = True
                print('proxy: armed command seen: %r' % pattern, flush=True)
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
