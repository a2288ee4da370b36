#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# OCSP cache across a reload that changes the zone's CAs.  Cached answers
# survive a reload that changes nothing they depend on (t/ocsp_cache.t),
# and an entry is served only while its revocation generation equals the
# zone's view, the sum of the revgens of the zone's CAs.  A reload that
# removes a CA from the zone lowers that sum, and later revocations could
# bring it back to an old entry's generation: a cached "good" for a
# certificate revoked since.  So the zone's CA set salts the keys too, and
# such a reload drops the zone's entries.
#
# The view itself is tagged with the CA set it sums over: after a reload
# that adds a CA, an old worker still finishing a request (its body held
# back across the reload) reads the old set's sum, which here equals the
# new workers' tag of a cached good revoked since; it must not become their
# view.
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
use IO::Socket::INET;
use PKITest;

my $t = PKITest->new;
$t->start_redis;

sub base {
    my $conf = $t->render_conf;
    $conf =~ s{(ocsp_responder_cache zone=ocsp:\S+;)}
              {$1\n            ocsp_responder_cache_header on;\n            ocsp_responder_revgen_check 1s;}
        or die;
    return $conf;
}
# a second location with CA "other" shares the zone
my $two = base();
$two =~ s{(    pki_ca issuing \{.*?\n    \}\n)}{my $b = $1; (my $c = $b) =~ s/pki_ca issuing /pki_ca other /; $c =~ s/^\s*(ocsp_url|crl_url|templates).*\n//mg; $c =~ s/(\n    \}\n)\z/\n        templates device;$1/; "$b\n$c"}se or die 'no ca';
$two =~ s{(        location /ocsp \{)}
         {        location /ocsp2 {\n            ocsp_responder other;\n            ocsp_responder_cache zone=ocsp:16m;\n        }\n\n$1} or die;

$t->start_nginx($two);
my $pki = $t->pki;
my $dir = $t->dir;
my $url = 'http://127.0.0.1:' . $t->http_port . '/ocsp';

my ($csr) = $t->make_csr('vf-a', subj => '/CN=vf-a');
my $r = $t->est_post('simpleenroll', $csr);
is($r->{code}, 200, 'enrolled') or diag($r->{body});
my $a = $t->save_first_cert($t->p7_to_pem($r->{body}), 'vf-a');
my $serial = $t->x509_field($a, 'serial');
my ($csrb) = $t->make_csr('vf-b', subj => '/CN=vf-b');
my $rb = $t->est_post('simpleenroll', $csrb);
my $bc = $t->save_first_cert($t->p7_to_pem($rb->{body}), 'vf-b');
my $fb = "$dir/reqb.der";
run_cmd(['openssl', 'ocsp', '-issuer', "$pki/issuing.pem", '-cert', $bc,
         '-no_nonce', '-reqout', $fb], timeout => 30);

# the other CA of the zone has seen one revocation
$t->redis('SET', 'pki:{ca:other}:revgen', 1);
sleep 1.2;

my $f = "$dir/req.der";
run_cmd(['openssl', 'ocsp', '-issuer', "$pki/issuing.pem", '-cert', $a,
         '-no_nonce', '-reqout', $f], timeout => 30);
sub post { $t->curl('POST', $url, data => PKITest::slurp($_[0] // $f),
                    headers => ['Content-Type: application/ocsp-request']) }
sub status_of {
    my ($body, $cert) = @_;
    my $rf = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($rf, $body);
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-respin', $rf,
        '-issuer', "$pki/issuing.pem", '-cert', $cert // $a, '-CAfile',
        "$pki/root.pem", '-verify_other', "$pki/issuing.pem"], timeout => 30);
    return "$out\n$err";
}
my $r1 = post();
my $r2 = post();
like(status_of($r1->{body}), qr/: good/, 'good');
is($r2->{headers}{'x-ocsp-cache'}, 'HIT', 'cached');

# reload: the /ocsp2 location (CA other) is removed; /ocsp unchanged
$t->write_conf(base());
$t->reload_nginx;            # the new workers answer, the old ones left
sleep 1.2; post($fb);        # the view is refreshed (b only): sum drops by 1

# revoke a: issuing's revgen + 1, the sum equals the old entry's tag
my $rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                  . '/pki/admin/revoke', user => 'admin:admin',
                  data => qq({"serial":"$serial","reason":"keyCompromise"}),
                  headers => ['Content-Type: application/json']);
