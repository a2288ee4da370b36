#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# RFC 9773 section 5 (see t/acme_replaces_lost.t): finalize locks the
# replaced certificate's mark just before its order moves to processing,
# so that a newer renewal cannot take the mark over from an order that is
# being finalized.  A finalization that fails after locking (here: the
# answer to its move to processing is lost, t/lib/redis_drop_proxy.py,
# and the order is ready again) left the lock behind, and every renewal
# got 409 alreadyReplaced until that order was finalized or expired.
# Each finalization's lock now carries a token of its own, and a failed
# one takes back only its own token:
#  - a finalization that failed after locking leaves the plain mark: a
#    newer renewal takes it over (201; it was 409), the old order then
#    fails at its finalize (409, nothing issued), the newer one issues;
#  - a lock written by an older version (no token) is kept: the renewal
#    still gets 409, and the order's retry issues;
#  - two finalizations of one order at once, the first held between its
#    lock and its move (the proxy holds its move), the second failing:
#    the first one's lock stands (a renewal gets 409 meanwhile; undoing
#    it would let the renewal in and the first finalization issue too),
#    and the first one issues once released;
#  - with a state store of its own (marks "OID@TAG"), the same as the
#    first; a lock of a gone order of this store is taken over, of another
#    store's order held.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use POSIX ();
use Time::HiRes qw(sleep);
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();
plan(skip_all => 'python3 not installed') if !-x '/usr/bin/python3';

my $t = PKITest->new;
$t->start_redis;
my $arm = $t->dir . '/arm';
my $proxy = $t->start_redis_proxy($arm);

# a Redis timeout longer than the move the proxy holds (part 3)
my $hport = PKITest::free_port();
my $conf = $t->render_conf('--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port(),
                           '--redis-timeout', '10s');
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
$t->start_nginx($conf);

my $c = ACMELoad::lab($t, $hport);
my $base = $c->{base};
my ($acct) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};

# the move of an order to processing (pki_lua_order_move), and nothing else
my $move = "az.status ~= 'valid'";

my $n = 0;
sub csr_der {
    my ($name) = @_;
    $n++;
    return ($t->make_csr("c$n", subj => "/CN=$name",
                         san => "DNS:$name"))[0];
}

# a certificate for NAME: (its certID, the key of its mark)
sub cert_for {
    my ($name) = @_;
    my $r = $c->issue($name, csr_der($name));
    ok($r->{ok}, "$name: issued") or diag(explain($r));
    return ('x.y', 'none') if !$r->{ok};
    my $f = $t->save_first_cert($r->{pem}, $name);
    return ($t->cert_id($f), "pki:{acme:$acct}:replaced:issuing:"
                             . $t->x509_field($f, 'serial'));
}

sub renew {
    my ($certid, $name) = @_;
    return $c->_post("$base/new-order", { replaces => $certid,
        identifiers => [ { type => 'dns', value => $name } ] });
}

