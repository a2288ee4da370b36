#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# ACME account paths that no other test drove (found correct by a review;
# kept as regression checks):
#  - the orders list in pages (RFC 8555 7.1.2.1): 105 orders of one account
#    are 100 on the first page with Link rel="next" to page 2, and the
#    other 5 there without a next link, none twice;
#  - six keyChanges of one account to six keys sent at once (RFC 8555
#    7.3.5): one is taken, the account and the key index name its key
#    only, the old key's index is gone, the other five keys are no
#    account's (each refused with 4xx, none 5xx), and the old key no
#    longer signs;
#  - a deactivated account (RFC 8555 7.3.6): its account, orders list,
#    newOrder, keyChange and revokeCert are 401 unauthorized, and a
#    "status": "valid" does not bring it back.

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
my $J = JSON::PP->new->canonical;

sub links {
    my $l = $_[0]{headers}{link} // '';
    return ref $l ? join(', ', @$l) : $l;
}

# --- the orders list in pages ------------------------------------------------

my $r = $c->ready('pg.example');
is($r->{ready}{json}{status} // '', 'ready', 'an order made ready');
my $made = 1;
for (1 .. 104) {
    my $o = $c->_post("$base/new-order",
                      { identifiers => [ { type => 'dns',
                                           value => 'pg.example' } ] });
    last if $o->{status} != 201;
    $made++;
}
is($made, 105, '105 orders (the authorization reused)');

my $list = $c->_post($c->{kid}, undef)->{json}{orders} // "$base/none";
my $p1 = $c->_post($list, undef);
is($p1->{status}, 200, 'the orders list: 200');
is(scalar @{ $p1->{json}{orders} || [] }, 100, '... 100 on the first page');
my ($next) = links($p1) =~ /<([^>]+)>;\s*rel="next"/;
is($next // '', "$list/2", '... Link rel="next" to page 2');
my $p2 = $c->_post($next // "$list/2", undef);
is($p2->{status}, 200, 'page 2: 200');
is(scalar @{ $p2->{json}{orders} || [] }, 5, '... the other 5 orders');
unlike(links($p2), qr/rel="next"/, '... and no next link');
my %seen;
$seen{$_}++ for @{ $p1->{json}{orders} || [] }, @{ $p2->{json}{orders} || [] };
is(scalar keys %seen, 105, 'no order shown twice');

# --- six keyChanges at once ------------------------------------------------------

my $old_thumb = $c->{key}->export_key_jwk_thumbprint('SHA256');
my ($acct) = $c->{kid} =~ m{/acct/([\w-]+)$};
my $dir = $t->dir . '/kc';
mkdir $dir;
my @keys = map {
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    $k
} 1 .. 6;
my $url = "$base/key-change";
my @bodies = map {
    my $nk = $_;
    my $h = $nk->export_key_jwk('public', 1);
    my $p64 = encode_base64url($J->encode({ alg => 'ES256', url => $url,
        jwk => { map { $_ => $h->{$_} } qw(kty crv x y) } }));
    my $pl64 = encode_base64url($J->encode({ account => $c->{kid},
                                             oldKey => $c->_jwk }));
    $J->encode({ protected => $p64, payload => $pl64,
        signature => encode_base64url(
            $nk->sign_message_rfc7518("$p64.$pl64", 'SHA256')) });
} @keys;

pipe(my $rd, my $wr) or die "pipe: $!";
my @pids;
for my $i (0 .. $#bodies) {
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        close $wr;
        $c->{http} = HTTP::Tiny->new(verify_SSL => 1, timeout => 20,
            SSL_options => { SSL_ca_file => $t->pki . '/root.pem' });
        $c->{nonce} = $c->_fresh_nonce;
        my $x = <$rd>;                              # the barrier
        my $res = $c->_post($url, $bodies[$i]);
        PKITest::spew("$dir/$i", $res->{status} // 0);
        POSIX::_exit(0);
    }
    push @pids, $pid;
}
close $rd;
sleep 1;
close $wr;
waitpid($_, 0) for @pids;
my @st = map { PKITest::slurp("$dir/$_") // 0 } 0 .. $#bodies;
my @won = grep { $st[$_] == 200 } 0 .. $#st;
is(scalar @won, 1, 'six keyChanges at once: one taken') or diag("@st");
is(scalar(grep { $_ >= 400 && $_ < 500 } @st), 5, '... the others 4xx')
    or diag("@st");
my @idx = $t->redis_keys('pki:acme:jwk:*');
my $won_thumb = @won ? $keys[$won[0]]->export_key_jwk_thumbprint('SHA256')
                     : 'none';
is_deeply(\@idx, [ "pki:acme:jwk:$won_thumb" ],
          '... the key index names its key only (the old one gone)');
is($t->redis_raw('GET', "pki:acme:jwk:$won_thumb") =~ s/\s+//gr, $acct,
   '... for this account');
like($t->redis_raw('GET', "pki:{acme:$acct}:acct"),
     qr/"thumb":"\Q$won_thumb\E"/, '... whose key it is');
isnt($won_thumb, $old_thumb, '... not the old key');
my $o = $c->_post($c->{kid}, undef);
is($o->{status} >= 400 && $o->{status} < 500 ? 1 : 0, 1,
   '... the old key no longer signs');
$c->{key} = $keys[$won[0] // 0];
$c->{nonce} = undef;
is($c->_post($c->{kid}, undef)->{status}, 200, '... the new key does');

# --- a deactivated account does nothing -------------------------------------------

my $d = $c->_post($c->{kid}, { status => 'deactivated' });
is($d->{status}, 200, 'deactivated: 200');
is($d->{json}{status} // '', 'deactivated', '... status deactivated');
for my $case ([ 'its account', $c->{kid}, undef ],
              [ 'its orders list', $list, undef ],
              [ 'newOrder', "$base/new-order",
                { identifiers => [ { type => 'dns',
                                     value => 'pg.example' } ] } ],
              [ 'a reactivation', $c->{kid}, { status => 'valid' } ])
{
    my $x = $c->_post($case->[1], $case->[2]);
    is($x->{status}, 401, "after deactivation, $case->[0]: 401");
    is($x->{problem}, 'unauthorized', '... unauthorized');
}
my $kc = $c->key_change;
is($kc->{status}, 401, 'after deactivation, keyChange: 401');
like($t->redis_raw('GET', "pki:{acme:$acct}:acct"),
     qr/"status":"deactivated"/, '... the account stays deactivated');

$t->stop_all;
done_testing();
