#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# RFC 9773 section 5: a renewal order names the certificate it replaces
# ("replaces"), and a certificate is replaced once.  The server refuses a
# replacement of a certificate already replaced by a finalized order; a
# merely pending order must not lock the certificate: a client that
# crashed after its newOrder (its order URL lost) renews again.
#
# Before, the pending order held the certificate's mark and every later
# renewal got 409 alreadyReplaced until that order was finalized, became
# invalid or expired.  Now:
#  - a newer renewal takes the mark over from a pending or ready order
#    whose finalization has not started (201, the mark names it);
#  - the order that lost the mark fails at its finalize with 409
#    alreadyReplaced, invalid, nothing issued; the newer one is issued;
#  - once issued, every renewal is refused (409);
#  - finalize locks the mark ("!" and the order) just before its order
#    moves to processing: a locked mark holds against a newer renewal
#    while its order is not invalid (then it is taken over);
#  - a renewal and the finalize of the order it takes the mark from,
#    sent at once, several times: never two certificates replace one.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use JSON::PP ();
use POSIX ();
use Time::HiRes qw(sleep);
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
$t->start_nginx($t->render_conf('--acme-http-port', $hport,
                                '--acme-tls-port', PKITest::free_port()));
my $c = ACMELoad::lab($t, $hport);
my $base = $c->{base};
my ($acct) = ($c->{kid} // '') =~ m{/acct/([\w-]+)$};

my $n = 0;
sub csr_der {
    my ($name) = @_;
    $n++;
    my $csr = $t->dir . "/c$n.csr";
    PKITest::openssl_or_die('req', '-new', '-newkey', 'ec', '-pkeyopt',
        'ec_paramgen_curve:P-256', '-nodes', '-keyout', $t->dir . "/c$n.key",
        '-subj', "/CN=$name", '-addext', "subjectAltName=DNS:$name",
        '-outform', 'DER', '-out', $csr);
    return PKITest::slurp($csr);
}

# a certificate for NAME: (its file, its certID, the key of its mark)
sub cert_for {
    my ($name) = @_;
    my $r = $c->issue($name, csr_der($name));
    ok($r->{ok}, "$name: issued") or diag(explain($r));
    return ('', 'x.y', 'none') if !$r->{ok};
    my $f = $t->save_first_cert($r->{pem}, $name);
    return ($f, $t->cert_id($f), "pki:{acme:$acct}:replaced:issuing:"
                                 . $t->x509_field($f, 'serial'));
}

sub renew {
    my ($certid, $name) = @_;
    return $c->_post("$base/new-order", { replaces => $certid,
        identifiers => [ { type => 'dns', value => $name } ] });
}

sub oid_of { return ($_[0] // '') =~ m{/order/[\w-]+/([\w-]+)$} ? $1 : '' }
sub mark { return $t->redis_raw('GET', $_[0]) =~ s/\s+//gr }
sub records { return scalar $t->redis_keys('pki:{ca:issuing}:cert:*') }

sub order_edit {
    my ($url, $fn) = @_;
    my $key = 'pki:{acme:' . $acct . '}:order:' . oid_of($url);
    my $j = JSON::PP->new;
    my $o = $j->decode($t->redis_raw('GET', $key) =~ s/\n\z//r);
    $fn->($o);
    $t->redis('SET', $key, $j->encode($o), 'KEEPTTL');
}

sub finalize {
    my ($o, $name) = @_;
    return $c->_post($o->{json}{finalize} // "$base/none",
                     { csr => encode_base64url(csr_der($name)) });
}

# --- a lost pending order does not block the renewal -----------------------

my ($f0, $id0, $mk0) = cert_for('rl0.example');

my $a = renew($id0, 'rl0.example');
is($a->{status}, 201, 'a renewal order') or diag($a->{content});
my $aurl = $a->{headers}{location};
is(mark($mk0), oid_of($aurl), '... holds the mark');

# the client crashed and lost $aurl: it renews again
my $b = renew($id0, 'rl0.example');
is($b->{status}, 201, 'a second renewal while the first is pending: 201')
    or diag($b->{content});
my $burl = $b->{headers}{location};
is(mark($mk0), oid_of($burl), '... the mark moves to the newer order');

# the first order (ready: its authorization is reused) lost the mark
my $before = records();
my $r = finalize($a, 'rl0.example');
is($r->{status}, 409, 'finalize of the order that lost the mark: 409');
is($r->{problem}, 'alreadyReplaced', '... alreadyReplaced');
is(records(), $before, '... nothing issued');
$r = $c->_post($aurl // "$base/none", undef);
is($r->{json}{status} // '', 'invalid', '... the order is invalid');
is(mark($mk0), oid_of($burl), '... the mark untouched');

$r = finalize($b, 'rl0.example');
is($r->{status}, 200, 'the newer renewal is finalized') or diag($r->{content});
$r = $c->_poll($burl // "$base/none", 'valid');
is($r->{json}{status} // '', 'valid', '... valid');
is(mark($mk0), '=' . oid_of($burl), '... the mark says issued');
is(records(), $before + 1, '... one certificate');

$r = renew($id0, 'rl0.example');
is($r->{status}, 409, 'a renewal of a replaced certificate: 409');
is($r->{problem}, 'alreadyReplaced', '... alreadyReplaced');

# --- a mark locked by a finalization holds --------------------------------

my ($f1, $id1, $mk1) = cert_for('rl1.example');
my $d = renew($id1, 'rl1.example');
is($d->{status}, 201, 'a renewal order of a second certificate')
    or diag($d->{content});
my $durl = $d->{headers}{location};

# its finalization locked the mark and has not moved the order yet
$t->redis('SET', $mk1, '!' . oid_of($durl), 'KEEPTTL');
$r = renew($id1, 'rl1.example');
is($r->{status}, 409, 'a renewal while the holder is being finalized: 409');
is($r->{problem}, 'alreadyReplaced', '... alreadyReplaced');
is(mark($mk1), '!' . oid_of($durl), '... the lock untouched');

# processing: holds as well
order_edit($durl, sub { $_[0]{status} = 'processing';
                        $_[0]{finStarted} = time; });
$r = renew($id1, 'rl1.example');
is($r->{status}, 409, 'a renewal while the holder is processing: 409');

# the finalization failed (the order invalid): taken over
order_edit($durl, sub { $_[0]{status} = 'invalid' });
$r = renew($id1, 'rl1.example');
is($r->{status}, 201, 'a locked mark of an invalid order is taken over')
    or diag($r->{content});
is(mark($mk1), oid_of($r->{headers}{location}), '... by the new order');

# a locked mark of its own does not stop its order's finalize (a retry
# after a failure before the move)
my $eurl = $r->{headers}{location};
$t->redis('SET', $mk1, '!' . oid_of($eurl), 'KEEPTTL');
$r = finalize($r, 'rl1.example');
is($r->{status}, 200, 'finalize of the order holding the lock: 200')
    or diag($r->{content});
$r = $c->_poll($eurl // "$base/none", 'valid');
is($r->{json}{status} // '', 'valid', '... valid');
is(mark($mk1), '=' . oid_of($eurl), '... the mark says issued');

# --- a renewal and the finalize it takes the mark from, at once -----------

# Each round: order A holds the mark and is ready; a child finalizes A
# while another makes order B with the same replaces.  Then B is
# finalized.  Of A and B at most one is valid, and the certificate is
# replaced by exactly one certificate.
my $rounds = 4;
my ($ok_rounds, $issued_total) = (0, 0);
for my $i (1 .. $rounds) {
    my $name = "rr$i.example";
    my ($fx, $idx, $mkx) = cert_for($name);
    my $ax = renew($idx, $name);
    next if $ax->{status} != 201;
    my $axurl = $ax->{headers}{location};
    my $csr = csr_der($name);
    my $dir = $t->dir . "/race$i";
    mkdir $dir;
    my $recs = records();
    pipe(my $rd, my $wr) or die "pipe: $!";
    my @pids;
    for my $job ('fin', 'new') {
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            close $wr;
            $c->{http} = HTTP::Tiny->new(verify_SSL => 1, timeout => 20,
                SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
            $c->{nonce} = $c->_fresh_nonce;
            my $x = <$rd>;                          # the barrier
            my $res = $job eq 'fin'
                ? $c->_post($ax->{json}{finalize},
                            { csr => encode_base64url($csr) })
                : renew($idx, $name);
            PKITest::spew("$dir/$job", ($res->{status} // 0) . ' '
                          . ($res->{headers}{location} // '-') . ' '
                          . ($res->{json}{finalize} // '-'));
            POSIX::_exit(0);
        }
        push @pids, $pid;
    }
    close $rd;
    sleep 0.5;
    close $wr;
    waitpid($_, 0) for @pids;
    my ($fst) = split / /, PKITest::slurp("$dir/fin") // '0';
    my ($nst, $burlx, $bfin) = split / /, PKITest::slurp("$dir/new") // '0';
    my $bvalid = 0;
    if ($nst == 201) {
        my $fb = $c->_post($bfin, { csr => encode_base64url(csr_der($name)) });
        if ($fb->{status} == 200) {
            $bvalid = ($c->_poll($burlx, 'valid')->{json}{status} // '')
                      eq 'valid';
        }
    }
    my $avalid = ($c->_poll($axurl, 'valid')->{json}{status} // '')
                 eq 'valid';
    my $made = records() - $recs;
    $issued_total += $made;
    note("round $i: finalize A $fst, newOrder B $nst, A valid $avalid, "
         . "B valid $bvalid, certificates $made, mark " . mark($mkx));
    $ok_rounds++ if $avalid + $bvalid == 1 && $made == 1
                    && mark($mkx) eq '=' . oid_of($avalid ? $axurl : $burlx);
}
is($ok_rounds, $rounds, "$rounds races of a finalize and a renewal: each "
   . 'time exactly one of the two orders issued, the mark names it');

$t->stop_all;
done_testing();
