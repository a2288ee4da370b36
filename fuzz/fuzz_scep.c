/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * The SCEP engine (pki_scep_handle, RFC 8894) on hostile messages:
 * PKIOperation bodies (CMS SignedData around an EnvelopedData for the RA:
 * PKCSReq, RenewalReq, CertPoll, GetCert, GetCRL), POST (DER) and GET (the
 * base64 message parameter), and the GetCACaps / GetCACert operations.
 *
 * The RA is a fixed test-only RSA key and certificate issued by the
 * fixture's issuing CA key (so the seed messages, encrypted to it by
 * t/lib/scepmsg.c in fuzz/gen_corpus.sh, decrypt in every run).  Static
 * challenge "s3cret"; Redis is down, so a request that passes every check
 * ends in the store's failure.
 *
 * Input: byte 0 chooses the request shape, the rest is the message.
 *   bit 0  GET (base64) instead of POST (DER)
 *   bit 1  accept single DES
 *   bit 2  manual approval
 *   bit 3  transactionID not bound to the key
 *   bit 4  operation GetCACaps / bit 5 GetCACert (the rest ignored)
 *   bit 6  signingTime window of one day (else none: the seeds age)
 *   bit 7  build mode (below); else the rest is the message as it is
 *
 * Build mode.  A mutated message almost never keeps its signature, so the
 * harness BUILDS the message from a short description each run: the inner
 * content encrypted to the RA (a fresh content key and IV: random, but
 * every choice of the input decrypts whatever they are), wrapped in a
 * SignedData by the chosen signer with the SCEP attributes the input
 * writes.  The signature and the decryption then hold, and the input
 * reaches the attribute checks, the inner parsers, the signer rules, the
 * challenge, the template and the store (down: every issuance ends there).
 *   byte 1  bits 0-1 signer: 0 device (fixed RSA key, self-signed),
 *                    1 the RA (RSA, issued by the CA), 2 the fixture's
 *                    leaf (EC, issued by the CA), 3 device key, named as
 *                    issued by the CA but signed by itself (a forgery)
 *           bits 2-3 content cipher: AES-128-CBC, AES-256-CBC,
 *                    DES-EDE3-CBC, DES-CBC (3DES with K1=K2=K3)
 *           bits 4-5 digest (signature, and OAEP hash): SHA-256, SHA-1,
 *                    SHA-512, MD5
 *           bit 6    key transport RSAES-OAEP (SHA-1: default params)
 *           bit 7    a CSR inner content is re-signed with the device key
 *                    (its key replaced by the device key) when it parses
 *   byte 2  bits 0-1 signingTime: none, now, now - 2 days, now + 2 days
 *           bit 2    transactionID = base64 SHA-1 of the inner CSR's
 *                    SubjectPublicKeyInfo (when it parses; else the field)
 *           bit 3/4/5 no senderNonce / transactionID / messageType
 *           bit 6    messageData is the inner content itself, not an
 *                    EnvelopedData of it (the envelope parser under fuzz)
 *           bit 7    messageType and transactionID as UTF8String
 *   byte 3  bit 0    no store (conf.redis NULL): with the dead Redis a
 *                    PKCSReq stops at the resend lookup, before its
 *                    challenge; without one it runs the challenge and
 *                    the template and stops at "SCEP needs a store"
 *           bit 1    every SCEP attribute twice (refused: exactly one)
 *   then    three fields, each a length byte and that many bytes
 *           (missing: empty): messageType (the string on the wire),
 *           transactionID, senderNonce
 *   rest    the inner content: a DER CSR (PKCSReq, RenewalReq),
 *           IssuerAndSerialNumber (GetCert, GetCRL), IssuerAndSubject
 *           (CertPoll), or anything
 * fuzz/gen_scep_seeds.sh writes the build-mode seeds.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/err.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509v3.h>

#include "fuzz.h"


