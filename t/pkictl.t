#!/usr/bin/perl
# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# pkictl issue, offline, with file keys: a CSR, and the --subject / --dns /
# --ip of the command line, go through the template's subject and SAN
# rules as a network request does; a refusal exits nonzero with the rule
# on stderr and writes nothing.  The output file is written through a
# fresh temporary file, never through a symlink in its way.  `pkictl issue
# --redis --ca-name NAME --namespace NS --db N` records the certificate
# where an nginx with "pki_ca NAME" and "pki_redis ... namespace=NS db=N"
# finds it: redis-cli reads the keys, openssl ocsp gets good from nginx,
# the admin API shows and revokes it.  An output that cannot be written
# (a missing directory, a directory) is found out before anything is
# signed, recorded or made on the token (issue, selfsign, matter
# hierarchy); a write that fails after a signature prints the serial and
# the certificate.  An output renamed into place in a directory that
# cannot be synced is said to be that, not to be unwritten, and the exit
# is nonzero.  `pkictl matter hierarchy` on a token
# that holds its keys already refuses to make a second key of a label.  A
# PIN file with or without its line end works for hierarchy (which logs in
# itself) as for issue (through the vault); an empty or too long one is
# refused by both with the vault's message, hierarchy before any C_Login.
# An --out that is a FIFO, a device, a symlink to one, an input of the
# command or a private key is refused before anything is signed; an
# option given twice, or to a command that does not use it, is refused;
# a Matter --cn the profile refuses is refused before any key is made;
# audit verify's bounds without --pubkey are a usage error (exit 2); the
# core's warnings (a key file others may read, Redis without its
# append-only file) reach stderr.

use strict;
use warnings;
use FindBin;
use lib "$FindBin::Bin/lib";
use Test::More;
use File::Temp qw(tempdir);
use POSIX ();
use PKITest;

my $pkictl = "$PKITest::BUILD/pkictl";
plan(skip_all => 'pkictl not built') if !-x $pkictl;

my $d = tempdir(CLEANUP => 1);

sub csr {
    my ($name, $subj, @ext) = @_;
    my $f = "$d/$name.csr";
    openssl_or_die('req', '-new', '-key', "$d/ee.key", '-subj', $subj,
                   (map { ('-addext', $_) } @ext), '-out', $f);
    return $f;
}

# redis-cli on database DB of the test's Redis: its answer, one line
sub redis_n {
    my ($t, $db, @cmd) = @_;
    my $out = $t->redis_raw('-n', $db, @cmd);
    chomp $out;
    return $out;
}

# the certificate records and serial reservations in database DB (nginx
# itself writes CRL and metrics keys)
sub records {
    my ($t, $db) = @_;
    return join ' ', sort grep { /:(?:cert|serial):/ }
        split /\n/, redis_n($t, $db, '--scan', '--pattern', '*');
}

# the serial of the first certificate in PEM in $text (stderr), or undef
sub pem_serial {
    my ($text) = @_;
    my ($pem) = $text
        =~ /(-----BEGIN CERTIFICATE-----.*?-----END CERTIFICATE-----\n)/s;
    return undef if !defined $pem;
    my $f = "$d/stderr-cert.pem";
    spew($f, $pem);
    my ($serial) = openssl_or_die('x509', '-in', $f, '-noout', '-serial')
        =~ /serial=(\w+)/;
    unlink($f);
    return $serial;
}

# stderr $err of a run whose write to $path failed after the signature:
# the serial and the issuer (matching $issuer), recorded nowhere, and the
# certificate with that serial in PEM; the checks are named after $what
sub says_unwritten {
    my ($err, $issuer, $path, $what) = @_;
    my $re = qr{certificate serial (\w+) issued by "$issuer" }
        . qr{\(recorded nowhere\) was not written to "\Q$path\E"; }
        . qr{it follows\.  Keep the certificate below};
    my ($serial) = $err =~ $re;
    ok(defined $serial, "$what: the serial and issuer on stderr")
        or diag($err);
    is(pem_serial($err), $serial // 'none',
       "$what: the certificate on stderr");
}

# pkictl ARGS with a file size limit of 0, its signal ignored: a write to
# a file fails with EFBIG after whatever comes before it
sub run_nowrite {
    my ($argv, %o) = @_;
    local $SIG{XFSZ} = 'IGNORE';
    return run_cmd(['sh', '-c', 'ulimit -f 0 && exec "$@"', 'sh', @$argv],
                   %o);
}

# For run_nowrite with a token key: SoftHSM rewrites its token.object
# under the same limit and leaves it empty (the token gone), so such a run
# gets a copy of the test's token: run_cmd's env for it.
sub token_copy {
    my ($t, $name) = @_;
    my $copy = $t->dir . "/$name";
    system('cp', '-a', $t->pki . '/hsm', $copy) == 0
        or die "cp -a hsm $copy failed";
    spew("$copy/softhsm2.conf", slurp("$copy/softhsm2.conf")
         =~ s{^(\s*directories\.tokendir\s*=\s*)\S+}{$1$copy/tokens}mr);
    return (env => { SOFTHSM2_CONF => "$copy/softhsm2.conf" });
}

new_p256_key("$d/ca.key");
new_p256_key("$d/ee.key");

my ($rc, $out, $err) = run_cmd([$pkictl, 'selfsign', '--key', "$d/ca.key",
                                '--subject', '/O=t/CN=t root', '--days', '30',
                                '--out', "$d/ca.pem"]);
is($rc, 0, 'selfsign') or diag($err);

# an option the command does not use is refused, not dropped (selfsign
# took --dns and --redis and wrote a certificate without either)
for my $c (['selfsign', '--dns', 'a.example'],
           ['selfsign', '--redis', 'unix:/nonexistent.sock'],
           ['selfsign', '--ca-name', 'issuing'],
           ['selfsign', '--profile', 'server'])
{
    my ($cmd, @a) = @$c;
    unlink("$d/unused.pem");
    my ($urc, undef, $uerr) = run_cmd([$pkictl, $cmd, '--key', "$d/ca.key",
                                       '--subject', '/CN=u', '--days', '3',
                                       '--out', "$d/unused.pem", @a]);
    isnt($urc, 0, "$cmd $a[0]: refused");
    like($uerr, qr/selfsign takes --key, --subject, --days, --out/,
         "$cmd $a[0]: said on stderr");
    ok(!-e "$d/unused.pem", "$cmd $a[0]: nothing written");
}

# a PIN in a key URI: refused, and the URI (with the PIN) not echoed
{
    my ($prc, undef, $perr) = run_cmd([$pkictl, 'selfsign', '--key',
        'pkcs11:token=t;object=ca;pin-value=SECRET123', '--subject', '/CN=u',
        '--days', '3', '--out', "$d/pin.pem"]);
    isnt($prc, 0, 'a key URI with pin-value: refused');
    like($perr, qr/carries a PIN .*--pin-file/, 'a key URI with pin-value: '
         . 'the rule on stderr');
    unlike($perr, qr/SECRET123/, 'a key URI with pin-value: the PIN is not '
           . 'on stderr');
}

sub issue {
    my ($out, @a) = @_;
    unlink($out);
    return run_cmd([$pkictl, 'issue', '--ca-cert', "$d/ca.pem",
                    '--ca-key', "$d/ca.key", '--days', '10',
                    '--out', $out, @a]);
}

sub refused {
    my ($name, $re, @a) = @_;
    my $o = "$d/refused.pem";
    my ($rc, undef, $err) = issue($o, @a);
    isnt($rc, 0, "$name: refused");
    like($err, $re, "$name: the rule on stderr");
    ok(!-e $o && !glob("$d/refused.pem.*"), "$name: nothing written");
}

# --- a CSR goes through the subject and SAN rules -----------------------

refused('CSR subject DC, UID', qr/subject attribute DC is not allowed/,
        '--profile', 'server',
        '--csr', csr('dc', '/CN=ok/DC=evil/UID=root'));

