// Copyright 2026 The nginx-pki developers
// SPDX-License-Identifier: Apache-2.0

// acmez: the calls Caddy (certmagic) makes with github.com/mholt/acmez, as
// a small CLI for t/acme_go.t.  One command per run; the account is found
// again by its key (GetAccount, onlyReturnExisting), as certmagic does.
//
//	acmez -dir URL -ca ROOT -key ACCT.pem [-keytype ec|rsa] COMMAND
//
//	register  [-contact mailto:..] [-eab-kid K -eab-hmac H]
//	account                                 (prints status, contact)
//	issue     -names a,b -challenge http-01|tls-alpn-01|dns-01 -out PREFIX
//	          (ObtainCertificate) writes PREFIX.pem (the first chain),
//	          PREFIX.key, PREFIX-alt1.pem, .. (the other chains offered)
//	revoke    -cert FILE -reason N [-certkey KEY]
//	          signed by the account, or by the certificate's key
//	rollover  -newkey FILE                  (keyChange; FILE made if absent)
//
// Results are printed as "name: value" lines.
package main

import (
	"acmetest"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez"
	"github.com/mholt/acmez/acme"
	"go.uber.org/zap"
)

var certKey = flag.String("certkey", "", "sign the revocation with this certificate key")

var die = acmetest.Die

func init() { acmetest.Prog = "acmez" }

// --- the solvers: acmez.Solver, as certmagic implements them -----------------
// acmez presents the challenges of all authorizations of an order at once,
// so (as certmagic does) one listener serves them all: opened by the first
// Present, closed by the last CleanUp.

type listener struct {
	mu   sync.Mutex
	refs int
	lsn  net.Listener
}

func (l *listener) acquire(open func() (net.Listener, error)) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refs == 0 {
		lsn, err := open()
		if err != nil {
			return err
		}
		l.lsn = lsn
	}
	l.refs++
	return nil
}

func (l *listener) release() {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.refs == 0 { // CleanUp after a failed Present
		return
	}
	if l.refs--; l.refs == 0 {
		l.lsn.Close()
	}
}

type httpSolver struct {
	acmetest.Responder
	listener
}

func (s *httpSolver) Present(ctx context.Context, ch acme.Challenge) error {
	if err := s.acquire(s.ListenHTTP01); err != nil {
		return err
	}
	s.AddHTTP01(ch.HTTP01ResourcePath(), ch.KeyAuthorization)
	return nil
}

func (s *httpSolver) CleanUp(ctx context.Context, ch acme.Challenge) error {
	s.RemoveHTTP01(ch.HTTP01ResourcePath())
	s.release()
	return nil
}

type alpnSolver struct {
	acmetest.Responder
	listener
}

func (s *alpnSolver) Present(ctx context.Context, ch acme.Challenge) error {
	cert, err := acmez.TLSALPN01ChallengeCert(ch)
	if err != nil {
		return err
	}
	if err := s.acquire(s.ListenALPN); err != nil {
		return err
	}
	s.AddALPN(ch.Identifier.Value, cert)
	return nil
}

func (s *alpnSolver) CleanUp(ctx context.Context, ch acme.Challenge) error {
	s.RemoveALPN(ch.Identifier.Value)
	s.release()
	return nil
}

type dnsSolver struct{ calls int }

func (s *dnsSolver) Present(ctx context.Context, ch acme.Challenge) error {
	s.calls++
	return acmetest.SetTXT(ch.DNS01TXTRecordName()+".", ch.DNS01KeyAuthorization())
}

func (s *dnsSolver) CleanUp(ctx context.Context, ch acme.Challenge) error {
	return acmetest.ClearTXT(ch.DNS01TXTRecordName() + ".")
}

// --- commands ---------------------------------------------------------------

// the account of this key, as the server knows it
func account(ctx context.Context, cl *acme.Client, k crypto.Signer) acme.Account {
	a, err := cl.GetAccount(ctx, acme.Account{PrivateKey: k})
	if err != nil {
		die("account: %v", err)
	}
	return a
}

func issue(ctx context.Context, cl *acmez.Client, acct acme.Account) {
	var calls func() int
	switch *acmetest.Challenge {
	case "http-01":
		s := &httpSolver{}
		cl.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeHTTP01: s}
		calls = s.Calls
	case "tls-alpn-01":
		s := &alpnSolver{}
		cl.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeTLSALPN01: s}
		calls = s.Calls
	case "dns-01":
		s := &dnsSolver{}
		cl.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeDNS01: s}
		calls = func() int { return s.calls }
	default:
		die("unknown challenge %q", *acmetest.Challenge)
	}
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chains, err := cl.ObtainCertificate(ctx, acct, ck, strings.Split(*acmetest.Names, ","))
	if err != nil {
		die("issue: %v", err)
	}
	acmetest.WriteKey(*acmetest.Out+".key", ck)
	for i, c := range chains {
		f := *acmetest.Out + ".pem"
		if i > 0 {
			f = fmt.Sprintf("%s-alt%d.pem", *acmetest.Out, i)
		}
		if err := os.WriteFile(f, c.ChainPEM, 0644); err != nil {
			die("%v", err)
		}
		fmt.Printf("chain: %s\n", c.URL)
	}
	fmt.Printf("chains: %d\nsolver-requests: %d\n", len(chains), calls())
}

func main() {
	cmd := acmetest.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log, _ := zap.NewDevelopment()
	cl := &acmez.Client{Client: &acme.Client{Directory: *acmetest.DirURL,
		HTTPClient: acmetest.HTTPClient(), UserAgent: "nginx-pki-test acmez",
		Logger: log}, Logger: log}
	key := acmetest.LoadKey(*acmetest.KeyFile, *acmetest.KeyType)

	switch cmd {
	case "register":
		a := acme.Account{PrivateKey: key, TermsOfServiceAgreed: true}
		if *acmetest.Contact != "" {
			a.Contact = []string{*acmetest.Contact}
		}
		if *acmetest.EABKID != "" {
			err := a.SetExternalAccountBinding(ctx, cl.Client,
				acme.EAB{KeyID: *acmetest.EABKID, MACKey: *acmetest.EABHMAC})
			if err != nil {
				die("eab: %v", err)
			}
		}
		a, err := cl.NewAccount(ctx, a)
		if err != nil {
			die("register: %v", err)
		}
		fmt.Printf("account: %s\nstatus: %s\n", a.Location, a.Status)
	case "account":
		a := account(ctx, cl.Client, key)
		fmt.Printf("account: %s\nstatus: %s\ncontact: %s\n", a.Location,
			a.Status, strings.Join(a.Contact, ","))
	case "issue":
		issue(ctx, cl, account(ctx, cl.Client, key))
	case "revoke":
		a := account(ctx, cl.Client, key)
		c, err := x509.ParseCertificate(acmetest.ReadPEM(*acmetest.CertFile))
		if err != nil {
			die("%v", err)
		}
		// acmez signs with the account (kid) when given the account's key
		signer := a.PrivateKey
		if *certKey != "" {
			signer = acmetest.LoadKey(*certKey, "")
		}
		if err := cl.RevokeCertificate(ctx, a, c, signer, *acmetest.Reason); err != nil {
			die("revoke: %v", err)
		}
		fmt.Println("revoked: yes")
	case "rollover":
		a := account(ctx, cl.Client, key)
		nk := acmetest.LoadKey(*acmetest.NewKey, *acmetest.KeyType)
		if _, err := cl.AccountKeyRollover(ctx, a, nk); err != nil {
			die("rollover: %v", err)
		}
		fmt.Println("rolled-over: yes")
	default:
		die("unknown command %q", cmd)
	}
}