/* Fixed test-only RA key and certificate (never used anywhere else). */
static const char  pki_fuzz_ra_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDRLtrT3T0xBnia\n"
    "UbI5OVSUYWO3kWUCU6tjQz8BRB+bhtm3Pt/w4WhC7NgtuvXRD/yGjU+LLYc9egKj\n"
    "i3d06rKHXxTf/jPBMNzEDTiCYGqKxBEXKC7S4tnnES9oCGgGdP629pnNDvlmAzZZ\n"
    "XRzJb7pQoTK3Rj26+olFYBbd2BQzREqNNSNJD7TKwmoCy6yHanBodfvAGbkAW8JV\n"
    "DIm5bx/gTSl6hWZsRVQQOC8uAIXOmSo8kF78G4XzDsg2kW6xcG4zDBDnjsR4DasS\n"
    "2o/iQuK/yx+7HaM1UFEgJ5h3FivVopOGs875KgnD8/PRC5ZkzPsyXnTVvkBcreXv\n"
    "d91jNFSFAgMBAAECggEAK76t7gD2Bz7YcUM073EdDjOoqA6cjkZDkOxS7Heb2Ykz\n"
    "lfXs3IGy7U387mFK/0el0liSYiNpBRLzItLrbhSXtaYNZkNRfOz0Of6eyusRVMgo\n"
    "X8ycMCdXFNKb9JhPcsw8KTR8WOzw/GOfFcSaXMjD8JEpWzjx91xl4Q91cLq7jLWy\n"
    "DZOifZ0DMzGnL8CNkc3L25Q03QgyiLVqjrEwJm5+s9OdpDFl1b+tcGn5DPWvEP0/\n"
    "+MaX19xBl1iSxiVMIa2ziNofKbFT9cTWasySzPtJ5RIUTWQ/DqTt37DQt2/YEmha\n"
    "O0/oWMcyO7GGOXp5sGVSj+Xr9IHW7UgOGcVtoGq2QQKBgQD4jOglw1q+8599wXJs\n"
    "14JLHiOnhYH3f4cA6D7Ik3JZn+G9cquTG0WWYZ49F31MArtTOOYbEEGM2uu7w+Am\n"
    "i4fMkCazh/4Qk7nV4vxNslmc1XeFalSo4QKEkG8dPP/r4EUJVjz7yXBjo6ykeJo8\n"
    "yq5D/nkKnwEIwz+rlL+lieH1QQKBgQDXc+MsNKw6CcJZou2DBKayObqSoYDjDDp/\n"
    "6A/K0mVy6gAEvB70sDXMjuGlQziUVbO/YCcfaNEM0A06tjTRkwxkmg2fUERwMo8N\n"
    "DG8yOGPKcf4Ql2QDqCY++isnPwbANB5qkUGJGPRoeTkXlFCCXdtSm49h3ZteEQEd\n"
    "7tHpuhy6RQKBgQDXObz0plt4KqIbVV3uXheXUHvzXiqS1L1kzbdAHF3Suh3R3PAx\n"
    "rFXvyIwrvqFjJqJriEPJf6QjgpbKuuzos75eJx08LTCVzjYHvkxYQ25R3o9m2hKB\n"
    "QobZn/B30xCRglyFn0WjimVmAp9GtKBqr9+DRWIvDkzo95m0zFO/1svxgQKBgD4C\n"
    "PonEhyUVFfiSaeVhe1CkSMxW6y9tn5Cci58GOuh97I9wTUCDTpiXLt5PoIMgv2D/\n"
    "HYNuuWwEnSoessj2l4SEyhLmGSxpgL5yq7Y6gI4NjN/dko1y4b8SZUUgYKME3RQy\n"
    "xjfdFMrUyNe+egVrWepGl1fFXigOoNGqoIOyav45AoGASyTLnF8kga/GnGwpDid+\n"
    "xxyLxpSQY5HyNQXHUecqVYxS6dlDOqerlR+QJQe1oxkkE8+5dTMLUnSTqymH72el\n"
    "52Qg5mNksDVn60dJWwbfWXvyYlpe4tGwny6eBEYvjyHCMXPEE4H8aq7ng4wZ/Rzr\n"
    "x3KpIYY/Sr7mcC/UVM4blpc=\n"
    "-----END PRIVATE KEY-----\n";

static const char  pki_fuzz_ra_cert_pem[] =
    "-----BEGIN CERTIFICATE-----\n"
    "MIICSzCCAfKgAwIBAgICXOkwCgYIKoZIzj0EAwIwGjEYMBYGA1UEAwwPRnV6eiBJ\n"
    "c3N1aW5nIENBMB4XDTI2MTEyODE4MjQwOFoXDTQ2MTEyMzE4MjQwOFowFzEVMBMG\n"
    "A1UEAwwMRnV6eiBTQ0VQIFJBMIIBIjANBgkqhkiG9w0BAQEFAAOCAQ8AMIIBCgKC\n"
    "AQEA0S7a0909MQZ4mlGyOTlUlGFjt5FlAlOrY0M/AUQfm4bZtz7f8OFoQuzYLbr1\n"
    "0Q/8ho1Piy2HPXoCo4t3dOqyh18U3/4zwTDcxA04gmBqisQRFygu0uLZ5xEvaAho\n"
    "BnT+tvaZzQ75ZgM2WV0cyW+6UKEyt0Y9uvqJRWAW3dgUM0RKjTUjSQ+0ysJqAsus\n"
    "h2pwaHX7wBm5AFvCVQyJuW8f4E0peoVmbEVUEDgvLgCFzpkqPJBe/BuF8w7INpFu\n"
    "sXBuMwwQ547EeA2rEtqP4kLiv8sfux2jNVBRICeYdxYr1aKThrPO+SoJw/Pz0QuW\n"
    "ZMz7Ml501b5AXK3l73fdYzRUhQIDAQABo2AwXjAMBgNVHRMBAf8EAjAAMA4GA1Ud\n"
    "DwEB/wQEAwIFoDAdBgNVHQ4EFgQU5t7PxEUb5Rsum2tlp1FYgnRvkl8wHwYDVR0j\n"
    "BBgwFoAUCrafJFUMjkznaeJl2tW7Qb+f8RswCgYIKoZIzj0EAwIDRwAwRAIgDDdR\n"
    "Xxg2ESPsprYM3HuA04E9o2kGaMlo25ZvwsM5/9UCIDW5o82+QxoNlicwOU4m+BOb\n"
    "byFv+jJuqzFBEeMPKOaC\n"
    "-----END CERTIFICATE-----\n";


