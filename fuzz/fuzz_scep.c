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
 * ends in the store's failure, except in store mode (below).
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
 *           bit 2    store mode: the fake Redis with the state below
 *                    (bit 0 still wins), and byte 4 follows
 *   byte 4  (store mode only) what the state supplies:
 *           bits 0-2 transactionID of the state (0: the field's):
 *                    1 issued (C1), 2 pending, 3 approved, 4 a claim
 *                    given up before its serial, 5 a stale claim whose
 *                    serial (C1's) is committed, 6 rejected, 7 a stale
 *                    claim whose serial (C2's) is revoked
 *           bits 3-4 inner content (0: as written): 1 the CSR C1 was
 *                    issued for (the same DER: its resend), 2 and 3
 *                    IssuerAndSerialNumber of C1 and of C2
 *           bits 5-6 signer (0: byte 1's): 1 C1 (good), 2 C2 (revoked),
 *                    3 C3 (recorded under template "strict")
 *           bit 7    one-time challenges on (scep_challenge dynamic)
 *   then    three fields, each a length byte and that many bytes
 *           (missing: empty): messageType (the string on the wire),
 *           transactionID, senderNonce
 *   rest    the inner content: a DER CSR (PKCSReq, RenewalReq),
 *           IssuerAndSerialNumber (GetCert, GetCRL), IssuerAndSubject
 *           (CertPoll), or anything
 * fuzz/gen_scep_seeds.sh writes the build-mode seeds.
 *
 * Store mode.  The in-process fake Redis (fakeredis.c) holds what the
 * engine itself made at start, restored from a snapshot after each
 * input: C1, C2 and C3, certificates of the device key enrolled at once
 * by PKCSReqs with the static challenge (C2 then revoked, C3's record
 * moved to another template), a PKCSReq under manual approval for each of
 * the transactionIDs 2 to 7 (set by hand to the state named above), a
 * CRL, and one-time challenges "once-any" (no binding), "once-bound"
 * (template device, CN device-1, SAN DNS:device-1.example.com) and
 * "once-other" (template strict).  Every transactionID of the state is a
 * hash of the device key, as a PKCSReq's must be.  So a well-formed
 * request reaches issuance, the records, the resend lookup, CertPoll's
 * claims, GetCert and GetCRL.
 *
 * Oracle.  Every CertRep is signed by the RA over attributes that say what
 * the engine reports (messageType 3, pkiStatus, a failInfo 0-4 exactly
 * for a FAILURE, the transactionID, the request's senderNonce as
 * recipientNonce).  No SUCCESS without the store.  In store mode a
 * SUCCESS is decrypted with the signer's key: it carries one certificate
 * of the CA (a CRL of the CA for GetCRL), and the store holds the record
 * of that certificate's serial with the same DER, good unless GetCert
 * asked for it: no certificate goes out without a durable record.  The
 * certificate answers the request: the CSR's key for PKCSReq and
 * RenewalReq, the signer's for CertPoll, the serial asked for GetCert.
 * A PENDING answers only PKCSReq or CertPoll, with the store.
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


/* store mode: the transactionIDs of the state (byte 4 bits 0-2) */
enum {
    ST_NONE = 0,
    ST_ISSUED,          /* enrolled at once: C1, and the record of it that
                           a resend finds */
    ST_PENDING,         /* waiting for approval */
    ST_APPROVED,        /* approved: the next CertPoll issues */
    ST_CLAIM,           /* "issuing", given up (since 0), no serial */
    ST_CLAIMED,         /* "issuing", stale, C1's serial: committed */
    ST_REJECTED,
    ST_REVOKED,         /* "issuing", stale, C2's serial: revoked */
    ST_N
};

/* signers: 0-3 as byte 1 chooses, 4-6 the state's C1, C2, C3 */
#define PKI_SCEP_FUZZ_SIGNERS  7


static const pki_fuzz_fixture_t  *fx;
static X509                      *ra_cert;
static pki_key_t                 *ra_key;

/* build mode: the signers (certificate and key) and the SCEP OIDs */
static X509                      *signer_cert[PKI_SCEP_FUZZ_SIGNERS];
static EVP_PKEY                  *signer_key[PKI_SCEP_FUZZ_SIGNERS];
static EVP_PKEY                  *device_key;
static ASN1_OBJECT               *oid_msgtype, *oid_tid, *oid_nonce;
static ASN1_OBJECT               *oid_status, *oid_fail, *oid_rnonce;

/* store mode: the fake Redis and what the state supplies */
static pki_redis_t               *kv;
static char                       state_tid[ST_N][100];
static unsigned char             *state_inner[4];
static int                        state_inner_len[4];


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
    oid_status = OBJ_txt2obj("2.16.840.1.113733.1.9.3", 1);
    oid_fail = OBJ_txt2obj("2.16.840.1.113733.1.9.4", 1);
    oid_nonce = OBJ_txt2obj("2.16.840.1.113733.1.9.5", 1);
    oid_rnonce = OBJ_txt2obj("2.16.840.1.113733.1.9.6", 1);
    oid_tid = OBJ_txt2obj("2.16.840.1.113733.1.9.7", 1);

    if (oid_msgtype == NULL || oid_nonce == NULL || oid_tid == NULL
        || oid_status == NULL || oid_fail == NULL || oid_rnonce == NULL)
    {
        fprintf(stderr, "fuzz_scep: OIDs\n");
        exit(1);
    }
}


/* ---- build mode ------------------------------------------------------------ */

typedef struct {
    unsigned             signer, cipher, digest, oaep, resign;
    unsigned             when, auto_tid, no_nonce, no_tid, no_type, bare;
    unsigned             utf8, no_store, twice, store, dynamic;
    const uint8_t       *type, *tid, *nonce, *inner;
    size_t               type_len, tid_len, nonce_len, inner_len;
    unsigned char       *sent;      /* the inner content as sent (a
                                       re-signed CSR), OPENSSL_malloc'd */
    int                  sent_len;
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
    uint8_t   b1, b2, b3, b4;
    size_t    n;
    unsigned  sel, state_tid_sel;

    memset(b, 0, sizeof(*b));
    state_tid_sel = ST_NONE;

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
    b->store = (b3 >> 2) & 1;

    if (b->store && size > 0) {
        b4 = data[0];
        data++;
        size--;

        b->dynamic = (b4 >> 7) & 1;

        if ((b4 >> 5) & 3) {
            b->signer = 3 + ((b4 >> 5) & 3);
        }

        sel = b4 & 7;
        if (sel != ST_NONE) {
            state_tid_sel = sel;
        }

        sel = (b4 >> 3) & 3;
        if (sel != 0) {
            b->inner = state_inner[sel];
            b->inner_len = (size_t) state_inner_len[sel];
        }
    }

    field(&data, &size, &b->type, &b->type_len);
    field(&data, &size, &b->tid, &b->tid_len);
    field(&data, &size, &b->nonce, &b->nonce_len);

    if (state_tid_sel != ST_NONE) {
        /* the state's instead of the field's (read all the same) */
        b->tid = (const uint8_t *) state_tid[state_tid_sel];
        b->tid_len = strlen(state_tid[state_tid_sel]);
        b->auto_tid = 0;
    }

    if (b->inner == NULL) {
        b->inner = data;
        b->inner_len = size;
    }
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


/* The pkiMessage of b (DER, malloc'd by OpenSSL), or NULL.  b->sent: the
 * inner content it holds (the caller frees it). */
static unsigned char *
build_message(build_t *b, int *outlen)
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

    if (ilen > 0) {
        b->sent = OPENSSL_memdup(inner, (size_t) ilen);
        if (b->sent == NULL) {
            goto done;
        }
        b->sent_len = ilen;
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


/* ---- the CertRep --------------------------------------------------------- */

/* The value of the one attribute oid of si, NULL when there is none;
 * aborts on two of them, two values or another type. */
static const ASN1_STRING *
rep_attr(PKCS7_SIGNER_INFO *si, ASN1_OBJECT *oid, int type)
{
    int              i;
    ASN1_TYPE       *t;
    X509_ATTRIBUTE  *a;

    i = X509at_get_attr_by_OBJ(si->auth_attr, oid, -1);
    if (i < 0) {
        return NULL;
    }

    a = X509at_get_attr(si->auth_attr, i);
    t = a != NULL ? X509_ATTRIBUTE_get0_type(a, 0) : NULL;

    if (t == NULL || t->type != type || X509_ATTRIBUTE_count(a) != 1
        || X509at_get_attr_by_OBJ(si->auth_attr, oid, i) >= 0)
    {
        abort();
    }

    return t->value.asn1_string;
}


/* The decimal number of a PrintableString attribute, -1 when there is
 * none. */
static int
rep_num(PKCS7_SIGNER_INFO *si, ASN1_OBJECT *oid)
{
    int                   i, n, v;
    const ASN1_STRING    *s;
    const unsigned char  *d;

    s = rep_attr(si, oid, V_ASN1_PRINTABLESTRING);
    if (s == NULL) {
        return -1;
    }

    d = ASN1_STRING_get0_data(s);
    n = ASN1_STRING_length(s);

    if (n < 1 || n > 3) {
        abort();
    }

    for (v = 0, i = 0; i < n; i++) {
        if (d[i] < '0' || d[i] > '9') {
            abort();
        }
        v = v * 10 + d[i] - '0';
    }

    return v;
}


/* The RA's signature over the signed attributes, and their messageDigest
 * of the content (of "" when there is none).  1 when both hold. */
static int
rep_signed(PKCS7 *p7, PKCS7_SIGNER_INFO *si)
{
    int                 n, ok;
    EVP_MD_CTX         *ctx;
    unsigned int        mdlen;
    const EVP_MD       *md;
    unsigned char       dig[EVP_MAX_MD_SIZE], *abuf;
    ASN1_OCTET_STRING  *want, *os;

    if (si->issuer_and_serial == NULL
        || X509_NAME_cmp(si->issuer_and_serial->issuer,
                         X509_get_issuer_name(ra_cert)) != 0
        || ASN1_INTEGER_cmp(si->issuer_and_serial->serial,
                            X509_get0_serialNumber(ra_cert)) != 0)
    {
        return 0;
    }

    md = EVP_get_digestbyobj(si->digest_alg->algorithm);
    want = PKCS7_digest_from_attributes(si->auth_attr);
    os = p7->d.sign->contents != NULL
         && PKCS7_type_is_data(p7->d.sign->contents)
         ? p7->d.sign->contents->d.data : NULL;

    if (md == NULL || want == NULL || si->enc_digest == NULL
        || EVP_Digest(os ? os->data : (const unsigned char *) "",
                      os ? (size_t) os->length : 0, dig, &mdlen, md, NULL)
           != 1
        || (unsigned int) want->length != mdlen
        || memcmp(want->data, dig, mdlen) != 0)
    {
        return 0;
    }

    abuf = NULL;
    n = ASN1_item_i2d((ASN1_VALUE *) si->auth_attr, &abuf,
                      ASN1_ITEM_rptr(PKCS7_ATTR_VERIFY));
    if (n <= 0) {
        return 0;
    }

    ctx = EVP_MD_CTX_new();
    ok = ctx != NULL
         && EVP_DigestVerifyInit(ctx, NULL, md, NULL,
                                 X509_get0_pubkey(ra_cert)) == 1
         && EVP_DigestVerify(ctx, si->enc_digest->data,
                             (size_t) si->enc_digest->length, abuf,
                             (size_t) n) == 1;

    EVP_MD_CTX_free(ctx);
    OPENSSL_free(abuf);

    return ok;
}


/* The content of a SUCCESS's EnvelopedData os, opened with the key of the
 * request's signer (b->signer): the key transport as b made it, the
 * content cipher of the request's (3DES for single DES).  The content
 * (OPENSSL_malloc'd) in *out, or NULL. */
static unsigned char *
rep_open(const ASN1_OCTET_STRING *os, const build_t *b, int *outlen)
{
    int                   nid, n, fin, ok;
    X509                 *rcpt;
    PKCS7                *env;
    size_t                cklen;
    ASN1_TYPE            *ivt;
    X509_ALGOR           *alg;
    EVP_PKEY_CTX         *pctx;
    EVP_CIPHER_CTX       *ctx;
    PKCS7_RECIP_INFO     *ri;
    unsigned char         ck[512], *out;
    const EVP_MD         *md;
    const EVP_CIPHER     *cipher;
    ASN1_OCTET_STRING    *ct;
    const unsigned char  *p;

    static const int  want[4] = {
        NID_aes_128_cbc, NID_aes_256_cbc, NID_des_ede3_cbc, NID_des_ede3_cbc
    };

    rcpt = signer_cert[b->signer];
    md = build_md(b->digest);
    pctx = NULL;
    ctx = NULL;
    out = NULL;
    ok = 0;
    cklen = sizeof(ck);

    p = os->data;
    env = d2i_PKCS7(NULL, &p, os->length);

    if (env == NULL || p != os->data + os->length
        || !PKCS7_type_is_enveloped(env) || env->d.enveloped == NULL
        || sk_PKCS7_RECIP_INFO_num(env->d.enveloped->recipientinfo) != 1)
    {
        goto done;
    }

    ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo, 0);
    nid = OBJ_obj2nid(ri->key_enc_algor->algorithm);

    /* for the request's signer, by its key transport */
    if (X509_NAME_cmp(ri->issuer_and_serial->issuer,
                      X509_get_issuer_name(rcpt)) != 0
        || ASN1_INTEGER_cmp(ri->issuer_and_serial->serial,
                            X509_get0_serialNumber(rcpt)) != 0
        || nid != (b->oaep ? NID_rsaesOaep : NID_rsaEncryption))
    {
        goto done;
    }

    pctx = EVP_PKEY_CTX_new(signer_key[b->signer], NULL);

    if (pctx == NULL || EVP_PKEY_decrypt_init(pctx) != 1
        || (b->oaep
            && (EVP_PKEY_CTX_set_rsa_padding(pctx, RSA_PKCS1_OAEP_PADDING)
                    != 1
                || EVP_PKEY_CTX_set_rsa_oaep_md(pctx, md) != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(pctx, md) != 1))
        || EVP_PKEY_decrypt(pctx, ck, &cklen, ri->enc_key->data,
                            (size_t) ri->enc_key->length) != 1)
    {
        goto done;
    }

    alg = env->d.enveloped->enc_data->algorithm;
    ivt = alg->parameter;
    ct = env->d.enveloped->enc_data->enc_data;
    nid = OBJ_obj2nid(alg->algorithm);
    cipher = nid == want[b->cipher] ? EVP_get_cipherbynid(nid) : NULL;

    if (cipher == NULL || ct == NULL || ivt == NULL
        || ivt->type != V_ASN1_OCTET_STRING
        || ivt->value.octet_string->length
           != EVP_CIPHER_get_iv_length(cipher)
        || cklen != (size_t) EVP_CIPHER_get_key_length(cipher))
    {
        goto done;
    }

    out = OPENSSL_malloc((size_t) ct->length + 32);
    ctx = EVP_CIPHER_CTX_new();
    n = fin = 0;

    if (out == NULL || ctx == NULL
        || EVP_DecryptInit_ex(ctx, cipher, NULL, ck,
                              ivt->value.octet_string->data) != 1
        || EVP_DecryptUpdate(ctx, out, &n, ct->data, ct->length) != 1
        || EVP_DecryptFinal_ex(ctx, out + n, &fin) != 1)
    {
        goto done;
    }

    *outlen = n + fin;
    ok = 1;

done:

    OPENSSL_cleanse(ck, sizeof(ck));
    EVP_CIPHER_CTX_free(ctx);
    EVP_PKEY_CTX_free(pctx);
    PKCS7_free(env);
    ERR_clear_error();

    if (!ok) {
        OPENSSL_free(out);
        return NULL;
    }

    return out;
}


/* A certificate a SUCCESS carries: one of the CA, whose serial's record the
 * store holds with the same DER (good, unless GetCert asked for it), and
 * which answers the request. */
static void
rep_cert(X509 *cert, int type, const build_t *b)
{
    int                   n, ok;
    char                  hex[41];
    X509_REQ             *csr;
    pki_record_t          rec;
    pki_result_t          res;
    unsigned char        *der;
    const unsigned char  *p;
    PKCS7_ISSUER_AND_SERIAL  *ias;

    if (X509_verify(cert, X509_get0_pubkey(fx->ca_cert)) != 1
        || !pki_serial_to_hex(X509_get0_serialNumber(cert), hex))
    {
        fprintf(stderr, "fuzz_scep: a certificate not of the CA\n");
        abort();
    }

    der = NULL;
    n = i2d_X509(cert, &der);
    memset(&rec, 0, sizeof(rec));
    pki_result_init(&res);

    ok = n > 0
         && pki_record_get(kv, pki_ca_name(fx->ca), hex, &rec, &res)
            == PKI_OK
         && rec.der != NULL && rec.der_len == (size_t) n
         && memcmp(rec.der, der, (size_t) n) == 0
         && (type == 21 || rec.status == PKI_CERT_GOOD);

    if (!ok) {
        fprintf(stderr, "fuzz_scep: certificate %s went out without a "
                "good record of it (%s, status %d)\n", hex, res.detail,
                (int) rec.status);
        abort();
    }

    pki_record_clear(&rec);
    OPENSSL_free(der);

    /* what it answers (a content OpenSSL does not read is not judged) */
    p = b->sent;

    if (type == 17 || type == 19) {
        csr = p != NULL ? d2i_X509_REQ(NULL, &p, b->sent_len) : NULL;
        ok = csr == NULL
             || EVP_PKEY_eq(X509_get0_pubkey(cert),
                            X509_REQ_get0_pubkey(csr)) == 1;
        X509_REQ_free(csr);

    } else if (type == 20) {
        ok = EVP_PKEY_eq(X509_get0_pubkey(cert), signer_key[b->signer])
             == 1;

    } else {
        ias = p != NULL ? d2i_PKCS7_ISSUER_AND_SERIAL(NULL, &p, b->sent_len)
                        : NULL;
        ok = ias == NULL
             || (ASN1_INTEGER_cmp(ias->serial, X509_get0_serialNumber(cert))
                     == 0
                 && X509_NAME_cmp(ias->issuer, X509_get_issuer_name(cert))
                     == 0);
        PKCS7_ISSUER_AND_SERIAL_free(ias);
    }

    ERR_clear_error();

    if (!ok) {
        fprintf(stderr, "fuzz_scep: certificate %s does not answer the "
                "request (messageType %d)\n", hex, type);
        abort();
    }
}


/*
 * The answer to a PKIOperation, by the oracle at the top.  b: the
 * description of build mode (NULL: raw mode); store: the fake Redis was
 * the store.  *got (when got is not NULL): a copy of the certificate of a
 * SUCCESS, else NULL.
 */
static void
check_certrep(const pki_scep_resp_t *resp, const build_t *b, int store,
    X509 **got)
{
    int                   n, type, status, fail, nc, nr;
    PKCS7                *p7, *in;
    unsigned char        *der;
    PKCS7_SIGNER_INFO    *si;
    ASN1_OCTET_STRING    *os;
    const ASN1_STRING    *s;
    const unsigned char  *p;
    STACK_OF(PKCS7_SIGNER_INFO)  *sis;

    if (got != NULL) {
        *got = NULL;
    }

    /* an HTTP error delivers nothing */
    if (resp->http_status != 200 || resp->content_type == NULL
        || strcmp(resp->content_type, "application/x-pki-message") != 0)
    {
        return;
    }

    p = resp->body;
    p7 = d2i_PKCS7(NULL, &p, (long) resp->body_len);

    if (p7 == NULL || p != resp->body + resp->body_len
        || !PKCS7_type_is_signed(p7) || p7->d.sign == NULL
        || (sis = PKCS7_get_signer_info(p7)) == NULL
        || sk_PKCS7_SIGNER_INFO_num(sis) != 1
        || (si = sk_PKCS7_SIGNER_INFO_value(sis, 0))->auth_attr == NULL
        || !rep_signed(p7, si))
    {
        fprintf(stderr, "fuzz_scep: a CertRep the RA did not sign\n");
        abort();
    }

    type = rep_num(si, oid_msgtype);
    status = rep_num(si, oid_status);
    fail = rep_num(si, oid_fail);

    if (type != 3 || status != resp->pki_status
        || (status != 0 && status != 2 && status != 3)
        || (status == 2 ? fail < 0 || fail > 4 || fail != resp->fail_info
                        : fail != -1 || resp->fail_info != -1))
    {
        fprintf(stderr, "fuzz_scep: CertRep type %d status %d fail %d, "
                "reported %d %d\n", type, status, fail, resp->pki_status,
                resp->fail_info);
        abort();
    }

    s = rep_attr(si, oid_tid, V_ASN1_PRINTABLESTRING);
    if (s == NULL
        || (size_t) ASN1_STRING_length(s) != strlen(resp->tid)
        || memcmp(ASN1_STRING_get0_data(s), resp->tid, strlen(resp->tid))
           != 0)
    {
        fprintf(stderr, "fuzz_scep: CertRep of another transactionID\n");
        abort();
    }

    s = rep_attr(si, oid_rnonce, V_ASN1_OCTET_STRING);
    if (s == NULL
        || (b != NULL
            && ((size_t) ASN1_STRING_length(s) != b->nonce_len
                || memcmp(ASN1_STRING_get0_data(s), b->nonce, b->nonce_len)
                   != 0)))
    {
        fprintf(stderr, "fuzz_scep: recipientNonce is not the request's "
                "senderNonce\n");
        abort();
    }

    os = p7->d.sign->contents != NULL
         && PKCS7_type_is_data(p7->d.sign->contents)
         ? p7->d.sign->contents->d.data : NULL;

    if (status != 0) {
        /* no pkcsPKIEnvelope; PENDING only for a request a store keeps */
        if ((os != NULL && os->length > 0)
            || (status == 3
                && (!store || (resp->message_type != 19
                               && resp->message_type != 20))))
        {
            fprintf(stderr, "fuzz_scep: CertRep status %d for messageType "
                    "%d\n", status, resp->message_type);
            abort();
        }
        PKCS7_free(p7);
        return;
    }

    /* SUCCESS: never without the store, always with the certificate's
     * record */
    if (!store || b == NULL || os == NULL) {
        fprintf(stderr, "fuzz_scep: SUCCESS without the store\n");
        abort();
    }

    der = rep_open(os, b, &n);
    p = der;
    in = der != NULL ? d2i_PKCS7(NULL, &p, n) : NULL;

    if (in == NULL || p != der + n || !PKCS7_type_is_signed(in)
        || in->d.sign == NULL)
    {
        fprintf(stderr, "fuzz_scep: a SUCCESS that does not open\n");
        abort();
    }

    nc = in->d.sign->cert != NULL ? sk_X509_num(in->d.sign->cert) : 0;
    nr = in->d.sign->crl != NULL ? sk_X509_CRL_num(in->d.sign->crl) : 0;

    if (resp->message_type == 22) {
        if (nc != 0 || nr != 1
            || X509_CRL_verify(sk_X509_CRL_value(in->d.sign->crl, 0),
                               X509_get0_pubkey(fx->ca_cert)) != 1)
        {
            fprintf(stderr, "fuzz_scep: GetCRL answered %d certificates, "
                    "%d CRLs\n", nc, nr);
            abort();
        }

    } else {
        if (nc != 1 || nr != 0) {
            fprintf(stderr, "fuzz_scep: messageType %d answered %d "
                    "certificates, %d CRLs\n", resp->message_type, nc, nr);
            abort();
        }

        rep_cert(sk_X509_value(in->d.sign->cert, 0), resp->message_type, b);

        if (got != NULL) {
            *got = X509_dup(sk_X509_value(in->d.sign->cert, 0));
        }
    }

    PKCS7_free(in);
    PKCS7_free(p7);
    OPENSSL_free(der);
    ERR_clear_error();
}


/* ---- store mode: the state ----------------------------------------------- */

static void
scep_conf(pki_scep_conf_t *conf, pki_redis_t *r)
{
    memset(conf, 0, sizeof(*conf));
    conf->ca = fx->ca;
    conf->tmpl = fx->device;
    conf->redis = r;
    conf->ra_cert = ra_cert;
    conf->ra_key = ra_key;
    conf->challenge = (const unsigned char *) "s3cret";
    conf->challenge_len = 6;
}


/* A transactionID of the device key into out: its SubjectPublicKeyInfo
 * hashed by md, in base64 (enc 1), lower-case (0) or upper-case hex (2). */
static void
state_tid_of(const EVP_MD *md, int enc, char *out)
{
    int             n;
    unsigned int    i, mdlen;
    unsigned char  *spki, dig[EVP_MAX_MD_SIZE];

    spki = NULL;
    n = i2d_PUBKEY(device_key, &spki);

    if (n <= 0
        || EVP_Digest(spki, (size_t) n, dig, &mdlen, md, NULL) != 1)
    {
        fprintf(stderr, "fuzz_scep setup: transactionID\n");
        exit(1);
    }

    if (enc == 1) {
        EVP_EncodeBlock((unsigned char *) out, dig, (int) mdlen);

    } else {
        for (i = 0; i < mdlen; i++) {
            snprintf(out + 2 * i, 3, enc ? "%02X" : "%02x", dig[i]);
        }
    }

    OPENSSL_free(spki);
}


/* The device's CSR of the state (DER, OPENSSL_malloc'd): CN device-1, SAN
 * DNS:device-1.example.com, the static challenge. */
static unsigned char *
state_csr(int *len)
{
    X509_REQ                  *req;
    X509_NAME                 *name;
    unsigned char             *der;
    X509_EXTENSION            *ext;
    STACK_OF(X509_EXTENSION)  *exts;

    req = X509_REQ_new();
    name = X509_NAME_new();
    exts = sk_X509_EXTENSION_new_null();
    ext = X509V3_EXT_conf_nid(NULL, NULL, NID_subject_alt_name,
                              "DNS:device-1.example.com");
    der = NULL;

    if (req == NULL || name == NULL || exts == NULL || ext == NULL
        || !X509_NAME_add_entry_by_txt(name, "CN", MBSTRING_UTF8,
                                       (const unsigned char *) "device-1",
                                       -1, -1, 0)
        || !X509_REQ_set_subject_name(req, name)
        || !sk_X509_EXTENSION_push(exts, ext)
        || !X509_REQ_add_extensions(req, exts)
        || !X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword,
                                      MBSTRING_ASC,
                                      (const unsigned char *) "s3cret", -1)
        || !X509_REQ_set_pubkey(req, device_key)
        || X509_REQ_sign(req, device_key, EVP_sha256()) <= 0
        || (*len = i2d_X509_REQ(req, &der)) <= 0)
    {
        fprintf(stderr, "fuzz_scep setup: CSR\n");
        exit(1);
    }

    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_NAME_free(name);
    X509_REQ_free(req);

    return der;
}


/* IssuerAndSerialNumber of x (DER, OPENSSL_malloc'd). */
static unsigned char *
state_ias(X509 *x, int *len)
{
    unsigned char            *der;
    PKCS7_ISSUER_AND_SERIAL  *ias;

    ias = PKCS7_ISSUER_AND_SERIAL_new();
    der = NULL;

    if (ias == NULL
        || !X509_NAME_set(&ias->issuer, X509_get_issuer_name(x))
        || !ASN1_STRING_copy(ias->serial, X509_get0_serialNumber(x))
        || (*len = i2d_PKCS7_ISSUER_AND_SERIAL(ias, &der)) <= 0)
    {
        fprintf(stderr, "fuzz_scep setup: IssuerAndSerialNumber\n");
        exit(1);
    }

    PKCS7_ISSUER_AND_SERIAL_free(ias);

    return der;
}


/* One PKIOperation of the device through the engine against the store:
 * messageType type, transactionID tid, the inner content, signed by the
 * device's self-signed certificate.  The certificate of a SUCCESS, or
 * NULL; exits unless the CertRep's pkiStatus is want. */
static X509 *
state_run(const char *what, const char *type, const char *tid,
    const unsigned char *inner, int ilen, int manual, int want)
{
    int               n;
    X509             *x;
    build_t           b;
    unsigned char    *der;
    pki_scep_req_t    req;
    pki_scep_conf_t   conf;
    pki_scep_resp_t   resp;

    memset(&b, 0, sizeof(b));
    b.type = (const uint8_t *) type;
    b.type_len = strlen(type);
    b.tid = (const uint8_t *) tid;
    b.tid_len = strlen(tid);
    b.nonce = (const uint8_t *) "fuzz-setup-nonce";
    b.nonce_len = 16;
    b.inner = inner;
    b.inner_len = (size_t) ilen;
    b.store = 1;

    der = build_message(&b, &n);
    if (der == NULL) {
        fprintf(stderr, "fuzz_scep setup: %s: not built\n", what);
        exit(1);
    }

    scep_conf(&conf, kv);
    conf.manual = manual;

    memset(&req, 0, sizeof(req));
    req.op = PKI_SCEP_PKIOPERATION;
    req.method = "POST";
    req.body = der;
    req.body_len = (size_t) n;
    req.client = "192.0.2.9";

    pki_scep_handle(&conf, &req, &resp);
    check_certrep(&resp, &b, 1, &x);

    if (pki_fuzz_verbose() || resp.pki_status != want) {
        fprintf(stderr, "fuzz_scep setup: %s: %d status %d fail %d %s "
                "(%s)\n", what, resp.http_status, resp.pki_status,
                resp.fail_info, resp.res.detail, resp.res.log);
    }

    if (resp.pki_status != want) {
        exit(1);
    }

    pki_scep_resp_free(&resp);
    OPENSSL_free(der);
    OPENSSL_free(b.sent);

    return x;
}


/* The pending record of the state's transactionID which: field = value. */
static void
state_pend(int which, const char *field, const char *value)
{
    char           key[128];
    unsigned int   i, n;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (EVP_Digest(state_tid[which], strlen(state_tid[which]), md, &n,
                   EVP_sha256(), NULL) != 1)
    {
        exit(1);
    }

    i = (unsigned int) snprintf(key, sizeof(key), "%sscep:pend:",
                                pki_redis_ns(kv));
    for (n = 0; n < 32; n++, i += 2) {
        snprintf(key + i, 3, "%02x", md[n]);
    }

    pki_fuzz_kv_hset(key, field, value, strlen(value));
}


/* A one-time challenge pw bound to "TEMPLATE\nCN\nSAN\nCA" (the admin
 * API's form). */
static void
state_chal(const char *pw, const char *binding)
{
    char           key[128];
    unsigned int   i, n;
    unsigned char  md[EVP_MAX_MD_SIZE];

    if (EVP_Digest(pw, strlen(pw), md, &n, EVP_sha256(), NULL) != 1) {
        exit(1);
    }

    i = (unsigned int) snprintf(key, sizeof(key), "%sscep:chal:",
                                pki_redis_ns(kv));
    for (n = 0; n < 32; n++, i += 2) {
        snprintf(key + i, 3, "%02x", md[n]);
    }

    pki_fuzz_kv_set(key, binding);
}


/* The state of store mode, made by the engine (see the top), and its
 * snapshot. */
static void
state_init(void)
{
    int            i, n;
    X509          *c[3], *x;
    char           hex[3][41], key[160], tid[100];
    pki_record_t   rec;
    pki_result_t   res;

    static const char *const  what[ST_N] = {
        NULL, NULL, "pending", "approved", "claim given up", "claim of C1",
        "rejected", "claim of C2"
    };

    kv = pki_fuzz_kv_redis();

    state_tid_of(EVP_sha1(), 1, state_tid[ST_ISSUED]);
    state_tid_of(EVP_sha1(), 0, state_tid[ST_PENDING]);
    state_tid_of(EVP_sha256(), 0, state_tid[ST_APPROVED]);
    state_tid_of(EVP_md5(), 0, state_tid[ST_CLAIM]);
    state_tid_of(EVP_sha256(), 1, state_tid[ST_CLAIMED]);
    state_tid_of(EVP_md5(), 1, state_tid[ST_REJECTED]);
    state_tid_of(EVP_sha1(), 2, state_tid[ST_REVOKED]);

    state_inner[1] = state_csr(&state_inner_len[1]);

    /* C1, C2, C3: enrolled at once */
    for (i = 0; i < 3; i++) {
        if (i == 0) {
            snprintf(tid, sizeof(tid), "%s", state_tid[ST_ISSUED]);
        } else {
            state_tid_of(i == 1 ? EVP_md5() : EVP_sha256(), 2, tid);
        }

        c[i] = state_run("PKCSReq", "19", tid, state_inner[1],
                         state_inner_len[1], 0, 0);
        if (c[i] == NULL
            || !pki_serial_to_hex(X509_get0_serialNumber(c[i]), hex[i]))
        {
            fprintf(stderr, "fuzz_scep setup: no certificate\n");
            exit(1);
        }

        signer_cert[4 + i] = c[i];
        signer_key[4 + i] = device_key;
    }

    pki_result_init(&res);
    if (pki_record_revoke(kv, pki_ca_name(fx->ca), hex[1], 1, time(NULL), 0,
                          NULL, &res) != PKI_OK)
    {
        fprintf(stderr, "fuzz_scep setup: revoke: %s\n", res.detail);
        exit(1);
    }

    n = snprintf(key, sizeof(key), "%s{ca:%s}:cert:%s", pki_redis_ns(kv),
                 pki_ca_name(fx->ca), hex[2]);
    if (n <= 0 || (size_t) n >= sizeof(key)) {
        exit(1);
    }
    pki_fuzz_kv_hset(key, "template", "strict", 6);

    pki_result_init(&res);
    if (pki_record_get(kv, pki_ca_name(fx->ca), hex[2], &rec, &res)
        != PKI_OK
        || strcmp(rec.template_name, "strict") != 0)
    {
        fprintf(stderr, "fuzz_scep setup: C3's record %s\n", key);
        exit(1);
    }
    pki_record_clear(&rec);

    /* requests under manual approval, then set to their state */
    for (i = ST_PENDING; i < ST_N; i++) {
        x = state_run(what[i], "19", state_tid[i], state_inner[1],
                      state_inner_len[1], 1, 3);
        X509_free(x);
    }

    state_pend(ST_APPROVED, "status", "approved");

    state_pend(ST_CLAIM, "status", "issuing");
    state_pend(ST_CLAIM, "claim", "00c1a1m000000001");
    state_pend(ST_CLAIM, "since", "0");

    state_pend(ST_CLAIMED, "status", "issuing");
    state_pend(ST_CLAIMED, "claim", "00c1a1m000000002");
    state_pend(ST_CLAIMED, "since", "1");
    state_pend(ST_CLAIMED, "serial", hex[0]);

    state_pend(ST_REJECTED, "status", "rejected");

    state_pend(ST_REVOKED, "status", "issuing");
    state_pend(ST_REVOKED, "claim", "00c1a1m000000003");
    state_pend(ST_REVOKED, "since", "1");
    state_pend(ST_REVOKED, "serial", hex[1]);

    state_inner[2] = state_ias(c[0], &state_inner_len[2]);
    state_inner[3] = state_ias(c[1], &state_inner_len[3]);

    state_chal("once-any", "");
    state_chal("once-bound", "device\ndevice-1\nDNS:device-1.example.com\n"
               "issuing");
    state_chal("once-other", "strict\n\n\n");

    /* the CA's CRL, stored */
    if (pki_ca_signs_crls(fx->ca)) {
        x = state_run("GetCRL", "22", "fuzz-setup-crl", state_inner[2],
                      state_inner_len[2], 0, 0);
        X509_free(x);
    }

    pki_fuzz_kv_snapshot();

    if (pki_fuzz_verbose()) {
        for (i = 1; i < ST_N; i++) {
            fprintf(stderr, "fuzz_scep state: transactionID %d = %s\n", i,
                    state_tid[i]);
        }
        fprintf(stderr, "fuzz_scep state: C1 %s, C2 %s (revoked), C3 %s\n",
                hex[0], hex[1], hex[2]);
    }

    ERR_clear_error();
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

    scep_conf(&conf, fx->dead_redis);
    pki_result_init(&res);
    if (pki_scep_conf_check(&conf, &res) != PKI_OK) {
        fprintf(stderr, "fuzz_scep: %s %s\n", res.detail, res.log);
        exit(1);
    }

    build_init();
    state_init();

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int               n, store;
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
            OPENSSL_free(b.sent);
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

    /* build mode: the dead Redis, none (byte 3 bit 0) or the fake one
     * with the state (bit 2) */
    store = (mode & 0x80) && b.store && !b.no_store;

    scep_conf(&conf, (mode & 0x80) && b.no_store ? NULL
                     : store ? kv : fx->dead_redis);
    conf.dynamic = b.dynamic;
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
        fprintf(stderr, "scep mode %02x%s: %d type %d status %d fail %d %s "
                "(%s)\n", mode, store ? " store" : "", resp.http_status,
                resp.message_type, resp.pki_status, resp.fail_info,
                resp.res.detail, resp.res.log);
    }

    if (resp.http_status < 200 || resp.http_status > 599
        || (resp.body == NULL && resp.body_len != 0))
    {
        abort();
    }

    /* no certificate without the store: a CertRep may be SUCCESS only for
     * GetCRL (built from the store too, so not here either) */
    if (!store && resp.pki_status == 0) {
        abort();
    }

    if (req.op == PKI_SCEP_PKIOPERATION) {
        check_certrep(&resp, (mode & 0x80) ? &b : NULL, store, NULL);
    }

    pki_scep_resp_free(&resp);
    OPENSSL_free(built);
    OPENSSL_free(b64);
    OPENSSL_free(b.sent);

    if (store) {
        pki_fuzz_kv_reset();
    }

    ERR_clear_error();

    return 0;
}
