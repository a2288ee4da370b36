/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The fixture shared by the fuzz targets (see fuzz.h).  Built once per
 * process; everything it allocates stays reachable from static variables
 * until exit, so LeakSanitizer does not count it.
 */

#include <dirent.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/pem.h>

#include "fuzz.h"


#define PKI_FUZZ_MAX_ARGS  16


static pki_fuzz_fixture_t   fx;
static int                  fx_done;
static char                 fx_dir[64];
static pki_key_t           *fx_keys[2];


/* Fixed test-only keys (never used anywhere else): the fixture CAs have
 * the same names and keys in every run, so seed inputs can name them (an
 * OCSP CertID hashes the issuer's name and key) and a crash reproduces. */
static const char  pki_fuzz_root_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQganguNSI37wONyBA9\n"
    "l5fM51cwPdKsq4e1eOyhVJXyAnuhRANCAAQule6Lp0JHLVxAxVChCk8XAkcBkFZ7\n"
    "uHdqRLasAVQ7CgW7EZL/KhobNZPFSQDvzkfpNIatIUzY0rS9MaHOh82+\n"
    "-----END PRIVATE KEY-----\n";

static const char  pki_fuzz_ca_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQglNRq6/4AQGhnX+I1\n"
    "+N5rs5+oXKrCgCmpy4jUaiUvWOuhRANCAARfu7eSnwlmxnehUO1szp6BnDt/b+q0\n"
    "2PLVJTISo+ftAiBcWObUBpaXMZQMAJudDLXdvepKK0diJtfJLpm+ZCXu\n"
    "-----END PRIVATE KEY-----\n";

static const char  pki_fuzz_leaf_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIGHAgEAMBMGByqGSM49AgEGCCqGSM49AwEHBG0wawIBAQQgVj4iAAcpbOypb0BY\n"
    "qBZj7KmfukIcIJESBxjyfVQRD7mhRANCAARofQZqeBDTJCPbz9RiwHx7v+16E0ks\n"
    "TY7r2Yrps+KXSrGqtRYQ2JS4pRLz/eaWqyh+3ki8pxr3f9V6p00B4ViI\n"
    "-----END PRIVATE KEY-----\n";


static EVP_PKEY *
pki_fuzz_pem_key(const char *pem)
{
    BIO       *b;
    EVP_PKEY  *pk;

    b = BIO_new_mem_buf(pem, -1);
    pk = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);

    return pk;
}


static void
pki_fuzz_die(const char *what, const pki_result_t *res)
{
    fprintf(stderr, "fuzz fixture: %s: %s %s\n", what,
            res ? res->detail : "", res ? res->log : "");
    exit(1);
}


const char *
pki_fuzz_dir(void)
{
    pki_fuzz_fixture();

    return fx_dir;
}


int
pki_fuzz_verbose(void)
{
    static int  v = -1;

    if (v < 0) {
        v = getenv("PKI_FUZZ_VERBOSE") != NULL;
    }

    return v;
}


char *
pki_fuzz_strndup(const uint8_t *data, size_t size)
{
    char  *s;

    s = malloc(size + 1);
    if (s == NULL) {
        abort();
    }

    if (size) {
        memcpy(s, data, size);
    }
    s[size] = '\0';

    return s;
}


char *
pki_fuzz_expand(const char *s, size_t n, const char *const *names,
    const char *const *values, int count)
{
    int          i;
    char        *out;
    size_t       len, cap, vlen, nlen;
    const char  *v, *end;

    cap = n + 256;
    out = malloc(cap);
    if (out == NULL) {
        abort();
    }
    len = 0;
    end = s + n;

    while (s < end) {
        v = NULL;
        nlen = vlen = 0;

        if (*s == '$') {
            for (i = 0; i < count; i++) {
                nlen = strlen(names[i]);
                if ((size_t) (end - s) >= nlen
                    && memcmp(s, names[i], nlen) == 0)
                {
                    v = values[i] != NULL ? values[i] : "";
                    vlen = strlen(v);
                    break;
                }
            }
        }

        if (v == NULL) {
            v = s;
            vlen = nlen = 1;
        }

        if (len + vlen + 1 > cap) {
            cap = (len + vlen + 1) * 2;
            out = realloc(out, cap);
            if (out == NULL) {
                abort();
            }
        }
        memcpy(out + len, v, vlen);
        len += vlen;
        s += nlen;
    }

    out[len] = '\0';

    return out;
}