/* Fixed test-only device key of build mode (never used anywhere else): the
 * build-mode seeds' CSRs hold it, so that its self-signed certificate
 * signs for them. */
static const char  pki_fuzz_device_key_pem[] =
    "-----BEGIN PRIVATE KEY-----\n"
    "MIIEvQIBADANBgkqhkiG9w0BAQEFAASCBKcwggSjAgEAAoIBAQDI+LG5BYMobUOI\n"
    "iCzmdFICAXitTUgiIYFPXhMmwFF74XMYl8+gWqZMBpEjYy9xxmqstKYWBo7OAD6q\n"
    "aJclcd9BQojdkzEEkSTD+ufjjaSi+ju8LBohJKAYWs1bwUMBGghkKoeLguyWMS73\n"
    "iugkexSas7ctDruRdjQab4fUMgG4IF8OYjcTL1LkDHRpzAjAIMHwf3M3sijlqqVD\n"
    "zDWpWYbhoy1Q6gIw4PdPV4XXeQGeSlU+gjRh+1/U99n5Q5F3oc9sSoatOY/LNdLL\n"
    "4nsdsEpUO1zujjeoZZP8+pMccNR3KEXsM/Fq8Xw/fGrnOR3ixGpGza8NDo3PLCBc\n"
    "OsU2gc3bAgMBAAECggEABo/kROPSsAYjtd7bng/ydSe1WCDiKy2H5BHXMz7SI+bg\n"
    "U+jx4E0FcA11o/Lc1wZN1mM02k3b6aSlZyzW5P1n9xQKlWpbp+Gekmc5A7uZj0uR\n"
    "AFugsMnAdnseIhHx5tfOqiKfXjIbGOsoAVb/4UapjUTMxUP2/B1tck2HYSmocVAc\n"
    "DZl9+L49G9r9GOv+Qz/MsE4SmfUIXLBvb3i3GqXMDwPk06Jx/UFhO2E0p5yz/0p+\n"
    "rmWNjAwCNZIiXhBu9ibteJ/VXcO7FgWqk/NB3+jhSrjwIAO6jG46Op+IlZKcHiZQ\n"
    "lfG2B+ZACIsS6FYbiqDu8ElhGsUe7S1tZ50aFjPmBQKBgQDsZoVq2znHcolPruql\n"
    "4J4oeEcHtAOxHUO1susOwmLo4Y/TR8ZlQrleWVLajlDSFsV/g0e4CP/E6xeAcwGh\n"
    "/Z57eEsWfTXikBcoAmuKWtIOQR91/5hRKa3hTor/qqE+h+RuX2RdkMrIAkSaEbyk\n"
    "4KKnQcuyPgGs6/dpGRrcXOvpVQKBgQDZojXhBLIaIQAawF9lbZnvY3saGfV3kJst\n"
    "EVuiRVpIGmyXjAUFM4VXq7wAKZE4olE9tE9FwnerI1quOVKAWjdXTv055h5At/YT\n"
    "eYjPe8zgO6kcF2zwOdYjGvJCw6C0AMBTmeMRjEj/ocF1Ph1FutWYnqMAP4+ZuxMy\n"
    "el6rGHEabwKBgAoYqtQQftw80Q59KvpgqICT+nyivJGg7VZiSNW9iZnmoEzmwNts\n"
    "SRx1dittbpg6br7ubW63u6y+WaebwdMYUN93GMXiHR4LB2InEE69aEFBmMViYC//\n"
    "NrTrtNYMhIx2I1RvcIrqdy6poiJuZX8pNOktzzRSn6GyBkQP1WzZ7x1tAoGBAIEz\n"
    "jp7+xalDbCd1i2zQq3F18rAlNxf7blRMGMV2PMnPfiZeBuD2nDPXDW5fPwqLOoXS\n"
    "VLmKYLbl70C9YSA37uDTUPwdhFpRnDIllbXvvkpkwNmfgpn/DASdS7OdJfuW8pbv\n"
    "JeHWEcRJSGuNK52o9IN9sjFEisDuUdBG24rhoMvbAoGAfEEwYq8vIc+4q4P8zMOi\n"
    "yaOgFBOBfF1V3Vi+ugoDb9gEDCKqoECo5K2FhgjLML2q6wW9Jxp54/JU0dVUCNa2\n"
    "V26NJIPwX/9lQex/lFQJqcHLw+F7Pu60+ROsUmol8UCe/2jDQ0Lafl8wSdrm9Jli\n"
    "3bogeEc3n7x3FXb3nsWhWkQ=\n"
    "-----END PRIVATE KEY-----\n";


