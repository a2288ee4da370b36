# Copyright 2026 The nginx-pki developers
# SPDX-License-Identifier: Apache-2.0
#
# A small ACME (RFC 8555) client for the fault-matrix tests (t/fault_*.t):
# one account per client, full issuances (newOrder -> http-01 -> finalize
# -> download), and for every failure the step, the HTTP status, the
# problem type and Retry-After, so a test can check what a client sees
# while a backend fails.  The JWS code is the one of t/acme_proto.t
# (CryptX); the http-01 answers come from a small listener that serves
# files from a directory (start_http01).
#
# A client follows RFC 8555 on errors: badNonce is retried with the fresh
# nonce of the error answer (section 6.5), up to 5 times per request; any
# other error ends the issuance (the test decides whether to start over).

package ACMELoad;

use strict;
use warnings;
use IO::Socket::IP;
use JSON::PP;
use MIME::Base64 qw(encode_base64url decode_base64url);
use POSIX ();
use Time::HiRes qw(sleep time);
use PKITest;

my $JSON = JSON::PP->new->canonical->allow_nonref;

sub available {
    for my $m (qw(Crypt::PK::ECC HTTP::Tiny)) {
        eval "require $m; 1" or return 0;
    }
    return 1;
}

# start_http01($t, $port, $www, concurrent => 1): forks the http-01
# responder; it is stopped with the test's other children.  It serves
# TOKEN from $www, appends the time of each fetch to TOKEN.hits, and
# answers after TOKEN.delay seconds when that file exists (then writes
# TOKEN.answered); a TOKEN.delay that says "hold" holds the answer until
# the test removes that file (release_http01; 60 s at most), so that a
# test acts while a validation is under way and ends it when done, with
# no fixed wait.  With concurrent, each connection gets a process of its
# own (one held answer holds no other).
sub start_http01 {
    my ($t, $port, $www, %o) = @_;
    my $srv = IO::Socket::IP->new(LocalHost => '127.0.0.1',
                                  LocalPort => $port, Listen => 64,
                                  ReuseAddr => 1)
        or die "cannot listen on $port: $!";
    my $serve = sub {
        my ($c) = @_;
        my $line = <$c> // '';
        while (my $h = <$c>) { last if $h =~ /^\r?\n$/ }
        my ($path) = $line =~ m{^GET (\S+)};
        my ($tok) = ($path // '')
            =~ m{^/\.well-known/acme-challenge/([\w-]+)$};
        my $body = defined $tok ? slurp("$www/$tok") : undef;
        if (defined $tok && open(my $h, '>>', "$www/$tok.hits")) {
            print $h time, "\n";
            close $h;
        }
        my $d = defined $tok ? slurp("$www/$tok.delay") : undef;
        sleep($d) if defined $d && $d =~ /^[\d.]+$/;
        if (defined $d && $d =~ /^hold/) {
            my $until = time + 60;
            sleep 0.02 while -e "$www/$tok.delay" && time < $until;
        }
        if (defined $body) {
            print $c "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\n"
                . "Content-Length: " . length($body)
                . "\r\nConnection: close\r\n\r\n$body";
        } else {
            print $c "HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\n"
                . "Connection: close\r\n\r\n";
        }
        close $c;
        # (the test may have ended and removed its directory meanwhile)
        eval { PKITest::spew("$www/$tok.answered", '1') } if defined $d;
    };
    my $pid = fork() // die "fork: $!";
    if ($pid == 0) {
        $SIG{TERM} = sub { POSIX::_exit(0) };
        $SIG{PIPE} = 'IGNORE';       # a peer gone mid-write is not our end
        $SIG{CHLD} = 'IGNORE' if $o{concurrent};
        while (1) {
            my $c = $srv->accept or next;
            if (!$o{concurrent}) {
                $serve->($c);
                next;
            }
            my $k = fork();
            if (defined $k && $k == 0) {
                $serve->($c);
                POSIX::_exit(0);
            }
            close $c;
        }
    }
    close $srv;
    $t->{children}{"http01-$port"} = $pid;
    return $pid;
}

# hold_http01($www, TOKEN) / release_http01($www, TOKEN): the responder
# holds its answer for TOKEN from then on / answers it now
sub hold_http01 { PKITest::spew("$_[0]/$_[1].delay", 'hold') }
sub release_http01 { unlink "$_[0]/$_[1].delay" }

# new(t => PKITest, base => https://.../acme, www => dir, timeout => s,
#     http => an object with HTTP::Tiny's request(), e.g. one that speaks
#     HTTP/2 through curl (t/http2.t); default an HTTP::Tiny)
# lab($t, $port): the ACME lab of a test whose nginx runs: an http-01
# responder on PORT serving DIR/www, and a client of /acme/ (its base and
# www set) with an account.  Returns the client.
sub lab {
    my ($t, $port) = @_;
    my $www = $t->dir . '/www';
    mkdir $www;
    start_http01($t, $port, $www);
    my $c = ACMELoad->new(t => $t, www => $www, timeout => 30,
                          base => 'https://127.0.0.1:' . $t->https_port
                                  . '/acme');
    Test::More::ok($c->account->{ok}, 'an account');
    return $c;
}

sub new {
    my ($class, %o) = @_;
    require Crypt::PK::ECC;
    require HTTP::Tiny;
    my $k = Crypt::PK::ECC->new;
    $k->generate_key('secp256r1');
    my $self = bless { %o, key => $k, nonce => undef, requests => 0 },
                     $class;
    $self->{http} ||= HTTP::Tiny->new(verify_SSL => 1, keep_alive => 1,
        timeout => $o{timeout} || 15,
        SSL_options => { SSL_ca_file => $o{t}->pki . '/root.pem' });
    return $self;
}

sub _jwk {
    my ($self) = @_;
    my $h = $self->{key}->export_key_jwk('public', 1);
    return { map { $_ => $h->{$_} } grep { /^(kty|crv|x|y)$/ } keys %$h };
}

sub _fresh_nonce {
    my ($self) = @_;
    my $r = $self->{http}->request('HEAD', "$self->{base}/new-nonce");
    $self->{requests}++;
    $self->{nonce_answer} = $r;
    return $r->{headers}{'replay-nonce'};
}

# one signed POST; returns the HTTP::Tiny answer with json, problem
sub _post {
    my ($self, $url, $payload) = @_;
    my $r;
    for my $try (1 .. 5) {
        my $nonce = delete($self->{nonce}) // $self->_fresh_nonce;
        if (!defined $nonce) {
            my $a = $self->{nonce_answer} || {};
            return { status => $a->{status} // 599,
                     content => 'new-nonce: ' . ($a->{content} // ''),
                     json => undef, problem => 'no-nonce',
                     headers => $a->{headers} || {} };
        }
        my %h = (alg => 'ES256', url => $url, nonce => $nonce);
        if ($self->{kid}) {
            $h{kid} = $self->{kid};
        } else {
            $h{jwk} = $self->_jwk;
        }
        my $p64 = encode_base64url($JSON->encode(\%h));
        my $pl64 = defined $payload
                   ? encode_base64url(ref $payload ? $JSON->encode($payload)
                                                   : $payload) : '';
        my $sig = $self->{key}->sign_message_rfc7518("$p64.$pl64", 'SHA256');
        my $body = $JSON->encode({ protected => $p64, payload => $pl64,
                                   signature => encode_base64url($sig) });
        my $t0 = time;
        $r = $self->{http}->request('POST', $url, { content => $body,
            headers => { 'Content-Type' => 'application/jose+json' } });
        my $dt = time - $t0;
        $self->{max_req} = $dt if $dt > ($self->{max_req} // 0);
        $self->{requests}++;
        $self->{nonce} = $r->{headers}{'replay-nonce'};
        my $ct = $r->{headers}{'content-type'} // '';
        $r->{json} = eval { decode_json($r->{content}) }
            if $ct =~ /json/ && length($r->{content} // '');
        $r->{problem} = ($ct =~ /problem\+json/ && $r->{json})
                        ? ($r->{json}{type} // '') =~ s/^.*:error://r : '';
        if ($r->{problem} eq 'badNonce') {
            $self->{bad_nonce}++;
            next;              # RFC 8555 6.5: retry with the fresh nonce
        }
        last;
    }
    return $r;
}

sub _fail {
    my ($self, $step, $r) = @_;
    # the account is gone (a flushed store): register again next time
    delete $self->{kid} if ($r->{problem} // '') eq 'accountDoesNotExist';
    my $c = $r->{content} // '';
    $c =~ s/\s+/ /g;
    return { ok => 0, step => $step, status => $r->{status} // 0,
             problem => $r->{problem} // '',
             retry_after => $r->{headers}{'retry-after'} // '',
             err => substr($c, 0, 200) };
}

# account([EAB_KID, HMAC_KEY]): newAccount; with an External Account
# Binding (RFC 8555 7.3.4, HS256) when given a key of the admin API
# (PKITest::eab_key)
sub account {
    my ($self, $ekid, $hkey) = @_;
    my $pl = { termsOfServiceAgreed => JSON::PP::true };
    if (defined $ekid) {
        require Crypt::Mac::HMAC;
        my $p64 = encode_base64url($JSON->encode({ alg => 'HS256',
            kid => $ekid, url => "$self->{base}/new-account" }));
        my $pl64 = encode_base64url($JSON->encode($self->_jwk));
        my $mac = Crypt::Mac::HMAC::hmac('SHA256', decode_base64url($hkey),
                                         "$p64.$pl64");
        $pl->{externalAccountBinding} = { protected => $p64,
            payload => $pl64, signature => encode_base64url($mac) };
    }
    my $r = $self->_post("$self->{base}/new-account", $pl);
    return $self->_fail('newAccount', $r)
        if $r->{status} != 201 && $r->{status} != 200;
    $self->{kid} = $r->{headers}{location};
    return { ok => 1 };
}

# key_change(): RFC 8555 7.3.5 to a fresh P-256 key; on 200 the client
# signs with it.  Returns the answer, with {key} the new key.
sub key_change {
    my ($self) = @_;
    my $nk = Crypt::PK::ECC->new;
    $nk->generate_key('secp256r1');
    my $url = "$self->{base}/key-change";
    my $old = $self->_jwk;
    my $h = $nk->export_key_jwk('public', 1);
    my $p64 = encode_base64url($JSON->encode({ alg => 'ES256', url => $url,
        jwk => { map { $_ => $h->{$_} } qw(kty crv x y) } }));
    my $pl64 = encode_base64url($JSON->encode({ account => $self->{kid},
                                                oldKey => $old }));
    my $inner = $JSON->encode({ protected => $p64, payload => $pl64,
        signature => encode_base64url(
            $nk->sign_message_rfc7518("$p64.$pl64", 'SHA256')) });
    my $r = $self->_post($url, $inner);
    $self->{key} = $nk if $r->{status} == 200;
    $r->{key} = $nk;
    return $r;
}

sub _poll {
    my ($self, $url, $want, $secs) = @_;
    my $dl = time + ($secs || 10);
    my $r;
    while (time < $dl) {
        $r = $self->_post($url, undef);
        return $r if $r->{status} != 200;
        my $st = $r->{json}{status} // '';
        return $r if $st =~ /^($want|invalid)$/;
        sleep 0.05;
    }
    return $r;
}

# ready(name): a newOrder for one dns name, each of its authorizations
# validated by http-01, polled until the order is ready.  Returns the
# newOrder answer, with {ready} the order as the last poll read it.
sub ready {
    my ($self, $name) = @_;
    my $thumb = $self->{key}->export_key_jwk_thumbprint('SHA256');
    my $r = $self->_post("$self->{base}/new-order",
                         { identifiers => [{ type => 'dns', value => $name }] });
    for my $az (@{ $r->{json}{authorizations} || [] }) {
        my $a = $self->_post($az, undef);
        my ($h) = grep { $_->{type} eq 'http-01' }
                  @{ $a->{json}{challenges} || [] };
        next if !$h || ($a->{json}{status} // '') eq 'valid';
        PKITest::spew("$self->{www}/$h->{token}", "$h->{token}.$thumb");
        $self->_post($h->{url}, {});
        $self->_poll($az, 'valid');
    }
    $r->{ready} = $self->_poll($r->{headers}{location} // '', 'ready');
    return $r;
}

# issue(name, csr_der => DER): one whole issuance.  Returns
# { ok => 1, pem => chain } or the failure (step, status, problem, ...)
sub issue {
    my ($self, $dns, $csr_der) = @_;
    $self->{fin_t0} = undef;
    if (!$self->{kid}) {
        my $a = $self->account;
        return $a if !$a->{ok};
    }
    my $r = $self->_post("$self->{base}/new-order",
                         { identifiers => [{ type => 'dns', value => $dns }] });
    return $self->_fail('newOrder', $r) if $r->{status} != 201;
    my $order = $r->{headers}{location};
    my $fin = $r->{json}{finalize};
    for my $az (@{ $r->{json}{authorizations} || [] }) {
        my $a = $self->_post($az, undef);
        return $self->_fail('authz', $a) if $a->{status} != 200;
        next if ($a->{json}{status} // '') eq 'valid';
        my ($ch) = grep { $_->{type} eq 'http-01' }
                   @{ $a->{json}{challenges} || [] };
        return $self->_fail('authz', $a) if !$ch;
        PKITest::spew("$self->{www}/$ch->{token}", "$ch->{token}."
            . $self->{key}->export_key_jwk_thumbprint('SHA256'));
        my $c = $self->_post($ch->{url}, {});
        return $self->_fail('challenge', $c) if $c->{status} != 200;
        my $d = $self->_poll($az, 'valid');
        return $self->_fail('authz-poll', $d)
            if $d->{status} != 200 || $d->{json}{status} ne 'valid';
    }
    my $o = $self->_poll($order, 'ready');
    return $self->_fail('order-poll', $o)
        if $o->{status} != 200 || $o->{json}{status} !~ /^(ready|valid)$/;
    $self->{fin_t0} = time;
    my $f = $self->_post($fin, { csr => encode_base64url($csr_der) });
    return $self->_fail('finalize', $f) if $f->{status} != 200;
    if (($f->{json}{status} // '') ne 'valid') {
        $f = $self->_poll($order, 'valid');
        return $self->_fail('finalize-poll', $f)
            if $f->{status} != 200 || $f->{json}{status} ne 'valid';
    }
    my $cr = $self->_post($f->{json}{certificate}, undef);
    return $self->_fail('download', $cr) if $cr->{status} != 200;
    return { ok => 1, pem => $cr->{content}, order => $order };
}

# loader($t, base => URL, www => DIR): a start_load() client body: one
# issuance with a fresh P-256 CSR per call.  Each result: code (200 when a
# certificate came), cert (its file), serial (upper-case hex), fin_t0 (when
# finalize was sent), or step/status/problem/retry_after of the failure.
sub loader {
    my ($t, %o) = @_;
    my $client;
    return sub {
        my ($k, $i) = @_;
        $client ||= ACMELoad->new(t => $t, base => $o{base}, www => $o{www});
        my $name = "acme-$k-$i";
        my $dns = "c$k-$i.example";
        my ($der) = $t->make_csr($name, subj => '/', san => "DNS:$dns");
        my $r = $client->issue($dns, $der);
        $r->{bad_nonce} = $client->{bad_nonce} // 0;
        $r->{fin_t0} = $client->{fin_t0};
        $r->{max_req} = delete $client->{max_req};
        if (!$r->{ok}) {
            $r->{code} = $r->{status};
            sleep 0.3;               # not at full speed against a failure
            return $r;
        }
        my $f = $t->save_first_cert(delete $r->{pem}, $name);
        $r->{code} = $f ? 200 : 0;
        $r->{cert} = $f;
        $r->{serial} = $f ? uc $t->x509_field($f, 'serial') : '';
        return $r;
    };
}

1;
