#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# One DAC per device key across Matter batches and EST enrollments under
# the Matter DAC template (label matter-dac), through nginx with curl: EST
# consults the PAI's index of the device keys it certified and is indexed
# by it.  A batch DAC, then EST of the same CSR: the batch's DAC, byte for
# byte (a retry after a lost answer), no record made; the same key with
# another subject: 400.  An EST DAC, then a batch with that key: the EST
# DAC; EST again: the same DAC.  A key claimed by a batch right now: 503
# with Retry-After; a key whose DAC is revoked keyCompromise: 400.
# Before, EST ignored the index: each EST of a batch's key minted a second
# DAC, and a batch minted a second DAC for a key EST had certified.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64 decode_base64);
use JSON::PP;
use PKITest;

plan(skip_all => 'ngx_http_matter_module.so not built')
    if !-f "$PKITest::BUILD/ngx_http_matter_module.so";

my $t = PKITest->new;
my $pki = $t->pki;
$t->make_matter_pki($pki);
$t->start_redis;
$t->start_nginx;

my $json = JSON::PP->new->canonical;
my $dir = $t->dir;
my $url = 'https://127.0.0.1:' . $t->https_port . '/matter/dac/batch';
my $ix = 'pki:{ca:matter-pai}:matterdac:';

sub batch {
    my ($csrs) = @_;
    my $r = $t->curl('POST', $url, data => $json->encode({ csrs => $csrs }),
                     user => 'demo:demo', max_time => 60,
                     headers => [ 'Content-Type: application/json' ]);
    $r->{json} = eval { $json->decode($r->{body}) } if $r->{body} =~ /^\{/;
    return $r;
}

sub records { scalar $t->redis_keys('pki:{ca:matter-pai}:cert:*') }

# EST simpleenroll under matter-dac: { code, der (the DAC), body, ... }
my $n = 0;
sub est {
    my ($csr) = @_;
    my $r = $t->est_post('simpleenroll', $csr, label => 'matter-dac',
                         quiet => 1);
    my $pem = $r->{code} == 200 ? $t->p7_to_pem($r->{body}) : undef;
    my $f = $pem ? $t->save_first_cert($pem, 'est' . ++$n) : undef;
    if ($f) {
        my ($rc, $der) = run_cmd(['openssl', 'x509', '-in', $f, '-outform',
                                  'DER']);
        $r->{der} = $der if $rc == 0;
    }
    return $r;
}

sub serial_of {
    my ($der) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-inform', 'DER', '-noout',
                              '-serial'], stdin => $der);
    return $out =~ /serial=(\S+)/ ? uc $1 : '';
}

