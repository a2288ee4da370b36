#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Every protocol over HTTP/2 (listen ... ssl http2, ALPN h2), where nginx
# reads request bodies from DATA frames and a body may come without
# Content-Length: ACME (directory, newNonce, a whole issuance through
# t/lib/ACMELoad.pm over curl --http2, bodies over acme_max_body_size with
# and without Content-Length), EST (cacerts, simpleenroll, 401, 413), SCEP
# (GetCACaps, GetCACert, PKIOperation) and OCSP (POST), then 50 concurrent
# streams on one connection, and clients that reset their streams or cut
# the connection while their ACME requests wait in the thread pool (Redis
# stopped with SIGSTOP): no crash, no alert, no connection left behind,
# the server still answers.  Streams are driven by t/lib/h2client.py
# (python3-h2); the oracles are curl, the openssl CLI and Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64 decode_base64 encode_base64url);
use Time::HiRes qw(sleep time);
use PKITest;
use ACMELoad;
use SCEPMsg;

my $PY = '/usr/bin/python3';
my $H2C = "$FindBin::Bin/lib/h2client.py";

plan(skip_all => 'python3-h2 not installed: apt-get install python3-h2')
    if (run_cmd([$PY, '-c', 'import h2'], timeout => 20))[0] != 0;
plan(skip_all => 'curl without HTTP/2: apt-get install curl')
    if (run_cmd(['curl', '-V']))[1] !~ /\bHTTP2\b/;
plan(skip_all => 'CryptX not installed: apt-get install libcryptx-perl')
    if !ACMELoad::available();

my $t = PKITest->new;
my $pki = $t->pki;
my $dir = $t->dir;
my $hport = PKITest::free_port();

# the demo config with HTTP/2 on its TLS listener, and the OCSP responder
# and SCEP (served over plain HTTP in the demo) on it too
my $conf = $t->render_conf('--acme-http-port', $hport);
my $https = $t->https_port;
$conf =~ s{listen 127\.0\.0\.1:$https ssl;}
          {listen 127.0.0.1:$https ssl http2;} or die 'no TLS listener';
