// Copyright 2026 The nginx-pki developers
// SPDX-License-Identifier: Apache-2.0

// Package acmetest is what the Go ACME clients of t/acme_go.t (t/go/xacme,
// t/go/acmez) share: their command-line flags, the account key file, the
// HTTP client that trusts only the test root, the http-01 and tls-alpn-01
// responder and the management API of pebble-challtestsrv.  It uses no
// ACME library, so each program keeps the calls of its own library.
//
// t/acme_go.t builds the programs in GOPATH mode with GOPATH set to
// "t/go:/usr/share/gocode", so this package is found as "acmetest".
package acmetest

import (
	"bytes"
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
	"sync"
	"time"
)

// the flags of both programs (a program may add its own)
var (
	DirURL    = flag.String("dir", "", "ACME directory URL")
	CAFile    = flag.String("ca", "", "CA bundle (the only trust anchor)")
	KeyFile   = flag.String("key", "", "account key (PEM, made if absent)")
	KeyType   = flag.String("keytype", "ec", "account key type when made: ec (P-256) or rsa (2048)")
	Contact   = flag.String("contact", "", "contact URL (mailto:...)")
	EABKID    = flag.String("eab-kid", "", "External Account Binding key id")
	EABHMAC   = flag.String("eab-hmac", "", "External Account Binding HMAC key (base64url)")
	Names     = flag.String("names", "", "identifiers, comma-separated")
	Challenge = flag.String("challenge", "http-01", "http-01, tls-alpn-01 or dns-01")
	HTTPAddr  = flag.String("http", "127.0.0.1:5002", "http-01 listen address")
	TLSAddr   = flag.String("tls", "127.0.0.1:5001", "tls-alpn-01 listen address")
	DNSMgmt   = flag.String("dns-mgmt", "", "pebble-challtestsrv management URL")
	Out       = flag.String("out", "", "output prefix for issue")
	CertFile  = flag.String("cert", "", "certificate to revoke (PEM)")
	Reason    = flag.Int("reason", 0, "revocation reason code")
	NewKey    = flag.String("newkey", "", "new account key for rollover")
	NotAfter  = flag.Duration("not-after", 0, "issue: ask for notAfter this long from now (0: none)")
	TZMinutes = flag.Int("tz", 0, "issue: the UTC offset (minutes) notAfter is written in, as a host on that zone does")
)

// Prog names the program in its error messages.
var Prog = "acmetest"

// Die prints "PROG: message" and exits 1.
func Die(f string, a ...interface{}) {
	fmt.Fprintf(os.Stderr, Prog+": "+f+"\n", a...)
	os.Exit(1)
}

// Parse parses the command line and returns its one command.
func Parse() string {
	flag.Parse()
	if flag.NArg() != 1 || *DirURL == "" || *CAFile == "" || *KeyFile == "" {
		Die("usage: %s -dir URL -ca FILE -key FILE [flags] COMMAND", Prog)
	}
	return flag.Arg(0)
}

// LoadKey reads a PEM private key, or makes one of typ and writes it.
func LoadKey(file, typ string) crypto.Signer {
	if b, err := os.ReadFile(file); err == nil {
		blk, _ := pem.Decode(b)
		if blk == nil {
			Die("%s: no PEM", file)
		}
		k, err := x509.ParsePKCS8PrivateKey(blk.Bytes)
		if err != nil {
			Die("%s: %v", file, err)
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
		Die("key: %v", err)
	}
	WriteKey(file, k)
	return k
}

// WriteKey writes a private key as PKCS#8 PEM.
func WriteKey(file string, k crypto.Signer) {
	der, _ := x509.MarshalPKCS8PrivateKey(k)
	err := os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), 0600)
	if err != nil {
		Die("%v", err)
	}
}

// ReadPEM is the DER of the first PEM block of a file.
func ReadPEM(file string) []byte {
	b, err := os.ReadFile(file)
	if err != nil {
		Die("%v", err)
	}
	blk, _ := pem.Decode(b)
	if blk == nil {
		Die("%s: no PEM", file)
	}
	return blk.Bytes
}

// HTTPClient trusts the certificates of -ca only.
func HTTPClient() *http.Client {
	pool := x509.NewCertPool()
	b, err := os.ReadFile(*CAFile)
	if err != nil || !pool.AppendCertsFromPEM(b) {
		Die("%s: no CA certificates", *CAFile)
	}
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: pool}}}
}

// --- the validator's side: http-01 and tls-alpn-01 ---------------------------

// Responder answers the validator: http-01 key authorizations by path,
// tls-alpn-01 certificates by SNI.  Calls counts the requests and
// handshakes it was asked for.
type Responder struct {
	mu    sync.Mutex
	keys  map[string]string           // path -> key authorization
	certs map[string]*tls.Certificate // SNI -> acme-tls/1 certificate
	calls int
}

// AddHTTP01 answers PATH with a key authorization.
func (r *Responder) AddHTTP01(path, keyAuth string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.keys == nil {
		r.keys = map[string]string{}
	}
	r.keys[path] = keyAuth
}

func (r *Responder) RemoveHTTP01(path string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.keys, path)
}

// AddALPN answers the acme-tls/1 handshake for NAME with a certificate.
func (r *Responder) AddALPN(name string, c *tls.Certificate) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.certs == nil {
		r.certs = map[string]*tls.Certificate{}
	}
	r.certs[name] = c
}

func (r *Responder) RemoveALPN(name string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.certs, name)
}

func (r *Responder) Calls() int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.calls
}

func (r *Responder) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	r.mu.Lock()
	ka, ok := r.keys[req.URL.Path]
	r.calls++
	r.mu.Unlock()
	if !ok {
		http.NotFound(w, req)
		return
	}
	w.Write([]byte(ka))
}

func (r *Responder) getCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls++
	if c, ok := r.certs[h.ServerName]; ok {
		return c, nil
	}
	return nil, fmt.Errorf("no challenge for %q", h.ServerName)
}

// ListenHTTP01 serves http-01 on -http until the listener is closed.
func (r *Responder) ListenHTTP01() (net.Listener, error) {
	l, err := net.Listen("tcp", *HTTPAddr)
	if err == nil {
		go http.Serve(l, r)
	}
	return l, err
}

// ListenALPN serves acme-tls/1 handshakes on -tls until the listener is
// closed (handshakes only: the validator closes after it).
func (r *Responder) ListenALPN() (net.Listener, error) {
	l, err := tls.Listen("tcp", *TLSAddr, &tls.Config{
		NextProtos: []string{"acme-tls/1"}, GetCertificate: r.getCertificate})
	if err != nil {
		return nil, err
	}
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
	return l, nil
}

// --- dns-01: pebble-challtestsrv's management API ----------------------------

// SetTXT publishes a TXT record (HOST ends with a dot).
func SetTXT(host, value string) error {
	return mgmt("set-txt", map[string]string{"host": host, "value": value})
}

// ClearTXT removes the TXT records of HOST.
func ClearTXT(host string) error {
	return mgmt("clear-txt", map[string]string{"host": host})
}

func mgmt(op string, body map[string]string) error {
	b, _ := json.Marshal(body)
	r, err := http.Post(*DNSMgmt+"/"+op, "application/json", bytes.NewReader(b))
	if err != nil {
		return fmt.Errorf("challtestsrv %s: %v", op, err)
	}
	r.Body.Close()
	if r.StatusCode != 200 {
		return fmt.Errorf("challtestsrv %s: %s", op, r.Status)
	}
	return nil
}
