#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME with its state in a store of its own (acme_redis, run with
# appendfsync everysec) that loses its last second in a crash, played here
# by putting an order's stored text back to what it was, or deleting it.
# The serial reservation links the order to its serial in the certificate
# store (pki_redis), so:
#  - a client that saw the order valid downloads its certificate although
#    the order reads ready again, or is gone (it was 404);
#  - a second finalize of the order completes it from the record and signs
#    nothing (it was a second certificate);
#  - a finalization whose move to processing was lost, still running,
#    makes another one wait (403 orderNotReady, Retry-After), and a dead
#    one is taken over after 30 s, its pending record deleted;
#  - with one store for everything no link is written.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use MIME::Base64 qw(encode_base64url);
use PKITest;
use ACMELoad;

plan(skip_all => 'CryptX / HTTP::Tiny not installed')
    if !ACMELoad::available();

my $t = PKITest->new;
$t->start_redis;
my $hport = PKITest::free_port();
$t->start_nginx($t->render_conf(
    '--acme-http-port', $hport, '--acme-tls-port', PKITest::free_port(),
    '--acme-redis', 'unix:' . $t->redis_sock . ' namespace=acmestate:'));

my $c = ACMELoad::lab($t, $hport);
my ($base, $www) = ($c->{base}, $c->{www});
my ($acct) = ($c->{kid} // '') =~ m{/([^/]+)$};
ok($acct, 'its id');

# an order for NAME made ready; returns (order URL, finalize URL, its key
# in the state store)
sub ready_order {
    my ($name) = @_;
    my $r = $c->ready($name);
    is($r->{ready}{json}{status} // '', 'ready', "$name: order ready");
    my $url = $r->{headers}{location} // '';
    my ($oid) = $url =~ m{/([^/]+)$};
    return ($url, $r->{json}{finalize}, "acmestate:{acme:$acct}:order:$oid",
            $oid);
}

# a CSR for NAME; with KEY (a key file) under that key, else a new one
sub csr_for {
    my ($name, $key) = @_;
    my $der;
    if ($key) {
        my $f = $t->dir . "/$name.reuse.csr.der";
        my ($rc, $out, $err) = PKITest::run_cmd(
            ['openssl', 'req', '-new', '-key', $key, '-subj', '/',
             '-addext', "subjectAltName=DNS:$name", '-outform', 'DER',
             '-out', $f]);
        die "openssl req: $err" if $rc;
        $der = PKITest::slurp($f);
    } else {
        ($der) = $t->make_csr($name, subj => '/', san => "DNS:$name");
    }
    return { csr => encode_base64url($der) };
}

sub good_records {
    return scalar(grep { ($t->redis_hash($_)->{status} // '') eq 'good' }
                  $t->redis_keys('pki:{ca:issuing}:cert:*'));
}

sub reservations {
    return scalar $t->redis_keys('pki:{ca:issuing}:serial:*');
}

sub serial_of {
    my ($pem, $tag) = @_;
    my $f = $t->save_first_cert($pem // '', $tag);
    return $f ? $t->x509_field($f, 'serial') : '';
}

sub log_has {
    my ($re) = @_;
    return (PKITest::slurp($t->error_log) // '') =~ $re;
}

# --- the completion lost: the order reads ready again ----------------------------

my ($serial, $link);
{
    my ($url, $fin, $key, $oid) = ready_order('lost.example.test');
    my $ready = $t->redis_raw('GET', $key);
    chomp $ready;
    my $f = $c->_post($fin, csr_for('lost.example.test'));
    my $ckey = $t->dir . '/lost.example.test.key';
    is($f->{status}, 200, 'finalize 200') or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... the order is valid');
    my $cert_url = $f->{json}{certificate} // '';
    my $cr = $c->_post($cert_url, undef);
    is($cr->{status}, 200, '... its certificate downloads');
    $serial = serial_of($cr->{content}, 'lost-1');
    ok($serial, '... serial ' . $serial);

    my @links = grep { /:\Q$oid\E$/ } $t->redis_keys('pki:{ca:*}:acmefin:*');
    is(scalar @links, 1, 'the order has a link in the certificate store');
    $link = $links[0] // '';
    my $h = $t->redis_hash($link);
    is(lc($h->{s} // ''), lc($serial), '... naming its serial');
    my $ttl = $t->redis_raw('TTL', $link);
    chomp $ttl;
    ok($ttl > 90 * 86400 && $ttl <= 91 * 86400 + 60,
       "... kept until the certificate's end and a day (TTL $ttl)");

    # the state store loses its last second: the order is ready again
    $t->redis('SET', $key, $ready);
    $cr = $c->_post($cert_url, undef);
    is($cr->{status}, 200, 'state lost: the certificate still downloads')
        or diag($cr->{content});
    is(serial_of($cr->{content}, 'lost-2'), $serial, '... the same one');
    like($cr->{content} // '', qr/(?:BEGIN CERTIFICATE.*){2}/s,
         '... with its chain');
    my $served = "certificate $serial served from the certificate store "
        . '(the state store has the order unfinished)';
    ok(log_has(qr/\Q$served\E/i),
       '... and the error log says where it came from');

    # a client that finalizes it again (same key) gets that certificate
    my ($n, $nr) = (good_records(), reservations());
    $f = $c->_post($fin, csr_for('lost.example.test', $ckey));
    is($f->{status}, 200, 'finalize again: 200') or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... the order is valid');
    is(good_records(), $n, '... nothing more was signed');
    is(reservations(), $nr, '... nor a serial reserved');
    $cr = $c->_post($f->{json}{certificate} // '', undef);
    is(serial_of($cr->{content}, 'lost-3'), $serial,
       '... the order has its first certificate');
    my $again = "issued serial $serial; the order's certificate was "
        . 'recorded already';
    ok(log_has(qr/\Q$again\E/i), '... and the error log says so');
    ok(!grep({ ($_->{reason} // '') =~ /already recorded/ }
             $t->audit_entries),
       '... no failed issuance in the transaction log');

    # again, with a CSR of another key: what a valid order answers
    $t->redis('SET', $key, $ready);
    $f = $c->_post($fin, csr_for('lost.example.test'));
    is($f->{status}, 403, 'finalize again, another key: 403')
        or diag($f->{content});
    is($f->{problem} // '', 'orderNotReady', '... orderNotReady');
    like($f->{json}{detail} // '', qr/another key/, '... another key');
    my $o = $c->_post($url, undef);
    is($o->{json}{status} // '', 'valid', '... the order is valid again');
    is(good_records(), $n, '... nothing signed');

    # a client that only polls the order sees it valid
    $t->redis('SET', $key, $ready);
    $o = $c->_post($url, undef);
    is($o->{json}{status} // '', 'valid', 'polled: the order reads valid');
    like($o->{json}{certificate} // '', qr{/cert/}, '... with its certificate');
    ok(log_has(qr/order \Q$oid\E completed from the certificate store/),
       '... and the error log says so');

    # the whole order lost
    $t->redis('DEL', $key);
    $o = $c->_post($url, undef);
    is($o->{status}, 404, 'order lost: 404');
    $cr = $c->_post($cert_url, undef);
    is($cr->{status}, 200, '... its certificate still downloads')
        or diag($cr->{content});
    is(serial_of($cr->{content}, 'lost-4'), $serial, '... the same one');

    # an invalid order is a verdict: no certificate through its link
    # (finalize withholds one whose transaction-log entry failed)
    $t->redis('SET', $key, $ready =~ s/"status":"[a-z]+"/"status":"invalid"/r);
    $cr = $c->_post($cert_url, undef);
    is($cr->{status}, 404, 'order invalid: no download')
        or diag($cr->{content});
    unlike($cr->{content} // '', qr/BEGIN CERTIFICATE/, '... no certificate');
}

# --- a renewal (RFC 9773 replaces) that lost its completion ------------------------

{
    my ($url0, $fin0) = ready_order('renew.example.test');
    my $f = $c->_post($fin0, csr_for('renew.example.test'));
    my $cr = $c->_post($f->{json}{certificate} // '', undef);
    my $old = $t->save_first_cert($cr->{content} // '', 'renew-old');
    my $r = $c->_post("$base/new-order", { identifiers => [
        { type => 'dns', value => 'renew.example.test' } ],
        replaces => $t->cert_id($old) });
    is($r->{status}, 201, 'a renewal order') or diag($r->{content});
    my $url = $r->{headers}{location} // '';
    my ($oid) = $url =~ m{/([^/]+)$};
    my $key = "acmestate:{acme:$acct}:order:$oid";
    $c->_poll($url, 'ready');
    my $ready = $t->redis_raw('GET', $key);
    chomp $ready;
    my $ckey = $t->dir . '/renew.example.test.key';
    $f = $c->_post($r->{json}{finalize}, csr_for('renew.example.test'));
    is($f->{status}, 200, '... finalized') or diag($f->{content});
    my $s1 = serial_of($c->_post($f->{json}{certificate} // '', undef)
                       ->{content}, 'renew-1');
    $t->redis('SET', $key, $ready);
    my $n = good_records();
    $f = $c->_post($r->{json}{finalize},
                   csr_for('renew.example.test', $ckey));
    is($f->{status}, 200, 'state lost: finalized again, 200 (not '
       . 'alreadyReplaced)') or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... valid');
    is(good_records(), $n, '... nothing signed');
    is(serial_of($c->_post($f->{json}{certificate} // '', undef)->{content},
                 'renew-2'), $s1, '... its first certificate');
}

# --- the move to processing lost: a finalization still runs ----------------------

{
    my ($url, $fin, $key, $oid) = ready_order('running.example.test');
    # a pending record of another finalization, linked to this order
    my $other = '7A' . ('3C' x 15);
    my $rkey = "pki:{ca:issuing}:cert:$other";
    $t->redis('HSET', $rkey, 'serial', $other, 'ca', 'issuing',
              'status', 'pending', 'requester', "acme:$acct");
    $t->redis('EXPIRE', $rkey, 300);
    (my $okey = $link) =~ s/:[^:]+$/:$oid/;
    $t->redis('HSET', $okey, 's', $other, 't', 'someoneelse',
              'a', time());
    my $n = good_records();
    my $f = $c->_post($fin, csr_for('running.example.test'));
    is($f->{status}, 403, 'another finalization runs: 403')
        or diag($f->{content});
    is($f->{problem} // '', 'orderNotReady', '... orderNotReady');
    like($f->{json}{detail} // '', qr/being finalized/, '... being finalized');
    ok(defined $f->{headers}{'retry-after'}, '... with Retry-After');
    is(good_records(), $n, '... nothing signed');
    is($t->redis_hash($rkey)->{status} // '', 'pending',
       '... its record left alone');
    my $o = $c->_post($url, undef);
    is($o->{json}{status} // '', 'ready', '... the order still ready');

    # that finalization died 60 s ago: it is taken over
    $t->redis('HSET', $okey, 'a', time() - 60);
    $f = $c->_post($fin, csr_for('running.example.test'));
    is($f->{status}, 200, 'a dead one: finalize 200') or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... valid');
    is(good_records(), $n + 1, '... one certificate');
    is($t->redis_raw('EXISTS', $rkey) + 0, 0,
       '... the dead one\'s pending record deleted (its commit would fail)');
    my $cr = $c->_post($f->{json}{certificate} // '', undef);
    my $s = serial_of($cr->{content}, 'running');
    isnt(lc $s, lc $other, '... a serial of its own');
    is(lc($t->redis_hash($okey)->{s} // ''), lc $s, '... now linked');
}

# --- a link whose record is gone (abandoned) -------------------------------------

{
    my ($url, $fin, $key, $oid) = ready_order('gone.example.test');
    (my $okey = $link) =~ s/:[^:]+$/:$oid/;
    $t->redis('HSET', $okey, 's', '7B' . ('11' x 15), 't', 'x', 'a', time());
    my $f = $c->_post($fin, csr_for('gone.example.test'));
    is($f->{status}, 200, 'a link to no record: finalize 200')
        or diag($f->{content});
    is($f->{json}{status} // '', 'valid', '... valid');
}

unlike(PKITest::slurp($t->error_log) // '',
       qr/\[(alert|crit|emerg)\]|exited on signal/, 'no alert in the error log');

# --- one store for everything: no link ---------------------------------------------

$t->stop_nginx;
$t->start_nginx($t->render_conf('--acme-http-port', $hport,
                                '--acme-tls-port', PKITest::free_port()));
{
    $c = ACMELoad->new(t => $t, base => $base, www => $www, timeout => 30);
    ok($c->account->{ok}, 'one store: an account');
    ($acct) = ($c->{kid} // '') =~ m{/([^/]+)$};
    my $n = scalar $t->redis_keys('pki:{ca:*}:acmefin:*');
    my ($der) = $t->make_csr('one.example.test', subj => '/',
                             san => 'DNS:one.example.test');
    my $res = $c->issue('one.example.test', $der);
    ok($res->{ok}, '... a certificate') or diag(explain($res));
    is(scalar $t->redis_keys('pki:{ca:*}:acmefin:*'), $n, '... no link written');
}

$t->stop_all;
done_testing();
