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
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/mholt/acmez"
	"github.com/mholt/acmez/acme"
	"go.uber.org/zap"
)

var (
	dirURL    = flag.String("dir", "", "ACME directory URL")
	caFile    = flag.String("ca", "", "CA bundle (the only trust anchor)")
	keyFile   = flag.String("key", "", "account key (PEM, made if absent)")
	keyType   = flag.String("keytype", "ec", "account key type when made: ec (P-256) or rsa (2048)")
	contact   = flag.String("contact", "", "contact URL (mailto:...)")
	eabKID    = flag.String("eab-kid", "", "External Account Binding key id")
	eabHMAC   = flag.String("eab-hmac", "", "External Account Binding HMAC key (base64url)")
	names     = flag.String("names", "", "identifiers, comma-separated")
	challenge = flag.String("challenge", "http-01", "http-01, tls-alpn-01 or dns-01")
	httpAddr  = flag.String("http", "127.0.0.1:5002", "http-01 listen address")
	tlsAddr   = flag.String("tls", "127.0.0.1:5001", "tls-alpn-01 listen address")
	dnsMgmt   = flag.String("dns-mgmt", "", "pebble-challtestsrv management URL")
	out       = flag.String("out", "", "output prefix for issue")
	certFile  = flag.String("cert", "", "certificate to revoke (PEM)")
	certKey   = flag.String("certkey", "", "sign the revocation with this certificate key")
	reason    = flag.Int("reason", 0, "revocation reason code")
	newKey    = flag.String("newkey", "", "new account key for rollover")
)

func die(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "acmez: "+f+"\n", a...)
	os.Exit(1)
}

// loadKey reads a PEM private key, or makes one of typ and writes it
func loadKey(file, typ string) crypto.Signer {
	if b, err := os.ReadFile(file); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			die("%s: no PEM", file)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			die("%s: %v", file, err)
		}
		return k.(crypto.Signer)
	}
	var k crypto.Signer
	var err error
	if typ == "rsa" {
		k, err = rsa.GenerateKey(rand.Reader, 2048)
	} else {
		k, err = ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	}
	if err != nil {
		die("key: %v", err)
	}
	writeKey(file, k)
	return k
}

func writeKey(file string, k crypto.Signer) {
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0600)
	if err != nil {
		die("%v", err)
	}
}

