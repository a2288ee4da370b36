#!/usr/bin/env python3
#
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Writes the seeds of the validate target (fuzz/fuzz_validate.c) into
# fuzz/corpus/validate/: real-looking DNS responses (with compression
# pointers, CNAME chains, TXT, CAA, A, AAAA), CAA records and values, HTTP
# head blocks, chunked bodies and Location values.  Byte 0 of each file
# chooses the parser and its options (see the target's header comment).
# Files named seed-* are rewritten; regression inputs (regress-*) are kept.
#
#   python3 fuzz/gen_corpus_validate.py

import os
import struct

HERE = os.path.dirname(os.path.abspath(__file__))
DIR = os.path.join(HERE, "corpus", "validate")

T_A, T_CNAME, T_TXT, T_AAAA, T_CAA = 1, 5, 16, 28, 257
QT = {T_A: 0, T_AAAA: 1, T_TXT: 2, T_CAA: 3}      # op bits 3-4


def op(parser, bits=0):
    return bytes([parser | bits])


def name(n):
    out = b""
    for lab in n.split(".") if n else []:
        out += bytes([len(lab)]) + lab.encode()
    return out + b"\0"


def ptr(off):
    return struct.pack(">H", 0xc000 | off)


def header(qid, an, rcode=0, flags=0x8180):
    return struct.pack(">HHHHHH", qid, flags | rcode, 1, an, 0, 0)


def rr(owner, rtype, rdata, ttl=300):
    return owner + struct.pack(">HHIH", rtype, 1, ttl, len(rdata)) + rdata


def caa(flags, tag, value):
    return bytes([flags, len(tag)]) + tag + value


def response(qname, qtype, answers, qid=0x4a2f, rcode=0, bits=0):
    m = header(qid, len(answers), rcode) + name(qname)
    m += struct.pack(">HH", qtype, 1)
    for a in answers:
        m += a
    return op(1, (QT[qtype] << 3) | bits) + m


