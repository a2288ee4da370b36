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
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/acme"
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
	reason    = flag.Int("reason", 0, "revocation reason code")
	newKey    = flag.String("newkey", "", "new account key for rollover")
)

func die(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, "xacme: "+f+"\n", a...)
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
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	err = os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0600)
	if err != nil {
		die("%v", err)
	}
	return k
}

func writeChain(file string, ders [][]byte) {
	var b bytes.Buffer
	for _, d := range ders {
		pem.Encode(&b, &pem.Block{Type: "CERTIFICATE", Bytes: d})
	}
	if err := os.WriteFile(file, b.Bytes(), 0644); err != nil {
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

// --- solvers: what cert-manager's solver pods do -----------------------------

type solver struct {
	cl    *acme.Client
	mu    sync.Mutex
	http  map[string]string           // path -> key authorization
	alpn  map[string]*tls.Certificate // SNI -> acme-tls/1 certificate
	hsrv  *http.Server
	lsn   net.Listener
	txt   []string
	calls int // challenge requests answered
}

func newSolver(cl *acme.Client) *solver {
	s := &solver{cl: cl, http: map[string]string{}, alpn: map[string]*tls.Certificate{}}
	switch *challenge {
	case "http-01":
		l, err := net.Listen("tcp", *httpAddr)
		if err != nil {
			die("http-01 listen: %v", err)
		}
		s.hsrv = &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			s.mu.Lock()
			ka, ok := s.http[r.URL.Path]
			s.calls++
			s.mu.Unlock()
			if !ok {
				http.NotFound(w, r)
				return
			}
			w.Write([]byte(ka))
		})}
		go s.hsrv.Serve(l)
	case "tls-alpn-01":
		cfg := &tls.Config{NextProtos: []string{acme.ALPNProto},
			GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				s.mu.Lock()
				defer s.mu.Unlock()
				s.calls++
				if c, ok := s.alpn[h.ServerName]; ok {
					return c, nil
				}
				return nil, fmt.Errorf("no challenge for %q", h.ServerName)
			}}
		l, err := tls.Listen("tcp", *tlsAddr, cfg)
		if err != nil {
			die("tls-alpn-01 listen: %v", err)
		}
		s.lsn = l
		go func() {
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
		}()
	}
	return s
}

func (s *solver) close() {
	if s.hsrv != nil {
		s.hsrv.Close()
	}
	if s.lsn != nil {
		s.lsn.Close()
	}
}

func (s *solver) present(ctx context.Context, ch *acme.Challenge, domain string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	switch ch.Type {
	case "http-01":
		ka, err := s.cl.HTTP01ChallengeResponse(ch.Token)
		if err != nil {
			die("%v", err)
		}
		s.http[s.cl.HTTP01ChallengePath(ch.Token)] = ka
	case "tls-alpn-01":
		c, err := s.cl.TLSALPN01ChallengeCert(ch.Token, domain)
		if err != nil {
			die("%v", err)
		}
		s.alpn[domain] = &c
	case "dns-01":
		rec, err := s.cl.DNS01ChallengeRecord(ch.Token)
		if err != nil {
			die("%v", err)
		}
		host := "_acme-challenge." + domain + "."
		s.mgmt("set-txt", map[string]string{"host": host, "value": rec})
		s.txt = append(s.txt, host)
	}
}

func (s *solver) cleanup() {
	for _, h := range s.txt {
		s.mgmt("clear-txt", map[string]string{"host": h})
	}
}

func (s *solver) mgmt(op string, body map[string]string) {
	b, _ := json.Marshal(body)
	r, err := http.Post(*dnsMgmt+"/"+op, "application/json", bytes.NewReader(b))
	if err != nil {
		die("challtestsrv %s: %v", op, err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		die("challtestsrv %s: %s", op, r.Status)
	}
}

// --- commands ---------------------------------------------------------------

func register(ctx context.Context, cl *acme.Client) {
	a := &acme.Account{}
	if *contact != "" {
		a.Contact = []string{*contact}
	}
	if *eabKID != "" {
		k, err := base64.RawURLEncoding.DecodeString(*eabHMAC)
		if err != nil {
			die("eab-hmac: %v", err)
		}
		a.ExternalAccountBinding = &acme.ExternalAccountBinding{KID: *eabKID, Key: k}
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
	ids := strings.Split(*names, ",")
	order, err := cl.AuthorizeOrder(ctx, acme.DomainIDs(ids...))
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
			if c.Type == *challenge {
				ch = c
			}
		}
		if ch == nil {
			die("%s: no %s challenge offered", z.Identifier.Value, *challenge)
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
	fmt.Printf("solver-requests: %d\n", s.calls)
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
	kd, _ := x509.MarshalPKCS8PrivateKey(ck)
	os.WriteFile(*out+".key", pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kd}), 0600)
	writeChain(*out+".pem", der)
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
		writeChain(fmt.Sprintf("%s-alt%d.pem", *out, i+1), ad)
	}
	fmt.Printf("alternates: %d\n", len(alts))
}

func main() {
	flag.Parse()
	if flag.NArg() != 1 || *dirURL == "" || *caFile == "" || *keyFile == "" {
		die("usage: xacme -dir URL -ca FILE -key FILE [flags] COMMAND")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	cl := &acme.Client{DirectoryURL: *dirURL, Key: loadKey(*keyFile, *keyType),
		HTTPClient: httpClient(), UserAgent: "nginx-pki-test xacme"}
	if _, err := cl.Discover(ctx); err != nil {
		die("discover: %v", err)
	}

	switch flag.Arg(0) {
	case "register":
		register(ctx, cl)
	case "update":
		a, err := cl.UpdateReg(ctx, &acme.Account{Contact: []string{*contact}})
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
		b, err := os.ReadFile(*certFile)
		if err != nil {
			die("%v", err)
		}
		blk, _ := pem.Decode(b)
		if blk == nil {
			die("%s: no PEM", *certFile)
		}
		// a nil key: the request is signed by the account (kid)
		if err := cl.RevokeCert(ctx, nil, blk.Bytes, acme.CRLReasonCode(*reason)); err != nil {
			die("revoke: %v", err)
		}
		fmt.Println("revoked: yes")
	case "rollover":
		nk := loadKey(*newKey, *keyType)
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
		die("unknown command %q", flag.Arg(0))
	}
}