refused('CSR SAN URI', qr/SAN type uri is not allowed/,
        '--profile', 'server',
        '--csr', csr('uri', '/CN=ok',
                     'subjectAltName=URI:https://evil.example/,'
                     . 'email:root@evil.example,'
                     . 'otherName:1.3.6.1.4.1.311.20.2.3;UTF8:root@corp'));

refused('CSR SAN email', qr/SAN type email is not allowed/,
        '--profile', 'client',
        '--csr', csr('email', '/CN=ok',
                     'subjectAltName=email:root@evil.example'));

refused('CSR SAN otherName UPN', qr/SAN type otherName is not allowed/,
        '--profile', 'server',
        '--csr', csr('upn', '/CN=ok',
                     'subjectAltName=otherName:1.3.6.1.4.1.311.20.2.3;'
                     . 'UTF8:root@corp'));

refused('CSR bad DNS name', qr/invalid DNS name in SAN/,
        '--profile', 'server',
        '--csr', csr('baddns', '/CN=ok', 'subjectAltName=DNS:a..b'));

refused('CA profile, CSR with a SAN', qr/SAN type dns is not allowed/,
        '--profile', 'ca',
        '--csr', csr('casan', '/CN=sub CA', 'subjectAltName=DNS:a.example'));

# --- so do the command line's overrides ----------------------------------

refused('--subject UID', qr/subject attribute UID is not allowed/,
        '--profile', 'server', '--subject', '/CN=ok/UID=root',
        '--csr', csr('plain', '/CN=ok'));

refused('--subject with a control character',
        qr/subject attribute CN has an invalid value/,
        '--profile', 'server', '--subject', "/CN=a\tb",
        '--csr', csr('plain', '/CN=ok'));

refused('--dns bad name', qr/invalid DNS name in SAN/,
        '--profile', 'server', '--dns', 'bad..name',
        '--csr', csr('plain', '/CN=ok'));

refused('--subject keeps the CSR URI SAN', qr/SAN type uri is not allowed/,
        '--profile', 'server', '--subject', '/CN=ok',
        '--csr', csr('uri2', '/CN=x', 'subjectAltName=URI:https://e.x/'));

refused('--pubkey-of --subject DC', qr/subject attribute DC is not allowed/,
        '--profile', 'ca', '--pubkey-of', "$d/ee.key",
        '--subject', '/DC=evil/CN=sub CA');

# --- what the rules allow is issued, the subject in its order -------------

sub text {
    my ($f) = @_;
    return openssl_or_die('x509', '-in', $f, '-noout', '-subject', '-ext',
                          'subjectAltName', '-nameopt', 'compat');
}

($rc, undef, $err) = issue("$d/srv.pem", '--profile', 'server',
                           '--csr', csr('good', '/O=org/CN=good',
                                        'subjectAltName=DNS:good.example,'
                                        . 'IP:192.0.2.1'));
is($rc, 0, 'CSR within the rules: issued') or diag($err);
unlike($err, qr/ends with its CA/, '10 days under a 30-day CA: no note');
# RFC 5280 4.1.2.5: notBefore through notAfter, both included, is the
# validity: --days 10 (the template's validity and the max_validity) ends
# a second before notBefore + 10 days, the self-signed 30 days likewise
{
    my ($nb, $na) = PKITest->x509_dates("$d/srv.pem");
    is(defined $na ? $na - $nb : undef, 10 * 86400 - 1,
       '--days 10: notAfter - notBefore = 10 days - 1 s');
    ($nb, $na) = PKITest->x509_dates("$d/ca.pem");
    is(defined $na ? $na - $nb : undef, 30 * 86400 - 1,
       'selfsign --days 30: notAfter - notBefore = 30 days - 1 s');
}
$out = -e "$d/srv.pem" ? text("$d/srv.pem") : '';

# more days than the CA has left: issued to the CA's end, and said
{
    my ($lrc, undef, $lerr) = run_cmd([$pkictl, 'issue', '--ca-cert',
        "$d/ca.pem", '--ca-key', "$d/ca.key", '--days', '100', '--out',
        "$d/long.pem", '--profile', 'server', '--csr',
        csr('long', '/CN=long', 'subjectAltName=DNS:long.example')]);
    is($lrc, 0, '100 days under a 30-day CA: issued') or diag($lerr);
    like($lerr, qr/note: the certificate ends with its CA \(notAfter before the 100 days asked\)/,
         '100 days under a 30-day CA: the cut said on stderr');
    my (undef, $lna) = PKITest->x509_dates("$d/long.pem");
    my (undef, $cna) = PKITest->x509_dates("$d/ca.pem");
    ok(defined $lna && defined $cna && $lna == $cna,
       '100 days under a 30-day CA: ends with the CA, at its notAfter');
}
like($out, qr{subject=/O=org/CN=good}, 'CSR: the subject as asked');
like($out, qr/DNS:good\.example, IP Address:192\.0\.2\.1/, 'CSR: the SANs');

($rc, undef, $err) = issue("$d/srv2.pem", '--profile', 'server',
                           '--csr', csr('plain', '/CN=ok'),
                           '--subject', '/CN=localhost',
                           '--dns', 'localhost', '--ip', '127.0.0.1');
is($rc, 0, '--subject --dns --ip: issued') or diag($err);
$out = -e "$d/srv2.pem" ? text("$d/srv2.pem") : '';
like($out, qr{subject=/CN=localhost}, 'overrides: the subject');
like($out, qr/DNS:localhost, IP Address:127\.0\.0\.1/, 'overrides: the SANs');

($rc, undef, $err) = issue("$d/sub.pem", '--profile', 'ca', '--pathlen', '0',
                           '--pubkey-of', "$d/ee.key",
                           '--subject', '/O=t/CN=t sub CA');
is($rc, 0, '--pubkey-of, CA profile: issued') or diag($err);
$out = -e "$d/sub.pem" ? text("$d/sub.pem") : '';
like($out, qr{subject=/O=t/CN=t sub CA}, 'CA: the subject as asked');

# --- outputs: a fresh temporary file beside the target, renamed over it -

spew("$d/victim", "victim\n");
symlink("$d/victim", "$d/out.pem.tmp") or die "symlink: $!";
($rc, undef, $err) = issue("$d/out.pem", '--profile', 'server',
                           '--csr', csr('plain', '/CN=ok'));
is($rc, 0, 'issue with a symlink at OUT.tmp') or diag($err);
is(slurp("$d/victim"), "victim\n", 'OUT.tmp symlink: its target untouched');
ok(-f "$d/out.pem" && !-l "$d/out.pem"
   && slurp("$d/out.pem") =~ /^-----BEGIN CERTIFICATE-----/,
   'OUT.tmp symlink: the certificate in OUT');
is((stat("$d/out.pem"))[2] & 07777, 0644 & ~umask(), 'OUT: mode 0644');

unlink("$d/out.pem", "$d/out.pem.tmp");
spew("$d/victim", "victim\n");
symlink("$d/victim", "$d/out.pem") or die "symlink: $!";
($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key', "$d/ca.key", '--subject',
               '/CN=x', '--days', '1', '--out', "$d/out.pem"]);
is($rc, 0, 'selfsign with a symlink at OUT') or diag($err);
is(slurp("$d/victim"), "victim\n", 'OUT symlink: its target untouched');
ok(-f "$d/out.pem" && !-l "$d/out.pem", 'OUT symlink: replaced by a file');

# selfsign: an --out that cannot be written is found out before the key is
# opened (a token's login) and anything signed; it was found out after,
# with a certificate (and a signature by the key) that nobody got.  The
# key does not exist: only a check made first is said.
for my $c (['in a missing directory', "$d/nodir/self.pem",
            qr/cannot create a temporary file for "\Q$d\E\/nodir\/self\.pem": No such/],
           ['a directory', $d, qr/cannot write "\Q$d\E": it is a directory/])
{
    my ($name, $o, $re) = @$c;
    ($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key',
                                  "$d/no-such.key", '--subject', '/CN=x',
                                  '--days', '1', '--out', $o]);
    isnt($rc, 0, "selfsign --out $name: refused");
    like($err, $re, "selfsign --out $name: said on stderr");
    unlike($err, qr/no-such\.key/,
           "selfsign --out $name: before the key is opened");
}

