#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME (RFC 8555) at the protocol level, with our own JWS code (CryptX):
# the happy path newAccount -> newOrder -> http-01 -> finalize -> download,
# and every error path of issue 4 section 6: nonces (replayed, made up, 50
# concurrent requests on one nonce), alg none / HS256, url mismatch,
# jwk+kid, bad signature, content type, body size, another account's
# order, finalize before ready, CSRs with foreign names or the account key,
# keyChange to a key in use, revocation by a stranger, ARI for a fresh and
# a revoked certificate, RFC 9773 replaces.  The http-01 answers come from a small listener
# in this test; the oracle for certificates is the openssl CLI.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use IO::Socket::IP;
use Encode ();
use JSON::PP;
use MIME::Base64 qw(encode_base64url decode_base64url);
use POSIX qw(:sys_wait_h);
use Time::HiRes qw(sleep time);
use PKITest;
use ACMELoad;

BEGIN {
    for my $m (qw(Crypt::PK::ECC Crypt::PK::RSA Crypt::PK::Ed25519
                  Crypt::Mac::HMAC HTTP::Tiny))
    {
        eval "require $m; 1" or plan(skip_all => "$m not installed");
    }
}

my $t = PKITest->new;
$t->start_redis;

my $hport = PKITest::free_port();
# pebble-challtestsrv answers the CAA queries of the /acme-caa/ location
my $dns = PKITest::free_port();
my $dnsm = PKITest::free_port();
my $CTS = which('pebble-challtestsrv');
# a DNS responder of this test answers /acme-race/ (below)
my $rdns = PKITest::free_port();
# a second ACME location as a TLS-terminating proxy publishes it
# (acme_base_url): checked in "behind a proxy" below
my $conf = $t->render_conf('--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port());
$conf =~ s{(\n(\s*)location /acme/ \{)}{
$2location /acme-lb/ {
$2    acme issuing acme;
$2    acme_base_url https://lb.example.test/pki/acme;
$2    location /acme-lb/v2/ {
$2        acme issuing acme;
$2    }
$2    location = /acme-lb/directory {
$2        add_header X-Nested yes always;
$2    }
$2}
$2location /acme-par/ {
$2    acme_base_url https://lb.example.test/par;
$2    location /acme-par/x/ {
$2        acme issuing acme;
$2    }
$2}
$2location /acme-lim/ {
$2    acme issuing acme;
$2    acme_accounts_per_hour 2;
$2}
$2location /acme-ord/ {
$2    acme issuing acme;
$2    acme_orders_per_hour 2;
$2}
$2location /acme-pend/ {
$2    acme issuing acme;
$2    acme_pending_authz_max 3;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_http_port $hport;
$2}
$2location /acme-tos/ {
$2    acme issuing acme;
$2    acme_terms_of_service https://tos.example.test/terms-v1;
$2    add_header Access-Control-Allow-Origin * always;
$2    add_header Access-Control-Allow-Headers Content-Type always;
$2}
$2location /acme-race/ {
$2    acme issuing acme;
$2    acme_caa_identities nginx-pki.test;
$2    acme_caa_check on;
$2    acme_validation_resolver 127.0.0.1:$rdns;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_http_port $hport;
$2    acme_validation_timeout 5s;
$2}
$2location /acme-rb/ {
$2    acme issuing acme;
$2    access_log ${\ $t->dir}/rb.log rb;
$2}
$2location /acme-nest/ {
$2    acme issuing acme;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_http_port $hport;
$2    location /acme-nest/c/ {
$2        acme issuing acme;
$2        acme_caa_identities nginx-pki.test;
$2        acme_validation_resolver 127.0.0.1:$dns;
$2    }
$2    # another module's location inside an ACME one keeps nginx's body
$2    # limit (1m); nothing listens on port 9, so a body read in full fails
$2    location /acme-nest/proxy/ {
$2        proxy_pass http://127.0.0.1:9;
$2    }
$2}
$2location /acme-caa/ {
$2    acme issuing acme;
$2    acme_caa_identities nginx-pki.test;
$2    acme_caa_check on;
$2    acme_validation_resolver 127.0.0.1:$dns;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_http_port $hport;
$2    acme_validation_timeout 5s;
$2}
$1} or die 'no ACME location in the config';
$conf =~ s{(\nhttp \{\n)}{$1    log_format rb '\$request_body';\n    pki_body_memory 100k;\n}
    or die 'no http block';
# RFC 9773 explanationURL, on the main location
$conf =~ s{(\n(\s*)location /acme/ \{)}{$1
$2    acme_renewal_explanation https://pki.example.test/why-renew;}
    or die 'no ACME location in the config';
# ACME in the plain HTTP server (its "location / {" is the second one):
# refused (RFC 8555 6.1), unless an https:// acme_base_url says that TLS
# ends in a proxy in front
{
    my $n = 0;
    $conf =~ s{^(\s*)(location / \{)}{++$n == 2 ? "$1location /acme/ {
$1    acme issuing acme;
$1}
$1location /acme-plb/ {
$1    acme issuing acme;
$1    acme_base_url https://lb.example.test/plb;
$1}
$1location /acme-phb/ {
$1    acme issuing acme;
$1    acme_base_url http://lb.example.test/phb;
$1}
$1$2" : "$1$2"}gme;
    $n == 2 or die 'no plain HTTP server in the config';
}
$t->start_nginx($conf);

our $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme';
my $JSON = JSON::PP->new->canonical->allow_nonref;

my $http = HTTP::Tiny->new(verify_SSL => 1, keep_alive => 1, timeout => 20,
    SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });

# --- the http-01 responder -------------------------------------------------

my $www = $t->dir . '/www';
mkdir $www;

# it serves TOKEN from $www, counts each fetch in TOKEN.hits and, for a
# validation held in flight while the test acts, holds its answer until
# the test lets it go (ACMELoad::hold_http01, release_http01) and then
# writes TOKEN.answered
ACMELoad::start_http01($t, $hport, $www);

# --- a tiny ACME client ------------------------------------------------------

sub b64u { encode_base64url($_[0]) }

sub new_key {
    my ($type) = @_;
    $type //= 'ec';
    if ($type eq 'rsa') {
        my $k = Crypt::PK::RSA->new;
        $k->generate_key(256, 65537);
        return { pk => $k, alg => 'RS256', type => 'rsa' };
    }
    if ($type eq 'ed25519') {
        my $k = Crypt::PK::Ed25519->new;
        $k->generate_key;
        return { pk => $k, alg => 'EdDSA', type => 'ed25519' };
    }
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    return { pk => $k, alg => 'ES256', type => 'ec' };
}

sub jwk_of {
    my ($key) = @_;
    my $h = $key->{pk}->export_key_jwk('public', 1);
    my %j = map { $_ => $h->{$_} } grep { /^(kty|crv|x|y|n|e)$/ } keys %$h;
    return \%j;
}

sub thumb_of {
    my ($key) = @_;
    return $key->{pk}->export_key_jwk_thumbprint('SHA256');
}

sub sign_with {
    my ($key, $data, $alg) = @_;
    $alg //= $key->{alg};
    return $key->{pk}->sign_message_rfc7518($data, 'SHA256')
        if $key->{type} eq 'ec';
    return $key->{pk}->sign_message($data, 'SHA256', 'v1.5')
        if $key->{type} eq 'rsa' && $alg eq 'RS256';
    return $key->{pk}->sign_message($data, 'SHA256', 'pss', 32)
        if $key->{type} eq 'rsa';
    return $key->{pk}->sign_message($data);
}

# jws(key => K, url => U, nonce => N, payload => STRING|undef (POST-as-GET),
#     kid => URL | jwk => 1, hdr => {extra}, alg => A, sig => RAW)
sub jws {
    my (%o) = @_;
    my %h = (alg => $o{alg} // $o{key}{alg}, url => $o{url});
    $h{nonce} = $o{nonce} if defined $o{nonce};
    $h{kid} = $o{kid} if defined $o{kid};
    $h{jwk} = jwk_of($o{jwk_key} // $o{key}) if $o{jwk};
    %h = (%h, %{ $o{hdr} || {} });
    delete $h{$_} for @{ $o{drop} || [] };
    my $p64 = b64u($JSON->encode(\%h));
    my $pl64 = defined $o{payload} ? b64u($o{payload}) : '';
    my $sig = exists $o{sig} ? $o{sig}
            : sign_with($o{key}, "$p64.$pl64", $h{alg});
    return { protected => $p64, payload => $pl64,
             signature => b64u($sig) };
}

sub nonce {
    my $r = $http->request('HEAD', "$BASE/new-nonce");
    return $r->{headers}{'replay-nonce'};
}

sub post_raw {
    my ($url, $body, %o) = @_;
    my $r = $http->request('POST', $url, {
        headers => { 'Content-Type' => $o{ctype} // 'application/jose+json' },
        content => $body });
    my $ct = $r->{headers}{'content-type'} // '';
    $r->{json} = eval { decode_json($r->{content}) }
        if $ct =~ /json/ && length($r->{content} // '');
    return $r;
}

# post(client, url, payload (hashref, '' for POST-as-GET), %jws options)
sub post {
    my ($c, $url, $payload, %o) = @_;
    my $pl = !defined $payload ? undef
           : ref $payload ? $JSON->encode($payload) : $payload;
    $pl = undef if defined $pl && $pl eq '';
    my $j = jws(key => $c->{key}, url => $url, nonce => $o{nonce} // nonce(),
                payload => $pl,
                ($c->{kid} && !$o{jwk} ? (kid => $c->{kid}) : (jwk => 1)),
                %o);
    return post_raw($url, $JSON->encode($j), %o);
}

# POSTs each body to path on a connection of its own, all at once: every
# client connects and finishes its TLS handshake first, then all send when
# the parent closes a pipe (a barrier).  Returns "STATUS LOCATION" per body.
sub barrier_posts {
    my ($path, $dir, @bodies) = @_;
    pipe(my $rd, my $wr) or die "pipe: $!";
    my @pids;
    for my $i (0 .. $#bodies) {
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            close $wr;
            require IO::Socket::SSL;
            my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1',
                PeerPort => $t->https_port, SSL_ca_file => $t->pki . '/root.pem',
                SSL_verifycn_name => '127.0.0.1', Timeout => 20);
            my $out = 'noconn';
            if ($s) {
                my $b = $bodies[$i];
                my $req = "POST $path HTTP/1.1\r\n"
                    . "Host: 127.0.0.1:" . $t->https_port . "\r\n"
                    . "Content-Type: application/jose+json\r\n"
                    . "Content-Length: " . length($b) . "\r\n"
                    . "Connection: close\r\n\r\n$b";
                my $x = <$rd>;                      # the barrier
                print $s $req;
                local $/;
                my $resp = <$s> // '';
                my ($st) = $resp =~ m{^HTTP/1\.1 (\d+)};
                my ($loc) = $resp =~ m{\r\nLocation: (\S+)\r\n}i;
                $out = ($st // 'none') . ' ' . ($loc // '');
            }
            spew("$dir/$i", $out);
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    close $rd;
    sleep 1.5;                                      # handshakes done
    close $wr;
    waitpid($_, 0) for @pids;
    return map { slurp("$dir/$_") // 'none' } 0 .. $#bodies;
}

sub problem_is {
    my ($r, $status, $type, $name) = @_;
    is($r->{status}, $status, "$name: status $status")
        or diag("$r->{status} $r->{content}");
    is($r->{json}{type} // '', "urn:ietf:params:acme:error:$type",
       "$name: $type");
    like($r->{headers}{'content-type'} // '', qr{^application/problem\+json},
         "$name: problem+json");
}

sub account {
    my (%o) = @_;
    my $c = { key => $o{key} // new_key($o{type}) };
    my $r = post($c, "$BASE/new-account",
                 { termsOfServiceAgreed => JSON::PP::true,
                   contact => ['mailto:admin@example.com'] }, jwk => 1);
    $c->{kid} = $r->{headers}{location};
    $c->{r} = $r;
    return $c;
}

sub poll {
    my ($c, $url, $want) = @_;
    my $r;
    for (1 .. 100) {
        $r = post($c, $url, '');
        last if !$r->{json} || ($r->{json}{status} // '') =~ /^($want|invalid)$/;
        sleep 0.1;
    }
    return $r;
}

sub csr_der {
    my ($name, %o) = @_;
    my ($der, $keyfile) = $t->make_csr($name, %o);
    return ($der, $keyfile);
}

# newOrder (with the members of %order_extra too), answer http-01 for
# every authorization, wait until ready
our %order_extra;
sub order_ready {
    my ($c, @names) = @_;
    my $r = post($c, "$BASE/new-order", { identifiers => [
        map { { type => (/^[\d.]+$/ ? 'ip' : 'dns'), value => $_ } } @names ],
        %order_extra });
    return ($r) if $r->{status} != 201;
    my $order_url = $r->{headers}{location};
    for my $az (@{ $r->{json}{authorizations} }) {
        my $a = post($c, $az, '');
        next if $a->{json}{status} eq 'valid';
        my ($ch) = grep { $_->{type} eq 'http-01' } @{ $a->{json}{challenges} };
        spew("$www/$ch->{token}", "$ch->{token}." . thumb_of($c->{key}));
        my $cr = post($c, $ch->{url}, {});
        is($cr->{status}, 200, 'challenge POST: 200');
        like($cr->{json}{status}, qr/^(processing|valid|pending)$/,
             "challenge POST answers at once: $cr->{json}{status}");
        ok($cr->{json}{status} ne 'processing'
           || ($cr->{headers}{'retry-after'} // '') eq '1',
           'a processing challenge asks for a poll in 1 s (Retry-After)');
        my $done = poll($c, $az, 'valid');
        is($done->{json}{status}, 'valid', "authz $names[0] valid")
            or diag($done->{content});
    }
    my $o = poll($c, $order_url, 'ready');
    return ($r, $order_url, $o);
}

sub issue {
    my ($c, $name, @names) = @_;
    my ($r, $order_url, $o) = order_ready($c, @names);
    return undef if !$o || $o->{json}{status} ne 'ready';
    my $san = join(',', map { /^[\d.]+$/ ? "IP:$_" : "DNS:$_" } @names);
    my ($der, $keyfile) = csr_der($name, subj => '/', san => $san);
    my $f = post($c, $o->{json}{finalize}, { csr => b64u($der) });
    is($f->{status}, 200, "$name: finalize 200") or diag($f->{content});
    is($f->{json}{status}, 'valid', "$name: order valid");
    my $cr = post($c, $f->{json}{certificate}, '');
    is($cr->{status}, 200, "$name: certificate download");
    like($cr->{headers}{'content-type'} // '',
         qr{^application/pem-certificate-chain}, "$name: PEM chain type");
    my $pem = $cr->{content};
    my $file = $t->dir . "/$name-chain.pem";
    spew($file, $pem);
    my $leaf = $t->save_first_cert($pem, "$name-leaf");
    return { chain => $file, leaf => $leaf, key => $keyfile,
             order => $order_url, finalize => $o->{json}{finalize} };
}

# --- directory and nonces ---------------------------------------------------

my $r = $http->get("$BASE/directory");
is($r->{status}, 200, 'directory: 200');
my $dir = decode_json($r->{content});
for my $k (qw(newNonce newAccount newOrder revokeCert keyChange renewalInfo)) {
    like($dir->{$k} // '', qr{^\Q$BASE\E/}, "directory has $k");
}
is(ref $dir->{meta}, 'HASH', 'directory has meta');
ok(!$dir->{meta}{externalAccountRequired}, 'no EAB in the demo');

$r = $http->request('HEAD', "$BASE/new-nonce");
is($r->{status}, 200, 'HEAD newNonce: 200');
like($r->{headers}{'replay-nonce'} // '', qr/^[\w-]{16,}$/, 'Replay-Nonce');
like($r->{headers}{'cache-control'} // '', qr/no-store/, 'no-store');
$r = $http->get("$BASE/new-nonce");
is($r->{status}, 204, 'GET newNonce: 204');

# a nonce is no Redis key until a signed request spends it: a flood of
# newNonce costs the store nothing
{
    my $before = scalar $t->redis_keys('pki:acme:nonce:*');
    $http->request('HEAD', "$BASE/new-nonce") for 1 .. 20;
    is(scalar $t->redis_keys('pki:acme:nonce:*'), $before,
       'newNonce writes no key (20 nonces)');
}

# --- accounts -------------------------------------------------------------------

my $A = account();
is($A->{r}{status}, 201, 'newAccount: 201');
my $links = $A->{r}{headers}{link} // '';
like(ref $links ? join(', ', @$links) : $links, qr{<\Q$BASE\E/directory>;\s*rel="index"},
     'responses link the directory (RFC 8555 7.1: rel="index")');
like($A->{kid} // '', qr{^\Q$BASE\E/acct/[\w-]+$}, 'account URL');
is($A->{r}{json}{status}, 'valid', 'account valid');
like($A->{r}{headers}{'replay-nonce'} // '', qr/^[\w-]+$/,
     'POST answers carry a nonce');

$r = post({ key => $A->{key} }, "$BASE/new-account",
          { onlyReturnExisting => JSON::PP::true }, jwk => 1);
is($r->{status}, 200, 'onlyReturnExisting: 200 for a known key');
is($r->{headers}{location}, $A->{kid}, 'same account URL');

$r = post({ key => new_key() }, "$BASE/new-account",
          { onlyReturnExisting => JSON::PP::true }, jwk => 1);
problem_is($r, 400, 'accountDoesNotExist', 'onlyReturnExisting unknown');

# a lookup never creates: a value that is no boolean is refused
for my $v ('true', 1) {
    my $k = new_key();
    $r = post({ key => $k }, "$BASE/new-account",
              { onlyReturnExisting => $v }, jwk => 1);
    problem_is($r, 400, 'malformed', "onlyReturnExisting \"$v\"");
    is($t->redis_raw('EXISTS', 'pki:acme:jwk:' . thumb_of($k)) + 0, 0,
       '  no account made');
}

# a key index whose account is gone: the key has no account, and a new one
# replaces the index
{
    my $D = account();
    my ($did) = ($D->{kid} // '') =~ m{/acct/([\w-]+)$};
    $t->redis('DEL', "pki:{acme:$did}:acct");
    $r = post({ key => $D->{key} }, "$BASE/new-account",
              { onlyReturnExisting => JSON::PP::true }, jwk => 1);
    problem_is($r, 400, 'accountDoesNotExist', 'an index to an account '
               . 'that is gone: onlyReturnExisting');
    my $D2 = account(key => $D->{key});
    is($D2->{r}{status}, 201, '  newAccount makes one')
        or diag($D2->{r}{content});
    isnt($D2->{kid} // '', $D->{kid}, '  a new account');
}

# RFC 8555 6.7: a well-formed key of a kind the server does not take
{
    my $k = Crypt::PK::RSA->new;
    $k->generate_key(128, 65537);
    $r = post({ key => { pk => $k, alg => 'RS256', type => 'rsa' } },
              "$BASE/new-account", { termsOfServiceAgreed =>
                                     JSON::PP::true }, jwk => 1);
    problem_is($r, 400, 'badPublicKey', 'an RSA key of 1024 bits');
}

# RFC 8555 6.4: a POST goes to the URL it is signed for, as written (nginx
# would decode and normalise it; the signed url is compared with that)
for my $u ("$BASE/new-account?x=1", "$BASE/new%2Daccount",
           "$BASE/./new-account") {
    my $k = new_key();
    my $j = jws(key => $k, url => "$BASE/new-account", nonce => nonce(),
                jwk => 1, payload => $JSON->encode({ termsOfServiceAgreed =>
                                                     JSON::PP::true }));
    $r = post_raw($u, $JSON->encode($j));
    problem_is($r, 404, 'malformed', "a POST to $u");
    is($t->redis_raw('EXISTS', 'pki:acme:jwk:' . thumb_of($k)) + 0, 0,
       '  no account made');
}

my $B = account(type => 'rsa');
is($B->{r}{status}, 201, 'RS256 account');
my $E = account(type => 'ed25519');
is($E->{r}{status}, 201, 'EdDSA account');

# contact update, POST-as-GET
$r = post($A, $A->{kid}, { contact => ['mailto:other@example.com'] });
is($r->{status}, 200, 'account update');
is_deeply($r->{json}{contact}, ['mailto:other@example.com'], 'contact set');
$r = post($A, $A->{kid}, { contact => ['tel:+1555'] });
problem_is($r, 400, 'unsupportedContact', 'tel: contact');
# RFC 3986 3.1: the scheme is case-insensitive; RFC 8555 7.3: one
# addr-spec, no hfields
$r = post($A, $A->{kid}, { contact => ['MAILTO:Ops@example.com'] });
is($r->{status}, 200, 'a MAILTO: contact (any case of the scheme)')
    or diag($r->{content});
for my $bad ('mailto:ops@', 'mailto:@example.com', 'mailto:a@b@example.com',
             'mailto:a%2Cb@example.com', 'mailto:a@example.com?cc=b@c.d',
             "mailto:a\x01b\@example.com", "mailto:a\x7f\@example.com",
             "mailto:\xc3\xa9t\@example.com", 'mailto:a@-.-', 'mailto:a@[x',
             'mailto:a@*.example.com', 'mailto:a@ex_ample.com',
             # RFC 6068 2: gen-delims other than "@" are percent-encoded,
             # which is refused: unencoded, "#" starts a fragment
             'mailto:a#b@example.com', 'mailto:a[b]@example.com',
             'mailto:a/b@example.com') {
    $r = post($A, $A->{kid}, { contact => [$bad] });
    problem_is($r, 400, 'invalidContact', 'contact '
               . ($bad =~ s/([^\x21-\x7e])/sprintf('\\x%02x', ord $1)/ger));
}
# a payload that is not UTF-8 (a lone 0xe9) is not JSON (RFC 8259 8.1)
$r = post($A, $A->{kid}, { contact => ["mailto:\x{e9}t\@example.com"] });
problem_is($r, 400, 'malformed', 'a contact in Latin-1, not UTF-8');
like($r->{json}{detail} // '', qr/not UTF-8/, '... saying so');
$r = post($A, $A->{kid}, { contact => ['mailto:other@example.com'] });
is($r->{status}, 200, 'the contact set back');

# --- JWS error paths ---------------------------------------------------------------

my $n = nonce();
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'a.example' }] }, nonce => $n);
is($r->{status}, 201, 'newOrder with a fresh nonce');
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'a.example' }] }, nonce => $n);
problem_is($r, 400, 'badNonce', 'replayed nonce');
like($r->{headers}{'replay-nonce'} // '', qr/^[\w-]+$/,
     'badNonce carries a fresh nonce');

$r = post($A, "$BASE/new-order", { identifiers => [] },
          nonce => 'bm90LWEtcmVhbC1ub25jZQ');
problem_is($r, 400, 'badNonce', 'made-up nonce');

# RFC 8555 6.5.2: a nonce that no base64url encoding gives is malformed
for my $bad ('not*base64!', 'abcde', 'ab=') {
    $r = post($A, "$BASE/new-order", { identifiers => [] }, nonce => $bad);
    problem_is($r, 400, 'malformed', "nonce '$bad'");
    like($r->{json}{detail} // '', qr/nonce.*not base64url/,
         "... nonce '$bad': the detail says so");
}

$r = post($A, "$BASE/new-order", { identifiers => [] }, drop => ['nonce'],
          nonce => 'x');
problem_is($r, 400, 'badNonce', 'no nonce');

# a forged request must not burn the nonce
$n = nonce();
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'b.example' }] }, nonce => $n,
          sig => 'x' x 64);
problem_is($r, 400, 'malformed', 'bad signature');
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'b.example' }] }, nonce => $n);
is($r->{status}, 201, 'the nonce of a badly signed request is still good');

$r = post($A, "$BASE/new-order", {}, alg => 'none', sig => '');
problem_is($r, 400, 'badSignatureAlgorithm', 'alg none');
ok(ref $r->{json}{algorithms} eq 'ARRAY'
   && grep({ $_ eq 'ES256' } @{ $r->{json}{algorithms} }),
   'badSignatureAlgorithm lists the algorithms');

{
    my $j = jws(key => $A->{key}, url => "$BASE/new-order", nonce => nonce(),
                kid => $A->{kid}, payload => '{}', alg => 'HS256',
                sig => Crypt::Mac::HMAC::hmac('SHA256', 'secret', 'x'));
    $r = post_raw("$BASE/new-order", $JSON->encode($j));
    problem_is($r, 400, 'badSignatureAlgorithm', 'alg HS256');
}

$r = post($A, "$BASE/new-order", { identifiers => [] },
          url => "$BASE/new-account");
problem_is($r, 401, 'unauthorized', 'url mismatch');

$r = post($A, "$BASE/new-order", { identifiers => [] }, jwk => 1,
          kid => $A->{kid});
problem_is($r, 400, 'malformed', 'jwk and kid');

$r = post($A, "$BASE/new-order", { identifiers => [] }, jwk => 1);
problem_is($r, 400, 'malformed', 'jwk where kid is required');

{
    my $j = jws(key => $A->{key}, url => "$BASE/new-order", nonce => nonce(),
                kid => $A->{kid}, payload => '{}');
    $r = post_raw("$BASE/new-order", $JSON->encode($j),
                  ctype => 'application/json');
    is($r->{status}, 415, 'wrong content type: 415');
    is($r->{json}{type} // '', 'urn:ietf:params:acme:error:malformed',
       'wrong content type: malformed');
    nonce_usable($r, 'wrong content type');
    # the media type is compared whole: parameters may follow, nothing else
    for my $ct ('application/jose+json x', 'application/jose+jsonx') {
        $j = jws(key => $A->{key}, url => "$BASE/new-order",
                 nonce => nonce(), kid => $A->{kid}, payload => '{}');
        $r = post_raw("$BASE/new-order", $JSON->encode($j), ctype => $ct);
        is($r->{status}, 415, "Content-Type \"$ct\": 415");
    }
    $j = jws(key => $A->{key}, url => "$BASE/new-order", nonce => nonce(),
             kid => $A->{kid}, payload => '{}');
    $r = post_raw("$BASE/new-order", $JSON->encode($j),
                  ctype => 'application/jose+json ; charset=utf-8');
    isnt($r->{status}, 415, '... with a parameter after a space: accepted');
}

{
    # a chunked body whose first chunk size is not hex: a problem
    # document, not nginx's HTML page (RFC 8555 6.7)
    require IO::Socket::SSL;
    my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1',
        PeerPort => $t->https_port, SSL_ca_file => $t->pki . '/root.pem',
        SSL_verifycn_name => '127.0.0.1', Timeout => 20);
    ok($s, 'broken chunked body: connected');
    my $resp = '';
    if ($s) {
        print $s "POST /acme/new-order HTTP/1.1\r\n"
            . "Host: 127.0.0.1:" . $t->https_port . "\r\n"
            . "Content-Type: application/jose+json\r\n"
            . "Transfer-Encoding: chunked\r\n\r\nzz\r\n{}\r\n0\r\n\r\n";
        local $/;
        $resp = <$s> // '';
    }
    like($resp, qr{^HTTP/1\.1 400 }, 'broken chunked body: 400');
    like($resp, qr{\r\nContent-Type: application/problem\+json}i,
         '... as a problem document');
    like($resp, qr{"urn:ietf:params:acme:error:malformed"},
         '... malformed');
}

{
    my $big = 'x' x (70 * 1024);
    $r = post($A, "$BASE/new-order", $big);
    is($r->{status}, 413, 'oversized body: 413');
    like($r->{headers}{'content-type'} // '', qr/problem\+json/,
         'oversized body: problem+json');
    nonce_usable($r, 'oversized body');
}

$r = post_raw("$BASE/new-order", 'not json');
problem_is($r, 400, 'malformed', 'garbage body');

$r = post({ key => new_key(), kid => "$BASE/acct/nope" }, "$BASE/new-order",
          { identifiers => [] });
problem_is($r, 400, 'accountDoesNotExist', 'unknown kid');

{
    my $j = jws(key => $A->{key}, url => "$BASE/new-order", nonce => nonce(),
                kid => $A->{kid}, payload => '{}',
                hdr => { crit => ['b64'], b64 => JSON::PP::false });
    $r = post_raw("$BASE/new-order", $JSON->encode($j));
    problem_is($r, 400, 'malformed', 'crit/b64');
}

# 50 concurrent requests on one nonce: exactly one wins
{
    my $n1 = nonce();
    my @bodies = map {
        $JSON->encode(jws(key => $A->{key}, url => $A->{kid}, nonce => $n1,
                          kid => $A->{kid}, payload => undef))
    } 1 .. 50;
    my @pids;
    my $res = $t->dir . '/race';
    mkdir $res;
    for my $i (0 .. 49) {
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            my $h = HTTP::Tiny->new(verify_SSL => 1, timeout => 20,
                SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
            my $x = $h->request('POST', $A->{kid}, {
                headers => { 'Content-Type' => 'application/jose+json' },
                content => $bodies[$i] });
            spew("$res/$i", $x->{status});
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    waitpid($_, 0) for @pids;
    my %count;
    $count{ slurp("$res/$_") // 'none' }++ for 0 .. 49;
    is($count{200} // 0, 1, '50 requests on one nonce: exactly one 200');
    is($count{400} // 0, 49, '... and 49 badNonce')
        or diag(join(' ', map { "$_=$count{$_}" } sort keys %count));
}

# --- orders --------------------------------------------------------------------

$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => '*.wild.example' }] });
is($r->{status}, 201, 'wildcard order');
{
    my $a = post($A, $r->{json}{authorizations}[0], '');
    my @types = map { $_->{type} } @{ $a->{json}{challenges} };
    is_deeply(\@types, ['dns-01'], 'wildcard: dns-01 only');
    ok($a->{json}{wildcard}, 'wildcard flag');
    is($a->{json}{identifier}{value}, 'wild.example', 'no *. in the authz');
}

$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'ip', value => '127.0.0.1' }] });
is($r->{status}, 201, 'IP order (RFC 8738)');
{
    my $a = post($A, $r->{json}{authorizations}[0], '');
    my @types = sort map { $_->{type} } @{ $a->{json}{challenges} };
    is_deeply(\@types, ['http-01', 'tls-alpn-01'], 'IP: no dns-01');
}

$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'bad..name' }] });
problem_is($r, 400, 'rejectedIdentifier', 'bad DNS name');

