// Copyright 2026 The nginx-pki developers
// SPDX-License-Identifier: Apache-2.0

// xacme: the calls cert-manager makes with golang.org/x/crypto/acme, as a
// small CLI for t/acme_go.t.  One command per run; the account is found
// again by its key (onlyReturnExisting), as cert-manager does.
//
//	xacme -dir URL -ca ROOT -key ACCT.pem [-keytype ec|rsa] COMMAND
//
//	register   [-contact mailto:..] [-eab-kid K -eab-hmac H]
//	update     -contact mailto:..           (UpdateReg)
//	account                                 (GetReg: prints status, contact)
//	issue      -names a,b -challenge http-01|tls-alpn-01|dns-01 -out PREFIX
//	           writes PREFIX.pem (chain), PREFIX.key, PREFIX-alt1.pem, ..
//	revoke     -cert FILE -reason N         (signed by the account)
//	rollover   -newkey FILE                 (keyChange; FILE made if absent)
//	deactivate                              (DeactivateReg)
//
// Results are printed as "name: value" lines.
package main

import (
	"acmetest"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/pem"
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"golang.org/x/crypto/acme"
)

var die = acmetest.Die

func init() { acmetest.Prog = "xacme" }

func writeChain(file string, ders [][]byte) {
	var b bytes.Buffer
	for _, d := range ders {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	if err := os.WriteFile(file, b.Bytes(), 0644); err != nil {
		die("%v", err)
	}
}

// --- solvers: what cert-manager's solver pods do -----------------------------

type solver struct {
	acmetest.Responder
	cl  *acme.Client
	lsn net.Listener
	txt []string
}

func newSolver(cl *acme.Client) *solver {
	s := &solver{cl: cl}
	var err error
	switch *acmetest.Challenge {
	case "http-01":
		if s.lsn, err = s.ListenHTTP01(); err != nil {
			die("http-01 listen: %v", err)
		}
	case "tls-alpn-01":
		if s.lsn, err = s.ListenALPN(); err != nil {
			die("tls-alpn-01 listen: %v", err)
		}
	}
	return s
}

func (s *solver) close() {
	if s.lsn != nil {
		s.lsn.Close()
	}
}

func (s *solver) present(ctx context.Context, ch *acme.Challenge, domain string) {
	switch ch.Type {
	case "http-01":
		ka, err := s.cl.HTTP01ChallengeResponse(ch.Token)
		if err != nil {
			die("%v", err)
		}
		s.AddHTTP01(s.cl.HTTP01ChallengePath(ch.Token), ka)
	case "tls-alpn-01":
		c, err := s.cl.TLSALPN01ChallengeCert(ch.Token, domain)
		if err != nil {
			die("%v", err)
		}
		s.AddALPN(domain, &c)
	case "dns-01":
		rec, err := s.cl.DNS01ChallengeRecord(ch.Token)
		if err != nil {
			die("%v", err)
		}
		host := "_acme-challenge." + domain + "."
		if err := acmetest.SetTXT(host, rec); err != nil {
			die("%v", err)
		}
		s.txt = append(s.txt, host)
	}
}

func (s *solver) cleanup() {
	for _, h := range s.txt {
		if err := acmetest.ClearTXT(h); err != nil {
			die("%v", err)
		}
	}
}

// --- commands ---------------------------------------------------------------

func register(ctx context.Context, cl *acme.Client) {
	a := &acme.Account{}
	if *acmetest.Contact != "" {
		a.Contact = []string{*acmetest.Contact}
	}
	if *acmetest.EABKID != "" {
		k, err := base64.RawURLEncoding.DecodeString(*acmetest.EABHMAC)
		if err != nil {
			die("eab-hmac: %v", err)
		}
		a.ExternalAccountBinding = &acme.ExternalAccountBinding{KID: *acmetest.EABKID, Key: k}
	}
	got, err := cl.Register(ctx, a, acme.AcceptTOS)
	if errors.Is(err, acme.ErrAccountAlreadyExists) {
		// cert-manager: an existing account is looked up, not an error
		fmt.Println("existing: yes")
		got, err = cl.GetReg(ctx, "")
	}
	if err != nil {
		die("register: %v", err)
	}
	fmt.Printf("account: %s\nstatus: %s\n", got.URI, got.Status)
}

func issue(ctx context.Context, cl *acme.Client) {
	ids := strings.Split(*acmetest.Names, ",")
	var opts []acme.OrderOption
	if *acmetest.NotAfter > 0 {
		// x/crypto/acme writes the time in its own zone (RFC 3339 with
		// the offset), as cert-manager's duration does on a non-UTC host
		zone := time.FixedZone("lab", *acmetest.TZMinutes*60)
		na := time.Now().Add(*acmetest.NotAfter).Truncate(time.Second).In(zone)
		opts = append(opts, acme.WithOrderNotAfter(na))
		fmt.Printf("not-after: %d\n", na.Unix())
	}
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(ids...), opts...)
	if err != nil {
		die("new order: %v", err)
	}
	// WaitOrder's answer has no Location (the server sends one only on
	// newOrder and finalize), so the URL is kept, as cert-manager does
	orderURL := order.URI
	fmt.Printf("order: %s\n", orderURL)
	s := newSolver(cl)
	defer s.close()
	for _, u := range order.AuthzURLs {
		z, err := cl.GetAuthorization(ctx, u)
		if err != nil {
			die("authorization: %v", err)
		}
		if z.Status == acme.StatusValid {
			continue
		}
		var ch *acme.Challenge
		for _, c := range z.Challenges {
			if c.Type == *acmetest.Challenge {
				ch = c
			}
		}
		if ch == nil {
			die("%s: no %s challenge offered", z.Identifier.Value, *acmetest.Challenge)
		}
		s.present(ctx, ch, z.Identifier.Value)
		if _, err := cl.Accept(ctx, ch); err != nil {
			die("accept: %v", err)
		}
		if _, err := cl.WaitAuthorization(ctx, z.URI); err != nil {
			s.cleanup()
			die("%s: %v", z.Identifier.Value, err)
		}
		// cert-manager reads the challenge back once it is done
		if c, err := cl.GetChallenge(ctx, ch.URI); err != nil || c.Status != acme.StatusValid {
			die("challenge after validation: %v %+v", err, c)
		}
	}
	s.cleanup()
	fmt.Printf("solver-requests: %d\n", s.Calls())
	order, err = cl.WaitOrder(ctx, orderURL)
	if err != nil {
		die("order: %v", err)
	}

	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	csr, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{
		Subject: pkix.Name{CommonName: ids[0]}, DNSNames: ids}, ck)
	if err != nil {
		die("csr: %v", err)
	}
	der, certURL, err := cl.CreateOrderCert(ctx, order.FinalizeURL, csr, true)
	if err != nil {
		die("finalize: %v", err)
	}
	acmetest.WriteKey(*acmetest.Out+".key", ck)
	writeChain(*acmetest.Out+".pem", der)
	fmt.Printf("certificate: %s\nchain-length: %d\n", certURL, len(der))

	// the order, read back, names the same certificate URL
	if o, err := cl.GetOrder(ctx, orderURL); err != nil || o.CertURL != certURL || o.Status != acme.StatusValid {
		die("order after finalize: %v %+v", err, o)
	}
	// cert-manager's preferredChain: the alternates, each fetched
	alts, err := cl.ListCertAlternates(ctx, certURL)
	if err != nil {
		die("alternates: %v", err)
	}
	for i, a := range alts {
		ad, err := cl.FetchCert(ctx, a, true)
		if err != nil {
			die("alternate %s: %v", a, err)
		}
		if !bytes.Equal(ad[0], der[0]) {
			die("alternate %s: another leaf", a)
		}
		writeChain(fmt.Sprintf("%s-alt%d.pem", *acmetest.Out, i+1), ad)
	}
	fmt.Printf("alternates: %d\n", len(alts))
}