def seeds():
    s = {}
    q = ptr(12)                                 # the question's name

    # ---- DNS responses (op 1) --------------------------------------------
    s["dns-a"] = response("www.example.com", T_A, [
        rr(q, T_A, bytes([192, 0, 2, 10])),
        rr(q, T_A, bytes([192, 0, 2, 11]))])
    s["dns-aaaa"] = response("www.example.com", T_AAAA, [
        rr(q, T_AAAA, bytes.fromhex("20010db8000000000000000000000001"))])

    # www.example.com CNAME web.example.com (suffix compressed), then A
    qn = "www.example.com"
    cname_rd = b"\x03web" + ptr(12 + 4)         # "web" + "example.com"
    first = 12 + len(name(qn)) + 4              # offset of the first RR
    target = first + 12                         # its rdata: the new name
    s["dns-cname-a"] = response(qn, T_A, [
        rr(q, T_CNAME, cname_rd),
        rr(ptr(target), T_A, bytes([198, 51, 100, 7]))])

    s["dns-txt"] = response("_acme-challenge.example.org", T_TXT, [
        rr(q, T_TXT, b"\x2b" + b"LoqXcYV8q5ONbJQxbmR7SCTNo3tiAXDfowyjxAjEuX0"),
        rr(q, T_TXT, b"\x05hello\x05world")])

    s["dns-caa"] = response("example.com", T_CAA, [
        rr(q, T_CAA, caa(0, b"issue", b"ca.example; accounturi="
                         b"https://ca.example/acme/acct/17; "
                         b"validationmethods=http-01,dns-01")),
        rr(q, T_CAA, caa(0, b"issuewild", b";")),
        rr(q, T_CAA, caa(0, b"iodef", b"mailto:sec@example.com"))],
        bits=0x40)
    s["dns-caa-critical"] = response("example.com", T_CAA, [
        rr(q, T_CAA, caa(128, b"tbs", b"unknown")),
        rr(q, T_CAA, caa(0, b"issue", b"ca.example"))])
    s["dns-caa-long"] = response("example.com", T_CAA, [
        rr(q, T_CAA, caa(0, b"issue", b"ca.example")),
        rr(q, T_CAA, caa(0, b"iodef", b"mailto:" + b"a" * 279
                         + b"@example.com"))])
    s["dns-nxdomain"] = response("nope.example.com", T_CAA, [], rcode=3)

    # forward pointer (must be refused)
    s["dns-bad-ptr"] = response("a.example", T_A, [
        rr(ptr(200), T_A, bytes([192, 0, 2, 1]))])

    # ---- names with pointers (op 0): offset byte, then a message ------------
    msg = name("example.com") + b"\x03www" + ptr(0) + b"\x01a" + ptr(13)
    s["name-ptr"] = op(0) + bytes([17]) + msg
    s["name-loop"] = op(0) + bytes([2]) + b"\x01a" + ptr(2)

    # ---- CAA values (op 2) and record sets (op 3) ---------------------------
    s["caa-value"] = op(2, 0x40) + (b"ca.example; accounturi="
                                    b"https://ca.example/acme/acct/17")
    s["caa-value-methods"] = op(2, 0x80) + (b" PKI.example.net ;"
                                            b"validationmethods= http-01 , "
                                            b"dns-01 ; other=1")
    recs = [caa(0, b"issuewild", b"pki.example.net"),
            caa(0, b"issue", b"other.example"),
            caa(0, b"iodef", b"https://example.com/caa")]
    s["caa-set-wild"] = op(3, 0x20) + b"".join(bytes([len(r)]) + r
                                              for r in recs)
    recs = [caa(128, b"issue", b"ca.example"), caa(0, b"Issue", b";")]
    s["caa-set"] = op(3) + b"".join(bytes([len(r)]) + r for r in recs)
    # a record over the cap (0xff, then what is kept of it: its flags and
    # tag) beside one that names us: an iodef bears on nothing, an issue
    # is unread (another one allows)
    s["caa-set-long"] = op(3) + (bytes([len(recs[0])]) + recs[0]
                                 + b"\xff\x07" + caa(0, b"iodef", b"")
                                 + b"\xff\x07" + caa(0, b"issue", b""))

    # ---- HTTP heads (op 4) ---------------------------------------------------
    s["head-redirect"] = op(4) + (
        b"HTTP/1.1 301 Moved Permanently\r\n"
        b"Server: nginx\r\n"
        b"Location:   https://www.example.com/.well-known/"
        b"acme-challenge/tok \r\n"
        b"Content-Length: 0\r\n\r\n")
    s["head-chunked"] = op(4, 0x08 | 0x20) + (
        b"HTTP/1.1 200 OK\r\n"
        b"Content-Type: text/plain\r\n"
        b"transfer-encoding:\tchunked\r\n\r\n")
    s["head-twice"] = op(4, 0x08 | 0x40) + (
        b"HTTP/1.0 200 OK\n"
        b"Content-Length: 5\n"
        b"Content-Length: 6\n\n")

    # ---- chunked bodies (op 5) -----------------------------------------------
    s["chunked"] = op(5) + (b"17\r\nLoqXcYV8q5ONbJQxbmR7SCT\r\n"
                            b"5;ext=1\r\nNo3ti\r\n0\r\nTrailer: x\r\n\r\n")
    s["chunked-lf"] = op(5, 0x18) + b"3\nabc\n10\n0123456789abcdef\n0\n\n"
    s["chunked-cap"] = op(5, 0x08) + b"ffffffff\r\nx\r\n0\r\n\r\n"

    # ---- Location values (op 6), one a line ---------------------------------
    s["loc-abs"] = op(6) + (b"https://www.example.com:443/.well-known/"
                            b"acme-challenge/x?y=1#frag\n"
                            b"other/path\n"
                            b"//[2001:db8::2]:8080/z\n"
                            b"/abs?q")
    s["loc-v6"] = op(6, 0x08) + b"http://[2001:db8::7]/\n../up\n?only-query"
    s["loc-bad"] = op(6, 0x10) + b"http://user@evil.example/"
    s["loc-scheme"] = op(6, 0x18) + b"ftp://a.example/\nHTTP://10.0.0.1:0/"

    # ---- query names (op 7) ----------------------------------------------------
    s["build-caa"] = op(7, QT[T_CAA] << 3) + b"_acme-challenge.Example.COM."
    s["build-long"] = op(7) + b".".join([b"a" * 63] * 4)

    return s


def main():
    os.makedirs(DIR, exist_ok=True)
    for f in os.listdir(DIR):
        if f.startswith("seed-"):
            os.unlink(os.path.join(DIR, f))
    for k, v in sorted(seeds().items()):
        with open(os.path.join(DIR, "seed-" + k), "wb") as f:
            f.write(v)


if __name__ == "__main__":
    main()