# a client's control characters never reach the error log as such: a
# name with a line break cannot forge a line there
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => "forge.example\nFAKE LOG LINE\e[31m" }] });
problem_is($r, 400, 'rejectedIdentifier', 'a name with a line break');
{
    my $log = slurp($t->error_log) // '';
    unlike($log, qr/^FAKE LOG LINE/m, '... forges no line in the error log');
    like($log, qr/forge\.example\?FAKE LOG LINE\?\[31m/,
         '... logged with its control characters as "?"');
}

# RFC 8555 7.1.4: "xn--" labels must be valid A-labels; other "??--"
# labels are reserved (RFC 5891 4.2.3.1)
for my $bad (['xn--zzzz.example', 'IDNA2008 A-label'],
             ['www.xn--ls8h.example', 'IDNA2008 A-label'],
             ['ab--cd.example', 'reserved'],
             ['127.0.0.1', '"127.0.0.1"; an IP address is an identifier of '
                           . 'type "ip" (RFC 8738)'],
             ['::1', '"::1"; an IP address is an identifier of type "ip"'],
             ['dot.example.com.', '"dot.example.com.": a trailing dot'],
             ['bad..name', '"bad..name": an empty label'],
             ['under_score.example', 'a character other than a letter'],
             [('a' x 64) . '.example', 'a label longer than 63'],
             # a wildcard is validated by dns-01 alone: a base whose
             # _acme-challenge name exceeds 253 characters never could be
             ['*.' . ('a' x 63 . '.') x 3 . ('b' x 38) . '.example',
              'dns-01 name would be longer than 253']) {
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => $bad->[0] }] });
    problem_is($r, 400, 'rejectedIdentifier', "DNS name $bad->[0]");
    like($r->{json}{detail} // '', qr/\Q$bad->[1]\E/, '... saying why');
}
for my $good ('xn--bcher-kva.example', 'XN--80AK6AA92E.example',
              '*.' . ('a' x 63 . '.') x 3 . ('b' x 37) . '.example') {
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => $good }] });
    is($r->{status}, 201, "DNS name $good: taken")
        or diag($r->{content});
}
# a name whose _acme-challenge name would exceed 253 characters (over
# 237) is offered no dns-01, which could never be looked up
for my $n ([247, 'http-01 tls-alpn-01'], [237, 'dns-01 http-01 tls-alpn-01']) {
    my $name = ('a' x 63 . '.') x 3 . ('b' x ($n->[0] - 200)) . '.example';
    is(length($name), $n->[0], "a name of $n->[0] characters");
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => $name }] });
    is($r->{status}, 201, '... ordered') or diag($r->{content});
    my $az = post($A, $r->{json}{authorizations}[0] // "$BASE/x", '');
    is(join(' ', sort map { $_->{type} } @{ $az->{json}{challenges} || [] }),
       $n->[1], "... its challenges: $n->[1]");
}
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'email', value => 'a@b.c' }] });
problem_is($r, 400, 'unsupportedIdentifier', 'email identifier');
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'a.example' }],
          notAfter => '2001-01-01T00:00:00Z' });
problem_is($r, 400, 'malformed', 'notAfter in the past');

# RFC 3339 offsets (lego and Go's x/crypto/acme send the host's own): the
# order shows the same instant in UTC; malformed dates are refused
{
    my $t0 = int(time / 60) * 60 + 20 * 86400;
    my $at = sub {                  # UTC instant, offset in minutes
        my ($when, $min) = @_;
        my $s = POSIX::strftime('%Y-%m-%dT%H:%M:%S',
                                gmtime($when + $min * 60));
        return $s . ($min == 0 ? 'Z' : sprintf('%s%02d:%02d',
                     $min < 0 ? '-' : '+', abs($min) / 60, abs($min) % 60));
    };
    my $o = post($A, "$BASE/new-order", {
        identifiers => [{ type => 'dns', value => 'tz.example' }],
        notBefore => $at->($t0, 240), notAfter => $at->($t0 + 86400, -330) });
    is($o->{status}, 201, 'notBefore +04:00, notAfter -05:30: accepted')
        or diag($o->{content});
    is($o->{json}{notBefore}, $at->($t0, 0), '... notBefore in UTC');
    is($o->{json}{notAfter}, $at->($t0 + 86400, 0), '... notAfter in UTC');
    for my $bad ('2030-02-30T00:00:00Z', '2030-01-01T00:00:00+4:00',
                 '2030-01-01 00:00:00Z', '2030-01-01T00:00:00+24:00',
                 '2030-1-01T00:00:00Z', '2030-01-01T00:00:00.Z',
                 '2030-01-01T00:00:00') {
        $r = post($A, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'tz.example' }],
                  notAfter => $bad });
        problem_is($r, 400, 'malformed', "notAfter '$bad'");
    }
}

# RFC 8555 7.4: the dates asked for, or no certificate.  A start a day
# back plus a full validity ends before the end asked for: refused (it
# was accepted, and the certificate ended 20 h early); 1970 is a date
# like any other (it read as "none"); an order whose notAfter passed
# before its finalization issues nothing (it issued an expired
# certificate); one ending within the validity ends exactly there.
{
    my $iso = sub { POSIX::strftime('%Y-%m-%dT%H:%M:%SZ', gmtime($_[0])) };
    my $now = time;
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'dates.example' }],
              notBefore => $iso->($now - 20 * 3600),
              notAfter => $iso->($now + 90 * 86400) });
    problem_is($r, 400, 'malformed', 'notBefore 20 h back and notAfter 90 d '
               . 'ahead: longer than the 90-day profile');
    like($r->{json}{detail} // '', qr/^notBefore\/notAfter outside what the profile allows \(at most 90d \(7776000 s\), /,
         '... the limit in days');
    # notBefore through notAfter, both included (RFC 5280 4.1.2.5): 90 days
    # end at notBefore + 90 days - 1 s; a second later is 90 days and 1 s
    for my $extra (0, 1) {
        my $nb = int(time) + 3600;
        $r = post($A, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'dates.example' }],
                  notBefore => $iso->($nb),
                  notAfter => $iso->($nb + 90 * 86400 - 1 + $extra) });
        if ($extra) {
            problem_is($r, 400, 'malformed', 'notAfter at notBefore + 90 d: '
                       . 'a second longer than the 90-day profile');
        } else {
            is($r->{status}, 201, 'notAfter at notBefore + 90 d - 1 s: the '
               . '90-day profile, notAfter included') or diag($r->{content});
        }
    }
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'dates.example' }],
              notBefore => '1970-01-01T00:00:00Z',
              notAfter => '1970-01-01T01:00:00+01:00' });
    problem_is($r, 400, 'malformed', 'notBefore/notAfter in 1970');

    my (undef, $url, $o) = order_ready($A, 'soon.example.test');
    my $ready = $o && $o->{json}{status} eq 'ready';
    # The same name again, ending 10 s from now (room for a slow newOrder):
    # the authorization is reused.  And a notBefore a day back, less 10 s,
    # which newOrder takes.  Both finalized once those limits are past (on
    # this clock, the server's): the first would have expired, the second
    # is more than a day back.
    my $na = int(time) + 10;
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'soon.example.test' }],
              notAfter => $iso->($na) });
    is($r->{status}, 201, 'an order ending in 10 s') or diag($r->{content});
    is($r->{json}{status}, 'ready', '... ready at once (reused)');
    my $nb = int(time) - 86400 + 10;
    my $rb = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'soon.example.test' }],
              notBefore => $iso->($nb) });
    is($rb->{status}, 201, 'an order from a day back less 10 s')
        or diag($rb->{content});
    # this test's CA is younger than that: the order starts with the CA
    # (t/acme_notbefore_ca.t); stored as under an older CA, to finalize it
    # once its notBefore is more than a day back
    {
        my ($ca_nb) = $t->x509_dates($t->pki . '/issuing.pem');
        is($rb->{json}{notBefore} // '', $iso->($ca_nb),
           '... moved to the start of this young CA');
        order_edit($rb->{headers}{location}, sub {
            $_[0]{notBefore} = $nb }) if $rb->{headers}{location};
    }
    sleep 0.2 while time < $na + 1 || time < $nb + 86400 + 1;
    my $n = cert_records();
    my ($der) = csr_der('soon', subj => '/', san => 'DNS:soon.example.test');
    my $f = post($A, $r->{json}{finalize}, { csr => b64u($der) });
    problem_is($f, 403, 'orderNotReady', 'finalized after its notAfter');
    like($f->{json}{detail} // '', qr/would have expired/, '... says why');
    is(cert_records(), $n, '... nothing is issued');
    my $oget = post($A, $r->{headers}{location} // '', '');
    is($oget->{json}{status} // '', 'invalid', '... and the order is invalid');

    # the order from a day back: refused, nothing issued
    $r = $rb;
    $n = cert_records();
    ($der) = csr_der('soon1', subj => '/', san => 'DNS:soon.example.test');
    $f = post($A, $r->{json}{finalize} // '', { csr => b64u($der) });
    problem_is($f, 403, 'orderNotReady', 'finalized when its notBefore is '
               . 'more than a day back');
    like($f->{json}{detail} // '', qr/more than a day back/, '... says why');
    is(cert_records(), $n, '... nothing is issued');

    my $end = int(time) + 7 * 86400 + 123;
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'soon.example.test' }],
              notAfter => $iso->($end) });
    ($der) = csr_der('soon2', subj => '/', san => 'DNS:soon.example.test');
    $f = post($A, $r->{json}{finalize}, { csr => b64u($der) });
    is($f->{status}, 200, 'an order ending in 7 days: issued')
        or diag($f->{content});
    my $cr = post($A, $f->{json}{certificate} // '', '');
    my $leaf = $t->save_first_cert($cr->{content} // '', 'soon2-leaf');
    is(not_after($leaf), $end, '... ending exactly at its notAfter');
}

# a reused authorization that expires before the order would: the
# order's "expires" is the authorization's (RFC 8555 7.1.3)
{
    my (undef, undef, $o) = order_ready($A, 'reuse-exp.example.test');
    my $az = $o->{json}{authorizations}[0];
    my $soon = time + 7200;
    authz_edit($az, sub { $_[0]{expires} = $soon });
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'reuse-exp.example.test' }] });
    is($r->{status}, 201, 'reuse: an order');
    is($r->{json}{authorizations}[0], $az, '... with the authorization '
       . 'that expires in 2 h');
    ok(rfc3339($r->{json}{expires}) <= $soon, '... and the order expires '
       . 'no later than it');
}

# RFC 8738: an IPv4 address written as IPv6 is refused (the certificate
# would carry 16 octets for an address proven over IPv4)
for my $ip ('::ffff:192.0.2.7', '::192.0.2.7') {
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'ip', value => $ip }] });
    problem_is($r, 400, 'rejectedIdentifier', "IP identifier $ip");
}

$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'nr.example' }] });
my $pending = $r->{json};
my $pending_url = $r->{headers}{location};
is($pending->{status}, 'pending', 'new order pending');

{
    my ($der) = csr_der('nr', subj => '/', san => 'DNS:nr.example');
    $r = post($A, $pending->{finalize}, { csr => b64u($der) });
    problem_is($r, 403, 'orderNotReady', 'finalize before ready');
}

$r = post($B, $pending_url, '');
problem_is($r, 403, 'unauthorized', "another account's order");
$r = post($B, $pending->{authorizations}[0], '');
problem_is($r, 403, 'unauthorized', "another account's authorization");

$r = post($A, "$A->{kid}/orders", '');
is($r->{status}, 200, 'orders list');
ok(grep({ $_ eq $pending_url } @{ $r->{json}{orders} || [] }),
   'orders list holds the order');

# authorization deactivation
$r = post($A, $pending->{authorizations}[0], { status => 'deactivated' });
is($r->{json}{status}, 'deactivated', 'authz deactivated');
$r = post($A, $pending->{authorizations}[0], { status => 'deactivated' });
problem_is($r, 400, 'malformed', 'authz deactivated twice') or diag($r->{content});
$r = post($A, $pending_url, '');
is($r->{json}{status}, 'invalid', 'order with a deactivated authz: invalid');

# RFC 8555 7.1.2.1: the list holds pending orders, not invalid ones (a
# deactivated authorization, an expired order)
{
    my $p2 = post($A, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'nr2.example' }] });
    my $p3 = post($A, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'nr3.example' }] });
    my ($acct) = $A->{kid} =~ m{/acct/([\w-]+)$};
    my ($oid) = $p3->{headers}{location} =~ m{/order/[\w-]+/([\w-]+)$};
    my $okey = "pki:{acme:$acct}:order:$oid";
    my $o = decode_json($t->redis_raw('GET', $okey) =~ s/\n\z//r);
    $o->{expires} = time - 60;
    $t->redis('SET', $okey, $JSON->encode($o), 'KEEPTTL');

    my $l = post($A, "$A->{kid}/orders", '');
    is($l->{status}, 200, 'orders list again');
    my %in = map { $_ => 1 } @{ $l->{json}{orders} || [] };
    ok(!$in{$pending_url}, 'orders list: an invalid order is left out');
    ok(!$in{$p3->{headers}{location}}, '... so is an expired one');
    ok($in{$p2->{headers}{location}}, '... a pending one is listed');
}

