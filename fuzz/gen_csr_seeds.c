/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Seed CSRs for fuzz_csr that the openssl CLI cannot make (called by
 * gen_corpus.sh): subject values of each directory string type
 * (PrintableString, IA5String, UTF8String, T61String, BMPString) in each
 * attribute the fixture's "wide" template copies, CNs that a TLS client
 * reads as host names (wildcard, dotted, a trailing dot) or that hide
 * their order (U+202E), and P-256 keys with a compressed or a hybrid
 * point.
 *
 *   gen_csr_seeds DIR     writes DIR/seed-<name> (DER)
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/core_names.h>
#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>


typedef struct {
    const char  *attr;      /* short name or dotted OID */
    const char  *value;     /* UTF-8 */
} seed_attr_t;


/* each attribute with a value its own RFC 5280 type holds */
static const seed_attr_t  seed_attrs[] = {
    { "CN", "device-7" },
    { "O", "Example" },
    { "OU", "Ops" },
    { "L", "Berlin" },
    { "ST", "Berlin" },
    { "C", "DE" },
    { "emailAddress", "ops@example.com" },
    { "DC", "example" },
    { "serialNumber", "SN1234" },
    { "2.5.4.46", "q1" },                   /* dnQualifier */
    { "2.5.4.12", "Engineer" },             /* title */
    { "2.5.4.65", "dev" },                  /* pseudonym */
    { "UID", "u1" },
    { NULL, NULL }
};


static EVP_PKEY *
seed_key(const char *form)
{
    EVP_PKEY  *pk;

    pk = EVP_PKEY_Q_keygen(NULL, NULL, "EC", "P-256");
    if (pk == NULL) {
        exit(1);
    }

    if (form != NULL
        && !EVP_PKEY_set_utf8_string_param(pk,
               OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, form))
    {
        exit(1);
    }

    return pk;
}


/* value as an ASN1 string of type (UTF-8 in, converted) */
static int
seed_add(X509_NAME *n, const char *attr, int type, const char *value)
{
    int               ok;
    ASN1_OBJECT      *obj;
    ASN1_STRING      *s;
    X509_NAME_ENTRY  *e;

    obj = OBJ_txt2obj(attr, 0);
    s = ASN1_STRING_type_new(type);
    if (obj == NULL || s == NULL) {
        return 0;
    }

    if (type == V_ASN1_BMPSTRING) {
        ASN1_STRING_free(s);
        s = NULL;
        if (ASN1_mbstring_copy(&s, (const unsigned char *) value, -1,
                               MBSTRING_UTF8, B_ASN1_BMPSTRING) <= 0)
        {
            return 0;
        }

    } else if (type == V_ASN1_T61STRING) {
        /* T61String as OpenSSL reads it: Latin-1 octets */
        unsigned char  buf[256];
        size_t         i, k;

        for (i = k = 0; value[i] && k < sizeof(buf); i++, k++) {
            unsigned char  c = (unsigned char) value[i];

            if (c == 0xc2 || c == 0xc3) {
                buf[k] = (unsigned char) (((c & 3) << 6)
                                          | ((unsigned char) value[++i]
                                             & 0x3f));
            } else {
                buf[k] = c;
            }
        }
        ASN1_STRING_set(s, buf, (int) k);

    } else {
        ASN1_STRING_set(s, value, -1);
    }

    e = X509_NAME_ENTRY_create_by_OBJ(NULL, obj, type,
                                      ASN1_STRING_get0_data(s),
                                      ASN1_STRING_length(s));
    ok = e != NULL && X509_NAME_add_entry(n, e, -1, 0);

    X509_NAME_ENTRY_free(e);
    ASN1_STRING_free(s);
    ASN1_OBJECT_free(obj);

    return ok;
}


static void
seed_write(const char *dir, const char *name, X509_NAME *subj,
    const char *dns, EVP_PKEY *pk)
{
    int                          len;
    FILE                        *f;
    char                         path[512];
    X509_REQ                    *rq;
    X509_EXTENSION              *ext;
    unsigned char               *der;
    STACK_OF(X509_EXTENSION)    *exts;

    rq = X509_REQ_new();
    if (rq == NULL || !X509_REQ_set_subject_name(rq, subj)
        || !X509_REQ_set_pubkey(rq, pk))
    {
        exit(1);
    }

    if (dns != NULL) {
        exts = sk_X509_EXTENSION_new_null();
        ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name, dns);
        if (exts == NULL || ext == NULL || !sk_X509_EXTENSION_push(exts, ext)
            || !X509_REQ_add_extensions(rq, exts))
        {
            exit(1);
        }
        sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    }

    if (!X509_REQ_sign(rq, pk, EVP_sha256())) {
        exit(1);
    }

    der = NULL;
    len = i2d_X509_REQ(rq, &der);
    snprintf(path, sizeof(path), "%s/seed-%s", dir, name);
    f = fopen(path, "wb");
    if (len <= 0 || f == NULL || fwrite(der, 1, (size_t) len, f)
                                 != (size_t) len)
    {
        exit(1);
    }
    fclose(f);
    OPENSSL_free(der);
    X509_REQ_free(rq);
}