/* build mode: the description is short; longer inner contents gain
 * nothing but time */
#define PKI_SCEP_FUZZ_BUILD_MAX  (16 * 1024)


static const pki_fuzz_fixture_t  *fx;
static X509                      *ra_cert;
static pki_key_t                 *ra_key;

/* build mode: the signers (certificate and key) and the SCEP OIDs */
static X509                      *signer_cert[4];
static EVP_PKEY                  *signer_key[4];
static EVP_PKEY                  *device_key;
static ASN1_OBJECT               *oid_msgtype, *oid_tid, *oid_nonce;


/* A certificate of the device key named subject, issued by issuer (NULL:
 * self-issued) but always signed by the device key; exits on failure. */
static X509 *
device_cert(const char *subject, const X509_NAME *issuer, long serial)
{
    X509       *x;
    X509_NAME  *s;

    x = X509_new();
    s = X509_NAME_new();

    if (x == NULL || s == NULL
        || !X509_NAME_add_entry_by_txt(s, "CN", MBSTRING_UTF8,
                                       (const unsigned char *) subject, -1,
                                       -1, 0)
        || !X509_set_version(x, 2)
        || !ASN1_INTEGER_set(X509_get_serialNumber(x), serial)
        || !X509_set_subject_name(x, s)
        || !X509_set_issuer_name(x, issuer ? issuer : s)
        || X509_gmtime_adj(X509_getm_notBefore(x), -3600) == NULL
        || X509_gmtime_adj(X509_getm_notAfter(x), 3650L * 86400) == NULL
        || !X509_set_pubkey(x, device_key)
        || !X509_sign(x, device_key, EVP_sha256()))
    {
        fprintf(stderr, "fuzz_scep: device certificate\n");
        exit(1);
    }

    X509_NAME_free(s);

    return x;
}


static void
build_init(void)
{
    device_key = pki_fuzz_pem_pkey(pki_fuzz_device_key_pem);

    signer_cert[0] = device_cert("Fuzz SCEP device", NULL, 1);
    signer_key[0] = device_key;

    signer_cert[1] = ra_cert;
    signer_key[1] = pki_fuzz_pem_pkey(pki_fuzz_ra_key_pem);

    signer_cert[2] = fx->leaf;
    signer_key[2] = fx->leaf_key;

    /* the CA's name as issuer, but the device's own signature */
    signer_cert[3] = device_cert("Fuzz SCEP device",
                                 X509_get_subject_name(fx->ca_cert), 0x5ce9);
    signer_key[3] = device_key;

    oid_msgtype = OBJ_txt2obj("2.16.840.1.113733.1.9.2", 1);
    oid_nonce = OBJ_txt2obj("2.16.840.1.113733.1.9.5", 1);
    oid_tid = OBJ_txt2obj("2.16.840.1.113733.1.9.7", 1);

    if (oid_msgtype == NULL || oid_nonce == NULL || oid_tid == NULL) {
        fprintf(stderr, "fuzz_scep: OIDs\n");
        exit(1);
    }
}


/* ---- build mode ------------------------------------------------------------ */

typedef struct {
    unsigned             signer, cipher, digest, oaep, resign;
    unsigned             when, auto_tid, no_nonce, no_tid, no_type, bare;
    unsigned             utf8, no_store, twice;
    const uint8_t       *type, *tid, *nonce, *inner;
    size_t               type_len, tid_len, nonce_len, inner_len;
} build_t;


/* A field: a length byte and that many bytes (cut short at the end). */
static void
field(const uint8_t **data, size_t *size, const uint8_t **f, size_t *len)
{
    size_t  n;

    *f = *data;
    *len = 0;

    if (*size == 0) {
        return;
    }

    n = (*data)[0];
    (*data)++;
    (*size)--;

    if (n > *size) {
        n = *size;
    }

    *f = *data;
    *len = n;
    *data += n;
    *size -= n;
}


static void
build_parse(const uint8_t *data, size_t size, build_t *b)
{
    uint8_t  b1, b2, b3;
    size_t   n;

    memset(b, 0, sizeof(*b));

    b1 = size > 0 ? data[0] : 0;
    b2 = size > 1 ? data[1] : 0;
    b3 = size > 2 ? data[2] : 0;
    n = size > 3 ? 3 : size;
    data += n;
    size -= n;

    b->signer = b1 & 3;
    b->cipher = (b1 >> 2) & 3;
    b->digest = (b1 >> 4) & 3;
    b->oaep = (b1 >> 6) & 1;
    b->resign = (b1 >> 7) & 1;

    b->when = b2 & 3;
    b->auto_tid = (b2 >> 2) & 1;
    b->no_nonce = (b2 >> 3) & 1;
    b->no_tid = (b2 >> 4) & 1;
    b->no_type = (b2 >> 5) & 1;
    b->bare = (b2 >> 6) & 1;
    b->utf8 = (b2 >> 7) & 1;

    b->no_store = b3 & 1;
    b->twice = (b3 >> 1) & 1;

    field(&data, &size, &b->type, &b->type_len);
    field(&data, &size, &b->tid, &b->tid_len);
    field(&data, &size, &b->nonce, &b->nonce_len);

    b->inner = data;
    b->inner_len = size;
}


