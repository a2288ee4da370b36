#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# est_bind_names: a client that shows a certificate (ssl_verify_client)
# gets simpleenroll and serverkeygen only for that certificate's subject
# and subjectAltNames (RFC 7030 3.3.2, 4.2.1).  Other names: 403 with an
# error-log line naming what differs, nothing in Redis, counted as an auth
# refusal in the metrics and logged in the transaction log.  A subject
# spelt otherwise (ASCII case) is the same name: the certificate's own
# spelling is issued.  Off (the
# default): other names as before.  A request without a client
# certificate (password only) is not bound.  The oracle is the openssl
# CLI; Redis is read with redis-cli.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64 decode_base64);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
my $pki = $t->pki;

# /bound/: client certificates only, names bound; /open/: the same without
# the binding; /pw/: auth_basic, names bound; /nest/: bound in the outer
# location, EST in the inner one
my $locs = <<"LOC";
        location /bound/.well-known/est/ {
            est issuing device;
            est_bind_names on;
        }

        location /open/.well-known/est/ {
            est issuing device;
        }

        location /pw/.well-known/est/ {
            est issuing device;
            est_bind_names on;
            auth_basic "EST";
            auth_basic_user_file $pki/htpasswd;
        }

        location /nest/ {
            est_bind_names on;

            location /nest/.well-known/est/ {
                est issuing device;
            }
        }

LOC