# a failed validation: the challenge's error says what and has its own
# status (nothing listens on the lab's tls-alpn-01 port: connection, 400;
# http-01 without the file: 403); the client's failures are logged at
# info, not as a fault of this server (error)
{
    my $logpos = length(slurp($t->error_log) // '');
    my $o = post($A, "$BASE/new-order", { identifiers => [
        { type => 'dns', value => 'fail1.example.test' },
        { type => 'dns', value => 'fail2.example.test' }] });
    is($o->{status}, 201, 'order for failing validations');
    my ($az1, $az2) = @{ $o->{json}{authorizations} || [] };
    my %want = ($az1 => ['tls-alpn-01', 'connection', 400],
                $az2 => ['http-01', 'incorrectResponse|unauthorized', 403]);
    for my $az ($az1, $az2) {
        my ($type, $ptype, $status) = @{ $want{$az} };
        my $a = post($A, $az, '');
        my ($ch) = grep { $_->{type} eq $type } @{ $a->{json}{challenges} };
        post($A, $ch->{url}, {});
        my $done = poll($A, $az, 'valid');
        is($done->{json}{status}, 'invalid', "$type failed: authz invalid");
        my ($c) = grep { $_->{type} eq $type }
                  @{ $done->{json}{challenges} || [] };
        like($c->{error}{type} // '',
             qr/^urn:ietf:params:acme:error:($ptype)$/,
             "$type failed: error type") or diag($done->{content});
        is($c->{error}{status}, $status, "$type failed: error status");
        next if $type ne 'tls-alpn-01';
        # the port tried is named (a lab's private address is not)
        my ($tport) = $conf =~ /acme_validation_tls_port (\d+);/;
        like($c->{error}{detail} // '',
             qr/^cannot connect to fail1\.example\.test \(port $tport\): /,
             "$type failed: the detail names the port");
    }
    $o = post($A, $o->{headers}{location}, '');
    is($o->{json}{status}, 'invalid', 'its order: invalid');
    my $log = substr(slurp($t->error_log) // '', $logpos);
    my $line = 'acme: validation: tls-alpn-01 dns:fail1.example.test '
               . 'invalid: cannot connect';
    like($log, qr/\[info\] .*\Q$line\E/,
         'tls-alpn-01 connection refused: logged at info');
    unlike($log, qr/\[error\] .*acme: validation: .*fail[12]\.example/,
           '... neither failure at error');
}

# --- issuance ---------------------------------------------------------------------

my $c1 = issue($A, 'www1', 'www1.example.test', '127.0.0.1');
SKIP: {
    skip 'no certificate (validation failed?)', 12 if !$c1 || !$c1->{leaf};
    my ($ok, $out) = $t->verify_chain($c1->{leaf});
    ok($ok, 'ACME certificate verifies to the root') or diag($out);
    my $txt = $t->x509_text($c1->{leaf});
    like($txt, qr/DNS:www1\.example\.test/, 'DNS SAN');
    like($txt, qr/IP Address:127\.0\.0\.1/, 'IP SAN');
    like($txt, qr/TLS Web Server Authentication/, 'serverAuth');
    my $chain = slurp($c1->{chain});
    my @certs = $chain =~ /BEGIN CERTIFICATE/g;
    is(scalar @certs, 2, 'chain: leaf + issuing CA');
    my $serial = $t->x509_field($c1->{leaf}, 'serial');
    my $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
    is($h->{status}, 'good', 'Redis record good');
    is($h->{protocol}, 'acme', 'record protocol acme');
    ok(grep({ $_ eq $c1->{order} }
            @{ post($A, "$A->{kid}/orders", '')->{json}{orders} || [] }),
       'orders list: a valid order is listed');

    # RFC 8555 6.3: a POST-as-GET's payload is empty; a payload on a
    # resource that takes nothing else is malformed, not read as a fetch
    {
        my $o1 = post($A, $c1->{order}, '');
        my $curl = $o1->{json}{certificate} // "$c1->{order}-none";
        for my $u ([$c1->{order}, 'an order'],
                   ["$A->{kid}/orders", 'the orders list'],
                   [$curl, 'a certificate']) {
            for my $pl ({}, { status => 'deactivated' }) {
                my $n = scalar keys %$pl;
                $r = post($A, $u->[0], $pl);
                problem_is($r, 400, 'malformed',
                           "POST with a payload of $n member(s) to $u->[1]");
                like($r->{json}{detail} // '', qr/payload must be empty/,
                     '  saying why');
                nonce_usable($r, "POST with a payload to $u->[1]");
            }
            $r = post($A, $u->[0], '');
            is($r->{status}, 200, "POST-as-GET to $u->[1] still 200");
        }
        is(post($A, $c1->{order}, '')->{json}{status}, 'valid',
           '  the order is still valid');
    }

    # CSR checks
    my ($r2, $ourl, $o) = order_ready($A, 'csr.example.test');
    my ($der) = csr_der('foreign', subj => '/',
                        san => 'DNS:csr.example.test,DNS:evil.example');
    $r = post($A, $o->{json}{finalize}, { csr => b64u($der) });
    problem_is($r, 400, 'badCSR', 'CSR with a foreign name');
    ($der) = csr_der('cnforeign', subj => '/CN=evil.example',
                     san => 'DNS:csr.example.test');
    $r = post($A, $o->{json}{finalize}, { csr => b64u($der) });
    problem_is($r, 400, 'badCSR', 'CSR with a foreign CN');
    {
        # a BMPString whose bytes spell the order's name: eight CJK
        # characters, not the name (string_mask default picks BMP)
        my $cn = Encode::decode('UTF-16BE', 'csr.example.test');
        my $cnf = $t->dir . '/bmp.cnf';
        open(my $fh, '>:encoding(UTF-8)', $cnf) or die "$cnf: $!";
        print $fh "[req]\ndistinguished_name = dn\nstring_mask = default\n"
                . "utf8 = yes\nprompt = no\n[dn]\nCN = $cn\n";
        close($fh);
        my $kf = $t->dir . '/bmp.key';
        my $df = $t->dir . '/bmp.der';
        my ($rc, undef, $err) = run_cmd(['openssl', 'req', '-new', '-newkey',
            'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout',
            $kf, '-config', $cnf, '-addext',
            'subjectAltName=DNS:csr.example.test', '-outform', 'DER', '-out',
            $df]);
        is($rc, 0, 'a CSR with a BMPString CN') or diag($err);
        my (undef, $txt) = run_cmd(['openssl', 'asn1parse', '-inform', 'DER',
                                    '-in', $df]);
        like($txt // '', qr/BMPSTRING/, '... it is a BMPString');
        $r = post($A, $o->{json}{finalize}, { csr => b64u(slurp($df)) });
        problem_is($r, 400, 'badCSR', 'CSR whose BMPString CN spells the '
                   . 'name in its bytes');
        like($r->{json}{detail} // '', qr/UTF8String/, '... it says why');
    }
    ($der) = csr_der('missing', subj => '/', san => 'DNS:other.example.test');
    $r = post($A, $o->{json}{finalize}, { csr => b64u($der) });
    problem_is($r, 400, 'badCSR', 'CSR without the order name');

    # a CSR for the order's name made with an account's key (the
    # signer's own, B's RSA one, C's P-256 one: the CSR reader's fast path
    # builds a legacy key for it): every account key is refused
    my $finalize_with = sub {
        my ($c, $label) = @_;
        my $kf = $t->dir . "/acctkey-$label.pem";
        spew($kf, $c->{key}{pk}->export_key_pem('private'));
        my (undef, $der) = run_cmd(['openssl', 'req', '-new', '-key', $kf,
            '-subj', '/', '-addext', 'subjectAltName=DNS:csr.example.test',
            '-outform', 'DER']);
        return post($A, $o->{json}{finalize}, { csr => b64u($der) });
    };
    $r = $finalize_with->($A, 'a');
    problem_is($r, 400, 'badCSR', 'CSR with the account key');

    $r = $finalize_with->($B, 'b');
    problem_is($r, 400, 'badCSR', "CSR with another account's key");
    like($r->{json}{detail} // '', qr/is an ACME account key/,
         '... the detail says why');
    like(slurp($t->error_log) // '',
         qr/the CSR's key is the key of an ACME account \(thumbprint /,
         '... and the log');
    is(post($A, $ourl, '')->{json}{status}, 'ready',
       '... and the order is still ready');
    $r = $finalize_with->(account(), 'c');
    problem_is($r, 400, 'badCSR', "CSR with another account's P-256 key");
    $r = post($A, $o->{json}{finalize}, { csr => b64u('garbage') });
    problem_is($r, 400, 'badCSR', 'CSR garbage');

    # a CSR the reader refuses by policy, not as malformed (signed with
    # MD5): the problem tells the client why
    {
        my $kf = $t->dir . '/md5.key';
        run_cmd(['openssl', 'genpkey', '-algorithm', 'RSA', '-pkeyopt',
                 'rsa_keygen_bits:2048', '-out', $kf]);
        my (undef, $der) = run_cmd(['openssl', 'req', '-new', '-md5',
            '-key', $kf, '-subj', '/', '-addext',
            'subjectAltName=DNS:csr.example.test', '-outform', 'DER']);
        $r = post($A, $o->{json}{finalize}, { csr => b64u($der) });
        problem_is($r, 400, 'badCSR', 'CSR signed with MD5');
        like($r->{json}{detail} // '', qr/signed with MD2, MD4 or MD5/,
             '... the problem says why');
    }

    # ARI for a fresh certificate
    my $certid = cert_id($c1->{leaf});
    $r = $http->get("$BASE/renewal-info/$certid");
    is($r->{status}, 200, 'renewalInfo: 200') or diag($r->{content});
    my $w = eval { decode_json($r->{content})->{suggestedWindow} } || {};
    my ($s, $e) = (rfc3339($w->{start}), rfc3339($w->{end}));
    my $na = not_after($c1->{leaf});
    ok($s && $e && $s < $e && $e < $na && $s > time + 30 * 86400,
       'fresh: window in the last third of 90 days');
    ok($r->{headers}{'retry-after'}, 'renewalInfo has Retry-After');
    # RFC 9773 7: a GET, so that caches (a CDN before a fleet) serve it
    is($r->{headers}{'cache-control'} // '', 'public, max-age=21600',
       'renewalInfo may be cached as long as Retry-After');
    # one certificate, one certID: the DER serial's content octets only
    {
        my ($aki, $ser) = split /\./, $certid;
        my $raw = decode_base64url($ser);
        for my $bad (["$aki." . b64u("\0$raw"), 'a redundant zero octet'],
                     ["$aki." . b64u("\x80" . $raw), 'a negative number']) {
            my $x = $http->get("$BASE/renewal-info/$bad->[0]");
            is($x->{status}, 404, "renewalInfo, $bad->[1] in the serial: 404");
        }
    }
    my $unk = $http->get("$BASE/renewal-info/$certid" =~ s/\.[^.]*$/.AQ/r);
    is($unk->{status}, 404, 'renewalInfo of an unknown serial: 404');
    is($unk->{headers}{'cache-control'} // '', 'no-store',
       '... not cached');
    ok(!exists decode_json($r->{content})->{explanationURL},
       'fresh: no explanationURL (nothing to explain)');

    # revocation by a stranger, then by the owner
    my $ccder = $t->x509_der($c1->{leaf});
    $r = post($B, "$BASE/revoke-cert", { certificate => b64u($ccder) });
    problem_is($r, 403, 'unauthorized', 'revocation by a stranger');
    $r = post($A, "$BASE/revoke-cert", { certificate => b64u($ccder),
                                         reason => 6 });
    problem_is($r, 400, 'badRevocationReason', 'reason 6');
    $r = post($A, "$BASE/revoke-cert", { certificate => b64u($ccder),
                                         reason => 4 });
    is($r->{status}, 200, 'revocation by the owner') or diag($r->{content});
    $h = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
    is($h->{status}, 'revoked', 'record revoked');
    $r = post($A, "$BASE/revoke-cert", { certificate => b64u($ccder) });
    problem_is($r, 400, 'alreadyRevoked', 'revoked twice');

    $r = $http->get("$BASE/renewal-info/$certid");
    $w = eval { decode_json($r->{content})->{suggestedWindow} } || {};
    ok(rfc3339($w->{end}) && rfc3339($w->{end}) <= time,
       'revoked: the window is in the past (renew now)');
    is(eval { decode_json($r->{content})->{explanationURL} },
       'https://pki.example.test/why-renew',
       'revoked: explanationURL (acme_renewal_explanation)');

    # revocation signed with the certificate key
    my $c2 = issue($A, 'www2', 'www2.example.test');
    if ($c2 && $c2->{leaf}) {
        my $ck = Crypt::PK::ECC->new($c2->{key});
        my $ckey = { pk => $ck, alg => 'ES256', type => 'ec' };
        my $d2 = $t->x509_der($c2->{leaf});
        $r = post({ key => $ckey }, "$BASE/revoke-cert",
                  { certificate => b64u($d2) }, jwk => 1);
        is($r->{status}, 200, 'revocation with the certificate key')
            or diag($r->{content});
        $r = post({ key => new_key() }, "$BASE/revoke-cert",
                  { certificate => b64u($d2) }, jwk => 1);
        is($r->{status}, 403, 'revocation with an unrelated jwk: 403');
    }
}

# --- profiles (draft-ietf-acme-profiles) -------------------------------------------
# the demo's ACME location offers "shortlived" (template server: 7 days)
# beside its default template acme (90 days)

is_deeply($dir->{meta}{profiles},
          { shortlived => '7-day TLS server certificates' },
          'directory: meta.profiles');
{
    local %order_extra = (profile => 'shortlived');
    my $s = issue($A, 'short1', 'short1.example.test');
    SKIP: {
        skip 'no certificate (validation failed?)', 6 if !$s || !$s->{leaf};
        my ($ok, $out) = $t->verify_chain($s->{leaf});
        ok($ok, 'profile shortlived: the certificate verifies') or diag($out);
        my $life = not_after($s->{leaf}) - time;
        ok($life > 7 * 86400 - 3600 && $life <= 7 * 86400,
           "profile shortlived: valid 7 days (${life} s left)");
        my ($nb, $na) = $t->x509_dates($s->{leaf});
        is(defined $na ? $na - $nb : undef, 7 * 86400 - 1,
           'profile shortlived: notAfter - notBefore = 7 days - 1 s '
           . '(RFC 5280: notAfter included)');
        like($t->x509_text($s->{leaf}), qr/TLS Web Server Authentication/,
             'profile shortlived: serverAuth');
        my $o = post($A, $s->{order}, '');
        is($o->{json}{profile}, 'shortlived', 'the order shows its profile');
        my $serial = $t->x509_field($s->{leaf}, 'serial');
        is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{template},
           'server', 'the record names the profile\'s template');
    }
}
{
    my $d = issue($A, 'noprof1', 'noprof1.example.test');
    SKIP: {
        skip 'no certificate (validation failed?)', 3 if !$d || !$d->{leaf};
        my $life = not_after($d->{leaf}) - time;
        ok($life > 89 * 86400, 'no profile: the default 90 days');
        my ($nb, $na) = $t->x509_dates($d->{leaf});
        is(defined $na ? $na - $nb : undef, 90 * 86400 - 1,
           'no profile: notAfter - notBefore = 90 days - 1 s (a 90-day '
           . 'validity, notAfter included)');
        ok(!exists post($A, $d->{order}, '')->{json}{profile},
           'an order without a profile shows none');
    }
}
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'x.example.test' } ],
          profile => "nosuch\x{1}\"profile" . ('x' x 500) });
problem_is($r, 400, 'invalidProfile', 'an unknown profile');
like($r->{json}{detail} // '', qr/^profile "nosuch\?\?profilexx[x]*\.\.\." is not/,
     'the detail names it, cut and tamed');
ok(length($r->{json}{detail} // '') < 150, 'the detail is short');
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'x.example.test' } ],
          profile => { name => 'shortlived' } });
problem_is($r, 400, 'invalidProfile', 'a profile that is not a string');
$r = post($A, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => '*.example.test' } ],
          profile => 'shortlived' });
problem_is($r, 400, 'rejectedIdentifier',
           'a wildcard the profile\'s template does not issue');

# --- problems the nginx module answers by itself carry a nonce (RFC 8555 6.5) ---
#
# A path the module does not route (over 400 bytes) and a body over
# acme_max_body_size are refused before the engine sees the request, yet
# answered like the engine's own problems: a fresh Replay-Nonce that the
# next request can use, Link rel="index", no-store; an unread body is still
# discarded and the connection kept alive.

# the answer's Replay-Nonce, and the next request signed with it passes
sub nonce_usable {
    my ($r, $name) = @_;
    my $n = $r->{headers}{'replay-nonce'} // '';
    like($n, qr/^[\w-]{16,}$/, "$name: a fresh Replay-Nonce");
    my $next = post($A, $A->{kid}, '', nonce => $n);
    is($next->{status}, 200, "$name: that nonce is good for the next request")
        or diag("$next->{status} $next->{content}");
}

# the head of a JWS POST of LEN bytes to PATH on a raw socket (more header
# lines in @more), no body
sub raw_post_head {
    my ($s, $host, $path, $len, @more) = @_;
    print $s "POST $path HTTP/1.1\r\nHost: $host\r\n"
        . "Content-Type: application/jose+json\r\n"
        . join('', map { "$_\r\n" } @more)
        . "Content-Length: $len\r\n\r\n";
}

# one HTTP/1.1 answer from a raw socket (Content-Length bodies only)
sub read_answer {
    my ($s, $head) = @_;
    my $line = $s->getline // '';
    my ($body, %h) = ('');
    my ($st) = $line =~ m{^HTTP/1\.1 (\d+)};
    while (defined(my $l = $s->getline)) {
        last if $l =~ /^\r?\n$/;
        $h{lc $1} = $2 if $l =~ /^([^:]+):\s*(.*?)\r?\n$/;
    }
    my $want = $head ? 0 : $h{'content-length'} // 0;
    while (length($body) < $want) {
        my $got = $s->read(my $buf, $want - length($body)) or last;
        $body .= $buf;
    }
    return { status => $st // 0, headers => \%h, content => $body };
}

# Opens a TLS connection of its own to the server (check NAME), runs
# CODE->($socket, "host:port") with SIGPIPE ignored and a 30 s alarm, then
# closes it.
sub raw_tls {
    my ($name, $code) = @_;
    require IO::Socket::SSL;
    my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1',
        PeerPort => $t->https_port, SSL_ca_file => $t->pki . '/root.pem',
        SSL_verifycn_name => '127.0.0.1', Timeout => 20);
    ok($s, $name) or diag(IO::Socket::SSL::errstr());
    return if !$s;
    local $SIG{PIPE} = 'IGNORE';
    local $SIG{ALRM} = sub { die "timeout\n" };
    alarm 30;
    eval { $code->($s, '127.0.0.1:' . $t->https_port) };
    alarm 0;
    diag("raw connection: $@") if $@;
    close $s;
}