static const EVP_MD *
build_md(unsigned sel)
{
    switch (sel) {
    case 1:
        return EVP_sha1();
    case 2:
        return EVP_sha512();
    case 3:
        return EVP_md5();
    default:
        return EVP_sha256();
    }
}


/* The inner CSR re-signed by the device key, with its key (DER, malloc'd
 * by OpenSSL); NULL when it does not parse or does not sign. */
static unsigned char *
build_resign(const uint8_t *in, size_t len, int *outlen)
{
    X509_REQ             *req;
    unsigned char        *der;
    const unsigned char  *p;

    p = in;
    req = d2i_X509_REQ(NULL, &p, (long) len);
    if (req == NULL || p != in + len
        || !X509_REQ_set_pubkey(req, device_key)
        || X509_REQ_sign(req, device_key, EVP_sha256()) <= 0)
    {
        X509_REQ_free(req);
        ERR_clear_error();
        return NULL;
    }

    der = NULL;
    *outlen = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);

    if (*outlen <= 0) {
        OPENSSL_free(der);
        ERR_clear_error();
        return NULL;
    }

    return der;
}


/* transactionID: base64 of SHA-1 of the CSR's SubjectPublicKeyInfo, into
 * out[64]; 0 if in is not a CSR. */
static int
build_tid(const uint8_t *in, size_t len, char *out)
{
    int                   n;
    X509_REQ             *req;
    unsigned int          mdlen;
    unsigned char        *spki, md[EVP_MAX_MD_SIZE];
    const unsigned char  *p;

    p = in;
    req = d2i_X509_REQ(NULL, &p, (long) len);
    spki = NULL;
    n = req != NULL ? i2d_X509_PUBKEY(X509_REQ_get_X509_PUBKEY(req), &spki)
                    : -1;

    if (n <= 0
        || EVP_Digest(spki, (size_t) n, md, &mdlen, EVP_sha1(), NULL) != 1)
    {
        OPENSSL_free(spki);
        X509_REQ_free(req);
        ERR_clear_error();
        return 0;
    }

    EVP_EncodeBlock((unsigned char *) out, md, (int) mdlen);

    OPENSSL_free(spki);
    X509_REQ_free(req);

    return 1;
}


/* RSAES-OAEP's AlgorithmIdentifier for hash md (SHA-1: the parameters
 * all default, an empty SEQUENCE), into alg.  0 on failure. */
static int
build_oaep_alg(X509_ALGOR *alg, const EVP_MD *md)
{
    int               ok;
    X509_ALGOR       *mh;
    ASN1_STRING      *ps, *ms;
    RSA_OAEP_PARAMS  *op;

    op = RSA_OAEP_PARAMS_new();
    mh = NULL;
    ps = NULL;
    ms = NULL;
    ok = 0;

    if (op == NULL) {
        return 0;
    }

    if (EVP_MD_get_type(md) != NID_sha1) {
        op->hashFunc = X509_ALGOR_new();
        op->maskGenFunc = X509_ALGOR_new();
        mh = X509_ALGOR_new();

        if (op->hashFunc == NULL || op->maskGenFunc == NULL || mh == NULL) {
            goto done;
        }

        X509_ALGOR_set_md(op->hashFunc, md);
        X509_ALGOR_set_md(mh, md);

        if (ASN1_item_pack(mh, ASN1_ITEM_rptr(X509_ALGOR), &ms) == NULL
            || !X509_ALGOR_set0(op->maskGenFunc, OBJ_nid2obj(NID_mgf1),
                                V_ASN1_SEQUENCE, ms))
        {
            ASN1_STRING_free(ms);
            goto done;
        }
    }

    if (ASN1_item_pack(op, ASN1_ITEM_rptr(RSA_OAEP_PARAMS), &ps) == NULL
        || !X509_ALGOR_set0(alg, OBJ_nid2obj(NID_rsaesOaep), V_ASN1_SEQUENCE,
                            ps))
    {
        ASN1_STRING_free(ps);
        goto done;
    }

    ok = 1;

done:

    X509_ALGOR_free(mh);
    RSA_OAEP_PARAMS_free(op);

    return ok;
}


/* The EnvelopedData of in for the RA (DER, malloc'd by OpenSSL), or NULL.
 * Built by hand rather than by PKCS7_encrypt(), to choose the content key:
 * single DES is 3DES-EDE with three equal keys (OpenSSL 3 keeps DES-CBC
 * in the legacy provider), its key transported as the 8 octets. */