sub oid_of { return ($_[0] // '') =~ m{/order/[\w-]+/([\w-]+)$} ? $1 : '' }
sub mark { return ($t->redis_raw('GET', $_[0]) // '') =~ s/\s+//gr }
sub records { return scalar $t->redis_keys('pki:{ca:issuing}:cert:*') }

sub finalize {
    my ($o, $name) = @_;
    return $c->_post($o->{json}{finalize} // "$base/none",
                     { csr => encode_base64url(csr_der($name)) });
}

sub fired {
    my ($what) = @_;
    for (1 .. 100) { last if !-e $arm; sleep 0.05 }
    ok(!-e $arm, "$what: the proxy took the armed command");
}

# --- a finalization that failed after locking --------------------------------

my ($id1, $mk1) = cert_for('ru1.example');
my $a = renew($id1, 'ru1.example');
is($a->{status}, 201, 'a renewal order') or diag($a->{content});
my $aurl = $a->{headers}{location};
my $aid = oid_of($aurl);
is(mark($mk1), $aid, '... holds the mark');

my $before = records();
PKITest::spew($arm, $move);
my $r = finalize($a, 'ru1.example');
fired('move answer lost');
is($r->{status}, 503, '... its finalize fails after locking: 503')
    or diag($r->{content});
is($c->_post($aurl, undef)->{json}{status} // '', 'ready',
   '... the order is ready again');
is(mark($mk1), $aid, '... and the mark is plain again (not locked)');

my $b = renew($id1, 'ru1.example');
is($b->{status}, 201, 'a newer renewal takes the mark over (it was 409)')
    or diag($b->{content});
my $burl = $b->{headers}{location};
is(mark($mk1), oid_of($burl), '... the mark names it');

$r = finalize($a, 'ru1.example');
is($r->{status}, 409, 'the finalize of the order that lost it: 409');
is($r->{problem}, 'alreadyReplaced', '... alreadyReplaced');
is(records(), $before, '... nothing issued');

$r = finalize($b, 'ru1.example');
is($r->{status}, 200, 'the newer renewal is finalized') or diag($r->{content});
is($c->_poll($burl // "$base/none", 'valid')->{json}{status} // '', 'valid',
   '... valid');
is(mark($mk1), '=' . oid_of($burl), '... the mark says issued');
is(records(), $before + 1, '... one certificate');

# --- a lock of an older version (no token) is kept ------------------------

my ($id2, $mk2) = cert_for('ru2.example');
$a = renew($id2, 'ru2.example');
is($a->{status}, 201, 'a renewal order of a second certificate')
    or diag($a->{content});
$aurl = $a->{headers}{location};
$aid = oid_of($aurl);
$t->redis('SET', $mk2, "!$aid", 'KEEPTTL');

PKITest::spew($arm, $move);
$r = finalize($a, 'ru2.example');
fired('old lock, move answer lost');
is($r->{status}, 503, '... its finalize fails after locking: 503')
    or diag($r->{content});
like(mark($mk2), qr/^!\Q$aid\E(\@.*)?$/, '... the older lock stays');
$r = renew($id2, 'ru2.example');
is($r->{status}, 409, '... a renewal: 409');
$r = finalize($a, 'ru2.example');
is($r->{status}, 200, '... the retry issues') or diag($r->{content});
is($c->_poll($aurl, 'valid')->{json}{status} // '', 'valid', '... valid');
is(mark($mk2), "=$aid", '... the mark says issued');

# --- two finalizations of one order: the failed one undoes no other --------

my ($id3, $mk3) = cert_for('ru3.example');
$a = renew($id3, 'ru3.example');
is($a->{status}, 201, 'a renewal order of a third certificate')
    or diag($a->{content});
$aurl = $a->{headers}{location};
$aid = oid_of($aurl);
$before = records();

# the first finalization locks, then its move waits in the proxy
PKITest::spew($arm, "HOLD one\n$move");
my $csr = csr_der('ru3.example');
my $out = $t->dir . '/first';
my $pid = fork() // die "fork: $!";
if ($pid == 0) {
    $c->{http} = HTTP::Tiny->new(verify_SSL => 1, timeout => 30,
        SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
    $c->{nonce} = undef;
    my $f = $c->_post($a->{json}{finalize}, { csr => encode_base64url($csr) });
    PKITest::spew($out, $f->{status} // 0);
    POSIX::_exit(0);
}
fired('first finalization held at its move');
my $lock = mark($mk3);
like($lock, qr/^!\Q$aid\E\@:[\w-]+$/, '... it locked the mark, with its token')
    or diag($lock);

# the second one locks too, and its move's answer is lost: it fails
PKITest::spew($arm, $move);
$r = finalize($a, 'ru3.example');
fired('second finalization, move answer lost');
isnt($r->{status}, 200, '... the second finalization fails')
    or diag($r->{content});
is(mark($mk3), $lock, '... the first one\'s lock stands');
$r = renew($id3, 'ru3.example');
is($r->{status}, 409, '... a renewal meanwhile: 409') or diag($r->{content});

PKITest::spew("$arm.release.one", '');
waitpid($pid, 0);
is(PKITest::slurp($out) // '', '200', 'the first finalization, released: 200');
is($c->_poll($aurl, 'valid')->{json}{status} // '', 'valid', '... valid');
is(mark($mk3), "=$aid", '... the mark says issued');
is(records(), $before + 1, '... one certificate');

# --- with a state store of its own (acme_redis): marks carry its tag --------

my $err = PKITest::slurp($t->error_log) // '';
$t->stop_nginx;
$conf = $t->render_conf('--acme-http-port', $hport,
                        '--acme-tls-port', PKITest::free_port(),
                        '--redis-timeout', '10s',
                        '--acme-redis', "unix:$proxy namespace=acmestate:");
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
$t->start_nginx($conf);

my ($id4, $mk4) = cert_for('ru4.example');
$a = renew($id4, 'ru4.example');
is($a->{status}, 201, 'own state store: a renewal order')
    or diag($a->{content});
$aid = oid_of($a->{headers}{location});
my $plain = mark($mk4);
like($plain, qr/^\Q$aid\E\@[\w-]+$/, '... its mark names it with the tag');
my ($tag) = $plain =~ /(\@[\w-]+)$/;

PKITest::spew($arm, $move);
$r = finalize($a, 'ru4.example');
fired('own state store, move answer lost');
is($r->{status}, 503, '... its finalize fails after locking: 503')
    or diag($r->{content});
is(mark($mk4), $plain, '... and the mark is plain again, with its tag');
$b = renew($id4, 'ru4.example');
is($b->{status}, 201, '... a newer renewal takes it over')
    or diag($b->{content});
$r = finalize($b, 'ru4.example');
is($r->{status}, 200, '... and is finalized') or diag($r->{content});

# locks of orders that are gone: this store's is taken over, another
# store's (a tag of another location) holds
my ($id5, $mk5) = cert_for('ru5.example');
$a = renew($id5, 'ru5.example');
$t->redis('SET', $mk5, "!goneGoneGone1234$tag:tokentokentoken1", 'KEEPTTL');
$b = renew($id5, 'ru5.example');
is($b->{status}, 201, 'a lock of a gone order of this store: taken over')
    or diag($b->{content});
$t->redis('SET', $mk5, '!goneGoneGone1234@elsewhere123:tokentokentoken1',
          'KEEPTTL');
$b = renew($id5, 'ru5.example');
is($b->{status}, 409, 'a lock of an order of another store: holds')
    or diag($b->{content});
like($b->{content} // '', qr/order goneGoneGone1234 of another/,
     '... named without its tag and tokens');

unlike($err . (PKITest::slurp($t->error_log) // ''),
       qr/\[(alert|crit|emerg)\]|exited on signal/,
       'no alert in the error log');

$t->stop_all;
done_testing();
