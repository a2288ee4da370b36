#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Matter through nginx, on the demo-like PKI (scripts/mkpki-matter.sh: PAA
# FFF1 -> PAI FFF1/8000 and RCAC -> ICAC, keys in SoftHSM): DACs through
# the EST label matter-dac and the batch endpoint (CSRs and server keygen),
# NOCs from a NOCSR; every certificate passes `pkictl matter
# verify-attestation` / `verify-operational` and `openssl verify
# -x509_strict`; the refusals answer 400 naming the rule.

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
my $m = "$pki/matter";

# the demo's Matter hierarchies in this test's token
$t->make_matter_pki($pki);

$t->start_redis;
# OCSP for the PAI too: the batch check below asks it about every serial
(my $conf = $t->render_conf)
    =~ s{ocsp_responder issuing;}{ocsp_responder issuing matter-pai;};
$t->start_nginx($conf);

my $pkictl = "$PKITest::BUILD/pkictl";
my $json = JSON::PP->new->canonical;
my $dir = $t->dir;
my $n = 0;

sub url { "https://127.0.0.1:" . $t->https_port . $_[0] }

sub post_json {
    my ($path, $body, %o) = @_;
    my $data = ref $body ? $json->encode($body) : $body;
    my $r = $t->curl('POST', url($path), data => $data,
                     user => exists $o{user} ? $o{user} : 'demo:demo',
                     headers => [ 'Content-Type: '
                                  . ($o{ctype} // 'application/json') ],
                     max_time => 60);
    $r->{json} = eval { $json->decode($r->{body}) } if $r->{body} =~ /^\{/;
    return $r;
}

sub der_file {
    my ($der, $name) = @_;
    my $f = "$dir/$name.der";
    PKITest::spew($f, $der);
    my ($rc, $out) = run_cmd(['openssl', 'x509', '-inform', 'DER', '-in', $f,
                              '-out', "$dir/$name.pem"]);
    return "$dir/$name.pem";
}

sub strict_ok {
    my ($cert, $root, $inter, $name) = @_;
    my ($rc, $out, $err) = run_cmd(['openssl', 'verify', '-x509_strict',
                                    '-CAfile', $root, '-untrusted', $inter,
                                    $cert]);
    ok($rc == 0 && $out =~ /: OK/, "$name: openssl verify -x509_strict")
        or diag("$out$err");
}

sub attest_ok {
    my ($dac, $name) = @_;
    my ($rc, $out, $err) = run_cmd([$pkictl, 'matter', 'verify-attestation',
                                    '--dac', $dac, '--pai', "$m/pai.pem",
                                    '--paa', "$m/paa.pem"]);
    ok($rc == 0, "$name: pkictl matter verify-attestation") or diag($err);
    strict_ok($dac, "$m/paa.pem", "$m/pai.pem", $name);
}

sub pub_of {
    my ($file, $is_key) = @_;
    my ($rc, $out) = run_cmd(['openssl', $is_key ? ('pkey', '-in', $file,
                              '-pubout') : ('x509', '-in', $file, '-noout',
                              '-pubkey')]);
    return $out;
}

sub record_good {
    my ($ca, $cert, $name) = @_;
    my $serial = $t->x509_field($cert, 'serial');
    my $h = $t->redis_hash("pki:{ca:$ca}:cert:$serial");
    is($h->{status}, 'good', "$name: Redis record of $serial is good");
}

# the record's subject is the DAC's, VID and PID included (it used to be
# the request's, before they were added: "CN=...")
sub record_vidpid {
    my ($ca, $cert, $cn, $name) = @_;
    my $serial = $t->x509_field($cert, 'serial');
    my $h = $t->redis_hash("pki:{ca:$ca}:cert:$serial");
    like($h->{subject} // '', qr/^1\.3\.6\.1\.4\.1\.37244\.2\.2=
                                 (?:8000|\#0C0438303030),
                                 1\.3\.6\.1\.4\.1\.37244\.2\.1=
                                 (?:FFF1|\#0C0446464631),CN=\Q$cn\E$/x,
         "$name: the record's subject names the VID and PID")
        or diag($h->{subject});
}

# --- DAC through the EST label -------------------------------------------

{
    # the CSR claims VID FFF2 and PID 1234: not trusted
    my ($csr, $key) = $t->make_csr('estdac',
        subj => '/CN=device 0001/1.3.6.1.4.1.37244.2.1=FFF2'
                . '/1.3.6.1.4.1.37244.2.2=1234');
    my $r = $t->est_post('simpleenroll', $csr, label => 'matter-dac');
    is($r->{code}, 200, 'EST matter-dac simpleenroll: 200')
        or diag($r->{body});
    my $pem = $t->p7_to_pem($r->{body});
    my $dac = $pem ? $t->save_first_cert($pem, 'est-dac') : undef;
    ok($dac, 'EST: a DAC came back');
    if ($dac) {
        my $subj = $t->x509_field($dac, 'subject');
        like($subj, qr/1\.3\.6\.1\.4\.1\.37244\.2\.1=#0C04464646310*|FFF1/,
             'EST DAC: VID from the PAI');
        my $text = $t->x509_text($dac);
        like($text, qr/1\.3\.6\.1\.4\.1\.37244\.2\.1 = FFF1|37244\.2\.1=FFF1/,
             'EST DAC: VID FFF1') or diag($text);
        like($text, qr/37244\.2\.2 ?= ?8000/, 'EST DAC: PID 8000 (PAI)');
        unlike($text, qr/FFF2|1234/, 'EST DAC: the CSR VID/PID ignored');
        like($text, qr/Not After : Dec 31 23:59:59 9999 GMT/,
             'EST DAC: notAfter 99991231235959Z');
        attest_ok($dac, 'EST DAC');
        record_good('matter-pai', $dac, 'EST DAC');
        record_vidpid('matter-pai', $dac, 'device 0001', 'EST DAC');
        is(pub_of($dac), pub_of($key, 1), 'EST DAC: the CSR key');
    }

    my ($c384) = $t->make_csr('estdac384', curve => 'P-384');
    $r = $t->est_post('simpleenroll', $c384, label => 'matter-dac',
                      quiet => 1);
    is($r->{code}, 400, 'EST matter-dac with a P-384 key: 400');
    like($r->{body}, qr/P-256/, 'EST P-384: the rule is named');
}

# --- no renewal of a DAC ----------------------------------------------------

# EST simplereenroll with a DAC of the label as the client certificate:
# refused as such (400 saying a DAC is not renewed), nothing reserved,
# recorded or logged; it used to be refused for a reason that said nothing
# of it (a CSR with the DAC's subject: its VID "not allowed by template";
# one with the CN alone: 403 "subject/SANs differ")
{
    my ($csr, $key) = $t->make_csr('renewdac', subj => '/CN=renew 0001');
    my $r = $t->est_post('simpleenroll', $csr, label => 'matter-dac');
    my $pem = $r->{code} == 200 ? $t->p7_to_pem($r->{body}) : undef;
    my $dac = $pem ? $t->save_first_cert($pem, 'renew-dac') : undef;
    ok($dac, 'a DAC to renew') or diag($r->{body});
    # nginx verifies the DAC as a client certificate
    my $cas = "$dir/clientcas.pem";
    PKITest::spew($cas, join('', map { slurp($_) } "$pki/chain.pem",
                                                    "$m/pai.pem",
                                                    "$m/paa.pem"));
    (my $c2 = $conf) =~ s{ssl_client_certificate \S+;}
                         {ssl_client_certificate $cas;} or die;
    # simpleenroll without Basic auth too: a client certificate alone
    $c2 =~ s{auth_basic "EST";}{auth_basic off;} or die;
    $t->stop_nginx;
    $t->start_nginx($c2);
    my $issues = sub {
        scalar grep { ($_->{type} // '') eq 'issue' } $t->audit_entries;
    };
    my $why = 'template "matter-dac": a Matter DAC is issued once for the '
              . "device's life and is not renewed";
    for my $c (['the DAC subject', '/CN=renew 0001'
                . '/1.3.6.1.4.1.37244.2.1=FFF1/1.3.6.1.4.1.37244.2.2=8000'],
               ['the CN alone', '/CN=renew 0001'])
    {
        my ($name, $subj) = @$c;
        my ($csr2) = $t->make_csr('renew2', subj => $subj);
        my @keys0 = $t->state_keys;
        my $iss0 = $issues->();
        $r = $t->est_post('simplereenroll', $csr2, label => 'matter-dac',
                          user => undef, cert => $dac, key => $key,
                          quiet => 1);
        select(undef, undef, undef, 0.5);   # carried audit entries
        is($r->{code}, 400, "DAC simplereenroll, $name: 400");
        like($r->{body}, qr/\Q$why\E/,
             '... saying a DAC is not renewed') or diag($r->{body});
        is_deeply([ $t->state_keys ], \@keys0,
                  '... no serial reserved, no record written');
        is($issues->(), $iss0, '... no issue entry in the transaction log');
    }
    # the DAC alone authenticates no simpleenroll under its template:
    # its holder would get a second DAC, for another key and any name
    {
        my ($csr3) = $t->make_csr('second-dac', subj => '/CN=second 0001');
        my @keys0 = $t->state_keys;
        my $iss0 = $issues->();
        $r = $t->est_post('simpleenroll', $csr3, label => 'matter-dac',
                          user => undef, cert => $dac, key => $key,
                          quiet => 1);
        select(undef, undef, undef, 0.5);   # carried audit entries
        is($r->{code}, 403, 'simpleenroll by a DAC alone: 403')
            or diag("$r->{code} $r->{body}");
        like($r->{body}, qr/a client certificate alone does not authenticate/,
             '... saying why') or diag($r->{body});
        is_deeply([ $t->state_keys ], \@keys0,
                  '... no serial reserved, no record written');
        is($issues->(), $iss0, '... no issue entry in the transaction log');
        like(slurp($t->error_log) // '',
             qr/issues Matter certificates: a client certificate alone/,
             '... and the error log says why');
    }
    $t->stop_nginx;
    $t->start_nginx($conf);
}

# --- DAC batch -------------------------------------------------------------

{
    my (@csrs, @keys);
    for my $i (1 .. 5) {
        my ($csr, $key) = $t->make_csr("b$i", subj => "/CN=line-1 unit $i");
        push @csrs, encode_base64($csr, '');
        push @keys, $key;
    }
    my $r = post_json('/matter/dac/batch', { csrs => \@csrs });
    is($r->{code}, 200, 'batch of 5: 200') or diag($r->{body});
    my $certs = $r->{json}{certificates} || [];
    is(scalar @$certs, 5, 'batch: 5 certificates');
    for my $i (0 .. $#$certs) {
        my $f = der_file(decode_base64($certs->[$i]), "batch$i");
        is(pub_of($f), pub_of($keys[$i], 1), "batch[$i]: same order");
        attest_ok($f, "batch[$i]") if $i < 2;
        record_good('matter-pai', $f, "batch[$i]") if $i == 4;
        record_vidpid('matter-pai', $f, 'line-1 unit ' . ($i + 1),
                      "batch[$i]") if $i == 4;
    }
    like($r->{headers}{'content-type'} // '', qr{^application/json},
         'batch: application/json');

    # a batch of 24 (the batch issue path: one Redis round trip to reserve,
    # one to commit): every record is in Redis, good, holding its DER, and
    # OCSP answers "good" for every serial
    my $nb = 24;
    my @more = map {
        encode_base64(($t->make_csr("bb$_", subj => "/CN=line-1 unit $_"))[0],
                      '')
    } 6 .. $nb;
    $r = post_json('/matter/dac/batch', { csrs => [ @csrs, @more ] });
    is($r->{code}, 200, "batch of $nb: 200") or diag($r->{body});
    $certs = $r->{json}{certificates} || [];
    is(scalar @$certs, $nb, "batch of $nb: $nb certificates");
    my (@serials, $recs_ok);
    $recs_ok = 0;
    for my $i (0 .. $#$certs) {
        my $der = decode_base64($certs->[$i]);
        my $f = der_file($der, "big$i");
        my $serial = $t->x509_field($f, 'serial');
        push @serials, $serial;
        my $h = $t->redis_hash("pki:{ca:matter-pai}:cert:$serial");
        $recs_ok++ if ($h->{status} // '') eq 'good'
                      && ($h->{der} // '') eq $der
                      && ($h->{protocol} // '') eq 'matter'
                      && ($h->{requester} // '') eq 'demo';
    }
    my %uniq = map { $_ => 1 } @serials;
    is(scalar keys %uniq, $nb, "batch of $nb: distinct serials");
    is($recs_ok, $nb, "batch of $nb: every record good, with its DER, "
       . 'protocol and requester');
    like($t->redis('EXISTS', map { "pki:{ca:matter-pai}:serial:$_" }
                   @serials), qr/^\(integer\) $nb$/m,
         "batch of $nb: every serial reserved");
    attest_ok("$dir/big" . ($nb - 1) . '.pem', "batch of $nb, last");

    my $ocsp_good = 0;
    for (my $i = 0; $i < @serials; $i += 10) {
        my @s = map { ('-serial', "0x$_") }
                grep { defined } @serials[$i .. $i + 9];
        my ($rc, $out, $err) = run_cmd(['openssl', 'ocsp', '-issuer',
            "$m/pai.pem", @s, '-url',
            'http://127.0.0.1:' . $t->http_port . '/ocsp', '-noverify'],
            timeout => 30);
        $ocsp_good += () = $out =~ /^0x[0-9A-F]+: good$/mg;
        diag("$out$err") if $rc != 0;
    }
    is($ocsp_good, $nb, "batch of $nb: OCSP says good for every serial");

    # server-generated keys
    $r = post_json('/matter/dac/batch', { count => 3 });
    is($r->{code}, 200, 'batch count 3: 200') or diag($r->{body});
    $certs = $r->{json}{certificates} || [];
    my $keys = $r->{json}{keys} || [];
    is(scalar @$certs, 3, 'keygen: 3 certificates');
    is(scalar @$keys, 3, 'keygen: 3 PKCS#8 keys');
    if (@$certs && @$keys) {
        my $f = der_file(decode_base64($certs->[0]), 'kg0');
        my $kf = "$dir/kg0.key.der";
        PKITest::spew($kf, decode_base64($keys->[0]));
        my ($rc, $pub) = run_cmd(['openssl', 'pkey', '-inform', 'DER',
                                  '-in', $kf, '-pubout']);
        is($pub, pub_of($f), 'keygen: the key belongs to the certificate');
        attest_ok($f, 'keygen DAC');
    }

    # refusals
    $r = post_json('/matter/dac/batch',
                   { csrs => [ $csrs[0], encode_base64('garbage', '') ] });
    is($r->{code}, 400, 'batch with a bad CSR: 400');
    like($r->{json}{error} // '', qr/csrs\[1\]/, 'bad CSR: its index named');

    # a compressed P-256 point (Matter wants it uncompressed): refused
    # with the whole batch before anything is reserved, signed or logged,
    # where the three others used to be issued, recorded, then revoked
    {
        my $k = "$dir/cpoint";
        my ($rc, $out, $err) = run_cmd(['sh', '-c',
            "openssl ecparam -name prime256v1 -genkey -noout -out $k.pem"
            . " && openssl ec -in $k.pem -conv_form compressed"
            . " -out $k.c.pem 2>/dev/null"
            . " && openssl req -new -key $k.c.pem -subj /CN=cpoint"
            . " -outform DER -out $k.csr"]);
        die "compressed CSR: $err" if $rc != 0;
        my $cp = encode_base64(slurp("$k.csr"), '');
        my @keys0 = $t->state_keys;
        my $issues = sub {
            scalar grep { ($_->{type} // '') eq 'issue' } $t->audit_entries;
        };
        my $iss0 = $issues->();
        $r = post_json('/matter/dac/batch',
                       { csrs => [ @csrs[0 .. 2], $cp, $csrs[3] ] });
        select(undef, undef, undef, 0.5);   # carried audit entries
        is($r->{code}, 400, 'batch with a compressed-point CSR: 400');
        like($r->{json}{error} // '',
             qr/^csrs\[3\]: .*must be an uncompressed point/,
             '... naming csrs[3] and the rule') or diag($r->{body});
        is_deeply([ $t->state_keys ], \@keys0,
                  '... no serial reserved, no record written');
        is($issues->(), $iss0, '... no issue entry in the transaction log');

        $r = post_json('/matter/noc', { csr => $cp,
            node_id => 'DEDEDEDE00010001', fabric_id => 'FAB000000000001D' });
        is($r->{code}, 400, 'NOC from a compressed-point NOCSR: 400');
        like($r->{json}{error} // '', qr/uncompressed point/,
             '... the rule named');
    }

    my ($c384) = $t->make_csr('b384', curve => 'P-384');
    $r = post_json('/matter/dac/batch',
                   { csrs => [ encode_base64($c384, '') ] });
    is($r->{code}, 400, 'batch with a P-384 CSR: 400');
    like($r->{json}{error} // '', qr/P-256/, 'P-384: rule named');

    # the lean CSR reader of the batch path: same refusals as pki_csr_parse
    {
        my $bad = decode_base64($csrs[0]);
        $bad =~ s/line-1 unit 1/line-1 unit X/ or die 'no CN in the CSR';
        $r = post_json('/matter/dac/batch',
                       { csrs => [ $csrs[1], encode_base64($bad, '') ] });
        is($r->{code}, 400, 'batch with a tampered CSR: 400');
        like($r->{json}{error} // '',
             qr/csrs\[1\]: CSR signature does not verify/,
             'tampered CSR: index and reason named');

        my ($rc, $out, $err) = run_cmd(['openssl', 'req', '-new', '-key',
            $keys[0], '-sha384', '-subj', '/CN=sha384', '-outform', 'DER']);
        $r = post_json('/matter/dac/batch',
                       { csrs => [ encode_base64($out, '') ] });
        is($r->{code}, 400, 'batch with an ecdsa-with-SHA384 CSR: 400');
        like($r->{json}{error} // '', qr/ecdsa-with-SHA256/,
             'SHA-384 CSR: rule named');

        # the CSR claims VID FFF2 and PID 1234: not trusted (batch path)
        my ($c, $k) = $t->make_csr('bvid',
            subj => '/CN=unit 0002/1.3.6.1.4.1.37244.2.1=FFF2'
                    . '/1.3.6.1.4.1.37244.2.2=1234');
        $r = post_json('/matter/dac/batch',
                       { csrs => [ encode_base64($c, '') ] });
        is($r->{code}, 200, 'batch with a CSR claiming a VID: 200')
            or diag($r->{body});
        my $f = der_file(decode_base64($r->{json}{certificates}[0] // ''),
                         'bvid');
        my $text = $t->x509_text($f) // '';
        like($text, qr/37244\.2\.1 ?= ?FFF1/, 'batch DAC: VID FFF1 (PAI)');
        like($text, qr/37244\.2\.2 ?= ?8000/, 'batch DAC: PID 8000 (PAI)');
        like($text, qr/CN ?= ?unit 0002/, 'batch DAC: the CSR CN kept');
        unlike($text, qr/FFF2|1234/, 'batch DAC: the CSR VID/PID ignored');
        is(pub_of($f), pub_of($k, 1), 'batch DAC: the CSR key');
        attest_ok($f, 'batch DAC with a claimed VID');
    }

    # a CN whose Mvid: is not 4 uppercase hex digits: the SDK fails such
    # a DAC (CHIP_ERROR_WRONG_CERT_DN) even beside the VID/PID attributes,
    # so the batch answers 400 before anything is reserved, signed or
    # logged (it used to be issued and recorded good), as does EST
    {
        my ($c) = $t->make_csr('badmvid', subj => '/CN=Widget Mvid:fff1');
        my @keys0 = $t->state_keys;
        my $issues = sub {
            scalar grep { ($_->{type} // '') eq 'issue' } $t->audit_entries;
        };
        my $iss0 = $issues->();
        $r = post_json('/matter/dac/batch',
                       { csrs => [ $csrs[0], encode_base64($c, '') ] });
        select(undef, undef, undef, 0.5);   # carried audit entries
        is($r->{code}, 400, 'batch with CN "Widget Mvid:fff1": 400');
        like($r->{json}{error} // '',
             qr/^csrs\[1\]: .*Mvid: in the CN not followed by 4 uppercase /,
             '... naming csrs[1] and the rule') or diag($r->{body});
        is_deeply([ $t->state_keys ], \@keys0,
                  '... no serial reserved, no record written');
        is($issues->(), $iss0, '... no issue entry in the transaction log');
        $r = $t->est_post('simpleenroll', $c, label => 'matter-dac',
                          quiet => 1);
        is($r->{code}, 400, 'EST with CN "Widget Mvid:fff1": 400');
        is_deeply([ $t->state_keys ], \@keys0, '... nothing recorded');
    }

    # one DAC per device key: a batch with two CSRs of one key is refused
    # whole, naming both places, nothing recorded
    {
        my @keys0 = $t->state_keys;
        my ($rc) = run_cmd(['openssl', 'req', '-new', '-key', $keys[0],
                            '-subj', '/CN=line-1 unit 1b', '-outform', 'DER',
                            '-out', "$dir/b1again.der"]);
        my $again = $rc == 0 ? slurp("$dir/b1again.der") : '';
        $r = post_json('/matter/dac/batch',
                       { csrs => [ @csrs[0 .. 2], encode_base64($again, '') ] });
        is($r->{code}, 400, 'batch with two CSRs of one key: 400')
            or diag($r->{body});
        like($r->{json}{error} // '', qr/csrs\[3\] has the key of csrs\[0\]/,
             '... naming both places');
        is_deeply([ $t->state_keys ], \@keys0, '... nothing recorded');
    }

    $r = post_json('/matter/dac/batch', { csrs => [ ($csrs[0]) x 1001 ] });
    is($r->{code}, 400, 'batch of 1001: 400');
    like($r->{json}{error} // '', qr/1\.\.1000/, '1001: the cap named');

    $r = post_json('/matter/dac/batch', { count => 0 });
    is($r->{code}, 400, 'count 0: 400');
    $r = post_json('/matter/dac/batch', '{"csrs": [');
    is($r->{code}, 400, 'broken JSON: 400');
    $r = post_json('/matter/dac/batch', { csrs => \@csrs }, user => undef);
    is($r->{code}, 401, 'batch without credentials: 401');
    $r = post_json('/matter/dac/batch', { csrs => \@csrs },
                   ctype => 'text/plain');
    is($r->{code}, 415, 'batch as text/plain: 415');
    $r = post_json('/matter/dac/batch', { csrs => \@csrs },
                   ctype => 'application/jsonx');
    is($r->{code}, 415, 'batch as application/jsonx: 415');
    $r = $t->curl('GET', url('/matter/dac/batch'), user => 'demo:demo');
    is($r->{code}, 405, 'GET batch: 405');
    is($r->{headers}{allow}, 'POST', '  Allow: POST');
    $r = $t->curl('GET', url('/matter/noc'), user => 'demo:demo');
    is($r->{code}, 405, 'GET noc: 405');
    is($r->{headers}{allow}, 'POST', '  Allow: POST');
    $r = post_json('/matter/dac/batch', 'x' x (3 * 1024 * 1024));
    is($r->{code}, 413, 'batch body over 2 MiB: 413');
    like($r->{json}{error} // '', qr/^request body is larger than 2097152 /,
         '  the API\'s JSON error, not nginx\'s HTML page')
        or diag($r->{body});
}

# --- NOC -------------------------------------------------------------------

{
    # a NOCSR: the SDK's placeholder subject, only the key is used
    my ($csr, $key) = $t->make_csr('nocsr', subj => '/O=CSR/OU=CSA');
    my $b64 = encode_base64($csr, '');
    my %req = (csr => $b64, node_id => 'DEDEDEDE00010001',
               fabric_id => 'FAB000000000001D',
               cats => [ 'ABCD0001', 'ABCE0002', 'ABCF0003' ]);
    my $r = post_json('/matter/noc', \%req);
    is($r->{code}, 200, 'NOC: 200') or diag($r->{body});
    my $j = $r->{json} || {};
    ok($j->{noc} && $j->{noc_tlv} && $j->{icac} && $j->{icac_tlv}
       && $j->{rcac} && $j->{rcac_tlv}, 'NOC: noc, icac, rcac and TLVs');
    if ($j->{noc}) {
        my $noc = der_file(decode_base64($j->{noc}), 'noc');
        my $icac = der_file(decode_base64($j->{icac}), 'icac');
        my $rcac = der_file(decode_base64($j->{rcac}), 'rcac');
        my ($rc, $out, $err) = run_cmd([$pkictl, 'matter',
            'verify-operational', '--noc', $noc, '--icac', $icac,
            '--rcac', $rcac]);
        ok($rc == 0, 'NOC: pkictl matter verify-operational') or diag($err);
        strict_ok($noc, $rcac, $icac, 'NOC');
        is(pub_of($noc), pub_of($key, 1), 'NOC: the NOCSR key');
        my $text = $t->x509_text($noc);
        like($text, qr/DEDEDEDE00010001/, 'NOC: node-id');
        like($text, qr/ABCF0003/, 'NOC: third CAT');
        like($text, qr/TLS Web Client Authentication, TLS Web Server/,
             'NOC: EKU clientAuth, serverAuth');
        record_good('matter-icac', $noc, 'NOC');

        for my $c (['noc', $j->{noc}, $j->{noc_tlv}],
                   ['icac', $j->{icac}, $j->{icac_tlv}],
                   ['rcac', $j->{rcac}, $j->{rcac_tlv}])
        {
            my ($name, $der, $tlv) = @$c;
            PKITest::spew("$dir/$name.chip", decode_base64($tlv));
            ok(length(decode_base64($tlv)) <= 400, "$name TLV <= 400 B");
            ($rc, $out, $err) = run_cmd([$pkictl, 'matter', 'to-der',
                                         "$dir/$name.chip",
                                         "$dir/$name.back.der"]);
            is(PKITest::slurp("$dir/$name.back.der") // '',
               decode_base64($der), "$name: TLV -> DER gives the DER");
        }
        is(PKITest::slurp("$dir/rcac.pem"),
           PKITest::slurp("$m/rcac.pem"), 'NOC: the RCAC of the demo');
    }

    my @bad = (
        [ { node_id => 'dededede00010001' }, qr/uppercase/, 'lowercase node_id' ],
        [ { node_id => 'DEDEDEDE0001' }, qr/16 uppercase/, 'short node_id' ],
        [ { node_id => '0000000000000000' }, qr/operational/, 'node_id 0' ],
        [ { node_id => 'FFFFFFF000000000' }, qr/operational/,
          'node_id outside the operational range' ],
        [ { fabric_id => '0000000000000000' }, qr/fabric_id must not be 0/,
          'fabric_id 0' ],
        [ { fabric_id => 'fab000000000001d' }, qr/uppercase/,
          'lowercase fabric_id' ],
        [ { cats => [ 'ABCD0001', 'ABCE0002', 'ABCF0003', 'ABC00004' ] },
          qr/at most 3 CATs/, '4 CATs' ],
        [ { cats => [ 'ABCD0000' ] }, qr/version/, 'CAT version 0' ],
        [ { cats => [ 'ABCD0001', 'ABCD0002' ] }, qr/distinct/,
          'two CATs with one identifier' ],
        [ { cats => [ 'abcd0001' ] }, qr/8 uppercase/, 'lowercase CAT' ],
        [ { fabric_id => 'FAB0000000000002' }, qr/fabric-id/,
          'fabric differs from the RCAC' ],
        [ { csr => encode_base64('nope', '') }, qr/csr/, 'garbage CSR' ],
    );
    for my $b (@bad) {
        my ($over, $re, $name) = @$b;
        my %q = (%req, %$over);
        $r = post_json('/matter/noc', \%q);
        is($r->{code}, 400, "NOC $name: 400");
        like($r->{json}{error} // '', $re, "NOC $name: rule named")
            or diag($r->{body});
    }

    # a member twice: the engine and a proxy in front could read two
    # different node IDs
    $r = post_json('/matter/noc', '{"csr":"' . $b64 . '","node_id":'
                   . '"DEDEDEDE00010001","node_id":"DEDEDEDE00010002",'
                   . '"fabric_id":"FAB000000000001D"}');
    is($r->{code}, 400, 'NOC with node_id given twice: 400');
    like($r->{json}{error} // '', qr/repeats a member/, '... saying why');

    my ($c384) = $t->make_csr('noc384', curve => 'P-384');
    $r = post_json('/matter/noc', { %req, csr => encode_base64($c384, '') });
    is($r->{code}, 400, 'NOC with a P-384 NOCSR: 400');

    # a NOCSR whose signature does not verify
    my $broken = $csr;
    substr($broken, -5, 1) = chr(ord(substr($broken, -5, 1)) ^ 1);
    $r = post_json('/matter/noc', { %req, csr => encode_base64($broken, '') });
    is($r->{code}, 400, 'NOC with a broken NOCSR signature: 400');

    $r = post_json('/matter/noc', { %req }, user => undef);
    is($r->{code}, 401, 'NOC without credentials: 401');
    $r = post_json('/matter/noc', 'x' x 20000);
    is($r->{code}, 413, 'NOC body over 16 KiB: 413');
    like($r->{json}{error} // '', qr/^request body is larger than 16384 /,
         '  the API\'s JSON error');

    # chunked, over the cap in the first read and in a later one: the
    # same JSON error, and the connection ends with it
    for my $case (['at once'], ['in a later read', pause => 0.5]) {
        my ($name, %o) = @$case;
        my $a = $t->over_cap_post(path => '/matter/noc', user => 'demo:demo',
            headers => ['Content-Type: application/json'],
            after => "GET /matter/noc HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n",
            %o);
        is($a->{status}, 413, "NOC chunked body over the cap $name: 413")
            or diag(explain($a));
        like($a->{headers}{'content-type'} // '', qr{^application/json},
             '  application/json');
        like($a->{body}, qr/^\{"error":"request body is larger than 16384 /,
             '  the JSON error');
        ok($a->{closed}, '  the server closed the connection');
        unlike($a->{after} // '', qr{HTTP/1\.1}, '  nothing after it answered');
    }
}

# --- pkictl matter verify-operational: validity and pathLen ---------------
# an openssl-made RCAC -> ICAC -> NOC: a NOC valid 2020..2021, one valid
# from 2035, and an RCAC of pathLen 0 over the ICAC passed the checks
# ("OK"), where openssl verify and the SDK refuse them

{
    my $d = "$dir/opvalid";
    mkdir $d;
    my $ca = "basicConstraints=critical,CA:TRUE%s\n"
             . "keyUsage=critical,keyCertSign,cRLSign\n"
             . "subjectKeyIdentifier=hash\n"
             . "authorityKeyIdentifier=keyid:always\n";
    PKITest::spew("$d/x.cnf", "oid_section = oids\n[oids]\n"
        . "matterNode = 1.3.6.1.4.1.37244.1.1\n"
        . "matterICAC = 1.3.6.1.4.1.37244.1.3\n"
        . "matterRCAC = 1.3.6.1.4.1.37244.1.4\n"
        . "matterFabric = 1.3.6.1.4.1.37244.1.5\n"
        . "[req]\ndistinguished_name = dn\n[dn]\n"
        . "[ca]\ndefault_ca = c\n[c]\ndatabase = index.txt\n"
        . "new_certs_dir = .\nserial = serial\ndefault_md = sha256\n"
        . "policy = p\nunique_subject = no\n[p]\n"
        . "[rc]\n" . sprintf($ca, '') . "[rc0]\n" . sprintf($ca, ',pathlen:0')
        . "[noc]\nbasicConstraints=critical,CA:FALSE\n"
        . "keyUsage=critical,digitalSignature\n"
        . "extendedKeyUsage=critical,clientAuth,serverAuth\n"
        . "subjectKeyIdentifier=hash\n"
        . "authorityKeyIdentifier=keyid:always\n");
    PKITest::spew("$d/index.txt", '');
    PKITest::spew("$d/serial", "04\n");
    my $dated = sub {
        my ($out, $from, $to) = @_;
        return " && openssl ca -batch -config x.cnf -cert i.pem -keyfile i.key"
            . " -in n.csr -preserveDN -notext -startdate $from"
            . " -enddate $to -extfile x.cnf -extensions noc -out $out";
    };
    my ($rc, $out, $err) = run_cmd(['sh', '-c', "cd $d"
        . ' && for k in r i n; do openssl ecparam -name prime256v1 -genkey'
        . ' -noout -out $k.key || exit 1; done'
        . ' && openssl req -new -utf8 -config x.cnf -key r.key'
        . ' -subj /matterRCAC=CACACACA00000001 -out r.csr'
        . ' && openssl x509 -req -in r.csr -signkey r.key -sha256 -days 3650'
        . ' -set_serial 1 -extfile x.cnf -extensions rc -out r.pem'
        . ' && openssl x509 -req -in r.csr -signkey r.key -sha256 -days 3650'
        . ' -set_serial 1 -extfile x.cnf -extensions rc0 -out r0.pem'
        . ' && openssl req -new -utf8 -config x.cnf -key i.key'
        . ' -subj /matterICAC=CACACACA00000002 -out i.csr'
        . ' && openssl x509 -req -in i.csr -CA r.pem -CAkey r.key -sha256'
        . ' -days 3650 -set_serial 2 -extfile x.cnf -extensions rc -out i.pem'
        . ' && openssl req -new -utf8 -config x.cnf -key n.key -subj'
        . ' /matterNode=DEDEDEDE00010001/matterFabric=FAB000000000001D'
        . ' -out n.csr'
        . ' && openssl x509 -req -in n.csr -CA i.pem -CAkey i.key -sha256'
        . ' -days 30 -set_serial 3 -extfile x.cnf -extensions noc -out n.pem'
        . $dated->('old.pem', '20200101000000Z', '20210101000000Z')
        . $dated->('later.pem', '20350101000000Z', '20360101000000Z')]);
    die "operational chain: $err" if $rc != 0;

    my $verify = sub {
        my ($noc, $rcac, @at) = @_;
        return run_cmd([$pkictl, 'matter', 'verify-operational', '--noc',
                        "$d/$noc", '--icac', "$d/i.pem", '--rcac',
                        "$d/$rcac", @at]);
    };
    ($rc, $out, $err) = $verify->('n.pem', 'r.pem');
    ok($rc == 0 && $out =~ /^OK/, 'verify-operational: an openssl-made '
       . 'chain valid now passes') or diag($err);
    for my $c (['old.pem', 'r.pem', qr/CERT_EXPIRED/,
                'a NOC valid 2020..2021'],
               ['later.pem', 'r.pem', qr/CERT_NOT_VALID_YET/,
                'a NOC valid from 2035'],
               ['n.pem', 'r0.pem', qr/CERT_PATH_LEN_CONSTRAINT_EXCEEDED/,
                'an RCAC of pathLen 0 over the ICAC'])
    {
        my ($noc, $rcac, $re, $name) = @$c;
        ($rc, $out, $err) = $verify->($noc, $rcac);
        ok($rc != 0 && $out eq '' && $err =~ $re,
           "verify-operational: $name refused") or diag("$out$err");
        ($rc, $out, $err) = run_cmd(['openssl', 'verify', '-CAfile',
                                     "$d/$rcac", '-untrusted', "$d/i.pem",
                                     "$d/$noc"]);
        ok($rc != 0, "  as openssl verify refuses it");
    }
    ($rc, $out, $err) = $verify->('n.pem', 'r.pem', '--at',
                                  '20200101000000Z');
    ok($rc != 0 && $err =~ /CERT_NOT_VALID_YET/,
       'verify-operational --at 20200101000000Z: not valid yet')
        or diag("$out$err");
    ($rc, $out, $err) = $verify->('n.pem', 'r.pem', '--at', '2020-01-01');
    ok($rc != 0 && $err =~ /bad --at/, 'verify-operational --at 2020-01-01: '
       . 'refused, naming the form') or diag("$out$err");
}

# --- a DAC template's CN rule ---------------------------------------------------

# subject CN fixed: the DAC carries that CN, not the CSR's; a Matter
# template with any other subject rule is refused by nginx -t
{
    $t->stop_nginx;
    (my $c2 = $conf) =~ s{(\n\s*pki_ca matter-pai \{)}{
    pki_template matter-fixed {
        matter dac;
        subject CN fixed "Acme Widget DAC";
    }
$1} or die 'no matter-pai CA';
    $c2 =~ s{templates matter-dac;}{templates matter-dac matter-fixed;}
        or die;
    $c2 =~ s{(\n(\s*)location = /matter/noc \{)}{
$2location = /matter/dac/fixed {
$2    matter_dac_batch matter-pai matter-fixed;
$2    auth_basic "Matter";
$2    auth_basic_user_file $pki/htpasswd;
$2}
$1} or die;
    (my $bad = $c2) =~ s{subject CN fixed "Acme Widget DAC";}
        {subject CN fixed "Acme Widget DAC";\n        subject O copy;};
    my ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-bad.conf'));
    ok(!$ok && $out =~ /takes no "subject O" rule/,
       'a Matter template with a subject O rule: refused by nginx -t')
        or diag($out);
    # a NOC template of 200 years under the ICAC (valid to 9999): every
    # NOC would end about 2226, which Matter TLV cannot encode (32-bit
    # seconds since 2000), and be refused; it used to be signed first
    my (undef, $end) = run_cmd(['openssl', 'x509', '-in', "$m/icac.pem",
                                '-noout', '-enddate']);
    like($end, qr/notAfter=Dec 31 23:59:59 9999 GMT/, 'the ICAC ends 9999');
    ($bad = $c2) =~ s{(\n\s*pki_ca matter-pai \{)}{
    pki_template noc-200y {
        matter noc;
        validity 73000d;
    }
$1} or die;
    $bad =~ s{templates matter-noc;}{templates matter-noc noc-200y;} or die;
    $bad =~ s{matter_noc matter-icac matter-noc;}
             {matter_noc matter-icac noc-200y;} or die;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-200y.conf'));
    ok(!$ok && $out =~ /\[emerg\].*template "noc-200y": a Matter noc/
       && $out =~ /of CA "matter-icac" would end 22\d\d-.* Matter TLV cannot/,
       'a NOC template of 73000d under an ICAC to 9999: refused by '
       . 'nginx -t') or diag($out);
    # a fixed CN that no commissioner takes (Mvid: not 4 uppercase hex)
    ($bad = $c2) =~ s{subject CN fixed "Acme Widget DAC";}
        {subject CN fixed "Widget Mvid:fff1";} or die;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-mvid.conf'));
    ok(!$ok && $out =~ /\[emerg\].*the fixed CN: Mvid: in the CN not /,
       'subject CN fixed "Widget Mvid:fff1": refused by nginx -t')
        or diag($out);
    # an ordinary template on the PAI: it would sign what the Matter
    # checks never saw (a DAC for any PID, from a CN "... Mpid:9999")
    ($bad = $c2) =~ s{templates matter-dac matter-fixed;}
                     {templates matter-dac matter-fixed device;} or die;
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-plain.conf'));
    ok(!$ok && $out =~ /\[emerg\].*template "device" is not a Matter/
       && $out =~ /but CA "matter-pai" is a Matter CA/,
       'an ordinary template on the PAI: refused by nginx -t')
        or diag($out);
    # ACME with a DAC template: no DAC is a certificate for a name
    ($bad = $c2) =~ s{acme issuing acme;}{acme matter-pai matter-dac;}
        or die 'no acme directive';
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-acme.conf'));
    ok(!$ok && $out =~ /template "matter-dac" issues Matter certificates/
       && $out =~ /which ACME does not/,
       'acme with a Matter template: refused by nginx -t') or diag($out);
    # matter_noc under an ICAC whose chain does not hold its RCAC: the
    # answer would name the ICAC as the root to trust
    # a body cap far over a batch of 1000 CSRs: one request could take
    # a worker's whole pki_body_memory
    ($bad = $c2) =~ s{matter_max_body_size 2m;}{matter_max_body_size 100m;}
        or die 'no matter_max_body_size';
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-big.conf'));
    ok(!$ok && $out =~ /matter_max_body_size must be 1k\.\.16m/,
       'matter_max_body_size 100m: refused by nginx -t') or diag($out);
    ($bad = $c2) =~ s{\n\s*chain \S+icac-chain\.pem;}{} or die 'no ICAC chain';
    ($ok, $out) = $t->nginx_test($t->write_conf($bad, 'matter-bad2.conf'));
    ok(!$ok && $out =~ /needs the RCAC that issued it/,
       'matter_noc under an ICAC without its RCAC: refused by nginx -t')
        or diag($out);
    # matter_noc under an ICAC whose RCAC has an emailAddress (no Matter
    # TLV form): every NOC would be issued, then not deliverable
    {
        my $d = "$dir/mailrcac";
        mkdir $d;
        PKITest::spew("$d/ca.cnf", "[v3_ca]\n"
            . "basicConstraints=critical,CA:TRUE\n"
            . "keyUsage=critical,keyCertSign,cRLSign\n"
            . "subjectKeyIdentifier=hash\n"
            . "authorityKeyIdentifier=keyid:always\n");
        my ($rc, $out, $err) = run_cmd(['sh', '-c', "cd $d"
            . ' && openssl ecparam -name prime256v1 -genkey -noout -out r.key'
            . ' && openssl ecparam -name prime256v1 -genkey -noout -out i.key'
            . ' && openssl req -new -x509 -utf8 -key r.key -sha256 -days 365'
            . " -subj '/1.3.6.1.4.1.37244.1.4=CACACACA00000042"
            . "/emailAddress=pki\@example.com'"
            . ' -config ca.cnf -extensions v3_ca -out r.pem'
            . " && openssl req -new -utf8 -key i.key -subj"
            . " '/1.3.6.1.4.1.37244.1.3=CACACACA00000043' -out i.csr"
            . ' && openssl x509 -req -in i.csr -CA r.pem -CAkey r.key'
            . ' -sha256 -days 300 -set_serial 9 -extfile ca.cnf'
            . ' -extensions v3_ca -out i.pem'
            . ' && cat i.pem r.pem > chain.pem']);
        die "mail RCAC: $err" if $rc != 0;
        ($bad = $c2) =~ s{(\n\s*pki_ca matter-pai \{)}{
    pki_ca mail-icac {
        certificate $d/i.pem;
        chain $d/chain.pem;
        key $d/i.key;
        templates matter-noc;
    }
$1} or die;
        $bad =~ s{(\n(\s*)location = /matter/noc \{)}{
$2location = /matter/noc-mail {
$2    matter_noc mail-icac matter-noc;
$2}
$1} or die;
        ($ok, $out) = $t->nginx_test($t->write_conf($bad,
                                                    'matter-bad3.conf'));
        ok(!$ok && $out =~ /\[emerg\].*CA "mail-icac": the (?:ICAC|RCAC) /,
           'matter_noc under an RCAC with an emailAddress: refused by '
           . 'nginx -t') or diag($out);
        # and that RCAC as the CA itself
        $bad =~ s{certificate $d/i\.pem;\s*chain \S+\s*key $d/i\.key;}
                 {certificate $d/r.pem;\n        key $d/r.key;} or die;
        ($ok, $out) = $t->nginx_test($t->write_conf($bad,
                                                    'matter-bad4.conf'));
        ok(!$ok && $out =~ /\[emerg\].*CA "mail-icac": the RCAC does not /,
           'matter_noc under that RCAC itself: refused by nginx -t')
            or diag($out);
    }
    # a CA that issues DACs is a PAI agreeing with its DAC templates, or
    # nginx -t refuses it; these were all taken and found out request by
    # request: the PAA as the CA issued and recorded DACs no commissioner
    # takes, the others answered 400 to every request, or (a P-384 PAI)
    # signed every DAC of a batch before refusing it
    {
        my $d = "$dir/daccas";
        mkdir $d;
        my $ext = "basicConstraints=critical,CA:TRUE,pathlen:%d\n"
                  . "keyUsage=critical,keyCertSign,cRLSign\n"
                  . "subjectKeyIdentifier=hash\n"
                  . "authorityKeyIdentifier=keyid:always\n";
        PKITest::spew("$d/x.cnf", "oid_section = oids\n[oids]\n"
            . "matterVID = 1.3.6.1.4.1.37244.2.1\n"
            . "matterPID = 1.3.6.1.4.1.37244.2.2\n"
            . "[req]\ndistinguished_name = dn\n[dn]\n"
            . "[paa]\n" . sprintf($ext, 1) . "[pai]\n" . sprintf($ext, 0));
        my $pai = sub {
            my ($name, $subj, $curve) = @_;
            return " && openssl ecparam -name $curve -genkey -noout"
                . " -out $name.key && openssl req -new -utf8 -config x.cnf"
                . " -key $name.key -subj '$subj' -out $name.csr"
                . " && openssl x509 -req -in $name.csr -CA paa.pem"
                . ' -CAkey paa.key -sha256 -days 300 -set_serial 7'
                . " -extfile x.cnf -extensions pai -out $name.pem"
                . " && cat $name.pem paa.pem > $name-chain.pem";
        };
        my ($rc, $out, $err) = run_cmd(['sh', '-c', "cd $d"
            . ' && openssl ecparam -name prime256v1 -genkey -noout'
            . ' -out paa.key && openssl req -new -x509 -utf8 -key paa.key'
            . " -sha256 -days 365 -subj '/CN=Other PAA/matterVID=FFF1'"
            . ' -config x.cnf -extensions paa -set_serial 1 -out paa.pem'
            . $pai->('nopid', '/CN=PAI without PID/matterVID=FFF1',
                     'prime256v1')
            . $pai->('p384', '/CN=P-384 PAI/matterVID=FFF1/matterPID=8000',
                     'secp384r1')
            . $pai->('rdn6', '/O=Acme/OU=Devices/L=Town/ST=State/CN=PAI'
                     . '/matterVID=FFF1/matterPID=8000', 'prime256v1')
            . join('', map {
                  " && openssl ecparam -name prime256v1 -genkey -noout"
                  . " -out $_->[0].key && openssl req -new -x509 -utf8"
                  . " -key $_->[0].key -sha256 -days 365 -subj '$_->[1]'"
                  . " -config x.cnf -extensions paa -set_serial 2"
                  . " -out $_->[0].pem" }
                  ['cnvid', '/CN=Legacy PAI Mvid:FFF1 Mpid:8000'],
                  ['novid', '/CN=PAA without VID'])]);
        die "PAIs: $err" if $rc != 0;
        (my $paakey) = $c2 =~ m{pki_ca matter-pai \{.*?\n\s*key ("[^"]*");}s
            or die 'no matter-pai key';
        $paakey =~ s/object=matter-pai;/object=matter-paa;/ or die;
        my $tmpl = "
    pki_template dac-8000 {
        matter dac;
        matter_pid 8000;
    }
    pki_template dac-fff2 {
        matter dac;
        matter_vid FFF2;
    }
    pki_template dac-cn {
        matter dac;
        subject CN fixed \"Widget Mvid:FFF2\";
    }
";
        my $ca = sub {
            my ($name, $cert, $chain, $key, $tmpls) = @_;
            return "
    pki_ca $name {
        certificate $cert;" . ($chain ? "
        chain $chain;" : '') . "
        key $key;
        templates $tmpls;
    }
";
        };
        my @cases = (
            ['the PAA as the CA of DACs (matter_pid 8000)',
             $ca->('paa-dac', "$m/paa.pem", undef, $paakey, 'dac-8000'),
             'paa-dac',
             'template "dac-8000": CA "paa-dac" issues Matter DACs but its '
             . 'certificate is not a PAI: Matter pai basicConstraints: PAI '
             . 'pathLenConstraint must be present and 0'],
            ['matter_vid FFF2 under the PAI of VID FFF1',
             $ca->('pai-fff2', "$m/pai.pem", "$m/pai-chain.pem",
                   $paakey =~ s/matter-paa/matter-pai/r, 'dac-fff2'),
             'pai-fff2',
             'template "dac-fff2" under CA "pai-fff2": Matter dac: '
             . 'template VID FFF2 differs from the PAI VID FFF1'],
            ['a fixed CN whose Mvid: is not the PAI VID',
             $ca->('pai-cn', "$m/pai.pem", "$m/pai-chain.pem",
                   $paakey =~ s/matter-paa/matter-pai/r, 'dac-cn'),
             'pai-cn',
             'template "dac-cn" under CA "pai-cn": the fixed CN\'s '
             . 'Mvid:/Mpid: differs from the DAC VID FFF1 / PID 8000'],
            ['a PAI without a PID and no matter_pid',
             $ca->('nopid', "$d/nopid.pem", "$d/nopid-chain.pem",
                   "$d/nopid.key", 'matter-dac'),
             'nopid',
             'template "matter-dac" under CA "nopid": Matter dac: the PAI '
             . 'has no PID and template "matter-dac" sets no matter_pid'],
            ['a PAI with a P-384 key',
             $ca->('p384', "$d/p384.pem", "$d/p384-chain.pem",
                   "$d/p384.key", 'dac-8000'),
             'p384',
             'CA "p384" issues Matter DACs but its certificate is not a '
             . 'PAI: Matter pai public key: must be EC P-256'],
            # every DAC's issuer: more than 5 RDNs, each request refused
            ['a PAI whose subject has 7 RDNs',
             $ca->('rdn6', "$d/rdn6.pem", "$d/rdn6-chain.pem",
                   "$d/rdn6.key", 'matter-dac'),
             'rdn6',
             'template "matter-dac": the subject of CA "rdn6" (a Matter '
             . 'PAI), the issuer of every DAC, breaks a Matter rule: more '
             . 'than 5 RDNs'],
            # an ordinary template on a PAI whose VID/PID is only in
            # its CN, which commissioners read: it would sign DACs
            ['a CA with Mvid:/Mpid: in its CN, an ordinary template',
             $ca->('cnvid', "$d/cnvid.pem", undef, "$d/cnvid.key",
                   'device'),
             'cnvid',
             'template "device" is not a Matter template, but CA "cnvid" '
             . 'is a Matter CA'],
            # a PAA need not have a VID: its templates tell
            ['a PAA without a VID, a PAI template and an ordinary one',
             $ca->('novid', "$d/novid.pem", undef, "$d/novid.key",
                   'matter-pai device'),
             'novid',
             'CA "novid" has the Matter template "matter-pai" and the '
             . 'non-Matter template "device"'],
            ['a PAI whose chain holds another PAA',
             $ca->('otherpaa', "$d/nopid.pem", "$m/pai-chain.pem",
                   "$d/nopid.key", 'dac-8000'),
             'otherpaa',
             'the chain of CA "otherpaa" (a Matter PAI) does not hold '
             . 'the PAA that issued it'],
        );
        for my $c (@cases) {
            my ($name, $block, $caname, $want) = @$c;
            ($bad = $c2) =~ s{(\n\s*pki_ca matter-pai \{)}{$tmpl$block$1}
                or die;
            my $file = $t->write_conf($bad, 'matter-dacca.conf');
            ($ok, $out) = $t->nginx_test($file);
            my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
            ok(!$ok && index($emerg // '', $want) >= 0,
               "$name: refused by nginx -t")
                or diag($out);
            my ($f, $line) = ($emerg // '') =~ / in (\S+):(\d+)\s*$/;
            my @l = split /\n/, $bad;
            my ($from) = grep { $l[$_] =~ /^\s*pki_ca \Q$caname\E \{/ }
                         0 .. $#l;
            ok(defined $line && ($f // '') eq $file && defined $from
               && $line > $from && $line <= $from + 7,
               "$name: names the file and the pki_ca block's line")
                or diag($emerg // $out);
        }
        # a PAI without a PID under a template that sets one, and the
        # demo's own: taken
        ($bad = $c2) =~ s{(\n\s*pki_ca matter-pai \{)}{$tmpl
    pki_ca nopid {
        certificate $d/nopid.pem;
        chain $d/nopid-chain.pem;
        key $d/nopid.key;
        templates dac-8000;
    }
$1} or die;
        ($ok, $out) = $t->nginx_test($t->write_conf($bad,
                                                    'matter-dacok.conf'));
        ok($ok, 'a PAI without a PID, template matter_pid 8000: nginx -t '
           . 'passes') or diag($out);
        ($ok, $out) = $t->nginx_test($t->write_conf($conf,
                                                    'matter-demo.conf'));
        ok($ok, 'the demo configuration passes nginx -t') or diag($out);
    }
    $t->start_nginx($c2);
    my ($csr) = $t->make_csr('fixedcn', subj => '/CN=attacker chosen name');
    my $r = post_json('/matter/dac/fixed',
                      { csrs => [ encode_base64($csr, '') ] });
    is($r->{code}, 200, 'DAC under "subject CN fixed": 200')
        or diag($r->{body});
    my $f = der_file(decode_base64($r->{json}{certificates}[0] // ''),
                     'fixedcn');
    like($t->x509_field($f, 'subject') // '', qr/CN\s*=\s*Acme Widget DAC/,
         '... with the fixed CN, not the CSR\'s');
    # server keygen: the same rule (it used to give "Matter DAC")
    $r = post_json('/matter/dac/fixed', { count => 1 });
    is($r->{code}, 200, 'keygen DAC under "subject CN fixed": 200')
        or diag($r->{body});
    $f = der_file(decode_base64($r->{json}{certificates}[0] // ''),
                  'fixedkg');
    like($t->x509_field($f, 'subject') // '', qr/CN\s*=\s*Acme Widget DAC/,
         '... with the fixed CN');
    attest_ok($f, 'keygen DAC with the fixed CN');
    $t->stop_nginx;
    $t->start_nginx($conf);
}

# --- pkictl matter verify-attestation: a malformed Mvid: beside the VID ------

# PAA -> PAI -> DAC made with openssl alone, the DACs with VID and PID
# attributes and a CN: "Widget" passes; "Widget Mvid:fff1" fails, as the
# SDK fails it (CHIP_ERROR_WRONG_CERT_DN), where it used to pass since the
# attributes are there; both pass openssl verify -x509_strict
{
    my $d = "$dir/cnvid";
    mkdir $d;
    my $ext = "basicConstraints=critical,CA:%s\n"
              . "keyUsage=critical,%s\n"
              . "subjectKeyIdentifier=hash\n"
              . "authorityKeyIdentifier=keyid:always\n";
    # (openssl req skips a dotted OID in -subj: the names come from here)
    PKITest::spew("$d/x.cnf", "oid_section = oids\n[oids]\n"
        . "matterVID = 1.3.6.1.4.1.37244.2.1\n"
        . "matterPID = 1.3.6.1.4.1.37244.2.2\n"
        . "[req]\ndistinguished_name = dn\n[dn]\n"
        . "[paa]\n" . sprintf($ext, 'TRUE,pathlen:1', 'keyCertSign,cRLSign')
        . "[pai]\n" . sprintf($ext, 'TRUE,pathlen:0', 'keyCertSign,cRLSign')
        . "[dac]\n" . sprintf($ext, 'FALSE', 'digitalSignature'));
    my ($vid, $pid) = ('matterVID', 'matterPID');
    my $sign = sub {
        my ($name, $subj, $ca, $ext, $serial) = @_;
        return " && openssl req -new -utf8 -config x.cnf -key $name.key"
            . " -subj '$subj'"
            . " -out $name.csr && openssl x509 -req -in $name.csr"
            . " -CA $ca.pem -CAkey $ca.key -sha256 -days 300"
            . " -set_serial $serial -extfile x.cnf -extensions $ext"
            . " -out $name.pem";
    };
    my ($rc, $out, $err) = run_cmd(['sh', '-c', "cd $d"
        . ' && for k in paa pai good bad; do openssl ecparam -name'
        . ' prime256v1 -genkey -noout -out $k.key || exit 1; done'
        . ' && openssl req -new -x509 -utf8 -key paa.key -sha256 -days 365'
        . " -subj '/CN=Test PAA/$vid=FFF1' -config x.cnf -extensions paa"
        . ' -set_serial 1 -out paa.pem'
        . $sign->('pai', "/CN=Test PAI/$vid=FFF1", 'paa', 'pai', 2)
        . $sign->('good', "/CN=Widget/$vid=FFF1/$pid=8000", 'pai', 'dac', 3)
        . $sign->('bad', "/CN=Widget Mvid:fff1/$vid=FFF1/$pid=8000", 'pai',
                  'dac', 4)]);
    die "openssl chain: $err" if $rc != 0;
    for my $c (['good', 0], ['bad', 1]) {
        my ($name, $fails) = @$c;
        ($rc, $out, $err) = run_cmd([$pkictl, 'matter', 'verify-attestation',
                                     '--dac', "$d/$name.pem", '--pai',
                                     "$d/pai.pem", '--paa', "$d/paa.pem"]);
        if ($fails) {
            ok($rc != 0 && "$out$err" =~ /Mvid: in the CN not followed by 4 /,
               'verify-attestation: CN "Widget Mvid:fff1" beside the VID/PID '
               . 'attributes fails') or diag("$rc $out$err");
        } else {
            is($rc, 0, 'verify-attestation: CN "Widget" beside the VID/PID '
               . 'attributes passes') or diag("$out$err");
        }
        strict_ok("$d/$name.pem", "$d/paa.pem", "$d/pai.pem",
                  "CN test DAC $name");
    }

    # a PAA whose VID FFF2 is only in its CN (Mvid:) over a PAI of VID
    # FFF1: kPaiVendorIdMismatch, as the issuing side judges that PAI; it
    # used to pass (the PAA's VID was taken only from the attribute)
    ($rc, $out, $err) = run_cmd(['sh', '-c', "cd $d"
        . ' && for k in paa2 pai2 dac2; do openssl ecparam -name'
        . ' prime256v1 -genkey -noout -out $k.key || exit 1; done'
        . ' && openssl req -new -x509 -utf8 -key paa2.key -sha256'
        . " -days 365 -subj '/CN=Test PAA Mvid:FFF2' -config x.cnf"
        . ' -extensions paa -set_serial 5 -out paa2.pem'
        . $sign->('pai2', "/CN=Test PAI/$vid=FFF1", 'paa2', 'pai', 6)
        . $sign->('dac2', "/CN=Widget/$vid=FFF1/$pid=8000", 'pai2', 'dac',
                  7)]);
    die "openssl CN-VID PAA: $err" if $rc != 0;
    strict_ok("$d/dac2.pem", "$d/paa2.pem", "$d/pai2.pem",
              'DAC under the CN-VID PAA');
    ($rc, $out, $err) = run_cmd([$pkictl, 'matter', 'verify-attestation',
                                 '--dac', "$d/dac2.pem", '--pai',
                                 "$d/pai2.pem", '--paa', "$d/paa2.pem"]);
    ok($rc != 0 && "$out$err" =~ /kPaiVendorIdMismatch: PAA VID FFF2 != PAI /,
       'verify-attestation: a PAA with CN "Mvid:FFF2" (no VID attribute) '
       . 'over a PAI of VID FFF1 fails') or diag("$rc $out$err");

    # the declaration's options alone: refused with the rule (--cd-signer
    # and --pid alone were dropped and "OK" printed; --cd alone failed
    # without a word; --pid zz was read as 0)
    my @chain = ('--dac', "$d/dac2.pem", '--pai', "$d/pai2.pem", '--paa',
                 "$d/paa2.pem");
    for my $c (['--cd alone', qr/--cd and --cd-signer go together/,
                '--cd', "$d/dac2.pem"],
               ['--cd-signer alone', qr/--cd and --cd-signer go together/,
                '--cd-signer', "$d/pai2.pem"],
               ['--pid without --cd', qr/and --pid with them/,
                '--pid', '8000'],
               ['--pid zz', qr/bad --pid: 1 to 4 hex digits/, '--cd',
                "$d/dac2.pem", '--cd-signer', "$d/pai2.pem", '--pid', 'zz'])
    {
        my ($name, $re, @a) = @$c;
        ($rc, $out, $err) = run_cmd([$pkictl, 'matter', 'verify-attestation',
                                     @chain, @a]);
        ok($rc != 0 && $out !~ /OK/ && $err =~ $re,
           "verify-attestation $name: refused, the rule on stderr")
            or diag("$rc $out$err");
    }
}

# --- a DAC over the DER size: the batch is refused before anything is signed

# The DER size limit (600 bytes) is judged before signing, by the longest
# signature the PAI key can make: with a CRL URL in the DACs, a 64-character
# CN goes over it, a short one does not.  A batch of three short CNs and a
# long one: 400 naming the rule, no serial reserved, nothing signed or
# recorded (the DACs before it used to be signed, recorded and revoked).
{
    $t->stop_nginx;
    (my $c2 = $conf) =~ s{(templates matter-dac;)}
        {$1\n        crl_url http://crl.example.com/pppppppppp.crl;} or die;
    $t->start_nginx($c2);
    my @csrs;
    for my $cn ('short-1', 'short-2', 'short-3', 'x' x 64) {
        my ($csr) = $t->make_csr('w' . scalar @csrs, subj => "/CN=$cn");
        push @csrs, encode_base64($csr, '');
    }
    my @before = $t->state_keys;
    my $r = post_json('/matter/dac/batch', { csrs => \@csrs });
    is($r->{code}, 400, 'batch with a DAC over the DER size: 400');
    like($r->{body}, qr/larger than 600 bytes once signed/,
         '... naming the rule, judged before signing');
    is_deeply([ $t->state_keys ], \@before,
              '... no serial reserved, no record written');
    unlike(slurp($t->error_log) // '', qr/the failed batch had issued/,
           '... nothing issued to withdraw');

    # one DAC alone, through EST: refused alike, before signing
    my ($long) = $t->make_csr('w-est', subj => '/CN=' . ('y' x 64));
    $r = $t->est_post('simpleenroll', $long, label => 'matter-dac',
                      quiet => 1);
    isnt($r->{code}, 200, "one DAC over the DER size through EST: $r->{code}");
    is_deeply([ $t->state_keys ], \@before, '... nothing recorded');
    like(slurp($t->error_log) // '', qr/larger than 600 bytes once signed/,
         '... the error log names the rule');
    my ($short) = $t->make_csr('w-est2', subj => '/CN=short-4');
    $r = $t->est_post('simpleenroll', $short, label => 'matter-dac',
                      quiet => 1);
    is($r->{code}, 200, 'a short CN under the same CA: issued');
}

# --- a transaction log that does not open: the batch is refused up front ----

# A worker whose log does not open (audit.lock cannot be opened, as in
# t/audit.t) refuses a batch as it refuses one DAC (503): nothing reserved,
# signed or recorded, where the batch used to be signed and committed, then
# withheld and revoked.
{
    $t->stop_nginx;
    my $fc = "$dir/audit-closed";
    mkdir $fc;
    mkdir "$fc/audit.lock";
    (my $c2 = $t->render_conf('--audit', $fc))
        =~ s{ocsp_responder issuing;}{ocsp_responder issuing matter-pai;};
    $t->start_nginx($c2);

    my @csrs;
    for my $i (1 .. 3) {
        my ($csr) = $t->make_csr("closed$i", subj => "/CN=closed $i");
        push @csrs, encode_base64($csr, '');
    }
    my @before = $t->state_keys;
    my $r = post_json('/matter/dac/batch', { csrs => \@csrs });
    is($r->{code}, 503, 'log not open: batch answers 503') or diag($r->{body});
    is($r->{json}{error}, 'transaction log unavailable', '... saying why');
    $r = post_json('/matter/dac/batch', { count => 2 });
    is($r->{code}, 503, 'log not open: keygen batch answers 503');
    is_deeply([ $t->state_keys ], \@before,
              '... no serial reserved, no record written');

    my ($csr) = $t->make_csr('closed-est', subj => '/CN=closed est');
    $r = $t->est_post('simpleenroll', $csr, label => 'matter-dac',
                      quiet => 1);
    is($r->{code}, 503, 'one DAC through EST: 503 as well');

    # (start_nginx began a new error log)
    my $el = slurp($t->error_log) // '';
    my $why = 'transaction log unavailable (transaction log: not open; '
              . 'batch of 3 refused';
    like($el, qr/\[error\].*matter: request from .* failed: \Q$why\E/,
         '... and the error log says why') or diag($el);
    unlike($el, qr/failed batch had issued|could not be revoked/,
           '... nothing to withdraw');
    $t->stop_nginx;
}

# --- the thread pool's queue full: 503 in the API's form --------------------

# One thread and a queue of one: of several batches sent at once, those
# that find the queue full are answered at once with the JSON error and
# Retry-After (they used to get an empty body and an empty log detail).
{
    (my $c2 = $conf) =~ s{thread_pool pki threads=\d+ max_queue=\d+;}
                         {thread_pool pki threads=1 max_queue=1;}
        or die 'no thread_pool';
    $t->start_nginx($c2);
    my $u = url('/matter/dac/batch');
    my $n = 8;
    my $cmd = join(' ', map {
        "curl -sk -m 120 -u demo:demo -H 'Content-Type: application/json'"
        . " --data-binary '{\"count\":300}' -o $dir/busy$_.body"
        . " -D $dir/busy$_.hdr $u &" } 1 .. $n) . ' wait';
    my ($rc, $out, $err) = run_cmd(['sh', '-c', $cmd], timeout => 300);
    my ($shed, $good, $form) = (0, 0, 0);
    for my $i (1 .. $n) {
        my $hdr = slurp("$dir/busy$i.hdr") // '';
        my $body = slurp("$dir/busy$i.body") // '';
        my ($code) = $hdr =~ m{^HTTP/\S+ (\d+)};
        $good++ if ($code // 0) == 200;
        next if ($code // 0) != 503;
        $shed++;
        $form++ if $hdr =~ m{^content-type: application/json}mi
                   && $hdr =~ /^retry-after: \d+/mi
                   && $body eq qq({"error":"busy, retry later"}\n);
    }
    ok($shed > 0 && $good > 0, "queue full: $shed of $n shed, $good issued");
    is($form, $shed, '... every 503 with the JSON error and Retry-After');
    like(slurp($t->error_log) // '',
         qr/matter: request from \S+ failed: busy, retry later \(thread /,
         '... and the error log says why');
    $t->stop_nginx;
}

# --- matter_identity --------------------------------------------------------------

# a factory line that authenticates by other means names its operator with
# matter_identity (here a header): that name is the record's requester.
# Without auth_basic and without matter_identity nobody is named: 403.
{
    (my $c3 = $conf) =~ s{(\n\s*location = /matter/noc \{)}{
        location = /matter/noc-line {
            matter_noc matter-icac matter-noc;
            matter_identity \$http_x_line_operator;
        }
        location = /matter/noc-open {
            matter_noc matter-icac matter-noc;
        }
$1} or die 'no /matter/noc location';
    $t->start_nginx($c3);

    my ($csr) = $t->make_csr('nocsr-id', subj => '/O=CSR/OU=CSA');
    my %req = (csr => encode_base64($csr, ''), node_id => 'DEDEDEDE00020001',
               fabric_id => 'FAB000000000001D');
    my $noc = sub {
        my ($path, @h) = @_;
        my $r = $t->curl('POST', url($path), data => $json->encode(\%req),
                         headers => [ 'Content-Type: application/json', @h ],
                         max_time => 60);
        $r->{json} = eval { $json->decode($r->{body}) }
            if $r->{body} =~ /^\{/;
        return $r;
    };
    my $issued = sub {
        my $n = $t->redis('EVAL', "return #redis.call('KEYS', "
                          . "'pki:{ca:matter-icac}:cert:*')", 0);
        return $n =~ /(\d+)/ ? $1 : -1;
    };

    my $before = $issued->();
    my $r = $noc->('/matter/noc-line', 'X-Line-Operator: line-7');
    is($r->{code}, 200, 'matter_identity from a header: 200')
        or diag($r->{body});
    my $serial;
    if (($r->{json} || {})->{noc}) {
        my $f = der_file(decode_base64($r->{json}{noc}), 'noc-line');
        $serial = $t->x509_field($f, 'serial');
    }
    my $h = $serial ? $t->redis_hash("pki:{ca:matter-icac}:cert:$serial")
                    : {};
    is($h->{requester}, 'line-7', '  the record names that operator');

    $before = $issued->();
    $r = $noc->('/matter/noc-line');
    is($r->{code}, 403, 'matter_identity empty (no header): 403');
    $r = $noc->('/matter/noc-open');
    is($r->{code}, 403, 'neither auth_basic nor matter_identity: 403');
    like($r->{json}{error} // '', qr/\S/, '  with the JSON error');
    is($issued->(), $before, '  nothing issued for either');
    $t->stop_nginx;
}

done_testing();