/* a subject of one attribute */
static void
seed_one(const char *dir, const char *name, const char *attr, int type,
    const char *value, const char *dns, EVP_PKEY *pk)
{
    X509_NAME  *n;

    n = X509_NAME_new();
    if (n == NULL || !seed_add(n, attr, type, value)) {
        exit(1);
    }
    seed_write(dir, name, n, dns, pk);
    X509_NAME_free(n);
}


int
main(int argc, char **argv)
{
    int                 k;
    char                name[64];
    EVP_PKEY           *pk, *cpk, *hpk;
    X509_NAME          *n;
    const seed_attr_t  *a;

    static const struct {
        const char  *name;
        int          type;
    } types[] = {
        { "printable", V_ASN1_PRINTABLESTRING },
        { "ia5", V_ASN1_IA5STRING },
        { "utf8", V_ASN1_UTF8STRING },
        { "t61", V_ASN1_T61STRING },
        { "bmp", V_ASN1_BMPSTRING },
    };

    if (argc != 2) {
        fprintf(stderr, "usage: gen_csr_seeds DIR\n");
        return 2;
    }

    pk = seed_key(NULL);

    /* every attribute in one string type */
    for (k = 0; k < (int) (sizeof(types) / sizeof(types[0])); k++) {
        n = X509_NAME_new();
        for (a = seed_attrs; a->attr; a++) {
            /* no '@' in a PrintableString: emailAddress stays IA5 */
            if (!seed_add(n, a->attr,
                          types[k].type == V_ASN1_PRINTABLESTRING
                          && strcmp(a->attr, "emailAddress") == 0
                          ? V_ASN1_IA5STRING : types[k].type, a->value))
            {
                exit(1);
            }
        }
        snprintf(name, sizeof(name), "attrs-%s", types[k].name);
        seed_write(argv[1], name, n, "DNS:device-7.example.com", pk);
        X509_NAME_free(n);
    }

    /* non-ASCII text in the DirectoryString attributes (UTF8String from
     * a BMPString or T61String), and a country of BMPString */
    n = X509_NAME_new();
    if (!seed_add(n, "CN", V_ASN1_BMPSTRING, "Gerät-7")
        || !seed_add(n, "O", V_ASN1_T61STRING, "Müller GmbH")
        || !seed_add(n, "L", V_ASN1_BMPSTRING, "Zürich")
        || !seed_add(n, "C", V_ASN1_BMPSTRING, "CH"))
    {
        exit(1);
    }
    seed_write(argv[1], "latin", n, NULL, pk);
    X509_NAME_free(n);


    seed_one(argv[1], "cn-wildcard", "CN", V_ASN1_UTF8STRING,
             "*.example.com", "DNS:*.example.com", pk);
    seed_one(argv[1], "cn-dotted", "CN", V_ASN1_PRINTABLESTRING,
             "www.example.com", NULL, pk);
    seed_one(argv[1], "cn-dotted-bmp", "CN", V_ASN1_BMPSTRING,
             "WWW.Example.COM", NULL, pk);
    /* curl takes "www.example.com." for www.example.com */
    seed_one(argv[1], "cn-dotted-trailing", "CN", V_ASN1_UTF8STRING,
             "www.example.com.", NULL, pk);
    seed_one(argv[1], "cn-rlo", "CN", V_ASN1_UTF8STRING,
             "dev\xe2\x80\xae" "1gpj.exe", NULL, pk);
    /* a C1 control (U+0085) as T61String's Latin-1 */
    seed_one(argv[1], "o-c1-t61", "O", V_ASN1_T61STRING, "a\xc2\x85" "b",
             NULL, pk);
    /* canonically the fixture leaf's CN=device-1: the renewal keeps it */
    seed_one(argv[1], "cn-renew-case", "CN", V_ASN1_PRINTABLESTRING,
             "DEVICE-1", "DNS:device-1", pk);

    cpk = seed_key("compressed");
    seed_one(argv[1], "p256-compressed", "CN", V_ASN1_UTF8STRING,
             "device-c", "DNS:device-c.example.com", cpk);
    hpk = seed_key("hybrid");
    seed_one(argv[1], "p256-hybrid", "CN", V_ASN1_UTF8STRING,
             "device-h", NULL, hpk);

    EVP_PKEY_free(pk);
    EVP_PKEY_free(cpk);
    EVP_PKEY_free(hpk);

    return 0;
}
