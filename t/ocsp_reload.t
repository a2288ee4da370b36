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
use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use Time::HiRes qw(time sleep);
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
    my ($body) = @_;
    my $rf = "$dir/resp-" . int(rand(1e9)) . '.der';
    PKITest::spew($rf, $body);
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-respin', $rf,
        '-issuer', "$pki/issuing.pem", '-cert', $a, '-CAfile',
        "$pki/root.pem", '-verify_other', "$pki/issuing.pem"], timeout => 30);
    return "$out\n$err";
}
my $r1 = post();
my $r2 = post();
like(status_of($r1->{body}), qr/: good/, 'good');
is($r2->{headers}{'x-ocsp-cache'}, 'HIT', 'cached');

# reload: the /ocsp2 location (CA other) is removed; /ocsp unchanged
$t->write_conf(base());
my $n = () = (PKITest::slurp($t->error_log) // '') =~ /reconfiguring/g;
kill('HUP', $t->{children}{nginx});
my $t0 = time;
sleep 0.05 while time - $t0 < 15
    && (() = (PKITest::slurp($t->error_log) // '') =~ /reconfiguring/g) <= $n;
sleep 1.5;
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
done_testing();