# an --out that rename() would replace with a regular file, though it is
# not one (a FIFO, a device, a symlink to one: /dev/stdout in a script),
# or that is an input of the command (selfsign --key k --out k destroyed
# the private key), or that holds a private key: refused before the key
# is opened and anything signed, the path as it was
system('mkfifo', "$d/o.fifo") == 0 or die 'mkfifo failed';
symlink('/dev/null', "$d/devnull.pem") or die "symlink: $!";
new_p256_key("$d/in.key");
new_p256_key("$d/other.key");
my $in_key = slurp("$d/in.key");
my $other_key = slurp("$d/other.key");
for my $c (['a FIFO', "$d/o.fifo", "$d/no-such.key",
            qr/will not replace "\Q$d\E\/o\.fifo": it is a device, FIFO/],
           ['a device', '/dev/null', "$d/no-such.key",
            qr{will not replace "/dev/null": it is a device, FIFO}],
           ['a symlink to a device', "$d/devnull.pem", "$d/no-such.key",
            qr/will not replace "\Q$d\E\/devnull\.pem": it is a symlink to a dev/],
           ['its --key', "$d/in.key", "$d/in.key",
            qr/will not replace "\Q$d\E\/in\.key": it is the input "\Q$d\E\/in\.key"/],
           ['a private key', "$d/other.key", "$d/in.key",
            qr/will not replace "\Q$d\E\/other\.key": it holds a private key/])
{
    my ($name, $o, $key, $re) = @$c;
    ($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key', $key,
                                  '--subject', '/CN=x', '--days', '1',
                                  '--out', $o]);
    isnt($rc, 0, "selfsign --out $name: refused");
    like($err, $re, "selfsign --out $name: said on stderr");
    unlike($err, qr/no-such\.key/,
           "selfsign --out $name: before the key is opened");
}
ok(-p "$d/o.fifo", 'selfsign --out a FIFO: it stays a FIFO');
ok(-c '/dev/null', 'selfsign --out /dev/null: it stays a device');
ok(-l "$d/devnull.pem" && readlink("$d/devnull.pem") eq '/dev/null',
   'selfsign --out a symlink to /dev/null: the symlink stays');
is(slurp("$d/in.key"), $in_key, 'selfsign --key k --out k: k unchanged');
is(slurp("$d/other.key"), $other_key, 'selfsign --out a key: unchanged');
ok(!glob("$d/*.fifo.*") && !glob("$d/*.key.*") && !glob("$d/devnull.pem.*"),
   'refused outputs: no temporary file left');

# issue: none of its inputs is replaced (the CA's certificate and key, the
# CSR, the key of --pubkey-of)
{
    my $csrf = csr('in', '/CN=in');
    my %was = map { $_ => slurp($_) }
        ("$d/ca.pem", "$d/ca.key", "$d/ee.key", $csrf);
    for my $c (['--ca-cert', "$d/ca.pem", '--csr', $csrf],
               ['--ca-key', "$d/ca.key", '--csr', $csrf],
               ['--csr', $csrf, '--csr', $csrf],
               ['--pubkey-of', "$d/ee.key", '--pubkey-of', "$d/ee.key",
                '--subject', '/CN=in'])
    {
        my ($name, $o, @a) = @$c;
        ($rc, undef, $err) = run_cmd([$pkictl, 'issue', '--ca-cert',
                                      "$d/ca.pem", '--ca-key', "$d/ca.key",
                                      '--days', '1', '--profile', 'client',
                                      '--out', $o, @a]);
        isnt($rc, 0, "issue --out its $name: refused");
        like($err, qr/will not replace "\Q$o\E": it is the input/,
             "issue --out its $name: said on stderr");
    }
    is(join('', map { slurp($_) } sort keys %was),
       join('', map { $was{$_} } sort keys %was),
       'issue --out an input: the inputs unchanged');
}

# matter to-tlv / to-der take the same rules
for my $c (['to-tlv', 'Chip-Test-Root01-Cert.der'],
           ['to-der', 'Chip-Test-Root01-Cert.chip'])
{
    my ($cmd, $in) = @$c;
    ($rc, undef, $err) = run_cmd([$pkictl, 'matter', $cmd,
        "$FindBin::Bin/vectors/matter/operational/$in", "$d/o.fifo"]);
    isnt($rc, 0, "matter $cmd OUT a FIFO: refused");
    like($err, qr/will not replace .*FIFO/, "matter $cmd: said on stderr");
    ok(-p "$d/o.fifo", "matter $cmd: the FIFO stays");
}
unlink("$d/o.fifo");

# options: a value given twice, a value of --keygen other than on or off,
# an option the command does not use: refused, nothing written
for my $c (['--out twice', qr/--out given twice/,
            [$pkictl, 'selfsign', '--key', "$d/ca.key", '--subject', '/CN=x',
             '--days', '1', '--out', "$d/twice-a.pem", '--out',
             "$d/twice-b.pem"]],
           ['--days twice', qr/--days given twice/,
            [$pkictl, 'selfsign', '--key', "$d/ca.key", '--subject', '/CN=x',
             '--days', '1', '--days', '2', '--out', "$d/twice-a.pem"]],
           ['--pathlen with --profile server',
            qr/--pathlen goes with --profile ca only/,
            [$pkictl, 'issue', '--ca-cert', "$d/ca.pem", '--ca-key',
             "$d/ca.key", '--pubkey-of', "$d/ee.key", '--subject', '/CN=x',
             '--profile', 'server', '--pathlen', '0', '--days', '1',
             '--out', "$d/twice-a.pem"]],
           ['--pathlen with --profile client',
            qr/--pathlen goes with --profile ca only/,
            [$pkictl, 'issue', '--ca-cert', "$d/ca.pem", '--ca-key',
             "$d/ca.key", '--pubkey-of', "$d/ee.key", '--subject', '/CN=x',
             '--profile', 'client', '--pathlen', '1', '--days', '1',
             '--out', "$d/twice-a.pem"]],
           ['matter --keygen yes', qr/bad --keygen "yes": on or off/,
            [$pkictl, 'matter', 'hierarchy', 'attestation', '--dir',
             "$d/twice", '--vid', 'FFF1', '--token', 't', '--pin-file',
             "$d/no-pin", '--keygen', 'yes']],
           ['matter --cn with operational',
            qr/--cn does not apply to hierarchy operational/,
            [$pkictl, 'matter', 'hierarchy', 'operational', '--dir',
             "$d/twice", '--cn', 'x', '--token', 't', '--pin-file',
             "$d/no-pin"]],
           ['matter --vid with operational',
            qr/--vid does not apply to hierarchy operational/,
            [$pkictl, 'matter', 'hierarchy', 'operational', '--dir',
             "$d/twice", '--vid', 'FFF1', '--token', 't', '--pin-file',
             "$d/no-pin"]],
           ['matter --pid with operational',
            qr/--pid does not apply to hierarchy operational/,
            [$pkictl, 'matter', 'hierarchy', 'operational', '--dir',
             "$d/twice", '--pid', '8000', '--token', 't', '--pin-file',
             "$d/no-pin"]],
           ['matter --fabric-id with attestation',
            qr/--fabric-id does not apply to hierarchy attestation/,
            [$pkictl, 'matter', 'hierarchy', 'attestation', '--dir',
             "$d/twice", '--vid', 'FFF1', '--fabric-id', 'FAB000000000001D',
             '--token', 't', '--pin-file', "$d/no-pin"]],
           ['matter --rcac-id with attestation',
            qr/--rcac-id does not apply to hierarchy attestation/,
            [$pkictl, 'matter', 'hierarchy', 'attestation', '--dir',
             "$d/twice", '--vid', 'FFF1', '--rcac-id', 'CACACACA00000001',
             '--token', 't', '--pin-file', "$d/no-pin"]],
           ['matter --icac-id with attestation',
            qr/--icac-id does not apply to hierarchy attestation/,
            [$pkictl, 'matter', 'hierarchy', 'attestation', '--dir',
             "$d/twice", '--vid', 'FFF1', '--icac-id', 'CACACACA00000002',
             '--token', 't', '--pin-file', "$d/no-pin"]],
           ['matter --vid twice', qr/option given twice: --vid/,
            [$pkictl, 'matter', 'hierarchy', 'attestation', '--dir',
             "$d/twice", '--vid', 'FFF1', '--vid', 'FFF2', '--token', 't',
             '--pin-file', "$d/no-pin"]])
{
    my ($name, $re, $argv) = @$c;
    mkdir("$d/twice");
    ($rc, undef, $err) = run_cmd($argv);
    isnt($rc, 0, "$name: refused");
    like($err, $re, "$name: said on stderr");
    ok(!glob("$d/twice-*") && !glob("$d/twice/*"), "$name: nothing written");
}
rmdir("$d/twice");

