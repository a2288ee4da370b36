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
# to order.  "HOLD NAME" waits for ARM.release.NAME instead, so that ARM
# can be armed again for another command, released on its own.
#
# Or it loses several answers in turn: when ARM's first line is "SEQ",
# each further line is a pattern (the text \r\n in it stands for CR LF,
# to match a command's name in the protocol and not in a script's text);
# the first command containing the first pattern loses its answer as
# above, then the next pattern is armed, and so on.
#
# Or Redis stalls: when ARM's first line is "STALL", the first command
# that contains its second line reaches Redis (which runs it), and from
# then on nothing is answered and no other command reaches Redis, on any
# connection (old or new, which are accepted), until the file ARM.release
# exists.

import os
import socket
import sys
import threading
import time

LISTEN, UP, ARM = sys.argv[1], sys.argv[2], sys.argv[3]
lock = threading.Lock()
stall = {'on': False}


def stalled():
    return stall['on'] and not os.path.exists(ARM + '.release')


def serve(client):
    up = socket.socket(socket.AF_UNIX)
    up.connect(UP)
    state = {'drop': False, 'mine': False}

    def replies():
        try:
            while True:
                data = up.recv(65536)
                if not data or state['drop']:
                    if state['drop']:
                        print('proxy: answer dropped, connection closed',
                              flush=True)
                    break
                if stalled():
                    continue
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
                head = lines[0].split(b' ', 1)
                ishold = head[0] == b'HOLD'
                hold = ishold and len(lines) > 1 \
                    and all(p in data for p in lines[1:] if p)
                if hold:
                    release = ARM + '.release'
                    if len(head) > 1:
                        release += '.' + head[1].decode()
                if lines[0] == b'STALL' and len(lines) > 1 \
                        and lines[1] in data:
                    os.unlink(ARM)
                    stall['on'] = True
                    state['mine'] = True
                    print('proxy: Redis stalled after %r' % lines[1],
                          flush=True)
                seq = [p.replace(b'\\r\\n', b'\r\n')
                       for p in lines[1:]] if lines[0] == b'SEQ' else []
                if hold:
                    os.unlink(ARM)
                elif seq and seq[0] in data:
                    if len(lines) > 2:
                        with open(ARM + '.tmp', 'wb') as f:
                            f.write(b'\n'.join([b'SEQ'] + lines[2:]))
                        os.rename(ARM + '.tmp', ARM)
                    else:
                        os.unlink(ARM)
                    state['drop'] = True
                    print('proxy: armed command seen: %r' % seq[0],
                          flush=True)
                elif pattern and not ishold \
                        and lines[0] not in (b'SEQ', b'STALL') \
                        and pattern in data:
                    os.unlink(ARM)
                    state['drop'] = True
                    print('proxy: armed command seen: %r' % pattern,
                          flush=True)
            if hold:
                print('proxy: holding a command', flush=True)
                while not os.path.exists(release):
                    time.sleep(0.05)
                print('proxy: command released', flush=True)
            if stalled() and not state['mine']:
                continue                # never reaches Redis
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
