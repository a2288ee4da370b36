#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# Configuration errors surface at `nginx -t` with an [emerg] line naming
# the problem and "in <file>:<line>".

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;
use IO::Socket::INET;
use Time::HiRes qw(time);

my $t = PKITest->new;
my $base = $t->render_conf;
my $pki = $t->pki;

my ($ok, $out) = $t->nginx_test($t->write_conf($base, 'good.conf'));
ok($ok, 'the shared config passes nginx -t') or diag($out);
unlike($out, qr/certificate expires in/, '  its CAs (years left): no expiry '
       . 'warning') or diag($out);

{
    # an LDAP distribution point and issuer URL (RFC 5280 4.2.1.13,
    # 4.2.2.1) are taken; only OCSP is HTTP alone
    (my $conf = $base) =~ s{crl_url http://\S+;}{crl_url "ldap://ldap.example/cn=Issuing%20CA?certificateRevocationList;binary";};
    $conf =~ s{ca_issuers_url http://\S+;}{ca_issuers_url ldap://ldap.example/cn=Issuing;};
    my ($ok, $out) = $t->nginx_test($t->write_conf($conf, 'ldap.conf'));
    ok($ok, 'crl_url and ca_issuers_url ldap:// pass nginx -t')
        or diag($out);
}

my $wrongpin = $t->dir . '/wrong.pin';
spew($wrongpin, "99999999\n");
chmod 0600, $wrongpin;

# a CA certificate whose keyUsage has keyCertSign but not cRLSign (key in
# a file), and the shared chain in another order (the root first)
my $dir = $t->dir;
openssl_or_die('req', '-x509', '-newkey', 'ec', '-pkeyopt',
    'ec_paramgen_curve:P-256', '-nodes', '-keyout', "$dir/nocrl.key",
    '-subj', '/CN=CA without cRLSign', '-days', '20',
    '-addext', 'basicConstraints=critical,CA:TRUE',
    '-addext', 'keyUsage=critical,keyCertSign',
    '-out', "$dir/nocrl.pem");
spew("$dir/chain-reversed.pem",
     slurp("$pki/root.pem") . slurp("$pki/issuing.pem"));
my $nocrl_ca = <<"T";
    pki_ca nocrl {
        certificate $dir/nocrl.pem;
        key $dir/nocrl.key;
        crl_url http://127.0.0.1/crl/nocrl.crl;
    }
T

{
    # without a crl_url that CA is taken (it publishes no CRL)
    (my $conf = $base) =~ s/(    pki_ca issuing \{)/$nocrl_ca\n$1/;
    $conf =~ s/\n\s*crl_url \S+nocrl\.crl;//;
    my ($ok, $out) = $t->nginx_test($t->write_conf($conf, 'nocrl.conf'));
    ok($ok, 'a CA without cRLSign and without crl_url passes nginx -t')
        or diag($out);
    unlike($out, qr/other users/, 'its key file (0600): no warning')
        or diag($out);
    # 20 days of validity (19 and some, once a second has passed), under
    # the 30 days
    like($out, qr/\[warn\] \d+#\d+: pki_ca "nocrl": its certificate expires in (?:19|20) day\(s\), at \d{4}-\d\d-\d\d \d\d:\d\d:\d\d UTC; from then on the CA issues nothing: renew it .* in \S+nocrl\.conf:\d+/,
         'a CA certificate with 20 days left: nginx -t warns, with the date')
        or diag($out);
    unlike($out, qr/pki_ca "issuing": its certificate expires/,
           '  not for the CA with years left') or diag($out);

    # the same key file readable by others: taken, with a warning
    chmod 0644, "$dir/nocrl.key";
    ($ok, $out) = $t->nginx_test($t->write_conf($conf, 'nocrl.conf'));
    ok($ok && $out =~ /\[warn\].*key file "\Q$dir\/nocrl.key\E" may be /
       && $out =~ /read by other users \(mode 0644\)/,
       'a key file others may read: nginx -t warns') or diag($out);
    chmod 0600, "$dir/nocrl.key";
}

{
    # EST and SCEP serve the chain as a set, ACME leaves the roots out:
    # the root first is taken
    (my $conf = $base) =~
        s/\bchain \S+chain\.pem;/chain $dir\/chain-reversed.pem;/;
    my ($ok, $out) = $t->nginx_test($t->write_conf($conf, 'rev.conf'));
    ok($ok, 'a chain with the root first passes nginx -t') or diag($out);
}

my $extra_tmpl = <<'T';
    pki_template other {
        key_types ec:P-256;
        subject CN copy;
        validity 1d;
        extended_key_usage clientAuth;
    }
T

# RFC 8410 5: an Ed25519 key's keyUsage needs a signing bit
my $ed_tmpl = <<'T';
    pki_template edonly {
        key_types ed25519;
        subject CN copy;
        key_usage keyAgreement;
    }
T

# ACME validates names only: a template an ACME location issues with may
# copy no subject attribute but CN from the request (a fixed one is the
# template's own)
my $ou_tmpl = <<'T';
    pki_template ourequired {
        key_types ec:P-256;
        subject CN copy;
        subject OU required;
        san dns copy;
        validity 1d;
    }
T
my $org_tmpl = <<'T';
    pki_template orgfixed {
        key_types ec:P-256;
        subject O fixed "Example Inc";
        subject CN copy;
        san dns copy;
        validity 1d;
    }
T

{
    (my $conf = $base) =~ s/(    pki_ca issuing \{)/$org_tmpl\n$1/;
    $conf =~ s/(templates acme;)/$1\n        templates orgfixed;/;
    $conf =~ s/(acme_profile shortlived [^;]*;)/$1\n            acme_profile org orgfixed;/;
    my ($ok, $out) = $t->nginx_test($t->write_conf($conf, 'orgfixed.conf'));
    ok($ok, 'an ACME profile whose template fixes O (and copies CN) passes '
       . 'nginx -t') or diag($out);
}

# name, edit, expected message regex, the block(s) the line must lie in
# a location whose cap is over the whole budget: its bodies over the
# budget always get 503; nginx -t warns (it said nothing)
{
    (my $c = $base)
        =~ s/(\n(\s*)pki_redis [^\n]*\n)/$1$2pki_body_memory 8k;\n/
        or die 'no pki_redis line';
    my ($ok, $out) = $t->nginx_test($t->write_conf($c, 'budget.conf'));
    ok($ok, 'pki_body_memory below a location\'s body cap: nginx -t passes')
        or diag($out);
    like($out, qr/\[warn\].*takes request bodies of up to \d+ bytes, (?x:
                  )more than "pki_body_memory" \(8192\)/,
         '... with a warning') or diag($out);
}

# a mistyped parameter of pki_redis (password= for password_file=): its
# value, maybe the password, stays out of the output (it was printed)
{
    (my $c = $base) =~ s/(\n\s*pki_redis [^;\n]*);/$1 password=s3cretXYZ;/
        or die 'no pki_redis line';
    my ($ok, $out) = $t->nginx_test($t->write_conf($c, 'redispw.conf'));
    ok(!$ok, 'pki_redis password=...: nginx -t fails');
    like($out, qr/\[emerg\].*invalid parameter "password=\.\.\."/,
         '... naming the parameter') or diag($out);
    unlike($out, qr/s3cretXYZ/, '... not its value');
}

# nginx -t contacts each Redis store once and warns (exit 0) when it does
# not answer, with the cause; a store that answers adds no warning (nginx
# -t said nothing: every request then answered 503)
{
    $t->start_redis_with('--appendonly', 'yes', '--appendfsync', 'always');
    my $sock = $t->redis_sock;
    my $line_of = sub {
        my ($conf, $re) = @_;
        my @l = split /\n/, $conf;
        my ($i) = grep { $l[$_] =~ $re } 0 .. $#l;
        return defined $i ? $i + 1 : -1;
    };
    # nginx -t on the base config with its pki_redis line edited: (ok,
    # output, the file, the line of pki_redis, seconds taken)
    my $check = sub {
        my ($name, $args) = @_;
        (my $c = $base) =~ s/\n(\s*)pki_redis [^;\n]*;/\n$1pki_redis $args;/
            or die 'no pki_redis line';
        my $file = $t->write_conf($c, "$name.conf");
        my $t0 = time;
        my ($ok, $out) = $t->nginx_test($file);
        return ($ok, $out, $file, $line_of->($c, qr/^\s*pki_redis /),
                time - $t0);
    };
    my $warned = sub {
        my ($out, $addr, $file, $line, $cause) = @_;
        return $out =~ /\[warn\]\ \d+\#\d+:\ pki_redis\ "\Q$addr\E"\ (?x:
                         )does\ not\ answer:\ \Q$cause\E[^\n]*\ (?x:
                         )in\ \Q$file\E:$line$/mx;
    };

    my ($ok, $out, $file, $line, $secs) = $check->('rgood', "unix:$sock");
    ok($ok, 'a store that answers: nginx -t passes') or diag($out);
    unlike($out, qr/\[warn\].*redis/i, '... with no warning about it')
        or diag($out);

    ($ok, $out, $file, $line) = $check->('rnosock', "unix:$sock.typo");
    ok($ok, 'a mistyped socket path: nginx -t passes (exit 0)') or diag($out);
    ok($warned->($out, "unix:$sock.typo", $file, $line, 'no such socket'),
       '... with a warning naming the store, the cause, file and line')
        or diag($out);

    my $port = PKITest::free_port();
    ($ok, $out, $file, $line, $secs) = $check->('rrefused', "127.0.0.1:$port");
    ok($ok, 'a port nobody listens on: nginx -t passes') or diag($out);
    ok($warned->($out, "127.0.0.1:$port", $file, $line,
                 'connection refused'), '... warning "connection refused"')
        or diag($out);
    cmp_ok($secs, '<', 5, sprintf('... at once (nginx -t took %.2f s)', $secs));

    # a listener that never answers: timed out within 1 s whatever the
    # store's timeout
    my $mute = IO::Socket::INET->new(Listen => 5, LocalAddr => '127.0.0.1',
                                     LocalPort => 0, Proto => 'tcp')
        or die "listen: $!";
    my $mport = $mute->sockport;
    ($ok, $out, $file, $line, $secs) =
        $check->('rmute', "127.0.0.1:$mport timeout=30s");
    ok($ok && $warned->($out, "127.0.0.1:$mport", $file, $line, 'timed out'),
       'a server that does not answer: "timed out"') or diag($out);
    cmp_ok($secs, '<', 2.5, sprintf('... within 1 s, not the store\'s 30 s '
                                   . '(nginx -t took %.2f s)', $secs));
    close $mute;

    ($ok, $out, $file, $line) = $check->('rdb', "unix:$sock db=99");
    ok($ok && $warned->($out, "unix:$sock", $file, $line, 'SELECT failed'),
       'db=99 (no such database): "SELECT failed"') or diag($out);

    # a password: wrong, right, none
    my $pw = 'Pw-' . int(rand(1e9)) . 'zQ';
    my $bad = 'Bad-' . int(rand(1e9)) . 'xK';
    spew($t->dir . '/redis.pw', "$pw\n");
    spew($t->dir . '/redis.bad', "$bad\n");
    chmod 0600, $t->dir . '/redis.pw', $t->dir . '/redis.bad';
    $t->redis('CONFIG', 'SET', 'requirepass', $pw);
    ($ok, $out, $file, $line) = $check->('rbadpw', "unix:$sock "
                                         . "password_file=" . $t->dir
                                         . '/redis.bad');
    ok($ok && $warned->($out, "unix:$sock", $file, $line,
                        'authentication failed'),
       'a wrong password: "authentication failed"') or diag($out);
    unlike($out, qr/\Q$bad\E|\Q$pw\E/, '... and no password in the output');
    ($ok, $out) = $check->('rgoodpw', "unix:$sock password_file="
                           . $t->dir . '/redis.pw');
    ok($ok, 'the right password: nginx -t passes') or diag($out);
    unlike($out, qr/\[warn\].*redis/i, '... with no warning') or diag($out);
    unlike($out, qr/\Q$pw\E/, '... nor the password');
    ($ok, $out, $file, $line) = $check->('rnopw', "unix:$sock");
    ok($ok && $warned->($out, "unix:$sock", $file, $line,
                        'authentication required'),
       'no password for a server that wants one: "authentication required"')
        or diag($out);
    run_cmd(['redis-cli', '-s', $sock, '--no-auth-warning', '-a', $pw,
             'CONFIG', 'SET', 'requirepass', '']);

    # what the workers would say, now at nginx -t
    $t->redis('CONFIG', 'SET', 'maxmemory-policy', 'allkeys-lru');
    ($ok, $out, $file, $line) = $check->('revict', "unix:$sock");
    ok($ok && $warned->($out, "unix:$sock", $file, $line,
                        'a maxmemory-policy that evicts')
       && $out =~ /allkeys-lru evicts any key/,
       'maxmemory-policy allkeys-lru: warned') or diag($out);
    $t->redis('CONFIG', 'SET', 'maxmemory-policy', 'noeviction');
    $t->redis('CONFIG', 'SET', 'appendonly', 'no');
    ($ok, $out, $file, $line) = $check->('raof', "unix:$sock");
    ok($ok && $out =~ /\[warn\]\ \d+\#\d+:\ pki_redis\ "unix:\Q$sock\E":\ (?x:
                       )Redis\ runs\ without\ its\ append-only\ file\ .*\ (?x:
                       )in\ \Q$file\E:$line$/mx,
       'appendonly no: the workers\' warning, at nginx -t') or diag($out);
    unlike($out, qr/does not answer/, '... the store answers') or diag($out);
    # the append-only file without appendfsync always (INFO says
    # aof_enabled:1 and nothing was said): warned too
    $t->redis('CONFIG', 'SET', 'appendonly', 'yes');
    $t->redis('CONFIG', 'SET', 'appendfsync', 'everysec');
    ($ok, $out, $file, $line) = $check->('rfsync', "unix:$sock");
    ok($ok && $out =~ /\[warn\]\ \d+\#\d+:\ pki_redis\ "unix:\Q$sock\E":\ (?x:
                       )Redis\ writes\ its\ append-only\ file\ without\ (?x:
                       )appendfsync\ always:\ .*\ in\ \Q$file\E:$line$/mx,
       'appendfsync everysec: warned at nginx -t') or diag($out);
    $t->redis('CONFIG', 'SET', 'appendfsync', 'always');
    $t->redis('CONFIG', 'SET', 'appendonly', 'no');

    # acme_redis: named as such; the store of pki_redis is contacted once
    # and only pki_redis is warned about appendonly no (acme_redis's
    # state may lose its last second)
    for my $acme ("unix:$sock.acme", "unix:$sock namespace=acmestate:") {
        (my $c = $base) =~ s{(\n(\s*)location /acme/ \{\n)}
                             {$1$2    acme_redis $acme;\n}
            or die 'no ACME location';
        $file = $t->write_conf($c, 'racme.conf');
        my $aline = $line_of->($c, qr/^\s*acme_redis /);
        my $conns = sub {
            ($t->redis('INFO', 'stats')
                =~ /total_connections_received:(\d+)/)[0]
        };
        my $c0 = $conns->();
        ($ok, $out) = $t->nginx_test($file);
        # the second redis-cli, and nginx -t's
        my $contacts = $conns->() - $c0 - 1;
        my $warns = () = $out =~ /\[warn\]/g;
        if ($acme =~ /\.acme$/) {
            ok($ok && $out =~ /\[warn\]\ \d+\#\d+:\ acme_redis\ (?x:
                               )"unix:\Q$sock\E\.acme"\ does\ not\ answer:\ (?x:
                               )no\ such\ socket.*\ in\ \Q$file\E:$aline$/mx
               && $warns == 2,
               'acme_redis at a missing socket: warned as acme_redis (and '
               . 'appendonly no for pki_redis)') or diag($out);
        } else {
            ok($ok && $warns == 1 && $out =~ /pki_redis.*appendonly no/,
               'acme_redis on the store of pki_redis: one appendonly '
               . 'warning, for pki_redis') or diag($out);
            is($contacts, 1, '... and nginx -t contacted that store once');
        }
    }
    $t->redis('CONFIG', 'SET', 'appendonly', 'yes');
}

my @cases = (
    # below a body's first buffer: every POST would get 503 (it passed)
    ['pki_body_memory below 4k',
     sub { s/(\n(\s*)pki_redis [^\n]*\n)/$1$2pki_body_memory 1k;\n/ },
     qr/"pki_body_memory" directive is below 4k/, [qr{^http}]],
    ['unknown CA in est',
     sub { s/est issuing device;/est nosuchca device;/ },
     qr/nosuchca/, [qr{location /\.well-known/est/}]],
    ['unknown template in est',
     sub { s/est issuing device;/est issuing nosuchtmpl;/ },
     qr/nosuchtmpl/, [qr{location /\.well-known/est/}]],
    ['template not allowed by the CA',
     sub { s/(    pki_ca issuing \{)/$extra_tmpl\n$1/;
           s/est issuing device;/est issuing other;/ },
     qr/CA "issuing" does not allow template "other" \(list it in "templates" of pki_ca "issuing"\)/,
     [qr{location /\.well-known/est/}]],
    ['pki_ca name with a character outside the name alphabet',
     sub { s/pki_ca issuing \{/pki_ca "is:suing" {/ },
     qr/invalid pki_ca name "is:suing" \(1-63 of A-Z a-z 0-9 \. _ -\)/,
     [qr{^http}]],
    ['pki_ca name of 64 bytes',
     sub { my $n = 'c' x 64; s/pki_ca issuing \{/pki_ca $n {/ },
     qr/invalid pki_ca name "c{64}"/, [qr{^http}]],
    ['template validity beyond the CA max_validity',
     sub { s/max_validity 365d;/max_validity 1d;/ },
     qr/exceeds the max_validity/, [qr{pki_ca issuing}, qr{^http}]],
    ['unknown template in pki_ca templates',
     sub { s/templates device server;/templates device nosuchtmpl;/ },
     qr/nosuchtmpl/, [qr{pki_ca issuing}, qr{^http}]],
    ['unreadable key file',
     sub { s/key "pkcs11:[^"]*";/key "$pki\/no-such-key.pem";/ },
     qr/no-such-key\.pem/, [qr{pki_ca issuing}]],
    ['wrong PIN in the PIN file',
     sub { s/pin_file \S+;/pin_file $wrongpin;/ },
     qr/PIN/i, [qr{pki_key_vault}, qr{pki_ca issuing}]],
    ['missing certificate file',
     sub { s/certificate \S+issuing\.pem;/certificate $pki\/missing.pem;/ },
     qr/missing\.pem/, [qr{pki_ca issuing}]],
    ['alternate_chain whose first certificate is not the CA',
     sub { s/alternate_chain \S+;/alternate_chain $pki\/root.pem;/ },
     qr/alternate chain "\Q$pki\E\/root\.pem" does not have the subject/,
     [qr{pki_ca issuing}]],
    ['chain holding a root that did not issue the CA certificate',
     sub { s/\bchain \S+chain\.pem;/chain $pki\/altroot.pem;/ },
     qr/no certificate of CA chain "\Q$pki\E\/altroot\.pem" issued the CA certificate/,
     [qr{pki_ca issuing}]],
    # revocation and issuer URLs a relying party fetches while it
    # validates: plain http (an https one may loop), ldap where RFC 5280
    # has it (not for OCSP)
    ['crl_url over https',
     sub { s{crl_url http://}{crl_url https://} },
     qr/invalid URL "https:\/\/127\.0\.0\.1:\d+\/crl\/issuing\.crl" in "crl_url": it must be an http:\/\/ URL, not https:\/\/.*may loop/,
     [qr{pki_ca issuing}]],
    ['ocsp_url over https',
     sub { s{ocsp_url http://}{ocsp_url https://} },
     qr/invalid URL "https:\/\/[^"]+\/ocsp" in "ocsp_url": it must be an http:\/\/ URL, not https:\/\//,
     [qr{pki_ca issuing}]],
    ['ocsp_url over ldap',
     sub { s{ocsp_url http://\S+;}{ocsp_url ldap://ldap.example/cn=ocsp;} },
     qr/invalid URL "ldap:\/\/ldap\.example\/cn=ocsp" in "ocsp_url": it must be an http:\/\/ URL \(RFC 6960 A\.1\)/,
     [qr{pki_ca issuing}]],
    ['ca_issuers_url over https',
     sub { s{ca_issuers_url http://}{ca_issuers_url https://} },
     qr/invalid URL "https:\/\/[^"]+" in "ca_issuers_url": it must be an http:\/\/ URL, not https:\/\//,
     [qr{pki_ca issuing}]],
    ['crl_url over ftp',
     sub { s{crl_url http://}{crl_url ftp://} },
     qr/in "crl_url": it must be an http:\/\/ \(or ldap:\/\/\) URL/,
     [qr{pki_ca issuing}]],
    ['crl_url for a CA certificate whose keyUsage lacks cRLSign',
     sub { s/(    pki_ca issuing \{)/$nocrl_ca\n$1/ },
     qr/"\Q$dir\E\/nocrl\.pem" may not sign CRLs \(keyUsage without cRLSign\).*"crl_url"/,
     [qr{pki_ca nocrl}]],
    ['pki_key_vault call_timeout that is not a time',
     sub { s/(pin_file \S+;)/$1\n        call_timeout soon;/ },
     qr/"call_timeout" invalid value/, [qr{pki_key_vault}]],
    ['pki_key_vault call_timeout given twice',
     sub { s/(pin_file \S+;)/$1\n        call_timeout 5s; call_timeout 5s;/ },
     qr/"call_timeout" is duplicate/, [qr{pki_key_vault}]],
    ['missing PIN file',
     sub { s/pin_file \S+;/pin_file $pki\/no-pin-file;/ },
     qr/no-pin-file/, [qr{pki_key_vault}, qr{pki_ca issuing}]],
    ['bad template line (key_types ec:P-999)',
     sub { s/key_types ec:P-256 ec:P-384 rsa:2048-4096;/key_types ec:P-999;/ },
     qr/P-999/, [qr{pki_template device}]],
    ['Ed25519-only template whose key_usage has no signing bit (RFC 8410)',
     sub { s/(    pki_ca issuing \{)/$ed_tmpl\n$1/ },
     qr/template "edonly": an Ed25519 or Ed448 key needs digitalSignature/,
     [qr{pki_template edonly}]],
    ['unknown template directive',
     sub { s/(server_keygen on;)/$1\n        frobnicate yes;/ },
     qr/frobnicate/, [qr{pki_template device}]],
    ['must_staple with a bad value',
     sub { s/must_staple on;/must_staple sometimes;/ },
     qr/sometimes.*must_staple/, [qr{pki_template acme}]],
    ['must_staple and a verbatim TLS feature extension',
     sub { s/(must_staple on;)/$1\n        extension 1.3.6.1.5.5.7.1.24 noncritical 3003020105;/ },
     qr/exclude each other/, [qr{pki_template acme}]],
    ['acme_caa_check on without acme_caa_identities',
     sub { s/\s*acme_caa_identities [^;]*;/\n            acme_caa_check on;/ },
     qr/acme_caa_check on needs acme_caa_identities/, [qr{^http}]],
    ['acme_nonce_ttl over 1d (a nonce carries a 32-bit expiry)',
     sub { s/(acme issuing acme;)/$1\n            acme_nonce_ttl 2d;/ },
     qr/acme_nonce_ttl must be 1s\.\.1d/, [qr{^http}]],
    ['acme_accounts_per_hour not a number',
     sub { s/(acme issuing acme;)/$1\n            acme_accounts_per_hour many;/ },
     qr/acme_accounts_per_hour/, [qr{^http}]],
    ['acme_terms_of_service not a URL (a relative path)',
     sub { s/(acme issuing acme;)/$1\n            acme_terms_of_service tos.html;/ },
     qr/"acme_terms_of_service" must be an http:\/\/ or https:\/\/ URL/,
     [qr{location /acme/}]],
    ['acme_terms_of_service with a space',
     sub { s/(acme issuing acme;)/$1\n            acme_terms_of_service "https:\/\/ca.test\/not a url";/ },
     qr/"acme_terms_of_service": "https:\/\/ca\.test\/not a url" must have no space/,
     [qr{location /acme/}]],
    ['acme_terms_of_service with a ">" (breaks the Link header)',
     sub { s/(acme issuing acme;)/$1\n            acme_terms_of_service https:\/\/ca.test\/t>x;/ },
     qr/"acme_terms_of_service": .* must have no space/, [qr{location /acme/}]],
    ['acme_terms_of_service without a host',
     sub { s/(acme issuing acme;)/$1\n            acme_terms_of_service https:\/\/\/tos;/ },
     qr/"acme_terms_of_service": "https:\/\/\/tos" needs a host/,
     [qr{location /acme/}]],
    ['acme_website not a URL',
     sub { s/acme_website [^;]*;/acme_website "not a url";/ },
     qr/"acme_website" must be an http:\/\/ or https:\/\/ URL/,
     [qr{location /acme/}]],
    ['acme_website of another scheme',
     sub { s/acme_website [^;]*;/acme_website ftp:\/\/ca.test\/;/ },
     qr/"acme_website" must be an http:\/\/ or https:\/\/ URL/,
     [qr{location /acme/}]],
    ['acme_website with a quote',
     sub { s/acme_website [^;]*;/acme_website 'https:\/\/ca.test\/"x';/ },
     qr/"acme_website": .* must have no space, quote/, [qr{location /acme/}]],
    ['scep_pending_ttl 0 (taken as 7d before)',
     sub { s/(scep issuing scep;)/$1\n            scep_pending_ttl 0;/ },
     qr/"scep_pending_ttl" directive must be at least 1s/, [qr{location /scep}]],
    ['acme_renewal_explanation not a URL',
     sub { s/(acme issuing acme;)/$1\n            acme_renewal_explanation notice.html;/ },
     qr/"acme_renewal_explanation" must be an http:\/\/ or https:\/\/ URL/,
     [qr{location /acme/}]],
    ['acme_renewal_explanation with a space',
     sub { s/(acme issuing acme;)/$1\n            acme_renewal_explanation "https:\/\/ca.test\/a notice";/ },
     qr/"acme_renewal_explanation": .* must have no space/,
     [qr{location /acme/}]],
    ['acme_validation_resolve_to not an IP address (names that directive only)',
     sub { s/acme_validation_resolve_to [^;]*;/acme_validation_resolve_to lab.example;/ },
     qr/\[emerg\] \d+#\d+: acme_validation_resolve_to "lab\.example": resolve_to is not an IP address/,
     [qr{^http}]],
    ['acme_validation_resolver not an IP address (names that directive only)',
     sub { s/(acme_validation_timeout [^;]*;)/$1\n            acme_validation_resolver dns.example;/ },
     qr/\[emerg\] \d+#\d+: acme_validation_resolver "dns\.example": the resolver is not an IP address/,
     [qr{^http}]],
    ['acme_profile with a bad name',
     sub { s/acme_profile shortlived /acme_profile Short!lived / },
     qr/invalid acme_profile name "Short!lived"/, [qr{location /acme/}]],
    ['acme_profile with an unknown template',
     sub { s/acme_profile shortlived server /acme_profile shortlived nosuchtmpl / },
     qr/unknown template "nosuchtmpl"/, [qr{location /acme/}]],
    ['acme_profile with a template the CA does not allow',
     sub { s/(    pki_ca issuing \{)/$extra_tmpl\n$1/;
           s/(acme_profile shortlived [^;]*;)/$1\n            acme_profile other other;/ },
     qr/acme_profile "other": CA "issuing" does not allow template "other"/,
     [qr{location /acme/}]],
    ['acme_profile twice with one name',
     sub { s/(acme_profile shortlived [^;]*;)/$1\n            acme_profile shortlived acme;/ },
     qr/duplicate acme_profile "shortlived"/, [qr{location /acme/}]],
    ['acme with a template that copies C, O, OU ... (the scep template)',
     sub { s/acme issuing acme;/acme issuing scep;/ },
     qr/template "scep" copies subject attribute "C" from the request, which no ACME challenge validates: a template for ACME may copy only CN/,
     [qr{location /acme/}]],
    ['acme_profile with a template that requires OU',
     sub { s/(    pki_ca issuing \{)/$ou_tmpl\n$1/;
           s/(templates acme;)/$1\n        templates ourequired;/;
           s/(acme_profile shortlived [^;]*;)/$1\n            acme_profile ou ourequired;/ },
     qr/template "ourequired" copies subject attribute "OU" from the request/,
     [qr{location /acme/}]],
    ['acme_profile where acme is not on',
     sub { s/(est issuing device;)/$1\n            acme_profile short server;/ },
     qr/"acme_profile" needs "acme CA TEMPLATE" in the same location/,
     [qr{location /\.well-known/est/}]],
    # a nested location serves its parent's directory: its own profiles
    # were never offered
    ['acme_profile in a location nested in an ACME one, without acme',
     sub { s/(acme issuing acme;)/$1\n            location \/acme\/sub\/ {\n                acme_profile short server;\n            }/ },
     qr/"acme_profile" needs "acme CA TEMPLATE" in the same location/,
     [qr{location /acme/sub/}]],
    # nginx creates the last directory only, and its mkdir() at start
    # said no file and line
    ['pki_crl_cache under a directory that is not there',
     sub { s{pki_crl_cache \S+;}{pki_crl_cache /nonexistent-pki/a/pki_crl;} },
     qr{pki_crl_cache "/nonexistent-pki/a/pki_crl": its parent "/nonexistent-pki/a" is no directory},
     [qr{^http\b}]],
    ['est twice in a location',
     sub { s/(est issuing device;)/$1\n            est issuing device;/ },
     qr/"est" directive is duplicate/, [qr{location /\.well-known/est/}]],
    ['scep with one argument other than off',
     sub { s/scep issuing scep;/scep maybe;/ },
     qr/invalid value "maybe", use "scep CA TEMPLATE" or "scep off"/,
     [qr{location /scep}]],
    ['acme in a regex location',
     sub { s{location /acme/ \{}{location ~ ^/acme/ \{} },
     qr/"acme" needs a prefix location, not a regex/,
     [qr{location ~ \^/acme/}]],
    ['pki_admin in a regex location',
     sub { s{location /pki/admin/ \{}{location ~ ^/pki/admin/ \{} },
     qr/"pki_admin" directive needs a prefix location, not a regex/,
     [qr{location ~ \^/pki/admin/}]],
    ['acme in an exact-match location',
     sub { s{location /acme/ \{}{location = /acme/directory \{} },
     qr/"acme" needs a prefix location, not an exact match \("="\): its resources are below it/,
     [qr{location = /acme/directory}]],
    ['a protocol without pki_redis',
     sub { s/\n\s*pki_redis unix:[^;]*;//; s/\n\s*pki_admin;//;
           s/\n\s*pki_crl\b[^;]*;//g },
     qr/"(?:est|acme|scep|ocsp_responder)" needs "pki_redis" in http\{\}/,
     [qr{location /\.well-known/est/}, qr{location /acme/}, qr{location /scep},
      qr{location /ocsp}]],
    ['unknown vault in key URI',
     sub { s/token=nginx-pki;object=issuing/token=nosuchtoken;object=issuing/ },
     qr/nosuchtoken/, [qr{pki_ca issuing}, qr{pki_key_vault}]],
    # looked up again after one reopen of the vault (a lost login lists no
    # private key), and still refused, naming the key and the token
    # the scheme in another case is still a pkcs11: URI (RFC 3986 3.1):
    # refused for its PIN, not opened as a file and named, PIN and all
    ['key URI with a PIN, scheme in capitals',
     sub { s/key "pkcs11:token=nginx-pki;object=issuing/key "PKCS11:token=nginx-pki;object=issuing;pin-value=99999999/ },
     qr/key URI holds pin-value or pin-source \(not shown\)/,
     [qr{pki_ca issuing}]],
    ['key URI with a PIN the parser would take for a label',
     sub { s/key "pkcs11:token=nginx-pki;object=issuing/key "pkcs11:token=nginx-pki;object=issuing&pin-value=99999999/ },
     qr/key URI holds pin-value or pin-source \(not shown\)/,
     [qr{pki_ca issuing}]],
    ['key file name with a PIN',
     sub { s/key "pkcs11:token=nginx-pki;object=issuing[^"]*"/key "pkcs-11:token=nginx-pki;object=issuing;pin-value=99999999"/ },
     qr/holds pin-value= or pin-source= but is no pkcs11: URI/,
     [qr{pki_ca issuing}]],
    ['key not on its token',
     sub { s/token=nginx-pki;object=issuing/token=nginx-pki;object=nosuchkey/ },
     qr/key "pkcs11:token=nginx-pki;object=nosuchkey[^"]*" not found on token "nginx-pki"/,
     [qr{pki_ca issuing}]],
    ['ocsp_responder_next_update past 366 days',
     sub { s/(ocsp_responder issuing;)/$1\n            ocsp_responder_next_update 367d;/ },
     qr/ocsp_responder_next_update must be 366d at most/,
     [qr{location /ocsp}, qr{^http}]],
    ['est_max_body_size 0',
     sub { s/est_max_body_size 64k;/est_max_body_size 0;/ },
     qr/est_max_body_size must be 1k\.\.1m/,
     [qr{location /\.well-known/est/}, qr{^http}]],
    ['bad est_max_body_size',
     sub { s/est_max_body_size 64k;/est_max_body_size lots;/ },
     qr/lots|est_max_body_size/, [qr{location /\.well-known/est/}]],
    ['scep_max_body_size 0',
     sub { s/(scep issuing scep;)/$1\n            scep_max_body_size 0;/ },
     qr/"scep_max_body_size" directive must be 1k\.\.1m/,
     [qr{location /scep}]],
    ['scep_max_body_size over 1m',
     sub { s/(scep issuing scep;)/$1\n            scep_max_body_size 2m;/ },
     qr/"scep_max_body_size" directive must be 1k\.\.1m/,
     [qr{location /scep}]],
    ['pki_audit_log orphan_after out of range',
     sub { s/(pki_audit_log [^;]*);/$1 orphan_after=10ms;/ },
     qr/orphan_after/, [qr{^http}]],
    ['pki_audit_log unknown parameter',
     sub { s/(pki_audit_log [^;]*);/$1 carry=maybe;/ },
     qr/carry=maybe/, [qr{^http}]],
    # an empty key= (a key=$VAR left unset) meant no checkpoint signing
    # files of scep_ra and scep_challenge: named with file and line (an
    # OpenSSL failure had neither; a directory was "too large")
    ['scep_ra with a certificate file that is not there',
     sub { s{scep_ra \S+ }{scep_ra /nonexistent/ra.pem } },
     qr{cannot open "/nonexistent/ra\.pem": .*no such file}i, [qr{location /scep}]],
    ['scep_ra with a directory for its certificate',
     sub { s{scep_ra \S+ }{scep_ra /tmp }  },
     qr{no PEM certificate in "/tmp"}, [qr{location /scep}]],
    ['scep_clock_skew 0 (the check off, read as the tightest)',
     sub { s/(scep issuing scep;)/$1\n            scep_clock_skew 0s;/ },
     qr/"scep_clock_skew" directive of 0 turns the signingTime check off: write "off" for that/,
     [qr{location /scep}]],
    ['scep_challenge file= a directory',
     sub { s{scep_challenge file=\S+;}{scep_challenge file=/tmp;} },
     qr{challenge file "/tmp" is no regular file}, [qr{location /scep}]],
    ['pki_audit_log with an empty key=',
     sub { s/(pki_audit_log \S+)[^;]*;/$1 key=;/ },
     qr/invalid parameter "key=" in pki_audit_log/, [qr{^http}]],
    # key URIs name the token, and the first vault of a token took them:
    # a second vault of that token never signed
    ['two pki_key_vault blocks of one token',
     sub { s{(\n(\s*)pki_key_vault demo \{(.*?)\})}{$1\n$2pki_key_vault demo2 {$3}}s },
     qr/pki_key_vault "demo2": token "\S+" is pki_key_vault "demo"'s already/,
     [qr{^http}]],

    # one content handler per location, whatever the order: the second
    # directive is refused (the first named), or ours when another
    # module's directive (proxy_pass) comes after it
    ['ocsp_responder, then scep in its location',
     sub { s/(ocsp_responder issuing;)/$1\n            scep issuing scep;/ },
     qr/"scep": this location already has a content handler \("ocsp_responder" in \S+:\d+\)/,
     [qr{location /ocsp}]],
    ['scep, then ocsp_responder in its location',
     sub { s/(scep issuing scep;)/$1\n            ocsp_responder issuing;/ },
     qr/"ocsp_responder": this location already has a content handler \("scep" in \S+:\d+\)/,
     [qr{location /scep}]],
    ['pki_crl, then ocsp_responder in its location',
     sub { s/(\n\s*pki_crl;)/$1\n            ocsp_responder issuing;/ },
     qr/"ocsp_responder": this location already has a content handler \("pki_crl" in /,
     [qr{location /crl/}]],
    ['ocsp_responder, then pki_crl in its location',
     sub { s/(ocsp_responder issuing;)/$1\n            pki_crl;/ },
     qr/"pki_crl": this location already has a content handler \("ocsp_responder" in /,
     [qr{location /ocsp}]],
    ['est, then scep in its location',
     sub { s/(est issuing device;)/$1\n            scep issuing scep;/ },
     qr/"scep": this location already has a content handler \("est" in /,
     [qr{location /\.well-known/est/}]],
    ['scep, then est in its location',
     sub { s/(scep issuing scep;)/$1\n            est issuing device;/ },
     qr/"est": this location already has a content handler \("scep" in /,
     [qr{location /scep}]],
    ['pki_admin, then pki_dashboard in its location',
     sub { s/(\n\s*pki_admin;)/$1\n            pki_dashboard;/ },
     qr/"pki_dashboard": this location already has a content handler \("pki_admin" in /,
     [qr{location /pki/admin/}]],
    ['pki_metrics, then acme in its location',
     sub { s/(\n\s*pki_metrics;)/$1\n            acme issuing acme;/ },
     qr/"acme": this location already has a content handler \("pki_metrics" in /,
     [qr{location = /pki/metrics}]],
    # est_label alone in a location serves EST (its labels) as est does:
    # another content handler there left the label dead, unsaid
    ['est_label, then proxy_pass in its location',
     sub { s{(\n(\s*)location /\.well-known/est/ \{)}{\n$2location /est2/ {\n$2    est_label other issuing server;\n$2    proxy_pass http://127.0.0.1:9;\n$2}$1} },
     qr/"est_label": this location already has a content handler \(another module's directive: proxy_pass/,
     [qr{location /est2/}]],
    ['proxy_pass, then est_label in its location',
     sub { s{(\n(\s*)location /\.well-known/est/ \{)}{\n$2location /est2/ {\n$2    proxy_pass http://127.0.0.1:9;\n$2    est_label other issuing server;\n$2}$1} },
     qr/"est_label": this location already has a content handler \(another module's directive: proxy_pass/,
     [qr{location /est2/}]],
    ['pki_admin twice in a location',
     sub { s/(\n\s*pki_admin;)/$1$1/ },
     qr/"pki_admin" directive is duplicate/, [qr{location /pki/admin/}]],
    (map {
        my ($name, $re, $block, $dir) = @$_;
        ["$name, then proxy_pass in its location",
         sub { s/($re)/$1\n            proxy_pass http:\/\/127.0.0.1:9;/ },
         qr/"$dir": this location already has a content handler \(another module's directive: proxy_pass/,
         [$block]],
        ["proxy_pass, then $name in its location",
         sub { s/($re)/proxy_pass http:\/\/127.0.0.1:9;\n            $1/ },
         qr/"$dir": this location already has a content handler \(another module's directive: proxy_pass/,
         [$block]],
    } (['ocsp_responder', qr/ocsp_responder issuing;/, qr{location /ocsp},
        'ocsp_responder'],
       ['est', qr/est issuing device;/, qr{location /\.well-known/est/},
        'est'],
       ['scep', qr/scep issuing scep;/, qr{location /scep}, 'scep'],
       ['acme', qr/acme issuing acme;/, qr{location /acme/}, 'acme'],
       ['pki_crl', qr/(?<=\n)\s*pki_crl;/, qr{location /crl/}, 'pki_crl'],
       ['pki_admin', qr/(?<=\n)\s*pki_admin;/, qr{location /pki/admin/},
        'pki_admin'],
       ['pki_metrics', qr/(?<=\n)\s*pki_metrics;/,
        qr{location = /pki/metrics}, 'pki_metrics'],
       ['pki_dashboard', qr/(?<=\n)\s*pki_dashboard;/,
        qr{location = /pki/dashboard}, 'pki_dashboard'])),
);

# what stays accepted: a nested location, or an if block, with a handler
# of its own inside a protocol's location (EST and ACME hand theirs down
# to nested locations without one), if and limit_except blocks in one
{
    (my $conf = $base) =~ s{(\n(\s*)location /ocsp \{\n)}{$1$2    if (\$arg_up) {
$2        proxy_pass http://127.0.0.1:9;
$2    }
$2    limit_except GET {
$2        allow all;
$2    }
$2    location /ocsp/up/ {
$2        proxy_pass http://127.0.0.1:9;
$2    }
$2    location /ocsp/crl/ {
$2        pki_crl;
$2    }
}   or die 'no OCSP location';
    $conf =~ s{(\n(\s*)location /acme/ \{\n)}{$1$2    location /acme/up/ {
$2        proxy_pass http://127.0.0.1:9;
$2    }
$2    location /acme/off/ {
$2        acme off;
$2        return 204;
$2    }
}   or die 'no ACME location';
    $conf =~ s{(\n(\s*)pki_admin;\n)}{$1$2if (\$arg_x) {
$2    set \$x \$arg_x;
$2}
$2limit_except GET {
$2    allow all;
$2}
}   or die 'no pki_admin';
    $conf =~ s{(\n(\s*)est issuing device;\n)}{$1$2location /.well-known/est/up/ {
$2    proxy_pass http://127.0.0.1:9;
$2}
}   or die 'no est';
    my ($ok, $out) = $t->nginx_test($t->write_conf($conf, 'nested.conf'));
    ok($ok, 'proxy_pass and pki_crl in locations nested in protocol ones, '
       . 'proxy_pass in an if block there, if and limit_except blocks in '
       . 'them: nginx -t passes') or diag($out);
}

# line ranges of the blocks whose opening line matches $re
sub block_ranges {
    my ($conf, $re) = @_;
    my @lines = split /\n/, $conf;
    my (@ranges, @stack);
    for my $i (0 .. $#lines) {
        my $l = $lines[$i];
        my $opens = () = $l =~ /\{/g;
        my $closes = () = $l =~ /\}/g;
        # ignore braces inside quoted strings (return "...")
        if ($l =~ /"[^"]*[{}][^"]*"/) { $opens = $closes = 0 }
        if ($opens && !$closes) {
            push @stack, [$i + 1, ($l =~ s/^\s+//r) =~ $re];
        } elsif ($closes && !$opens) {
            my $b = pop @stack;
            push @ranges, [$b->[0], $i + 1] if $b && $b->[1];
        }
    }
    return @ranges;
}

for my $c (@cases) {
    my ($name, $edit, $re, $blocks) = @$c;
    local $_ = $base;
    $edit->();
    my $conf = $_;
    if ($conf eq $base) {
        fail("$name: the edit applied");
        next;
    }
    my $file = $t->write_conf($conf, 'reject.conf');
    my ($ok, $out) = $t->nginx_test($file);
    ok(!$ok, "$name: nginx -t fails");
    my ($emerg) = $out =~ /^(.*\[emerg\].*)$/m;
    ok($emerg, "$name: [emerg] line") or do { diag($out); next };
    like($emerg, $re, "$name: message") or diag($out);
    my ($f, $line) = $emerg =~ / in (\S+):(\d+)\s*$/;
    is($f, $file, "$name: names the file") or diag($emerg);
    my @r = map { block_ranges($conf, $_) } @$blocks;
    ok(defined $line && grep({ $line >= $_->[0] && $line <= $_->[1] } @r),
       "$name: line " . ($line // '?') . " is in the right block")
        or diag($emerg);
    unlike($out, qr/99999999/, "$name: no PIN in the output")
        if $name =~ /PIN/;
}

done_testing();
