#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME finalize when Redis runs a command but its answer is lost (nginx
# talks to Redis through t/lib/redis_drop_proxy.py, which drops the answer
# to one armed command and closes the connection; hiredis then sends the
# command again on a new connection, which finds it done):
#  - the certificate record's commit (the script with PERSIST): the
#    certificate is committed, so finalize answers 200 and the order is
#    valid with that certificate (it was 500 and the order invalid, while
#    OCSP called the certificate good);
#  - the commit's answer lost and its read-back's too (twice: the retry
#    on a new connection): the record is committed but nobody will hold
#    it, so it is withdrawn (revoked, cessationOfOperation, marked);
#    finalize 500, the order invalid;
#  - the order's move from ready to processing (the script that answers 2
#    for a lost authorization): nothing is signed, the order is ready
#    again at once and the client gets 503 (it was 403 "being finalized",
#    then the order stuck in processing and turned invalid 30 s later);
#    the retry issues;
#  - with a state store of its own, the serial reservation (which then
#    links the order to its serial): run twice, it stands;
#  - with a state store of its own, an account update's copy write held
#    back in the proxy (its "HOLD" mode) until a keyChange has committed
#    and written its copy: the late, older copy is not taken, so the old
#    key stays refused; the keyChange that lost against the older copy
#    put the durable account in the copy instead of dropping it;
#  - with a state store of its own, an account deactivation whose answer
#    is lost: 200, and its open authorization is deactivated too.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
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

my $hport = PKITest::free_port();
my $conf = $t->render_conf('--acme-http-port', $hport,
                           '--acme-tls-port', PKITest::free_port());
my $sock = $t->redis_sock;
$conf =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
$t->start_nginx($conf);

my $c = ACMELoad::lab($t, $hport);
my ($base, $www) = ($c->{base}, $c->{www});

