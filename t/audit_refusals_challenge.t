#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A new one-time SCEP challenge whose answer cannot be sent is withdrawn,
# and the transaction log says so.  The admin API's POST scep/challenges
# stores the challenge in Redis (audited as created), then answers with
# it, the one time it is shown; an answer that could not be sent left it
# usable for its ttl (up to 30 days), the glue trying to disable an EAB
# key of id "" instead.  Here an LD_PRELOAD shim makes nginx's SSL_write()
# of the answer's body fail (EPIPE), keeping a copy for the test: the
# client gets no challenge, the error log names it (by id) as withdrawn
# with no alert, Redis no longer holds it, the transaction log has the
# withdrawal and the admin entry says why, neither log holds the
# challenge, and a SCEP enrollment with it is refused.  The challenge made
# after the shim let an answer through stays in Redis.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Digest::SHA qw(sha256_hex);
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
my $pki = $t->pki;
my $flag = $t->dir . '/fail-challenge';
my $seen = $t->dir . '/seen';

# the write of a buffer holding "challenge" fails while $flag exists; what
# it would have sent is kept in $seen (the test's view, nobody else's)
my ($shim, $cerr) = $t->ssl_write_fail_shim('chalfail', 'challenge', $flag,
                                            $seen);
ok($shim, 'SSL_write() shim built') or diag($cerr);

$t->start_nginx($t->render_conf('--workers', 1), preload => [$shim]);
my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';

sub new_challenge {
    return $t->curl('POST', "$admin/scep/challenges", user => 'admin:admin',
                    data => '{"ttl": 600, "cn": "lost1"}', quiet => 1,
                    headers => ['Content-Type: application/json']);
}

spew($flag, '');
my $r = new_challenge();
unlike($r->{body} // '', qr/challenge/, "the answer did not leave "
       . "(HTTP $r->{code})");

my ($pw) = (slurp($seen) // '') =~ /"challenge":"([0-9a-f]{32})"/;
ok($pw, 'the shim saw the challenge the client did not get');
$pw //= 'none';
my $hash = sha256_hex($pw);
my $id = substr($hash, 0, 16);

my $line;
my $deadline = time + 15;
while (time < $deadline) {
    ($line) = grep { /pki admin: the answer with new SCEP challenge/ }
              split /\n/, slurp($t->error_log) // '';
    last if $line;
    sleep 0.2;
}
my $want = qq{new SCEP challenge "$id" could not be sent: }
           . 'the challenge is withdrawn,';
like($line // '', qr/\[error\].*\Q$want\E/,
     'the error log names the challenge (its id) as withdrawn')
    or diag($line);

my $errlog = slurp($t->error_log) // '';
unlike($errlog, qr/\[alert\]/, '  no alert');
unlike($errlog, qr/EAB/, '  no word of an EAB key');
unlike($errlog, qr/$pw/, '  the challenge is not in the error log');

is(scalar $t->redis_keys("*scep:chal:$hash"), 0,
   'Redis no longer holds the challenge');

# the transaction log: its making, its withdrawal, the admin request
my @e = $t->audit_entries("$pki/audit");
my ($made) = grep { ($_->{operation} // '') eq 'scep-challenge-create' } @e;
like($made->{reason} // '', qr/challenge $id created/,
     'the transaction log has the challenge made') or diag(explain(\@e));
my ($gone) = grep { ($_->{operation} // '') eq 'scep-challenge-withdraw' }
             @e;
like($gone->{reason} // '',
     qr/^one-time\ SCEP\ challenge\ $id\ withdrawn:
        \ its\ answer\ could\ not\ be\ sent$/x,
     '  and withdrawn') or diag(explain(\@e));
is($gone->{requester} // '', 'admin', '  by the admin who made it');
is($gone->{protocol} // '', 'admin', '  through the admin API');
my ($req) = grep { ($_->{protocol} // '') eq 'admin'
                   && ($_->{operation} // '') eq
                      'POST /pki/admin/scep/challenges' } @e;
like($req->{reason} // '',
     qr/new SCEP challenge could not be sent: the challenge is withdrawn/,
     'the admin entry says why') or diag(explain($req));
isnt($req->{status} // '', 'ok', '  not as a success');
unlike(slurp("$pki/audit/audit.log") // '', qr/$pw/,
       'the challenge is not in the transaction log');

# a SCEP enrollment with it is refused
SKIP: {
    skip 'scepclient not installed (package scep)', 2
        if !-x '/usr/bin/scepclient';

    my $ra_fp = do {
        my ($rc, $o) = run_cmd(['openssl', 'x509', '-in', "$pki/ra.pem",
                                '-noout', '-fingerprint', '-sha256']);
        $o =~ /=([0-9A-F:]+)/ ? lc($1 =~ s/://gr) : '';
    };
    my $d = $t->dir . '/sc-lost1';
    mkdir $d;
    my ($rc, $out, $err) = run_cmd(['sh', '-c', 'cd "$0" && exec "$@"', $d,
        'scepclient', '-server-url',
        'http://127.0.0.1:' . $t->http_port . '/scep',
        '-private-key', "$d/key.pem", '-certificate', "$d/cert.pem",
        '-cn', 'lost1', '-ca-fingerprint', $ra_fp, '-challenge', $pw],
        timeout => 30);
    isnt($rc, 0, 'a SCEP enrollment with the withdrawn challenge is refused');
    like($out . $err, qr/badRequest/, '  badRequest') or diag($out . $err);
}

# the same answer, let through: the challenge is shown and stays
unlink $flag;
$r = new_challenge();
is($r->{code}, 201, 'a challenge whose answer was sent: 201');
my $j = eval { decode_json($r->{body}) } || {};
like($j->{challenge} // '', qr/^[0-9a-f]{32}$/, '  with the challenge');
is(scalar $t->redis_keys('*scep:chal:' . sha256_hex($j->{challenge} // '')),
   1, '  kept in Redis');

$t->stop_nginx;

done_testing();
