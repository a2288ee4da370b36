#!/usr/bin/python3
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A scriptable HTTP/2 client for t/http2.t (python3-h2, Debian's package):
# many streams on one TLS connection (ALPN h2), bodies sent as DATA frames
# with or without content-length, within the peer's flow-control windows,
# streams reset (RST_STREAM CANCEL) or the connection cut at given times.
#
# stdin: {"host", "port", "cafile", "timeout",
#         "close_ms": cut the TCP connection this long after the start,
#         "requests": [{"method", "path", "headers": [[name, value], ...],
#                       "body_file": PATH | "body_b64": B64,
#                       "content_length": true (default) | false,
#                       "at_ms": send this long after the start (default 0),
#                       "pause_after": send this many bytes of the body,
#                       "resume_ms": and the rest this long after the start,
#                       "reset_ms": RST_STREAM this long after the start}]}
# stdout: {"alpn", "goaway": error code or null, "peer_closed",
#          "responses": [{"status", "headers": {name: value},
#                         "body_b64", "ended", "reset"}]}  (request order)

import base64
import json
import select
import socket
import ssl
import sys
import time

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions


def main():
    spec = json.load(sys.stdin)
    host = spec.get('host', '127.0.0.1')
    port = int(spec['port'])
    t0 = time.monotonic()
    deadline = t0 + float(spec.get('timeout', 20))

    ctx = ssl.create_default_context(cafile=spec['cafile'])
    ctx.set_alpn_protocols(['h2'])
    raw = socket.create_connection((host, port), timeout=10)
    tls = ctx.wrap_socket(raw, server_hostname=host)
    tls.setblocking(False)

    conn = h2.connection.H2Connection(
        config=h2.config.H2Configuration(client_side=True,
                                         header_encoding='utf-8'))
    conn.initiate_connection()

    out = {'alpn': tls.selected_alpn_protocol(), 'goaway': None,
           'peer_closed': False, 'responses': []}
    todo = []
    for rq in spec['requests']:
        body = b''
        if 'body_file' in rq:
            with open(rq['body_file'], 'rb') as f:
                body = f.read()
        elif 'body_b64' in rq:
            body = base64.b64decode(rq['body_b64'])
        st = {'rq': rq, 'body': body, 'sid': None, 'status': None,
              'headers': {}, 'data': bytearray(), 'ended': False,
              'reset': None, 'sent': False, 'done_sending': False,
              'body_sent': 0}
        todo.append(st)
        out['responses'].append(st)
    by_sid = {}

    def flush():
        data = conn.data_to_send()
        while data:
            try:
                n = tls.send(data)
                data = data[n:]
            except (ssl.SSLWantWriteError, ssl.SSLWantReadError):
                select.select([], [tls], [], 0.05)

    def done(st):
        return st['ended'] or st['reset'] is not None

    closed = False
    while time.monotonic() < deadline and not closed:
        now_ms = (time.monotonic() - t0) * 1000

        if spec.get('close_ms') is not None and now_ms >= spec['close_ms']:
            # an abrupt end: no GOAWAY, no RST_STREAM, the socket just closes
            tls.shutdown(socket.SHUT_RDWR)
            tls.close()
            closed = True
            break

        for st in todo:
            rq = st['rq']
            if not st['sent'] and now_ms >= rq.get('at_ms', 0):
                sid = conn.get_next_available_stream_id()
                hdrs = [(':method', rq.get('method', 'GET')),
                        (':scheme', 'https'),
                        (':authority', '%s:%d' % (host, port)),
                        (':path', rq['path'])]
                hdrs += [(k.lower(), v) for k, v in rq.get('headers', [])]
                if st['body'] and rq.get('content_length', True):
                    hdrs.append(('content-length', str(len(st['body']))))
                conn.send_headers(sid, hdrs, end_stream=not st['body'])
                st['sid'] = sid
                st['sent'] = True
                st['done_sending'] = not st['body']
                by_sid[sid] = st
            if (st['sent'] and not st['done_sending'] and not done(st)):
                try:
                    n = min(conn.local_flow_control_window(st['sid']),
                            conn.max_outbound_frame_size, len(st['body']))
                    # a body in two parts: the server reads the first and
                    # waits for the rest
                    if (rq.get('pause_after') is not None
                            and now_ms < rq.get('resume_ms', 0)):
                        n = min(n, max(0, rq['pause_after'] - st['body_sent']))
                    if n > 0:
                        last = n == len(st['body'])
                        conn.send_data(st['sid'], st['body'][:n],
                                       end_stream=last)
                        st['body'] = st['body'][n:]
                        st['body_sent'] += n
                        st['done_sending'] = last
                except (h2.exceptions.StreamClosedError,
                        h2.exceptions.ProtocolError):
                    st['done_sending'] = True
            if (st['sent'] and rq.get('reset_ms') is not None
                    and now_ms >= rq['reset_ms'] and not done(st)):
                try:
                    conn.reset_stream(st['sid'], h2.errors.ErrorCodes.CANCEL)
                except (h2.exceptions.StreamClosedError,
                        h2.exceptions.ProtocolError):
                    pass
                st['reset'] = 'sent CANCEL'
        flush()

        if all(st['sent'] and done(st) for st in todo) \
                and spec.get('close_ms') is None:
            break

        if not tls.pending():
            select.select([tls], [], [], 0.02)
        try:
            data = tls.recv(65536)
        except (ssl.SSLWantReadError, ssl.SSLWantWriteError):
            continue
        except (ConnectionError, ssl.SSLError):
            out['peer_closed'] = True
            break
        if not data:
            out['peer_closed'] = True
            break

        for ev in conn.receive_data(data):
            st = by_sid.get(getattr(ev, 'stream_id', None))
            if isinstance(ev, h2.events.ResponseReceived):
                st['status'] = int(dict(ev.headers)[':status'])
                st['headers'] = {k: v for k, v in ev.headers
                                 if not k.startswith(':')}
            elif isinstance(ev, h2.events.DataReceived):
                st['data'] += ev.data
                conn.acknowledge_received_data(ev.flow_controlled_length,
                                               ev.stream_id)
            elif isinstance(ev, h2.events.StreamEnded):
                st['ended'] = True
            elif isinstance(ev, h2.events.StreamReset):
                if st['reset'] is None:
                    st['reset'] = int(ev.error_code)
            elif isinstance(ev, h2.events.ConnectionTerminated):
                out['goaway'] = int(ev.error_code)
                closed = True
        flush()

    if not closed:
        try:
            conn.close_connection()
            flush()
        except Exception:
            pass
        tls.close()

    out['responses'] = [{'status': st['status'], 'headers': st['headers'],
                         'body_b64': base64.b64encode(st['data']).decode(),
                         'ended': st['ended'], 'reset': st['reset']}
                        for st in out['responses']]
    json.dump(out, sys.stdout)


if __name__ == '__main__':
    main()