# the index entry of a key (file), as the PAI's index names it
sub entry_of {
    my ($key) = @_;
    my ($rc, $spki) = run_cmd(['openssl', 'pkey', '-in', $key, '-pubout',
                               '-outform', 'DER']);
    my ($rc2, $h) = run_cmd(['openssl', 'dgst', '-sha256', '-r'],
                            stdin => $spki);
    my ($hex) = $h =~ /^([0-9a-f]{64})/;
    return $ix . ($hex // 'none');
}

sub log_text { PKITest::slurp($t->error_log) // '' }

# --- a batch DAC, then EST of its key ------------------------------------

my ($csr_a, $key_a) = $t->make_csr('a', subj => '/CN=line-9 unit 1');
my $r = batch([ encode_base64($csr_a, '') ]);
is($r->{code}, 200, 'batch DAC for key A: 200') or diag($r->{body});
my $dac_a = decode_base64($r->{json}{certificates}[0] // '');
my $n0 = records();

$r = est($csr_a);
is($r->{code}, 200, 'EST of the same CSR: 200') or diag($r->{body});
ok(defined $r->{der} && $r->{der} eq $dac_a,
   '... the batch\'s DAC, byte for byte');
is(records(), $n0, '... no record made');
like(log_text(), qr/the key already has the DAC [0-9A-F]+, answered again/,
     '... the error log says it answered the DAC the key had');

my ($csr_a2) = $t->make_csr('a2', subj => '/CN=line-9 unit 1b');
{
    my ($rc) = run_cmd(['openssl', 'req', '-new', '-key', $key_a, '-subj',
                        '/CN=line-9 unit 1b', '-outform', 'DER', '-out',
                        "$dir/a-other.der"]);
    $csr_a2 = PKITest::slurp("$dir/a-other.der") if $rc == 0;
}
$r = est($csr_a2);
is($r->{code}, 400, 'EST of key A with another subject: 400')
    or diag("$r->{code} $r->{body}");
like($r->{body}, qr/its key has the DAC \S+, of another subject: one DAC/,
     '... saying why') or diag($r->{body});
is(records(), $n0, '... no record made');

# --- an EST DAC, then a batch with its key -------------------------------

my ($csr_b, $key_b) = $t->make_csr('b', subj => '/CN=line-9 unit 2');
$r = est($csr_b);
is($r->{code}, 200, 'EST DAC for key B: 200') or diag($r->{body});
my $dac_b = $r->{der} // '';
is(records(), $n0 + 1, '... one record');
is($t->redis_raw('GET', entry_of($key_b)), 's:' . serial_of($dac_b) . "\n",
   '... the index names its serial');

$r = batch([ encode_base64($csr_b, '') ]);
is($r->{code}, 200, 'a batch with key B: 200') or diag($r->{body});
ok(decode_base64($r->{json}{certificates}[0] // '') eq $dac_b,
   '... the EST DAC, byte for byte');
is(records(), $n0 + 1, '... no record made');

$r = est($csr_b);
is($r->{code}, 200, 'EST of key B again (a retry): 200');
ok(defined $r->{der} && $r->{der} eq $dac_b, '... the same DAC');
is(records(), $n0 + 1, '... no record made');

# --- a key claimed by a batch right now: 503 ------------------------------

my ($csr_c, $key_c) = $t->make_csr('c', subj => '/CN=line-9 unit 3');
$t->redis('SET', entry_of($key_c), 'c:0123456789abcdef0123456789abcdef',
          'EX', '60');
my @keys0 = $t->state_keys;
$r = est($csr_c);
is($r->{code}, 503, 'EST of a key a batch claims: 503')
    or diag("$r->{code} $r->{body}");
ok($r->{headers}{'retry-after'}, '... with Retry-After');
like($r->{body}, qr/making the DAC of this key; retry/, '... saying why');
is_deeply([ $t->state_keys ], \@keys0, '... nothing written');
$t->redis('DEL', entry_of($key_c));
$r = est($csr_c);
is($r->{code}, 200, 'the claim gone: 200') or diag($r->{body});
is($t->redis_raw('GET', entry_of($key_c)),
   's:' . serial_of($r->{der} // '') . "\n", '... indexed');

# --- EST and a batch with one key at once: one DAC ------------------------

{
    my $n2 = records();
    my ($same, $fine) = (0, 0);
    for my $k (1 .. 4) {
        my ($csr) = $t->make_csr("e$k", subj => "/CN=line-9 race $k");
        my $pid = fork // die "fork: $!";
        if ($pid == 0) {
            my $x = batch([ encode_base64($csr, '') ]);
            PKITest::spew("$dir/race$k", "$x->{code}\n"
                          . ($x->{headers}{'retry-after'} // '') . "\n"
                          . ($x->{json}{certificates}[0] // ''));
            exit 0;
        }
        my $e = est($csr);
        waitpid($pid, 0);
        my ($code, $ra, $b64) = split /\n/,
            PKITest::slurp("$dir/race$k") // '', 3;
        my @ok = grep { $_ } ($e->{code} == 200 ? $e->{der} : undef),
                             ($code == 200 ? decode_base64($b64 // '') : undef);
        # each 200, or a 503 with Retry-After; two 200s: one DAC
        $fine++ if ($e->{code} == 200 || ($e->{code} == 503
                                          && $e->{headers}{'retry-after'}))
                   && ($code == 200 || ($code == 503 && $ra));
        $same++ if @ok && (@ok == 1 || $ok[0] eq $ok[1]);
    }
    is($fine, 4, 'EST and a batch at once, 4 keys: each 200 or 503 with '
       . 'Retry-After');
    is($same, 4, '... the 200s of a key name one DAC');
    ok(records() - $n2 <= 4, '... at most one record per key ('
       . (records() - $n2) . ')');
}

# --- an enrollment refused by the issuance leaves the key free ------------

my ($csr_d, $key_d) = $t->make_csr('d', subj => '/CN=line-9 unit 4',
                                   curve => 'P-384');
@keys0 = $t->state_keys;
$r = est($csr_d);
is($r->{code}, 400, 'EST with a P-384 key: 400');
is_deeply([ $t->state_keys ], \@keys0, '... no claim or record left');

# --- a key whose DAC is revoked keyCompromise: 400 ------------------------

my $sb = serial_of($dac_b);
$t->redis('HSET', "pki:{ca:matter-pai}:cert:$sb", 'status', 'revoked',
          'reason', '1');
my $n1 = records();
$r = est($csr_b);
is($r->{code}, 400, 'EST of a key whose DAC is revoked keyCompromise: 400')
    or diag("$r->{code} $r->{body}");
like($r->{body}, qr/DAC \Q$sb\E is revoked: one DAC per device key/i,
     '... saying why') or diag($r->{body});
is(records(), $n1, '... no record made');

$t->stop_nginx;
done_testing();
