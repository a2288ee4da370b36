#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# An ACME order is issued with the template of the location that made it.
# Two locations of one realm (same CA, EAB, validation kind) share orders:
# /acme/ issues with template acme (90 days), its sibling /acme7/ with
# template server (7 days, no profile).  Finalize used the finalizing
# location's template, so an order made at /acme7/ and finalized at
# /acme/ got 90 days: a location's template was not binding.  Now:
#  - an order made at /acme7/ and finalized at /acme/ is refused (403
#    unauthorized, the detail names the order's template), the error log
#    says why, and the stored order is left as it was: still ready;
#  - finalized at /acme7/ it is valid with a 7-day certificate, which
#    /acme/ downloads too (it is issued already);
#  - an order made at /acme/ and finalized there gets 90 days;
#  - an order stored before orders kept their template (none recorded) is
#    issued as before, with the finalizing location's template.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use JSON::PP ();
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
my $conf = $t->render_conf('--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port());

# /acme7/: the /acme/ block with the 7-day template and no profile
my ($blk) = $conf =~ m{(\n\s*location /acme/ \{.*?\n        \}\n)}s
    or die 'no /acme/ location';
(my $b7 = $blk) =~ s{location /acme/}{location /acme7/};
$b7 =~ s{acme issuing acme;}{acme issuing server;} or die;
$b7 =~ s{\n\s*acme_profile [^\n]*}{} or die;
$conf =~ s{\Q$blk\E}{$blk$b7} or die;
$t->start_nginx($conf);

my $www = $t->dir . '/www';
mkdir $www;
ACMELoad::start_http01($t, $hport, $www);
my $base = 'https://127.0.0.1:' . $t->https_port;
my $c = ACMELoad->new(t => $t, www => $www, timeout => 20,
                      base => "$base/acme7");
ok($c->account->{ok}, 'an account at /acme7/');
my $kid7 = $c->{kid};
(my $kid90 = $kid7) =~ s{/acme7/}{/acme/};

# run CODE as a client of location LOC (acme or acme7): accounts are the
# server's, their URL is the location's
sub at {
    my ($loc, $code) = @_;
    local $c->{base} = "$base/$loc";
    local $c->{kid} = $loc eq 'acme' ? $kid90 : $kid7;
    return $code->();
}

sub to_loc { my ($url, $loc) = @_; $url =~ s{/acme7?/}{/$loc/}; $url }

my $n = 0;
sub csr_der {
    my ($name) = @_;
    $n++;
    my $csr = $t->dir . "/c$n.csr";
    PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-keyout', $t->dir . "/c$n.key",
        '-subj', "/CN=$name", '-addext', "subjectAltName=DNS:$name",
        '-outform', 'DER', '-out', $csr);
    return PKITest::slurp($csr);
}

# an order for NAME made ready at LOC: (order URL, finalize URL, its key)
sub ready_at {
    my ($loc, $name) = @_;
    my $r = at($loc, sub { $c->ready($name) });
    is($r->{ready}{json}{status} // '', 'ready', "$name: ready at /$loc/");
    my $url = $r->{headers}{location} // '';
    my ($oid) = $url =~ m{/([^/]+)$};
    my ($key) = $t->redis_keys("*:order:$oid");
    return ($url, $r->{json}{finalize} // '', $key);
}

# finalize at LOC with a CSR for DNS, the order polled valid there and its
# certificate saved as NAME.pem: (finalize answer, certificate file or
# undef)
sub finalize_at {
    my ($loc, $order, $fin, $dns, $name) = @_;
    return at($loc, sub {
        my $f = $c->_post(to_loc($fin, $loc),
                          { csr => encode_base64url(csr_der($dns)) });
        return ($f, undef) if $f->{status} != 200;
        my $o = $c->_poll(to_loc($order, $loc), 'valid');
        my $cu = $o->{json}{certificate} or return ($f, undef);
        my $cr = $c->_post($cu, undef);
        return ($f, $cr->{status} == 200
                    ? $t->save_first_cert($cr->{content}, $name) : undef);
    });
}

sub life {
    my ($file) = @_;
    my ($nb, $na) = $t->x509_dates($file);
    return defined $na ? $na - $nb + 1 : -1;
}

# --- made at /acme7/, finalized at /acme/: refused, nothing changes -----

my ($o7, $f7, $k7) = ready_at('acme7', 'seven.example');
ok($k7, 'the order is stored');
my $stored = $t->redis_raw('GET', $k7);
like($stored, qr/"template":\s*"server"/,
     'the order keeps the template it is issued with');

my ($f, $cert) = finalize_at('acme', $o7, $f7, 'seven.example', 'cross');
is($f->{status}, 403, 'finalize at the sibling: 403');
is($f->{problem}, 'unauthorized', '... unauthorized');
is($f->{json}{detail} // '',
   'this order was created at another ACME location (template "server"); '
   . 'finalize it there', '... the detail names the order\'s template')
    or diag($f->{content});
ok(!defined $cert, '... no certificate');
my $why = 'refused: it was made for template "server", this location '
          . 'issues it with "acme"';
ok($t->wait_log(qr/\Q$why\E/, 5),
   'the error log says why');
is($t->redis_raw('GET', $k7), $stored, 'the stored order is unchanged');

my $o = at('acme7', sub { $c->_post($o7, undef) });
is($o->{json}{status} // '', 'ready', 'the order is still ready');

# --- finalized where it was made: 7 days ----------------------------------

($f, $cert) = finalize_at('acme7', $o7, $f7, 'seven.example', 'seven');
is($f->{status}, 200, 'finalize at /acme7/: 200') or diag($f->{content});
ok($cert, '... a certificate');
SKIP: {
    skip 'no certificate', 3 if !$cert;
    my ($ok, $out) = $t->verify_chain($cert);
    ok($ok, '... it verifies') or diag($out);
    is(life($cert), 7 * 86400, '... valid 7 days (template server)');

    # downloading from the sibling is harmless: it is issued already
    my $d = at('acme', sub {
        $c->_post(to_loc($o7, 'acme') =~ s{/order/}{/cert/}r, undef) });
    is($d->{status}, 200, 'the sibling serves the issued certificate');
}

# --- made at /acme/, finalized there: 90 days ------------------------------

my ($o90, $f90) = ready_at('acme', 'ninety.example');
($f, $cert) = finalize_at('acme', $o90, $f90, 'ninety.example',
                           'ninety');
is($f->{status}, 200, 'made and finalized at /acme/: 200')
    or diag($f->{content});
ok($cert && life($cert) == 90 * 86400, '... valid 90 days (template acme)');

# --- an order stored before orders kept their template ----------------------

my ($oold, $fold, $kold) = ready_at('acme7', 'old.example');
my $j = JSON::PP->new->canonical;
my $doc = $j->decode($t->redis_raw('GET', $kold));
ok(delete $doc->{template}, 'an order made older: its template dropped');
$t->redis_raw('SET', $kold, $j->encode($doc), 'KEEPTTL');

($f, $cert) = finalize_at('acme', $oold, $fold, 'old.example', 'old');
is($f->{status}, 200, 'finalized at the sibling as before an upgrade: 200')
    or diag($f->{content});
ok($cert && life($cert) == 90 * 86400,
   '... with the finalizing location\'s template, as before');

$t->stop_all;
done_testing();