# what nginx logs as a warning of a key is said, not dropped: a CA key
# file other users may read
{
    spew("$d/wr.key", slurp("$d/ca.key"));
    chmod(0644, "$d/wr.key");
    ($rc, undef, $err) = run_cmd([$pkictl, 'selfsign', '--key', "$d/wr.key",
                                  '--subject', '/CN=wr', '--days', '1',
                                  '--out', "$d/wr.pem"]);
    is($rc, 0, 'selfsign, a key file of mode 0644: signed') or diag($err);
    like($err, qr/warning: key file "\Q$d\E\/wr\.key" may be read by other users \(mode 0644\)/,
         'selfsign, a key file of mode 0644: the warning on stderr');
}

# the write failing after the signature: the serial, the issuer and the
# certificate on stderr
($rc, undef, $err) = run_nowrite([$pkictl, 'selfsign', '--key', "$d/ca.key",
                                  '--subject', '/CN=late self', '--days', '1',
                                  '--out', "$d/late-self.pem"]);
isnt($rc, 0, 'selfsign, the write failing after the signature: exit nonzero');
says_unwritten($err, '/CN=late self', "$d/late-self.pem", 'selfsign');
ok(!-e "$d/late-self.pem" && !glob("$d/late-self.pem.*"),
   'selfsign: no file and no temporary file left');

# stopped by a signal while it waits (here in the open of a CSR that is a
# FIFO nobody writes, as it may wait for a token's login or a Redis): the
# output's temporary file is removed, and pkictl ends by that signal
{
    my $wait = "$d/wait.csr";
    system('mkfifo', $wait) == 0 or die 'mkfifo failed';
    my %num = (TERM => 15, INT => 2, HUP => 1);
    for my $sig (sort keys %num) {
        my $o = "$d/signalled-$sig.pem";
        my $pid = fork() // die "fork: $!";
        if ($pid == 0) {
            open(STDERR, '>', '/dev/null');
            exec($pkictl, 'issue', '--ca-cert', "$d/ca.pem", '--ca-key',
                 "$d/ca.key", '--days', '10', '--out', $o, '--profile',
                 'client', '--csr', $wait) or POSIX::_exit(127);
        }
        my @tmp;
        for (1 .. 200) {
            @tmp = glob("$o.*");
            last if @tmp;
            select(undef, undef, undef, 0.05);
        }
        is(scalar @tmp, 1, "SIG$sig: pkictl waits, its temporary file made");
        kill($sig, $pid);
        waitpid($pid, 0);
        is($? & 127, $num{$sig}, "SIG$sig: pkictl ends by the signal");
        ok(!-e $o && !glob("$o.*"), "SIG$sig: no temporary file left");
    }
    unlink($wait);
}