static unsigned char *
build_envelope(const build_t *b, const uint8_t *in, size_t len, int *outlen)
{
    int                  nid, klen, ivlen, n, fin, ok;
    PKCS7               *env;
    size_t               eklen;
    EVP_PKEY_CTX        *pctx;
    unsigned char        key[32], iv[16], *ct, *ek, *der;
    ASN1_OCTET_STRING   *ivs;
    EVP_CIPHER_CTX      *ctx;
    PKCS7_RECIP_INFO    *ri;
    const EVP_CIPHER    *cipher;

    switch (b->cipher) {
    case 1:
        cipher = EVP_aes_256_cbc();
        nid = NID_aes_256_cbc;
        break;
    case 2:
        cipher = EVP_des_ede3_cbc();
        nid = NID_des_ede3_cbc;
        break;
    case 3:
        cipher = EVP_des_ede3_cbc();
        nid = NID_des_cbc;
        break;
    default:
        cipher = EVP_aes_128_cbc();
        nid = NID_aes_128_cbc;
        break;
    }

    klen = nid == NID_des_cbc ? 8 : EVP_CIPHER_get_key_length(cipher);
    ivlen = EVP_CIPHER_get_iv_length(cipher);

    if (RAND_bytes(key, klen) != 1 || RAND_bytes(iv, ivlen) != 1) {
        return NULL;
    }

    if (nid == NID_des_cbc) {
        memcpy(key + 8, key, 8);
        memcpy(key + 16, key, 8);
    }

    env = NULL;
    ri = NULL;
    pctx = NULL;
    ek = NULL;
    der = NULL;
    ivs = NULL;
    ok = 0;

    /* the content */
    ct = OPENSSL_malloc(len + 32);
    ctx = EVP_CIPHER_CTX_new();
    n = fin = 0;

    if (ct == NULL || ctx == NULL
        || EVP_EncryptInit_ex(ctx, cipher, NULL, key, iv) != 1
        || EVP_EncryptUpdate(ctx, ct, &n, in, (int) len) != 1
        || EVP_EncryptFinal_ex(ctx, ct + n, &fin) != 1)
    {
        goto done;
    }

    env = PKCS7_new();
    ivs = ASN1_OCTET_STRING_new();

    if (env == NULL || ivs == NULL
        || !PKCS7_set_type(env, NID_pkcs7_enveloped)
        || !ASN1_OCTET_STRING_set(ivs, iv, ivlen)
        || !X509_ALGOR_set0(env->d.enveloped->enc_data->algorithm,
                            OBJ_nid2obj(nid), V_ASN1_OCTET_STRING, ivs))
    {
        goto done;
    }

    ivs = NULL;

    env->d.enveloped->enc_data->enc_data = ASN1_OCTET_STRING_new();
    if (env->d.enveloped->enc_data->enc_data == NULL) {
        goto done;
    }

    ASN1_STRING_set0(env->d.enveloped->enc_data->enc_data, ct, n + fin);
    ct = NULL;

    /* the content key for the RA */
    ri = PKCS7_RECIP_INFO_new();
    if (ri == NULL || !PKCS7_RECIP_INFO_set(ri, ra_cert)) {
        goto done;
    }

    if (b->oaep && !build_oaep_alg(ri->key_enc_algor, build_md(b->digest))) {
        goto done;
    }

    pctx = EVP_PKEY_CTX_new(X509_get0_pubkey(ra_cert), NULL);
    eklen = 0;

    if (pctx == NULL || EVP_PKEY_encrypt_init(pctx) != 1
        || (b->oaep
            && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING)
                    != 1
                || EVP_PKEY_CTX_set_rsa_oaep_md(pctx, build_md(b->digest))
                    != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, build_md(b->digest))
                    != 1))
        || EVP_PKEY_encrypt(pctx, NULL, &eklen, key, (size_t) klen) != 1
        || (ek = OPENSSL_malloc(eklen)) == NULL
        || EVP_PKEY_encrypt(pctx, ek, &eklen, key, (size_t) klen) != 1)
    {
        goto done;
    }

    ASN1_STRING_set0(ri->enc_key, ek, (int) eklen);
    ek = NULL;

    if (!PKCS7_add_recipient_info(env, ri)) {
        goto done;
    }

    ri = NULL;

    der = NULL;
    *outlen = i2d_PKCS7(env, &der);
    ok = *outlen > 0;

done:

    OPENSSL_cleanse(key, sizeof(key));
    EVP_CIPHER_CTX_free(ctx);
    EVP_PKEY_CTX_free(pctx);
    OPENSSL_free(ct);
    OPENSSL_free(ek);
    ASN1_OCTET_STRING_free(ivs);
    PKCS7_RECIP_INFO_free(ri);
    PKCS7_free(env);

    if (!ok) {
        OPENSSL_free(der);
        return NULL;
    }

    return der;
}


