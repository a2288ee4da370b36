#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# nginx -t, run as root, contacts each Redis store once (config_reject.t)
# and warns when it does not answer.  Root connects to any unix socket,
# so a socket the workers ("user nobody nogroup") may not use passed the
# check, and every request of the workers then answered 503.  Now the
# check also judges the socket's path for the workers' user: no search
# permission on a directory, no write permission on the socket: a [warn]
# "permission denied" naming the user and the file, with file and line;
# once they may, no warning.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use PKITest;

plan(skip_all => 'needs root and the user nobody (nginx -t as root for '
                 . 'workers of another user)')
    if $> != 0 || !defined getpwnam('nobody') || !defined getgrnam('nogroup');

my $t = PKITest->new;
$t->start_redis;
my $sock = $t->redis_sock;
my $dir = $t->dir;

my $conf = $t->render_conf('--user', 'nobody nogroup');
my $file = $t->write_conf($conf);
my ($line) = grep { (split /\n/, $conf)[$_ - 1] =~ /^\s*pki_redis\s/ }
             1 .. scalar(split /\n/, $conf);
ok($line, "the config has a pki_redis line ($line)");

sub check {
    my ($ok, $out) = $t->nginx_test($file);
    ok($ok, 'nginx -t passes (exit 0: a warning)') or diag($out);
    return $out;
}

# the test's directory is 0700 root: nobody cannot reach the socket in it
chmod 0700, $dir;
my $out = check();
like($out, qr/\[warn\] .*pki_redis "unix:\Q$sock\E" does not answer: (?x:
              )permission denied: unix socket "\Q$sock\E": the workers (?x:
              )run as nobody \(uid \d+, gid \d+\).* no search permission (?x:
              )on directory "\Q$dir\E" \(mode 0700, uid 0, gid 0\) (?x:
              )in \Q$file\E:$line$/m,
     'directory 0700: warned, naming the user, the directory, file and '
     . 'line') or diag($out);

# the directory searchable, the socket 0700 root (unixsocketperm 700)
chmod 0711, $dir;
$out = check();
like($out, qr/\[warn\] .*pki_redis "unix:\Q$sock\E" does not answer: (?x:
              )permission denied: .*run as nobody .* no write permission (?x:
              )on the socket \(mode 0700, uid 0, gid 0\) in \Q$file\E:$line$/m,
     'socket 0700: warned, no write permission on it') or diag($out);

# nobody's group may write to it: not judged by the owner bits
my $gid = getgrnam('nogroup');
chown 0, $gid, $sock;
chmod 0770, $sock;
$out = check();
unlike($out, qr/does not answer/, 'socket 0770 of group nogroup: no warning')
    or diag($out);

# as nginx -t saw it then, the workers connect: an ACME nonce (stored in
# Redis, nothing else needed) is handed out
my $nonce = sub {
    return $t->curl('HEAD', 'https://127.0.0.1:' . $t->https_port
                    . '/acme/new-nonce', quiet => 1);
};
$t->start_nginx($conf);
my $r = $nonce->();
is($r->{code}, 200, '... and the workers (nobody) store a nonce in it')
    or diag($r->{head});
$t->stop_nginx;

# the socket 0700 again: the warning matches what the workers meet
chmod 0700, $sock;
$out = check();
like($out, qr/no write permission on the socket/, 'socket 0700 again: warned')
    or diag($out);
$t->start_nginx($conf);
$r = $nonce->();
is($r->{code}, 503, '... and the workers answer 503 (Redis denied)');
like(PKITest::slurp($t->error_log) // '', qr/Permission denied/,
     '... their log says Permission denied');
$t->stop_nginx;

# the workers as root (user root): nothing to judge
chmod 0700, $dir;
my $rconf = $t->render_conf('--user', 'root');
$file = $t->write_conf($rconf);
$out = check();
unlike($out, qr/does not answer/, 'user root: no warning') or diag($out);

done_testing();