# the directory of --out can be written but not read (mode 0300): the
# file is made and renamed into place, then the directory cannot be
# opened to be synced.  pkictl runs as nobody (root would open it).
SKIP: {
    my @as;
    if ($> == 0) {
        my $sp = PKITest::which('setpriv');
        skip('no setpriv to run pkictl as nobody', 8) if !$sp;
        @as = ($sp, '--reuid', 65534, '--regid', 65534, '--clear-groups');
    }
    ($rc) = run_cmd([@as, $pkictl, '--help']);
    skip("pkictl cannot run as uid $> or nobody", 8) if $rc != 0;

    my $w = tempdir(CLEANUP => 1);
    chmod(0755, $w);
    for my $f ('ca.key', 'ca.pem', 'ee.key') {
        spew("$w/$f", slurp("$d/$f"));
        chmod(0644, "$w/$f");
    }
    mkdir("$w/wo") or die "mkdir: $!";
    chown(65534, 65534, "$w/wo") if $> == 0;
    chmod(0300, "$w/wo");

    for my $c (['selfsign', '--key', "$w/ca.key", '--subject', '/CN=wo'],
               ['issue', '--ca-cert', "$w/ca.pem", '--ca-key', "$w/ca.key",
                '--pubkey-of', "$w/ee.key", '--profile', 'client',
                '--subject', '/CN=wo'])
    {
        my $cmd = $c->[0];
        my $o = "$w/wo/$cmd.pem";
        ($rc, undef, $err) = run_cmd([@as, $pkictl, @$c, '--days', '1',
                                      '--out', $o]);
        isnt($rc, 0, "$cmd, directory not synced: exit nonzero");
        my $said = qq{"$o" was written and renamed into place, but its }
                   . qq{directory "$w/wo" could not be synced (Permission }
                   . 'denied): it may not survive a crash';
        like($err, qr/\Q$said\E/, "$cmd, directory not synced: said");
        unlike($err, qr/not written|BEGIN CERTIFICATE/,
               "$cmd, directory not synced: not said to be unwritten");
        my ($xrc, $xout) = run_cmd(['openssl', 'x509', '-in', $o, '-noout',
                                    '-subject']);
        like($xout, qr{CN\s*=\s*wo}, "$cmd, directory not synced: the "
             . 'certificate is in place');
    }
}

my $vec = "$FindBin::Bin/vectors/matter/operational";
for my $c (['to-tlv', 'Chip-Test-Root01-Cert.der', 'root.chip'],
           ['to-der', 'Chip-Test-Root01-Cert.chip', 'root.der'])
{
    my ($cmd, $in, $o) = @$c;
    spew("$d/victim-$cmd", "victim\n");
    symlink("$d/victim-$cmd", "$d/$o") or die "symlink: $!";
    ($rc, undef, $err) = run_cmd([$pkictl, 'matter', $cmd, "$vec/$in",
                                  "$d/$o"]);
    is($rc, 0, "matter $cmd with a symlink at OUT") or diag($err);
    is(slurp("$d/victim-$cmd"), "victim\n",
       "matter $cmd: the symlink's target untouched");
    ok(-f "$d/$o" && !-l "$d/$o", "matter $cmd: OUT replaced by a file");
    my $want = $cmd eq 'to-tlv' ? 'Chip-Test-Root01-Cert.chip'
                                : 'Chip-Test-Root01-Cert.der';
    ok(slurp("$d/$o") eq slurp("$vec/$want"), "matter $cmd: the output");
}

my @left = grep { !/\.(csr|key|pem|chip|der)$/ && !/victim/ } glob("$d/*");
is("@left", '', 'no temporary file left');

# --- issue --redis: the record where the nginx of "pki_ca NAME" finds it --

SKIP: {
    skip("no SoftHSM2 module at $PKITest::P11", 48) if !-e $PKITest::P11;
    skip('nginx modules not built', 48)
        if !-e "$PKITest::BUILD/ngx_http_pki_module.so";

    # the shared config with the issuing CA named fleet-ca and its keys in
    # database 3 under the namespace fleet7: (not the defaults pkictl had)
    my $t = PKITest->new;
    my $pki = $t->pki;
    my $conf = $t->render_conf;
    my $renamed = ($conf =~ s/(?<=\s)issuing(?=[\s;{])/fleet-ca/g);
    $conf =~ s{/crl/issuing\.crl}{/crl/fleet-ca.crl}g;
    $conf =~ s/(pki_redis unix:\S+)/$1 namespace=fleet7: db=3/
        or die 'no pki_redis line in the config';
    ok($renamed >= 3 && $conf =~ /pki_ca fleet-ca \{/
       && $conf =~ /ocsp_responder fleet-ca;/,
       "nginx.conf: pki_ca fleet-ca ($renamed lines), namespace fleet7:, "
       . 'db 3');
    $t->start_redis;
    $t->start_nginx($conf);

    my $sock = $t->redis_sock;
    my @ca = ('--ca-cert', "$pki/issuing.pem", '--ca-key',
              'pkcs11:token=' . $t->token . ';object=issuing;type=private',
              '--module', $PKITest::P11, '--pin-file', "$pki/hsm/pin");
    my %env = (env => { SOFTHSM2_CONF => $t->softhsm_conf });
    my $fleet = $t->dir . '/fleet.pem';
    my @al = ('--audit-log', "$pki/audit");
    mkdir($t->dir . '/emptylog');
    # a log directory where audit.log is a link to another file (put there
    # by whoever can write the directory): refused, the file untouched
    my $ld = $t->dir . '/linklog';
    mkdir($ld);
    spew("$ld/audit.lock", '');
    spew("$ld/audit.id", "0123456789abcdef\n");
    spew($t->dir . '/victim', "victim\n");
    symlink($t->dir . '/victim', "$ld/audit.log") or die "symlink: $!";

    # refused before anything is signed or written
    for my $c (['--redis without --ca-name',
                qr/--redis needs --ca-name NAME: the NAME of the "pki_ca NAME"/,
                '--redis', "unix:$sock"],
               ['--ca-name outside the pki_ca name rule',
                qr/bad --ca-name "fleet ca": 1-63 of A-Z a-z 0-9 \. _ -/,
                '--redis', "unix:$sock", '--ca-name', 'fleet ca'],
               ['--ca-name that would break the hash tag',
                qr/bad --ca-name "x\}:y"/,
                '--redis', "unix:$sock", '--ca-name', 'x}:y'],
               ['--redis without --audit-log',
                qr/--redis needs --audit-log DIR: the pki_audit_log /,
                '--redis', "unix:$sock", '--ca-name', 'fleet-ca'],
               ['--audit-log without --redis',
                qr/--audit-log goes with --redis/, @al],
               ['--audit-log a directory that is not there',
                qr/--audit-log "[^"]*\/nolog": no audit\.id there: not the/,
                '--redis', "unix:$sock", '--ca-name', 'fleet-ca',
                '--audit-log', $t->dir . '/nolog'],
               ['--audit-log a directory no nginx has opened a log in',
                qr/--audit-log "[^"]*\/emptylog": no audit\.id there/,
                '--redis', "unix:$sock", '--ca-name', 'fleet-ca',
                '--audit-log', $t->dir . '/emptylog'],
               ['--audit-log whose audit.log is a symlink',
                qr/audit log: .*linklog\/audit\.log: Too many levels of symbolic/,
                '--redis', "unix:$sock", '--ca-name', 'fleet-ca',
                '--audit-log', $t->dir . '/linklog'],
               ['--namespace with a brace',
                qr/namespace "fleet\{7" is too long or contains/,
                '--redis', "unix:$sock", '--ca-name', 'fleet-ca',
                '--namespace', 'fleet{7', @al],
               ['--db out of range', qr/bad --db "65536"/,
                '--redis', "unix:$sock", '--ca-name', 'fleet-ca',
                '--db', '65536'],
               ['--ca-name without --redis',
                qr/--ca-name, --namespace, --db and --redis-password-file go with --redis/,
                '--ca-name', 'fleet-ca'],
               ['--redis-password-file without --redis',
                qr/--ca-name, --namespace, --db and --redis-password-file go with --redis/,
                '--redis-password-file', "$pki/hsm/pin"])
    {
        my ($name, $re, @a) = @$c;
        unlink($fleet);
        ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                      'client', '--csr', csr('plain', '/CN=ok'),
                                      '--days', '5', '--out', $fleet, @a],
                                     %env);
        isnt($rc, 0, "$name: refused");
        like($err, $re, "$name: the rule on stderr");
    }
    is(slurp($t->dir . '/victim'), "victim\n",
       'the file the audit.log link names is untouched');
    ok(!-e $fleet, 'refused: no certificate written');
    is(records($t, 0) . records($t, 3), '', 'refused: no record in Redis');

    ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                  'client', '--csr',
                                  csr('fleet', '/CN=fleet device'),
                                  '--days', '5', '--out', $fleet,
                                  '--redis', "unix:$sock",
                                  '--ca-name', 'fleet-ca',
                                  '--namespace', 'fleet7:', '--db', '3', @al,
                                  '--crl-url', 'http://crl.example/f.crl',
                                  '--ocsp-url', 'http://ocsp.example/',
                                  '--ca-issuers-url',
                                  'http://ca.example/fleet.crt'],
                                 %env);
    is($rc, 0, 'issue --redis --ca-name --namespace --db') or diag($err);
    # the test's Redis runs with appendonly no: said, as nginx says it
    like($err, qr/warning: --redis "unix:[^"]+": Redis runs without its append-only file \(appendonly no\)/,
         'issue --redis, Redis without its append-only file: the warning');
    my ($serial) = (-e $fleet ? openssl_or_die('x509', '-in', $fleet,
                                               '-noout', '-serial') : '')
        =~ /serial=(\w+)/;
    $serial //= 'none';

    # in nginx's transaction log, which still verifies; and it says where
    # its status is
    like(slurp("$pki/audit/audit.log"),
         qr/"type":"issue"[^\n]*"serial":"$serial"/i,
         'its issuance is in the nginx transaction log (--audit-log)');
    my ($arc, $aout, $aerr) = run_cmd([$pkictl, 'audit', 'verify',
                                       "$pki/audit"]);
    is($arc, 0, 'and the log verifies') or diag("$aout $aerr");
    my @lo = stat("$pki/audit/audit.log");
    my @lk = stat("$pki/audit/audit.lock");
    is(@lo ? "$lo[4]:$lo[5]" : 'none', @lk ? "$lk[4]:$lk[5]" : 'no lock',
       'audit.log is owned as audit.lock (the workers\' user)');
    my $ext = -e $fleet ? openssl_or_die('x509', '-in', $fleet, '-noout',
                                         '-ext', 'crlDistributionPoints,'
                                         . 'authorityInfoAccess') : '';
    like($ext, qr{URI:http://crl\.example/f\.crl}, '--crl-url: its CDP');
    like($ext, qr{OCSP - URI:http://ocsp\.example/}, '--ocsp-url: its AIA');
    like($ext, qr{OCSP\ -\ URI:http://ocsp\.example/\n
                  \s+CA\ Issuers\ -\ URI:http://ca\.example/fleet\.crt\n}x,
         '--ca-issuers-url: in the same AIA, after OCSP');

    # the keys, as redis-cli reads them
    my $key = "fleet7:{ca:fleet-ca}:cert:$serial";
    is(redis_n($t, 3, 'HGET', $key, 'status'), 'good',
       "the record is $key in database 3");
    is(redis_n($t, 3, 'ZSCORE', 'fleet7:{ca:fleet-ca}:expiry', $serial)
       ne '' ? 1 : 0, 1, 'and the serial is in its CA\'s expiry index');
    is(records($t, 0), '', 'no record in database 0');

    # the nginx side: OCSP and the admin API know the certificate (and
    # OCSP does not know one issued without a record)
    my $none = $t->dir . '/norecord.pem';
    ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                  'client', '--csr', csr('plain', '/CN=ok'),
                                  '--days', '5', '--out', $none], %env);
    is($rc, 0, 'issue without --redis') or diag($err);
    is($t->ocsp_status($none), 'unknown', 'OCSP of it: unknown');
    is($t->ocsp_status($fleet), 'good', 'OCSP of pki_ca fleet-ca: good');
    my $r = $t->curl('GET', 'https://127.0.0.1:' . $t->https_port
                     . "/pki/admin/certificates/$serial",
                     user => 'admin:admin');
    is($r->{code}, 200, 'admin API: the certificate is known');
    like($r->{body}, qr/"ca"\s*:\s*"fleet-ca"/, 'admin API: of CA fleet-ca');
    $r = $t->admin_revoke($serial);
    is($r->{code}, 200, 'admin API: revoked');
    is($t->ocsp_revoked($fleet), 'revoked', 'OCSP then says revoked');

    # an --out that cannot be written: refused before anything is signed
    # or recorded (it was found out after: a good certificate recorded and
    # no serial said, and a retry issued a second one)
    my $before = records($t, 3);
    my @fleet = ('--redis', "unix:$sock", '--ca-name', 'fleet-ca',
                 '--namespace', 'fleet7:', '--db', '3', @al);
    my $nodir = $t->dir . '/nodir/fleet.pem';
    my $fifo = $t->dir . '/fleet.fifo';
    system('mkfifo', $fifo) == 0 or die 'mkfifo failed';
    my $cakeyf = $t->dir . '/ca-copy.key';
    spew($cakeyf, slurp("$d/ca.key"));
    for my $c (['--out in a missing directory', $nodir,
                qr/cannot create a temporary file for "\Q$nodir\E": No such/],
               ['--out a directory', $t->dir,
                qr/cannot write "\Q${\ $t->dir}\E": it is a directory/],
               ['--out a FIFO', $fifo,
                qr/will not replace "\Q$fifo\E": it is a device, FIFO/],
               ['--out its CA key file', $cakeyf,
                qr/will not replace "\Q$cakeyf\E": it holds a private key/])
    {
        my ($name, $o, $re) = @$c;
        ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                      'client', '--csr', csr('plain', '/CN=ok'),
                                      '--days', '5', '--out', $o, @fleet],
                                     %env);
        isnt($rc, 0, "$name: refused");
        like($err, $re, "$name: said on stderr");
        is(records($t, 3), $before, "$name: nothing recorded");
    }
    ok(-p $fifo, '--out a FIFO: it stays a FIFO');

    # a Redis with requirepass: --redis-password-file, read as pki_redis
    # password_file= reads it (the first line); without it, or with a
    # wrong one, refused and nothing recorded; the password said nowhere
    my $pw = 'Pw-' . int(rand(1e9)) . 'zQ';
    my $bad = 'Bad-' . int(rand(1e9)) . 'xK';
    my ($pwf, $badf) = ($t->dir . '/redis.pw', $t->dir . '/redis.bad');
    spew($pwf, "$pw\r\nnot the password\n");
    spew($badf, "$bad\n");
    chmod 0600, $pwf, $badf;
    my $pwout = $t->dir . '/pw.pem';
    $t->redis('CONFIG', 'SET', 'requirepass', $pw);
    for my $c (['no --redis-password-file', qr/NOAUTH|authentication/i],
               ['a wrong --redis-password-file', qr/WRONGPASS|invalid/i,
                '--redis-password-file', $badf],
               ['--redis-password-file a directory',
                qr/--redis-password-file "[^"]+" is no regular file/,
                '--redis-password-file', $t->dir],
               ['--out the --redis-password-file',
                qr/will not replace "\Q$pwf\E": it is the input/,
                '--redis-password-file', $pwf, $pwf])
    {
        my ($name, $re, @a) = @$c;
        my $o = @a == 3 ? pop(@a) : $pwout;
        ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                      'client', '--csr', csr('plain', '/CN=ok'),
                                      '--days', '5', '--out', $o, @fleet,
                                      @a], %env);
        isnt($rc, 0, "Redis with a password, $name: refused");
        like($err, $re, "Redis with a password, $name: said") or diag($err);
        unlike($err, qr/\Q$pw\E|\Q$bad\E/, "... no password on stderr");
        ok(!-e $pwout, '... nothing written');
    }
    is(slurp($pwf), "$pw\r\nnot the password\n", 'the password file is kept');
    ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                  'client', '--csr', csr('plain', '/CN=ok'),
                                  '--days', '5', '--out', $pwout, @fleet,
                                  '--redis-password-file', $pwf], %env);
    run_cmd(['redis-cli', '-s', $sock, '--no-auth-warning', '-a', $pw,
             'CONFIG', 'SET', 'requirepass', '']);
    is($rc, 0, 'Redis with a password, --redis-password-file: issued')
        or diag($err);
    unlike($err, qr/\Q$pw\E/, '... no password on stderr');
    my ($pserial) = (-e $pwout ? openssl_or_die('x509', '-in', $pwout,
                                                '-noout', '-serial') : '')
        =~ /serial=(\w+)/;
    $pserial //= 'none';
    is(redis_n($t, 3, 'HGET', "fleet7:{ca:fleet-ca}:cert:$pserial",
               'status'), 'good', '... and recorded');
    my %was = map { $_ => 1 } split / /, $before;
    my @new = grep { !$was{$_} } split / /, records($t, 3);
    ok(@new && !grep({ !/\Q$pserial\E/i } @new),
       '... and no other record added (the refusals recorded nothing)')
        or diag("@new");

    # the write failing after the signature (a file size limit of 0, its
    # signal ignored: write() fails with EFBIG): the serial, the CA and the
    # certificate on stderr, and the record is that serial's
    # (with --audit-log, the log's own write fails first: the serial is
    # withdrawn, revoked, and nothing written)
    my $late = $t->dir . '/late.pem';
    ($rc, undef, $err) = run_nowrite([$pkictl, 'issue', @ca, '--profile',
                                      'client', '--csr',
                                      csr('late', '/CN=late'), '--days', '5',
                                      '--out', $late, @fleet],
                                     token_copy($t, 'late-hsm'));
    isnt($rc, 0, 'the audit log cannot be written: exit nonzero');
    my ($wserial) = $err =~ /cannot write the audit log: .* serial (\w+) (?:is )?withdrawn/;
    ok(defined $wserial, 'the audit log cannot be written: the serial is '
       . 'withdrawn') or diag($err);
    $wserial //= 'none';
    is(redis_n($t, 3, 'HGET', "fleet7:{ca:fleet-ca}:cert:$wserial",
               'status'), 'revoked', 'and its record revoked');
    ok(!-e $late && !glob("$late.*"), 'and no file written');

    my @fleet_nolog = (@fleet[0 .. $#fleet - 1], 'none');
    ($rc, undef, $err) = run_nowrite([$pkictl, 'issue', @ca, '--profile',
                                      'client', '--csr',
                                      csr('late', '/CN=late'), '--days', '5',
                                      '--out', $late, @fleet_nolog],
                                     token_copy($t, 'late-hsm2'));
    isnt($rc, 0, 'write failing after issuance: exit nonzero');
    my ($lserial) = $err =~ /certificate serial (\w+) issued by "[^"]+"/;
    $lserial //= 'none';
    my $said = 'is recorded good for CA "fleet-ca" (namespace "fleet7:", '
               . qq{db 3) but was not written to "$late"};
    like($err, qr/\Q$said\E/,
         'the serial and the CA on stderr') or diag($err);
    like($err, qr/Do not run the command again .* revoke serial \Q$lserial\E/,
         'and what to do');
    is(pem_serial($err), $lserial, 'the certificate on stderr has that serial');
    is(redis_n($t, 3, 'HGET', "fleet7:{ca:fleet-ca}:cert:$lserial", 'status'),
       'good', 'the serial named is the one recorded');
    ok(!-e $late && !glob("$late.*"), 'no file and no temporary file left');

    $t->stop_nginx;
}