$conf =~ s{(\n(\s*)location / \{\n\s*return 404;)}{
$2location /acme-small/ {
$2    acme issuing acme;
$2    acme_max_body_size 2k;
$2}
$2location /ocsp {
$2    ocsp_responder issuing;
$2}
$2location /scep {
$2    scep issuing scep;
$2    scep_ra $pki/ra.pem $pki/ra.key;
$2    scep_challenge file=$pki/scep-challenge;
$2}
$1} or die 'no default location in the TLS server';

scep_setup($t, $conf);          # starts Redis and nginx, builds scepmsg

my $BASE = "https://127.0.0.1:$https";
my $master = $t->{children}{nginx};
my @workers = $t->workers_of($master);
my $JSON = JSON::PP->new->canonical;

# curl over HTTP/2; {h2} says whether the answer really came over HTTP/2
sub h2curl {
    my ($method, $path, %o) = @_;
    my @x = ('--http2');
    push @x, '-I' if $method eq 'HEAD';
    my $r = $t->curl($method, $BASE . $path, %o,
                     extra => [@x, @{ $o{extra} || [] }]);
    $r->{h2} = $r->{head} =~ m{^HTTP/2 \d{3}} ? 1 : 0;
    return $r;
}

# h2client.py: several streams on one connection; returns its answer with
# the bodies decoded
sub h2run {
    my (%spec) = @_;
    $spec{port} = $https;
    $spec{cafile} = "$pki/root.pem";
    $spec{timeout} //= 30;
    my ($rc, $out, $err) = run_cmd([$PY, $H2C],
        stdin => $JSON->encode(\%spec), timeout => $spec{timeout} + 10);
    my $a = eval { decode_json($out) };
    if (!$a) {
        diag("h2client: rc $rc $err");
        return { responses => [], alpn => '' };
    }
    $_->{body} = decode_base64($_->{body_b64}) for @{ $a->{responses} };
    return $a;
}

sub problem_413 {
    my ($name, $status, $ct, $body) = @_;
    is($status, 413, "$name: 413");
    like($ct // '', qr{^application/problem\+json}, "$name: problem+json");
    my $j = eval { decode_json($body) } || {};
    is($j->{type} // '', 'urn:ietf:params:acme:error:malformed',
       "$name: malformed");
}

sub log_clean {
    my ($name) = @_;
    my $log = slurp($t->error_log) // '';
    my @bad = grep { /\[(alert|crit|emerg)\]|exited on signal/ }
              split /\n/, $log;
    ok(!@bad, "$name: no alert, crit or crashed worker in the error log")
        or diag(join("\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]));
}

# connections the server still holds open (ESTAB or CLOSE-WAIT on its
# port): a request whose reference was never dropped keeps its connection
sub server_conns {
    my $out = `ss -Htn state established state close-wait '( sport = :$https )' 2>/dev/null`;
    return scalar grep { /\S/ } split /\n/, $out;
}

sub no_conns_left {
    my ($name) = @_;
    my $n;
    for (1 .. 100) {
        $n = server_conns();
        last if !$n;
        sleep 0.1;
    }
    is($n, 0, "$name: nginx holds no connection of the client any more");
}

# --- a tiny JWS for the h2client's ACME POSTs -----------------------------

my $acct_key = Crypt::PK::ECC->new;
$acct_key->generate_key('secp256r1');

sub jws {
    my ($key, $url, $nonce, $payload) = @_;
    my $h = $key->export_key_jwk('public', 1);
    my %jwk = map { $_ => $h->{$_} } qw(kty crv x y);
    my $p64 = encode_base64url($JSON->encode({ alg => 'ES256', url => $url,
                                               nonce => $nonce,
                                               jwk => \%jwk }));
    my $pl64 = encode_base64url($JSON->encode($payload));
    my $sig = $key->sign_message_rfc7518("$p64.$pl64", 'SHA256');
    return $JSON->encode({ protected => $p64, payload => $pl64,
                           signature => encode_base64url($sig) });
}

# N fresh nonces, fetched with HEAD streams on one connection
sub nonces {
    my ($n) = @_;
    my $a = h2run(requests => [map { { method => 'HEAD',
                                       path => '/acme/new-nonce' } } 1 .. $n]);
    return map { $_->{headers}{'replay-nonce'} // 'none' }
           @{ $a->{responses} };
}

# a newAccount POST for h2client (a new key each: 201 each)
sub new_account_rq {
    my ($nonce, %o) = @_;
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    my $url = "$BASE/acme/new-account";
    return { method => 'POST', path => '/acme/new-account',
             headers => [['content-type', 'application/jose+json']],
             body_b64 => encode_base64(jws($k, $url, $nonce,
                         { termsOfServiceAgreed => JSON::PP::true }), ''),
             %o };
}

# --- ACME: directory, newNonce ---------------------------------------------

my $r = h2curl('GET', '/acme/directory');
ok($r->{h2}, 'directory: answered over HTTP/2') or diag($r->{head});
is($r->{code}, 200, 'directory: 200');
my $d = eval { decode_json($r->{body}) } || {};
like($d->{newNonce} // '', qr{^\Q$BASE\E/acme/new-nonce$}, 'directory: newNonce');
like($d->{newAccount} // '', qr{^\Q$BASE\E/acme/}, 'directory: newAccount');

$r = h2curl('HEAD', '/acme/new-nonce');
ok($r->{h2}, 'HEAD newNonce: HTTP/2');
is($r->{code}, 200, 'HEAD newNonce: 200');
like($r->{headers}{'replay-nonce'} // '', qr/^[\w-]{16,}$/,
     'HEAD newNonce: Replay-Nonce');
$r = h2curl('GET', '/acme/new-nonce');
ok($r->{h2}, 'GET newNonce: HTTP/2');
is($r->{code}, 204, 'GET newNonce: 204');
like($r->{headers}{'replay-nonce'} // '', qr/^[\w-]{16,}$/,
     'GET newNonce: Replay-Nonce');

# --- ACME: a whole issuance over HTTP/2 ----------------------------------

# HTTP::Tiny's request() for ACMELoad, spoken by curl --http2
{
    package H2Curl;
    sub new { bless { n => 0, h1 => 0 }, shift }
    sub request {
        my ($self, $method, $url, $args) = @_;
        $args ||= {};
        my $h = $args->{headers} || {};
        my @x = ('--http2');
        push @x, '-I' if $method eq 'HEAD';
        my $r = $t->curl($method, $url,
            headers => [map { "$_: $h->{$_}" } sort keys %$h],
            (defined $args->{content} ? (data => $args->{content}) : ()),
            extra => \@x);
        $self->{n}++;
        $self->{h1}++ if $r->{head} !~ m{^HTTP/2 \d{3}};
        return { status => $r->{code}, headers => $r->{headers},
                 content => $r->{body}, success => $r->{code} =~ /^2/ };
    }
}

my $www = "$dir/www";
mkdir $www;
ACMELoad::start_http01($t, $hport, $www);
my $h2c = H2Curl->new;
my $cl = ACMELoad->new(t => $t, base => "$BASE/acme", www => $www,
                       http => $h2c);
my ($csr) = $t->make_csr('acme-h2', subj => '/', san => 'DNS:h2.example');
my $iss = $cl->issue('h2.example', $csr);
ok($iss->{ok}, 'ACME issuance over HTTP/2')
    or diag(explain($iss));
cmp_ok($h2c->{n}, '>=', 8, "ACME: $h2c->{n} requests");
is($h2c->{h1}, 0, 'ACME: every answer came over HTTP/2');
SKIP: {
    skip 'no certificate', 3 if !$iss->{ok};
    my $leaf = $t->save_first_cert($iss->{pem}, 'acme-h2-leaf');
    my ($ok, $out) = $t->verify_chain($leaf);
    ok($ok, 'ACME certificate verifies to the root') or diag($out);
    like($t->x509_text($leaf) // '', qr/DNS:h2\.example/, 'ACME: the SAN');
    my $serial = uc $t->x509_field($leaf, 'serial');
    is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status}, 'good',
       'ACME: the Redis record');
}

# --- ACME: bodies over the cap ---------------------------------------------

my $big = "$dir/big.bin";
spew($big, 'x' x (100 * 1024));             # acme_max_body_size 64k

$r = h2curl('POST', '/acme/new-account', data_file => $big,
            headers => ['Content-Type: application/jose+json']);
ok($r->{h2}, 'ACME 413 with Content-Length: HTTP/2');
problem_413('ACME body over the cap with Content-Length', $r->{code},
            $r->{headers}{'content-type'}, $r->{body});

# without Content-Length: DATA frames only, the first 1k, then after a
# pause the rest, so that the cap is crossed in DATA frames that arrive
# after the content handler started reading; another stream on the same
# connection is served after it
my ($n1, $n2) = nonces(2);
my $a = h2run(requests => [
    { method => 'POST', path => '/acme/new-account', body_file => $big,
      content_length => JSON::PP::false, pause_after => 1024,
      resume_ms => 300,
      headers => [['content-type', 'application/jose+json']] },
    { method => 'POST', path => '/acme/new-account', body_file => $big,
      headers => [['content-type', 'application/jose+json']] },
    new_account_rq($n1, content_length => JSON::PP::false, at_ms => 300),
    { method => 'GET', path => '/acme/directory', at_ms => 300 }]);
is($a->{alpn}, 'h2', 'h2client: ALPN h2');
my ($nocl, $cl413, $small, $dirr) = @{ $a->{responses} };
problem_413('ACME body over the cap without Content-Length, read late',
            $nocl->{status}, $nocl->{headers}{'content-type'}, $nocl->{body});
like($nocl->{headers}{'replay-nonce'} // '', qr/^[\w-]{16,}$/,
     'ACME body over the cap without Content-Length: a Replay-Nonce');
ok($nocl->{ended}, 'ACME body over the cap without Content-Length: the '
   . 'answer ends its stream');
problem_413('ACME body over the cap, h2client with content-length',
            $cl413->{status}, $cl413->{headers}{'content-type'},
            $cl413->{body});
is($small->{status}, 201,
   'newAccount without Content-Length on the same connection: 201')
    or diag("$small->{status} $small->{body}");
is($dirr->{status}, 200, 'directory on the same connection after the 413s');
ok(!$a->{goaway}, 'no GOAWAY error for the connection');

# a cap below client_body_buffer_size: crossed in the DATA frame that
# fills the first body buffer, while what came before is still in memory
$a = h2run(requests => [
    { method => 'POST', path => '/acme-small/new-account', body_file => $big,
      content_length => JSON::PP::false, pause_after => 1024,
      resume_ms => 300,
      headers => [['content-type', 'application/jose+json']] },
    { method => 'GET', path => '/acme-small/directory', at_ms => 600 }]);
problem_413('ACME body over a 2k cap without Content-Length, read late',
            $a->{responses}[0]{status},
            $a->{responses}[0]{headers}{'content-type'},
            $a->{responses}[0]{body});
is($a->{responses}[1]{status}, 200,
   'directory on the same connection after the 413 at 2k');
ok(!$a->{goaway}, 'no GOAWAY error after the 413 at 2k');

# within the cap but over client_body_buffer_size (16k), without
# Content-Length, read late: gathered in memory, never spooled to a temp
# file (JSON whitespace pads the body)
{
    my ($n) = nonces(1);
    my $rq = new_account_rq($n, content_length => JSON::PP::false,
                            pause_after => 1024, resume_ms => 300);
    my $body = decode_base64($rq->{body_b64});
    $body =~ s/^\{/'{' . (' ' x (48 * 1024))/e;
    $rq->{body_b64} = encode_base64($body, '');
    my $logpos = length(slurp($t->error_log) // '');
    $a = h2run(requests => [$rq]);
    is($a->{responses}[0]{status}, 201,
       'ACME 48k body without Content-Length, read late: 201')
        or diag($a->{responses}[0]{body});
    unlike(substr(slurp($t->error_log) // '', $logpos),
           qr/buffered to a temporary file/,
           'ACME 48k body over HTTP/2: no temp file');
}

# --- EST -----------------------------------------------------------------------

$r = h2curl('GET', '/.well-known/est/cacerts');
ok($r->{h2}, 'EST cacerts: HTTP/2');
is($r->{code}, 200, 'EST cacerts: 200');
like($t->p7_to_pem($r->{body}) // '', qr/subject=.*nginx-pki Issuing CA/,
     'EST cacerts: the issuing CA');

my ($ecsr, $ekey) = $t->make_csr('est-h2', subj => '/CN=est-h2',
                                 san => 'DNS:est-h2.example');
my $b64csr = encode_base64($ecsr);
$r = h2curl('POST', '/.well-known/est/simpleenroll', data => $b64csr,
            user => 'demo:demo',
            headers => ['Content-Type: application/pkcs10']);
ok($r->{h2}, 'EST simpleenroll: HTTP/2');
is($r->{code}, 200, 'EST simpleenroll: 200') or diag($r->{body});
my $est_cert = $t->save_first_cert($t->p7_to_pem($r->{body}) // '',
                                   'est-h2-cert');
my ($vok, $vout) = $est_cert ? $t->verify_chain($est_cert) : (0, 'none');
ok($vok, 'EST certificate verifies to the root') or diag($vout);

$r = h2curl('POST', '/.well-known/est/simpleenroll', data => $b64csr,
            headers => ['Content-Type: application/pkcs10']);
is($r->{code}, 401, 'EST simpleenroll without credentials: 401');

$r = h2curl('POST', '/.well-known/est/simpleenroll', data_file => $big,
            user => 'demo:demo',
            headers => ['Content-Type: application/pkcs10']);
is($r->{code}, 413, 'EST body over the cap with Content-Length: 413');

my $basic = 'Basic ' . encode_base64('demo:demo', '');
my ($ecsr2) = $t->make_csr('est-h2b', subj => '/CN=est-h2b');
# the cap crossed in DATA frames read late, as for ACME above: EST's answer
# is the status alone
$a = h2run(requests => [
    { method => 'POST', path => '/.well-known/est/simpleenroll',
      body_file => $big, content_length => JSON::PP::false,
      pause_after => 1024, resume_ms => 300,
      headers => [['content-type', 'application/pkcs10'],
                  ['authorization', $basic]] },
    { method => 'POST', path => '/.well-known/est/simpleenroll',
      body_b64 => encode_base64(encode_base64($ecsr2), ''),
      content_length => JSON::PP::false, at_ms => 300,
      headers => [['content-type', 'application/pkcs10'],
                  ['authorization', $basic]] }]);
is($a->{responses}[0]{status}, 413,
   'EST body over the cap without Content-Length: 413');
is($a->{responses}[1]{status}, 200,
   'EST simpleenroll without Content-Length on the same connection: 200')
    or diag($a->{responses}[1]{body});
like($t->p7_to_pem($a->{responses}[1]{body}) // '', qr/CN\s*=\s*est-h2b/,
     'EST: the certificate of that stream');

# --- SCEP ----------------------------------------------------------------------

$r = h2curl('GET', '/scep?operation=GetCACaps');
ok($r->{h2}, 'SCEP GetCACaps: HTTP/2');
is($r->{code}, 200, 'SCEP GetCACaps: 200');
like($r->{body}, qr/^POSTPKIOperation\r?$/m, 'SCEP GetCACaps: POSTPKIOperation');
$r = h2curl('GET', '/scep?operation=GetCACert');
is($r->{code}, 200, 'SCEP GetCACert: 200');
my ($prc, $pout) = run_cmd(['openssl', 'pkcs7', '-inform', 'DER',
                            '-print_certs', '-noout'], stdin => $r->{body});
like($pout, qr/subject=.*nginx-pki SCEP RA/, 'SCEP GetCACert: the RA');

my $sreq = req(cn => 'scep-h2', challenge => 'demo');
$r = h2curl('POST', '/scep?operation=PKIOperation', data_file => $sreq,
            headers => ['Content-Type: application/x-pki-message']);
ok($r->{h2}, 'SCEP PKIOperation: HTTP/2');
is($r->{code}, 200, 'SCEP PKIOperation: 200');
my $rep = rep($r, $sreq);
is($rep->{status}, 0, 'SCEP PKIOperation: SUCCESS') or diag($rep->{raw});
($vok, $vout) = $t->verify_chain($rep->{file} // '/nonexistent');
ok($vok, 'SCEP certificate verifies to the root') or diag($vout);

# --- OCSP ------------------------------------------------------------------------

my $oreq = "$dir/ocsp-req.der";
my ($orc, $oout, $oerr) = run_cmd(['openssl', 'ocsp', '-issuer',
    "$pki/issuing.pem", '-cert', $est_cert // "$pki/server.pem",
    '-reqout', $oreq]);
ok(-s $oreq, 'openssl ocsp -reqout') or diag($oerr);

sub ocsp_check {
    my ($name, $body) = @_;
    my $f = "$dir/ocsp-resp-" . int(rand(1e9)) . '.der';
    spew($f, $body);
    my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-respin', $f,
        '-issuer', "$pki/issuing.pem", '-cert', $est_cert // '/none',
        '-CAfile', "$pki/root.pem", '-no_nonce']);
    return ($out . $err) =~ /: good/ && ($out . $err) =~ /Response verify OK/;
}

$r = h2curl('POST', '/ocsp', data_file => $oreq,
            headers => ['Content-Type: application/ocsp-request']);
ok($r->{h2}, 'OCSP POST: HTTP/2');
is($r->{code}, 200, 'OCSP POST: 200');
ok(ocsp_check('OCSP', $r->{body}), 'OCSP: the EST certificate is good, '
   . 'the response verifies (openssl ocsp -respin)');

# --- 50 concurrent streams on one connection --------------------------------------

my @acme_n = nonces(10);
my $ocsp_b64 = encode_base64(slurp($oreq), '');
my @rq;
for my $i (0 .. 49) {
    my $k = $i % 5;
    push @rq, $k == 0 ? { method => 'GET', path => '/acme/directory' }
            : $k == 1 ? { method => 'HEAD', path => '/acme/new-nonce' }
            : $k == 2 ? { method => 'GET', path => '/.well-known/est/cacerts' }
            : $k == 3 ? { method => 'POST', path => '/ocsp',
                          body_b64 => $ocsp_b64,
                          headers => [['content-type',
                                       'application/ocsp-request']] }
            : new_account_rq(shift @acme_n);
}
$a = h2run(requests => \@rq);
my %bad;
for my $i (0 .. 49) {
    my $x = $a->{responses}[$i];
    my $k = $i % 5;
    my $ok = $k == 0 ? ($x->{status} // 0) == 200
                       && $x->{body} =~ /"newAccount"/
           : $k == 1 ? ($x->{status} // 0) == 200
                       && ($x->{headers}{'replay-nonce'} // '') =~ /^[\w-]+$/
           : $k == 2 ? ($x->{status} // 0) == 200
                       && ($t->p7_to_pem($x->{body}) // '') =~ /Issuing CA/
           : $k == 3 ? ($x->{status} // 0) == 200
                       && ocsp_check("stream $i", $x->{body})
           : ($x->{status} // 0) == 201
             && ($x->{headers}{location} // '') =~ m{/acme/acct/};
    $bad{$k}++ if !$ok;
}
is(scalar(grep { $_->{ended} } @{ $a->{responses} }), 50,
   '50 concurrent streams: every stream answered to its end');
is($bad{0} // 0, 0, '50 streams: 10 directories');
is($bad{1} // 0, 0, '50 streams: 10 nonces');
is($bad{2} // 0, 0, '50 streams: 10 EST cacerts');
is($bad{3} // 0, 0, '50 streams: 10 OCSP answers good (openssl ocsp)');
is($bad{4} // 0, 0, '50 streams: 10 newAccount 201 (thread pool)');
my @nc = sort grep { defined } map { $_->{headers}{'replay-nonce'} }
         @{ $a->{responses} };
my %seen;
is(scalar(grep { $seen{$_}++ } @nc), 0, '50 streams: no nonce handed out twice');
log_clean('50 streams');

# --- streams reset while their requests wait in the thread pool ------------------

# Redis stopped: every ACME task blocks in it until the 1 s timeout, so the
# resets and the cut below come while the tasks run
my $redis = $t->{children}{redis};
my @rn = nonces(40);
kill 'STOP', $redis;
my $t0 = time;
my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    # the connection cut without GOAWAY, 300 ms after 20 POSTs
    my ($rc, $out, $err) = run_cmd([$PY, $H2C], stdin => $JSON->encode({
        port => $https, cafile => "$pki/root.pem", timeout => 10,
        close_ms => 300,
        requests => [map { new_account_rq($_) } @rn[20 .. 39]] }),
        timeout => 20);
    PKITest::spew("$dir/cut.json", $out);
    PKITest::spew("$dir/cut.err", $err);
    POSIX::_exit(0);
}
$t->{children}{h2cut} = $pid;
$a = h2run(requests => [
    (map { new_account_rq($_, reset_ms => 300) } @rn[0 .. 19]),
    { method => 'GET', path => '/acme/directory', at_ms => 1500 }]);
waitpid($pid, 0);
delete $t->{children}{h2cut};
kill 'CONT', $redis;
my $cut = eval { decode_json(slurp("$dir/cut.json") // '') } || {};
ok(@{ $cut->{responses} || [] } == 20
   && !grep({ defined $_->{status} } @{ $cut->{responses} }),
   'cut connection: no answer came before the cut (the tasks were waiting)');
is(scalar(grep { ($_->{reset} // '') eq 'sent CANCEL' && !defined $_->{status} }
          @{ $a->{responses} }[0 .. 19]), 20,
   '20 streams reset (RST_STREAM CANCEL) before their answer');
is($a->{responses}[20]{status}, 200,
   'the connection of the reset streams still serves a new stream');
log_clean('resets and a cut while tasks run');
my $waited = () = (slurp($t->error_log) // '')
    =~ /new-account from \S+ failed: certificate store unavailable/g;
cmp_ok($waited, '>=', 8, "$waited ACME tasks ran into the stopped Redis "
       . '(they were in the thread pool meanwhile)');
sleep 1.5 if time - $t0 < 2;       # the tasks' Redis timeout has passed
no_conns_left('after the resets and the cut');

$r = h2curl('GET', '/acme/directory');
is($r->{code}, 200, 'after the resets: the directory over HTTP/2');
my ($m1) = nonces(1);
$a = h2run(requests => [new_account_rq($m1)]);
is($a->{responses}[0]{status}, 201, 'after the resets: newAccount 201');
is(join(',', $t->workers_of($master)), join(',', @workers),
   'the same workers as at the start (none crashed)');
log_clean('at the end');
no_conns_left('at the end');

$t->stop_nginx;
done_testing();
