#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# The revocation admin API (location /pki/admin/ { pki_admin; auth_basic })
# against the shared config: enroll over EST, revoke with the serial as
# openssl prints it (and lowercase, and with leading zeros), the Redis
# record, GET, list, hold + removeFromCRL, refusals and authentication;
# a pki_admin location in the plain HTTP server refuses (403) unless
# pki_admin_plain_http is on.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(sleep);
use IO::Socket::INET;
use MIME::Base64 ();
use PKITest;

my $t = PKITest->new;
$t->start_redis;
$t->start_nginx($t->render_conf);

my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';
my $json = JSON::PP->new->canonical;

sub enroll {
    my ($name) = @_;
    my ($r, $serial) = $t->enroll_serial($name);
    is($r->{code}, 200, "enrolled $name") or diag($r->{body});
    $serial //= '';
    ok($serial =~ /^[0-9A-F]+$/, "  serial $serial");
    return $serial;
}

sub api {
    my ($method, $path, %o) = @_;
    my $r = $t->curl($method, "$admin/$path",
                     user => exists $o{user} ? $o{user} : 'admin:admin',
                     data => $o{data},
                     headers => defined $o{data}
                                ? ['Content-Type: application/json'] : [],
                     quiet => 1);
    $r->{json} = eval { $json->decode($r->{body}) } if length $r->{body};
    return $r;
}

sub revoke {
    my (%body) = @_;
    return api('POST', 'revoke', data => $json->encode(\%body));
}

my $s1 = enroll('adm1');
my $s2 = enroll('adm2');
my $s3 = enroll('adm3');

# --- authentication --------------------------------------------------------

my $r = api('GET', "certificates/$s1", user => undef);
is($r->{code}, 401, 'no credentials: 401');
$r = api('GET', "certificates/$s1", user => 'admin:wrong');
is($r->{code}, 401, 'wrong password: 401');
$r = api('GET', "certificates/$s1", user => 'demo:demo');
is($r->{code}, 401, 'EST user is not an admin: 401');
$r = api('GET', "certificates/$s1");
is($r->{code}, 200, 'the admin reads a record: 200');
is($r->{headers}{'x-content-type-options'} // '', 'nosniff',
   '  nosniff: a browser keeps its JSON type');
$r = api('POST', 'revoke', user => undef,
         data => $json->encode({ serial => $s2 }));
is($r->{code}, 401, 'revoke without credentials: 401');
is($t->redis_hash("pki:{ca:issuing}:cert:$s2")->{status}, 'good',
   '  nothing changed');

# --- revoke (serial as openssl prints it) -----------------------------------

$r = revoke(serial => $s1, reason => 'keyCompromise');
is($r->{code}, 200, 'revoke keyCompromise') or diag($r->{body});
is($r->{json}{status}, 'revoked', '  the updated record');
$r = api('GET', "certificates/$s1");
is($r->{code}, 200, 'GET the record') or diag($r->{body});
is($r->{json}{status}, 'revoked', '  revoked');
is($r->{json}{reason}, 'keyCompromise', '  reason keyCompromise');
is($r->{json}{serial}, $s1, '  canonical serial');
is($r->{json}{subject}, 'CN=adm1', '  subject');
is($r->{json}{protocol}, 'est', '  protocol');
is($r->{json}{requester}, 'demo', '  requester');
like($r->{json}{revoked_at} // '', qr/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\dZ$/,
     '  revoked_at RFC 3339');