# --- matter hierarchy on a token that holds its keys already --------------

SKIP: {
    skip("no SoftHSM2 module at $PKITest::P11", 48) if !-e $PKITest::P11;

    # a token with the root and issuing keys (scripts/mkpki.sh, through
    # pkictl issue)
    my $t = PKITest->new(no_nginx_needed => 1);
    my $pki = $t->pki;

    my @vault = ('--module', $PKITest::P11, '--token', $t->token,
                 '--pin-file', "$pki/hsm/pin");
    my %env = (env => { SOFTHSM2_CONF => $t->softhsm_conf });
    my %args = (attestation => [ '--vid', 'FFF1', '--pid', '8000' ],
                operational => [ '--rcac-id', 'CACACACA00000001',
                                 '--icac-id', 'CACACACA00000002' ]);

    # outputs that cannot be written (either of the two): refused before
    # any key is made or anything signed.  They were found out after: two
    # key pairs left on the token (a second run refused to make them
    # again) and a root certificate nobody got.
    my $dir = $t->dir;
    for my $c (['attestation', '--dir a missing directory', "$dir/nodir",
                qr/cannot create a temporary file for "\Q$dir\E\/nodir\/paa\.pem": No such/],
               ['operational', 'icac.pem a directory', "$dir/icacdir",
                qr/cannot write "\Q$dir\E\/icacdir\/icac\.pem": it is a directory/])
    {
        my ($kind, $name, $o, $re) = @$c;
        mkdir($o), mkdir("$o/icac.pem") if $name =~ /icac/;
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy', $kind,
                                      '--dir', $o, @{ $args{$kind} },
                                      @vault], %env);
        isnt($rc, 0, "hierarchy $kind, $name: refused");
        like($err, $re, "hierarchy $kind, $name: said on stderr");
        ok(!grep({ !/icac\.pem$/ } glob("$o/*")),
           "hierarchy $kind, $name: nothing written, no temporary file");
    }
    # values the Matter profile refuses: refused before any key is made
    # (two key pairs were left on the token, and a second run refused to
    # make them again)
    for my $c (['attestation', '--vid ZZZZ', qr/bad --vid\/--pid: 4 uppercase/,
                '--vid', 'ZZZZ'],
               ['attestation', '--pid 8000x', qr/bad --vid\/--pid/,
                '--vid', 'FFF1', '--pid', '8000x'],
               ['operational', '--fabric-id 12', qr/bad --rcac-id\/--icac-id/,
                '--fabric-id', '12'],
               ['operational', '--fabric-id 0', qr/bad --fabric-id: it must not/,
                '--fabric-id', '0000000000000000'],
               # the CN is checked by the profile at signing, which came
               # after the keygen (two key pairs left on the token)
               ['attestation', '--cn "Widget Mvid:fff1"',
                qr/PAA refused: Matter paa subject: Mvid: in the CN not followed by 4 uppercase hex/,
                '--vid', 'FFF1', '--cn', 'Widget Mvid:fff1'],
               ['attestation', '--cn "Widget Mpid:8000"',
                qr/PAA refused: Matter paa subject: the CN's Mvid:\/Mpid: differs/,
                '--vid', 'FFF1', '--pid', '8000', '--cn', 'Widget Mpid:8000'])
    {
        my ($kind, $name, $re, @a) = @$c;
        my $o = "$dir/bad-$kind";
        mkdir $o;
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy', $kind,
                                      '--dir', $o, @a, @vault], %env);
        isnt($rc, 0, "hierarchy $kind, $name: refused");
        like($err, $re, "hierarchy $kind, $name: said on stderr");
        ok(!glob("$o/*"), "hierarchy $kind, $name: nothing written");
    }
    my $pin = slurp("$pki/hsm/pin") =~ s/\r?\n\z//r;
    (undef, $out, $err) = run_cmd(['pkcs11-tool', '--module', $PKITest::P11,
                                   '--token-label', $t->token, '--login',
                                   '--pin', $pin, '--list-objects'], %env);
    like($out, qr/label:\s+issuing/, 'the token lists its keys')
        or diag($err);
    unlike($out, qr/matter-/, 'no Matter key was made on the token');

    # the Matter hierarchies (scripts/mkpki-matter.sh)
    $t->make_matter_pki($pki);

    for my $kind (qw(attestation operational)) {
        my $root = $kind eq 'attestation' ? 'paa' : 'rcac';
        my $o = $t->dir . "/again-$kind";
        mkdir $o;
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy', $kind,
                                      '--dir', $o, @{ $args{$kind} },
                                      @vault], %env);
        isnt($rc, 0, "hierarchy $kind again: refused");
        like($err, qr/already holds an object labelled "matter-$root"/,
             "hierarchy $kind again: the label on stderr");
        ok(!-e "$o/$root.pem", "hierarchy $kind again: nothing written");

        # one key per label still: the keys there sign
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy', $kind,
                                      '--dir', $o, '--keygen', 'off',
                                      @{ $args{$kind} }, @vault], %env);
        is($rc, 0, "hierarchy $kind --keygen off: the keys there sign")
            or diag($err);
    }

    # the write failing after the root is signed (--keygen off: the keys
    # there): its serial, issuer and certificate on stderr, the CA under
    # it never signed, nothing left in DIR
    my $lo = "$dir/late-matter";
    mkdir $lo;
    ($rc, undef, $err) = run_nowrite([$pkictl, 'matter', 'hierarchy',
                                      'attestation', '--dir', $lo,
                                      '--keygen', 'off',
                                      @{ $args{attestation} }, @vault],
                                     token_copy($t, 'late-hsm'));
    isnt($rc, 0, 'hierarchy, the write failing after the PAA: exit nonzero');
    says_unwritten($err, '/CN=Matter PAA/[^"]*', "$lo/paa.pem",
                   'hierarchy, the PAA');
    is(scalar(() = $err =~ /BEGIN CERTIFICATE/g), 1,
       'hierarchy: one certificate, no PAI signed after it');
    ok(!glob("$lo/*"), 'hierarchy: no file and no temporary file left');

    # a token whose label needs percent-encoding in a pkcs11: URI (a
    # space): its keys were made, then not found ("bad percent-encoding"),
    # and the token could never be used by the command again
    my $sp = $t->dir . '/space-hsm';
    mkdir $sp;
    mkdir "$sp/tokens";
    spew("$sp/softhsm2.conf", "directories.tokendir = $sp/tokens\n");
    spew("$sp/pin", "1234\n");
    my %spenv = (env => { SOFTHSM2_CONF => "$sp/softhsm2.conf" });
    ($rc, undef, $err) = run_cmd(['softhsm2-util', '--init-token', '--free',
                                  '--label', 'Matter HSM', '--so-pin',
                                  '12345678', '--pin', '1234'], %spenv);
    is($rc, 0, 'a token labelled "Matter HSM"') or diag($err);
    my $so = "$dir/space-out";
    mkdir $so;
    ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy',
                                  'attestation', '--dir', $so,
                                  @{ $args{attestation} }, '--module',
                                  $PKITest::P11, '--token', 'Matter HSM',
                                  '--pin-file', "$sp/pin"], %spenv);
    is($rc, 0, 'hierarchy on the token "Matter HSM"') or diag($err);
    ok(-s "$so/paa.pem" && -s "$so/pai.pem", 'its PAA and PAI written');

    # --- the PIN file, read as the vault reads it ------------------------
    #
    # hierarchy (keygen on) logs in itself: past a good login it stops at
    # the keys already there; a PIN file the vault would refuse is refused
    # before any C_Login, with the vault's message, as pkictl issue does

    my $pinf = $t->dir . '/pin-case';
    my @ca = ('--ca-cert', "$pki/issuing.pem", '--ca-key',
              'pkcs11:token=' . $t->token . ';object=issuing;type=private',
              '--module', $PKITest::P11, '--pin-file', $pinf);

    for my $c (['no line end', $pin, undef],
               ['CRLF', "$pin\r\n", undef],
               ['empty', '', qr/PIN file "\Q$pinf\E" is empty/],
               ['only a line end', "\n", qr/PIN file "\Q$pinf\E" is empty/],
               ['257 bytes', $pin . ('0' x (257 - length $pin)) . "\n",
                qr/PIN file "\Q$pinf\E" is too long \(at most 256 bytes\)/])
    {
        my ($name, $data, $re) = @$c;
        spew($pinf, $data);
        chmod 0600, $pinf;

        my $o = $t->dir . '/pin-hierarchy';
        mkdir $o;
        ($rc, undef, $err) = run_cmd([$pkictl, 'matter', 'hierarchy',
                                      'attestation', '--dir', $o,
                                      @{ $args{attestation} }, '--module',
                                      $PKITest::P11, '--token', $t->token,
                                      '--pin-file', $pinf], %env);
        isnt($rc, 0, "PIN file $name: hierarchy stops");
        if ($re) {
            like($err, qr/cannot open the token: vault "pkictl": $re/,
                 "PIN file $name: hierarchy refuses it");
            unlike($err, qr/C_Login/,
                   "PIN file $name: no login tried (no C_Login failure)");
        } else {
            like($err, qr/already holds an object labelled "matter-paa"/,
                 "PIN file $name: hierarchy logs in");
        }

        ($rc, undef, $err) = run_cmd([$pkictl, 'issue', @ca, '--profile',
                                      'client', '--pubkey-of', "$d/ee.key",
                                      '--subject', '/CN=pin case',
                                      '--days', '1', '--out',
                                      $t->dir . '/pin-case.pem'], %env);
        if ($re) {
            isnt($rc, 0, "PIN file $name: issue refuses it");
            like($err, qr/vault "pkictl": $re/,
                 "PIN file $name: issue says the same");
        } else {
            is($rc, 0, "PIN file $name: issue signs with it") or diag($err);
        }
    }
}

