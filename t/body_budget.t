#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# pki_body_memory, the request bodies a worker holds in memory at once:
# what is booked is what the bodies' buffers hold, as their bytes arrive.
# One worker, a budget of 224k.
#  - Bodies that announce 64k (HTTP/1.1 Content-Length) or nothing
#    (HTTP/2 without content-length) and stall after 100 bytes book a page
#    each, one that stalls after 30k a 32k buffer: a 48k POST meanwhile is
#    served, the budget is not used up, and no body goes to a temp file.
#  - Bodies that really sent 224k in all use it up: every protocol's next
#    POST is answered 503 with Retry-After at once (ACME: the serverInternal
#    problem with a fresh Replay-Nonce; EST, SCEP, OCSP plain text; Matter
#    and the admin API JSON; over HTTP/2 too), a GET is still served, and
#    the error log says so, once a second at most.  A body that crosses
#    the budget while it is read is ended there: 503, connection closed.
#  - Once those connections close, the budget is back: POSTs are served,
#    the ACME one with the nonce of the 503.
# No alert, no crashed worker, never a temp file.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use MIME::Base64 qw(encode_base64 encode_base64url decode_base64);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use PKITest;

BEGIN {
    for my $m (qw(Crypt::PK::ECC IO::Socket::SSL)) {
        eval "require $m; 1" or plan(skip_all => "$m not installed");
    }
}

my $PY = '/usr/bin/python3';
my $H2 = (run_cmd([$PY, '-c', 'import h2'], timeout => 20))[0] == 0;
my $MATTER = -f "$PKITest::BUILD/ngx_http_matter_module.so";

my $t = PKITest->new;
my $pki = $t->pki;

if ($MATTER) {
    $t->make_matter_pki($pki);
}

$t->start_redis;

