#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# SCEP at the CMS level with our own client (t/lib/scepmsg.c): RenewalReq
# (good, self-signed signer, revoked signer), a PKCSReq signed by an issued
# certificate (sscep's renewal: good, another CA's, expired, revoked),
# GetCert, GetCRL, CertPoll, and manual approval: PKCSReq PENDING ->
# approve through the admin API -> CertPoll returns the certificate (the
# same one on every poll); rejection;
# a poll by another key; GetNextCACert during a rollover, checked with
# openssl cms / smime against the current root; the admin listing of
# pending requests (fields, paging, decided ones gone, hostile queries);
# a PKCSReq sent again instead of CertPoll (our client and scepclient).

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use MIME::Base64 ();
use POSIX ();
use PKITest;
use SCEPMsg;

# --- micromdm scepclient at a manual location: its start ---------------------

# RFC 8894 3.3.3: a client may send its PKCSReq again instead of polling;
# micromdm scepclient does, 30 s after a PENDING answer (a fixed wait in
# the client).  It runs against a PKI, Redis and nginx of its own (their
# log, records and pending list are not those the checks below count),
# started first: its request is approved at once, and the rest of this
# test runs while it waits; scepclient_end() checks how it ended.
sub scepclient_start {
    my $t2 = PKITest->new;
    my $p2 = $t2->pki;
    $t2->start_redis;
    my $c2 = $t2->render_conf;
    $c2 =~ s{(\n\s*location /scep-manual \{)}{
        location /scep-manual-otc {
            scep issuing scep;
            scep_ra $p2/ra.pem $p2/ra.key;
            scep_dynamic_challenges on;
            scep_manual_approval on;
            scep_accept_des on;
        }
$1} or BAIL_OUT('no /scep-manual location to put /scep-manual-otc before');
    $t2->start_nginx($c2);
    my $adm = 'https://127.0.0.1:' . $t2->https_port . '/pki/admin';
    my $ra_fp = do {
        my ($rc, $o) = run_cmd(['openssl', 'x509', '-in', "$p2/ra.pem",
                                '-noout', '-fingerprint', '-sha256']);
        $o =~ /=([0-9A-F:]+)/ ? lc($1 =~ s/://gr) : '';
    };
    my $r = $t2->curl('POST', "$adm/scep/challenges", user => 'admin:admin',
                      data => '{"ttl": 300}',
                      headers => ['Content-Type: application/json']);
    is($r->{code}, 201, 'scepclient: a challenge') or diag($r->{body});
    my $ch = eval { decode_json($r->{body})->{challenge} } // '';
    my $d = $t2->dir . '/sc-manual';
    mkdir $d;
    my %sc = (t => $t2, d => $d, before => sc_records($t2));
    my $pid = fork;
    die "fork: $!" if !defined $pid;
    if (!$pid) {
        chdir $d or exit 99;
        open STDOUT, '>', "$d/out.log";
        open STDERR, '>&', \*STDOUT;
        exec 'scepclient', '-server-url',
             'http://127.0.0.1:' . $t2->http_port . '/scep-manual-otc',
             '-private-key', "$d/key.pem", '-certificate', "$d/cert.pem",
             '-cn', 'sc-manual', '-ca-fingerprint', $ra_fp,
             '-challenge', $ch;
        exit 99;
    }
    $sc{pid} = $pid;
    $t2->{children}{scepclient} = $pid;

    # its request, once listed
    my $tid;
    for (1 .. 100) {
        my $l = $t2->curl('GET', "$adm/scep/pending", user => 'admin:admin',
                          quiet => 1);
        ($tid) = map { $_->{transaction_id} }
                 grep { ($_->{subject} // '') =~ /CN=sc-manual\b/ }
                 @{ (eval { decode_json($l->{body}) } || {})->{pending}
                    || [] };
        last if $tid;
        select(undef, undef, undef, 0.2);
    }
    ok($tid, 'scepclient: its request waits for approval');
    $r = $t2->curl('POST', "$adm/scep/approve", user => 'admin:admin',
                   data => encode_json({ transaction_id => $tid // 'none' }));
    is($r->{code}, 200, 'scepclient: approve it') or diag($r->{body});
    $sc{approved} = time;
    return \%sc;
}

sub sc_records {
    return scalar grep { /:cert:/ }
        $_[0]->redis_keys('pki:{ca:issuing}:cert:*');
}

# A decided request's record keeps its CSR's hash, not the CSR.  The
# checks that set one back to "issuing" (a poller that died while issuing)
# give it the CSR it held until then: read it with one argument, put it
# back with two.
sub pend_csr {
    my ($t, $tid, $csr) = @_;
    require Redis;
    my $r = Redis->new(sock => $t->redis_sock, reconnect => 0);
    my $k = 'pki:scep:pend:' . Digest::SHA::sha256_hex($tid);
    if (defined $csr) {
        $r->hset($k, 'csr', $csr);
    } else {
        $csr = $r->hget($k, 'csr');
    }
    $r->quit;
    return $csr;
}

# it sends its PKCSReq again 30 s after the first, and gets the
# certificate: it exits 0 within 60 s of the approval
sub scepclient_end {
    my ($sc) = @_;
    my ($t2, $d, $pid) = @{$sc}{qw(t d pid)};
    my $rc;
    while (1) {
        if (waitpid($pid, POSIX::WNOHANG()) == $pid) {
            $rc = $?;
            last;
        }
        last if time > $sc->{approved} + 60;
        select(undef, undef, undef, 0.1);
    }
    delete $t2->{children}{scepclient};
    if (!defined $rc) {
        kill 'TERM', $pid;
        waitpid($pid, 0);
    }
    is($rc, 0, 'scepclient: exits 0 (waited for up to 60 s after the '
       . 'approval)')
        or diag(slurp("$d/out.log"));
    my ($rc1, $k) = run_cmd(['openssl', 'pkey', '-in', "$d/key.pem",
                             '-pubout']);
    my ($rc2, $c) = run_cmd(['openssl', 'x509', '-in', "$d/cert.pem",
                             '-noout', '-pubkey']);
    ok(!$rc1 && !$rc2 && $c eq $k,
       'scepclient: got a certificate of its key');
    is(sc_records($t2), $sc->{before} + 1,
       'scepclient: one certificate issued');
    $t2->stop_all;
}

my $sc = -x '/usr/bin/scepclient' ? scepclient_start() : undef;

my $t = PKITest->new;
my $pki = $t->pki;
my $dir = $t->dir;
# a CA rollover: the next CA (and a next RA issued by it) in one PEM file,
# served by GetNextCACert at /scep-next
my $next = "$dir/next.pem";
{
    my $nd = "$dir/next";
    mkdir $nd;
    my @cmds = (
        ['openssl', 'req', '-x509', '-newkey', 'ec', '-pkeyopt',
         'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$nd/ca.key",
         '-out', "$nd/ca.pem", '-days', '3650', '-subj',
         '/O=nginx-pki test/CN=nginx-pki Next CA', '-addext',
         'basicConstraints=critical,CA:TRUE', '-addext',
         'keyUsage=critical,keyCertSign,cRLSign'],
        ['openssl', 'req', '-newkey', 'rsa:2048', '-nodes', '-keyout',
         "$nd/ra.key", '-out', "$nd/ra.csr", '-subj',
         '/O=nginx-pki test/CN=nginx-pki Next SCEP RA'],
        ['openssl', 'x509', '-req', '-in', "$nd/ra.csr", '-CA', "$nd/ca.pem",
         '-CAkey', "$nd/ca.key", '-CAcreateserial', '-days', '365',
         '-out', "$nd/ra.pem"],
    );
    for my $c (@cmds) {
        my ($rc, $o, $e) = run_cmd($c);
        BAIL_OUT("next CA: @$c: $e") if $rc;
    }
    spew($next, slurp("$nd/ca.pem") . slurp("$nd/ra.pem"));
}
my $conf = $t->render_conf;
$conf =~ s{(\n\s*location /scep-manual \{)}{
        location /scep-next {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_challenge file=$pki/scep-challenge;
            scep_next_ca $next;
        }

        location /scep-any {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_dynamic_challenges on;
            scep_manual_approval on;
            scep_transaction_id any;
        }

        location /scep-any-auto {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_challenge file=$pki/scep-challenge;
            scep_transaction_id any;
        }

        location /scep-manual-otc {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_dynamic_challenges on;
            scep_manual_approval on;
            scep_accept_des on;
        }

        location /scep-manual-dev {
            scep issuing device;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_challenge file=$pki/scep-challenge;
            scep_manual_approval on;
        }
$1} or BAIL_OUT('no /scep-manual location to put /scep-next before');
my ($base, $admin, $k1, $k2, $tool) = scep_setup($t, $conf);
my $ra = "$pki/ra.pem";
my ($f, $r, $h);

# a certificate to ask for
$f = req(cn => 'issued-1', challenge => 'demo');
$h = rep(send_msg($f), $f);
is($h->{status}, 0, 'setup: enrolled') or diag($h->{raw});
my $issued = $h->{file};
my $issued_serial = $t->x509_field($issued, 'serial');

# --- RenewalReq --------------------------------------------------------------

{
    # the renewal CSR keeps the subject of the certificate it renews
    my $rk = key('renew');
    $f = req(key => $rk, cn => 'renew-me', challenge => 'demo');
    $h = rep(send_msg($f), $f, $rk);
    is($h->{status}, 0, 'renewal setup: enrolled');
    my $old = $h->{file};

    $f = req(type => 17, key => $k2, cn => 'renew-me', cert => $old,
             signkey => $rk);
    $h = rep(send_msg($f), $f, $rk, $old);
    is($h->{status}, 0, 'RenewalReq signed by the issued certificate: '
       . 'SUCCESS') or diag($h->{raw});
    like(slurp($t->error_log) // '', qr/messageType 17 .*SUCCESS/,
         'RenewalReq logged');

    fails('RenewalReq signed by a self-signed certificate',
          req(type => 17, cn => 'renew-me'), 4,
          log => qr/not issued by CA/);

    my $serial = $t->x509_field($old, 'serial');

    # the signer's record unreadable: the store's fault, not the
    # client's: HTTP 500 and the error log says what is wrong (it was
    # failInfo badCertId, "unknown to this CA")
    my $skey = "pki:{ca:issuing}:cert:$serial";
    $t->redis('HSET', $skey, 'status', 'bogus');
    $r = send_msg(req(type => 17, key => $k2, cn => 'renew-me', cert => $old,
                      signkey => $rk));
    is($r->{code}, 500, 'RenewalReq, the signer\'s record corrupt: 500');
    like(slurp($t->error_log) // '', qr/corrupt certificate record/,
         '  the error log says the record is corrupt');
    $t->redis('HSET', $skey, 'status', 'good');

    $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                  data => qq({"serial": "$serial", "reason": "superseded"}));
    is($r->{code}, 200, 'revoke the renewal signer') or diag($r->{body});
    fails('RenewalReq with a revoked signer',
          req(type => 17, key => $k2, cn => 'renew-me', cert => $old,
              signkey => $rk), 2, key => $rk, cert => $old,
          log => qr/signer is revoked/);
}

# --- PKCSReq signed by the issued certificate (sscep's renewal) ---------------

# sscep has no RenewalReq: `sscep enroll -O old.crt -K old.key` sends a
# PKCSReq signed by the certificate it renews and its key (RFC 8894 2.3).
# It is judged as a RenewalReq: no challenge, the subject and SANs kept,
# the signer current, good and recorded by this CA, also where PKCSReq
# waits for approval; a signer of another CA is refused as before
{
    # a DER CSR of KEY for one subject and SANs, with a challengePassword
    my $csr = sub {
        my ($name, $key, $chal) = @_;
        my $cnf = "$dir/$name.cnf";
        spew($cnf, "[req]\nprompt = no\ndistinguished_name = dn\n"
             . "attributes = at\n[dn]\nO = nginx-pki test\n"
             . "CN = sscep-renew\n[at]\n"
             . ($chal ? "challengePassword = $chal\n" : ''));
        my ($rc, $o, $e) = run_cmd(['openssl', 'req', '-new', '-config',
            $cnf, '-key', $key,
            '-addext', 'subjectAltName=DNS:sscep.example,IP:192.0.2.7',
            '-outform', 'DER', '-out', "$dir/$name.csr"]);
        BAIL_OUT("openssl req: $e") if $rc;
        return "$dir/$name.csr";
    };
    my $names = sub {
        my $x = $t->x509_text($_[0]) // '';
        my ($subj) = $x =~ /Subject: (.*)/;
        my ($san) = $x =~ /Subject Alternative Name:\s*\n\s*(.*)/;
        return ($subj // 'none') . ' / ' . ($san // 'none');
    };
    my $issue_op = sub {
        my ($file) = @_;
        my $serial = $t->x509_field($file, 'serial');
        my @e = grep { ($_->{type} // '') eq 'issue'
                       && lc($_->{serial} // '') eq lc($serial) }
                $t->audit_entries;
        return @e ? $e[-1]{operation} // 'none' : 'no entry';
    };
    my $record = sub {
        my $serial = $t->x509_field($_[0], 'serial');
        return $t->redis_hash("pki:{ca:issuing}:cert:$serial");
    };

    my $sk = key('sscep-old');
    $f = req(csr => $csr->('sscep-1', $sk, 'demo'), key => $sk);
    $h = rep(send_msg($f), $f, $sk);
    is($h->{status}, 0, 'sscep renewal setup: enrolled') or diag($h->{raw});
    my $old = $h->{file};
    like($names->($old), qr/CN\s*=\s*sscep-renew.*DNS:sscep\.example.*
                            IP\sAddress:192\.0\.2\.7/x,
         '  its subject and SANs') or diag($names->($old));

    my $nk = key('sscep-new');
    my $before = records();
    $f = req(csr => $csr->('sscep-2', $nk), key => $nk, cert => $old,
             signkey => $sk);
    $h = rep(send_msg($f), $f, $sk, $old);
    is($h->{status}, 0, 'PKCSReq signed by the issued certificate, no '
       . 'challenge: SUCCESS') or diag($h->{raw});
    my $new = $h->{file} // "$dir/none";
    is(records(), $before + 1, '  one certificate issued');
    is($names->($new), $names->($old), '  the same subject and SANs');
    is($t->pubkey_of_cert($new), $t->pubkey_of_key($nk),
       '  the key of the CSR');
    my ($vok, $vout) = $t->verify_chain($new);
    ok($vok, '  it verifies to the root') or diag($vout);
    my $said = 'SUCCESS, PKCSReq signed by an issued certificate: a renewal';
    like(slurp($t->error_log) // '', qr/messageType 19 .*\Q$said\E/,
         '  the error log says renewal');

    # a RenewalReq of the same signer, for its record and log entry
    my $nk2 = key('sscep-new2');
    $f = req(type => 17, csr => $csr->('sscep-3', $nk2), key => $nk2,
             cert => $old, signkey => $sk);
    $h = rep(send_msg($f), $f, $sk, $old);
    is($h->{status}, 0, 'RenewalReq of the same signer: SUCCESS')
        or diag($h->{raw});
    my $viareq = $h->{file} // "$dir/none";
    my ($ra_, $rb_) = ($record->($new), $record->($viareq));
    ok($ra_->{requester} && ($ra_->{requester} // '') !~ /challenge/,
       '  the PKCSReq\'s record names the signer as requester')
        or diag($ra_->{requester});
    is($ra_->{requester}, $rb_->{requester},
       '  the same requester as the RenewalReq\'s record');
    is($ra_->{template}, $rb_->{template}, '  the same template');
    is($issue_op->($new), 'renew',
       '  the transaction log says renew for the PKCSReq');
    is($issue_op->($viareq), 'renew', '  and for the RenewalReq');

    # where PKCSReq waits for approval, a renewal does not, as a
    # RenewalReq does not
    $f = req(csr => $csr->('sscep-4', $nk), key => $nk, cert => $old,
             signkey => $sk);
    $h = rep(send_msg($f, '/scep-manual'), $f, $sk, $old);
    is($h->{status}, 0, 'the same at a manual-approval location: SUCCESS '
       . 'at once, not PENDING') or diag($h->{raw});

    # a signer of another CA: badRequest, as before
    my $fd = "$dir/foreign";
    mkdir $fd;
    for my $c (
        ['openssl', 'req', '-x509', '-newkey', 'rsa:2048', '-nodes',
         '-keyout', "$fd/ca.key", '-out', "$fd/ca.pem", '-days', '30',
         '-subj', '/O=nginx-pki test/CN=Foreign CA'],
        ['openssl', 'x509', '-req', '-inform', 'DER', '-in',
         "$dir/sscep-1.csr", '-CA', "$fd/ca.pem", '-CAkey', "$fd/ca.key",
         '-CAcreateserial', '-days', '30', '-out', "$fd/ee.pem"])
    {
        my ($rc, $o, $e) = run_cmd($c);
        BAIL_OUT("foreign CA: @$c: $e") if $rc;
    }
    fails('PKCSReq signed by a certificate of another CA',
          req(csr => $csr->('sscep-5', $nk), key => $nk,
              cert => "$fd/ee.pem", signkey => $sk), 2, key => $sk,
          log => qr/messageType 19 .*badRequest.*self-signed certificate/);

    # an expired certificate of this CA (openssl ca with the CA key in
    # the token): badTime, as a RenewalReq gets
    my $xd = "$dir/xca";
    mkdir $xd;
    spew("$xd/index.txt", '');
    spew("$xd/serial", "5A17\n");
    spew("$xd/ca.cnf", <<"EOC");
[ ca ]
default_ca = xca
[ xca ]
database = $xd/index.txt
new_certs_dir = $xd
serial = $xd/serial
default_md = sha256
policy = pol
unique_subject = no
copy_extensions = copy
[ pol ]
organizationName = optional
commonName = supplied
EOC
    my $pin = slurp("$pki/hsm/pin") // '';
    chomp $pin;
    my $tok = $t->token;
    my $fmt = sub { POSIX::strftime('%y%m%d%H%M%SZ', gmtime($_[0])) };
    my ($rc, $o, $e) = run_cmd(['openssl', 'ca', '-batch', '-config',
        "$xd/ca.cnf", '-engine', 'pkcs11', '-keyform', 'engine', '-keyfile',
        "pkcs11:token=$tok;object=issuing;type=private;pin-value=$pin",
        '-cert', "$pki/issuing.pem", '-inform', 'DER', '-in',
        "$dir/sscep-1.csr", '-startdate', $fmt->(time - 2 * 86400),
        '-enddate', $fmt->(time - 86400), '-notext', '-out', "$xd/ee.pem"],
        env => { SOFTHSM2_CONF => $t->softhsm_conf }, timeout => 60);
    is($rc, 0, 'an expired certificate of the CA (openssl ca)')
        or diag("$o$e");
    fails('RenewalReq signed by an expired certificate',
          req(type => 17, csr => $csr->('sscep-6', $nk), key => $nk,
              cert => "$xd/ee.pem", signkey => $sk), 3, key => $sk,
          log => qr/messageType 17 .*signer is expired/);
    fails('PKCSReq signed by an expired certificate of the CA',
          req(csr => $csr->('sscep-7', $nk), key => $nk,
              cert => "$xd/ee.pem", signkey => $sk), 3, key => $sk,
          log => qr/messageType 19 .*signer is expired/);

    # the signer revoked: badRequest, as a RenewalReq gets
    my $serial = $t->x509_field($old, 'serial');
    $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                  data => qq({"serial": "$serial", "reason": "superseded"}));
    is($r->{code}, 200, 'revoke the sscep renewal signer')
        or diag($r->{body});
    fails('PKCSReq signed by a revoked certificate of the CA',
          req(csr => $csr->('sscep-8', $nk), key => $nk, cert => $old,
              signkey => $sk), 2, key => $sk, cert => $old,
          log => qr/messageType 19 .*signer is revoked/);
}

# --- GetCert / GetCRL / CertPoll ---------------------------------------------

$f = req(type => 21, getcert => $issued_serial, issuer => "$pki/issuing.pem");
$h = rep(send_msg($f), $f);
is($h->{status}, 0, 'GetCert: SUCCESS');
is($h->{certs}, 1, 'GetCert: one certificate');
is($t->x509_field($h->{file}, 'serial'), $issued_serial,
   'GetCert: the certificate asked for');
# RFC 8894 3.3.4: a client's own certificate; to another key it is an
# unknown serial (a revoked one's, read off the CRL, would tell its holder)
fails('GetCert signed by another key',
      req(type => 21, getcert => $issued_serial, issuer => "$pki/issuing.pem",
          key => $k2), 4, key => $k2,
      log => qr/messageType 21 .*\(the signer does not hold its key\)/);
fails('GetCert unknown serial',
      req(type => 21, getcert => '0123456789ABCDEF',
          issuer => "$pki/issuing.pem"), 4);
fails('GetCert another unknown serial',
      req(type => 21, getcert => '00FEDCBA98765432',
          issuer => "$pki/issuing.pem"), 4);
fails('GetCert a short unknown serial',
      req(type => 21, getcert => 'A1B2C3', issuer => "$pki/issuing.pem"), 4);
{
    # the failure's reason label names no serial: a series per serial
    # would let a client fill the metrics table
    my $m = $t->curl('GET', 'https://127.0.0.1:' . $t->https_port
                     . '/pki/metrics', user => 'admin:admin', quiet => 1);
    my @labels = grep { /^pki_failures_total\{protocol="scep"/ }
                 split /\n/, $m->{body} // '';
    ok(@labels, 'SCEP failures counted') or diag($m->{body});
    ok(!(grep { /0123456789ABCDEF|FEDCBA98765432|A1B2C3/i } @labels),
       'no serial in a failure reason label') or diag(join "\n", @labels);
}
fails('GetCert of another issuer',
      req(type => 21, getcert => $issued_serial, issuer => "$pki/root.pem"),
      4);
$f = req(type => 22, getcert => $issued_serial, issuer => "$pki/issuing.pem");
$h = rep(send_msg($f), $f);
is($h->{status}, 0, 'GetCRL: SUCCESS') or diag($h->{raw});
is($h->{crls}, 1, 'GetCRL: one CRL');
{
    # GetCRL builds with the lifetime the CRL locations publish (1 h
    # here): the CRL it stored is the one /crl/ serves, and a 24-hour one
    # would hide revocations from clients that cache until nextUpdate
    require Time::Piece;
    my $r = $t->curl('GET', "$base/crl/issuing.crl");
    spew("$dir/pub.crl", $r->{body} // '');
    my ($rc, $o) = run_cmd(['openssl', 'crl', '-inform', 'DER', '-in',
                            "$dir/pub.crl", '-noout', '-lastupdate',
                            '-nextupdate']);
    my %u = map { my ($k, $v) = split /=/, $_, 2; $v =~ s/\s+/ /g;
                  ($k => Time::Piece->strptime($v, '%b %d %H:%M:%S %Y GMT')
                                    ->epoch) }
            grep { /=/ } split /\n/, $o // '';
    is(($u{nextUpdate} // 0) - ($u{lastUpdate} // 0), 3600,
       'GetCRL: the published CRL still lives 1 h (pki_crl_next_update)');
}
{
    # GetCRL naming the CA certificate itself (the CRL is public): sscep
    # sends the CA's subject with the CA certificate's serial, older
    # clients that certificate's own IssuerAndSerialNumber (the root's
    # name); a foreign issuer is still refused
    my $cas = $t->x509_field("$pki/issuing.pem", 'serial');
    my $casubj = $t->x509_field("$pki/issuing.pem", 'subject');
    for my $c (['the CA\'s subject and serial (sscep)', "$pki/issuing.pem"],
               ['the CA certificate\'s IssuerAndSerialNumber',
                "$pki/root.pem"])
    {
        my $cf = req(type => 22, getcert => $cas, issuer => $c->[1]);
        my $ch = rep(send_msg($cf), $cf);
        is($ch->{status}, 0, "GetCRL with $c->[0]: SUCCESS")
            or diag($ch->{raw});
        is($ch->{crls}, 1, '... one CRL');
        my ($rc, $o, $e) = run_cmd(['openssl', 'crl', '-in',
            $ch->{file} // '/nonexistent', '-noout', '-issuer', '-nameopt',
            'RFC2253', '-CAfile', "$pki/issuing.pem"]);
        like($e . $o, qr/verify OK/, '... signed by the issuing CA');
        like($o, qr/^issuer=\Q$casubj\E$/m, '... the issuing CA\'s CRL');
    }
    fails('GetCRL with a foreign issuer and the CA\'s serial',
          req(type => 22, getcert => $cas, issuer => "$pki/ra.pem"), 4);
    fails('GetCRL with the CA\'s subject and an unknown serial',
          req(type => 22, getcert => '0123456789ABCDEF',
              issuer => "$pki/issuing.pem"), 4);
}
{
    my $nk = key('nopoll');
    fails('CertPoll without a pending request',
          req(type => 20, key => $nk, certpoll => 1,
              issuer => "$pki/issuing.pem", flags => ['certpoll']), 4,
          key => $nk);
    # a request enrolled at once (its CertRep lost) may be polled too
    my $before = records();
    my $pf = req(type => 20, certpoll => 1, issuer => "$pki/issuing.pem",
                 flags => ['certpoll']);
    my $ph = rep(send_msg($pf), $pf);
    is($ph->{status}, 0, 'CertPoll of a request enrolled at once: SUCCESS')
        or diag($ph->{raw});
    is(records(), $before, '... nothing issued');
}

# --- GetNextCACert: signed by the current CA (key in SoftHSM) ----------------

{
    my $caps = $t->curl('GET', "$base/scep-next?operation=GetCACaps");
    like($caps->{body}, qr/^GetNextCACert\r?$/m,
         'rollover: GetCACaps advertises GetNextCACert');
    $caps = $t->curl('GET', "$base/scep?operation=GetCACaps");
    unlike($caps->{body}, qr/GetNextCACert/,
           'no next CA: GetCACaps does not advertise GetNextCACert');
    $r = $t->curl('GET', "$base/scep?operation=GetNextCACert");
    is($r->{code}, 404, 'no next CA: GetNextCACert 404');

    $r = $t->curl('GET', "$base/scep-next?operation=GetNextCACert");
    is($r->{code}, 200, 'GetNextCACert: 200');
    is($r->{headers}{'content-type'}, 'application/x-x509-next-ca-cert',
       'GetNextCACert: content type');
    my $resp = "$dir/nextca.der";
    spew($resp, $r->{body});

    # openssl cms: verifies against the current root, the signer is the
    # current issuing CA, the content a certs-only PKCS#7 with the next CA
    my ($rc, $o, $e) = run_cmd(['openssl', 'cms', '-verify', '-inform',
        'DER', '-in', $resp, '-CAfile', "$pki/root.pem", '-purpose', 'any',
        '-binary', '-out', "$dir/nextca-inner.der", '-signer',
        "$dir/nextca-signer.pem"]);
    is($rc, 0, 'GetNextCACert: openssl cms -verify with the current root')
        or diag($e);
    like($e, qr/Verification successful/, 'GetNextCACert: cms says so');
    is($t->x509_field("$dir/nextca-signer.pem", 'subject'),
       $t->x509_field("$pki/issuing.pem", 'subject'),
       'GetNextCACert: signed by the current issuing CA');
    ($rc, $o) = run_cmd(['openssl', 'pkcs7', '-inform', 'DER', '-in',
                         "$dir/nextca-inner.der", '-print_certs']);
    my @subj = $o =~ /^subject=(.*)$/mg;
    is(scalar @subj, 2, 'GetNextCACert: two certificates inside');
    like($subj[0] // '', qr/Next CA/, 'GetNextCACert: the next CA first');
    like($subj[1] // '', qr/Next SCEP RA/, 'GetNextCACert: then the next RA');
    my ($first) = $o =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----)/s;
    spew("$dir/nextca-got.pem", ($first // '') . "\n");
    is($t->x509_der("$dir/nextca-got.pem"), $t->x509_der($next),
       'GetNextCACert: byte for byte the configured next CA');

    ($rc, $o, $e) = run_cmd(['openssl', 'smime', '-verify', '-inform', 'DER',
        '-in', $resp, '-CAfile', "$pki/root.pem", '-purpose', 'any',
        '-binary', '-out', "$dir/nextca-inner2.der"]);
    is($rc, 0, 'GetNextCACert: openssl smime -verify too') or diag($e);

    # the wrong trust anchor and a changed byte fail
    ($rc) = run_cmd(['openssl', 'cms', '-verify', '-inform', 'DER', '-in',
        $resp, '-CAfile', "$dir/next/ca.pem", '-purpose', 'any', '-binary',
        '-out', '/dev/null']);
    isnt($rc, 0, 'GetNextCACert: does not verify against the next CA');
    my $bad = $r->{body};
    my $at = index($bad, 'Next CA');
    substr($bad, $at, 1) = 'X' if $at > 0;
    spew("$dir/nextca-bad.der", $bad);
    ($rc) = run_cmd(['openssl', 'cms', '-verify', '-inform', 'DER', '-in',
        "$dir/nextca-bad.der", '-CAfile', "$pki/root.pem", '-purpose', 'any',
        '-binary', '-out', '/dev/null']);
    ok($at > 0 && $rc != 0, 'GetNextCACert: a changed certificate inside '
       . 'fails to verify');
}

# --- manual approval: PENDING -> approve -> CertPoll ---------------------------

{
    my $mk = key('manual');
    my $mreq = req(key => $mk, cn => 'manual-1', challenge => 'demo');
    my $before = records();
    $h = rep(send_msg($mreq, '/scep-manual'), $mreq, $mk);
    is($h->{status}, 3, 'manual: PKCSReq answered PENDING') or diag($h->{raw});
    is(records(), $before, 'manual: nothing issued yet');

    my $poll = sub {
        my ($key) = @_;
        my $p = req(type => 20, key => $key || $mk, cn => 'manual-1',
                    issuer => "$pki/issuing.pem", flags => ['certpoll']);
        return rep(send_msg($p, '/scep-manual'), $p, $key || $mk);
    };
    my $p1 = $poll->();
    is($p1->{status}, 3, 'manual: CertPoll before approval: PENDING');

    my ($tid) = slurp($t->error_log) =~
        /messageType 19 transactionID "([^"]+)"[^\n]*PENDING/;
    ok($tid, "manual: transactionID from the log");
    my $mcsr = pend_csr($t, $tid);
    ok(defined $mcsr && length $mcsr > 100,
       'manual: the waiting request keeps its CSR');
    $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tid }));
    is($r->{code}, 200, 'manual: approve') or diag($r->{body});
    $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tid }));
    is($r->{code}, 409, 'manual: approve twice: 409');

    my $stranger = $poll->($k2);
    is($stranger->{status}, 2, 'manual: CertPoll by another key: FAILURE');
    is($stranger->{failinfo}, 4, 'manual: ... badCertId');

    my $p2 = $poll->();
    is($p2->{status}, 0, 'manual: CertPoll after approval: SUCCESS')
        or diag($p2->{raw});
    is(records(), $before + 1, 'manual: one certificate issued');
    my $p3 = $poll->();
    is($p3->{status}, 0, 'manual: CertPoll again: SUCCESS');
    is($t->x509_field($p3->{file}, 'serial'),
       $t->x509_field($p2->{file}, 'serial'), 'manual: the same certificate');

    # A poller that died while issuing, or lost the answer of its commit,
    # leaves its claim ("issuing"); the next poll settles it from the
    # certificate store and never issues a second certificate.
    use Digest::SHA qw(sha256_hex);
    my $pkey = 'pki:scep:pend:' . sha256_hex($tid);
    my $serial = $t->x509_field($p2->{file}, 'serial');

    # a copy of the PKCSReq once its request is issued: its certificate
    # again, and no new request to approve (it used to replace the
    # issued one)
    my $p4c = rep(send_msg($mreq, '/scep-manual'), $mreq, $mk);
    is($p4c->{status}, 0, "manual: the issued request's PKCSReq sent "
       . 'again: SUCCESS') or diag($p4c->{raw});
    is($t->x509_field($p4c->{file}, 'serial'),
       $t->x509_field($p2->{file}, 'serial'), '... the same certificate');
    is(records(), $before + 1, '... and no second one');
    is($t->redis_raw('HGET', $pkey, 'status'), "issued\n",
       '... the request stays issued');
    # decided, it keeps its CSR's hash (what a copy is compared by), not
    # the CSR, whose challengePassword is the static challenge here
    my $ph = $t->redis_hash($pkey);
    ok(!exists $ph->{csr} && ($ph->{csrsha256} // '') =~ /^[0-9a-f]{64}\z/,
       'manual: the issued request keeps no CSR, its SHA-256 only');

    my $now = time;
    $t->redis('HSET', $pkey, 'status', 'issuing', 'claim', 'dead',
              'since', $now, 'serial', $serial);
    pend_csr($t, $tid, $mcsr);
    my $p5 = $poll->();
    is($p5->{status}, 0, 'manual: a claim whose serial is recorded: '
       . 'SUCCESS at once') or diag($p5->{raw});
    is($t->x509_field($p5->{file}, 'serial'),
       $t->x509_field($p2->{file}, 'serial'), '... with that certificate');
    is(records(), $before + 1, '... and no second one');
    is($t->redis_raw('HGET', $pkey, 'status'), "issued\n",
       '... the request is marked issued');

    # a claim of the previous version (no claim, time or serial): its
    # poller may still be issuing: PENDING, and the claim is timed now
    $t->redis('HSET', $pkey, 'status', 'issuing');
    pend_csr($t, $tid, $mcsr);
    $t->redis('HDEL', $pkey, 'claim', 'since', 'serial');
    my $po = $poll->();
    is($po->{status}, 3, 'manual: a claim of the previous version: PENDING');
    is(records(), $before + 1, '... nothing issued');
    like($t->redis_raw('HGET', $pkey, 'since'), qr/^\d+\n\z/,
         '... and the claim is timed now');

    # a fresh claim without a serial is running: PENDING, nothing issued
    $t->redis('HSET', $pkey, 'status', 'issuing', 'claim', 'live',
              'since', $now);
    pend_csr($t, $tid, $mcsr);
    $t->redis('HDEL', $pkey, 'serial');
    my $p6 = $poll->();
    is($p6->{status}, 3, 'manual: a running claim: PENDING');
    is(records(), $before + 1, '... nothing issued');

    # the same claim gone stale: taken over, one new certificate
    $t->redis('HSET', $pkey, 'since', $now - 600);
    my $p7 = $poll->();
    is($p7->{status}, 0, 'manual: a stale claim without a serial: '
       . 'taken over, SUCCESS') or diag($p7->{raw});
    is(records(), $before + 2, '... one certificate issued');
    isnt($t->x509_field($p7->{file}, 'serial'),
         $t->x509_field($p2->{file}, 'serial'), '... a new one');
    like(slurp($t->error_log), qr/taking over a stale claim/,
         '... and the log says so');

    # a claim whose serial is reserved but not committed: running while
    # fresh; once stale, the reservation is abandoned (a late commit of
    # the old claimer fails) and the request issued anew
    my $ghost = 'AB' x 16;
    my $gkey = "pki:{ca:issuing}:cert:$ghost";
    $t->redis('HSET', $gkey, 'status', 'pending');
    $t->redis('HSET', $pkey, 'status', 'issuing', 'claim', 'gone',
              'since', time, 'serial', $ghost);
    pend_csr($t, $tid, $mcsr);
    my $n = records();
    my $p8 = $poll->();
    is($p8->{status}, 3, 'manual: a fresh claim with a reserved serial: '
       . 'PENDING');
    is($t->redis_raw('HGET', $gkey, 'status'), "pending\n",
       '... the reservation is left alone');
    $t->redis('HSET', $pkey, 'since', 0);
    my $p9 = $poll->();
    is($p9->{status}, 0, 'manual: a given-up claim with an uncommitted '
       . 'serial: issued anew') or diag($p9->{raw});
    is($t->redis_raw('EXISTS', $gkey), "0\n",
       '... after its reservation was abandoned');
    is(records(), $n, '... one certificate for the one abandoned');
    is($t->redis_raw('HGET', $pkey, 'serial'),
       $t->x509_field($p9->{file}, 'serial') . "\n",
       '... and the request names the new one');

    # reject
    my $rk = key('manual2');
    my $rreq = req(key => $rk, cn => 'manual-2', challenge => 'demo');
    $h = rep(send_msg($rreq, '/scep-manual'), $rreq, $rk);
    is($h->{status}, 3, 'manual: second request PENDING');
    my @tids = slurp($t->error_log) =~
        /messageType 19 transactionID "([^"]+)"[^\n]*PENDING/g;
    # the time the listing gives it, to decide on exactly this request
    my $lr = $t->curl('GET', "$admin/scep/pending", user => 'admin:admin');
    my ($seen) = grep { ($_->{subject} // '') =~ /manual-2\b/ }
                 @{ (eval { decode_json($lr->{body}) } || {})->{pending}
                    || [] };
    ok($seen && $seen->{created}, 'manual: listed with its creation time');
    $r = $t->curl('POST', "$admin/scep/reject", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tids[-1] }));
    is($r->{code}, 200, 'manual: reject');
    my $p4 = $poll->($rk);
    is($p4->{status}, 2, 'manual: CertPoll after rejection: FAILURE');
    my $rh = $t->redis_hash('pki:scep:pend:' . sha256_hex($tids[-1]));
    ok(!exists $rh->{csr} && ($rh->{csrsha256} // '') =~ /^[0-9a-f]{64}\z/,
       'manual: the rejected request keeps no CSR, its SHA-256 only');

    # the device corrects its request (same key, so the same
    # transactionID): a new request, not a resend of the rejected one
    sleep 1.1;                  # "created" counts seconds
    my $rreq2 = req(key => $rk, cn => 'manual-2b', challenge => 'demo');
    $h = rep(send_msg($rreq2, '/scep-manual'), $rreq2, $rk);
    is($h->{status}, 3, 'manual: a new request after the rejection: PENDING');
    $r = $t->curl('GET', "$admin/scep/pending", user => 'admin:admin');
    like($r->{body} // '', qr/manual-2b/,
         '... listed for approval with its new subject');
    # an approval sent from the listing of the rejected request (its
    # "created") does not approve the new one nobody has seen
    $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tids[-1],
                                        created => $seen->{created} }));
    is($r->{code}, 409, '... an approval naming the replaced request\'s '
       . '"created": 409') or diag($r->{body});
    like($r->{body} // '', qr/list again/, '... which says to list again');
    $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tids[-1],
                                        created => 'yesterday' }));
    is($r->{code}, 400, '... a "created" not in the listing\'s form: 400');
    # "created" misspelt or null would decide for the new request unseen
    for my $body ({ transaction_id => $tids[-1],
                    createdAt => $seen->{created} },
                  { transaction_id => $tids[-1],
                    Created => $seen->{created} },
                  { transaction_id => $tids[-1], created => undef })
    {
        my $j = encode_json($body);
        $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                      data => $j);
        is($r->{code}, 400, "... $j: 400") or diag($r->{body});
    }
    $r = $t->curl('GET', "$admin/scep/pending", user => 'admin:admin');
    like($r->{body} // '', qr/manual-2b/, '... still pending');
    $lr = $t->curl('GET', "$admin/scep/pending", user => 'admin:admin');
    my ($cur) = grep { ($_->{subject} // '') =~ /manual-2b/ }
                @{ (eval { decode_json($lr->{body}) } || {})->{pending}
                   || [] };
    $r = $t->curl('POST', "$admin/scep/reject", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tids[-1],
                                        created => $cur->{created} }));
    is($r->{code}, 200, '... and can be decided (rejected) again, naming '
       . 'its own "created"') or diag($r->{body});
    $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                  data => '{"transaction_id": "nope"}');
    is($r->{code}, 404, 'manual: approve unknown: 404');
}

# --- admin: GET scep/pending ---------------------------------------------------

{
    my $list = sub {
        my ($q) = @_;
        return $t->curl('GET', "$admin/scep/pending" . ($q // ''),
                        user => 'admin:admin');
    };

    # the requests decided above are not listed
    $r = $list->();
    is($r->{code}, 200, 'pending list: 200') or diag($r->{body});
    like($r->{headers}{'content-type'} // '', qr{application/json},
         'pending list: JSON');
    my $j = eval { decode_json($r->{body}) } // {};
    is_deeply($j->{pending}, [], 'pending list: approved and rejected '
              . 'requests are not listed');
    is($j->{next_cursor}, '0', 'pending list: next_cursor 0');

    my (@tids, %cn_of);
    for my $i (1 .. 3) {
        my $pk = key("pl$i");
        my $preq = req(key => $pk, cn => "pending-$i", challenge => 'demo');
        $h = rep(send_msg($preq, '/scep-manual'), $preq, $pk);
        is($h->{status}, 3, "pending list: request $i PENDING");
        my @all = slurp($t->error_log) =~
            /messageType 19 transactionID "([^"]+)"[^\n]*PENDING/g;
        push @tids, $all[-1];
        $cn_of{$all[-1]} = "pending-$i";
        if ($i == 3) {
            $h = rep(send_msg($preq, '/scep-manual'), $preq, $pk);
            is($h->{status}, 3, 'pending list: request 3 resent: PENDING');
        }
    }
    # a resend of the same request is listed once
    $r = $list->();
    $j = eval { decode_json($r->{body}) } // {};
    my @got = map { $_->{transaction_id} } @{ $j->{pending} || [] };
    is_deeply([sort @got], [sort @tids], 'pending list: the three waiting '
              . 'requests, each once');

    my $e = $j->{pending}[0] // {};
    my %allowed = map { $_ => 1 } qw(transaction_id subject sans template ca
                                     client created expires);
    is_deeply([grep { !$allowed{$_} } sort keys %$e], [],
              'pending list: only the documented fields');
    like($e->{subject} // '', qr/CN=pending-\d/, 'pending list: subject');
    is($e->{subject} =~ /CN=(pending-\d)/ ? $1 : '',
       $cn_of{$e->{transaction_id} // ''} // 'none',
       'pending list: the subject of that transaction');
    is(ref $e->{sans}, 'ARRAY', 'pending list: sans is an array');
    is($e->{template}, 'scep', 'pending list: template');
    is($e->{ca}, 'issuing', 'pending list: CA');
    is($e->{client}, '127.0.0.1', 'pending list: client address');
    like($e->{created} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
         'pending list: created (RFC 3339)');
    ok(($e->{expires} // '') gt ($e->{created} // 'z'),
       'pending list: expires after created');
    unlike($r->{body}, qr/csr|"key"|BEGIN|MII[A-Za-z0-9+\/]{20}/,
           'pending list: no CSR, no key, no DER');

    # paging: 2 + 1, every request exactly once
    $r = $list->('?limit=2');
    my $p1 = eval { decode_json($r->{body}) } // {};
    is(scalar @{ $p1->{pending} || [] }, 2, 'pending list: limit=2 gives 2');
    isnt($p1->{next_cursor} // '0', '0', 'pending list: and a cursor');
    $r = $list->('?limit=2&cursor=' . ($p1->{next_cursor} // ''));
    is($r->{code}, 200, 'pending list: second page') or diag($r->{body});
    my $p2 = eval { decode_json($r->{body}) } // {};
    is(scalar @{ $p2->{pending} || [] }, 1, 'pending list: one more');
    is($p2->{next_cursor}, '0', 'pending list: then done');
    is_deeply([sort map { $_->{transaction_id} }
               @{ $p1->{pending} }, @{ $p2->{pending} || [] }],
              [sort @tids], 'pending list: the pages cover each once');

    # decided requests disappear
    $r = $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tids[0] }));
    is($r->{code}, 200, 'pending list: approve one');
    $r = $t->curl('POST', "$admin/scep/reject", user => 'admin:admin',
                  data => encode_json({ transaction_id => $tids[1] }));
    is($r->{code}, 200, 'pending list: reject one');
    $j = eval { decode_json($list->()->{body}) } // {};
    is_deeply([map { $_->{transaction_id} } @{ $j->{pending} || [] }],
              [$tids[2]], 'pending list: only the undecided one is left');

    # hostile or broken query strings: 400, nothing listed
    for my $q ('?limit=0', '?limit=-1', '?limit=abc', '?limit=1001',
               '?limit=1e3', '?limit=%00', '?limit=' . ('9' x 30),
               '?cursor=', '?cursor=abc', '?cursor=%00',
               '?cursor=' . ('1' x 12) . ':' . ('G' x 64),
               '?cursor=' . ('1' x 12) . ':' . ('a' x 63),
               '?cursor=' . ('a' x 200), '?cursor=..%2F..%2Fetc',
               '?cursor=*', '?limit=%ZZ')
    {
        $r = $list->($q);
        is($r->{code}, 400, "pending list: $q -> 400");
        unlike($r->{body}, qr/"pending"/, "pending list: $q lists nothing");
    }
    $r = $list->('?limit=' . ('1' x 3000));
    is($r->{code}, 414, 'pending list: an over-long query string: 414');

    $r = $t->curl('GET', "$admin/scep/pending");
    is($r->{code}, 401, 'pending list: without credentials 401');
    $r = $t->curl('POST', "$admin/scep/pending", user => 'admin:admin',
                  data => '{}');
    is($r->{code}, 405, 'pending list: POST 405');
}

# --- one transactionID, one request -------------------------------------------

{
    my $logged = sub {
        return scalar(() = (slurp($t->error_log) // '')
                      =~ /is taken by a pending request of another key/g);
    };
    my $n = $logged->();

    # scep_transaction_id any: a request with another key cannot join
    # (or be dropped into) the one pending under its transactionID, and
    # its one-time challenge is not used up
    my $ca = challenge('{"ttl": 120}');
    my $fa = req(key => $k2, cn => 'squatter', challenge => $ca,
                 tid => 'DEVICE-42');
    $h = rep(send_msg($fa, '/scep-any'), $fa, $k2);
    is($h->{status}, 3, 'tid any: a request PENDING') or diag($h->{raw});
    my $cv = challenge('{"ttl": 120}');
    fails('tid any: its transactionID with another key',
          req(key => $k1, cn => 'victim', challenge => $cv,
              tid => 'DEVICE-42'), 2, path => '/scep-any');
    is($logged->(), $n + 1, '... logged: taken by another key\'s request');
    my $fv = req(key => $k1, cn => 'victim', challenge => $cv,
                 tid => 'DEVICE-43');
    $h = rep(send_msg($fv, '/scep-any'), $fv);
    is($h->{status}, 3, '... its one-time challenge was given back: '
       . 'PENDING under another transactionID') or diag($h->{raw});
    my $l = $t->curl('GET', "$admin/scep/pending", user => 'admin:admin');
    my ($e) = grep { ($_->{transaction_id} // '') eq 'DEVICE-42' }
              @{ (eval { decode_json($l->{body}) } || {})->{pending} || [] };
    like($e->{subject} // '', qr/CN=squatter/,
         '... DEVICE-42 is still the first request');

    # scep_transaction_id any, enrolled at once: another key's request
    # under an issued transactionID is a new request, and leaves the
    # first one's record, so that the first device's resend still gets
    # its certificate
    my $fx = req(key => $k2, cn => 'auto-first', challenge => 'demo',
                 tid => 'AUTO-7');
    $h = rep(send_msg($fx, '/scep-any-auto'), $fx, $k2);
    is($h->{status}, 0, 'tid any, at once: the first request issued')
        or diag($h->{raw});
    my $first = $t->x509_field($h->{file} // '/nonexistent', 'serial');
    my $akey = 'pki:scep:pend:' . Digest::SHA::sha256_hex('AUTO-7');
    my $arec = $t->redis_hash($akey);
    my $fy = req(key => $k1, cn => 'auto-other', challenge => 'demo',
                 tid => 'AUTO-7');
    $h = rep(send_msg($fy, '/scep-any-auto'), $fy);
    is($h->{status}, 0, '... another key under its transactionID: issued')
        or diag($h->{raw});
    isnt($t->x509_field($h->{file} // '/nonexistent', 'serial'), $first,
         '... a certificate of its own');
    is_deeply($t->redis_hash($akey), $arec,
              '... the first request\'s record stays as it was');
    like(slurp($t->error_log) // '',
         qr/transactionID "AUTO-7" keeps the record of another request/,
         '... logged');
    $h = rep(send_msg($fx, '/scep-any-auto'), $fx, $k2);
    is($h->{status}, 0, '... the first device\'s resend: SUCCESS')
        or diag($h->{raw});
    is($t->x509_field($h->{file} // '/nonexistent', 'serial'), $first,
       '... with its certificate');

    # the same key (so the same transactionID) at two manual locations
    # with other templates: the second is not a resend of the first
    my $dk = key('twoloc');
    my $f1 = req(key => $dk, cn => 'two-loc', challenge => 'demo');
    $h = rep(send_msg($f1, '/scep-manual'), $f1, $dk);
    is($h->{status}, 3, 'two locations: PENDING at the first');
    fails('two locations: the same key under another template',
          req(key => $dk, cn => 'two-loc', challenge => 'demo'), 2,
          path => '/scep-manual-dev', key => $dk);
    is($logged->(), $n + 2, '... logged: taken by another template\'s');
    my $f2 = req(key => $dk, cn => 'two-loc', challenge => 'demo');
    $h = rep(send_msg($f2, '/scep-manual'), $f2, $dk);
    is($h->{status}, 3, 'two locations: a new message to the first: a '
       . 'resend, PENDING');
}

# --- manual approval: the client's resend of its PKCSReq ----------------------

# RFC 8894 3.3.3: a client may send its PKCSReq again instead of polling
# (micromdm scepclient does, every 30 s): the same message, with its
# one-time challenge used by the first send, is PENDING until decided,
# then gets the certificate

my $approve = sub {
    my ($tid) = @_;
    return $t->curl('POST', "$admin/scep/approve", user => 'admin:admin',
                    data => encode_json({ transaction_id => $tid }));
};
my $spki = sub {
    my ($rc, $o) = run_cmd(['openssl', 'pkey', '-in', $_[0], '-pubout']);
    return $rc ? 'none' : $o;
};
my $cert_spki = sub {
    my ($rc, $o) = run_cmd(['openssl', 'x509', '-in', $_[0], '-noout',
                            '-pubkey']);
    return $rc ? 'no certificate' : $o;
};

{
    my $ok = key('resend');
    my $ch = challenge('{"ttl": 300}');
    my $oreq = req(key => $ok, cn => 'resend-1', challenge => $ch);
    my $before = records();
    $h = rep(send_msg($oreq, '/scep-manual-otc'), $oreq, $ok);
    is($h->{status}, 3, 'resend: PKCSReq with a one-time challenge: '
       . 'PENDING') or diag($h->{raw});
    my @all = slurp($t->error_log) =~
        /messageType 19 transactionID "([^"]+)"[^\n]*PENDING/g;
    my $tid = $all[-1];
    my $pkey = 'pki:scep:pend:' . sha256_hex($tid // '');

    $h = rep(send_msg($oreq, '/scep-manual-otc'), $oreq, $ok);
    is($h->{status}, 3, 'resend: the same message before approval: PENDING')
        or diag($h->{raw});
    is(records(), $before, '... nothing issued');

    $r = $approve->($tid);
    is($r->{code}, 200, 'resend: approve') or diag($r->{body});

    my $s1 = rep(send_msg($oreq, '/scep-manual-otc'), $oreq, $ok);
    is($s1->{status}, 0, 'resend: the same message after approval: SUCCESS')
        or diag($s1->{raw});
    is($cert_spki->($s1->{file} // '/nonexistent'), $spki->($ok),
       '... a certificate of the request\'s key');
    like($t->x509_field($s1->{file} // '/nonexistent', 'subject') // '',
         qr/resend-1/, '... with its subject');
    is(records(), $before + 1, '... one certificate issued');
    is($t->redis_raw('HGET', $pkey, 'status'), "issued\n",
       '... the request is issued');
    my $serial = $t->x509_field($s1->{file} // '/nonexistent', 'serial');
    is($t->redis_raw('HGET', $pkey, 'serial'), ($serial // 'none') . "\n",
       '... with that serial');

    my $s2 = rep(send_msg($oreq, '/scep-manual-otc'), $oreq, $ok);
    is($s2->{status}, 0, 'resend: a third copy: SUCCESS') or diag($s2->{raw});
    is($t->x509_field($s2->{file} // '/nonexistent', 'serial'), $serial,
       '... the same certificate');
    is(records(), $before + 1, '... no second one');

    # a planned revocation come due but not carried out yet (worker 0
    # does so within 10 s; OCSP and the CRL say revoked from its time
    # on): a copy gets FAILURE, as once it is carried out
    my $sn = $serial // 'none';
    my $ck = "pki:{ca:issuing}:cert:$sn";
    $t->redis_raw('HSET', $ck, 'plan_at', time() - 5, 'plan_reason', 1);
    fails('resend: a copy once its planned revocation is due', $oreq, 2,
          path => '/scep-manual-otc', key => $ok,
          log => qr/\(serial \Q$sn\E\) was revoked/);
    is(records(), $before + 1, '... nothing issued');
    $t->redis_raw('HDEL', $ck, 'plan_at', 'plan_reason');

    # its certificate revoked by the operator since: a copy gets FAILURE,
    # not the revoked certificate
    $r = $t->admin_revoke($serial // 'none');
    is($r->{code}, 200, 'resend: the certificate revoked by the operator')
        or diag($r->{body});
    fails('resend: a copy once its certificate is revoked', $oreq, 2,
          path => '/scep-manual-otc', key => $ok, log => qr/was revoked/);
    is(records(), $before + 1, '... nothing issued');

    # a rejected request's copy: FAILURE, as its CertPoll gets
    my $jk = key('resend-rej');
    my $jch = challenge('{"ttl": 300}');
    my $jreq = req(key => $jk, cn => 'resend-2', challenge => $jch);
    $h = rep(send_msg($jreq, '/scep-manual-otc'), $jreq, $jk);
    is($h->{status}, 3, 'resend: another request PENDING');
    @all = slurp($t->error_log) =~
        /messageType 19 transactionID "([^"]+)"[^\n]*PENDING/g;
    $r = $t->curl('POST', "$admin/scep/reject", user => 'admin:admin',
                  data => encode_json({ transaction_id => $all[-1] }));
    is($r->{code}, 200, 'resend: reject it');
    fails('resend: the rejected request\'s copy', $jreq, 2,
          path => '/scep-manual-otc', key => $jk,
          log => qr/the request was rejected/);

    # a copy by another key cannot take the waiting request over
    my $sk = key('resend-squat');
    my $qk = key('resend-victim');
    my $qch = challenge('{"ttl": 300}');
    my $qreq = req(key => $qk, cn => 'resend-3', challenge => $qch,
                   tid => 'RESEND-3');
    $h = rep(send_msg($qreq, '/scep-any'), $qreq, $qk);
    is($h->{status}, 3, 'resend: a request under tid any PENDING');
    $r = $approve->('RESEND-3');
    is($r->{code}, 200, 'resend: approve it');
    my $sch = challenge('{"ttl": 300}');
    fails('resend: its transactionID with another key, once approved',
          req(key => $sk, cn => 'resend-3', challenge => $sch,
              tid => 'RESEND-3'), 2, path => '/scep-any', key => $sk,
          log => qr/is taken by a pending request of another key/);
    is($t->redis_raw('HGET', 'pki:scep:pend:' . sha256_hex('RESEND-3'),
                     'status'), "approved\n", '... the request waits still');

    # ... nor replace it once decided: the first device may still have
    # to poll for its certificate (its CertRep was lost)
    my $qpoll = sub {
        my $p = req(type => 20, key => $qk, cn => 'resend-3',
                    issuer => "$pki/issuing.pem", flags => ['certpoll'],
                    tid => 'RESEND-3');
        return rep(send_msg($p, '/scep-any'), $p, $qk);
    };
    $h = $qpoll->();
    is($h->{status}, 0, 'resend: the approved request\'s CertPoll: SUCCESS')
        or diag($h->{raw});
    my $qserial = $t->x509_field($h->{file} // '/nonexistent', 'serial');
    my $qrec = $t->redis_hash('pki:scep:pend:' . sha256_hex('RESEND-3'));
    is($qrec->{status} // '', 'issued', '... the record says issued');
    $sch = challenge('{"ttl": 300}');
    fails('resend: its transactionID with another key, once issued',
          req(key => $sk, cn => 'resend-3', challenge => $sch,
              tid => 'RESEND-3'), 2, path => '/scep-any', key => $sk,
          log => qr/is taken by a pending request of another key/);
    is_deeply($t->redis_hash('pki:scep:pend:' . sha256_hex('RESEND-3')),
              $qrec, '... the issued record stays as it was');
    $h = $qpoll->();
    is($h->{status}, 0, '... the first device\'s CertPoll: SUCCESS')
        or diag($h->{raw});
    is($t->x509_field($h->{file} // '/nonexistent', 'serial'), $qserial,
       '... with its certificate');

    # the record corrupt (its key gone: written by hand): the store's
    # fault, which no retry mends: HTTP 500 and the error log says so (it
    # was 503 with Retry-After, "incomplete pending record", forever)
    my $qkey = 'pki:scep:pend:' . sha256_hex('RESEND-3');
    $t->redis('HDEL', $qkey, 'key');
    my $p = req(type => 20, key => $qk, cn => 'resend-3',
                issuer => "$pki/issuing.pem", flags => ['certpoll'],
                tid => 'RESEND-3');
    my $r5 = send_msg($p, '/scep-any');
    is($r5->{code}, 500, 'the pending record corrupt: CertPoll 500');
    like(slurp($t->error_log) // '',
         qr/pending record of transactionID "RESEND-3" is corrupt/,
         '... the error log says the record is corrupt');
}

# --- CertPoll after an interrupted issuance whose certificate is revoked ------

# A claim left with a committed serial, whose certificate an operator
# then revoked: the request ends there (FAILURE, rejected), whatever
# the reason; only a withdrawal (pki_int_issue_withdraw marks the
# record) is issued anew.
{
    my %csr_of;
    my $issue_one = sub {
        my ($name) = @_;
        my $k = key($name);
        my $q = req(key => $k, cn => $name, challenge => 'demo');
        my $x = rep(send_msg($q, '/scep-manual'), $q, $k);
        my @all = slurp($t->error_log) =~
            /messageType 19 transactionID "([^"]+)"[^\n]*PENDING/g;
        $csr_of{$all[-1]} = pend_csr($t, $all[-1]);
        $approve->($all[-1]);
        my $p = req(type => 20, key => $k, cn => $name,
                    issuer => "$pki/issuing.pem", flags => ['certpoll']);
        my $y = rep(send_msg($p, '/scep-manual'), $p, $k);
        return ($k, $p, $all[-1],
                $t->x509_field($y->{file} // '/nonexistent', 'serial'));
    };
    my $interrupt = sub {
        my ($tid, $serial) = @_;
        $t->redis('HSET', 'pki:scep:pend:' . sha256_hex($tid), 'status',
                  'issuing', 'claim', 'dead', 'since', 0, 'serial', $serial);
        pend_csr($t, $tid, $csr_of{$tid});
    };

    for my $reason (qw(keyCompromise cessationOfOperation)) {
        my ($k, $p, $tid, $serial) = $issue_one->("revoked-$reason");
        ok($serial, "revoked ($reason): issued");
        $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                      data => qq({"serial": "$serial", "reason": "$reason"}));
        is($r->{code}, 200, "revoked ($reason): the operator revokes it")
            or diag($r->{body});
        $interrupt->($tid, $serial);
        my $n = records();
        my $x = rep(send_msg($p, '/scep-manual'), $p, $k);
        is($x->{status}, 2, "revoked ($reason): CertPoll of the interrupted "
           . 'issuance: FAILURE') or diag($x->{raw});
        is($x->{failinfo}, 2, '... badRequest');
        is(records(), $n, '... no new certificate');
        is($t->redis_raw('HGET', 'pki:scep:pend:' . sha256_hex($tid),
                         'status'), "rejected\n", '... the request rejected');
        $x = rep(send_msg($p, '/scep-manual'), $p, $k);
        is($x->{status}, 2, '... and so it stays');
        is(records(), $n, '... still no new certificate');
    }

    # a live claim whose certificate is revoked but not marked withdrawn:
    # its claimer may be between the two; PENDING, the request left to it
    {
        my ($k2, $p2, $tid2, $serial2) = $issue_one->('revoked-live');
        $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                      data => qq({"serial": "$serial2", )
                              . '"reason": "keyCompromise"}');
        is($r->{code}, 200, 'revoked, live claim: revoked');
        $t->redis('HSET', 'pki:scep:pend:' . sha256_hex($tid2), 'status',
                  'issuing', 'claim', 'live', 'since', time,
                  'serial', $serial2);
        pend_csr($t, $tid2, $csr_of{$tid2});
        my $x2 = rep(send_msg($p2, '/scep-manual'), $p2, $k2);
        is($x2->{status}, 3, 'revoked, live claim: CertPoll PENDING')
            or diag($x2->{raw});
        is($t->redis_raw('HGET', 'pki:scep:pend:' . sha256_hex($tid2),
                         'status'), "issuing\n", '... left to its claimer');
    }

    # a withdrawal: issued anew, once
    my ($k, $p, $tid, $serial) = $issue_one->('withdrawn-1');
    $r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
                  data => qq({"serial": "$serial", "reason": )
                          . '"cessationOfOperation"}');
    is($r->{code}, 200, 'withdrawn: revoked');
    $t->redis('HSET', "pki:{ca:issuing}:cert:$serial", 'withdrawn', '1');
    $interrupt->($tid, $serial);
    my $n = records();
    my $x = rep(send_msg($p, '/scep-manual'), $p, $k);
    is($x->{status}, 0, 'withdrawn: CertPoll of the interrupted issuance: '
       . 'issued anew') or diag($x->{raw});
    isnt($t->x509_field($x->{file} // '/nonexistent', 'serial') // '',
         $serial, '... a new certificate');
    is(records(), $n + 1, '... one');
}

# --- scep_pending_max through nginx -------------------------------------------

# the queue counts across the store: a location whose cap leaves room for
# one takes more only for decided ones it drops; once there
# is none, FAILURE badRequest, nothing queued, the one-time challenge given
# back (it still enrolls where there is room), the error log says why
{
    my $zcard = sub {
        my $o = $t->redis('ZCARD', 'pki:scep:pending');
        return $o =~ /(\d+)/ ? $1 : -1;
    };
    my $listed = $zcard->();
    ok($listed > 0, "scep_pending_max: $listed requests listed before");
    my $cap = $listed + 1;      # room for one
    $t->stop_nginx;
    (my $c4 = $conf) =~ s{(\n\s*location /scep-manual \{)}{
        location /scep-cap {
            scep issuing scep;
            scep_ra $pki/ra.pem $pki/ra.key;
            scep_dynamic_challenges on;
            scep_manual_approval on;
            scep_pending_max $cap;
        }
$1} or die 'no /scep-manual location';
    $t->start_nginx($c4);

    # a key each: a request with the key of a waiting one is its resend
    my ($full, $ch, $freq, $fkey, $queued, $qkey, @st);
    for my $i (1 .. 40) {
        $ch = challenge('{"ttl": 300}');
        $fkey = key("cap-$i");
        $freq = req(key => $fkey, cn => "cap-$i", challenge => $ch);
        my $before = $zcard->();
        $h = rep(send_msg($freq, '/scep-cap'), $freq, $fkey);
        push @st, $h->{status} // 'none';
        if (($h->{status} // -1) == 2) {
            $full = $h;
            is($zcard->(), $before, 'scep_pending_max: the refused request '
               . 'is not listed');
            last;
        }
        ($queued, $qkey) = ($freq, $fkey) if ($h->{status} // -1) == 3;
        last if ($h->{status} // -1) != 3;
    }
    ok($full, 'scep_pending_max: a full queue answers FAILURE')
        or diag("statuses: @st");
    is($full && $full->{failinfo}, 2, '  failInfo badRequest');
    my $why = qr/the approval queue is full: \d+ requests wait /;
    like(slurp($t->error_log) // '', qr/${why}\(scep_pending_max \d+\)/,
         '  the error log says how many wait');
    ok($queued, '  the one it had room for: PENDING');
    $h = $queued ? rep(send_msg($queued, '/scep-cap'), $queued, $qkey) : {};
    is($h->{status}, 3, '  a resend of a waiting request: PENDING');
    $h = rep(send_msg($freq, '/scep-manual-otc'), $freq, $fkey);
    is($h->{status}, 3, '  its one-time challenge was given back: PENDING '
       . 'where the queue has room') or diag($h->{raw});
}

# --- micromdm scepclient at a manual location: its end -----------------------

SKIP: {
    skip 'scepclient not installed (package scep)', 3 if !$sc;
    scepclient_end($sc);
}

$t->stop_all;
done_testing();