# --- audit verify: a log file that cannot be read is an I/O problem --------

# exit 2 (as for a missing directory), not 1 and "FAILED" (which says the
# log was tampered with): as root modes do not stop a read, so audit.log is
# a dangling symlink (cannot open) or a directory (cannot read)
for my $c (['audit.log a dangling symlink',
            qr/audit\.log: cannot open: No such/,
            sub { symlink('/nonexistent/audit.log', "$_[0]/audit.log")
                      or die "symlink: $!" }],
           ['audit.log a directory', qr/audit\.log: cannot read .*Is a dir/,
            sub { mkdir("$_[0]/audit.log") or die "mkdir: $!" }])
{
    my ($name, $re, $make) = @$c;
    my $ad = tempdir(DIR => $d);
    $make->($ad);
    ($rc, $out, $err) = run_cmd([$pkictl, 'audit', 'verify', $ad]);
    is($rc, 2, "audit verify, $name: exit 2 (I/O), not 1 (tampering)");
    like($err, qr/audit verify: not verified after 0 good entries: .*$re/,
         "audit verify, $name: said on stderr");
    unlike($out, qr/FAILED/, "audit verify, $name: no FAILED verdict");
}

# --max-unsigned and --max-unsigned-age bound what follows the last signed
# checkpoint, which only --pubkey finds: without it they were dropped and
# the log said OK; now a usage error
for my $o (['--max-unsigned', '3'], ['--max-unsigned-age', '60'])
{
    my $ad = tempdir(DIR => $d);
    spew("$ad/audit.log", '');      # an empty log: OK without the option
    ($rc, $out, $err) = run_cmd([$pkictl, 'audit', 'verify', $ad, @$o]);
    is($rc, 2, "audit verify $o->[0] without --pubkey: exit 2");
    like($err, qr/--max-unsigned and --max-unsigned-age need --pubkey/,
         "audit verify $o->[0] without --pubkey: said on stderr");
    unlike($out, qr/^OK/, "audit verify $o->[0] without --pubkey: no OK");
}