/* A SCEP attribute (twice: two of them, pushed as they are: OpenSSL's
 * X509at_add1_attr refuses a second one of a type). */
static int
build_attr(PKCS7_SIGNER_INFO *si, int twice, ASN1_OBJECT *oid, int type,
    const uint8_t *v, size_t len)
{
    X509_ATTRIBUTE        *a;
    /* X509_ATTRIBUTE_create_by_OBJ() takes no value for a NULL pointer */
    static const uint8_t   empty[1];

    if (X509at_add1_attr_by_OBJ(&si->auth_attr, oid, type, len ? v : empty,
                                (int) len) == NULL)
    {
        return 0;
    }

    if (twice) {
        a = X509_ATTRIBUTE_create_by_OBJ(NULL, oid, type, len ? v : empty,
                                         (int) len);
        if (a == NULL || !sk_X509_ATTRIBUTE_push(si->auth_attr, a)) {
            X509_ATTRIBUTE_free(a);
            return 0;
        }
    }

    return 1;
}


/* The pkiMessage of b (DER, malloc'd by OpenSSL), or NULL. */
static unsigned char *
build_message(const build_t *b, int *outlen)
{
    int                  n, ilen, elen, ok, i, stype;
    BIO                 *bio;
    char                 tid[64];
    PKCS7               *p7;
    ASN1_TIME           *t;
    const EVP_MD        *md;
    const uint8_t       *inner, *content;
    unsigned char       *resigned, *env, *der;
    PKCS7_SIGNER_INFO   *si;

    resigned = NULL;
    env = NULL;
    der = NULL;
    p7 = NULL;
    ok = 0;

    inner = b->inner;
    ilen = (int) b->inner_len;

    if (b->resign) {
        resigned = build_resign(b->inner, b->inner_len, &n);
        if (resigned != NULL) {
            inner = resigned;
            ilen = n;
        }
    }

    if (b->bare) {
        content = inner;
        elen = ilen;
    } else {
        env = build_envelope(b, inner, (size_t) ilen, &elen);
        if (env == NULL) {
            goto done;
        }
        content = env;
    }

    md = build_md(b->digest);
    stype = b->utf8 ? V_ASN1_UTF8STRING : V_ASN1_PRINTABLESTRING;

    p7 = PKCS7_new();
    if (p7 == NULL
        || !PKCS7_set_type(p7, NID_pkcs7_signed)
        || !PKCS7_content_new(p7, NID_pkcs7_data)
        || !PKCS7_add_certificate(p7, signer_cert[b->signer])
        || (si = PKCS7_add_signature(p7, signer_cert[b->signer],
                                     signer_key[b->signer], md)) == NULL
        || !PKCS7_add_signed_attribute(si, NID_pkcs9_contentType,
                                       V_ASN1_OBJECT,
                                       OBJ_nid2obj(NID_pkcs7_data)))
    {
        goto done;
    }

    if (b->when != 0) {
        t = X509_gmtime_adj(NULL, b->when == 1 ? 0
                                  : b->when == 2 ? -2 * 86400L : 2 * 86400L);
        if (t == NULL
            || !PKCS7_add_signed_attribute(si, NID_pkcs9_signingTime,
                                           V_ASN1_UTCTIME, t))
        {
            ASN1_TIME_free(t);
            goto done;
        }
    }

    if (!b->no_type
        && !build_attr(si, b->twice, oid_msgtype, stype, b->type,
                       b->type_len))
    {
        goto done;
    }

    if (!b->no_tid) {
        if (b->auto_tid && build_tid(inner, (size_t) ilen, tid)) {
            if (!build_attr(si, b->twice, oid_tid, stype,
                            (const uint8_t *) tid, strlen(tid)))
            {
                goto done;
            }

        } else if (!build_attr(si, b->twice, oid_tid, stype, b->tid,
                               b->tid_len))
        {
            goto done;
        }
    }

    if (!b->no_nonce
        && !build_attr(si, b->twice, oid_nonce, V_ASN1_OCTET_STRING,
                       b->nonce, b->nonce_len))
    {
        goto done;
    }

    bio = PKCS7_dataInit(p7, NULL);
    if (bio == NULL) {
        goto done;
    }

    i = (elen == 0 || BIO_write(bio, content, elen) == elen)
        && BIO_flush(bio) == 1
        && PKCS7_dataFinal(p7, bio);
    BIO_free_all(bio);

    if (!i) {
        goto done;
    }

    /* PKCS7_dataFinal() adds a signingTime when none is there: taken out
     * again, and the attributes signed again */
    if (b->when == 0) {
        i = X509at_get_attr_by_NID(si->auth_attr, NID_pkcs9_signingTime, -1);
        if (i >= 0) {
            X509_ATTRIBUTE_free(X509at_delete_attr(si->auth_attr, i));
            if (PKCS7_SIGNER_INFO_sign(si) != 1) {
                goto done;
            }
        }
    }

    *outlen = i2d_PKCS7(p7, &der);
    ok = *outlen > 0;

done:

    PKCS7_free(p7);
    OPENSSL_free(env);
    OPENSSL_free(resigned);
    ERR_clear_error();

    if (!ok) {
        OPENSSL_free(der);
        return NULL;
    }

    return der;
}


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    BIO              *b;
    pki_result_t      res;
    pki_scep_conf_t   conf;

    (void) argc;
    (void) argv;

    fx = pki_fuzz_fixture();

    b = BIO_new_mem_buf(pki_fuzz_ra_cert_pem, -1);
    ra_cert = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;
    BIO_free(b);
    ra_key = pki_fuzz_key_pem(pki_fuzz_ra_key_pem, "ra.key");
    if (ra_cert == NULL || ra_key == NULL) {
        fprintf(stderr, "fuzz_scep: RA fixture\n");
        exit(1);
    }

    memset(&conf, 0, sizeof(conf));
    conf.ca = fx->ca;
    conf.tmpl = fx->device;
    conf.redis = fx->dead_redis;
    conf.ra_cert = ra_cert;
    conf.ra_key = ra_key;
    conf.challenge = (const unsigned char *) "s3cret";
    conf.challenge_len = 6;
    pki_result_init(&res);
    if (pki_scep_conf_check(&conf, &res) != PKI_OK) {
        fprintf(stderr, "fuzz_scep: %s %s\n", res.detail, res.log);
        exit(1);
    }

    build_init();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               n;
    char             *b64;
    uint8_t           mode;
    build_t           b;
    unsigned char    *built;
    pki_scep_req_t    req;
    pki_scep_conf_t   conf;
    pki_scep_resp_t   resp;

    if (fx == NULL) {
        LLVMFuzzerInitialize(NULL, NULL);
    }

    if (size < 1) {
        return 0;
    }

    mode = data[0];
    data++;
    size--;

    built = NULL;
    b64 = NULL;
    memset(&b, 0, sizeof(b));

    if (mode & 0x80) {
        if (size > PKI_SCEP_FUZZ_BUILD_MAX) {
            return 0;
        }

        build_parse(data, size, &b);

        built = build_message(&b, &n);
        if (built == NULL) {
            /* nothing this input chose can be built (an EC signature
             * with MD5, say): nothing to run */
            if (pki_fuzz_verbose()) {
                fprintf(stderr, "scep mode %02x: not built\n", mode);
            }
            return 0;
        }

        data = built;
        size = (size_t) n;

        if (mode & 0x01) {
            b64 = OPENSSL_malloc(4 * ((size + 2) / 3) + 1);
            if (b64 == NULL) {
                abort();
            }
            EVP_EncodeBlock((unsigned char *) b64, built, (int) size);
            data = (const uint8_t *) b64;
            size = strlen(b64);
        }
    }

    memset(&conf, 0, sizeof(conf));
    conf.ca = fx->ca;
    conf.tmpl = fx->device;
    conf.redis = (mode & 0x80) && b.no_store ? NULL : fx->dead_redis;
    conf.ra_cert = ra_cert;
    conf.ra_key = ra_key;
    conf.challenge = (const unsigned char *) "s3cret";
    conf.challenge_len = 6;
    conf.accept_des = (mode & 0x02) != 0;
    conf.manual = (mode & 0x04) != 0;
    conf.tid_any = (mode & 0x08) != 0;
    /* the seeds' signingTime is the day they were made: with the window
     * always on, every signed seed stopped at badTime a day later and
     * what follows it (decryption, the CSR, the EnvelopedData checks)
     * went unfuzzed */
    conf.max_skew = (mode & 0x40) ? 86400 : 0;

    memset(&req, 0, sizeof(req));
    req.op = (mode & 0x10) ? PKI_SCEP_GETCACAPS
             : (mode & 0x20) ? PKI_SCEP_GETCACERT
             : PKI_SCEP_PKIOPERATION;
    req.method = (mode & 0x01) ? "GET" : "POST";
    req.body = data;
    req.body_len = size;
    req.client = "192.0.2.9";

    pki_scep_handle(&conf, &req, &resp);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "scep mode %02x: %d type %d status %d fail %d %s "
                "(%s)\n", mode, resp.http_status, resp.message_type,
                resp.pki_status, resp.fail_info, resp.res.detail,
                resp.res.log);
    }

    if (resp.http_status < 200 || resp.http_status > 599
        || (resp.body == NULL && resp.body_len != 0))
    {
        abort();
    }

    /* no certificate without the store: a CertRep may be SUCCESS only for
     * GetCRL (built from the store too, so not here either) */
    if (resp.pki_status == 0) {
        abort();
    }

    pki_scep_resp_free(&resp);
    OPENSSL_free(built);
    OPENSSL_free(b64);
    ERR_clear_error();

    return 0;
}