like($r->{json}{not_after} // '', qr/^\d{4}-/, '  not_after');
ok(length($r->{json}{der} // ''), '  DER (base64)');

my $h = $t->redis_hash("pki:{ca:issuing}:cert:$s1");
is($h->{status}, 'revoked', 'Redis record: status revoked');
is($h->{reason}, '1', '  reason 1');
ok($h->{revoked_at} > 0, '  revoked_at set');
my $entry = $t->redis_raw('HGET', 'pki:{ca:issuing}:revoked', $s1);
like($entry, qr/^1 \d+ 0$/, '  revoked hash entry');
ok($t->redis_raw('GET', 'pki:{ca:issuing}:revgen') >= 1, '  revgen bumped');

# lowercase with leading zeros, with an invalidity date
$r = revoke(serial => '00' . lc($s2), reason => 'superseded',
            invalidity_date => '2026-01-01T00:00:00Z');
is($r->{code}, 200, 'revoke lowercase serial with leading zeros')
    or diag($r->{body});
is($r->{json}{serial}, $s2, '  same record');
is($r->{json}{reason}, 'superseded', '  reason superseded');
is($r->{json}{invalidity_date}, '2026-01-01T00:00:00Z', '  invalidity date');
is($t->redis_hash("pki:{ca:issuing}:cert:$s2")->{invalidity_date},
   '1767225600', '  Redis invalidity_date');
my @inv = grep { ($_->{type} // '') eq 'revoke' && ($_->{serial} // '') eq $s2 }
          $t->audit_entries;
is(@inv ? $inv[-1]{reason} : undef,
   'superseded, invalid since 2026-01-01T00:00:00Z',
   '  the transaction log has the invalidity date too')
    or diag(explain(\@inv));

# --- refusals --------------------------------------------------------------

$r = revoke(serial => $s1, reason => 'removeFromCRL');
is($r->{code}, 409, 'un-revoke refused: 409');
ok($r->{json}{error}, '  JSON error: ' . ($r->{json}{error} // ''));
$r = revoke(serial => $s1, reason => 'cessationOfOperation');
is($r->{code}, 409, 'second revocation refused: 409');

# a serial next to a real one, never the real one itself
my $unknown = (uc(substr($s3, 0, 2)) eq '7F' ? '7E' : '7F') . substr($s3, 2);
$r = revoke(serial => $unknown, reason => 'keyCompromise');
is($r->{code}, 404, 'unknown serial: 404');
$r = api('GET', "certificates/$unknown");
is($r->{code}, 404, 'GET unknown serial: 404');

$r = api('POST', 'revoke', data => '{"serial": ');
is($r->{code}, 400, 'bad JSON: 400');
is(ref $r->{json}, 'HASH', '  JSON error body');
$r = revoke(serial => $s3, reason => 'notAReason');
is($r->{code}, 400, 'unknown reason: 400');
$r = revoke(serial => $s3, invalidity_date => 'yesterday');
is($r->{code}, 400, 'bad date: 400');
$r = revoke(serial => 'not-hex');
is($r->{code}, 400, 'bad serial: 400');
# what the JSON parser would hide: a string cut at \u0000, a member twice
$r = api('POST', 'revoke', data => qq({"serial":"$s3\\u0000junk",)
                                    . '"reason":"keyCompromise"}');
is($r->{code}, 400, 'a serial holding \u0000: 400');
$r = api('POST', 'revoke', data => qq({"serial":"$s3\0junk",)
                                    . '"reason":"keyCompromise"}');
is($r->{code}, 400, 'a serial holding a raw NUL byte: 400');
$r = api('POST', 'revoke', data => qq({"serial":"$s2","serial":"$s3"}));
is($r->{code}, 400, 'a member given twice: 400');
$r = api('POST', 'scep/approve',
         data => '{"transaction_id":"x","transaction_id":"y"}');
is($r->{code}, 400, 'SCEP admin: a member given twice: 400');
like($r->{body} // '', qr/given twice/, '  saying so');
is($t->redis_hash("pki:{ca:issuing}:cert:$s3")->{status}, 'good',
   '  neither revoked anything');
$r = api('POST', 'revoke', data => '{"serial":"' . ('0' x 20000) . '"}');
is($r->{code}, 413, 'body over 16 KiB: 413');
like($r->{headers}{'content-type'} // '', qr{^application/json},
     '  a JSON error, not an HTML page');
like($r->{body} // '', qr/"error":"request body too large \(at most 16384 /,
     '  saying so, with the cap');
$r = $t->curl('POST', "$admin/revoke", user => 'admin:admin',
              data => '{"serial":"' . ('0' x 20000) . '"}', quiet => 1,
              headers => ['Content-Type: application/json',
                          'Transfer-Encoding: chunked']);
is($r->{code}, 413, 'chunked body over 16 KiB: 413');
like($r->{headers}{'content-type'} // '', qr{^application/json},
     '  a JSON error');
# over nginx's client_max_body_size (1m) too: still the API's own answer
$r = api('POST', 'revoke', data => '{"serial":"' . ('0' x 1100000) . '"}');
is($r->{code}, 413, 'body over 1 MiB: 413');
like($r->{headers}{'content-type'} // '', qr{^application/json},
     '  a JSON error, not nginx\'s page');
$r = api('GET', 'certificates?subject=' . ('a' x 2100));
is($r->{code}, 414, 'a query over 2048 bytes: 414 URI Too Long');
$r = api('POST', 'acme/accounts', data => '{"status":"revoked"}');
is($r->{code}, 404, 'acme/accounts without an id: 404 (no resource)');
# an error that echoes a value cut inside a character is still UTF-8
$r = api('POST', 'revoke', data => $json->encode({ serial => $s3,
    reason => "a" . ("\x{e9}" x 40) }));
is($r->{code}, 400, 'an unknown reason of "a" and 40 x U+00E9: 400');
ok(utf8::decode(my $copy = $r->{body}),
   '  the error is UTF-8 (the cut character replaced)')
    or diag($r->{body});
$r = api('GET', 'revoke');
is($r->{code}, 405, 'GET revoke: 405');
is($r->{headers}{allow}, 'POST', '  Allow: POST (RFC 9110 15.5.6)');
$r = api('DELETE', 'certificates');
is($r->{code}, 405, 'DELETE certificates: 405');
is($r->{headers}{allow}, 'GET, HEAD', '  Allow: GET, HEAD');
$r = api('PUT', 'acme/eab');
is($r->{headers}{allow}, 'GET, HEAD, POST', 'PUT acme/eab: Allow');
$r = api('GET', 'scep/approve');
is($r->{headers}{allow}, 'POST', 'GET scep/approve: Allow: POST');
$r = api('GET', 'nothing');
is($r->{code}, 404, 'unknown endpoint: 404');
is($t->redis_hash("pki:{ca:issuing}:cert:$s3")->{status}, 'good',
   'refusals left the record alone');

# --- hold and release ------------------------------------------------------

$r = revoke(serial => $s3, reason => 'certificateHold');
is($r->{code}, 200, 'certificateHold');
is($r->{json}{reason}, 'certificateHold', '  on hold');
ok(length $t->redis_raw('HGET', 'pki:{ca:issuing}:revoked', $s3),
   '  in the revoked hash');

$r = api('GET', 'certificates?status=revoked&limit=1000');
is($r->{code}, 200, 'list status=revoked');
my %seen = map { $_->{serial} => $_->{status} }
           @{ $r->{json}{certificates} || [] };
ok($seen{$s1} && $seen{$s2} && $seen{$s3}, '  the three revoked ones');
is($r->{json}{next_cursor}, '0', '  one page');
$r = api('GET', 'certificates?status=hold');
%seen = map { $_->{serial} => 1 } @{ $r->{json}{certificates} || [] };
ok($seen{$s3} && !$seen{$s1}, 'list status=hold: only the hold');
$r = api('GET', 'certificates?subject=adm2&status=revoked');
is(scalar @{ $r->{json}{certificates} || [] }, 1, 'subject filter');

$r = revoke(serial => lc $s3, reason => 'removeFromCRL');
is($r->{code}, 200, 'removeFromCRL releases the hold') or diag($r->{body});
is($r->{json}{status}, 'good', '  good again');
is($t->redis_hash("pki:{ca:issuing}:cert:$s3")->{status}, 'good',
   '  Redis record good');
is($t->redis_raw('HEXISTS', 'pki:{ca:issuing}:revoked', $s3) + 0, 0,
   '  left the revoked hash');
$r = revoke(serial => $s3, reason => 'removeFromCRL');
is($r->{code}, 409, 'removeFromCRL on a good certificate: 409');

# "at" in the past is a mistake (a plan with a wrong year), not a
# revocation now that nothing undoes
$r = revoke(serial => $s3, reason => 'keyCompromise',
            at => '2020-01-01T00:00:00Z');
is($r->{code}, 400, '"at" in the past: 400') or diag($r->{body});
like($r->{json}{error} // '', qr/"at" is in the past/, '  it says why');
is($t->redis_hash("pki:{ca:issuing}:cert:$s3")->{status}, 'good',
   '  the certificate stays good');

# a SCAN cursor past 64 bits: the request's fault (400), not the store's
$r = api('GET', 'acme/eab?cursor=99999999999999999999');
is($r->{code}, 400, 'EAB list: a cursor over 2^64 - 1: 400')
    or diag($r->{body});
$r = api('GET', 'acme/eab?cursor=18446744073709551615');
isnt($r->{code}, 503, '  2^64 - 1 is still a cursor') or diag($r->{body});

# --- a planned revocation is carried out by nginx when due -----------------

my $s4 = enroll('adm4');
# a hold keeps a plan: adm5 is released before its time, adm6 after it
my $s5 = enroll('adm5');
my $s6 = enroll('adm6');
# far enough ahead that the requests (TLS, a loaded machine) land before it
my @at = gmtime(time + 8);
my $at = sprintf('%04d-%02d-%02dT%02d:%02d:%02dZ', $at[5] + 1900, $at[4] + 1,
                 @at[3, 2, 1, 0]);
$r = revoke(serial => $s4, reason => 'superseded', at => $at);
is($r->{code}, 200, 'planned revocation: 200') or diag($r->{body});
is($r->{json}{status}, 'good', '  still good');
is($r->{json}{revocation_planned}, $at, '  the planned time');
for my $s ($s5, $s6) {
    $r = revoke(serial => $s, reason => 'cessationOfOperation', at => $at);
    is($r->{code}, 200, "planned $s") or diag($r->{body});
    $r = revoke(serial => $s, reason => 'certificateHold');
    is($r->{code}, 200, '  then held') or diag($r->{body});
    is($r->{json}{revocation_planned}, $at, '  the hold keeps the plan');
}
$r = revoke(serial => $s5, reason => 'removeFromCRL');
is($r->{json}{status}, 'good', 'adm5 released before its plan: good');
is($r->{json}{revocation_planned}, $at, '  with its plan');
# the API shows it revoked from its time on; the record in Redis, once
# worker 0 carries it out
my $st = '';
for (1 .. 80) {
    $st = $t->redis_hash("pki:{ca:issuing}:cert:$s4")->{status} // '';
    last if $st eq 'revoked';
    sleep 0.5;
}
is($st, 'revoked', 'carried out when due (within the 10 s refresh)');
$r = api('GET', "certificates/$s4");
is($r->{json}{status}, 'revoked', '  the API says revoked');
is($r->{json}{reason}, 'superseded', '  with the planned reason');
like(PKITest::slurp($t->error_log) // '',
     qr/2 planned revocations carried out/,
     '  and said in the error log (adm4 and adm5)');
my @rev = grep { ($_->{type} // '') eq 'revoke' && ($_->{serial} // '') eq $s4 }
          $t->audit_entries;
is(scalar(@rev), 1, '  one revocation in the transaction log');
is($rev[0]{requester} // '', 'planned by admin',
   '  by the admin who planned it') or diag(explain(\@rev));
$h = $t->redis_hash("pki:{ca:issuing}:cert:$s5");
is("$h->{status} $h->{reason}", 'revoked 5',
   'adm5 (released before its time) carried out as planned');
$h = $t->redis_hash("pki:{ca:issuing}:cert:$s6");
is("$h->{status} $h->{reason}", 'revoked 6', 'adm6 still on hold');
$r = revoke(serial => $s6, reason => 'removeFromCRL');
is($r->{code}, 200, 'adm6 released after its plan') or diag($r->{body});
is(join(' ', map { $_ // '' } @{ $r->{json} }{qw(status reason revoked_at)}),
   "revoked cessationOfOperation $at", '  revoked as planned, at its time');
like($t->redis_raw('HGET', 'pki:{ca:issuing}:revoked', $s6) // '',
     qr/^5 \d+ 0$/, '  in the revoked hash');
@rev = grep { ($_->{type} // '') eq 'revoke' && ($_->{serial} // '') eq $s6 }
       $t->audit_entries;
is(join(', ', map { ($_->{operation} // '') . ' ' . ($_->{reason} // '') }
                  @rev[1 .. $#rev]),
   'release planned cessationOfOperation, due', '  audited as such')
    or diag(explain(\@rev));

# paging: every record appears once over small pages
my (%all, $pages);
my $cursor = '0';
do {
    $r = api('GET', "certificates?limit=1&cursor=$cursor");
    $all{$_->{serial}}++ for @{ $r->{json}{certificates} || [] };
    $cursor = $r->{json}{next_cursor} // '0';
} while ($r->{code} == 200 && $cursor ne '0' && ++$pages < 100);
ok($all{$s1} && $all{$s2} && $all{$s3}, 'paging with limit=1 sees all');
ok(!grep({ $_ != 1 } values %all), '  each once') or diag(explain(\%all));
$r = api('GET', 'certificates?limit=1&cursor=0.1');
is($r->{code}, 400, "an older version's SCAN cursor: 400");

# a page's work is the page's: keys that are no CA's certificates (nonces,
# orders, other CAs) cost it nothing.  The listing used to SCAN the whole
# keyspace until the page was full: seconds here, a pool thread held.
$t->redis_raw('EVAL', "for i = 1, 300000 do "
                      . "redis.call('SET', 'noise:' .. i, 'x') end", '0');
my $run = sub {
    ($t->redis_raw('INFO', 'stats') =~ /total_commands_processed:(\d+)/)[0]
};
for my $q ('limit=2', 'limit=5', 'limit=1&cursor=0.0&subject=nobody') {
    my $before = $run->();
    my $t0 = Time::HiRes::time();
    $r = api('GET', "certificates?$q");
    my $secs = Time::HiRes::time() - $t0;
    my $used = $run->() - $before - 1;
    is($r->{code}, 200, "$q with 300000 other keys");
    # the bound leaves room for the workers' own background work
    ok($used < 500, sprintf('  %d Redis commands, %.3f s', $used, $secs));
}
$t->redis_raw('EVAL', "for i = 1, 300000 do "
                      . "redis.call('DEL', 'noise:' .. i) end", '0');

my $log = PKITest::slurp($t->error_log) // '';
like($log, qr/pki admin: 200 .*admin "admin": \Q$s1\E/,
     'revocation audited in the error log');

# --- requests another site made, and names nobody verified ---------------------

my $port = $t->https_port;
for my $h (['Origin: https://evil.example', 'another Origin'],
           ['Origin: null', 'Origin null'],
           ['Sec-Fetch-Site: cross-site', 'Sec-Fetch-Site cross-site'],
           ['Sec-Fetch-Site: same-site', 'Sec-Fetch-Site same-site']) {
    my $x = $t->curl('POST', "$admin/acme/eab", user => 'admin:admin',
                     headers => [$h->[0]], quiet => 1);
    is($x->{code}, 403, "$h->[1]: 403");
}
like(PKITest::slurp($t->error_log) // '',
     qr/pki admin: refused a request made by another site \(Origin: "https:\/\/evil\.example"\)/,
     '  and the error log says why');
is($t->redis_raw('SCARD', 'pki:acme:eabs') + 0, 0, '  no EAB key made');

# a refused request's body is not parsed as the next request on the
# connection: a cross-site POST whose body is the start of another
# request ("POST acme/eab" taking the headers of the admin's own GET that
# follows, credentials and Sec-Fetch-Site included) smuggles nothing in
{
    require IO::Socket::SSL;
    require MIME::Base64;
    my $s = IO::Socket::SSL->new(PeerHost => '127.0.0.1', PeerPort => $port,
        SSL_ca_file => $t->pki . '/root.pem',
        SSL_verifycn_name => '127.0.0.1', Timeout => 20);
    ok($s, 'smuggling: connected') or diag(IO::Socket::SSL::errstr());
    my $auth = 'Authorization: Basic '
               . MIME::Base64::encode_base64('admin:admin', '') . "\r\n";
    my $inner = "POST /pki/admin/acme/eab HTTP/1.1\r\n"
                . "Content-Length: 0\r\nX-Swallow: ";
    print $s "POST /pki/admin/revoke HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\n" . $auth
        . "Origin: https://evil.example\r\n"
        . "Content-Type: application/json\r\n"
        . 'Content-Length: ' . length($inner) . "\r\n\r\n" . $inner
        . "GET /pki/admin/certificates?limit=1 HTTP/1.1\r\n"
        . "Host: 127.0.0.1:$port\r\n" . $auth
        . "Sec-Fetch-Site: same-origin\r\n\r\n";
    my (%a1, %a2);
    $a1{body} = $a2{body} = '';
    PKITest::read_http_answer($s, \%a1);
    PKITest::read_http_answer($s, \%a2);
    close $s;
    is($a1{status}, 403, 'smuggling: the cross-site POST is refused');
    is($a2{status}, 200, '  the admin\'s own GET is answered next');
    like($a2{body}, qr/"certificates"/, '  with its own answer')
        or diag($a2{body});
    is($t->redis_raw('SCARD', 'pki:acme:eabs') + 0, 0,
       '  no EAB key made by the body');
}

# nginx lets control bytes other than CR, LF and NUL through in a header
# value: the error log quotes them as '?', so that an ESC sequence in a
# refused Origin (clear screen, set title) does not reach a terminal
{
    my $pos = length(PKITest::slurp($t->error_log) // '');
    for my $h ("Origin: \x1b[2J\x1b]0;owned\x07https://evil.example",
               "Sec-Fetch-Site: cross\tsite\x7f") {
        my $x = $t->curl('POST', "$admin/acme/eab", user => 'admin:admin',
                         headers => [$h], quiet => 1);
        is($x->{code}, 403, 'a header with control bytes: 403');
    }
    my @l = grep { /refused a request made by another site/ }
            split /\n/, substr(PKITest::slurp($t->error_log) // '', $pos);
    is(scalar(@l), 2, '  both logged');
    is(scalar(grep { /[\x00-\x1f\x7f]/ } @l), 0,
       '  with no control byte in the line');
    like($l[0] // '',
         qr/\(Origin: "\?\[2J\?\]0;owned\?https:\/\/evil\.example"\)/,
         '  each one as ?');
    like($l[1] // '', qr/\(Sec-Fetch-Site: "cross\?site\?"\)/,
         '  (tab and DEL too)');
}

$r = $t->curl('GET', "$admin/certificates/$s1", user => 'admin:admin',
              headers => ["Origin: https://127.0.0.1:$port",
                          'Sec-Fetch-Site: same-origin'], quiet => 1);
is($r->{code}, 200, 'its own Origin, same-origin: 200');
$r = $t->curl('GET', "$admin/certificates/$s1", user => 'admin:admin',
              headers => ["Origin: http://127.0.0.1:$port"], quiet => 1);
is($r->{code}, 200, 'its own host with http:// (TLS ended by a proxy): 200');

# An admin location that evaluates $remote_user before the access phase: a
# name nobody verified must not count (nginx parses it from the header)
$t->stop_nginx;
{
    my $conf = $t->render_conf;
    my $pki = $t->{pki};
    $conf =~ s{(\n(\s*)location /pki/admin/ \{)}{
$2location /plain/ {
$2    alias ${\ $t->dir}/;
$2    access_log logs/plain.log combined;
$2}
$2location /ssi/ {
$2    ssi on;
$2    alias ${\ $t->dir}/;
$2}
$2location /pki/admin-open/ {
$2    pki_admin;
$2    set \$who \$remote_user;
$2    access_log logs/open.log combined;
$2}
$2location /pki/admin-lim/ {
$2    pki_admin;
$2    limit_req zone=adm;
$2    limit_req_status 503;
$2    access_log logs/lim.log combined;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2}
$2location /pki/admin-any/ {
$2    pki_admin;
$2    set \$who \$remote_user;
$2    satisfy any;
$2    allow 127.0.0.1;
$2    deny all;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2}
$2location /pki/admin-log/ {
$2    pki_admin;
$2    access_log logs/adminlog.log combined;
$2    add_header X-Who \$remote_user;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2}
$2location /pki/admin-set/ {
$2    pki_admin;
$2    set \$who \$remote_user;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2}$1} or die 'no admin location';
    $conf =~ s{(\nhttp \{\n)}{$1    limit_req_zone \$binary_remote_addr zone=adm:1m rate=1r/m;\n}
        or die 'no http block';
    $t->start_nginx($conf);
    my $base = "https://127.0.0.1:$port/pki";
    my $x = $t->curl('GET', "$base/admin-open/acme/eab",
                     user => 'nobody:nopass', quiet => 1);
    is($x->{code}, 403, 'no auth_basic, a forged name: 403 (no identity)')
        or diag($x->{body});
    $x = $t->curl('GET', "$base/admin-any/acme/eab",
                  user => 'nobody:nopass', quiet => 1);
    is($x->{code}, 403, 'satisfy any, allowed by address, a name auth_basic '
       . 'did not verify: 403') or diag($x->{body});
    $x = $t->curl('GET', "$base/admin-set/acme/eab",
                  user => 'admin:admin', quiet => 1);
    is($x->{code}, 200, 'auth_basic with $remote_user evaluated before: '
       . 'the verified name counts') or diag($x->{body});
    # the access log and add_header read $remote_user (nginx parses it
    # again) before the transaction log's handler: its requester stays
    my $n = grep { ($_->{requester} // '') eq 'admin' } $t->audit_entries;
    $x = $t->curl('POST', "$base/admin-log/acme/eab", user => 'admin:admin',
                  quiet => 1);
    is($x->{code}, 201, 'an EAB key made where $remote_user is logged');
    my @by = grep { ($_->{requester} // '') eq 'admin' } $t->audit_entries;
    ok(@by > $n, '  its audit entry names the admin')
        or diag(explain([($t->audit_entries)[-1]]));
    $x = $t->curl('GET', "$base/admin-set/acme/eab",
                  user => 'admin:wrong', quiet => 1);
    is($x->{code}, 401, '  a wrong password: 401');
    # refused before the access phase (limit_req), and logged with
    # $remote_user before the transaction log's own handler runs
    my @lim = map { $t->curl('GET', "$base/admin-lim/acme/eab",
                             user => 'forged:x', quiet => 1)->{code} } 1 .. 3;
    ok((grep { $_ == 503 } @lim), "limit_req refuses a forged name (@lim)");
    like(PKITest::slurp($t->dir . '/nginx/logs/open.log') // '',
         qr/ nobody \[/, '  the access log shows the name nginx parsed');
    ok(!grep({ ($_->{requester} // '') =~ /^(nobody|forged)$/ }
             $t->audit_entries),
       'the forged names are in no audit entry')
        or diag(explain([grep { ($_->{requester} // '') =~ /nobody|forged/ }
                         $t->audit_entries]));
    # another location's access log keeps nginx's $remote_user as it was
    PKITest::spew($t->dir . '/plain.txt', "x\n");
    $x = $t->curl('GET', "https://127.0.0.1:$port/plain/plain.txt",
                  user => 'someone:x', quiet => 1);
    is($x->{code}, 200, 'a static location without auth_basic');
    like(PKITest::slurp($t->dir . '/nginx/logs/plain.log') // '',
         qr/ someone \[/, '  its access log still names the user as sent');
    # a subrequest skips the access phase and carries its parent's
    # Authorization: the admin API refuses it
    $x = $t->curl('GET', "$base/admin-set/certificates/$s1",
                  user => 'admin:admin', quiet => 1);
    like($x->{body}, qr/"serial"/, 'the certificate as a request: 200');
    PKITest::spew($t->dir . '/inc.html', '<!--# include virtual='
                  . "\"/pki/admin-set/certificates/$s1\" -->\n");
    $x = $t->curl('GET', "https://127.0.0.1:$port/ssi/inc.html",
                  user => 'admin:admin', quiet => 1);
    like($x->{body}, qr/the admin API is not served to subrequests/,
         'the same URL as an SSI subrequest: refused');
    unlike($x->{body}, qr/"serial"/, '  and nothing of the certificate');
    unlike(PKITest::slurp($t->error_log) // '',
           qr/another module's access handler runs before/,
           'no warning about the order of the access handlers');
}

# --- over plain HTTP ----------------------------------------------------------
# The admin's Basic password, new EAB hmac_key values and SCEP challenges
# would cross the network in the clear: a pki_admin location in a server
# without TLS refuses every request (403) before its body is read, unless
# pki_admin_plain_http on says that TLS ends in front of nginx.
$t->stop_nginx;
{
    my $conf = $t->render_conf;
    my $pki = $t->{pki};
    my $hp = $t->http_port;
    $conf =~ s{(\n(\s*)listen 127\.0\.0\.1:$hp;\n)}{$1
$2location /pki/admin/ {
$2    pki_admin;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2}
$2location /pki/admin-proxied/ {
$2    pki_admin;
$2    pki_admin_plain_http on;
$2    auth_basic "PKI admin";
$2    auth_basic_user_file $pki/htpasswd-admin;
$2}
} or die 'no plain HTTP server';
    $t->start_nginx($conf);
    my $plain = "http://127.0.0.1:$hp/pki";
    my $eabs = $t->redis_raw('SCARD', 'pki:acme:eabs') + 0;
    my $pos = length(PKITest::slurp($t->error_log) // '');

    my $x = $t->curl('GET', "$plain/admin/certificates/$s1",
                     user => 'admin:admin', quiet => 1);
    is($x->{code}, 403, 'plain HTTP: GET certificates: 403');
    is($x->{headers}{'content-type'}, 'text/plain', '  text/plain');
    like($x->{body}, qr/requires HTTPS/, '  saying why');
    unlike($x->{body}, qr/"serial"/, '  and nothing of the certificate');

    $x = $t->curl('POST', "$plain/admin/acme/eab", user => 'admin:admin',
                  quiet => 1);
    is($x->{code}, 403, 'plain HTTP: POST acme/eab: 403');
    unlike($x->{body}, qr/hmac/i, '  no hmac_key in the answer');
    is($t->redis_raw('SCARD', 'pki:acme:eabs') + 0, $eabs,
       '  no EAB key made');
    my $list = $t->curl('GET', "$admin/acme/eab", user => 'admin:admin',
                        quiet => 1);
    is($list->{code}, 200, '  the list over HTTPS: 200');
    is(scalar(() = $list->{body} =~ /"kid"/g), $eabs,
       '  with no key added');

    my @l = grep { /pki admin: .*refused/ }
            split /\n/, substr(PKITest::slurp($t->error_log) // '', $pos);
    is(scalar(@l), 2, 'both refusals in the error log');
    like($l[0] // '', qr/\[error\].*no TLS.*"pki_admin_plain_http on"/,
         '  at error level, naming pki_admin_plain_http');

    # a body sent with the refused request is dropped, not parsed as the
    # next request on the connection
    my $s = IO::Socket::INET->new(PeerAddr => '127.0.0.1', PeerPort => $hp,
                                  Timeout => 20) or die "connect: $!";
    my $auth = MIME::Base64::encode_base64('admin:admin', '');
    my $body = '{"comment":"x"}';
    print $s "POST /pki/admin/acme/eab HTTP/1.1\r\nHost: localhost\r\n"
             . "Authorization: Basic $auth\r\n"
             . "Content-Type: application/json\r\n"
             . 'Content-Length: ' . length($body) . "\r\n\r\n$body"
             . "GET /pki/admin/certificates/$s1 HTTP/1.1\r\n"
             . "Host: localhost\r\nAuthorization: Basic $auth\r\n"
             . "Connection: close\r\n\r\n";
    my $all = '';
    {
        local $SIG{ALRM} = sub { die "timeout\n" };
        alarm 20;
        eval { while (defined(my $ln = <$s>)) { $all .= $ln } };
        alarm 0;
    }
    close $s;
    my @st = $all =~ m{^HTTP/1\.1 (\d{3})}mg;
    is("@st", '403 403', 'keep-alive: a POST with a body, then a GET: '
       . 'both 403 (the body was dropped)') or diag($all);
    is($t->redis_raw('SCARD', 'pki:acme:eabs') + 0, $eabs,
       '  no EAB key made');

    # TLS ends in front of nginx: served
    $x = $t->curl('GET', "$plain/admin-proxied/certificates/$s1",
                  user => 'admin:admin', quiet => 1);
    is($x->{code}, 200, 'pki_admin_plain_http on: GET certificates: 200')
        or diag($x->{body});
    like($x->{body}, qr/"serial"/, '  the certificate');
    $x = $t->curl('POST', "$plain/admin-proxied/acme/eab",
                  user => 'admin:admin', quiet => 1);
    is($x->{code}, 201, 'pki_admin_plain_http on: POST acme/eab: 201')
        or diag($x->{body});
    is($t->redis_raw('SCARD', 'pki:acme:eabs') + 0, $eabs + 1,
       '  one EAB key made');

    # the HTTPS location of the same config is unchanged
    $x = $t->curl('GET', "$admin/certificates/$s1", user => 'admin:admin',
                  quiet => 1);
    is($x->{code}, 200, 'over HTTPS: 200');
}

$t->stop_all;
done_testing();