pki_template_t *
pki_fuzz_template(const char *name, const char *const *lines)
{
    int              argc;
    char             buf[512], *p, *save, *words[PKI_FUZZ_MAX_ARGS + 1];
    pki_result_t     res;
    pki_template_t  *t;

    t = pki_template_new(name);
    if (t == NULL) {
        return NULL;
    }

    for (; *lines; lines++) {
        snprintf(buf, sizeof(buf), "%s", *lines);
        argc = 0;
        for (p = strtok_r(buf, " ", &save); p && argc < PKI_FUZZ_MAX_ARGS;
             p = strtok_r(NULL, " ", &save))
        {
            words[argc++] = p;
        }

        pki_result_init(&res);
        if (argc == 0
            || pki_template_set(t, words[0], argc - 1,
                                (const char *const *) words + 1, &res)
               != PKI_OK)
        {
            pki_template_free(t);
            return NULL;
        }
    }

    pki_result_init(&res);
    if (pki_template_finish(t, &res) != PKI_OK) {
        pki_template_free(t);
        return NULL;
    }

    return t;
}


static pki_key_t *
pki_fuzz_key(EVP_PKEY *pk, const char *name)
{
    FILE          *f;
    char           path[128];
    pki_key_t     *k;
    pki_result_t   res;

    snprintf(path, sizeof(path), "%s/%s", fx_dir, name);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL))
    {
        pki_fuzz_die("cannot write a key file", NULL);
    }
    fclose(f);

    pki_result_init(&res);
    k = pki_key_new(path, NULL, &res);
    if (k == NULL || pki_key_open(k, &res) != PKI_OK) {
        pki_fuzz_die("key", &res);
    }

    return k;
}


static void
pki_fuzz_write_cert(X509 *x, const char *name, char *path, size_t size)
{
    FILE  *f;

    snprintf(path, size, "%s/%s", fx_dir, name);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, x)) {
        pki_fuzz_die("cannot write a certificate file", NULL);
    }
    fclose(f);
}


static pki_ca_t *
pki_fuzz_ca(const char *name, const char *cert, const char *chain,
    pki_key_t *key, pki_template_t **tmpls)
{
    const char    *argv[1];
    pki_ca_t      *ca;
    pki_result_t   res;

    pki_result_init(&res);
    ca = pki_ca_new(name);
    if (ca == NULL) {
        pki_fuzz_die("pki_ca_new", NULL);
    }

    argv[0] = cert;
    if (pki_ca_set(ca, "certificate", 1, argv, &res) != PKI_OK) {
        pki_fuzz_die("CA certificate", &res);
    }

    if (chain) {
        argv[0] = chain;
        if (pki_ca_set(ca, "chain", 1, argv, &res) != PKI_OK) {
            pki_fuzz_die("CA chain", &res);
        }
    }

    if (pki_ca_set_key(ca, key, &res) != PKI_OK) {
        pki_fuzz_die("CA key", &res);
    }

    for (; *tmpls; tmpls++) {
        if (pki_ca_add_template(ca, *tmpls, &res) != PKI_OK) {
            pki_fuzz_die("CA template", &res);
        }
    }

    if (pki_ca_finish(ca, &res) != PKI_OK) {
        pki_fuzz_die("CA finish", &res);
    }

    return ca;
}