my $BUDGET = 224 * 1024;
my $conf = $t->render_conf('--workers', 1);
my $https = $t->https_port;
$conf =~ s{(\nhttp \{\n)}{$1    pki_body_memory 224k;\n} or die 'no http block';
$conf =~ s{listen 127\.0\.0\.1:$https ssl;}
          {listen 127.0.0.1:$https ssl http2;} or die 'no TLS listener';
$t->start_nginx($conf);

my $JSON = JSON::PP->new->canonical;
my $BASE = "https://127.0.0.1:$https";
my $HTTP = 'http://127.0.0.1:' . $t->http_port;
my $tmpdir = $t->prefix . '/tmp/body';

sub log_since { substr(slurp($t->error_log) // '', $_[0]) }
sub log_pos { length(slurp($t->error_log) // '') }

# request body temp files open in the workers: nginx unlinks them as it
# makes them, so they are seen through the workers' descriptors only
sub temp_files {
    my $n = 0;
    for my $w ($t->workers_of($t->{children}{nginx}, 'worker')) {
        opendir(my $d, "/proc/$w/fd") or next;
        $n += grep { (readlink("/proc/$w/fd/$_") // '') =~ /^\Q$tmpdir\E/ }
              readdir $d;
    }
    return $n;
}

# --- ACME: a newAccount JWS (a fresh key: 201), padded with JSON
# whitespace to PAD bytes --------------------------------------------------

sub nonce {
    my $r = $t->curl('HEAD', "$BASE/acme/new-nonce");
    return $r->{headers}{'replay-nonce'};
}

sub new_account_body {
    my ($nonce, $pad) = @_;
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    my $h = $k->export_key_jwk('public', 1);
    my %jwk = map { $_ => $h->{$_} } qw(kty crv x y);
    my $url = "$BASE/acme/new-account";
    my $p64 = encode_base64url($JSON->encode({ alg => 'ES256', url => $url,
                                               nonce => $nonce,
                                               jwk => \%jwk }));
    my $pl64 = encode_base64url($JSON->encode(
                   { termsOfServiceAgreed => JSON::PP::true }));
    my $sig = $k->sign_message_rfc7518("$p64.$pl64", 'SHA256');
    my $body = $JSON->encode({ protected => $p64, payload => $pl64,
                               signature => encode_base64url($sig) });
    $body =~ s/^\{/'{' . (' ' x ($pad - length $body))/e if $pad;
    return $body;
}

sub acme_post {
    my ($body) = @_;
    my $r = $t->curl('POST', "$BASE/acme/new-account", data => $body,
                     headers => ['Content-Type: application/jose+json']);
    $r->{json} = eval { decode_json($r->{body}) } || {};
    return $r;
}

# --- raw connections that hold a body half sent --------------------------

sub tls_sock {
    return IO::Socket::SSL->new(PeerHost => '127.0.0.1', PeerPort => $https,
        SSL_ca_file => "$pki/root.pem", SSL_verifycn_name => '127.0.0.1',
        Timeout => 20);
}

# an ACME POST that announces LENGTH bytes and sends SEND of them
sub stall {
    my ($length, $send) = @_;
    my $s = tls_sock() or return undef;
    local $SIG{PIPE} = 'IGNORE';
    print $s "POST /acme/new-account HTTP/1.1\r\nHost: 127.0.0.1:$https\r\n"
        . "Content-Type: application/jose+json\r\n"
        . "Content-Length: $length\r\n\r\n" . ('x' x $send);
    return $s;
}

# the answer on a raw connection: status, headers, body, closed
sub read_answer {
    my ($s) = @_;
    my %a = (status => 0, headers => {}, body => '', closed => 0);
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 20;
    eval {
        PKITest::read_http_answer($s, \%a);
        1;
    };
    alarm 0;
    $a{status} //= 0;
    return \%a;
}

# h2client.py in the background: its answer is read by h2wait()
sub h2start {
    my (%spec) = @_;
    $spec{port} = $https;
    $spec{cafile} = "$pki/root.pem";
    $spec{timeout} //= 30;
    my $out = $t->dir . '/h2-' . (++$t->{h2n}) . '.json';
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        my ($rc, $o) = run_cmd([$PY, "$FindBin::Bin/lib/h2client.py"],
            stdin => $JSON->encode(\%spec), timeout => $spec{timeout} + 10);
        PKITest::spew($out, $o);
        POSIX::_exit(0);
    }
    return [$pid, $out];
}

sub h2wait {
    my ($h) = @_;
    waitpid($h->[0], 0);
    my $a = eval { decode_json(slurp($h->[1]) // '') }
            || { responses => [] };
    $_->{body} = decode_base64($_->{body_b64} // '')
        for @{ $a->{responses} };
    return $a;
}

sub is_503 {
    my ($r, $name) = @_;
    is($r->{code} // $r->{status}, 503, "$name: 503");
    is($r->{headers}{'retry-after'} // '', '5', "$name: Retry-After: 5");
}

# --- 1. stalled bodies that sent little book little ------------------------

{
    my $logpos = log_pos();
    my @s = grep { $_ } map { stall(65536, 100) } 1 .. 12;
    is(scalar @s, 12, 'announced 64k, sent 100 bytes: 12 connections');
    # and one that sent 30k, more than client_body_buffer_size (16k)
    push @s, stall(65536, 30 * 1024) // ();
    my $h2;
    if ($H2) {
        # HTTP/2 streams without content-length: nothing announced
        $h2 = h2start(requests => [map { {
            method => 'POST', path => '/acme/new-account',
            headers => [['content-type', 'application/jose+json']],
            body_b64 => encode_base64('x' x 200, ''),
            content_length => JSON::PP::false,
            pause_after => 100, resume_ms => 4000 } } 1 .. 6]);
    }
    sleep 1;
    is(temp_files(), 0, 'stalled bodies: no temp file open');
    # 13 x 64k announced (and 6 x the 64k cap) are far over the budget;
    # what they sent is not
    my $r = acme_post(new_account_body(nonce(), 48 * 1024));
    is($r->{code}, 201, 'stalled bodies: a 48k POST meanwhile is served')
        or diag($r->{body});
    close $_ for @s;
    if ($h2) {
        my $a = h2wait($h2);
        my @st = map { $_->{status} // 0 } @{ $a->{responses} };
        is(scalar(grep { $_ == 400 } @st), 6,
           'stalled HTTP/2 streams: each served in the end (400 for junk)')
            or diag("@st");
    }
    my $log = log_since($logpos);
    unlike($log, qr/over the budget|held in memory/,
           'stalled bodies: the budget is not used up');
    unlike($log, qr/buffered to a temporary file/,
           'stalled bodies: no body went to a temp file');
}

sleep 0.5;

# --- 2. bodies that really sent the budget's worth use it up ---------------

my $nonce503;
{
    my $logpos = log_pos();
    # 3 x 64k and one 32k buffer: 224k, the whole budget
    my @hold = grep { $_ } ((map { stall(65536, 65000) } 1 .. 3),
                            stall(65536, 30000));
    is(scalar @hold, 4, 'holders: 4 connections');
    sleep 1;

    my $r = acme_post(new_account_body(nonce()));
    is_503($r, 'ACME, budget used up');
    like($r->{headers}{'content-type'} // '', qr{^application/problem\+json},
         'ACME, budget used up: problem+json');
    is($r->{json}{type} // '', 'urn:ietf:params:acme:error:serverInternal',
       'ACME, budget used up: serverInternal');
    is($r->{json}{status} // 0, 503, 'ACME, budget used up: status 503');
    $nonce503 = $r->{headers}{'replay-nonce'};
    like($nonce503 // '', qr/^[\w-]{16,}$/,
         'ACME, budget used up: a Replay-Nonce');

    $r = $t->curl('POST', "$BASE/.well-known/est/simpleenroll",
                  user => 'demo:demo', data => "MIIB\n",
                  headers => ['Content-Type: application/pkcs10']);
    is_503($r, 'EST, budget used up');
    like($r->{body}, qr/busy, retry later/, 'EST, budget used up: the text');

    $r = $t->curl('POST', "$HTTP/scep?operation=PKIOperation", data => 'x',
                  headers => ['Content-Type: application/x-pki-message']);
    is_503($r, 'SCEP, budget used up');

    # OCSP's own answer: tryLater (RFC 6960 4.2.1), never cached
    $r = $t->curl('POST', "$HTTP/ocsp", data => 'x',
                  headers => ['Content-Type: application/ocsp-request']);
    is($r->{code}, 200, 'OCSP, budget used up: 200');
    is(unpack('H*', $r->{body} // ''), '30030a0103',
       'OCSP, budget used up: tryLater');
    is($r->{headers}{'retry-after'} // '', '5',
       'OCSP, budget used up: Retry-After: 5');
    is($r->{headers}{'cache-control'} // '', 'no-store',
       'OCSP, budget used up: no-store');

    $r = $t->curl('POST', "$BASE/pki/admin/revoke", user => 'admin:admin',
                  data => '{"serial":"01"}',
                  headers => ['Content-Type: application/json']);
    is_503($r, 'admin API, budget used up');
    like($r->{body}, qr/^\{"error":"busy, retry later"\}/,
         'admin API, budget used up: JSON');

    SKIP: {
        skip 'ngx_http_matter_module.so not built', 3 if !$MATTER;
        $r = $t->curl('POST', "$BASE/matter/noc", user => 'demo:demo',
                      data => '{}',
                      headers => ['Content-Type: application/json']);
        is_503($r, 'Matter, budget used up');
        like($r->{body}, qr/^\{"error":"busy, retry later"\}/,
             'Matter, budget used up: JSON');
    }

    SKIP: {
        skip 'python3-h2 not installed', 2 if !$H2;
        my $a = h2wait(h2start(requests => [{
            method => 'POST', path => '/acme/new-account',
            headers => [['content-type', 'application/jose+json']],
            body_b64 => encode_base64('x' x 200, ''),
            content_length => JSON::PP::false }]));
        my $x = $a->{responses}[0] || {};
        is($x->{status} // 0, 503, 'HTTP/2, budget used up: 503');
        is($x->{headers}{'retry-after'} // '', '5',
           'HTTP/2, budget used up: Retry-After: 5');
    }

    # a request without a body needs none of it
    $r = $t->curl('GET', "$BASE/acme/directory");
    is($r->{code}, 200, 'budget used up: a GET is served');

    my $log = log_since($logpos);
    my $want = quotemeta("pki: request bodies over the budget "
                         . "(pki_body_memory $BUDGET, $BUDGET bytes held): ");
    like($log,
         qr/$want\d+ request\(s\) refused \(503; OCSP: tryLater\) since/,
         'budget used up: the error log says so');
    my @lines = $log =~ /over the budget/g;
    cmp_ok(scalar @lines, '<=', 3,
           'budget used up: at most one line a second');

    # 32k back: a body that grows over the budget while it is read
    close pop @hold;
    sleep 0.5;
    my $s = stall(49152, 20000);
    sleep 0.5;
    {
        local $SIG{PIPE} = 'IGNORE';
        print $s 'x' x (49152 - 20000);
    }
    my $a = read_answer($s);
    is_503($a, 'a body over the budget when read late');
    is(lc($a->{headers}{connection} // ''), 'close',
       'a body over the budget when read late: the connection is closed');
    close $s;

    # and one sent at once (over it in the first read, as a rule)
    $r = acme_post(new_account_body(nonce(), 48 * 1024));
    is_503($r, 'ACME, a 48k body over the budget');
    is($r->{json}{type} // '', 'urn:ietf:params:acme:error:serverInternal',
       'ACME, a 48k body over the budget: serverInternal');

    close $_ for @hold;
    unlike(log_since($logpos), qr/buffered to a temporary file/,
           'budget used up: no body went to a temp file');
}

sleep 1;

# --- 3. the connections closed, the budget is back ---------------------------

{
    my $logpos = log_pos();
    my $r = acme_post(new_account_body($nonce503, 48 * 1024));
    is($r->{code}, 201, 'budget back: a 48k POST with the 503\'s nonce '
       . 'is served') or diag($r->{body});

    my ($csr) = $t->make_csr('budget-back');
    $r = $t->est_post('simpleenroll', $csr, user => 'demo:demo');
    is($r->{code}, 200, 'budget back: an EST enrollment is served')
        or diag($r->{body});
    unlike(log_since($logpos), qr/over the budget/,
           'budget back: nothing refused');
}

my $log = slurp($t->error_log) // '';
unlike($log, qr/buffered to a temporary file/, 'never a temp file');
my @bad = grep { /\[(alert|crit|emerg)\]|exited on signal/ } split /\n/, $log;
ok(!@bad, 'no alert, crit or crashed worker in the error log')
    or diag(join("\n", @bad[0 .. ($#bad < 9 ? $#bad : 9)]));

$t->stop_nginx;

done_testing();
