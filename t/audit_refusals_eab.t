#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A new EAB key whose answer cannot be sent is disabled, and the
# transaction log says so.  The admin API's POST acme/eab makes the key in
# Redis, then answers with its HMAC key, the one time it is shown; an
# answer that could not be built or sent (out of memory, a broken
# connection) left the key enabled although nobody ever saw it.  Here an
# LD_PRELOAD shim makes nginx's SSL_write() of the answer's body fail
# (EPIPE): the client gets no HMAC key, the error log names the key as
# disabled, the API lists it "disabled", the log's admin entry says why
# and the disabling has its own entry (pki_admin_withdraw);
# the key made after the shim let an answer through stays "active".

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use JSON::PP;
use Time::HiRes qw(time sleep);
use PKITest;

my $t = PKITest->new;
$t->start_redis;
my $pki = $t->pki;
my $flag = $t->dir . '/fail-hmac';

# the write of a buffer holding "hmac_key" fails while $flag exists
my ($shim, $cerr) = $t->ssl_write_fail_shim('eabfail', 'hmac_key', $flag);
ok($shim, 'SSL_write() shim built') or diag($cerr);

$t->start_nginx($t->render_conf('--workers', 1), preload => [$shim]);
my $admin = 'https://127.0.0.1:' . $t->https_port . '/pki/admin';

sub keys_listed {
    my $r = $t->curl('GET', "$admin/acme/eab", user => 'admin:admin',
                     quiet => 1);
    my $j = eval { decode_json($r->{body}) } || {};
    return { map { $_->{kid} => $_->{status} } @{ $j->{keys} || [] } };
}

spew($flag, '');
my $r = $t->curl('POST', "$admin/acme/eab", user => 'admin:admin',
                 quiet => 1);
unlike($r->{body} // '', qr/hmac_key/, "the answer did not leave "
       . "(HTTP $r->{code})");

my ($line, $kid);
my $deadline = time + 15;
while (time < $deadline) {
    ($line) = grep { /pki admin: the answer with new EAB key/ }
              split /\n/, slurp($t->error_log) // '';
    last if $line;
    sleep 0.2;
}
($kid) = ($line // '') =~ /new EAB key "([\w-]+)"/;
like($line // '', qr/\[error\].*could not be sent: the key is disabled/,
     'the error log names the key as disabled') or diag($line);
ok($kid, "  its kid: " . ($kid // ''));

my $listed = keys_listed();
is(scalar keys %$listed, 1, 'the API lists one key');
is($listed->{$kid // ''}, 'disabled', '  disabled');

# the transaction log: the admin request, and why it failed
my ($e) = grep { ($_->{protocol} // '') eq 'admin'
                 && ($_->{operation} // '') eq 'POST /pki/admin/acme/eab' }
          $t->audit_entries("$pki/audit");
like($e->{reason} // '', qr/new EAB key could not be sent: the key is disabled/,
     'the transaction log says why') or diag(explain($e));
isnt($e->{status} // '', 'ok', '  not as a success');
my ($d) = grep { ($_->{operation} // '') eq 'acme-eab-disable' }
          $t->audit_entries("$pki/audit");
is($d->{subject} // '', $kid // 'none', 'the disabling has its own entry');
is($d->{reason} // '', 'acme eab key disabled: its answer could not be sent',
   '  saying why');

# the same answer, let through: the key is shown and stays active
unlink $flag;
$r = $t->curl('POST', "$admin/acme/eab", user => 'admin:admin', quiet => 1);
is($r->{code}, 201, 'a key whose answer was sent: 201');
my $j = eval { decode_json($r->{body}) } || {};
ok($j->{hmac_key}, '  with its HMAC key');
is(keys_listed()->{$j->{kid} // ''}, 'active', '  active');

$t->stop_nginx;

done_testing();