func httpClient() *http.Client {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(*caFile)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		die("%s: no CA certificates", *caFile)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// --- the solvers: acmez.Solver, as certmagic implements them -----------------
// acmez presents the challenges of all authorizations of an order at once,
// so (as certmagic does) one listener serves them all: opened by the first
// Present, closed by the last CleanUp.

type listener struct {
	mu    sync.Mutex
	refs  int
	lsn   net.Listener
	calls int
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
	listener
	keys map[string]string // path -> key authorization
}

func (s *httpSolver) Present(ctx context.Context, ch acme.Challenge) error {
	err := s.acquire(func() (net.Listener, error) {
		l, err := net.Listen("tcp", *httpAddr)
		if err == nil {
			go http.Serve(l, s)
		}
		return l, err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.keys[ch.HTTP01ResourcePath()] = ch.KeyAuthorization
	s.mu.Unlock()
	return nil
}

func (s *httpSolver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	ka, ok := s.keys[r.URL.Path]
	s.calls++
	s.mu.Unlock()
	if !ok {
		http.NotFound(w, r)
		return
	}
	w.Write([]byte(ka))
}

func (s *httpSolver) CleanUp(ctx context.Context, ch acme.Challenge) error {
	s.mu.Lock()
	delete(s.keys, ch.HTTP01ResourcePath())
	s.mu.Unlock()
	s.release()
	return nil
}

type alpnSolver struct {
	listener
	certs map[string]*tls.Certificate // SNI -> acme-tls/1 certificate
}

func (s *alpnSolver) Present(ctx context.Context, ch acme.Challenge) error {
	cert, err := acmez.TLSALPN01ChallengeCert(ch)
	if err != nil {
		return err
	}
	err = s.acquire(func() (net.Listener, error) {
		l, err := tls.Listen("tcp", *tlsAddr, &tls.Config{
			NextProtos:     []string{acmez.ACMETLS1Protocol},
			GetCertificate: s.getCertificate})
		if err == nil {
			go accept(l)
		}
		return l, err
	})
	if err != nil {
		return err
	}
	s.mu.Lock()
	s.certs[ch.Identifier.Value] = cert
	s.mu.Unlock()
	return nil
}

func (s *alpnSolver) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.calls++
	if c, ok := s.certs[h.ServerName]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("no challenge for %q", h.ServerName)
}

// handshakes only: the validator closes after it
func accept(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		go func() {
			c.SetDeadline(time.Now().Add(10 * time.Second))
			c.(*tls.Conn).Handshake()
			c.Close()
		}()
	}
}

func (s *alpnSolver) CleanUp(ctx context.Context, ch acme.Challenge) error {
	s.mu.Lock()
	delete(s.certs, ch.Identifier.Value)
	s.mu.Unlock()
	s.release()
	return nil
}

type dnsSolver struct{ calls int }

func mgmt(op string, body map[string]string) error {
	b, _ := json.Marshal(body)
	r, err := http.Post(*dnsMgmt+"/"+op, "application/json", bytes.NewReader(b))
	if err != nil {
		return err
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		return fmt.Errorf("challtestsrv %s: %s", op, r.Status)
	}
	return nil
}

func (s *dnsSolver) Present(ctx context.Context, ch acme.Challenge) error {
	s.calls++
	return mgmt("set-txt", map[string]string{"host": ch.DNS01TXTRecordName() + ".",
		"value": ch.DNS01KeyAuthorization()})
}

func (s *dnsSolver) CleanUp(ctx context.Context, ch acme.Challenge) error {
	return mgmt("clear-txt", map[string]string{"host": ch.DNS01TXTRecordName() + "."})
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
	switch *challenge {
	case "http-01":
		s := &httpSolver{keys: map[string]string{}}
		cl.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeHTTP01: s}
		calls = func() int { return s.calls }
	case "tls-alpn-01":
		s := &alpnSolver{certs: map[string]*tls.Certificate{}}
		cl.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeTLSALPN01: s}
		calls = func() int { return s.calls }
	case "dns-01":
		s := &dnsSolver{}
		cl.ChallengeSolvers = map[string]acmez.Solver{acme.ChallengeTypeDNS01: s}
		calls = func() int { return s.calls }
	default:
		die("unknown challenge %q", *challenge)
	}
	ck, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	chains, err := cl.ObtainCertificate(ctx, acct, ck, strings.Split(*names, ","))
	if err != nil {
		die("issue: %v", err)
	}
	writeKey(*out+".key", ck)
	for i, c := range chains {
		f := *out + ".pem"
		if i > 0 {
			f = fmt.Sprintf("%s-alt%d.pem", *out, i)
		}
		if err := os.WriteFile(f, c.ChainPEM, 0644); err != nil {
			die("%v", err)
		}
		fmt.Printf("chain: %s\n", c.URL)
	}
	fmt.Printf("chains: %d\nsolver-requests: %d\n", len(chains), calls())
}

func main() {
	flag.Parse()
	if flag.NArg() != 1 || *dirURL == "" || *caFile == "" || *keyFile == "" {
		die("usage: acmez -dir URL -ca FILE -key FILE [flags] COMMAND")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	log, _ := zap.NewDevelopment()
	cl := &acmez.Client{Client: &acme.Client{Directory: *dirURL,
		HTTPClient: httpClient(), UserAgent: "nginx-pki-test acmez",
		Logger: log}, Logger: log}
	key := loadKey(*keyFile, *keyType)

	switch flag.Arg(0) {
	case "register":
		a := acme.Account{PrivateKey: key, TermsOfServiceAgreed: true}
		if *contact != "" {
			a.Contact = []string{*contact}
		}
		if *eabKID != "" {
			err := a.SetExternalAccountBinding(ctx, cl.Client,
				acme.EAB{KeyID: *eabKID, MACKey: *eabHMAC})
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
		b, err := os.ReadFile(*certFile)
		if err != nil {
			die("%v", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			die("%s: no PEM", *certFile)
		}
		c, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			die("%v", err)
		}
		// acmez signs with the account (kid) when given the account's key
		signer := a.PrivateKey
		if *certKey != "" {
			signer = loadKey(*certKey, "")
		}
		if err := cl.RevokeCertificate(ctx, a, c, signer, *reason); err != nil {
			die("revoke: %v", err)
		}
		fmt.Println("revoked: yes")
	case "rollover":
		a := account(ctx, cl.Client, key)
		nk := loadKey(*newKey, *keyType)
		if _, err := cl.AccountKeyRollover(ctx, a, nk); err != nil {
			die("rollover: %v", err)
		}
		fmt.Println("rolled-over: yes")
	default:
		die("unknown command %q", flag.Arg(0))
	}
}