func main() {
	cmd := acmetest.Parse()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	key := acmetest.LoadKey(*acmetest.KeyFile, *acmetest.KeyType)
	cl := &acme.Client{DirectoryURL: *acmetest.DirURL, Key: key,
		HTTPClient: acmetest.HTTPClient(), UserAgent: "nginx-pki-test xacme"}
	if _, err := cl.Discover(ctx); err != nil {
		die("discover: %v", err)
	}

	switch cmd {
	case "register":
		register(ctx, cl)
	case "update":
		a, err := cl.UpdateReg(ctx, &acme.Account{Contact: []string{*acmetest.Contact}})
		if err != nil {
			die("update: %v", err)
		}
		fmt.Printf("account: %s\ncontact: %s\n", a.URI, strings.Join(a.Contact, ","))
	case "account":
		a, err := cl.GetReg(ctx, "")
		if err != nil {
			die("account: %v", err)
		}
		fmt.Printf("account: %s\nstatus: %s\ncontact: %s\n", a.URI, a.Status,
			strings.Join(a.Contact, ","))
	case "issue":
		issue(ctx, cl)
	case "revoke":
		der := acmetest.ReadPEM(*acmetest.CertFile)
		// a nil key: the request is signed by the account (kid)
		if err := cl.RevokeCert(ctx, nil, der, acme.CRLReasonCode(*acmetest.Reason)); err != nil {
			die("revoke: %v", err)
		}
		fmt.Println("revoked: yes")
	case "rollover":
		nk := acmetest.LoadKey(*acmetest.NewKey, *acmetest.KeyType)
		if err := cl.AccountKeyRollover(ctx, nk); err != nil {
			die("rollover: %v", err)
		}
		fmt.Println("rolled-over: yes")
	case "deactivate":
		if err := cl.DeactivateReg(ctx); err != nil {
			die("deactivate: %v", err)
		}
		fmt.Println("deactivated: yes")
	default:
		die("unknown command %q", cmd)
	}
}