# audit.log ending in a line without its end that no sync covered (no
# audit.lock record: a copy, or a line torn by a crash or a failed write,
# which the next writer cuts off) is no tampering: OK, said (exit 1 and
# "incomplete entry" before, also for a line read while being written)
{
    my $ad = tempdir(DIR => $d);
    spew("$ad/audit.log", '{"seq":1,"ti');
    ($rc, $out, $err) = run_cmd([$pkictl, 'audit', 'verify', $ad]);
    is($rc, 0, 'audit verify, a torn unsynced last line: exit 0')
        or diag("$out$err");
    like($out, qr/^not checked: the last 12 bytes of audit\.log/m,
         'audit verify, a torn unsynced last line: said');
}

# --pubkey several times (the checkpoint key replaced: the log holds
# checkpoints of each): accepted, up to 8 ("given twice", exit 2, before)
{
    my $ad = tempdir(DIR => $d);
    spew("$ad/audit.log", '');
    my @keys;
    for my $n (1 .. 9) {
        openssl_or_die('genpkey', '-algorithm', 'EC', '-pkeyopt',
                       'ec_paramgen_curve:P-256', '-out', "$ad/k$n.key");
        openssl_or_die('pkey', '-in', "$ad/k$n.key", '-pubout', '-out',
                       "$ad/k$n.pub");
        push @keys, '--pubkey', "$ad/k$n.pub";
    }
    ($rc, $out, $err) = run_cmd([$pkictl, 'audit', 'verify', $ad,
                                 @keys[0 .. 3]]);
    is($rc, 0, 'audit verify, --pubkey twice: exit 0') or diag("$out$err");
    like($out, qr/^OK: 0 entries/, 'audit verify, --pubkey twice: OK');
    ($rc, $out, $err) = run_cmd([$pkictl, 'audit', 'verify', $ad, @keys]);
    is($rc, 2, 'audit verify, --pubkey 9 times: exit 2');
    like($err, qr/--pubkey given more than 8 times/,
         'audit verify, --pubkey 9 times: said');
}

# a writer that keeps audit.lock (stuck in a checkpoint signature on a hung
# token) held verify forever; now it waits --lock-wait, then exit 2
{
    my $ad = tempdir(DIR => $d);
    spew("$ad/audit.log", '');
    spew("$ad/audit.lock", '');
    my $holder = fork();
    die "fork: $!" unless defined $holder;
    if ($holder == 0) {
        exec('flock', '-F', '-x', "$ad/audit.lock", 'sleep', '60')
            or POSIX::_exit(127);
    }
    select(undef, undef, undef, 0.5);
    my $t0 = time();
    my $pid = open(my $fh, '-|');
    die "fork: $!" unless defined $pid;
    if ($pid == 0) {
        open(STDERR, '>&', \*STDOUT);
        exec('timeout', '20', $pkictl, 'audit', 'verify', $ad,
             '--lock-wait', '1') or POSIX::_exit(127);
    }
    my $o = do { local $/; <$fh> };
    close($fh);
    $rc = $? >> 8;
    my $took = time() - $t0;
    is($rc, 2, 'audit verify, audit.lock held: exit 2') or diag($o);
    like($o, qr/audit\.lock held by another process for \d+ ms/,
         'audit verify, audit.lock held: said');
    cmp_ok($took, '<=', 5, "audit verify, audit.lock held: gave up "
           . "(${took}s)");
    kill('TERM', $holder);
    waitpid($holder, 0);
    ($rc, $out, $err) = run_cmd([$pkictl, 'audit', 'verify', $ad,
                                 '--lock-wait', '1']);
    is($rc, 0, 'audit verify, audit.lock let go: exit 0') or diag("$out$err");
}

done_testing();