static X509 *
pki_fuzz_issue(pki_ca_t *ca, pki_template_t *t, const char *cn,
    EVP_PKEY *pk)
{
    X509           *x;
    pki_result_t    res;
    pki_request_t   req;

    memset(&req, 0, sizeof(req));
    req.subject = X509_NAME_new();
    X509_NAME_add_entry_by_txt(req.subject, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    req.pubkey = pk;

    pki_result_init(&res);
    x = NULL;
    if (pki_issue(ca, t, NULL, &req, NULL, &x, &res) != PKI_OK) {
        pki_fuzz_die("issue", &res);
    }
    X509_NAME_free(req.subject);

    return x;
}


pki_key_t *
pki_fuzz_key_pem(const char *pem, const char *name)
{
    EVP_PKEY   *pk;
    pki_key_t  *k;

    pki_fuzz_fixture();

    pk = pki_fuzz_pem_key(pem);
    if (pk == NULL) {
        pki_fuzz_die("PEM key", NULL);
    }

    k = pki_fuzz_key(pk, name);
    EVP_PKEY_free(pk);

    return k;
}


/* The key and certificate files are read at pki_key_open/pki_ca_finish
 * time; the directory is removed at exit. */
static void
pki_fuzz_cleanup(void)
{
    DIR            *d;
    char            path[512];
    struct dirent  *e;

    if (fx_dir[0] == '\0') {
        return;
    }

    d = opendir(fx_dir);
    if (d) {
        while ((e = readdir(d)) != NULL) {
            if (e->d_name[0] == '.') {
                continue;
            }
            snprintf(path, sizeof(path), "%s/%s", fx_dir, e->d_name);
            unlink(path);
        }
        closedir(d);
    }
    rmdir(fx_dir);
    fx_dir[0] = '\0';
}


const pki_fuzz_fixture_t *
pki_fuzz_fixture(void)
{
    char               root_pem[128], ca_pem[128];
    X509              *root, *sub;
    EVP_PKEY          *rootpk, *subpk;
    X509_NAME         *name;
    pki_result_t       res;
    pki_template_t    *troot, *tsub, *tmpls[7];
    pki_redis_conf_t   rconf;

    static const char *const root_lines[] = {
        "subject CN copy", "basic_constraints ca:true", "validity 3650d", NULL
    };
    static const char *const sub_lines[] = {
        "subject CN copy", "basic_constraints ca:true pathlen:0",
        "validity 365d", NULL
    };
    static const char *const device_lines[] = {
        "key_types ec:P-256 ec:P-384 rsa:2048-4096 ed25519",
        "subject CN required", "subject O copy", "san dns copy",
        "validity 7d", "extended_key_usage clientAuth", NULL
    };
    static const char *const keygen_lines[] = {
        "key_types ec:P-256 ec:P-384 ed25519",
        "subject CN required", "san dns copy", "validity 7d",
        "server_keygen on", NULL
    };
    static const char *const strict_lines[] = {
        "key_types ec:P-256 rsa:2048-3072",
        "subject CN required", "subject O fixed Example", "subject OU copy",
        "subject C forbidden", "subject emailAddress copy",
        "san dns copy wildcard", "san ip copy", "san email copy",
        "san uri forbidden", "validity 1d",
        "key_usage digitalSignature keyAgreement",
        "extended_key_usage clientAuth serverAuth",
        "extension 1.3.6.1.4.1.99999.1 noncritical 0500", NULL
    };
    /* the subject attributes of each string type pki_name_value issues:
     * DirectoryString (CN, O, OU, L, ST, title 2.5.4.12, pseudonym
     * 2.5.4.65), IA5String (emailAddress, DC), PrintableString (C,
     * serialNumber, dnQualifier 2.5.4.46); the CN judged as a dNSName
     * that may be a wildcard */
    static const char *const wide_lines[] = {
        "key_types ec:P-256 ec:P-384 ec:P-521 rsa:2048-4096 ed25519 ed448",
        "subject CN copy", "subject O copy", "subject OU copy",
        "subject L copy", "subject ST copy", "subject C copy",
        "subject emailAddress copy", "subject DC copy",
        "subject serialNumber copy", "subject UID copy",
        "subject 2.5.4.46 copy", "subject 2.5.4.12 copy",
        "subject 2.5.4.65 copy", "san dns copy wildcard", "san ip copy",
        "validity 1d", "extended_key_usage serverAuth", NULL
    };
    /* no EKU: a TLS server's certificate, and no DNS name may be issued */
    static const char *const nodns_lines[] = {
        "key_types ec:P-256 ec:P-384 rsa:2048-4096 ed25519",
        "subject CN copy", "subject O copy", "subject OU copy",
        "subject C copy", "san dns forbidden", "validity 1d", NULL
    };
    /* not a TLS server's: a dotted CN is not a host name here */
    static const char *const client_lines[] = {
        "key_types ec:P-256 ec:P-384 rsa:2048-4096 ed25519",
        "subject CN required", "subject O copy", "subject DC copy",
        "san email copy", "validity 1d", "extended_key_usage clientAuth",
        NULL
    };

    if (fx_done) {
        return &fx;
    }

    if (!pki_init()) {
        pki_fuzz_die("pki_init", NULL);
    }

    snprintf(fx_dir, sizeof(fx_dir), "/tmp/pki-fuzz.XXXXXX");
    if (mkdtemp(fx_dir) == NULL) {
        fx_dir[0] = '\0';
        pki_fuzz_die("mkdtemp", NULL);
    }
    atexit(pki_fuzz_cleanup);

    troot = fx.root_tmpl = pki_fuzz_template("root", root_lines);
    tsub = fx.sub_tmpl = pki_fuzz_template("sub", sub_lines);
    fx.device = pki_fuzz_template("device", device_lines);
    fx.keygen = pki_fuzz_template("keygen", keygen_lines);
    fx.strict = pki_fuzz_template("strict", strict_lines);
    fx.wide = pki_fuzz_template("wide", wide_lines);
    fx.nodns = pki_fuzz_template("nodns", nodns_lines);
    fx.client = pki_fuzz_template("client", client_lines);
    if (!troot || !tsub || !fx.device || !fx.keygen || !fx.strict
        || !fx.wide || !fx.nodns || !fx.client)
    {
        pki_fuzz_die("a fixture template does not parse", NULL);
    }

    rootpk = pki_fuzz_pem_key(pki_fuzz_root_pem);
    subpk = pki_fuzz_pem_key(pki_fuzz_ca_pem);
    fx.leaf_key = pki_fuzz_pem_key(pki_fuzz_leaf_pem);
    if (!rootpk || !subpk || !fx.leaf_key) {
        pki_fuzz_die("keygen", NULL);
    }
    fx_keys[0] = pki_fuzz_key(rootpk, "root.key");
    fx_keys[1] = pki_fuzz_key(subpk, "ca.key");

    name = X509_NAME_new();
    X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "Fuzz Root", -1, -1,
                               0);
    pki_result_init(&res);
    if (pki_selfsign(fx_keys[0], troot, name, &root, &res) != PKI_OK) {
        pki_fuzz_die("selfsign", &res);
    }
    X509_NAME_free(name);
    pki_fuzz_write_cert(root, "root.pem", root_pem, sizeof(root_pem));
    X509_free(root);

    tmpls[0] = tsub;
    tmpls[1] = NULL;
    fx.root = pki_fuzz_ca("root", root_pem, NULL, fx_keys[0], tmpls);

    sub = pki_fuzz_issue(fx.root, tsub, "Fuzz Issuing CA", subpk);
    pki_fuzz_write_cert(sub, "ca.pem", ca_pem, sizeof(ca_pem));
    X509_free(sub);

    tmpls[0] = fx.device;
    tmpls[1] = fx.keygen;
    tmpls[2] = fx.strict;
    tmpls[3] = fx.wide;
    tmpls[4] = fx.nodns;
    tmpls[5] = fx.client;
    tmpls[6] = NULL;
    fx.ca = pki_fuzz_ca("issuing", ca_pem, root_pem, fx_keys[1], tmpls);

    fx.root_cert = pki_ca_cert(fx.root);
    fx.ca_cert = pki_ca_cert(fx.ca);
    fx.leaf = pki_fuzz_issue(fx.ca, fx.device, "device-1", fx.leaf_key);

    EVP_PKEY_free(rootpk);
    EVP_PKEY_free(subpk);

    memset(&rconf, 0, sizeof(rconf));
    rconf.unix_path = "/nonexistent/nginx-pki-fuzz/redis.sock";
    rconf.ns = "fuzz:";
    rconf.timeout_ms = 100;
    pki_result_init(&res);
    fx.dead_redis = pki_redis_new(&rconf, &res);
    if (fx.dead_redis == NULL) {
        pki_fuzz_die("pki_redis_new", &res);
    }

    fx_done = 1;

    return &fx;
}