my $conf = $t->render_conf;
$conf =~ s{^(\s*location /\.well-known/est/ \{)}{$locs$1}m
    or BAIL_OUT('cannot add the EST locations to the config');
$t->start_nginx($conf);

my $base = 'https://127.0.0.1:' . $t->https_port;

# POST DER base64 to /PREFIX/.well-known/est/OP; o: user, cert, key
sub post {
    my ($prefix, $op, $der, %o) = @_;
    return $t->curl('POST', "$base$prefix/.well-known/est/$op",
                    data => encode_base64($der),
                    headers => ['Content-Type: application/pkcs10'],
                    user => $o{user}, cert => $o{cert}, key => $o{key});
}

my $n_csr = 0;

sub csr {
    my ($subj, $san) = @_;
    my ($der) = $t->make_csr('c' . ++$n_csr, subj => $subj,
                             $san ? (san => $san) : ());
    return $der;
}

sub cert_of {
    my ($name, $r) = @_;
    my $pem = $t->p7_to_pem($r->{body}) or return undef;
    return $t->save_first_cert($pem, $name);
}

# the certificate of a serverkeygen answer
sub keygen_cert {
    my ($name, $r) = @_;
    my ($b) = ($r->{headers}{'content-type'} // '')
        =~ m{^multipart/mixed\s*;.*boundary="?([^";]+)"?}i or return undef;
    for my $p (split /\r?\n?--\Q$b\E(?:--)?\r?\n?/, $r->{body}) {
        my ($hd, $bd) = split /\r?\n\r?\n/, $p, 2;
        next if !defined $bd || $hd !~ m{application/pkcs7-mime}i;
        my $pem = $t->p7_to_pem($bd) or return undef;
        return $t->save_first_cert($pem, $name);
    }
    return undef;
}

sub names_ok {
    my ($name, $cert, $cn, @sans) = @_;
    ok($cert, "$name: a certificate") or return;
    my $txt = $t->x509_text($cert);
    like($txt, qr/Subject:.*CN\s*=\s*\Q$cn\E\s*$/m, "$name: CN=$cn");
    like($txt, qr/\Q$_\E/, "$name: SAN $_") for @sans;
    my ($ok, $out) = $t->verify_chain($cert);
    ok($ok, "$name: verifies to the root") or diag($out);
}

sub log_since {
    my ($from) = @_;
    my $l = slurp($t->error_log) // '';
    return substr($l, $from);
}

sub log_size { return length(slurp($t->error_log) // '') }


my $DEV = 'pki_requests_total{protocol="est",ca="issuing",template="device"';

# --- the device's certificate: CN=dev-1, two SANs ----------------------------

my $SANS = 'DNS:dev-1.example,IP:10.0.0.1';
my ($dcsr, $dkey) = $t->make_csr('dev1', subj => '/CN=dev-1', san => $SANS);
my $r = post('', 'simpleenroll', $dcsr, user => 'demo:demo');
is($r->{code}, 200, 'the device certificate (password)') or diag($r->{body});
my $dev = cert_of('dev1', $r)
    or $t->give_up('no device certificate');
my %tls = (cert => $dev, key => $dkey);

# --- bound: the certificate's own names --------------------------------------

$r = post('/bound', 'simpleenroll', csr('/CN=dev-1', $SANS), %tls);
is($r->{code}, 200, 'bound: the same names: 200') or diag($r->{body});
my $c = cert_of('same', $r);
names_ok('bound, same names', $c, 'dev-1', 'DNS:dev-1.example',
         'IP Address:10.0.0.1');
if ($c) {
    my $serial = $t->x509_field($c, 'serial');
    my $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
    is($h->{status}, 'good', '  recorded good in Redis');
}

# the SANs as a set: another order is the same names
$r = post('/bound', 'simpleenroll',
          csr('/CN=dev-1', 'IP:10.0.0.1,DNS:dev-1.example'), %tls);
is($r->{code}, 200, 'bound: the same SANs in another order: 200')
    or diag($r->{body});

$r = post('/bound', 'serverkeygen', csr('/CN=dev-1', $SANS), %tls);
is($r->{code}, 200, 'bound serverkeygen: the same names: 200')
    or diag($r->{body});
names_ok('bound serverkeygen', keygen_cert('skg-same', $r), 'dev-1',
         'DNS:dev-1.example', 'IP Address:10.0.0.1');

# the subject compares as X509_NAME_cmp() does (ASCII case folded), and
# the certificate's own spelling is issued, not the CSR's
for my $spell ('DEV-1', 'Dev-1') {
    $r = post('/bound', 'simpleenroll', csr("/CN=$spell", $SANS), %tls);
    is($r->{code}, 200, "bound: CN=$spell: 200") or diag($r->{body});
    names_ok("bound, CN=$spell", cert_of("spell-$spell", $r), 'dev-1',
             'DNS:dev-1.example');
}
$r = post('/bound', 'serverkeygen', csr('/CN=DEV-1', $SANS), %tls);
is($r->{code}, 200, 'bound serverkeygen: CN=DEV-1: 200') or diag($r->{body});
names_ok('bound serverkeygen, CN=DEV-1', keygen_cert('skg-spell', $r),
         'dev-1', 'DNS:dev-1.example');

# --- bound: other names refused, nothing written -----------------------------

my @keys0 = $t->state_keys;
my $certs0 = scalar(my @k = $t->redis_keys('pki:{ca:issuing}:cert:*'));
my $m0 = $t->metrics_scrape;
my $from = log_size();
my $refused = 0;

my @cases = (
    [ 'another CN', '/CN=dev-2', $SANS,
      qr/subject differs/, qr/CSR subject "CN=dev-2", client certificate (?#
        )subject "CN=dev-1"/ ],
    [ 'an extra SAN', '/CN=dev-1', "$SANS,DNS:dev-2.example",
      qr/subjectAltName differs/,
      qr/"DNS:dev-2\.example" not in the client certificate/ ],
    [ 'a missing SAN', '/CN=dev-1', 'DNS:dev-1.example',
      qr/subjectAltName differs/,
      qr/"IP:10\.0\.0\.1" of the client certificate left out/ ],
    [ 'no SAN', '/CN=dev-1', undef,
      qr/subjectAltName differs/,
      qr/"DNS:dev-1\.example" of the client certificate left out/ ],
    [ 'another SAN instead', '/CN=dev-1', 'DNS:dev-1.example,IP:10.0.0.2',
      qr/subjectAltName differs/,
      qr/"IP:10\.0\.0\.2" not in the client certificate, "IP:10\.0\.0\.1" (?#
        )of the client certificate left out/ ],
    [ 'another CN and SAN', '/CN=www.bank.example', 'DNS:www.bank.example',
      qr/subject and subjectAltName differ/, qr/CN=www\.bank\.example/ ],
);

for my $op ('simpleenroll', 'serverkeygen') {
    for my $k (@cases) {
        my ($name, $subj, $san, $body_re, $log_re) = @$k;
        my $at = log_size();
        $r = post('/bound', $op, csr($subj, $san), %tls);
        is($r->{code}, 403, "bound $op, $name: 403") or diag($r->{body});
        $refused++;
        like($r->{body}, $body_re, '  the answer says what differs');
        unlike($r->{body}, qr/BEGIN|MII/, '  no certificate, no key');
        my $l = log_since($at);
        like($l, qr/est: $op from \S+ failed: the CSR's .*client (?#
                   )certificate's \(.*$log_re/, '  the error log names it')
            or diag($l);
    }
}

my $l = log_since($from);
unlike($l, qr/BEGIN CERTIFICATE REQUEST|MII[A-Za-z0-9+\/]{20}/,
       'the error log has no CSR');
is_deeply([$t->state_keys], \@keys0, 'refusals: Redis unchanged')
    or diag(explain([$t->state_keys]));
is(scalar(@k = $t->redis_keys('pki:{ca:issuing}:cert:*')), $certs0,
   '  no certificate record');
my @named;
for my $key ($t->redis_keys('*')) {
    next if ($t->redis_raw('type', $key) // '') !~ /hash/;
    my $h = $t->redis_hash($key);
    push @named, $key
        if grep { /dev-2|bank\.example|10\.0\.0\.2/ } values %$h;
}
is_deeply(\@named, [], '  no hash in Redis names a refused name');

# --- the refusals counted and in the transaction log -------------------------

sleep 0.5;
my $m1 = $t->metrics_scrape;
is(($m1->{"$DEV,outcome=\"auth\"}"} // 0) - ($m0->{"$DEV,outcome=\"auth\"}"}
                                             // 0),
   $refused, "metrics: $refused est auth refusals");
is(($m1->{"$DEV,outcome=\"success\"}"} // 0)
   - ($m0->{"$DEV,outcome=\"success\"}"} // 0), 0, '  no success');

my @audit;
for (1 .. 50) {
    @audit = grep { $_->{type} eq 'request'
                    && ($_->{protocol} // '') eq 'est'
                    && ($_->{reason} // '') =~ /client certificate/ }
             $t->audit_entries;
    last if @audit >= $refused;
    select(undef, undef, undef, 0.2);
}
is(scalar(@audit), $refused, "transaction log: $refused refusals");
is(scalar(grep { ($_->{status} // '') eq 'forbidden' } @audit), $refused,
   '  status forbidden');
is(scalar(grep { ($_->{requester} // '') =~ /CN\s*=\s*dev-1/ } @audit),
   $refused, '  the requester is the client certificate')
    or diag(explain($audit[0]));

# --- bound: simplereenroll unchanged, no client certificate -------------------

$r = post('/bound', 'simplereenroll', csr('/CN=dev-1', $SANS), %tls);
is($r->{code}, 200, 'bound simplereenroll: the same names: 200')
    or diag($r->{body});
$r = post('/bound', 'simplereenroll', csr('/CN=dev-2', $SANS), %tls);
is($r->{code}, 403, 'bound simplereenroll: another CN: 403');

$r = post('/bound', 'simpleenroll', csr('/CN=dev-1', $SANS));
is($r->{code}, 401, 'bound, no client certificate, no password: 401');

# --- off (the default): other names as before ------------------------------

$r = post('/open', 'simpleenroll', csr('/CN=dev-2', 'DNS:dev-2.example'),
          %tls);
is($r->{code}, 200, 'off: another CN and SAN with the client certificate: '
   . '200') or diag($r->{body});
names_ok('off', cert_of('open', $r), 'dev-2', 'DNS:dev-2.example');

$r = post('/open', 'serverkeygen', csr('/CN=dev-3', 'DNS:dev-3.example'),
          %tls);
is($r->{code}, 200, 'off: serverkeygen for other names: 200')
    or diag($r->{body});

# --- a password, no client certificate: not bound ------------------------------

$r = post('/pw', 'simpleenroll', csr('/CN=dev-4', 'DNS:dev-4.example'),
          user => 'demo:demo');
is($r->{code}, 200, 'bound, password only: other names: 200')
    or diag($r->{body});
names_ok('password only', cert_of('pw', $r), 'dev-4', 'DNS:dev-4.example');

# a password and a client certificate: bound to the certificate
$r = post('/pw', 'simpleenroll', csr('/CN=dev-5', 'DNS:dev-5.example'),
          user => 'demo:demo', %tls);
is($r->{code}, 403, 'bound, password and client certificate: other names: '
   . '403');
$r = post('/pw', 'simpleenroll', csr('/CN=dev-1', $SANS),
          user => 'demo:demo', %tls);
is($r->{code}, 200, '  its own names: 200') or diag($r->{body});

# --- inherited by a nested location -------------------------------------------

$r = post('/nest', 'simpleenroll', csr('/CN=dev-6', $SANS), %tls);
is($r->{code}, 403, 'nested location: bound (403)');
$r = post('/nest', 'simpleenroll', csr('/CN=dev-1', $SANS), %tls);
is($r->{code}, 200, '  its own names: 200') or diag($r->{body});

$t->stop_nginx;

# --- nginx -t ----------------------------------------------------------------

my $bad = $t->render_conf;
$bad =~ s{^(\s*est issuing device;)}{$1\n            est_bind_names yes;}m
    or BAIL_OUT('no est line');
my $file = $t->write_conf($bad, 'bad.conf');
my ($ok, $out) = $t->nginx_test($file);
ok(!$ok, 'nginx -t: est_bind_names yes refused');
like($out, qr/\[emerg\].*"est_bind_names".*bad\.conf:\d+/,
     '  [emerg] with file and line') or diag($out);

done_testing();