is($rv->{code}, 200, 'revoked') or diag($rv->{body});
sleep 1.2;
post($fb);                   # another request refreshes the view: = old tag
my $last = post();
like(status_of($last->{body}), qr/: revoked/,
     'a certificate revoked after a reload that removed a CA from the '
     . 'zone: revoked, not the old cached good')
    or diag(status_of($last->{body}));
is($last->{headers}{'x-ocsp-cache'} // '', 'MISS', '... not from the cache');
$t->stop_nginx;

# --- an old worker finishing a request after a reload that added a CA -----
# The view is a sum over the zone's CAs: after a reload the old workers
# still answering their requests sum over the old set.  Here the new set
# is {issuing, other} with other's revgen at 1, so the new workers tag an
# entry issuing + 1; a revocation under issuing later makes the old sum
# (issuing alone) equal that tag.  An old worker's refresh must not become
# the view of the new workers: they would serve the cached good.
$t->start_nginx(base());
like($t->redis('GET', 'pki:{ca:other}:revgen'), qr/^"?1"?$/, 'other: revgen 1');
my ($csrc) = $t->make_csr('vf-c', subj => '/CN=vf-c');
my $rc3 = $t->est_post('simpleenroll', $csrc);
is($rc3->{code}, 200, 'enrolled c') or diag($rc3->{body});
my $cc = $t->save_first_cert($t->p7_to_pem($rc3->{body}), 'vf-c');
my $cserial = $t->x509_field($cc, 'serial');
my $fc = "$dir/reqc.der";
run_cmd(['openssl', 'ocsp', '-issuer', "$pki/issuing.pem", '-cert', $cc,
         '-no_nonce', '-reqout', $fc], timeout => 30);

# a request an old worker is still reading when the reload comes: all of
# its body but the last byte
my $slow = PKITest::slurp($fb);
my $hc = IO::Socket::INET->new(PeerHost => '127.0.0.1',
                               PeerPort => $t->http_port, Timeout => 5)
    or $t->give_up("connect: $!");
$hc->autoflush(1);
print $hc "POST /ocsp HTTP/1.1\r\nHost: localhost\r\n"
    . "Content-Type: application/ocsp-request\r\n"
    . 'Content-Length: ' . length($slow) . "\r\nConnection: close\r\n\r\n"
    . substr($slow, 0, -1);
sleep 0.3;

$t->write_conf($two);
# the new workers answer; the old one with the request stays
$t->reload_nginx(keep_old => 1);

# the new workers cache c's good, tagged issuing + other
my $c1 = post($fc);
my $c2 = post($fc);
like(status_of($c1->{body}, $cc), qr/: good/, 'new workers: c good');
is($c2->{headers}{'x-ocsp-cache'}, 'HIT', 'new workers: c cached');

$rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
               . '/pki/admin/revoke', user => 'admin:admin',
               data => qq({"serial":"$cserial","reason":"keyCompromise"}),
               headers => ['Content-Type: application/json']);
is($rv->{code}, 200, 'c revoked') or diag($rv->{body});
sleep 1.3;                   # past revgen_check: the new view is due

# the old worker gets its last byte: it reads issuing's revgen (the old
# set's sum, now equal to c's tag) and goes back to the view
print $hc substr($slow, -1);
my $old = '';
my $deadline = time + 10;
while (time < $deadline && $old !~ /\r\n\r\n/) {
    my $got = sysread($hc, my $buf, 65536);
    last if !$got;
    $old .= $buf;
}
like($old, qr{^HTTP/1\.1 200}, 'the old worker answered its request')
    or diag($old);
close $hc;

$last = post($fc);
like(status_of($last->{body}, $cc), qr/: revoked/,
     'an old worker finishing a request after a reload that added a CA: '
     . 'the new workers answer c revoked, not the cached good')
    or diag(status_of($last->{body}, $cc));
is($last->{headers}{'x-ocsp-cache'} // '', 'MISS', '... not from the cache');
$t->stop_nginx;
done_testing();
