#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A CRL rebuild that fails keeps the stored CRL.  A revocation makes the
# stored CRL due for a rebuild; when the worker that wins crl_lock cannot
# sign (the PKCS#11 token gone: its SoftHSM2 token directory renamed away,
# as in t/fault_token.t), the stored CRL, still within its nextUpdate, is
# served (it did: 503, the stored CRL thrown away), with an error-log line
# saying the rebuild failed.  A second nginx sharing the Redis and the PKI
# holds no CRL in memory and has no local copy (pki_crl_cache left out),
# so what it serves comes from pki_crl_current alone.  Once the token is
# back, the CRL is rebuilt and lists the revocation.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;

sub no_copy {
    my ($conf) = @_;
    $conf =~ s{\n\s*pki_crl_cache\s[^;]*;}{}g or die 'no pki_crl_cache';
    return $conf;
}

$t->start_nginx(no_copy($t->render_conf));

my $dir = $t->dir;
my $pki = $t->pki;
my $crl = 'http://127.0.0.1:' . $t->http_port . '/crl/issuing.crl';

my ($tokendir) = (PKITest::slurp($t->softhsm_conf) // '')
    =~ /^\s*directories\.tokendir\s*=\s*(\S+)\s*$/m;
ok($tokendir && -d $tokendir, "token directory $tokendir")
    or BAIL_OUT('no tokendir in ' . $t->softhsm_conf);
my $away_now;
END { rename($away_now->[1], $away_now->[0]) if $away_now; }

sub crl_number {
    my ($body) = @_;
    no warnings 'portable';     # numbers from Redis's clock, > 32 bits
    PKITest::spew("$dir/crl.der", $body);
    my ($rc, $out) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
        '-in', "$dir/crl.der", '-noout', '-crlnumber']);
    return $out =~ /crlNumber=(?:0x)?([0-9A-Fa-f]+)/ ? hex($1) : -1;
}

sub lists {
    my ($body, $serial) = @_;
    PKITest::spew("$dir/crl-l.der", $body);
    my ($rc, $out) = PKITest::run_cmd(['openssl', 'crl', '-inform', 'DER',
        '-in', "$dir/crl-l.der", '-noout', '-text']);
    return $out =~ /Serial Number: 0*\Q$serial\E\b/i ? 1 : 0;
}

my ($r0, $serial) = $t->enroll_serial('rebuild-fail');
is($r0->{code}, 200, 'enrolled') or $t->give_up('enrollment failed');

my $r = $t->curl('GET', $crl, quiet => 1);
is($r->{code}, 200, 'CRL built and stored') or diag($r->{body});
my $n0 = crl_number($r->{body});
ok($n0 > 0, "  number $n0");

# --- second nginx: same Redis, same PKI, no CRL in memory ---------------------

my $t2 = $t->second_nginx(\&no_copy);
my $crl2 = 'http://127.0.0.1:' . $t2->http_port . '/crl/issuing.crl';
my $log2 = $t2->error_log;

# --- the token goes away, then a revocation: the stored CRL is due -----------

$away_now = [$tokendir, "$tokendir.away"];
ok(rename($tokendir, "$tokendir.away"), 'token directory moved away');

my $rv = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                  . '/pki/admin/revoke', user => 'admin:admin',
                  data => qq({"serial":"$serial","reason":"keyCompromise"}),
                  headers => ['Content-Type: application/json']);
is($rv->{code}, 200, 'revoked through the admin API') or diag($rv->{body});

# the failed rebuild is this request's, or a refresh's of either server
# (whichever took the build lock)
my %off = map { $_ => length(PKITest::slurp($_) // '') }
          ($log2, $t->error_log);
$r = $t2->curl('GET', $crl2, quiet => 1, max_time => 30);
is($r->{code}, 200, 'token gone, rebuild due: the stored CRL is served, '
   . 'not an error') or diag("$r->{code} $r->{body}");
is($r->{code} == 200 ? crl_number($r->{body}) : -1, $n0,
   '  the stored one (its number)');
ok($r->{code} == 200 && !lists($r->{body}, $serial),
   '  (which does not list the revocation yet)');
my $t0 = time;
my $logged = 0;
while (time - $t0 < 5 && !$logged) {
    $logged = grep {
        substr(PKITest::slurp($_) // '', $off{$_})
            =~ /\[error\].*pki\ crl:\ (?:refresh\ of\ )?"issuing":
                .*rebuilding\ failed/x
    } keys %off;
    sleep 0.1 if !$logged;
}
ok($logged, '  error log: the rebuild failed');

# --- the token is back: rebuilt, the revocation listed ------------------------

ok(rename("$tokendir.away", $tokendir), 'token directory moved back');
$away_now = undef;
my $listed = 0;
$t0 = time;
while (time - $t0 < 20 && !$listed) {
    sleep 0.5;
    $r = $t2->curl('GET', $crl2, quiet => 1, max_time => 30);
    $listed = $r->{code} == 200 && lists($r->{body}, $serial);
}
ok($listed, 'token back: a new CRL lists the revocation');

$t2->stop_nginx;
$t->stop_nginx;
done_testing();