# an order for NAME made ready; returns (order URL, finalize URL)
sub ready_order {
    my ($name) = @_;
    my $r = $c->ready($name);
    is($r->{ready}{json}{status} // '', 'ready', "$name: order ready");
    return ($r->{headers}{location}, $r->{json}{finalize});
}

sub csr_for {
    my ($name) = @_;
    my ($der) = $t->make_csr($name, subj => '/', san => "DNS:$name");
    return { csr => encode_base64url($der) };
}

sub fired {
    my ($what) = @_;
    ok(!-e $arm, "$what: the proxy dropped that answer");
    like(PKITest::slurp($t->dir . '/proxy.log') // '', qr/answer dropped/,
         "$what: ... and says so");
}

# Each pattern is a piece of one script's text only: the CRL the worker
# builds meanwhile runs scripts too (its store script PERSISTs the DER,
# and a bare 'PERSIST' once dropped its answer instead of the commit's)
my $commit = "redis.call('PERSIST', KEYS[1])";

# --- the record's commit ---------------------------------------------------------

{
    my ($order, $fin) = ready_order('commit.example.test');
    PKITest::spew($arm, $commit);
    my $f = $c->_post($fin, csr_for('commit.example.test'));
    fired('commit');
    is($f->{status}, 200, 'commit answer lost: finalize 200')
        or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... the order is valid');
    my $cr = $c->_post($f->{json}{certificate} // '', undef);
    is($cr->{status}, 200, '... its certificate downloads');
    my $leaf = $t->save_first_cert($cr->{content} // '', 'commit-leaf');
    my $serial = $leaf ? $t->x509_field($leaf, 'serial') : '';
    is($t->redis_hash("pki:{ca:issuing}:cert:$serial")->{status} // '', 'good',
       '... and its record is good');
    is(scalar(grep { ($t->redis_hash($_)->{status} // '') eq 'good' }
              $t->redis_keys('pki:{ca:issuing}:cert:*')), 1,
       '... the only certificate issued');
    like(PKITest::slurp($t->error_log) // '', qr/yet it is committed/,
         '... and the error log says what happened');
}

# --- the commit's answer lost, and its read-back's twice --------------------------

# Nothing tells whether the commit ran (it did): the certificate, which
# nobody will hold, is withdrawn, or the order's recovery could hand it
# out later.
{
    my ($order, $fin) = ready_order('unsure.example.test');
    my %before = map { $_ => 1 } $t->redis_keys('pki:{ca:issuing}:cert:*');
    PKITest::spew($arm, "SEQ\n$commit\n"
                . '\r\nHGETALL\r\n' . "\n" . '\r\nHGETALL\r\n');
    my $f = $c->_post($fin, csr_for('unsure.example.test'));
    ok(!-e $arm, 'unsure commit: the proxy dropped the three answers');
    is($f->{status}, 500, '... finalize answers 500') or diag($f->{content});
    like($f->{content} // '', qr/serverInternal/, '... serverInternal');
    my @new = grep { !$before{$_} } $t->redis_keys('pki:{ca:issuing}:cert:*');
    is(scalar @new, 1, '... one record written') or diag("@new");
    my $h = @new ? $t->redis_hash($new[0]) : {};
    is($h->{status} // '', 'revoked', '... revoked');
    is($h->{reason} // '', '5', '... cessationOfOperation');
    is($h->{withdrawn} // '', '1', '... marked withdrawn');
    like(PKITest::slurp($t->error_log) // '',
         qr/read-back failed.*withdrawn \(revoked, cessationOfOperation\)/,
         '... and the error log says so');
    my $o = $c->_post($order, undef);
    is($o->{json}{status} // '', 'invalid', '... the order is invalid')
        or diag($o->{content});
    ok(!$o->{json}{certificate}, '... with no certificate to download');
}

# --- the order's move to processing ----------------------------------------------

{
    my ($order, $fin) = ready_order('move.example.test');
    my $n = scalar $t->redis_keys('pki:{ca:issuing}:cert:*');
    PKITest::spew($arm, "az.status ~= 'valid'");
    my $f = $c->_post($fin, csr_for('move.example.test'));
    fired('move');
    is($f->{status}, 503, 'move answer lost: finalize 503 (retry)')
        or diag($f->{content});
    my $o = $c->_post($order, undef);
    is($o->{json}{status} // '', 'ready', '... the order is ready again');
    $f = $c->_post($fin, csr_for('move.example.test'));
    is($f->{status}, 200, '... the retry issues') or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... the order is valid');
    is(scalar(grep { ($t->redis_hash($_)->{status} // '') eq 'good' }
              $t->redis_keys('pki:{ca:issuing}:cert:*')), 2,
       '... one more certificate, the retry\'s');
}

is(scalar $t->redis_keys('pki:{ca:*}:acmefin:*'), 0,
   'one store for everything: no order links');

# --- the reservation, with a state store of its own (acme_redis) -----------------

# The reservation then also links the order to its serial (t/acme_state_loss.t);
# run twice, it finds its own link and stands (no serial burnt, no wait).
$t->stop_nginx;
{
    my $split = $t->render_conf('--acme-http-port', $hport,
                                '--acme-tls-port', PKITest::free_port(),
                                '--acme-redis', "unix:$proxy namespace=acmestate:");
    $split =~ s{\Q$sock\E}{$proxy}g or die 'no Redis socket in the config';
    $t->start_nginx($split);
    my ($order, $fin) = ready_order('reserve.example.test');
    my $n = scalar $t->redis_keys('pki:{ca:issuing}:serial:*');
    PKITest::spew($arm, "'HMGET', KEYS[3], 's', 't', 'a'");
    my $f = $c->_post($fin, csr_for('reserve.example.test'));
    fired('reservation');
    is($f->{status}, 200, 'reservation answer lost: finalize 200')
        or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... the order is valid');
    is(scalar $t->redis_keys('pki:{ca:issuing}:serial:*'), $n + 1,
       '... one serial reserved');
    unlike(PKITest::slurp($t->error_log) // '', qr/collided/,
           '... none taken for a collision');

    # A late writer of the account's copy: an update commits the durable
    # account, then its copy write waits in the proxy while a keyChange
    # commits and writes its own copy.  The update's copy, older, lands
    # last and is not taken: the old key does not sign again.
    my $u = ACMELoad->new(t => $t, base => $c->{base});
    ok($u->account->{ok}, 'late copy: an account');
    my ($id) = ($u->{kid} // '') =~ m{/acct/([\w-]+)$};
    my $copy = sub { $t->redis_raw('GET', "acmestate:{acme:$id}:acct")
                     =~ s/\n\z//r };
    is($u->_post($u->{kid}, undef)->{status}, 200, '... read (its copy made)');
    my $k1 = $u->{key};
    my $t1 = $k1->export_key_jwk_thumbprint('SHA256');
    PKITest::spew($arm, "HOLD\nmailto:late\@example.test\n$t1\n"
                . "o.status ~= 'valid'\n");
    my $pid = fork() // die "fork: $!";
    if (!$pid) {
        my $w = ACMELoad->new(t => $t, base => $c->{base});
        @$w{qw(key kid)} = @$u{qw(key kid)};
        my $r = $w->_post($u->{kid},
                          { contact => ['mailto:late@example.test'] });
        POSIX::_exit($r->{status} == 200 ? 0 : 1);
    }
    for (1 .. 200) { last if !-e $arm; sleep 0.05 }
    ok(!-e $arm, '... an update committed, its copy write held');
    my $r = $u->key_change;
    is($r->{status}, 409, '... a keyChange against the older copy: 409')
        or diag($r->{content});
    like($copy->(), qr/late\@example\.test/,
         '... which put the durable account in the copy (not dropped)');
    $r = $u->key_change;
    is($r->{status}, 200, '... the keyChange again: 200')
        or diag($r->{content});
    PKITest::spew("$arm.release", '');
    waitpid($pid, 0);
    is($?, 0, '... the held update answered 200');
    my $t2 = $u->{key}->export_key_jwk_thumbprint('SHA256');
    like($copy->(), qr/\Q$t2\E/, '... the copy keeps the new key');
    is($u->_post($u->{kid}, undef)->{status}, 200, '... which signs');
    my $old = ACMELoad->new(t => $t, base => $c->{base});
    @$old{qw(key kid)} = ($k1, $u->{kid});
    my $o = $old->_post($u->{kid}, undef);
    isnt($o->{status}, 200, '... and the old key does not');
    unlink "$arm.release";

    # A deactivation whose answer is lost: sent again, the compare-and-set
    # finds the account changed (by itself).  The deactivation stands, so
    # its open work goes with it now (a retry would only be refused as
    # from a deactivated account): 200, and its order's pending
    # authorization is deactivated.
    my $d = ACMELoad->new(t => $t, base => $c->{base});
    ok($d->account->{ok}, 'lost deactivation: an account');
    my $no = $d->_post("$c->{base}/new-order", { identifiers => [
        { type => 'dns', value => 'lost-deact.example.test' } ] });
    my ($dacct, $daz) = ($no->{json}{authorizations}[0] // '')
        =~ m{/authz/([\w-]+)/([\w-]+)$};
    PKITest::spew($arm, '"status":"deactivated"');
    $r = $d->_post($d->{kid}, { status => 'deactivated' });
    fired('deactivation');
    is($r->{status}, 200, '... the deactivation answered 200')
        or diag($r->{content});
    is($r->{json}{status} // '', 'deactivated', '... deactivated');
    like($t->redis_raw('GET', "acmestate:{acme:$dacct}:authz:$daz") // '',
         qr/"status":"deactivated"/,
         '... its pending authorization deactivated with it');
}

unlike(PKITest::slurp($t->error_log) // '', qr/\[(alert|crit|emerg)\]|exited on signal/,
       'no alert in the error log');

$t->stop_all;
done_testing();