{
    my $long = "$BASE/" . ('x' x 450);
    $r = post($A, $long, { identifiers => [] });
    problem_is($r, 404, 'malformed', 'POST to a path over 400 bytes');
    nonce_usable($r, 'POST to a path over 400 bytes');
    my $l = $r->{headers}{link} // '';
    like(ref $l ? join(', ', @$l) : $l,
         qr{<\Q$BASE\E/directory>;\s*rel="index"},
         'POST to a path over 400 bytes: Link rel="index"');
    like($r->{headers}{'cache-control'} // '', qr/no-store/,
         'POST to a path over 400 bytes: no-store');

    $r = $http->get($long);
    $r->{json} = eval { decode_json($r->{content}) };
    problem_is($r, 404, 'malformed', 'GET of a path over 400 bytes');
    nonce_usable($r, 'GET of a path over 400 bytes');

    # the answer comes before the client sends the body: nginx discards the
    # body as it arrives, then serves the next request on that connection
    my $len = 200 * 1024;
    my ($a1, $a2) = ({}, {});
    raw_tls('a raw connection', sub {
        my ($s, $host) = @_;
        raw_post_head($s, $host, '/acme/new-order', $len);
        $a1 = read_answer($s);
        print $s 'x' x $len;
        print $s "HEAD /acme/new-nonce HTTP/1.1\r\nHost: $host\r\n\r\n";
        $a2 = read_answer($s, 1);
    });
    is($a1->{status} // 0, 413, 'body over the cap, not sent yet: 413');
    like($a1->{headers}{'content-type'} // '', qr{^application/problem\+json},
         'body over the cap, not sent yet: problem+json');
    nonce_usable($a1, 'body over the cap, not sent yet');
    is($a2->{status} // 0, 200, 'body over the cap: discarded, and the '
       . 'connection serves the next request');
    like($a2->{headers}{'replay-nonce'} // '', qr/^[\w-]{16,}$/,
         'body over the cap: the next request is answered in full');

    # a length over nginx's client_max_body_size (1m here) too: the
    # module's problem, not nginx's HTML page
    my $a3 = {};
    raw_tls('a raw connection, 2 MB announced', sub {
        my ($s, $host) = @_;
        raw_post_head($s, $host, '/acme/new-order', 2000000);
        $a3 = read_answer($s);
    });
    is($a3->{status} // 0, 413, 'a body over client_max_body_size: 413');
    like($a3->{headers}{'content-type'} // '', qr{^application/problem\+json},
         '  as a problem');
    nonce_usable($a3, 'a body over client_max_body_size');
    my $a4 = {};
    raw_tls('a raw connection, 2 MB to a proxy inside an ACME location', sub {
        my ($s, $host) = @_;
        raw_post_head($s, $host, '/acme-nest/proxy/x', 2000000);
        $a4 = read_answer($s);
    });
    is($a4->{status} // 0, 413, 'a proxied location inside an ACME one '
       . 'keeps client_max_body_size: 413 before any body is read');

    # refused before any resource: a POST's error answer has a nonce too
    $r = post($A, "$BASE/a/b/c/d/e/f", '');
    problem_is($r, 404, 'malformed', 'POST to a path of six segments');
    nonce_usable($r, 'POST to a path of six segments');

    # POST-as-GET to the directory and newNonce (RFC 8555 6.3: the server
    # must take it there too); a payload there is malformed
    my $gdir = $http->get("$BASE/directory");
    $r = post($A, "$BASE/directory", '');
    is($r->{status}, 200, 'POST-as-GET to the directory: 200');
    is_deeply($r->{json}, decode_json($gdir->{content}),
              '  the directory a GET gets');
    unlike($r->{headers}{link} // '', qr/rel="index"/,
           '  no index link on the directory');
    nonce_usable($r, 'POST-as-GET to the directory');
    $r = post($A, "$BASE/new-nonce", '');
    is($r->{status}, 200, 'POST-as-GET to newNonce: 200');
    is($r->{headers}{'cache-control'}, 'no-store', '  no-store');
    nonce_usable($r, 'POST-as-GET to newNonce');
    for my $c (['directory', 'the directory'], ['new-nonce', 'newNonce']) {
        $r = post($A, "$BASE/$c->[0]", {});
        problem_is($r, 400, 'malformed', "POST with a payload to $c->[1]");
        nonce_usable($r, "POST with a payload to $c->[1]");
        $r = post($A, "$BASE/$c->[0]", '', jwk => 1);
        problem_is($r, 400, 'malformed', "POST-as-GET with a jwk to $c->[1]");
    }

    # the URL in the error log as sent: a decoded line break forges no line
    my $logpos = length(slurp($t->error_log) // '');
    $r = $http->get("$BASE/x%0A2026/11/30%2000:00:00%20%5Balert%5D%20forged");
    is($r->{status}, 404, 'an escaped line break in the path: 404');
    my $log = substr(slurp($t->error_log) // '', $logpos);
    like($log, qr{acme: /acme/x%0A2026}, '  logged as sent');
    unlike($log, qr/^2026\/11\/30 00:00:00 \[alert\] forged/m,
           '  no forged line');

    # RFC 9110 10.1.1: no "100 Continue" for a body that is refused
    for my $case (['/acme/new-order', $len, 413, 'over the cap'],
                  ['/acme/' . ('x' x 500), 100, 404,
                   'to a path over 400 bytes'])
    {
        my ($path, $n, $want, $what) = @$case;
        my $a = {};
        raw_tls("Expect: 100-continue $what", sub {
            my ($s, $host) = @_;
            raw_post_head($s, $host, $path, $n, 'Expect: 100-continue');
            $a = read_answer($s);
        });
        is($a->{status} // 0, $want, "Expect: 100-continue, a body $what: "
           . "$want at once, no 100 Continue");
    }
}

# The Host goes into every URL of the answers: a name, an address and a
# port pass; what nginx lets through but would break a Link header or
# poison a cache in front ('"', '<', '>', ...) is refused, as a problem.
{
    my $logpos = length(slurp($t->error_log) // '');
    my %got;
    for my $h ('evil"<x>.example.test', 'a;b,c\'d.example.test',
               '[::1]:' . $t->https_port, 'Acme_1.example.test:443') {
        raw_tls("a raw connection, Host $h", sub {
            my ($s) = @_;
            print $s "GET /acme/directory HTTP/1.1\r\nHost: $h\r\n\r\n";
            $got{$h} = read_answer($s);
        });
    }
    # HTTP/1.0 without a Host: no URL to build either
    raw_tls('a raw connection, HTTP/1.0 without Host', sub {
        my ($s) = @_;
        print $s "GET /acme/directory HTTP/1.0\r\n\r\n";
        $got{none} = read_answer($s);
    });
    for my $h ('evil"<x>.example.test', 'a;b,c\'d.example.test', 'none') {
        my $a = $got{$h} || {};
        my $j = eval { decode_json($a->{content} // '') } || {};
        is($a->{status} // 0, 400, "Host $h: 400");
        is($j->{type} // '', 'urn:ietf:params:acme:error:malformed',
           "Host $h: malformed");
        is($j->{detail} // '', 'bad Host header', "Host $h: the detail");
    }
    for my $h ('[::1]:' . $t->https_port, 'Acme_1.example.test:443') {
        my $a = $got{$h} || {};
        my $j = eval { decode_json($a->{content} // '') } || {};
        is($a->{status} // 0, 200, "Host $h: the directory");
        is($j->{newNonce} // '', "https://$h/acme/new-nonce",
           "Host $h: its URLs name that host");
    }
    like(substr(slurp($t->error_log) // '', $logpos),
         qr/refused Host header "evil"<x>\.example\.test"/,
         'a refused Host: the error log says which');
}

# A chunked body has no size to refuse up front: the cap is crossed while
# the body is read.  The client pauses after a first small chunk, so that
# nginx's first read of the body finds nothing more (NGX_AGAIN) and the cap
# is crossed later, in nginx's own read handler.  The answer is the same
# problem as above, nonce included; the rest of the body is never read, so
# the connection is closed rather than kept for another request.
{
    my $a = {};
    my $logpos = length(slurp($t->error_log) // '');
    raw_tls('a raw connection for a chunked body', sub {
        my ($s, $host) = @_;
        print $s "POST /acme/new-order HTTP/1.1\r\nHost: $host\r\n"
            . "Content-Type: application/jose+json\r\n"
            . "Transfer-Encoding: chunked\r\n\r\n"
            . "10\r\n" . ('x' x 16) . "\r\n";
        sleep 0.3;
        # 80k in 8k chunks: over the 64k cap
        print $s "2000\r\n" . ('x' x 8192) . "\r\n" for 1 .. 10;
        print $s "0\r\n\r\n";
        $a = read_answer($s);
    });
    $a->{json} = eval { decode_json($a->{content} // '') } || {};
    is($a->{status} // 0, 413, 'chunked body over the cap, read late: 413');
    like($a->{headers}{'content-type'} // '', qr{^application/problem\+json},
         'chunked body over the cap, read late: problem+json');
    is($a->{json}{type} // '', 'urn:ietf:params:acme:error:malformed',
       'chunked body over the cap, read late: malformed');
    is($a->{json}{detail} // '', 'request body too large',
       'chunked body over the cap, read late: the detail');
    is(lc($a->{headers}{connection} // ''), 'close',
       'chunked body over the cap, read late: the connection is not kept');
    nonce_usable($a, 'chunked body over the cap, read late');
    my $log = substr(slurp($t->error_log) // '', $logpos);
    like($log, qr/client sent too large body: more than 65536 bytes/,
         'chunked body over the cap, read late: the error log says why');
    unlike($log, qr/\[(alert|crit|emerg)\]|exited on signal/,
           'chunked body over the cap, read late: no alert in the error log');
}

# Bodies within the cap but larger than nginx's client_body_buffer_size
# (16k here), with a Content-Length and chunked in 7-byte chunks (framing
# more than doubles what nginx reads): the module gathers them in memory,
# so nginx never spools one to a temp file on the event loop, and the
# request is served.  JSON allows the whitespace that pads them.  nginx's
# own copy of the body is whole too: /acme-rb/ logs $request_body.
{
    my $logpos = length(slurp($t->error_log) // '');
    my $rbsig;
    for my $how ('Content-Length', 'chunked', 'chunked, logged') {
        my $kid = $A->{kid};
        $kid =~ s{/acme/}{/acme-rb/} if $how =~ /logged/;
        my $j = jws(key => $A->{key}, url => $kid, nonce => nonce(),
                    kid => $kid, payload => undef);
        $rbsig = $j->{signature};
        my $body = $JSON->encode($j);
        $body =~ s/^\{/'{' . (' ' x (48 * 1024))/e;
        my $a = {};
        raw_tls("a raw connection for a 48k body ($how)", sub {
            my ($s, $host) = @_;
            (my $path = $kid) =~ s{^https://[^/]+}{};
            print $s "POST $path HTTP/1.1\r\nHost: $host\r\n"
                . "Content-Type: application/jose+json\r\n"
                . ($how eq 'chunked'
                   ? "Transfer-Encoding: chunked\r\n\r\n"
                     . join('', map { sprintf("%x\r\n%s\r\n", length, $_) }
                                unpack('(a7)*', $body))
                     . "0\r\n\r\n"
                   : 'Content-Length: ' . length($body) . "\r\n\r\n$body");
            $a = read_answer($s);
        });
        $a->{json} = eval { decode_json($a->{content} // '') } || {};
        is($a->{status} // 0, 200, "a 48k body ($how): served")
            or diag($a->{content});
        is($a->{json}{status} // '', 'valid', "a 48k body ($how): the account");
    }
    my $log = substr(slurp($t->error_log) // '', $logpos);
    unlike($log, qr/buffered to a temporary file/,
           'bodies over client_body_buffer_size: no temp file');
    # nginx logs after it answers, in one write() of some 48k that a
    # reader may catch half done: wait for the line's end.
    my $rb = '';
    for (1 .. 50) { $rb = slurp($t->dir . '/rb.log') // '';
                    last if $rb =~ /\n\z/; sleep 0.1 }
    like($rb, qr/^\{ {49152}.*\Q$rbsig\E/,
         '$request_body holds the whole 48k body');
}

# pki_body_memory 100k (this test's config): a chunked body holds what its
# buffer holds of that budget while it is read, not the cap (64k).  Three
# bodies of 30k stalled half way on two workers: two of them at least
# share a worker, 16k of buffer each (2 x 64k of caps went over the
# budget, and one body was spooled to a temp file on the event loop).
# Within the budget (32k each when whole, even all on one worker), no temp
# file, no warning; then every body ends and is served.  t/body_budget.t
# drives the budget itself.
{
    my $logpos = length(slurp($t->error_log) // '');
    my @body;
    for my $i (0 .. 2) {
        my $j = jws(key => $A->{key}, url => $A->{kid}, nonce => nonce(),
                    kid => $A->{kid}, payload => undef);
        (my $b = $JSON->encode($j)) =~ s/^\{/'{' . (' ' x (30 * 1024))/e;
        push @body, $b;
    }
    (my $path = $A->{kid}) =~ s{^https://[^/]+}{};
    my $head = "POST $path HTTP/1.1\r\nHost: 127.0.0.1:" . $t->https_port
        . "\r\nContent-Type: application/jose+json\r\n"
        . "Transfer-Encoding: chunked\r\n\r\n";
    my $chunks = sub { join('', map { sprintf("%x\r\n%s\r\n", length, $_) }
                                unpack('(a4096)*', $_[0])) };
    require IO::Socket::SSL;
    local $SIG{PIPE} = 'IGNORE';
    my @s;
    for my $i (0 .. 2) {
        my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1',
            PeerPort => $t->https_port, SSL_ca_file => $t->pki . '/root.pem',
            SSL_verifycn_name => '127.0.0.1', Timeout => 20);
        ok($s, "budget: connection $i") or next;
        print $s $head . $chunks->(substr($body[$i], 0,
                                          int(length($body[$i]) / 2)));
        push @s, [$s, $i];
        sleep 0.3;
    }
    for my $c (@s) {
        my ($s, $i) = @$c;
        print $s $chunks->(substr($body[$i], int(length($body[$i]) / 2)))
            . "0\r\n\r\n";
        my $a = read_answer($s);
        is($a->{status} // 0, 200, "budget: body $i, ended, is served")
            or diag($a->{content});
        close $s;
    }
    my $log = substr(slurp($t->error_log) // '', $logpos);
    unlike($log, qr/over the budget|held in memory/,
           'budget: the stalled bodies stay within it');
    unlike($log, qr/buffered to a temporary file/,
           'budget: no body went to a temp file');
}

# the bytes nginx has not read yet on the server side of each client
# TCP socket given (ss: State Recv-Q Send-Q Local Peer); -1 if not seen
sub unread_by_nginx {
    my @socks = @_;
    my %q;
    for (split /\n/, `ss -tnH 2>/dev/null`) {
        my @f = split ' ';
        $q{$f[4]} = $f[1] if @f >= 5 && $f[3] eq '127.0.0.1:' . $t->https_port;
    }
    return map { $q{'127.0.0.1:' . $_->sockport} // -1 } @socks;
}

# A request without a body holds none of the budget: three GETs wait in the
# pool (Redis stopped: each task blocks until the 1 s timeout) while a
# chunked body is read, which then stays within the budget (64k of 100k)
{
    my $cb = issue($A, 'bud', 'bud.example.test');
    my $id = $cb && $cb->{leaf} ? cert_id($cb->{leaf}) : 'x.y';
    my $logpos = length(slurp($t->error_log) // '');
    my $host = '127.0.0.1:' . $t->https_port;
    my $j = jws(key => $A->{key}, url => $A->{kid}, nonce => nonce(),
                kid => $A->{kid}, payload => undef);
    (my $b = $JSON->encode($j)) =~ s/^\{/'{' . (' ' x (40 * 1024))/e;
    (my $path = $A->{kid}) =~ s{^https://[^/]+}{};
    require IO::Socket::SSL;
    my @gets = map { IO::Socket::SSL->new(PeerHost => '127.0.0.1',
        PeerPort => $t->https_port, SSL_ca_file => $t->pki . '/root.pem',
        SSL_verifycn_name => '127.0.0.1', Timeout => 20) } 1 .. 3;
    ok(!grep({ !$_ } @gets), 'no-body budget: three connections');
    kill 'STOP', $t->{children}{redis};
    print $_ "GET /acme/renewal-info/$id HTTP/1.1\r\nHost: $host\r\n\r\n"
        for grep { $_ } @gets;
    # the GETs are in the pool once nginx has read them (it posts the
    # task as it reads the request): nothing left in the sockets' queues
    my @q;
    for (1 .. 100) {
        @q = unread_by_nginx(grep { $_ } @gets);
        last if !grep { $_ != 0 } @q;
        sleep 0.1;
    }
    is("@q", '0 0 0', 'no-body budget: nginx has read the three GETs');
    my $a = {};
    raw_tls('no-body budget: a chunked body meanwhile', sub {
        my ($s) = @_;
        print $s "POST $path HTTP/1.1\r\nHost: $host\r\n"
            . "Content-Type: application/jose+json\r\n"
            . "Transfer-Encoding: chunked\r\n\r\n"
            . join('', map { sprintf("%x\r\n%s\r\n", length, $_) }
                       unpack('(a4096)*', $b)) . "0\r\n\r\n";
        $a = read_answer($s);
    });
    kill 'CONT', $t->{children}{redis};
    # each waited for the 1 s Redis timeout
    is($a->{status} // 0, 503, 'no-body budget: the body is answered: 503');
    for my $s (grep { $_ } @gets) {
        my $g = read_answer($s);
        is($g->{status} // 0, 503, 'no-body budget: a GET answered: 503');
        close $s;
    }
    unlike(substr(slurp($t->error_log) // '', $logpos),
           qr/over the budget|held in memory/,
           'no-body budget: the GETs held none of it');
}

# --- revocation by an account holding valid authorizations (RFC 8555 7.6) ------

{
    my $c3 = issue($A, 'www3', 'www3.example.test', 'www3b.example.test');
    my $C = account();
    is($C->{r}{status}, 201, 'third account');
    if ($c3 && $c3->{leaf}) {
        my $d3 = $t->x509_der($c3->{leaf});
        my $serial = $t->x509_field($c3->{leaf}, 'serial');
        $r = post($C, "$BASE/revoke-cert", { certificate => b64u($d3) });
        problem_is($r, 403, 'unauthorized',
                   'revocation by an account without authorizations');
        # authorizations for one of the two names only
        my (undef, undef, $o1) = order_ready($C, 'www3.example.test');
        is($o1->{json}{status}, 'ready', 'C holds www3');
        $r = post($C, "$BASE/revoke-cert", { certificate => b64u($d3) });
        problem_is($r, 403, 'unauthorized',
                   'revocation with authorizations for one name of two');
        is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status}, 'good',
           'still good');
        my (undef, undef, $o2) = order_ready($C, 'www3b.example.test');
        is($o2->{json}{status}, 'ready', 'C holds www3b');

        # authorization reuse: the "valid" index entries of a new order
        # are read with the nonce (acme3); both names in one order
        $r = post($C, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'www3.example.test' },
                  { type => 'dns', value => 'www3b.example.test' }] });
        is($r->{status}, 201, 'reuse: a new order');
        is($r->{json}{status}, 'ready', 'reuse: valid authorizations are '
           . 'reused: ready at once');
        is_deeply([sort @{ $r->{json}{authorizations} || [] }],
                  [sort($o1->{json}{authorizations}[0],
                        $o2->{json}{authorizations}[0])],
                  'reuse: the same two authorizations');
        # an index entry of www3b as the version before kept it (not per
        # policy) still counts
        my $vk = valid_key($o2->{json}{authorizations}[0] // '',
                           'www3b.example.test');
        $t->redis('RENAME', $vk, $vk =~ s/:valid:[^:]+:/:valid:/r);
        $r = post($C, "$BASE/revoke-cert", { certificate => b64u($d3),
                                             reason => 5 });
        is($r->{status}, 200, 'revocation by an account holding valid '
           . 'authorizations for every name') or diag($r->{content});
        is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status},
           'revoked', 'record revoked');
    } else {
        fail('www3 issued');
    }

    # authorizations prove names under their location's policy: they revoke
    # only what was issued under it.  The record names the policy (realm);
    # one of another location, and one with none (EST, SCEP, older
    # records), are played by changing the record's field
    my $c4 = issue($A, 'www4', 'www4.example.test');
    my (undef, undef, $o4) = order_ready($C, 'www4.example.test');
    if ($c4 && $c4->{leaf} && $o4->{json}{status} eq 'ready') {
        my $d4 = $t->x509_der($c4->{leaf});
        my $key = 'pki:{ca:issuing}:cert:'
                  . $t->x509_field($c4->{leaf}, 'serial');
        my $realm = $t->redis_hash($key)->{realm} // '';
        like($realm, qr/^[\w-]{22}$/, "realm: the record names the "
             . "issuing location's policy");
        $t->redis('HSET', $key, 'realm', 'x' x 22);
        $r = post($C, "$BASE/revoke-cert", { certificate => b64u($d4) });
        problem_is($r, 403, 'unauthorized', 'realm: issued under another '
                   . "location's policy: authorizations here do not count");
        like($r->{json}{detail} // '', qr/not issued under this ACME /,
             '  and the detail says why');
        $t->redis('HDEL', $key, 'realm');
        $r = post($C, "$BASE/revoke-cert", { certificate => b64u($d4) });
        problem_is($r, 403, 'unauthorized', 'realm: a record without one '
                   . '(not issued by ACME): neither');
        is($t->redis_hash($key)->{status}, 'good', '  still good');
        $t->redis('HSET', $key, 'realm', $realm);
        $r = post($C, "$BASE/revoke-cert", { certificate => b64u($d4) });
        is($r->{status}, 200, "realm: this location's: revoked")
            or diag($r->{content});
        $r = post($A, "$BASE/revoke-cert", { certificate => b64u($d4) });
        problem_is($r, 400, 'alreadyRevoked', '  (its owner is told so)');
    } else {
        fail('www4 issued, C holds www4');
    }
}

# --- why an order is invalid (RFC 8555 7.1.3), every refused identifier (6.7.1)

{
    # http-01 without its file: the order's error is the challenge's
    my $o = post($A, "$BASE/new-order", { identifiers => [
        { type => 'dns', value => 'oerr1.example.test' }] });
    is($o->{status}, 201, 'order error: an order') or diag($o->{content});
    ok(!exists $o->{json}{error}, 'order error: a pending order has none');
    my $az = $o->{json}{authorizations}[0] // "$BASE/none";
    my ($ch) = grep { $_->{type} eq 'http-01' }
               @{ post($A, $az, '')->{json}{challenges} || [] };
    post($A, $ch->{url} // "$BASE/none", {});
    my ($c) = grep { $_->{type} eq 'http-01' }
              @{ poll($A, $az, 'valid')->{json}{challenges} || [] };
    my $ctype = $c->{error}{type} // 'none';
    like($ctype, qr/^urn:ietf:params:acme:error:\w+$/,
         'order error: the challenge failed with an error');
    $r = post($A, $o->{headers}{location}, '');
    my $e = $r->{json}{error} || {};
    is($r->{json}{status}, 'invalid', 'order error: http-01 failed, the '
       . 'order is invalid');
    is($e->{type}, $ctype, "order error: the challenge's type ($ctype)");
    like($e->{detail} // '', qr/"oerr1\.example\.test"/,
         'order error: the detail names the identifier');
    my @subs = @{ $e->{subproblems} || [] };
    is(scalar @subs, 1, 'order error: one subproblem');
    is_deeply($subs[0]{identifier}, { type => 'dns',
              value => 'oerr1.example.test' }, '... for the identifier');
    is($subs[0]{type}, $ctype, '... with the challenge error type');
    $r = post($A, $o->{json}{finalize}, { csr => b64u('x') });
    problem_is($r, 403, 'orderNotReady', 'order error: finalize of it');
    like($r->{json}{detail} // '', qr/oerr1\.example\.test/, '... says why');

    # an authorization deactivated
    $o = post($A, "$BASE/new-order", { identifiers => [
        { type => 'dns', value => 'oerr2.example.test' },
        { type => 'dns', value => 'oerr3.example.test' }] });
    post($A, $o->{json}{authorizations}[0] // "$BASE/none",
         { status => 'deactivated' });
    $r = post($A, $o->{headers}{location} // "$BASE/none", '');
    $e = $r->{json}{error} || {};
    is($r->{json}{status}, 'invalid', 'order error: an authorization '
       . 'deactivated, the order is invalid');
    is($e->{type}, 'urn:ietf:params:acme:error:unauthorized',
       '... unauthorized') or diag($r->{content});
    @subs = @{ $e->{subproblems} || [] };
    is_deeply([map { $_->{identifier}{value} } @subs],
              ['oerr2.example.test'], '... a subproblem for its identifier');
    is($subs[0]{detail}, 'authorization deactivated', '... saying so');

    # two bad identifiers of three: both named
    $r = post($A, "$BASE/new-order", { identifiers => [
        { type => 'dns', value => 'bad..name' },
        { type => 'dns', value => 'fine.example.test' },
        { type => 'ip', value => '300.1.2.3' }] });
    problem_is($r, 400, 'rejectedIdentifier', 'two bad identifiers of three');
    @subs = @{ $r->{json}{subproblems} || [] };
    is_deeply([sort map { "$_->{identifier}{type}:$_->{identifier}{value}" }
               @subs], ['dns:bad..name', 'ip:300.1.2.3'],
              '... a subproblem each, with its identifier')
        or diag($r->{content});
    ok(!grep({ ($_->{type} // '') !~ /:rejectedIdentifier$/
               || !length($_->{detail} // '') } @subs),
       '... each with its type and detail');

    # a valid order has no error
  SKIP: {
        skip 'no certificate', 2 if !$c1 || !$c1->{order};
        $r = post($A, $c1->{order}, '');
        is($r->{json}{status}, 'valid', 'order error: a valid order');
        ok(!exists $r->{json}{error}, '... has none');
    }
}

# --- a finalize that died midway is recovered ----------------------------------

sub order_key {
    my ($url) = @_;
    my ($acct, $oid) = $url =~ m{/order/([\w-]+)/([\w-]+)$};
    return "pki:{acme:$acct}:order:$oid";
}

sub order_edit {
    my ($url, $fn) = @_;
    my $key = order_key($url);
    my $o = decode_json($t->redis_raw('GET', $key) =~ s/\n\z//r);
    $fn->($o);
    $t->redis('SET', $key, $JSON->encode($o), 'KEEPTTL');
}

sub rand_serial { return '5' . join('', map { sprintf('%X', int(rand(16))) } 1 .. 31) }

{
    # the certificate was recorded, the order write failed: completed
    my $c4 = issue($A, 'www4', 'www4.example.test');
    if ($c4 && $c4->{leaf}) {
        my $serial = $t->x509_field($c4->{leaf}, 'serial');
        order_edit($c4->{order}, sub {
            my ($o) = @_;
            delete @{$o}{qw(cert serial)};
            $o->{status} = 'processing';
            $o->{finSerial} = $serial;
            $o->{finStarted} = time;
        });
        $r = post($A, $c4->{order}, '');
        is($r->{json}{status}, 'valid', 'processing order with a recorded '
           . 'certificate: completed at once') or diag($r->{content});
        my $cr = post($A, $r->{json}{certificate} // "$BASE/none", '');
        is($cr->{status}, 200, 'its certificate downloads');
        my $leaf = $t->save_first_cert($cr->{content}, 'www4-again');
        is($t->x509_field($leaf, 'serial'), $serial,
           'the same certificate (one per order)');
    } else {
        fail('www4 issued');
    }

    # died after the reservation, before the commit: a pending record
    my (undef, $ourl, $o) = order_ready($A, 'www5.example.test');
    my $s5 = rand_serial();
    my $rec = "pki:{ca:issuing}:cert:$s5";
    $t->redis('SET', "pki:{ca:issuing}:serial:$s5", 'acme');
    $t->redis('HSET', $rec, 'status', 'pending', 'serial', $s5,
              'requester', 'acme:x');
    order_edit($ourl, sub {
        $_[0]{status} = 'processing';
        $_[0]{finSerial} = $s5;
        $_[0]{finStarted} = time;
    });
    $r = post($A, $ourl, '');
    is($r->{json}{status}, 'processing', 'a fresh processing order stays '
       . 'processing');
    is($r->{headers}{'retry-after'}, 1, '... with Retry-After');
    my ($der) = csr_der('www5', subj => '/', san => 'DNS:www5.example.test');
    $r = post($A, $o->{json}{finalize}, { csr => b64u($der) });
    problem_is($r, 403, 'orderNotReady', 'finalize while processing');
    order_edit($ourl, sub { $_[0]{finStarted} = time - 120 });
    $r = post($A, $ourl, '');
    is($r->{json}{status}, 'invalid', 'a stale processing order without a '
       . 'certificate becomes invalid') or diag($r->{content});
    is($r->{json}{error}{type} // '',
       'urn:ietf:params:acme:error:serverInternal', '... with serverInternal');
    is($t->redis('EXISTS', $rec) =~ s/\D//gr, '0',
       'the pending record is abandoned (a late commit cannot land)');
    $r = post($A, $o->{json}{finalize}, { csr => b64u($der) });
    problem_is($r, 403, 'orderNotReady', 'an invalid order is not finalized');

    # died before anything was recorded, and an old order without a serial
    my (undef, $ourl6) = order_ready($A, 'www6.example.test');
    order_edit($ourl6, sub {
        $_[0]{status} = 'processing';
        $_[0]{finStarted} = time - 120;
    });
    $r = post($A, $ourl6, '');
    is($r->{json}{status}, 'invalid', 'a stale processing order without a '
       . 'serial becomes invalid');
}

# --- a challenge left processing is restarted by a poll -----------------------
# A validation job that never ran (thread pool queue full) or died with its
# worker leaves the challenge "processing".  certbot and lego only poll the
# authorization, so a poll after PKI_ACME_STALE (30 s) restarts it.  Here the
# lost job is simulated by writing "processing" straight into Redis.

sub authz_key {
    my ($url) = @_;
    my ($acct, $aid) = $url =~ m{/authz/([\w-]+)/([\w-]+)$};
    return "pki:{acme:$acct}:authz:$aid";
}

# the "valid" index key of a name for the policy (realm) of the
# authorization at $url, whose account it names
sub valid_key {
    my ($url, $name) = @_;
    my ($acct) = $url =~ m{/authz/([\w-]+)/[\w-]+$};
    my $o = decode_json($t->redis_raw('GET', authz_key($url)) =~ s/\n\z//r);
    return "pki:{acme:$acct}:valid:$o->{realm}:dns:$name";
}

sub authz_edit {
    my ($url, $fn) = @_;
    my $key = authz_key($url);
    my $o = decode_json($t->redis_raw('GET', $key) =~ s/\n\z//r);
    $fn->($o);
    $t->redis('SET', $key, $JSON->encode($o), 'KEEPTTL');
}

# validations the http-01 responder saw for a token
sub hits {
    my @l = (slurp("$www/$_[0].hits") // '') =~ /\n/g;
    return scalar @l;
}

# a new order for one name, its authorization and http-01 challenge, the
# responder primed with the key authorization
sub http01_for {
    my ($c, $name) = @_;
    my $r = post($c, "$BASE/new-order", { identifiers => [
        { type => 'dns', value => $name }] });
    is($r->{status}, 201, "$name: new order") or diag($r->{content});
    my $az = $r->{json}{authorizations}[0] // "$BASE/none";
    my $a = post($c, $az, '');
    my ($ch) = grep { $_->{type} eq 'http-01' }
                    @{ $a->{json}{challenges} || [] };
    $ch //= { token => 'none', url => "$BASE/none" };
    spew("$www/$ch->{token}", "$ch->{token}." . thumb_of($c->{key}));
    return ($az, $ch);
}

sub mark_processing {
    my ($az, $started) = @_;
    authz_edit($az, sub {
        for my $ch (@{ $_[0]{challenges} }) {
            next if $ch->{type} ne 'http-01';
            $ch->{status} = 'processing';
            $ch->{started} = $started;
        }
    });
}

{
    my ($az, $ch) = http01_for($A, 'stale1.example.test');
    mark_processing($az, time);
    $r = post($A, $az, '');
    is($r->{json}{status}, 'pending', 'a fresh processing challenge: the '
       . 'authorization is pending');
    is($r->{headers}{'retry-after'}, 1, '... with Retry-After');
    sleep 0.5;
    is(hits($ch->{token}), 0, '... and a poll does not restart it');
    mark_processing($az, time - 120);
    $r = poll($A, $az, 'valid');
    is($r->{json}{status}, 'valid', 'a stale processing challenge is '
       . 'restarted by a poll of its authorization') or diag($r->{content});
    is(hits($ch->{token}), 1, '... which validated once');

    # a POST-as-GET of the challenge itself restarts it too
    my ($az2, $ch2) = http01_for($A, 'stale2.example.test');
    mark_processing($az2, time - 120);
    $r = poll($A, $ch2->{url}, 'valid');
    is($r->{json}{status}, 'valid', 'a stale processing challenge is '
       . 'restarted by a POST-as-GET of the challenge')
        or diag($r->{content});
    $r = post($A, $az2, '');
    is($r->{json}{status}, 'valid', '... and its authorization is valid');
}

# --- concurrent challenge POSTs start one validation ---------------------------

{
    my ($az, $ch) = http01_for($A, 'race-chall.example.test');
    my ($path) = $ch->{url} =~ m{^https://[^/]+(/\S*)$};
    my $N = 8;
    my @bodies = map {
        $JSON->encode(jws(key => $A->{key}, url => $ch->{url},
                          nonce => nonce(), kid => $A->{kid},
                          payload => '{}'))
    } 1 .. $N;
    my $res = $t->dir . '/race-chall';
    mkdir $res;
    my @out = barrier_posts($path, $res, @bodies);
    my %status;
    $status{(split / /, $_)[0]}++ for @out;
    is($status{200} // 0, $N, "$N concurrent challenge POSTs: all 200")
        or diag(join(' ', map { "$_=$status{$_}" } sort keys %status));
    $r = poll($A, $az, 'valid');
    is($r->{json}{status}, 'valid', '... the authorization becomes valid');
    sleep 1;                                        # any late validation
    is(hits($ch->{token}), 1, '... after one validation');
}

# --- newAccount: 20 concurrent requests with one key -> one account --------------

{
    my $k = new_key();
    my @bodies = map {
        $JSON->encode(jws(key => $k, url => "$BASE/new-account",
                          nonce => nonce(), jwk => 1,
                          payload => $JSON->encode({
                              termsOfServiceAgreed => JSON::PP::true })))
    } 1 .. 20;
    my $res = $t->dir . '/race-acct';
    mkdir $res;
    my @out = barrier_posts('/acme/new-account', $res, @bodies);
    my (%status, %loc);
    for (@out) {
        my ($st, $loc) = split / /;
        $status{$st}++;
        $loc{$loc // ''}++;
    }
    is($status{201} // 0, 1, '20 newAccount with one key: exactly one 201');
    is($status{200} // 0, 19, '... and 19 answer 200')
        or diag(join(' ', map { "$_=$status{$_}" } sort keys %status));
    is(scalar keys %loc, 1, '... all with the same Location');
    my $thumb = thumb_of($k);
    my ($acct) = (keys %loc)[0] =~ m{/acct/([\w-]+)$};
    is($t->redis_raw('GET', "pki:acme:jwk:$thumb") =~ s/\s+//gr, $acct // '',
       'the key index names that account');
}

# --- keyChange ---------------------------------------------------------------------

sub key_change {
    my ($c, $newkey) = @_;
    my $inner = jws(key => $newkey, url => "$BASE/key-change", jwk => 1,
                    payload => $JSON->encode({ account => $c->{kid},
                                               oldKey => jwk_of($c->{key}) }));
    return post($c, "$BASE/key-change", $JSON->encode($inner));
}

$r = key_change($A, $B->{key});
is($r->{status}, 409, 'keyChange to a key in use: 409');
is($r->{headers}{location}, $B->{kid}, '409 names the other account');
$r = key_change($A, $A->{key});
problem_is($r, 409, 'malformed', "keyChange to the account's own key");
is($r->{headers}{location}, $A->{kid}, '... 409 names the account');

my $newk = new_key();
$r = key_change($A, $newk);
is($r->{status}, 200, 'keyChange') or diag($r->{content});
$r = post($A, $A->{kid}, '');
problem_is($r, 400, 'malformed', 'the old key no longer signs');
my $oldk = $A->{key};
$A->{key} = $newk;
$r = post($A, $A->{kid}, '');
is($r->{status}, 200, 'the new key signs');
$r = post({ key => $oldk }, "$BASE/new-account",
          { onlyReturnExisting => JSON::PP::true }, jwk => 1);
problem_is($r, 400, 'accountDoesNotExist', 'keyChange: the old key is '
           . 'no longer indexed');
$r = post({ key => $newk }, "$BASE/new-account",
          { onlyReturnExisting => JSON::PP::true }, jwk => 1);
is($r->{headers}{location}, $A->{kid}, 'keyChange: the new key finds the '
   . 'account');
# a newAccount that read the old key's index just before the keyChange
# committed (the index put back by hand, as that read saw it): the account
# it names has another key now, so the old key has none; it was answered
# with the account and its new key
$t->redis_raw('SET', 'pki:acme:jwk:' . thumb_of($oldk),
              ($A->{kid} =~ m{/acct/([\w-]+)$})[0]);
$r = post({ key => $oldk }, "$BASE/new-account",
          { onlyReturnExisting => JSON::PP::true }, jwk => 1);
problem_is($r, 400, 'accountDoesNotExist', 'keyChange: a stale index of '
           . 'the old key names no account');
$r = post($A, $A->{kid}, '');
is($r->{status}, 200, '... and the account still signs with its new key');
$t->redis_raw('DEL', 'pki:acme:jwk:' . thumb_of($oldk));

# RFC 8555 7.3.5: every rule of the inner JWS; each refusal leaves the
# account key as it was
{
    my %bad = (
        'inner "nonce"' => sub {
            (inner => { hdr => { nonce => nonce() } }) },
        'inner "url" is not the outer url' => sub {
            (inner => { url => "$BASE/new-account" }) },
        'inner "kid" instead of "jwk"' => sub {
            (inner => { jwk => 0, kid => $A->{kid} }) },
        'inner signed by another key than its "jwk"' => sub {
            (inner => { key => new_key(), jwk_key => $_[0] }) },
        'inner "account" is not the outer kid' => sub {
            (payload => { account => $B->{kid} }) },
        'inner "oldKey" is not the account key' => sub {
            (payload => { oldKey => jwk_of(new_key()) }) },
    );
    for my $name (sort keys %bad) {
        my $nk = new_key();
        my %o = $bad{$name}->($nk);
        my %pl = (account => $A->{kid}, oldKey => jwk_of($A->{key}),
                  %{ $o{payload} || {} });
        my $inner = jws(key => $nk, url => "$BASE/key-change", jwk => 1,
                        payload => $JSON->encode(\%pl), %{ $o{inner} || {} });
        $r = post($A, "$BASE/key-change", $JSON->encode($inner));
        problem_is($r, 400, 'malformed', "keyChange, $name");
        $r = post($A, $A->{kid}, '');
        is($r->{status}, 200, "keyChange, $name: the old key still signs")
            or diag($r->{content});
        $r = post({ key => $nk }, "$BASE/new-account",
                  { onlyReturnExisting => JSON::PP::true }, jwk => 1);
        problem_is($r, 400, 'accountDoesNotExist', "keyChange, $name: the "
                   . 'new key is not indexed');
    }
}

# --- the per-process account hint (acme3) -------------------------------------------
# A kid-signed request is verified against the last account text seen and
# the nonce is spent only if the stored account is still that text: an
# account changed behind the server's back (here straight in Redis) is seen
# by the very next request, on whichever worker and connection.

{
    my ($bid) = $B->{kid} =~ m{/acct/([\w-]+)$};
    my $akey = "pki:{acme:$bid}:acct";
    for (1 .. 4) {                  # the hint is set
        $r = post($B, $B->{kid}, '');
    }
    is($r->{status}, 200, 'hint: the account reads');
    my $o = decode_json($t->redis_raw('GET', $akey) =~ s/\n\z//r);
    $o->{status} = 'deactivated';
    $t->redis('SET', $akey, $JSON->encode($o), 'KEEPTTL');
    for my $i (1 .. 4) {
        $r = post($B, $B->{kid}, '');
        problem_is($r, 401, 'unauthorized', "hint: a change written "
                   . "straight to Redis is seen at once ($i)");
    }
    $o->{status} = 'valid';
    $t->redis('SET', $akey, $JSON->encode($o), 'KEEPTTL');
    $r = post($B, $B->{kid}, '');
    is($r->{status}, 200, 'hint: and back');
}

# --- deactivation ------------------------------------------------------------------

# RFC 8555 7.3.2: an update ignores any other status (a client may post
# back the object it read); a status that is no string is malformed
$r = post($E, $E->{kid}, { status => 'valid',
                           contact => ['mailto:ops@example.com'] });
is($r->{status}, 200, 'account update with status "valid": 200')
    or diag($r->{content});
is($r->{json}{status}, 'valid', '... the status stays valid');
is_deeply($r->{json}{contact}, ['mailto:ops@example.com'],
          '... and the contact is updated');
$r = post($E, $E->{kid}, { status => 'revoked' });
is($r->{json}{status}, 'valid', 'status "revoked" from a client: ignored');
$r = post($E, $E->{kid}, { status => 5 });
problem_is($r, 400, 'malformed', 'a status that is no string');

$r = post($E, $E->{kid}, { status => 'deactivated' });
is($r->{json}{status}, 'deactivated', 'account deactivated');
$r = post($E, "$BASE/new-order", { identifiers => [
          { type => 'dns', value => 'x.example' }] });
problem_is($r, 401, 'unauthorized', 'a deactivated account');

# RFC 8555 7.3.6: what the account left open goes with it.  Its account
# can no longer read them, so the objects are read straight from Redis.
sub redis_json {
    my $v = $t->redis_raw('GET', $_[0]) =~ s/\n\z//r;
    return eval { decode_json($v) } || {};
}

# a finalized, a ready and a pending order of account $c, before its
# deactivation (a revocation by the admin API)
sub open_orders {
    my ($c, $tag) = @_;
    my %o;
    my $v = issue($c, "$tag-v", "$tag-v.example.test");
    $o{valid} = $v ? $v->{order} : '';
    my (undef, $rurl, $ro) = order_ready($c, "$tag-r.example.test");
    is($ro && $ro->{json}{status}, 'ready', "$tag: a ready order");
    $o{ready} = $rurl // '';
    $o{ready_authz} = $ro ? $ro->{json}{authorizations}[0] // '' : '';
    my $p = post($c, "$BASE/new-order", { identifiers => [
                 { type => 'dns', value => "$tag-p.example.test" }] });
    is($p->{json}{status}, 'pending', "$tag: a pending order");
    $o{pending} = $p->{headers}{location} // '';
    $o{pending_authz} = $p->{json}{authorizations}[0] // '';
    return \%o;
}

# A validation held by the responder (the right answer, held until
# held_validation_end) for a new account's order of NAME: (account,
# authorization URL, challenge), once the validation is in flight;
# held_validation_end lets the answer go and waits for the validation's
# end
sub held_validation {
    my ($name, $what) = @_;
    my $c = account();
    my ($az, $ch) = http01_for($c, $name);
    ACMELoad::hold_http01($www, $ch->{token});
    my $x = post($c, $ch->{url}, '{}');
    is($x->{status}, 200, "$what: challenge posted");
    for (1 .. 100) { last if hits($ch->{token}); sleep 0.05 }
    is(hits($ch->{token}), 1, '... the validation is in flight');
    $ch->{name} = $name;
    return ($c, $az, $ch);
}

sub held_validation_end {
    my ($ch) = @_;
    my $pos = length(slurp($t->error_log) // '');
    ACMELoad::release_http01($www, $ch->{token});
    for (1 .. 200) { last if -e "$www/$ch->{token}.answered"; sleep 0.05 }
    ok(-e "$www/$ch->{token}.answered", '... the responder answered');
    # the job is done (result stored or not) once it logged its end
    for (1 .. 200) {
        last if substr(slurp($t->error_log) // '', $pos)
                =~ /acme: validation: .*\Q$ch->{name}\E/;
        sleep 0.05;
    }
}

# An authorization deactivated by its client while its challenge
# validates: the validation never stores its result (the authorization
# changed), and the challenge is shown invalid with an error instead of
# "processing" with Retry-After for ever
{
    my ($c, $az, $ch) = held_validation('deact-val.example.test',
                                        'authorization deactivated '
                                        . 'mid-validation');
    my $d = post($c, $az, { status => 'deactivated' });
    is($d->{json}{status} // '', 'deactivated',
       '... the authorization deactivated meanwhile');
    held_validation_end($ch);
    my $g = post($c, $ch->{url}, '');
    is($g->{json}{status} // '', 'invalid',
       '... its challenge is then invalid, not processing');
    ok(!defined $g->{headers}{'retry-after'}, '... with no Retry-After');
    like($g->{json}{error}{detail} // '', qr/no longer pending/,
         '... and an error that says why');
    my $a = post($c, $az, '');
    my ($in) = grep { $_->{type} eq 'http-01' }
               @{ $a->{json}{challenges} || [] };
    is($in->{status} // '', 'invalid', '... in the authorization too');
}

# A validation in flight when its account is deactivated: the cancel
# deactivates the pending authorization, and the validation that ends
# after it (the responder holds its answer until then) finds the text changed
# (compare-and-set) and leaves it so, although the answer is the right
# key authorization
{
    my ($D, $az, $ch) = held_validation('race-deact.example.test',
                                        'deactivation mid-validation');
    $r = post($D, $D->{kid}, { status => 'deactivated' });
    is($r->{json}{status}, 'deactivated', '... the account deactivated '
       . 'meanwhile');
    is(redis_json(authz_key($az))->{status} // '', 'deactivated',
       '... its pending authorization deactivated');
    held_validation_end($ch);
    my $after = redis_json(authz_key($az));
    is($after->{status} // '', 'deactivated', 'deactivation mid-validation: '
       . 'the validation that ended after it left the authorization '
       . 'deactivated');
}

# An authorization that expires while its validation runs stays expired
# (RFC 8555 7.1.6: a final state), although the answer is right: nothing
# is stored, and no later order reuses it
{
    my ($X, $az, $ch) = held_validation('race-exp.example.test',
                                        'expiry mid-validation');
    authz_edit($az, sub { $_[0]{expires} = time - 1 });
    held_validation_end($ch);
    is(redis_json(authz_key($az))->{status} // '', 'pending',
       'expiry mid-validation: nothing stored');
    my $x = post($X, $az, '')->{json};
    is($x->{status} // '', 'expired', '... the authorization reads expired');
    my ($c) = grep { $_->{type} eq 'http-01' } @{ $x->{challenges} || [] };
    is($c->{status} // '', 'invalid', '... its challenge ended (no poll on)');
    like($c->{error}{detail} // '', qr/expired while it was validated/,
         '... saying why');
    $r = post($X, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'race-exp.example.test' }] });
    is($r->{json}{status} // '', 'pending', '... a new order reuses nothing');
    like(slurp($t->error_log) // '', qr/the authorization expired meanwhile/,
         '... and the error log says why');
}

# A CSR that names an identifier in its CN alone (RFC 8555 7.4 allows it):
# the certificate names it in a SAN too, where clients look
{
    my $n = 'cnonly.example.test';
    my (undef, $ourl, $o) = order_ready($A, $n);
    my ($der) = csr_der($n, subj => "/CN=$n");
    $r = post($A, $o->{json}{finalize} // "$BASE/none", { csr => b64u($der) });
    is($r->{status}, 200, 'CN only: finalized') or diag($r->{content});
    my $p = poll($A, $ourl // "$BASE/none", 'valid');
    my $pem = post($A, $p->{json}{certificate} // "$BASE/none", '')->{content};
    spew($t->dir . '/cnonly.pem', $pem // '');
    like($t->x509_text($t->dir . '/cnonly.pem') // '',
         qr/DNS:cnonly\.example\.test/,
         '... its certificate names it in the SAN');
}

# ... but a CSR whose SAN is doubled or does not parse is refused, not read
# as one without a SAN (the CN-only path would then name the identifiers
# itself).  openssl req writes any extension given by OID as raw DER.
{
    my $n = 'dupsan.example.test';
    my $key = $t->dir . '/dupsan.key';
    system('openssl', 'genpkey', '-algorithm', 'EC', '-pkeyopt',
           'ec_paramgen_curve:P-256', '-out', $key) == 0 or die;
    # SEQUENCE { [2] "dupsan.example.test" }, and an ASN.1 NULL
    my $gn = unpack('H*', "\x30\x15\x82\x13$n");
    for my $case (["subjectAltName=DNS:$n\n2.5.29.17=DER:$gn",
                   'a SAN extension twice'],
                  ["2.5.29.17=DER:0500", 'a SAN that is not GeneralNames']) {
        my ($ext, $what) = @$case;
        my $cnf = $t->dir . '/dupsan.cnf';
        spew($cnf, "[req]\ndistinguished_name=dn\nreq_extensions=ext\n"
                 . "prompt=no\n[dn]\nCN=$n\n[ext]\n$ext\n");
        my $csr = $t->dir . '/dupsan.csr';
        system('openssl', 'req', '-new', '-key', $key, '-config', $cnf,
               '-outform', 'DER', '-out', $csr) == 0 or die;
        my (undef, $ourl, $o) = order_ready($A, $n);
        $r = post($A, $o->{json}{finalize} // "$BASE/none",
                  { csr => b64u(slurp($csr)) });
        problem_is($r, 400, 'badCSR', "CSR with $what");
        is(post($A, $ourl // "$BASE/none", '')->{json}{status} // '',
           'ready', "... the order stays ready");
    }
}

# ns: the namespace of the store that holds the orders
sub open_orders_cancelled {
    my ($o, $tag, $why, $ns) = @_;
    my $order = sub { redis_json(order_key($_[0]) =~ s/^pki:/$ns/r) };
    my $authz = sub { redis_json(authz_key($_[0]) =~ s/^pki:/$ns/r) };
    is($authz->($o->{pending_authz})->{status} // '', 'deactivated',
       "$tag: the pending authorization is deactivated");
    is($order->($o->{pending})->{status} // '', 'pending',
       "$tag: its order is left to read invalid from it");
    my $ro = $order->($o->{ready});
    is($ro->{status} // '', 'invalid', "$tag: the ready order is invalid");
    is($ro->{error}{type} // '', 'urn:ietf:params:acme:error:unauthorized',
       "$tag: ... unauthorized");
    like($ro->{error}{detail} // '', $why, "$tag: ... saying why");
    is($authz->($o->{ready_authz})->{status} // '', 'valid',
       "$tag: its valid authorization stays valid");
    is($order->($o->{valid})->{status} // '', 'valid',
       "$tag: the finalized order stays valid");
}

{
    my $D = account();
    my $o = open_orders($D, 'deact');
    my ($id) = $D->{kid} =~ m{/acct/([\w-]+)$};
    # the ready order as a location sharing this store with a longer
    # acme_order_ttl lists it: made two days ago, past this location's one
    # day, and still open
    my ($racct, $roid) = $o->{ready} =~ m{/order/([\w-]+)/([\w-]+)$};
    is($t->redis_raw('ZADD', "pki:{acme:$racct}:orders", 'XX', 'CH',
                     time() - 2 * 86400, $roid // 'none'), "1\n",
       'deactivation: the ready order listed two days ago');
    $r = post($D, $D->{kid}, { status => 'deactivated' });
    is($r->{status}, 200, 'deactivation with open orders: 200')
        or diag($r->{content});
    is($r->{json}{status}, 'deactivated', '... deactivated');
    open_orders_cancelled($o, 'deactivated account', qr/deactivated/, 'pki:');
    my $said = "acme account $id: open work cancelled: 1 authorizations "
             . 'deactivated, 1 ready orders made invalid, 3 orders read';
    like(PKITest::slurp($t->error_log) // '', qr/\Q$said\E/,
         'deactivated account: the log says what was cancelled');

    # Redis fails while the orders are cancelled (here the order index is
    # of the wrong type): the deactivation is stored, and answered so
    my $F = account();
    my ($fid) = $F->{kid} =~ m{/acct/([\w-]+)$};
    $t->redis('SET', "pki:{acme:$fid}:orders", 'not a zset');
    $r = post($F, $F->{kid}, { status => 'deactivated' });
    is($r->{status}, 200, 'cancelling fails: the deactivation still 200')
        or diag($r->{content});
    is($r->{json}{status}, 'deactivated', '... deactivated');
    like(redis_json("pki:{acme:$fid}:acct")->{status} // '', qr/^deactivated$/,
         '... and stored');
    like(PKITest::slurp($t->error_log) // '',
         qr/acme account \Q$fid\E: open work cancelled: .*cancelling failed/,
         '... the log says the cancellation failed');
}

# --- replaces (RFC 9773 section 5) -----------------------------------------------
# A renewal names the certificate it replaces.  The mark is keyed on the CA
# and the serial (any encoding of one certID is the same mark), claimed by
# the order at newOrder (one holder: a newer order takes it over from a
# pending or ready one, whose finalize then fails; see
# t/acme_replaces_lost.t), checked again at finalize and kept after
# issuance, also when a read recovers an interrupted finalization.

sub replaced_key {
    my ($c, $leaf) = @_;
    my ($acct) = $c->{kid} =~ m{/acct/([\w-]+)$};
    return "pki:{acme:$acct}:replaced:issuing:"
           . $t->x509_field($leaf, 'serial');
}

sub replaced_val {
    my ($key) = @_;
    return $t->redis_raw('GET', $key) =~ s/\s+//gr;
}

sub oid_of { return ($_[0] // '') =~ m{/order/[\w-]+/([\w-]+)$} ? $1 : '' }

sub renew_order {
    my ($c, $certid, @names) = @_;
    return post($c, "$BASE/new-order", { replaces => $certid,
        identifiers => [ map { { type => 'dns', value => $_ } } @names ] });
}

sub finalize_ready {
    my ($c, $o, $name, @names) = @_;
    my $san = join(',', map { "DNS:$_" } @names);
    my ($der) = csr_der($name, subj => '/', san => $san);
    return post($c, $o->{finalize}, { csr => b64u($der) });
}

sub cert_records { return scalar $t->redis_keys('pki:{ca:issuing}:cert:*') }

# a certificate for client C to renew later, named WHAT in the checks:
# (the issued certificate, its certID, the key of its "replaced" mark)
sub to_renew {
    my ($c, $what, @issue) = @_;
    my $cert = issue($c, @issue);
    my $ok = $cert && $cert->{leaf};
    ok($ok, $what);
    return ($cert, $ok ? cert_id($cert->{leaf}) : 'x.y',
            $ok ? replaced_key($c, $cert->{leaf}) : 'none');
}

{
    my $R = account();
    is($R->{r}{status}, 201, 'replaces: an account');
    my ($c0, $id0, $mk0) = to_renew($R, 'replaces: the certificate to renew',
                             'rp0', 'rp0.example.test', 'rp0b.example.test');

    # no identifier in common: refused, and nothing claimed
    $r = renew_order($R, $id0, 'other.example.test');
    problem_is($r, 400, 'malformed', 'replaces: no identifier in common');
    is($t->redis('EXISTS', $mk0) =~ s/\D//gr, '0',
       '... and the certificate is not marked');

    # another account's certificate
    $r = renew_order($B, $id0, 'rp0.example.test');
    problem_is($r, 403, 'unauthorized', "replaces: another account's "
               . 'certificate');

    # a pending record (an unfinished issuance) or a withdrawn one (never
    # handed out) is unknown, as renewalInfo answers it
    {
        my $rk = 'pki:{ca:issuing}:cert:'
                 . uc $t->x509_field($c0->{leaf}, 'serial');
        is($t->redis('HSET', $rk, 'status', 'pending') =~ s/\D//gr, '0',
           'replaces: the record made pending') or diag($rk);
        $r = renew_order($R, $id0, 'rp0.example.test');
        problem_is($r, 400, 'malformed', 'replaces: a pending record is an '
                   . 'unknown certificate');
        $t->redis('HSET', $rk, 'status', 'good', 'withdrawn', '1');
        $r = renew_order($R, $id0, 'rp0.example.test');
        problem_is($r, 400, 'malformed', 'replaces: a withdrawn record is '
                   . 'an unknown certificate');
        # renewalInfo likewise: no client holds a withdrawn certificate
        # (it answered a window before)
        $r = $http->get("$BASE/renewal-info/$id0");
        is($r->{status}, 404, 'renewalInfo of a withdrawn record: 404')
            or diag($r->{content});
        $t->redis('HDEL', $rk, 'withdrawn');
        is($t->redis('EXISTS', $mk0) =~ s/\D//gr, '0',
           '... and the certificate is not marked');
    }

    # two pending orders naming one certificate: the second takes the
    # mark over (RFC 9773 5 refuses what a finalized order replaced; a
    # client that lost its pending order renews again)
    $r = renew_order($R, $id0, 'rp0.example.test', 'new.example.test');
    is($r->{status}, 201, 'replaces: a renewal order') or diag($r->{content});
    is($r->{json}{replaces} // '', $id0, '... naming what it replaces');
    my $o1url = $r->{headers}{location};
    is(replaced_val($mk0), oid_of($o1url), '... holds the mark at once');
    $r = renew_order($R, $id0, 'rp0.example.test');
    is($r->{status}, 201, 'replaces: a second order while the first is '
       . 'pending takes the mark over') or diag($r->{content});
    is(replaced_val($mk0), oid_of($r->{headers}{location}),
       '... the mark names it');
    $o1url = $r->{headers}{location};
    {
        # at a location of another policy, to which the first order is
        # none of its own: taken over likewise
        local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-lim';
        my $R2 = { key => $R->{key}, kid => ($R->{kid} // '')
                   =~ s{/acme/acct/}{/acme-lim/acct/}r };
        $r = renew_order($R2, $id0, 'rp0.example.test');
        is($r->{status}, 201, 'replaces: a second order at another location '
           . 'while the first is pending takes the mark over')
            or diag($r->{content});
        is(replaced_val($mk0), oid_of($r->{headers}{location}),
           '... the mark names it');
        $o1url = $r->{headers}{location} =~ s{/acme-lim/}{/acme/}r
            if $r->{headers}{location};
    }

    # the holder becomes invalid: a new order takes the mark over, at a
    # location of another policy too (which then gives it up likewise)
    order_edit($o1url, sub { $_[0]{status} = 'invalid' });
    {
        local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-lim';
        my $R2 = { key => $R->{key}, kid => ($R->{kid} // '')
                   =~ s{/acme/acct/}{/acme-lim/acct/}r };
        $r = renew_order($R2, $id0, 'rp0.example.test');
        is($r->{status}, 201, 'replaces: an invalid holder of another '
           . 'location gives the mark up') or diag($r->{content});
        order_edit($r->{headers}{location}, sub {
            $_[0]{status} = 'invalid' }) if $r->{headers}{location};
    }
    $r = renew_order($R, $id0, 'rp0.example.test', 'rp0b.example.test');
    is($r->{status}, 201, 'replaces: the mark of an invalid order is taken '
       . 'over') or diag($r->{content});
    my $o2 = $r->{json};
    my $o2url = $r->{headers}{location};
    is(replaced_val($mk0), oid_of($o2url), '... by the new order');
    is($o2->{status}, 'ready', '... ready (authorizations reused)');

    # renewed: every later order naming it is refused, in any encoding
    $r = finalize_ready($R, $o2, 'rp0r', 'rp0.example.test',
                        'rp0b.example.test');
    is($r->{status}, 200, 'replaces: the renewal is issued')
        or diag($r->{content});
    is($r->{json}{status}, 'valid', '... valid');
    is(replaced_val($mk0), '=' . oid_of($o2url), '... the mark names its '
       . 'order, as issued');
    ok($t->redis('TTL', $mk0) =~ s/\D//gr > 30 * 86400,
       '... for the life of the replaced certificate at least');
    $r = renew_order($R, $id0, 'rp0.example.test');
    problem_is($r, 409, 'alreadyReplaced', 'replaces: renewed twice');
    {
        my ($aki, $ser) = split /\./, $id0;
        my $id0b = "$aki." . b64u("\0\0" . decode_base64url($ser));
        $r = renew_order($R, $id0b, 'rp0.example.test');
        problem_is($r, 400, 'malformed', 'replaces: the serial with leading '
                   . 'zero octets is no certID (RFC 9773 4.1: DER)');
    }
    # the renewal's order expires with its own certificate, maybe long
    # before the one it replaced: the mark still refuses a second renewal
    $t->redis('DEL', order_key($o2url));
    $r = renew_order($R, $id0, 'rp0.example.test');
    problem_is($r, 409, 'alreadyReplaced', 'replaces: renewed twice, the '
               . "renewal's order gone");

    # an order that lost the mark is not finalized and issues nothing
    my ($c1, $id1, $mk1) = to_renew($R, 'replaces: a second certificate',
                             'rp1', 'rp1.example.test');
    $r = renew_order($R, $id1, 'rp1.example.test');
    is($r->{status}, 201, 'replaces: its renewal order')
        or diag($r->{content});
    my $o3 = $r->{json};
    my $o3url = $r->{headers}{location};
    $t->redis('SET', $mk1, 'someotherorder', 'KEEPTTL');
    # a finalize whose CSR is malformed acts on nothing: the order is not
    # failed for the mark it lost before its CSR is read
    $r = post($R, $o3->{finalize}, { csr => 'AAAA' });
    problem_is($r, 400, 'badCSR', 'replaces: a malformed finalize of an '
               . 'order that lost the mark');
    is(post($R, $o3url, '')->{json}{status} // '', 'ready',
       '... leaves it ready');
    my $before = cert_records();
    $r = finalize_ready($R, $o3, 'rp1r', 'rp1.example.test');
    problem_is($r, 409, 'alreadyReplaced', 'replaces: finalize of an order '
               . 'that lost the mark');
    is(cert_records(), $before, '... issues nothing');
    $r = post($R, $o3url, '');
    is($r->{json}{status}, 'invalid', '... the order is invalid');
    is($r->{json}{error}{type} // '',
       'urn:ietf:params:acme:error:alreadyReplaced', '... with alreadyReplaced');
    ok(!$r->{json}{certificate}, '... and no certificate');
    is(replaced_val($mk1), 'someotherorder', '... the mark is untouched');

    # the recovery of an interrupted finalization marks the certificate
    my ($c2, $id2, $mk2) = to_renew($R, 'replaces: a third certificate',
                             'rp2', 'rp2.example.test');
    $r = renew_order($R, $id2, 'rp2.example.test');
    is($r->{status}, 201, 'replaces: a renewal whose finalization will be '
       . 'recovered')
        or diag($r->{content});
    my $o4 = $r->{json};
    my $o4url = $r->{headers}{location};
    $r = $o4url ? finalize_ready($R, $o4, 'rp2r', 'rp2.example.test') : $r;
    is($r->{json}{status}, 'valid', '... issued') or diag($r->{content});
    my $leaf4 = $r->{json}{certificate}
        && $t->save_first_cert(post($R, $r->{json}{certificate}, '')->{content},
                               'rp2r-leaf');
    SKIP: {
        skip 'no renewal issued', 5 if !$leaf4;
        my $s4 = $t->x509_field($leaf4, 'serial');
        order_edit($o4url, sub {
            my ($o) = @_;
            delete @{$o}{qw(leaf serial)};
            $o->{status} = 'processing';
            $o->{finSerial} = $s4;
            $o->{finStarted} = time;
        });
        $t->redis('DEL', $mk2);
        $r = post($R, $o4url, '');
        is($r->{json}{status}, 'valid', 'replaces: an interrupted '
           . 'finalization is completed') or diag($r->{content});
        is(replaced_val($mk2), '=' . oid_of($o4url), '... and the '
           . 'certificate is marked as replaced by it');
        $r = renew_order($R, $id2, 'rp2.example.test');
        problem_is($r, 409, 'alreadyReplaced', '... so it is not renewed '
                   . 'again');
    }

    # renewals of one certificate at the same moment: each is created or
    # refused (409), and the mark names one of those created
    my ($c3, $id3, $mk3) = to_renew($R, 'replaces: a fourth certificate',
                             'rp3', 'rp3.example.test');
    my $N = 8;
    my @bodies = map {
        $JSON->encode(jws(key => $R->{key}, url => "$BASE/new-order",
                          nonce => nonce(), kid => $R->{kid},
                          payload => $JSON->encode({ replaces => $id3,
                              identifiers => [ { type => 'dns',
                                  value => 'rp3.example.test' } ] })))
    } 1 .. $N;
    my $res = $t->dir . '/race-replaces';
    mkdir $res;
    my @out = barrier_posts('/acme/new-order', $res, @bodies);
    my @won = grep { /^201 / } @out;
    ok(scalar @won >= 1, "replaces: $N renewals at once, orders created")
        or diag(join("\n", @out));
    is(scalar(grep { /^409 / } @out), $N - @won, '... the others refused '
       . '(409 alreadyReplaced)') or diag(join("\n", @out));
    my %made = map { /^201 (\S+)/ ? (oid_of($1) => 1) : () } @won;
    ok($made{replaced_val($mk3)}, '... the mark names one of those '
       . 'created') or diag(replaced_val($mk3));
}

# --- behind a proxy (acme_base_url) -------------------------------------------------

{
    my $LB = 'https://lb.example.test/pki/acme';
    my $local = 'https://127.0.0.1:' . $t->https_port . '/acme-lb';
    my $d = $http->get("$local/directory");
    my $dj = eval { decode_json($d->{content}) } || {};
    is($dj->{newAccount}, "$LB/new-account",
       'acme_base_url: the directory hands out the public URLs');
    my $n = $http->request('HEAD', "$local/new-nonce")->{headers}{'replay-nonce'};
    my $k = new_key();
    my $j = jws(key => $k, url => "$LB/new-account", nonce => $n, jwk => 1,
                payload => $JSON->encode({ termsOfServiceAgreed =>
                                           JSON::PP::true }));
    my $r = post_raw("$local/new-account", $JSON->encode($j));
    is($r->{status}, 201, 'acme_base_url: a JWS "url" of the public URL is '
       . 'accepted') or diag($r->{content});
    like($r->{headers}{location} // '', qr{^\Q$LB\E/acct/[\w-]+$},
         'acme_base_url: the account URL is public');
    $n = $r->{headers}{'replay-nonce'};
    $j = jws(key => $k, url => "$local/new-account", nonce => $n, jwk => 1,
             payload => $JSON->encode({ onlyReturnExisting =>
                                        JSON::PP::true }));
    $r = post_raw("$local/new-account", $JSON->encode($j));
    problem_is($r, 401, 'unauthorized', 'acme_base_url: the URL nginx sees '
               . 'is not the one the client signs');

    # a nested location serves the same ACME server, unless it has an
    # "acme" of its own: then it is another server, at its own URL
    is($d->{headers}{'x-nested'} // '', 'yes',
       'acme_base_url: the directory came through the nested location');
    $d = $http->get("$local/v2/directory");
    $dj = eval { decode_json($d->{content}) } || {};
    is($dj->{newAccount} // '', "$local/v2/new-account",
       'acme_base_url: a nested location with its own "acme" has its own URL');
    $d = $http->get('https://127.0.0.1:' . $t->https_port
                    . '/acme-par/x/directory');
    $dj = eval { decode_json($d->{content}) } || {};
    is($dj->{newAccount} // '', 'https://lb.example.test/par/new-account',
       'acme_base_url: set by a parent that is no ACME server: inherited');
}

# --- over plain HTTP (RFC 8555 6.1) ------------------------------------------------

{
    my $plain = 'http://127.0.0.1:' . $t->http_port;
    my $detail = "ACME is served over HTTPS only (RFC 8555 \x{a7}6.1)";
    my @keys0 = $t->state_keys;
    my $log0 = length(PKITest::slurp($t->error_log) // '');
    my $r = $http->get("$plain/acme/directory");
    $r->{json} = eval { decode_json($r->{content}) };
    problem_is($r, 403, 'unauthorized', 'plain HTTP: the directory');
    is($r->{json}{detail} // '', $detail, '  the detail names the rule');
    unlike($r->{content}, qr{http://}, '  no http:// URL handed out');
    ok(!defined $r->{headers}{'replay-nonce'}, '  no nonce');
    $r = $http->request('HEAD', "$plain/acme/new-nonce");
    is($r->{status}, 403, 'plain HTTP: HEAD new-nonce: 403');
    ok(!defined $r->{headers}{'replay-nonce'}, '  no nonce');
    my $k = new_key();
    my $j = jws(key => $k, url => "$plain/acme/new-account", nonce => nonce(),
                jwk => 1, payload => $JSON->encode({ termsOfServiceAgreed =>
                                                     JSON::PP::true }));
    $r = post_raw("$plain/acme/new-account", $JSON->encode($j));
    problem_is($r, 403, 'unauthorized', 'plain HTTP: new-account');
    $t->no_continue('POST', "$plain/acme/new-account", 403,
                    'plain HTTP: new-account (its body not read)');
    # HEAD new-nonce over HTTPS made one nonce: compare without nonces
    my @keys1 = grep { !/nonce/ } $t->state_keys;
    is_deeply(\@keys1, [grep { !/nonce/ } @keys0],
              'plain HTTP: Redis unchanged');
    my $log = substr(PKITest::slurp($t->error_log) // '', $log0);
    my @lines = grep { /\[error\].*acme: ".*" from 127\.0\.0\.1 refused: the connection has no TLS \(RFC 8555 6\.1/ } split /\n/, $log;
    is(scalar(@lines), 4, 'plain HTTP: one error-log line per refused request')
        or diag($log);
    ok((grep { m{"/acme/new-account"} } @lines) == 2, '  naming the URL');
    like($log, qr/acme_base_url https:/, '  naming the way out');

    $r = $http->get("$plain/acme-phb/directory");
    is($r->{status}, 403, 'plain HTTP: an http:// acme_base_url: still 403');

    # a TLS-terminating proxy in front: served, with the public URLs
    $r = $http->get("$plain/acme-plb/directory");
    my $dj = eval { decode_json($r->{content}) } || {};
    is($r->{status}, 200, 'plain HTTP behind an https:// acme_base_url: 200');
    is($dj->{newAccount} // '', 'https://lb.example.test/plb/new-account',
       '  the directory names https URLs');
}

# --- one Redis, two policies ----------------------------------------------------------
# /acme-lim/ proves control otherwise than /acme/ (port 80, real DNS): what
# an account proved at /acme/ (a lab) is no proof there, and its orders are
# none of that location's

{
    my $c = account();
    my ($r, $url, $o) = order_ready($c, 'realm.example.test');
    is($o->{json}{status}, 'ready', 'policies: an order ready at /acme/');
    my $LIM = 'https://127.0.0.1:' . $t->https_port . '/acme-lim';
    my $there = sub { $_[0] =~ s{^\Q$BASE\E/}{$LIM/}r };
    my $c2 = { key => $c->{key}, kid => $there->($c->{kid}) };
    problem_is(post($c2, $there->($url), ''), 404, 'malformed',
               'policies: the order is not found at /acme-lim/');
    problem_is(post($c2, $there->($o->{json}{authorizations}[0]), ''), 404,
               'malformed', 'policies: nor its authorization');
    my ($der) = csr_der('realm', subj => '/', san => 'DNS:realm.example.test');
    problem_is(post($c2, $there->($o->{json}{finalize}), { csr => b64u($der) }),
               404, 'malformed', 'policies: nor can it be finalized there');
    $r = post($c2, "$LIM/new-order", { identifiers => [
              { type => 'dns', value => 'realm.example.test' }] });
    is($r->{status}, 201, 'policies: a new order at /acme-lim/');
    is($r->{json}{status} // '', 'pending',
       'policies: /acme/\'s authorization is not reused there: pending');
    my $lo = post($c2, "$c2->{kid}/orders", '');
    is($lo->{status}, 200, 'policies: the account\'s orders at /acme-lim/');
    ok(!grep({ $_ eq $there->($url) } @{ $lo->{json}{orders} || [] }),
       'policies: /acme-lim/ lists no order of /acme/');
    is(post($c, $url, '')->{json}{status} // '', 'ready',
       'policies: at /acme/ the order is still ready');
    # the kid of /acme/ sent to /acme-lim/: the detail says which URLs
    # this location's accounts have
    my $r2 = post($c, "$LIM/new-order", { identifiers => [
                  { type => 'dns', value => 'realm.example.test' }] });
    problem_is($r2, 400, 'accountDoesNotExist',
               'policies: the kid of another location');
    is($r2->{json}{detail} // '', '"kid" is not an account URL of this '
       . "location (they start with $LIM/acct/)",
       '  the detail names the account URLs of this location');
}

# --- the orders list: kept as long as an order of any profile may live -----------

{
    my $c = account();
    my ($acct) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};
    my $zkey = "pki:{acme:$acct}:orders";
    # a 90-day order made 10 days ago (its certificate still valid)
    $t->redis('ZADD', $zkey, time - 10 * 86400, 'tendaysold');
    # one made 100 days ago with a notBefore 29 days ahead: its 90-day
    # certificate is valid for 19 more days
    $t->redis('ZADD', $zkey, time - 100 * 86400, 'nbahead');
    local %order_extra = (profile => 'shortlived');
    my $r = post($c, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'list.example.test' }], %order_extra });
    is($r->{status}, 201, 'orders list: a shortlived (7-day) order');
    like($t->redis_raw('ZSCORE', $zkey, 'tendaysold'), qr/^\d/,
       '... does not drop a 90-day order of 10 days ago from the list');
    like($t->redis_raw('ZSCORE', $zkey, 'nbahead'), qr/^\d/,
       '... nor one of 100 days ago that asked for a later notBefore');
    my $ttl = $t->redis_raw('TTL', $zkey) + 0;
    ok($ttl > 120 * 86400 && $ttl < 130 * 86400,
       "... and the list expires when its newest order may (TTL $ttl s)");
}

# --- acme_orders_per_hour: only orders made count ------------------------------------

# Two newOrders that fail in Redis after the count (the fifth name's
# reuse index is read on its own, and is no string here: WRONGTYPE) make
# no order and cost nothing; then two orders are made and the third is
# refused.
{
    local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-ord';
    my $c = account();
    my ($acct) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};
    my @five = map { "rate$_.example.test" } 1 .. 5;
    # this location's policy, from an authorization of another account
    my $c0 = account();
    my $r0 = post($c0, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'rate0.example.test' } ] });
    my $bad = valid_key($r0->{json}{authorizations}[0] // '', $five[4])
              =~ s/\{acme:[\w-]+\}/{acme:$acct}/r;
    $t->redis('HSET', $bad, 'x', '1');
    for my $try (1, 2) {
        my $r = post($c, "$BASE/new-order", { identifiers => [
                    map { { type => 'dns', value => $_ } } @five ] });
        is($r->{status}, 503, "orders per hour: newOrder $try fails in Redis")
            or diag($r->{content});
    }
    like($t->redis_raw('GET', "pki:{acme:$acct}:rate:" . int(time / 3600)),
         qr/^0?\n?$/, '... and are not counted');
    $t->redis('DEL', $bad);
    for my $n (1, 2) {
        my $r = post($c, "$BASE/new-order", { identifiers => [
                    { type => 'dns', value => "rate-ok$n.example.test" } ] });
        is($r->{status}, 201, "orders per hour: order $n of 2 made")
            or diag($r->{content});
    }
    my $r = post($c, "$BASE/new-order", { identifiers => [
                { type => 'dns', value => 'rate-ok3.example.test' } ] });
    problem_is($r, 429, 'rateLimited', 'orders per hour: the third');
    like($r->{headers}{'retry-after'} // '', qr/^\d+$/, '... Retry-After');
}

# --- acme_pending_authz_max: names ordered and never validated are bounded ------

{
    local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-pend';
    my $c = account();
    my $two = sub { { identifiers => [ map { { type => 'dns',
                    value => "$_[0]$_.example.test" } } 1, 2 ] } };
    my $r1 = post($c, "$BASE/new-order", $two->('pend-a'));
    is($r1->{status}, 201, 'pending cap 3: 2 names ordered')
        or diag($r1->{content});
    my $r = post($c, "$BASE/new-order", $two->('pend-b'));
    problem_is($r, 429, 'rateLimited', 'pending cap 3: 2 more refused');
    is($r->{headers}{'retry-after'} // '', '60', '... Retry-After: 60');
    like($r->{json}{detail} // '', qr/has 2 pending authorizations and may /,
         '... the problem says how many');
    $r = post($c, $r1->{json}{authorizations}[0] // "$BASE/x",
              { status => 'deactivated' });
    is($r->{json}{status} // '', 'deactivated', '... one deactivated');
    $r = post($c, "$BASE/new-order", $two->('pend-b'));
    is($r->{status}, 201, '... then 1 + 2 fit') or diag($r->{content});

    # validated: out of the count at once, without a walk
    my $c2 = account();
    my ($acct2) = ($c2->{kid} // '') =~ m{/acct/([\w-]+)$};
    my (undef, undef, $o) = order_ready($c2, 'pend-v1.example.test',
                                        'pend-v2.example.test');
    is($o->{json}{status} // '', 'ready', 'pending cap 3: 2 names validated');
    is($t->redis_raw('ZCARD', "pki:{acme:$acct2}:pendauthz") =~ s/\n\z//r,
       '0', '... and no longer counted as pending');
}

# --- deactivating an older authorization leaves the newer one reusable -----------

{
    my $c = account();
    my (undef, undef, $o0) = order_ready($c, 'twice.example.test');
    my $a0 = $o0->{json}{authorizations}[0];
    # past the reuse window (still valid): the next order gets a new one
    authz_edit($a0, sub { $_[0]{validated} -= 2 * 86400 });
    my (undef, undef, $o1) = order_ready($c, 'twice.example.test');
    my $a1 = $o1->{json}{authorizations}[0] // '';
    isnt($a1, $a0, 'reuse: past its window, a new authorization');
    my ($acct, $aid1) = $a1 =~ m{/authz/([\w-]+)/([\w-]+)$};
    my $vkey = valid_key($a1, 'twice.example.test');
    is($t->redis_raw('GET', $vkey) =~ s/\n\z//r, $aid1,
       'reuse: the index names the new one');
    my $r = post($c, $a0, { status => 'deactivated' });
    is($r->{json}{status} // '', 'deactivated',
       'the older authorization deactivated');
    is($t->redis_raw('GET', $vkey) =~ s/\n\z//r, $aid1,
       '... the index still names the newer one');
    $r = post($c, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'twice.example.test' }] });
    is($r->{json}{status} // '', 'ready', '... which a new order reuses');
}

# --- terms of service (acme_terms_of_service) ---------------------------------------

{
    my $tos = 'https://127.0.0.1:' . $t->https_port . '/acme-tos';
    my $terms = 'https://tos.example.test/terms-v1';
    my $dr = $http->get("$tos/directory");
    my $d = eval { decode_json($dr->{content}) };
    is($d && $d->{meta}{termsOfService}, $terms, 'directory: termsOfService');
    # the README's CORS recipe: add_header reaches the module's answers
    is($dr->{headers}{'access-control-allow-origin'}, '*',
       'add_header ... always: on the directory');
    # a browser's preflight of a POST with application/jose+json
    for my $c (['new-order', 204, 'POST'], ['directory', 204, 'GET, HEAD, POST'],
               ['renewal-info/x.y', 204, 'GET, HEAD'], ['nosuch', 404, undef])
    {
        my $o = $http->request('OPTIONS', "$tos/$c->[0]", { headers => {
            Origin => 'https://app.example',
            'Access-Control-Request-Method' => 'POST',
            'Access-Control-Request-Headers' => 'content-type' } });
        is($o->{status}, $c->[1], "OPTIONS $c->[0]: $c->[1]");
        next if !defined $c->[2];
        is($o->{headers}{allow} // '', $c->[2], "  Allow: $c->[2]");
        is($o->{headers}{'access-control-allow-origin'} // '', '*',
           '  with the CORS headers of add_header');
        is($o->{headers}{'access-control-allow-headers'} // '',
           'Content-Type', '  (Content-Type allowed)');
    }
    my $k = new_key();
    my $j = jws(key => $k, url => "$tos/new-account", nonce => nonce(),
                jwk => 1, payload => '{}');
    my $r = post_raw("$tos/new-account", $JSON->encode($j));
    problem_is($r, 403, 'userActionRequired', 'newAccount without agreeing');
    is($r->{json}{instance}, $terms,
       '... "instance" names the terms (RFC 8555 7.3.3)');
    is($r->{headers}{'access-control-allow-origin'}, '*',
       '... add_header ... always: on a problem too');
    my $link = $r->{headers}{link} // '';
    $link = join(', ', @$link) if ref $link;
    like($link, qr{<\Q$terms\E>;\s*rel="terms-of-service"}, '... and a Link');
    $j = jws(key => $k, url => "$tos/new-account", nonce => nonce(), jwk => 1,
             payload => '{"termsOfServiceAgreed":true}');
    is(post_raw("$tos/new-account", $JSON->encode($j))->{status}, 201,
       'agreeing: 201');
}

# --- new accounts per client address and hour (acme_accounts_per_hour 2) -----------

{
    my $lim = 'https://127.0.0.1:' . $t->https_port . '/acme-lim';
    my @k = map { new_key() } 1 .. 3;
    my @st;
    for my $k (@k, $k[0]) {
        my $j = jws(key => $k, url => "$lim/new-account", nonce => nonce(),
                    jwk => 1, payload => '{}');
        my $r = post_raw("$lim/new-account", $JSON->encode($j));
        push @st, $r;
    }
    is(join(' ', map { $_->{status} } @st), '201 201 429 200',
       'acme_accounts_per_hour 2: two new accounts, the third refused, an '
       . 'existing key still answered');
    problem_is($st[2], 429, 'rateLimited', 'the third new account');
    like($st[2]{json}{detail} // '', qr/127\.0\.0\.1/,
         '... naming the client address');
    like($st[2]{headers}{'retry-after'} // '', qr/^\d+$/, '... with Retry-After');
    like($t->redis_raw('GET', 'pki:acme:newacct:' . int(time / 3600)
                              . ':127.0.0.1'), qr/^2\n?$/,
         '... and not counted (only accounts made count)');
    my $j = jws(key => $k[2], url => "$lim/new-account", nonce => nonce(),
                jwk => 1, payload => '{"onlyReturnExisting":true}');
    problem_is(post_raw("$lim/new-account", $JSON->encode($j)), 400,
               'accountDoesNotExist', 'the refused account was not made');
    like(slurp($t->error_log) // '', qr/at most 2 new accounts per client/,
         'the refusal is in the error log');
}

# --- CAA read again at finalization (authorization validated over 8 h ago) ---------
#
# CAA is read when a name validates; an order may be finalized up to
# acme_order_ttl later, so finalize reads it again for every dns
# authorization validated over 8 hours ago.  pebble-challtestsrv is the
# location's resolver; an authorization is aged by editing it in Redis.

SKIP: {
    skip('pebble-challtestsrv not installed (apt-get install pebble)', 1)
        if !$CTS;

    ok($t->start_challtestsrv($dns, $dnsm), 'pebble-challtestsrv is up');

    my $caa = sub {
        my ($host, $value) = @_;
        my ($ok, $why) = $t->add_caa($host, ['issue', $value]);
        ok($ok, "challtestsrv: CAA issue \"$value\" for $host")
            or diag($why);
    };

    # CAA's default is each location's own: off at the lab /acme-nest/
    # (every name to one address, no resolver), on at /acme-nest/c/ nested
    # in it (identities and a resolver), which did inherit "off"
    {
        local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-nest/c';
        $caa->('caa-nest.example.com', 'ca.example.net');
        my $c = account();
        my $r = post($c, "$BASE/new-order", { identifiers => [
                     { type => 'dns', value => 'caa-nest.example.com' }] });
        is($r->{status}, 201, 'nested CAA default: an order');
        my $az = $r->{json}{authorizations}[0] // '';
        my $a = post($c, $az, '');
        my ($ch) = grep { $_->{type} eq 'http-01' }
                   @{ $a->{json}{challenges} || [] };
        spew("$www/$ch->{token}", "$ch->{token}." . thumb_of($c->{key}));
        post($c, $ch->{url}, {});
        $a = poll($c, $az, 'valid');
        is($a->{json}{status}, 'invalid', 'nested CAA default: on, the '
           . 'validation fails on a CAA record naming another CA');
        my ($got) = grep { $_->{type} eq 'http-01' }
                    @{ $a->{json}{challenges} || [] };
        is($got->{error}{type} // '', 'urn:ietf:params:acme:error:caa',
           '... with a caa error');
    }

    # the reuse index is kept per policy: one name validated by one
    # account at /acme/ (a lab) and at /acme-nest/c/ (CAA on): each
    # location reuses its own authorization, neither replaces the other's
    {
        my $NEST = 'https://127.0.0.1:' . $t->https_port . '/acme-nest/c';
        my $c = account();
        my $c2 = { key => $c->{key},
                   kid => ($c->{kid} // '') =~ s{^\Q$BASE\E/}{$NEST/}r };
        my $name = 'reuse-realm.example.com';
        my $neworder = sub {
            my ($cc, $base) = @_;
            return post($cc, "$base/new-order", { identifiers => [
                        { type => 'dns', value => $name }] });
        };
        my (undef, undef, $o) = order_ready($c, $name);
        is($o->{json}{status} // '', 'ready', 'reuse per policy: ready at '
           . '/acme/');
        {
            local $BASE = $NEST;
            (undef, undef, $o) = order_ready($c2, $name);
            is($o->{json}{status} // '', 'ready', 'reuse per policy: '
               . 'validated again at /acme-nest/c/');
        }
        my $r = $neworder->($c, $BASE);
        is($r->{json}{status} // '', 'ready', 'reuse per policy: /acme/ '
           . 'still reuses its own authorization') or diag($r->{content});
        $r = $neworder->($c2, $NEST);
        is($r->{json}{status} // '', 'ready', 'reuse per policy: so does '
           . '/acme-nest/c/') or diag($r->{content});
        my ($acct) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};
        my @keys = grep { /:valid:/ } split /\n/,
                   $t->redis_raw('KEYS', "pki:{acme:$acct}:valid:*");
        is(scalar(@keys), 2, 'reuse per policy: two index entries, one '
           . 'per policy') or diag(join(' ', @keys));
    }

    local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-caa';
    my $c = account();
    is($c->{r}{status}, 201, 'CAA location: account');

    # names validated under no CAA; then a record set naming another CA
    my %o;
    for my $n (qw(fresh aged methods allowed)) {
        my (undef, $url, $o) = order_ready($c, "caa-$n.example.com");
        is($o->{json}{status}, 'ready', "caa-$n: order ready");
        $o{$n} = { url => $url, fin => $o->{json}{finalize},
                   authz => $o->{json}{authorizations}[0] };
    }
    $caa->('caa-fresh.example.com', 'ca.example.net');
    $caa->('caa-aged.example.com', 'ca.example.net');
    $caa->('caa-methods.example.com',
           'nginx-pki.test; validationmethods=dns-01');
    $caa->('caa-allowed.example.com',
           'nginx-pki.test; validationmethods=http-01');
    for my $n (qw(aged methods allowed)) {
        authz_edit($o{$n}{authz}, sub { $_[0]{validated} -= 9 * 3600 });
    }

    my $fin = sub {
        my ($n) = @_;
        my ($der) = csr_der("caa-$n", subj => '/',
                            san => "DNS:caa-$n.example.com");
        return post($c, $o{$n}{fin}, { csr => b64u($der) });
    };
    my $records = cert_records();

    my $f = $fin->('fresh');
    is($f->{status}, 200, 'validated a moment ago: CAA not read again, '
       . 'issued') or diag($f->{content});

    $f = $fin->('aged');
    problem_is($f, 403, 'caa', 'validated 9 h ago, CAA now names another CA');
    like($f->{json}{detail} // '', qr/caa-aged\.example\.com.*read again/,
         '... the detail names the name and says why');
    my $o = post($c, $o{aged}{url}, '');
    is($o->{json}{status}, 'invalid', '... the order is invalid');
    is($o->{json}{error}{type} // '', 'urn:ietf:params:acme:error:caa',
       '... with the caa problem');
    $f = $fin->('aged');
    problem_is($f, 403, 'orderNotReady', '... and a second finalize is refused');

    $f = $fin->('methods');
    problem_is($f, 403, 'caa', 'validated 9 h ago over http-01, CAA now '
               . 'allows dns-01 only (RFC 8657)');

    $f = $fin->('allowed');
    is($f->{status}, 200, 'validated 9 h ago, CAA read again allows: issued')
        or diag($f->{content});

    is(cert_records(), $records + 2, 'two certificates recorded, none for '
       . 'the refused orders');
    like(slurp($t->error_log) // '', qr/caa-aged\.example\.com/,
         'the refusal is in the error log');
}

# An authorization deactivated by its client while the order's
# finalization runs.  finalize derives "ready" from the authorizations,
# then reads CAA again (validated 9 h ago), which takes a DNS round trip:
# this test's responder deactivates the authorization (a real POST) while
# it holds that query, then answers "no CAA".  The move to processing must
# see the deactivation: nothing is issued, the order is invalid.

sub dns_empty_answer {
    my ($q) = @_;
    my $i = 12;
    $i += 1 + ord(substr($q, $i, 1)) while ord(substr($q, $i, 1) // "\0");
    return pack('n n n n n n', unpack('n', $q), 0x8180, 1, 0, 0, 0)
        . substr($q, 12, $i + 5 - 12);
}

# This test's DNS responder for /acme-race/, in a child: every query gets
# an empty answer, once HOOK->(query) has run.  Returns its pid.
sub race_dns {
    my ($hook) = @_;
    my $pid = fork() // die "fork: $!";
    return $pid if $pid;
    my $u = IO::Socket::IP->new(LocalHost => '127.0.0.1',
        LocalPort => $rdns, Proto => 'udp') or POSIX::_exit(1);
    while (1) {
        my $peer = $u->recv(my $q, 512) // next;
        next if length($q) < 17;
        $hook->($q);
        $u->send(dns_empty_answer($q), 0, $peer);
    }
}

{
    local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-race';
    my $c = account();
    is($c->{r}{status}, 201, 'deactivation race: account');
    my $arm = $t->dir . '/race.arm';
    my $pid = race_dns(sub {
        return if $_[0] !~ /caa-race/ || !-e $arm;
        my $az = slurp($arm);
        unlink $arm;
        my $r = post($c, $az, { status => 'deactivated' });
        spew("$arm.done", "$r->{status} " . ($r->{json}{status} // ''));
    });
    my (undef, $url, $o) = order_ready($c, 'caa-race.example.com');
    is($o->{json}{status}, 'ready', 'deactivation race: order ready');
    my $az = $o->{json}{authorizations}[0];
    authz_edit($az, sub { $_[0]{validated} -= 9 * 3600 });
    spew($arm, $az);
    my $records = cert_records();
    my ($der) = csr_der('caa-race', subj => '/',
                        san => 'DNS:caa-race.example.com');
    my $f = post($c, $o->{json}{finalize}, { csr => b64u($der) });
    is(slurp("$arm.done") // '', '200 deactivated', 'deactivation race: the '
       . 'authorization was deactivated during the finalization');
    problem_is($f, 403, 'orderNotReady', 'deactivation race: finalize');
    like($f->{json}{detail} // '', qr/deactivated or expired during/,
         '... the detail says why');
    is(cert_records(), $records, '... nothing is issued');
    $o = post($c, $url, '');
    is($o->{json}{status}, 'invalid', '... the order is invalid');
    kill 'KILL', $pid;
    waitpid($pid, 0);
}

# The CAA re-check at finalization: all the names of an order share one
# validation timeout (5 s here), so slow DNS cannot hold a pool thread for
# a timeout per name.  This test's responder answers each first CAA query
# of four names after 1.5 s: the fourth name is left 0.5 s, and fails.
{
    local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-race';
    my $c = account();
    my $slow = $t->dir . '/caa.slow';
    my $pid = race_dns(sub { sleep 1.5 if $_[0] =~ /caa-slow/ && -e $slow });
    my @names = map { "caa-slow$_.example.com" } 1 .. 4;
    my (undef, $url, $o) = order_ready($c, @names);
    is($o->{json}{status} // '', 'ready', 'slow CAA: order ready');
    authz_edit($_, sub { $_[0]{validated} -= 9 * 3600 })
        for @{ $o->{json}{authorizations} || [] };
    spew($slow, '');
    my $records = cert_records();
    my ($der) = csr_der('caa-slow', subj => '/',
                        san => join(',', map { "DNS:$_" } @names));
    my $f = post($c, $o->{json}{finalize}, { csr => b64u($der) });
    is($f->{json}{type} // '', 'urn:ietf:params:acme:error:dns',
       'slow CAA: finalize refused (dns), not issued after 6 s')
        or diag($f->{content});
    is(cert_records(), $records, '... nothing is issued');
    is(post($c, $url, '')->{json}{status} // '', 'invalid',
       '... the order is invalid');
    kill 'KILL', $pid;
    waitpid($pid, 0);
    unlink $slow;
}

# An order that expires while its finalization waits on the CAA re-check
# (1.8 s here) gets no certificate: the move to processing checks the
# order's own expiry at that moment, not at the start of the request.
{
    local $BASE = 'https://127.0.0.1:' . $t->https_port . '/acme-race';
    my $c = account();
    my $slow = $t->dir . '/ordexp.slow';
    my $pid = race_dns(sub { sleep 1.8 if $_[0] =~ /ordexp/ && -e $slow });
    my (undef, $url, $o) = order_ready($c, 'ordexp.example.com');
    is($o->{json}{status} // '', 'ready', 'expiry race: order ready');
    authz_edit($_, sub { $_[0]{validated} -= 9 * 3600 })
        for @{ $o->{json}{authorizations} || [] };
    my $records = cert_records();
    my ($der) = csr_der('ordexp', subj => '/',
                        san => 'DNS:ordexp.example.com');
    # in the middle of a second S, "expires" S + 1: the order expires
    # (expires < now, in seconds) at S + 2, in 1.5 s, which the finalize
    # must reach first (under load, with another test file beside it, the
    # 1 s left before was not always enough) and the re-check outlasts
    # (1.8 s; less than one DNS attempt of 2 s, or the query is retried)
    my $now = Time::HiRes::time();
    Time::HiRes::sleep(int($now) + 1.5 - $now);
    order_edit($url, sub { $_[0]{expires} = int(Time::HiRes::time()) + 1 });
    spew($slow, '');
    my $f = post($c, $o->{json}{finalize}, { csr => b64u($der) });
    problem_is($f, 403, 'orderNotReady', 'expiry race: finalize')
        or diag($f->{content});
    like($f->{json}{detail} // '', qr/expired during its finalization/,
         '... the detail says why');
    is(cert_records(), $records, '... nothing is issued');
    kill 'KILL', $pid;
    waitpid($pid, 0);
    unlink $slow;
}

# --- resources and methods ------------------------------------------------------------

$r = $http->get("$BASE/new-order");
is($r->{status}, 405, 'GET newOrder: 405');
is($r->{headers}{allow}, 'POST', '... with Allow: POST (RFC 9110 15.5.6)');
$r = $http->request('PUT', "$BASE/directory");
is($r->{status}, 405, 'PUT directory: 405');
is($r->{headers}{allow}, 'GET, HEAD, POST', '... with Allow: GET, HEAD, POST');
$r = $http->get("$BASE/nothing-here");
is($r->{status}, 404, 'unknown resource: 404');
# under an account only "orders" is a resource (GET is 405 there)
for my $p ('acct/x/foo', 'acct/x/foo/1', 'acct/x/orders/1/2') {
    $r = $http->get("$BASE/$p");
    is($r->{status}, 404, "GET $p: 404");
    $r = $http->request('OPTIONS', "$BASE/$p");
    is($r->{status}, 404, "OPTIONS $p: 404");
}
for my $p ('acct/x/orders', 'acct/x/orders/1') {
    $r = $http->get("$BASE/$p");
    is($r->{status}, 405, "GET $p: 405");
}

# --- revokeCert of a certificate on hold; who revoked, in the audit log ----------------

# A certificate on hold (certificateHold, by the admin API) is not revoked
# for good: its subscriber may still revoke it (keyCompromise here), which
# keeps the time of the hold and can no longer be released.  The audit
# entry names the account, or the certificate's key.
sub admin_cert {
    my ($serial, $reason, %o) = @_;
    my $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                     . '/pki/admin/revoke', user => 'admin:admin',
                     headers => ['Content-Type: application/json'],
                     data => $JSON->encode({ serial => $serial,
                                             reason => $reason, %o }));
    $r->{json} = eval { decode_json($r->{body}) };
    return $r;
}

# the Nth revoke entry of SERIAL in the audit log (waits up to 5 s)
sub audit_revoke_of {
    my ($serial, $n) = @_;
    my $log = $t->pki . '/audit/audit.log';
    for (1 .. 50) {
        my @e = grep { ($_->{type} // '') eq 'revoke'
                       && ($_->{serial} // '') eq $serial }
                map { eval { decode_json($_) } || () }
                split /\n/, slurp($log) // '';
        return $e[$n - 1] if @e >= $n;
        sleep 0.1;
    }
    return {};
}

{
    my $H = account();
    my $ch = issue($H, 'hold1', 'hold1.example.test');
    my $ck = issue($H, 'hold2', 'hold2.example.test');
    if ($ch && $ch->{leaf} && $ck && $ck->{leaf}) {
        my $serial = $t->x509_field($ch->{leaf}, 'serial');
        my $x = admin_cert($serial, 'certificateHold',
                           invalidity_date => '2026-01-02T03:04:05Z');
        is($x->{code}, 200, 'hold: the admin API puts it on hold')
            or diag($x->{body});
        my $held = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
        is($held->{reason}, '6', 'hold: reason 6');
        sleep 1.1;                  # a later time would show
        $r = post($H, "$BASE/revoke-cert",
                  { certificate => b64u($t->x509_der($ch->{leaf})),
                    reason => 1 });
        is($r->{status}, 200, 'hold: revokeCert by its account, '
           . 'keyCompromise') or diag($r->{content});
        my $rec = $t->redis_hash("pki:{ca:issuing}:cert:$serial");
        is($rec->{status}, 'revoked', 'hold: revoked');
        is($rec->{reason}, '1', 'hold: reason keyCompromise now');
        is($rec->{revoked_at}, $held->{revoked_at},
           'hold: the time of the hold is kept');
        is($rec->{invalidity_date}, '1767323045',
           'hold: and its invalidity date');
        is($t->redis_raw('HGET', 'pki:{ca:issuing}:revoked', $serial)
           =~ s/\s+$//r, "1 $held->{revoked_at} 1767323045",
           '  also in the CA\'s revocation list');
        $x = admin_cert($serial, 'removeFromCRL');
        isnt($x->{code}, 200, 'hold: no longer released by removeFromCRL');
        is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status},
           'revoked', '... still revoked');
        $r = post($H, "$BASE/revoke-cert",
                  { certificate => b64u($t->x509_der($ch->{leaf})) });
        problem_is($r, 400, 'alreadyRevoked', 'hold: revoked for good: '
                   . 'alreadyRevoked');
        my ($hid) = $H->{kid} =~ m{/acct/([\w-]+)$};
        my $e = audit_revoke_of($serial, 2);    # after the hold's
        is($e->{protocol} // '', 'acme', 'audit: revokeCert by protocol acme');
        is($e->{requester} // '', "acme:$hid", 'audit: ... by the account');
        like(slurp($t->error_log) // '',
             qr/acme: revoked serial $serial reason 1 \(was on hold\), by acme:$hid/,
             'hold: the error log says it was on hold, and who');

        my $ks = $t->x509_field($ck->{leaf}, 'serial');
        my $kpk = Crypt::PK::ECC->new($ck->{key});
        $r = post({ key => { pk => $kpk, type => 'ec', alg => 'ES256' } },
                  "$BASE/revoke-cert",
                  { certificate => b64u($t->x509_der($ck->{leaf})) },
                  jwk => 1);
        is($r->{status}, 200, 'revokeCert signed with the certificate key')
            or diag($r->{content});
        is(audit_revoke_of($ks, 1)->{requester} // '', 'certificate key',
           'audit: ... by the certificate key');
    }
}

# --- an account revoked by the admin API (RFC 8555 7.1.6 "revoked") ------------------

# revoke ACCOUNT-URL through the admin API with curl (admin / admin)
sub admin_revoke_account {
    my ($kid, $body) = @_;
    my ($id) = $kid =~ m{/acct/([\w-]+)$};
    my $r = $t->curl('POST', 'https://127.0.0.1:' . $t->https_port
                     . "/pki/admin/acme/accounts/$id", user => 'admin:admin',
                     headers => ['Content-Type: application/json'],
                     data => $body // '{"status":"revoked"}');
    $r->{json} = eval { decode_json($r->{body}) };
    return ($r, $id);
}

{
    my $A = account();
    my $ca = issue($A, 'acctrev', 'acctrev.example.test');
    ok($ca && $ca->{leaf}, 'account revocation: the account issued first');
    my $open = open_orders($A, 'acctrev');
    # its text is now every worker's hint (keep-alive: the same worker)
    $r = post($A, $A->{kid}, '');
    is($r->{status}, 200, 'account revocation: account read before');

    my ($x, $id) = admin_revoke_account($A->{kid}, '{"status":"deactivated"}');
    is($x->{code}, 400, 'admin: only "revoked" may be set: 400');
    ($x) = admin_revoke_account($A->{kid});
    is($x->{code}, 200, 'admin: account revoked with curl') or diag($x->{body});
    is($x->{json}{status}, 'revoked', 'admin: answers the revoked account');
    is($x->{json}{id}, $id, 'admin: ... with its id');
    open_orders_cancelled($open, 'revoked account', qr/revoked/, 'pki:');
    my $g = $t->curl('GET', 'https://127.0.0.1:' . $t->https_port
                     . "/pki/admin/acme/accounts/$id", user => 'admin:admin');
    my $gj = eval { decode_json($g->{body}) } || {};
    ok($g->{code} == 200 && ($gj->{status} // '') eq 'revoked'
       && ($gj->{thumbprint} // '') eq thumb_of($A->{key})
       && !exists $gj->{key},
       'admin: GET shows it revoked, with the key thumbprint only');
    $g = $t->curl('GET', 'https://127.0.0.1:' . $t->https_port
                  . "/pki/admin/acme/accounts/$id");
    is($g->{code}, 401, 'admin: the account API needs the admin login');

    my $before = scalar $t->redis_keys("pki:{acme:$id}:order:*");
    $r = post($A, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'after.example.test' }] });
    problem_is($r, 401, 'unauthorized', 'revoked account: newOrder');
    like($r->{json}{detail} // '', qr/revoked by the CA/,
         'revoked account: the detail says the CA revoked it');
    is(scalar $t->redis_keys("pki:{acme:$id}:order:*"), $before,
       'revoked account: no order stored');
    $r = post($A, "$BASE/new-account", { onlyReturnExisting => JSON::PP::true },
              jwk => 1);
    problem_is($r, 401, 'unauthorized', 'revoked account: its key at '
               . 'newAccount');
    like(PKITest::slurp($t->error_log) // '',
         qr/pki admin: 200 .*acme account \Q$id\E revoked by admin "admin"/,
         'revoked account: the error log names it and the admin');
    # the admin API walks the whole order index (it does not know the
    # locations' acme_order_ttl): all four orders are read
    my $said = "pki admin: 200 ok: acme account $id: open work cancelled: "
             . '1 authorizations deactivated, 1 ready orders made invalid, '
             . "4 orders read; acme account $id revoked";
    like(PKITest::slurp($t->error_log) // '', qr/\Q$said\E/,
         'revoked account: the log says what was cancelled');
    my @ev = grep { ($_->{operation} // '') eq 'acme-account-revoke'
                    && ($_->{subject} // '') eq $id } $t->audit_entries;
    ok(@ev == 1 && ($ev[0]{requester} // '') eq 'admin',
       'revoked account: one entry in the transaction log, by the admin')
        or diag(explain(\@ev));
}

# --- acme_redis (the replay-safe state in a second store) is checked at nginx -t -

{
    my $conf = $t->render_conf('--acme-http-port', $hport);
    my $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis 127.0.0.1:99999;}r;
    my ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-redis.conf'));
    ok(!$ok, 'acme_redis with a bad port: nginx -t fails');
    like($out, qr/invalid redis address.*bad-acme-redis\.conf:\d+/,
         '... naming the file and line');
    $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:/tmp/x.sock colour=blue;}r;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-redis.conf'));
    # named without its value, which may be a secret (password=...)
    ok(!$ok && $out =~ /invalid parameter "colour=\.\.\."/
       && $out !~ /blue/, 'acme_redis with an unknown option: nginx -t fails')
        or diag($out);
    $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:/tmp/x.sock;\n            acme_redis unix:/tmp/y.sock;}r;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-redis.conf'));
    ok(!$ok && $out =~ /duplicate/, 'acme_redis twice: nginx -t fails');
    # an option twice: the last one winning would hide a typo
    $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:/tmp/x.sock db=1 namespace=a: db=2;}r;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-redis.conf'));
    ok(!$ok && $out =~ /duplicate parameter "db="/,
       'acme_redis with db= twice: nginx -t fails') or diag($out);
    my $pw = $t->dir . '/redis.pw';
    spew($pw, "s3cret\n");
    chmod 0600, $pw;
    $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:/tmp/x.sock password_file=$pw password_file=$pw;}r;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-redis.conf'));
    ok(!$ok && $out =~ /duplicate parameter "password_file="/,
       'acme_redis with password_file= twice: nginx -t fails') or diag($out);
    $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:/tmp/x.sock password_file=/tmp;}r;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-redis.conf'));
    ok(!$ok && $out =~ /\[emerg\].*password_file "\/tmp" is no regular file in \S+bad-acme-redis\.conf:\d+/,
       'acme_redis with a directory for password_file: nginx -t names it, '
       . 'with file and line') or diag($out);
    my $good;
    # the store of pki_redis itself: the account copies acme_redis keeps
    # (a TTL, deleted on a change) would be the accounts; refused whether
    # acme_redis comes after pki_redis (in a location) or before (http{})
    {
        my ($sock) = $conf =~ /\bpki_redis unix:(\S+?)[\s;]/;
        $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:$sock timeout=500ms;}r;
        ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'same-acme-redis.conf'));
        ok(!$ok && $out =~ /"acme_redis" directive is the store of pki_redis .*same-acme-redis\.conf:\d+/,
           'acme_redis on the store of pki_redis: nginx -t fails, naming '
           . 'file and line') or diag($out);
        $bad = $conf =~ s{(\n(\s*)pki_redis unix:)}{\n$2acme_redis unix:$sock namespace=pki:;$1}r;
        ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'same-acme-redis.conf'));
        ok(!$ok && $out =~ /"pki_redis" directive is the store of an acme_redis above/,
           '... and so is pki_redis after such an acme_redis') or diag($out);
        $good = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:$sock namespace=acmestate:;}r;
        ($ok, $out) = $t->nginx_test($t->write_conf($good, 'same-acme-redis.conf'));
        ok($ok, '... while another namespace of that Redis passes')
            or diag($out);
    }
    $good = $conf =~ s{(acme issuing acme;)}{$1\n            acme_redis unix:/tmp/x.sock namespace=acmestate: timeout=500ms;}r;
    ($ok, $out) = $t->nginx_test($t->write_conf($good, 'good-acme-redis.conf'));
    ok($ok, 'a good acme_redis passes nginx -t') or diag($out);

    for my $case (['ftp://lb.example.test/acme', qr/must be an http/],
                  ['https://lb.example.test/acme/', qr/no "\/" at the end/],
                  ['https://', qr/must be an http|needs a host/],
                  ['https://lb.example.test/acme?x=1', qr/no query/]) {
        my ($url, $why) = @$case;
        $bad = $conf =~ s{(acme issuing acme;)}{$1\n            acme_base_url $url;}r;
        ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'bad-acme-base.conf'));
        ok(!$ok && $out =~ $why && $out =~ /bad-acme-base\.conf:\d+/,
           "acme_base_url $url: nginx -t fails, naming file and line")
            or diag($out);
    }
}

# --- External Account Binding (keys from the admin API) --------------------------

# from here on the replay-safe state is in a second store (acme_redis; here
# the same Redis under another namespace).  Two more ACME locations, without
# EAB, for an account that orders through several: /acme-xs/ with a state
# store of its own, /acme-ds/ with none (its orders are in pki_redis).
$t->stop_nginx;
{
    my $split = $t->render_conf('--acme-http-port', $hport, '--acme-eab', 'on',
                                '--acme-redis', 'unix:' . $t->redis_sock
                                . ' namespace=acmestate:');
    my $sock = $t->redis_sock;
    $split =~ s{(\n(\s*)location /acme/ \{)}{
$2location /acme-xs/ {
$2    acme issuing acme;
$2    acme_redis unix:$sock namespace=acmex:;
$2    acme_validation_http_port $hport;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_timeout 5s;
$2}
$2location /acme-ds/ {
$2    acme issuing acme;
$2    acme_validation_http_port $hport;
$2    acme_validation_resolve_to 127.0.0.1;
$2    acme_validation_allow_private on;
$2    acme_validation_timeout 5s;
$2}
$1} or die 'no ACME location in the config';
    $t->start_nginx($split);
}
$BASE = 'https://127.0.0.1:' . $t->https_port . '/acme';

$r = $http->get("$BASE/directory");
ok(decode_json($r->{content})->{meta}{externalAccountRequired},
   'EAB: directory says externalAccountRequired');

my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin/acme/eab';
my %auth = (headers => { Authorization => 'Basic ' .
                         MIME::Base64::encode_base64('admin:admin', '') });
$r = $http->request('POST', $admin, \%auth);
is($r->{status}, 201, 'admin: EAB key created') or diag($r->{content});
my $eab = eval { decode_json($r->{content}) } || {};
like($eab->{kid} // '', qr/^[\w-]+$/, 'admin: kid');
like($eab->{hmac_key} // '', qr/^[\w-]{86}$/,
     'admin: 512-bit HMAC key (RFC 7518 3.2: long enough for HS512)');
$r = $http->request('POST', $admin);
is($r->{status}, 401, 'admin: EAB keys need the admin login');

sub eab_for {
    my ($key, $kid, $hkey, $alg) = @_;
    $alg //= 'HS256';
    my $p64 = b64u($JSON->encode({ alg => $alg, kid => $kid,
                                   url => "$BASE/new-account" }));
    my $pl64 = b64u($JSON->encode(jwk_of($key)));
    my $mac = Crypt::Mac::HMAC::hmac($alg =~ /^HS(\d+)$/ ? "SHA$1" : 'SHA256',
                                     decode_base64url($hkey), "$p64.$pl64");
    return { protected => $p64, payload => $pl64, signature => b64u($mac) };
}

my $ek = new_key();
$r = post({ key => $ek }, "$BASE/new-account",
          { termsOfServiceAgreed => JSON::PP::true }, jwk => 1);
problem_is($r, 403, 'externalAccountRequired', 'EAB: none given');
$r = post({ key => $ek }, "$BASE/new-account",
          { externalAccountBinding => eab_for($ek, $eab->{kid},
                                              b64u('wrong key' x 4)) },
          jwk => 1);
problem_is($r, 403, 'unauthorized', 'EAB: wrong MAC key');
my $eab_wrong = $r->{json}{detail} // '';
$r = post({ key => $ek }, "$BASE/new-account",
          { externalAccountBinding => eab_for($ek, 'AAAAAAAAAAAAAAAA',
                                              b64u('wrong key' x 4)) },
          jwk => 1);
problem_is($r, 403, 'unauthorized', 'EAB: an unknown key id');
is($r->{json}{detail} // '-', $eab_wrong,
   '  the same answer as a wrong MAC (nothing told of a key\'s state)');
$r = post({ key => $ek }, "$BASE/new-account",
          { externalAccountBinding => eab_for(new_key(), $eab->{kid},
                                              $eab->{hmac_key}) }, jwk => 1);
problem_is($r, 400, 'malformed', 'EAB: binds another key');
$r = post({ key => $ek }, "$BASE/new-account",
          { externalAccountBinding => eab_for($ek, $eab->{kid},
                                              $eab->{hmac_key}, 'HS1') },
          jwk => 1);
problem_is($r, 400, 'malformed', 'EAB: a MAC algorithm that is not HS256, '
           . 'HS384 or HS512');
# the binding is kept and shown with the account: nothing beyond the three
# members of a flattened JWS (an unprotected header, anything else)
for my $extra ({ header => { alg => 'none' } }, { junk => 'x' x 300 }) {
    my $b = eab_for($ek, $eab->{kid}, $eab->{hmac_key});
    $r = post({ key => $ek }, "$BASE/new-account",
              { externalAccountBinding => { %$b, %$extra } }, jwk => 1);
    problem_is($r, 400, 'malformed', 'EAB: a member other than protected, '
               . 'payload and signature (' . join(',', keys %$extra) . ')');
}
{
    # cert-manager lets its users pick HS384 or HS512 (keyAlgorithm)
    my $e2 = eval { decode_json($http->request('POST', $admin, \%auth)
                                ->{content}) } || {};
    for my $alg (qw(HS512)) {
        my $k2 = new_key();
        my $r2 = post({ key => $k2 }, "$BASE/new-account",
                      { externalAccountBinding =>
                            eab_for($k2, $e2->{kid}, $e2->{hmac_key}, $alg) },
                      jwk => 1);
        is($r2->{status}, 201, "EAB: $alg account created")
            or diag($r2->{content});
    }
}
my $binding = eab_for($ek, $eab->{kid}, $eab->{hmac_key});
$r = post({ key => $ek }, "$BASE/new-account",
          { externalAccountBinding => $binding }, jwk => 1);
is($r->{status}, 201, 'EAB: account created') or diag($r->{content});
# RFC 8555 7.3.4: the account object returned carries the binding as sent
is_deeply($r->{json}{externalAccountBinding}, $binding,
          'EAB: the account object has externalAccountBinding');
is_deeply(post({ key => $ek, kid => $r->{headers}{location} },
               $r->{headers}{location}, '')->{json}{externalAccountBinding},
          $binding, '... and keeps it');

# an issuance with the split stores: orders and authorizations in the state
# store, the account and the certificate record in pki_redis
{
    my $S = { key => $ek, kid => $r->{headers}{location} };
    my ($sid) = $S->{kid} =~ m{/acct/([\w-]+)$};
    my $cs = issue($S, 'split', 'split.example.test');
    ok($cs && $cs->{leaf}, 'split stores: a certificate is issued');
    if ($cs && $cs->{leaf}) {
        my $serial = $t->x509_field($cs->{leaf}, 'serial');
        is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status}, 'good',
           'split stores: the record is in pki_redis');
        ok(scalar($t->redis_keys("acmestate:{acme:$sid}:order:*")) == 1
           && scalar($t->redis_keys("pki:{acme:$sid}:order:*")) == 0,
           'split stores: the order is in the state store only');
        ok(scalar($t->redis_keys("pki:{acme:$sid}:acct")) == 1,
           'split stores: the account is in pki_redis');
    }
    # the state store keeps a copy of the account: a key change and a
    # deactivation take effect at once
    my $nk = new_key();
    $r = key_change($S, $nk);
    is($r->{status}, 200, 'split stores: keyChange') or diag($r->{content});
    $r = post($S, $S->{kid}, '');
    problem_is($r, 400, 'malformed', 'split stores: the old key no longer '
               . 'signs');
    $S->{key} = $nk;
    my $open = open_orders($S, 'splitd');
    $r = post($S, $S->{kid}, { status => 'deactivated' });
    is($r->{json}{status}, 'deactivated', 'split stores: deactivated');
    open_orders_cancelled($open, 'split stores, deactivated',
                          qr/deactivated/, 'acmestate:');
    $r = post($S, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'x.example' }] });
    problem_is($r, 401, 'unauthorized', 'split stores: a deactivated account '
               . 'is refused at once');
}

# a new account at $BASE, bound to a new EAB key of the admin API: the
# client ({ key, kid }) and the account's id ('none' when it failed)
sub eab_account {
    my ($name) = @_;
    my $e = eval { decode_json($http->request('POST', $admin, \%auth)
                               ->{content}) } || {};
    my $k = new_key();
    my $r = post({ key => $k }, "$BASE/new-account",
                 { externalAccountBinding => eab_for($k, $e->{kid},
                                                     $e->{hmac_key}) },
                 jwk => 1);
    is($r->{status}, 201, $name);
    my $c = { key => $k, kid => $r->{headers}{location} };
    my ($id) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};
    return ($c, $id // 'none');
}

# an account made where no EAB is required is no account of /acme/, which
# requires one (accounts are the server's, shared by its locations)
{
    my $DS = 'https://127.0.0.1:' . $t->https_port . '/acme-ds';
    my $k = new_key();
    my $c = { key => $k };
    my $n = $http->request('HEAD', "$DS/new-nonce")->{headers}{'replay-nonce'};
    my $r = post($c, "$DS/new-account",
                 { termsOfServiceAgreed => JSON::PP::true }, jwk => 1,
                 nonce => $n);
    is($r->{status}, 201, 'EAB: an account made at /acme-ds/ (no EAB)')
        or diag($r->{content});
    my ($id) = ($r->{headers}{location} // '') =~ m{/acct/([\w-]+)$};
    $r = post($c, "$BASE/new-account",
              { termsOfServiceAgreed => JSON::PP::true }, jwk => 1);
    problem_is($r, 403, 'externalAccountRequired',
               'EAB: its key finds no account at /acme/');
    $c->{kid} = "$BASE/acct/" . ($id // 'none');
    $r = post($c, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'noeab.example.test' }] });
    problem_is($r, 403, 'unauthorized', 'EAB: nor does its account URL');
    like($r->{json}{detail} // '', qr/external account binding/,
         '... which says why');

    # its client binds it where EAB is required: newAccount with a binding
    my $e = eval { decode_json($http->request('POST', $admin, \%auth)
                               ->{content}) } || {};
    $r = post($c, "$BASE/new-account", { externalAccountBinding =>
              eab_for($k, $e->{kid}, $e->{hmac_key}) }, jwk => 1);
    is($r->{status}, 200, 'EAB: the account bound in place: 200')
        or diag($r->{content});
    is($r->{headers}{location} // '', $c->{kid}, '... the same account');
    ok($r->{json}{externalAccountBinding}, '... now with its binding');
    $r = post($c, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'noeab.example.test' }] });
    is($r->{status}, 201, '... which orders at /acme/ now');
    my $k2 = new_key();
    $r = post({ key => $k2 }, "$BASE/new-account", { externalAccountBinding =>
              eab_for($k2, $e->{kid}, $e->{hmac_key}) }, jwk => 1);
    problem_is($r, 403, 'unauthorized', 'EAB: the key it took binds no '
               . 'other account');
}

# the state store's copy of the account follows an admin revocation at once
{
    my ($S, $sid) = eab_account('split stores: another EAB account');
    my $cs = issue($S, 'splitrev', 'splitrev.example.test');
    ok($cs && $cs->{leaf}, 'split stores: it issues');
    my $open = open_orders($S, 'splitr');
    $r = post($S, $S->{kid}, '');
    is($r->{status}, 200, 'split stores: account read');
    ok(scalar($t->redis_keys("acmestate:{acme:$sid}:acct")) == 1,
       'split stores: the state store holds a copy of the account');
    my ($x) = admin_revoke_account($S->{kid});
    is($x->{code}, 200, 'split stores: revoked by the admin')
        or diag($x->{body});
    open_orders_cancelled($open, 'split stores, revoked', qr/revoked/,
                          'acmestate:');
    like($t->redis_raw("GET", "acmestate:{acme:$sid}:acct") // "",
         qr/"status":"revoked"/, 'split stores: the copy says revoked');
    $r = post($S, "$BASE/new-order", { identifiers => [
              { type => 'dns', value => 'x.example' }] });
    problem_is($r, 401, 'unauthorized', 'split stores: a revoked account is '
               . 'refused at once');
    ($x) = admin_revoke_account($S->{kid});
    is($x->{code}, 200, 'split stores: revoking again: 200, no change');
}

# RFC 8555 7.3.6 across locations: the account is the server's, so its
# deactivation through one location cancels what it left open through the
# others too, whatever store each keeps its orders in, and the other state
# stores refuse it at once (their copy of the account follows)
{
    my ($S, $sid) = eab_account('three locations: an EAB account');
    my $k4 = $S->{key};
    my $root = 'https://127.0.0.1:' . $t->https_port;
    my %at = (acme => 'acmestate:', 'acme-xs' => 'acmex:',
              'acme-ds' => 'pki:');
    my %open;
    for my $loc (sort keys %at) {
        local $BASE = "$root/$loc";
        # the same account at each location: its URL there
        my $c = { key => $k4, kid => "$BASE/acct/$sid" };
        $open{$loc} = open_orders($c, "xs-$loc");
        # in the location's store alone
        ok(scalar($t->redis_keys("$at{$loc}\{acme:$sid}:order:*")) == 3,
           "three locations: /$loc keeps its orders in $at{$loc}");
    }
    ok(scalar($t->redis_keys("acmex:{acme:$sid}:acct")) == 1,
       'three locations: /acme-xs/ holds a copy of the account');

    $r = post($S, $S->{kid}, { status => 'deactivated' });
    is($r->{status}, 200, 'three locations: deactivated through /acme/')
        or diag($r->{content});
    is($r->{json}{status}, 'deactivated', '... deactivated');
    for my $loc (sort keys %at) {
        open_orders_cancelled($open{$loc}, "three locations, /$loc",
                              qr/deactivated/, $at{$loc});
    }
    # this location's orders within its acme_order_ttl, the others' whole
    my $said = "acme account $sid: open work cancelled: 3 authorizations "
             . 'deactivated, 3 ready orders made invalid, 9 orders read';
    like(PKITest::slurp($t->error_log) // '', qr/\Q$said\E/,
         'three locations: the log says what was cancelled');
    for my $loc ('acme-xs', 'acme-ds') {
        local $BASE = "$root/$loc";
        my $c = { key => $k4, kid => "$BASE/acct/$sid" };
        $r = post($c, "$BASE/new-order", { identifiers => [
                  { type => 'dns', value => 'x.example' }] });
        problem_is($r, 401, 'unauthorized', "three locations: /$loc refuses "
                   . 'the account at once');
    }
}

# A keyChange through one location reaches the account's copy in the other
# state stores at once: the old key (perhaps a stolen one) signs nowhere
# from then on, the new one everywhere
{
    my ($S, $sid) = eab_account('keyChange, three locations: an EAB account');
    my $k5 = $S->{key};
    my $root = 'https://127.0.0.1:' . $t->https_port;
    my $xs = { key => $k5, kid => "$root/acme-xs/acct/$sid" };
    {
        local $BASE = "$root/acme-xs";
        $r = post($xs, $xs->{kid}, '');
        is($r->{status}, 200, 'keyChange, three locations: the account '
           . 'used at /acme-xs/');
    }
    ok(scalar($t->redis_keys("acmex:{acme:$sid}:acct")) == 1,
       'keyChange, three locations: /acme-xs/ holds a copy of the account');

    my $nk = new_key();
    $r = key_change({ key => $k5, kid => "$BASE/acct/$sid" }, $nk);
    is($r->{status}, 200, 'keyChange, three locations: through /acme/')
        or diag($r->{content});
    {
        local $BASE = "$root/acme-xs";
        $r = post($xs, $xs->{kid}, '');
        problem_is($r, 400, 'malformed', 'keyChange, three locations: the '
                   . 'old key no longer signs at /acme-xs/');
        $r = post({ key => $nk, kid => $xs->{kid} }, $xs->{kid}, '');
        is($r->{status}, 200, 'keyChange, three locations: the new key '
           . 'signs there');
    }
}

# RFC 9773 5 across state stores: the mark names the store of its holder's
# order, so a location that cannot see that order does not take it for
# gone (one renewal per certificate, wherever it is asked for)
{
    my ($S, $sid) = eab_account('replaces, three stores: an EAB account');
    my $root = 'https://127.0.0.1:' . $t->https_port;
    my ($c0, $id0, $mk) = to_renew($S, 'replaces, three stores: a certificate',
                             'rx0', 'rx0.example.test');
    $r = renew_order($S, $id0, 'rx0.example.test');
    is($r->{status}, 201, 'replaces, three stores: a renewal at /acme/')
        or diag($r->{content});
    my $oid = oid_of($r->{headers}{location});
    like(replaced_val($mk), qr/^\Q$oid\E\@[\w-]{12}$/,
         '  the mark names its order and that order\'s store');
    for my $loc ('acme-xs', 'acme-ds') {
        local $BASE = "$root/$loc";
        my $c = { key => $S->{key}, kid => "$BASE/acct/$sid" };
        $r = renew_order($c, $id0, 'rx0.example.test');
        problem_is($r, 409, 'alreadyReplaced', "replaces, three stores: a "
                   . "second renewal at /$loc");
        like($r->{json}{detail} // '', qr/another ACME location/,
             '  its detail says where the first one is');
    }
}

# A host whose acme_redis is another Redis keeps a copy of the account of
# its own, up to 60 s old.  Such a host is played here by putting this
# store's copy back as it was before a change.  It still answers the
# requests the copy allows, but finalize and revokeCert ask the durable
# account (pki_redis): it neither issues nor revokes for an account
# changed elsewhere, and its copy follows the durable account from then on.
{
    require Redis;
    my $redis = Redis->new(sock => $t->redis_sock, reconnect => 0);
    my ($S, $sid) = eab_account('a stale copy: an EAB account');
    my $cs = issue($S, 'stale', 'stale.example.test');
    ok($cs && $cs->{leaf}, 'a stale copy: the account issues');
    my $ckey = "acmestate:{acme:$sid}:acct";
    my $before = $redis->get($ckey);
    ok($before, 'a stale copy: the state store has a copy');

    # a keyChange elsewhere: this host's copy keeps the old key
    my $nk = new_key();
    $r = key_change($S, $nk);
    is($r->{status}, 200, 'a stale copy: keyChange') or diag($r->{content});
    $redis->set($ckey, $before, 'EX', 60);
    # the same keyChange again, signed with the old key this copy still
    # holds: the durable account has the new key already, so nothing is
    # done and the answer says so (it was a 200 that wrote nothing)
    $r = key_change($S, $nk);
    problem_is($r, 409, 'malformed', 'a stale copy: the keyChange repeated '
               . 'with the old key');
    like($r->{json}{detail} // '', qr/changed meanwhile/, '... it says why');
    $redis->set($ckey, $before, 'EX', 60);
    my (undef, undef, $o) = order_ready($S, 'stale2.example.test');
    is($o && $o->{json}{status}, 'ready', 'a stale copy: the old key still '
       . 'orders there');
    my $n = cert_records();
    $r = finalize_ready($S, $o->{json}, 'stale2', 'stale2.example.test');
    problem_is($r, 401, 'unauthorized', 'a stale copy: finalize signed with '
               . 'the old key is refused');
    like($r->{json}{detail} // '', qr/no longer has/, '... it says why');
    is(cert_records(), $n, '... nothing is issued');
    like(PKITest::slurp($t->error_log) // '',
         qr/finalize refused: account \Q$sid\E has another key/,
         '... the log says why');
    my $now = $redis->get($ckey) // '';
    ok($now ne $before && $now eq ($redis->get("pki:{acme:$sid}:acct") // ''),
       '... the copy is the durable account now');
    $r = post($S, $S->{kid}, '');
    problem_is($r, 400, 'malformed', 'a stale copy: the old key no longer '
               . 'signs');
    $S->{key} = $nk;
    $r = finalize_ready($S, $o->{json}, 'stale3', 'stale2.example.test');
    is($r->{status}, 200, 'a stale copy: the new key finalizes that order')
        or diag($r->{content});

    # a deactivation elsewhere: this host's copy still says "valid"
    $before = $redis->get($ckey);
    $r = post($S, $S->{kid}, { status => 'deactivated' });
    is($r->{json}{status}, 'deactivated', 'a stale copy: deactivated');
    $redis->set($ckey, $before, 'EX', 60);
    (undef, undef, $o) = order_ready($S, 'stale4.example.test');
    is($o && $o->{json}{status}, 'ready', 'a stale copy: the deactivated '
       . 'account still orders there');
    $n = cert_records();
    $r = finalize_ready($S, $o->{json}, 'stale4', 'stale4.example.test');
    problem_is($r, 401, 'unauthorized', 'a stale copy: finalize by a '
               . 'deactivated account is refused');
    like($r->{json}{detail} // '', qr/is deactivated/, '... it says why');
    is(cert_records(), $n, '... nothing is issued');
    like($redis->get($ckey) // '', qr/"status":"deactivated"/,
         '... the copy says deactivated now');

    $redis->set($ckey, $before, 'EX', 60);
    my $serial = $t->x509_field($cs->{leaf}, 'serial');
    $r = post($S, "$BASE/revoke-cert",
              { certificate => b64u($t->x509_der($cs->{leaf})) });
    problem_is($r, 401, 'unauthorized', 'a stale copy: revokeCert by a '
               . 'deactivated account is refused');
    is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status}, 'good',
       '... the certificate stays good');
    $redis->quit;
}

$r = $http->request('GET', $admin, \%auth);
my $list = eval { decode_json($r->{content})->{keys} } || [];
my ($entry) = grep { $_->{kid} eq $eab->{kid} } @$list;
ok($entry && $entry->{account}, 'admin: the key lists its account');
ok($entry && $entry->{bound} && $entry->{status} eq 'active',
   '  "bound": true (its status stays "active" until it is disabled)');

# a key takes no parameter: a member asked for (a lifetime) is refused, not
# dropped unsaid; an empty object is taken
{
    my %j = (headers => { %{ $auth{headers} },
                          'Content-Type' => 'application/json' });
    my $n0 = scalar(@$list);
    my $x = $http->request('POST', $admin, { %j, content => '{"expires":"1h"}' });
    is($x->{status}, 400, 'admin: POST acme/eab {"expires": ...}: 400');
    like($x->{content}, qr/unknown member \\"expires\\": POST acme\/eab takes none/,
         '  naming the member') or diag($x->{content});
    $x = $http->request('POST', $admin, { %j, content => '[]' });
    is($x->{status}, 400, 'admin: POST acme/eab with a JSON array: 400');
    $x = $http->request('POST', $admin, { %j, content => " {} \n" });
    is($x->{status}, 201, 'admin: POST acme/eab {}: 201');
    my $fresh = eval { decode_json($x->{content})->{kid} } // '-';
    my $l2 = eval { decode_json($http->request('GET', $admin, \%auth)
                                ->{content})->{keys} } || [];
    is(scalar(@$l2), $n0 + 1, '  one key more in all (none for the 400s)');
    my ($fe) = grep { $_->{kid} eq $fresh } @$l2;
    ok($fe && JSON::PP::is_bool($fe->{bound}) && !$fe->{bound},
       '  the new key: "bound": false');
}

$r = $http->request('DELETE', "$admin/$eab->{kid}", \%auth);
is($r->{status}, 200, 'admin: EAB key disabled');
my $ek2 = new_key();
$r = post({ key => $ek2 }, "$BASE/new-account",
          { externalAccountBinding => eab_for($ek2, $eab->{kid},
                                              $eab->{hmac_key}) }, jwk => 1);
problem_is($r, 403, 'unauthorized', 'EAB: a disabled key');
is($r->{json}{detail} // '-', $eab_wrong, '  the same answer');
like(PKITest::slurp($t->error_log) // '',
     qr/EAB key \Q$eab->{kid}\E is disabled \(DELETE acme\/eab\)/,
     '  the error log says which: disabled');
like(PKITest::slurp($t->error_log) // '',
     qr/EAB key AAAAAAAAAAAAAAAA is unknown/,
     '  ... unknown, for the made-up key id');
like(PKITest::slurp($t->error_log) // '',
     qr/EAB key [\w-]+ is bound to another account already/,
     '  ... bound to another account, for the key that bound one');

$t->stop_nginx;
done_testing();

# --- helpers -----------------------------------------------------------------------

sub cert_id { $t->cert_id(@_) }

sub rfc3339 {
    my ($s) = @_;
    return undef if !$s || $s !~ /^(\d{4})-(\d\d)-(\d\d)T(\d\d):(\d\d):(\d\d)/;
    require Time::Local;
    return Time::Local::timegm($6, $5, $4, $3, $2 - 1, $1);
}

sub not_after {
    my ($file) = @_;
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-in', $file, '-noout',
                              '-enddate', '-dateopt', 'iso_8601']);
    return rfc3339(($out =~ /=(\S+ \S+)/)[0] =~ s/ /T/r);
}
