/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * scepmsg: an independent SCEP (RFC 8894) client for the tests and the
 * benchmark, written against OpenSSL only (no libpkicore), with knobs to
 * build hostile messages.
 *
 *   scepmsg req  --rcpt RA.pem --key KEY.pem --out MSG.der [options]
 *       --type N          messageType (default 19 PKCSReq)
 *       --csr FILE        DER CSR (default: made from --key, --cn,
 *                         --challenge)
 *       --cn NAME         subject CN of the made CSR (default "scepmsg")
 *       --challenge PW    challengePassword of the made CSR
 *       --cert FILE       signer certificate (default: self-signed, made)
 *       --signkey FILE    key of --cert (default --key)
 *       --inner FILE      raw messageData content instead of the CSR
 *       --certpoll        messageData = IssuerAndSubject(--issuer, CSR)
 *       --getcert SERIAL  messageData = IssuerAndSerial(--issuer, SERIAL)
 *       --issuer FILE     the CA certificate for --certpoll/--getcert
 *       --cipher C        aes128 (default), aes256, des3, des
 *       --digest D        sha256 (default), sha1, sha512, md5
 *       --digest-oid OID  the digest algorithm named as this OID (after
 *                         signing: a digest the server must refuse)
 *       --tid STR         transactionID (default: base64 SHA-1 of the
 *                         SubjectPublicKeyInfo)
 *       --no-tid | --no-nonce | --no-msgtype
 *       --msgtype-str S   messageType as this string
 *       --signing-time T  signingTime as seconds from now (may be < 0)
 *       --no-signing-time no signingTime (PKCS7_dataFinal adds one: it
 *                         is taken out and the attributes signed again)
 *       --envelope FILE   messageData = this EnvelopedData (DER) as it
 *                         is, e.g. from openssl cms -encrypt with
 *                         -keyopt rsa_padding_mode:oaep (the CSR of
 *                         --csr is then only read for the transactionID)
 *       --corrupt WHAT    sig | content | digest | key: break the
 *                         message (key: the envelope's encryptedKey)
 *       --b64             write base64 (for the GET form)
 *   scepmsg rep  --in REP.der --rcpt RA.pem --key KEY.pem --req MSG.der
 *                [--cert SIGNER.pem] [--out CERT.pem]
 *       prints "status=S failinfo=F nonce=ok|bad sig=ok|bad tid=ok|bad"
 *       and, on success, "cipher=C kt=K" (the reply's content cipher and
 *       key transport, rsaEncryption or RSAES-OAEP; decrypted with
 *       OpenSSL's CMS code, which reads the OAEP parameters) and the
 *       first certificate (or CRL) to --out.
 *   scepmsg bench --url http://127.0.0.1:PORT/path --rcpt RA.pem
 *                 --n N --conc C [--challenge PW] [--keys K] [--secs S]
 *       pre-builds N PKCSReq messages (K RSA keys, distinct CNs; on every
 *       core, before the clock), then POSTs them over C keep-alive
 *       connections, for S seconds at most when given; prints
 *       "n=SENT ok=S secs=T rate=R ... client_cpu_ms=C ... exhausted=0|1"
 *       (exhausted=1: the N messages ran out before S seconds).
 */

#define _GNU_SOURCE

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <time.h>
#include <unistd.h>

#include <openssl/asn1.h>
#include <openssl/bio.h>
#include <openssl/cms.h>
#include <openssl/err.h>
#include <openssl/evp.h>
#include <openssl/objects.h>
#include <openssl/pem.h>
#include <openssl/pkcs7.h>
#include <openssl/rand.h>
#include <openssl/sha.h>
#include <openssl/x509.h>


static ASN1_OBJECT  *oid_msgtype, *oid_status, *oid_fail, *oid_snonce,
                    *oid_rnonce, *oid_tid;


static void
die(const char *what)
{
    fprintf(stderr, "scepmsg: %s\n", what);
    ERR_print_errors_fp(stderr);
    exit(2);
}


static void
oids(void)
{
    oid_msgtype = OBJ_txt2obj("2.16.840.1.113733.1.9.2", 1);
    oid_status = OBJ_txt2obj("2.16.840.1.113733.1.9.3", 1);
    oid_fail = OBJ_txt2obj("2.16.840.1.113733.1.9.4", 1);
    oid_snonce = OBJ_txt2obj("2.16.840.1.113733.1.9.5", 1);
    oid_rnonce = OBJ_txt2obj("2.16.840.1.113733.1.9.6", 1);
    oid_tid = OBJ_txt2obj("2.16.840.1.113733.1.9.7", 1);
}


static unsigned char *
read_file(const char *path, long *len)
{
    FILE           *f;
    long            n;
    unsigned char  *buf;

    f = fopen(path, "rb");
    if (f == NULL) {
        die(path);
    }

    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc(n + 1);
    if (buf == NULL || fread(buf, 1, n, f) != (size_t) n) {
        die("read");
    }

    fclose(f);
    *len = n;
    return buf;
}


static void
write_file(const char *path, const unsigned char *d, size_t n)
{
    FILE  *f = fopen(path, "wb");

    if (f == NULL || fwrite(d, 1, n, f) != n) {
        die(path);
    }

    fclose(f);
}


static X509 *
load_cert(const char *path)
{
    BIO   *b = BIO_new_file(path, "r");
    X509  *x = b ? PEM_read_bio_X509(b, NULL, NULL, NULL) : NULL;

    BIO_free(b);
    if (x == NULL) {
        die(path);
    }
    return x;
}


static EVP_PKEY *
load_key(const char *path)
{
    BIO       *b = BIO_new_file(path, "r");
    EVP_PKEY  *k = b ? PEM_read_bio_PrivateKey(b, NULL, NULL, NULL) : NULL;

    BIO_free(b);
    if (k == NULL) {
        die(path);
    }
    return k;
}


static X509_REQ *
make_csr(EVP_PKEY *key, const char *cn, const char *challenge)
{
    X509_REQ   *req = X509_REQ_new();
    X509_NAME  *n = X509_NAME_new();

    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_REQ_set_version(req, 0);
    X509_REQ_set_subject_name(req, n);
    X509_REQ_set_pubkey(req, key);
    if (challenge != NULL) {
        X509_REQ_add1_attr_by_NID(req, NID_pkcs9_challengePassword,
                                  MBSTRING_ASC,
                                  (const unsigned char *) challenge, -1);
    }
    if (!X509_REQ_sign(req, key, EVP_sha256())) {
        die("X509_REQ_sign");
    }
    X509_NAME_free(n);
    return req;
}


static X509 *
make_self(EVP_PKEY *key, const char *cn)
{
    X509       *x = X509_new();
    X509_NAME  *n = X509_NAME_new();

    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_set_version(x, 2);
    ASN1_INTEGER_set(X509_get_serialNumber(x), (long) (rand() & 0x7fffffff));
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, n);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400);
    X509_set_pubkey(x, key);
    if (!X509_sign(x, key, EVP_sha256())) {
        die("X509_sign");
    }
    X509_NAME_free(n);
    return x;
}


static void
b64(const unsigned char *in, int len, char *out)
{
    EVP_EncodeBlock((unsigned char *) out, in, len);
}


static void
tid_of(EVP_PKEY *key, char *out)
{
    unsigned char  *spki = NULL, md[20];
    int             n = i2d_PUBKEY(key, &spki);

    SHA1(spki, n, md);
    b64(md, 20, out);
    OPENSSL_free(spki);
}


typedef struct {
    int             type;
    const char     *msgtype_str;
    X509_REQ       *csr;
    const unsigned char *inner;
    long            inner_len;
    X509           *signer;
    EVP_PKEY       *signkey;
    X509           *rcpt;
    const EVP_CIPHER *cipher;
    int             des;
    const EVP_MD   *md;
    const char     *digest_oid;
    const char     *tid;
    int             no_tid, no_nonce, no_msgtype;
    int             have_time, no_time;
    long            time_off;
    const char     *corrupt;
    int             extra;          /* EC certificates besides the signer */
    const unsigned char *envelope;  /* non-NULL: the EnvelopedData as is */
    long            envelope_len;
} req_opts_t;


/* Builds a pkiMessage; DER in *out (OPENSSL_malloc'd). */
static int
build_req(req_opts_t *o, unsigned char **out)
{
    int                 n;
    BIO                *in;
    PKCS7              *env, *p7;
    unsigned char      *inner = NULL, *envder = NULL, nonce[16];
    STACK_OF(X509)     *rc;
    PKCS7_SIGNER_INFO  *si;
    char                num[16];
    long                ilen;

    if (o->inner != NULL) {
        inner = OPENSSL_memdup(o->inner, o->inner_len);
        ilen = o->inner_len;
    } else {
        ilen = i2d_X509_REQ(o->csr, &inner);
    }

    rc = sk_X509_new_null();
    sk_X509_push(rc, o->rcpt);
    in = BIO_new_mem_buf(inner, (int) ilen);

    if (o->envelope != NULL) {
        const unsigned char  *p = o->envelope;

        env = d2i_PKCS7(NULL, &p, o->envelope_len);
    } else if (o->des) {
        /* OpenSSL 3 keeps single DES in the legacy provider: build the
         * envelope with 3DES, then relabel it DES-CBC with a key whose
         * three parts are equal (3DES-EDE with K1=K2=K3 is DES) - done
         * by the server test only through its refusal, so a wrong key is
         * fine here */
        env = PKCS7_encrypt(rc, in, EVP_des_ede3_cbc(), PKCS7_BINARY);
        if (env != NULL) {
            X509_ALGOR  *alg = env->d.enveloped->enc_data->algorithm;
            ASN1_OBJECT_free(alg->algorithm);
            alg->algorithm = OBJ_nid2obj(NID_des_cbc);
        }
    } else {
        env = PKCS7_encrypt(rc, in, o->cipher, PKCS7_BINARY);
    }
    if (env == NULL) {
        die("PKCS7_encrypt");
    }
    if (o->corrupt && strcmp(o->corrupt, "key") == 0) {
        /* a byte in the middle of the RSA block: its padding breaks */
        PKCS7_RECIP_INFO  *ri;

        ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo, 0);
        ri->enc_key->data[ri->enc_key->length / 2] ^= 0x5a;
    }
    n = i2d_PKCS7(env, &envder);
    PKCS7_free(env);
    BIO_free(in);
    sk_X509_free(rc);
    OPENSSL_free(inner);

    if (o->corrupt && strcmp(o->corrupt, "content") == 0) {
        /* the last byte of the ciphertext's next-to-last block (the
         * ciphertext ends the envelope): in CBC it flips the last
         * plaintext byte, the padding length, to 0x55 ^ (1..16), never a
         * valid one, so the decryption fails every time; a byte of the
         * last block instead left valid-looking padding 1 time in 256 */
        int  bs = o->des || o->cipher == NULL
                  ? 8 : EVP_CIPHER_get_block_size(o->cipher);

        envder[n - 1 - bs] ^= 0x55;
    }

    p7 = PKCS7_new();
    PKCS7_set_type(p7, NID_pkcs7_signed);
    PKCS7_content_new(p7, NID_pkcs7_data);
    PKCS7_add_certificate(p7, o->signer);
    if (o->extra > 0) {
        EVP_PKEY  *ek = EVP_EC_gen("P-256");
        X509      *ex = make_self(ek, "chain");

        for (int k = 0; k < o->extra; k++) {
            PKCS7_add_certificate(p7, ex);
        }
        X509_free(ex);
        EVP_PKEY_free(ek);
    }
    si = PKCS7_add_signature(p7, o->signer, o->signkey, o->md);
    if (si == NULL) {
        die("PKCS7_add_signature");
    }

    PKCS7_add_signed_attribute(si, NID_pkcs9_contentType, V_ASN1_OBJECT,
                               OBJ_nid2obj(NID_pkcs7_data));
    if (o->have_time) {
        ASN1_TIME  *t = X509_gmtime_adj(NULL, o->time_off);
        PKCS7_add_signed_attribute(si, NID_pkcs9_signingTime, V_ASN1_UTCTIME,
                                   t);
    }

    snprintf(num, sizeof(num), "%d", o->type);
    if (!o->no_msgtype) {
        const char *s = o->msgtype_str ? o->msgtype_str : num;
        X509at_add1_attr_by_OBJ(&si->auth_attr, oid_msgtype,
                                V_ASN1_PRINTABLESTRING,
                                (const unsigned char *) s, strlen(s));
    }
    if (!o->no_tid) {
        X509at_add1_attr_by_OBJ(&si->auth_attr, oid_tid,
                                V_ASN1_PRINTABLESTRING,
                                (const unsigned char *) o->tid,
                                strlen(o->tid));
    }
    if (!o->no_nonce) {
        RAND_bytes(nonce, sizeof(nonce));
        X509at_add1_attr_by_OBJ(&si->auth_attr, oid_snonce,
                                V_ASN1_OCTET_STRING, nonce, sizeof(nonce));
    }

    {
        BIO  *b = PKCS7_dataInit(p7, NULL);

        BIO_write(b, envder, n);
        BIO_flush(b);
        if (!PKCS7_dataFinal(p7, b)) {
            die("PKCS7_dataFinal");
        }
        BIO_free_all(b);
    }
    OPENSSL_free(envder);

    if (o->no_time) {
        int  i = X509at_get_attr_by_NID(si->auth_attr,
                                        NID_pkcs9_signingTime, -1);

        if (i >= 0) {
            X509_ATTRIBUTE_free(X509at_delete_attr(si->auth_attr, i));
        }
        if (PKCS7_SIGNER_INFO_sign(si) != 1) {
            die("PKCS7_SIGNER_INFO_sign");
        }
    }

    if (o->corrupt && strcmp(o->corrupt, "sig") == 0) {
        si->enc_digest->data[10] ^= 0x01;
    }
    if (o->digest_oid) {
        ASN1_OBJECT  *ob = OBJ_txt2obj(o->digest_oid, 1);
        int           k;

        if (ob == NULL) {
            die("--digest-oid: bad OID");
        }
        X509_ALGOR_set0(si->digest_alg, OBJ_dup(ob), V_ASN1_NULL, NULL);
        for (k = 0; k < sk_X509_ALGOR_num(p7->d.sign->md_algs); k++) {
            X509_ALGOR_set0(sk_X509_ALGOR_value(p7->d.sign->md_algs, k),
                            OBJ_dup(ob), V_ASN1_NULL, NULL);
        }
        ASN1_OBJECT_free(ob);
    }
    if (o->corrupt && strcmp(o->corrupt, "digest") == 0) {
        ASN1_OCTET_STRING  *c = p7->d.sign->contents->d.data;
        c->data[c->length - 1] ^= 0x01;
    }

    *out = NULL;
    n = i2d_PKCS7(p7, out);
    PKCS7_free(p7);
    return n;
}


static ASN1_TYPE *
get_attr(PKCS7_SIGNER_INFO *si, ASN1_OBJECT *o)
{
    int  i = X509at_get_attr_by_OBJ(si->auth_attr, o, -1);

    return i < 0 ? NULL : X509_ATTRIBUTE_get0_type(X509at_get_attr(
                                                       si->auth_attr, i), 0);
}


/* ---- rep ------------------------------------------------------------------ */

static int
cmd_rep(const char *inf, const char *rcptf, const char *keyf,
    const char *reqf, const char *certf, const char *outf)
{
    long                 len, rlen;
    unsigned char       *d, *rd;
    const unsigned char *p;
    PKCS7               *rep, *req, *env, *inner;
    PKCS7_SIGNER_INFO   *si, *rsi;
    ASN1_TYPE           *st, *fi, *rn, *sn, *t1, *t2;
    X509                *ra, *signer;
    EVP_PKEY            *key;
    STACK_OF(X509)      *store;
    int                  sig_ok, nonce_ok, tid_ok, status;
    char                 sbuf[8] = "-", fbuf[8] = "-";

    d = read_file(inf, &len);
    p = d;
    rep = d2i_PKCS7(NULL, &p, len);
    if (rep == NULL || !PKCS7_type_is_signed(rep)) {
        printf("status=parse\n");
        return 1;
    }

    rd = read_file(reqf, &rlen);
    p = rd;
    req = d2i_PKCS7(NULL, &p, rlen);
    if (req == NULL) {
        die("request");
    }

    ra = load_cert(rcptf);
    si = sk_PKCS7_SIGNER_INFO_value(PKCS7_get_signer_info(rep), 0);
    rsi = sk_PKCS7_SIGNER_INFO_value(PKCS7_get_signer_info(req), 0);

    /* signed by the RA: verify with exactly the RA certificate */
    store = sk_X509_new_null();
    sk_X509_push(store, ra);
    {
        /* FAILURE and PENDING carry no content: verify over nothing */
        BIO  *empty = PKCS7_get_detached(rep) ? BIO_new_mem_buf("", 0)
                                              : NULL;

        sig_ok = PKCS7_verify(rep, store, NULL, empty, NULL,
                              PKCS7_NOVERIFY | PKCS7_NOINTERN
                              | PKCS7_BINARY) == 1;
        BIO_free(empty);
    }
    ERR_clear_error();

    st = get_attr(si, oid_status);
    fi = get_attr(si, oid_fail);
    rn = get_attr(si, oid_rnonce);
    sn = get_attr(rsi, oid_snonce);
    t1 = get_attr(si, oid_tid);
    t2 = get_attr(rsi, oid_tid);

    if (st && st->type == V_ASN1_PRINTABLESTRING) {
        snprintf(sbuf, sizeof(sbuf), "%.*s", st->value.asn1_string->length,
                 st->value.asn1_string->data);
    }
    if (fi && fi->type == V_ASN1_PRINTABLESTRING) {
        snprintf(fbuf, sizeof(fbuf), "%.*s", fi->value.asn1_string->length,
                 fi->value.asn1_string->data);
    }

    nonce_ok = rn && sn && ASN1_STRING_cmp(rn->value.asn1_string,
                                           sn->value.asn1_string) == 0;
    tid_ok = t1 && t2 && ASN1_STRING_cmp(t1->value.asn1_string,
                                         t2->value.asn1_string) == 0;

    printf("status=%s failinfo=%s nonce=%s sig=%s tid=%s", sbuf, fbuf,
           nonce_ok ? "ok" : "bad", sig_ok ? "ok" : "bad",
           tid_ok ? "ok" : "bad");

    status = atoi(sbuf);

    if (st != NULL && status == 0 && outf != NULL) {
        ASN1_OCTET_STRING  *c = rep->d.sign->contents->d.data;
        BIO                *out = BIO_new(BIO_s_mem()), *f;
        char               *mem;
        long                mlen;
        CMS_ContentInfo    *cms;
        PKCS7_RECIP_INFO   *ri;

        p = c->data;
        env = d2i_PKCS7(NULL, &p, c->length);
        p = c->data;
        cms = d2i_CMS_ContentInfo(NULL, &p, c->length);
        key = load_key(keyf);
        signer = certf ? load_cert(certf) : NULL;
        /* CMS, not PKCS7_decrypt(): that one reads every key transport
         * as PKCS#1 v1.5 */
        if (env == NULL || cms == NULL || !PKCS7_type_is_enveloped(env)
            || !CMS_decrypt(cms, key, signer, NULL, out, CMS_BINARY))
        {
            printf(" decrypt=bad\n");
            return 1;
        }
        {
            int  nid = OBJ_obj2nid(env->d.enveloped->enc_data->algorithm
                                   ->algorithm);
            printf(" cipher=%s", OBJ_nid2sn(nid));
            ri = sk_PKCS7_RECIP_INFO_value(env->d.enveloped->recipientinfo,
                                           0);
            nid = ri != NULL ? OBJ_obj2nid(ri->key_enc_algor->algorithm)
                             : NID_undef;
            printf(" kt=%s", OBJ_nid2sn(nid));
        }
        CMS_ContentInfo_free(cms);
        mlen = BIO_get_mem_data(out, &mem);
        p = (unsigned char *) mem;
        inner = d2i_PKCS7(NULL, &p, mlen);
        if (inner == NULL || !PKCS7_type_is_signed(inner)) {
            printf(" inner=bad\n");
            return 1;
        }
        f = BIO_new_file(outf, "w");
        if (sk_X509_num(inner->d.sign->cert) > 0) {
            PEM_write_bio_X509(f, sk_X509_value(inner->d.sign->cert, 0));
            printf(" certs=%d", sk_X509_num(inner->d.sign->cert));
        }
        if (sk_X509_CRL_num(inner->d.sign->crl) > 0) {
            PEM_write_bio_X509_CRL(f, sk_X509_CRL_value(inner->d.sign->crl,
                                                        0));
            printf(" crls=%d", sk_X509_CRL_num(inner->d.sign->crl));
        }
        BIO_free(f);
        BIO_free(out);
    }

    printf("\n");
    return 0;
}


/* ---- bench ---------------------------------------------------------------- */

typedef struct {
    unsigned char  *der;
    int             len;
} msg_t;

static msg_t           *bench_msgs;
static int              bench_n, bench_next, bench_ok;
/* why the others were not a SUCCESS: HTTP status (not 200), failInfo of a
 * FAILURE (0..4), PENDING, no CertRep, connection lost twice */
static int              bench_http[600], bench_fi[5], bench_pending,
                        bench_norep, bench_conn;
static double           bench_maxlat, bench_stop, *bench_lat;
static int              bench_nlat;
static pthread_mutex_t  bench_mu = PTHREAD_MUTEX_INITIALIZER;
static struct sockaddr_in  bench_addr;
static char             bench_host[128], bench_path[256];


static int
bench_connect(void)
{
    int  fd = socket(AF_INET, SOCK_STREAM, 0), one = 1;

    if (fd < 0 || connect(fd, (struct sockaddr *) &bench_addr,
                          sizeof(bench_addr)) != 0)
    {
        if (fd >= 0) {
            close(fd);
        }
        return -1;
    }
    setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
    return fd;
}


/* The one-character PrintableString value of the SCEP attribute
 * 2.16.840.1.113733.1.9.<last> (3 pkiStatus, 4 failInfo) in a DER
 * CertRep: SEQUENCE { OID, SET { PrintableString } }.  -1 if absent. */
static int
bench_attr(const unsigned char *d, int len, int last)
{
    static const unsigned char  oid[] = {
        0x06, 0x0a, 0x60, 0x86, 0x48, 0x01, 0x86, 0xf8, 0x45, 0x01, 0x09
    };
    const unsigned char        *p, *end;

    if (len <= 0) {
        return -1;
    }

    end = d + len;

    for (p = d; p + sizeof(oid) + 6 <= end; p++) {
        p = memmem(p, end - p, oid, sizeof(oid));
        if (p == NULL || p + sizeof(oid) + 6 > end) {
            return -1;
        }
        if (p[sizeof(oid)] == last && p[sizeof(oid) + 1] == 0x31
            && p[sizeof(oid) + 2] == 0x03 && p[sizeof(oid) + 3] == 0x13
            && p[sizeof(oid) + 4] == 0x01)
        {
            return p[sizeof(oid) + 5];
        }
    }

    return -1;
}


/* One request on fd; returns 1 on a SUCCESS CertRep, 0 otherwise (the
 * reason counted), -1 on a connection failure. */
static int
bench_one(int fd, msg_t *m)
{
    char            head[512], buf[65536];
    int             hl, got, n, clen, need;
    char           *e, *cl, *body;
    int             ok, st0;

    hl = snprintf(head, sizeof(head),
                  "POST %s?operation=PKIOperation HTTP/1.1\r\nHost: %s\r\n"
                  "Content-Type: application/x-pki-message\r\n"
                  "Content-Length: %d\r\n\r\n", bench_path, bench_host,
                  m->len);
    if (write(fd, head, hl) != hl || write(fd, m->der, m->len) != m->len) {
        return -1;
    }

    got = 0;
    for (;;) {
        n = read(fd, buf + got, sizeof(buf) - 1 - got);
        if (n <= 0) {
            return -1;
        }
        got += n;
        buf[got] = '\0';
        e = strstr(buf, "\r\n\r\n");
        if (e != NULL) {
            break;
        }
    }

    cl = strcasestr(buf, "\r\nContent-Length:");
    body = e + 4;

    if (cl == NULL && strcasestr(buf, "\r\nTransfer-Encoding: chunked")) {
        /* Go's net/http (scepserver) sends larger bodies chunked:
         * de-chunk in place */
        char  *r = body, *w = body, *nl;
        long   sz;

        for (;;) {
            while ((nl = strstr(r, "\r\n")) == NULL) {
                n = read(fd, buf + got, sizeof(buf) - 1 - got);
                if (n <= 0) {
                    return -1;
                }
                got += n;
                buf[got] = '\0';
            }
            sz = strtol(r, NULL, 16);
            while (buf + got < nl + 2 + sz + 2) {
                n = read(fd, buf + got, sizeof(buf) - 1 - got);
                if (n <= 0) {
                    return -1;
                }
                got += n;
                buf[got] = '\0';
            }
            if (sz == 0) {
                break;
            }
            memmove(w, nl + 2, sz);
            w += sz;
            r = nl + 2 + sz + 2;
            /* keep the unread rest right after what was written */
            memmove(w, r, buf + got - r);
            got -= (int) (r - w);
            buf[got] = '\0';
            r = w;
        }
        clen = (int) (w - body);

    } else {
        clen = cl ? atoi(cl + 17) : 0;
        need = (int) (body - buf) + clen;
        if (need >= (int) sizeof(buf)) {
            return -1;
        }
        while (got < need) {
            n = read(fd, buf + got, need - got);
            if (n <= 0) {
                return -1;
            }
            got += n;
        }
    }

    if (strncmp(buf, "HTTP/1.1 200", 12) != 0) {
        int  code = atoi(buf + 9);

        pthread_mutex_lock(&bench_mu);
        bench_http[code > 0 && code < 600 ? code : 0]++;
        pthread_mutex_unlock(&bench_mu);
        return 0;
    }

    /* pkiStatus and failInfo straight from the bytes: d2i_PKCS7() would
     * decode the certificates in the CertRep (OpenSSL 3.0's decoder, about
     * 0.1 ms each) on the cores the servers share during the timing */
    st0 = bench_attr((unsigned char *) body, clen, 3);
    ok = st0 == '0';

    if (!ok) {
        int  f = bench_attr((unsigned char *) body, clen, 4);

        pthread_mutex_lock(&bench_mu);
        if (st0 < 0) {
            bench_norep++;
        } else if (f >= '0' && f <= '4') {
            bench_fi[f - '0']++;
        } else if (st0 == '3') {
            bench_pending++;
        } else {
            bench_norep++;
        }
        pthread_mutex_unlock(&bench_mu);
    }

    return ok;
}


static double now_s(void);


static void *
bench_thread(void *arg)
{
    int     fd = -1, i, r, ok = 0;
    double  t0, t1;

    (void) arg;

    for (;;) {
        /* a duration: no new request once it is over (the pool of
         * pre-built messages is the other bound) */
        if (bench_stop > 0 && now_s() >= bench_stop) {
            break;
        }
        pthread_mutex_lock(&bench_mu);
        i = bench_next < bench_n ? bench_next++ : -1;
        pthread_mutex_unlock(&bench_mu);
        if (i < 0) {
            break;
        }
        if (fd < 0) {
            fd = bench_connect();
        }
        t0 = now_s();
        r = fd >= 0 ? bench_one(fd, &bench_msgs[i]) : -1;
        if (r < 0) {
            /* the server closed the connection: once more on a new one */
            if (fd >= 0) {
                close(fd);
            }
            fd = bench_connect();
            r = fd >= 0 ? bench_one(fd, &bench_msgs[i]) : -1;
        }
        t1 = now_s() - t0;
        if (r == 1) {
            ok++;
        }
        pthread_mutex_lock(&bench_mu);
        if (r < 0) {
            bench_conn++;
        }
        if (t1 > bench_maxlat) {
            bench_maxlat = t1;
        }
        bench_lat[bench_nlat++] = t1;
        pthread_mutex_unlock(&bench_mu);
    }

    if (fd >= 0) {
        close(fd);
    }

    pthread_mutex_lock(&bench_mu);
    bench_ok += ok;
    pthread_mutex_unlock(&bench_mu);
    return NULL;
}


static double
now_s(void)
{
    struct timeval  tv;

    gettimeofday(&tv, NULL);
    return tv.tv_sec + tv.tv_usec / 1e6;
}


/* pre-building the messages on every core (before the clock) */
typedef struct {
    int          from, to, nkeys;
    const char  *challenge, *tag;
    X509        *rcpt;
    EVP_PKEY   **keys;
    X509       **selfs;
} build_job_t;


static void *
bench_build(void *arg)
{
    int           i;
    char          cn[64], tid[64];
    req_opts_t    o;
    build_job_t  *j = arg;

    for (i = j->from; i < j->to; i++) {
        memset(&o, 0, sizeof(o));
        snprintf(cn, sizeof(cn), "bench-%s-%d-%d", j->tag, (int) getpid(),
                 i);
        o.type = 19;
        o.csr = make_csr(j->keys[i % j->nkeys], cn, j->challenge);
        o.signer = j->selfs[i % j->nkeys];
        o.signkey = j->keys[i % j->nkeys];
        o.rcpt = j->rcpt;
        o.cipher = EVP_aes_128_cbc();
        o.md = EVP_sha256();
        tid_of(j->keys[i % j->nkeys], tid);
        o.tid = tid;
        bench_msgs[i].len = build_req(&o, &bench_msgs[i].der);
        X509_REQ_free(o.csr);
    }

    return NULL;
}


static int
cmp_double(const void *a, const void *b)
{
    double  x = *(const double *) a, y = *(const double *) b;

    return x < y ? -1 : x > y;
}


static double
cpu_s(void)
{
    struct rusage  ru;

    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec / 1e6
           + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec / 1e6;
}


/*
 * n messages are pre-built (the pool); with secs > 0 the posting stops
 * once secs have passed (or the pool is used up: "exhausted=1", the
 * timing is then shorter than asked).  Besides the rate, the client's own
 * CPU time while the clock runs is printed (client_cpu_ms, and per
 * request): the client must not be what limits the rate.
 */
static int
cmd_bench(const char *url, const char *rcptf, int n, int conc,
    const char *challenge, int nkeys, const char *tag, double secs)
{
    int           i, port, nb, done;
    double        t0, t1, c0, c1;
    X509         *rcpt;
    EVP_PKEY    **keys;
    X509        **selfs;
    pthread_t    *th;
    build_job_t  *jobs;
    const char   *h, *c, *s;

    /* http://HOST:PORT/PATH */
    if (strncmp(url, "http://", 7) != 0) {
        die("url");
    }
    h = url + 7;
    c = strchr(h, ':');
    s = strchr(h, '/');
    if (c == NULL || s == NULL || c > s) {
        die("url needs host:port/path");
    }
    if (n < 1 || conc < 1 || nkeys < 1) {
        die("--n, --conc and --keys must be positive");
    }
    snprintf(bench_host, sizeof(bench_host), "%.*s", (int) (s - h), h);
    snprintf(bench_path, sizeof(bench_path), "%s", s);
    port = atoi(c + 1);
    memset(&bench_addr, 0, sizeof(bench_addr));
    bench_addr.sin_family = AF_INET;
    bench_addr.sin_port = htons(port);
    inet_pton(AF_INET, "127.0.0.1", &bench_addr.sin_addr);

    rcpt = load_cert(rcptf);
    keys = calloc(nkeys, sizeof(EVP_PKEY *));
    selfs = calloc(nkeys, sizeof(X509 *));
    for (i = 0; i < nkeys; i++) {
        keys[i] = EVP_RSA_gen(2048);
        selfs[i] = make_self(keys[i], "scepmsg bench signer");
    }

    bench_msgs = calloc(n, sizeof(msg_t));
    bench_lat = calloc(n, sizeof(double));
    if (bench_msgs == NULL || bench_lat == NULL) {
        die("out of memory");
    }
    bench_n = n;

    nb = (int) sysconf(_SC_NPROCESSORS_ONLN);
    nb = nb < 1 ? 1 : nb > 16 ? 16 : nb;
    th = calloc(nb > conc ? nb : conc, sizeof(pthread_t));
    jobs = calloc(nb, sizeof(build_job_t));
    for (i = 0; i < nb; i++) {
        jobs[i].from = (int) ((long) n * i / nb);
        jobs[i].to = (int) ((long) n * (i + 1) / nb);
        jobs[i].nkeys = nkeys;
        jobs[i].challenge = challenge;
        jobs[i].tag = tag;
        jobs[i].rcpt = rcpt;
        jobs[i].keys = keys;
        jobs[i].selfs = selfs;
        pthread_create(&th[i], NULL, bench_build, &jobs[i]);
    }
    for (i = 0; i < nb; i++) {
        pthread_join(th[i], NULL);
    }

    c0 = cpu_s();
    t0 = now_s();
    bench_stop = secs > 0 ? t0 + secs : 0;
    for (i = 0; i < conc; i++) {
        pthread_create(&th[i], NULL, bench_thread, NULL);
    }
    for (i = 0; i < conc; i++) {
        pthread_join(th[i], NULL);
    }
    t1 = now_s();
    c1 = cpu_s();

    done = bench_nlat;
    qsort(bench_lat, done, sizeof(double), cmp_double);

    printf("n=%d ok=%d secs=%.3f rate=%.1f maxlat=%.2fs", done, bench_ok,
           t1 - t0, bench_ok / (t1 - t0), bench_maxlat);
    if (done > 0) {
        printf(" p50=%.1fms p99=%.1fms", bench_lat[done / 2] * 1e3,
               bench_lat[(int) ((done - 1) * 0.99)] * 1e3);
    }
    printf(" client_cpu_ms=%.0f client_cpu_per_req_ms=%.3f pool=%d"
           " exhausted=%d", (c1 - c0) * 1e3,
           done > 0 ? (c1 - c0) * 1e3 / done : 0.0, n,
           secs > 0 && done >= n);
    for (i = 0; i < 600; i++) {
        if (bench_http[i]) {
            printf(" http%d=%d", i, bench_http[i]);
        }
    }
    for (i = 0; i < 5; i++) {
        if (bench_fi[i]) {
            printf(" failinfo%d=%d", i, bench_fi[i]);
        }
    }
    if (bench_pending) {
        printf(" pending=%d", bench_pending);
    }
    if (bench_norep) {
        printf(" norep=%d", bench_norep);
    }
    if (bench_conn) {
        printf(" connlost=%d", bench_conn);
    }
    printf("\n");
    return bench_ok == done ? 0 : 1;
}


/* ---- main ------------------------------------------------------------------- */

int
main(int argc, char **argv)
{
    int            i, n, b64out = 0, conc = 4, count = 100, nkeys = 4;
    double         secs = 0;
    long           len;
    char           tid[64];
    const char    *cmd, *rcptf = NULL, *keyf = NULL, *outf = NULL,
                  *csrf = NULL, *cn = "scepmsg", *challenge = NULL,
                  *certf = NULL, *signkeyf = NULL, *innerf = NULL,
                  *cipher = "aes128", *digest = "sha256", *inf = NULL,
                  *reqf = NULL, *url = NULL, *issuerf = NULL,
                  *getcert = NULL, *tag = "x", *envf = NULL;
    int            certpoll = 0;
    unsigned char *der;
    req_opts_t     o;
    EVP_PKEY      *key;

    if (argc < 2) {
        die("usage: scepmsg req|rep|bench ...");
    }

    oids();
    srand((unsigned) time(NULL) ^ (unsigned) getpid());
    memset(&o, 0, sizeof(o));
    o.type = 19;
    cmd = argv[1];

    for (i = 2; i < argc; i++) {
        const char  *a = argv[i];
        const char  *v = i + 1 < argc ? argv[i + 1] : NULL;

#define ARG(name, var)  if (strcmp(a, name) == 0 && v) { var = v; i++; continue; }
        ARG("--rcpt", rcptf)
        ARG("--key", keyf)
        ARG("--out", outf)
        ARG("--csr", csrf)
        ARG("--cn", cn)
        ARG("--challenge", challenge)
        ARG("--cert", certf)
        ARG("--signkey", signkeyf)
        ARG("--inner", innerf)
        ARG("--cipher", cipher)
        ARG("--digest", digest)
        ARG("--in", inf)
        ARG("--req", reqf)
        ARG("--url", url)
        ARG("--issuer", issuerf)
        ARG("--getcert", getcert)
        ARG("--msgtype-str", o.msgtype_str)
        ARG("--digest-oid", o.digest_oid)
        ARG("--corrupt", o.corrupt)
        ARG("--envelope", envf)
        ARG("--tag", tag)
        if (strcmp(a, "--tid") == 0 && v) { o.tid = v; i++; continue; }
        if (strcmp(a, "--type") == 0 && v) { o.type = atoi(v); i++; continue; }
        if (strcmp(a, "--extra-certs") == 0 && v) {
            o.extra = atoi(v); i++; continue;
        }
        if (strcmp(a, "--n") == 0 && v) { count = atoi(v); i++; continue; }
        if (strcmp(a, "--conc") == 0 && v) { conc = atoi(v); i++; continue; }
        if (strcmp(a, "--keys") == 0 && v) { nkeys = atoi(v); i++; continue; }
        if (strcmp(a, "--secs") == 0 && v) { secs = atof(v); i++; continue; }
        if (strcmp(a, "--signing-time") == 0 && v) {
            o.have_time = 1; o.time_off = atol(v); i++; continue;
        }
        if (strcmp(a, "--no-tid") == 0) { o.no_tid = 1; continue; }
        if (strcmp(a, "--no-nonce") == 0) { o.no_nonce = 1; continue; }
        if (strcmp(a, "--no-msgtype") == 0) { o.no_msgtype = 1; continue; }
        if (strcmp(a, "--no-signing-time") == 0) { o.no_time = 1; continue; }
        if (strcmp(a, "--certpoll") == 0) { certpoll = 1; continue; }
        if (strcmp(a, "--b64") == 0) { b64out = 1; continue; }
        fprintf(stderr, "scepmsg: unknown argument %s\n", a);
        return 2;
    }

    if (strcmp(cmd, "rep") == 0) {
        if (!inf || !rcptf || !keyf || !reqf) {
            die("rep needs --in --rcpt --key --req");
        }
        return cmd_rep(inf, rcptf, keyf, reqf, certf, outf);
    }

    if (strcmp(cmd, "bench") == 0) {
        if (!url || !rcptf) {
            die("bench needs --url --rcpt");
        }
        return cmd_bench(url, rcptf, count, conc, challenge, nkeys, tag,
                         secs);
    }

    if (strcmp(cmd, "req") != 0 || !rcptf || !keyf || !outf) {
        die("req needs --rcpt --key --out");
    }

    key = load_key(keyf);
    o.rcpt = load_cert(rcptf);
    o.signkey = signkeyf ? load_key(signkeyf) : key;
    o.signer = certf ? load_cert(certf) : make_self(o.signkey, cn);

    if (csrf) {
        const unsigned char  *p;

        der = read_file(csrf, &len);
        p = der;
        o.csr = d2i_X509_REQ(NULL, &p, len);
        if (o.csr == NULL) {
            die("csr");
        }
    } else {
        o.csr = make_csr(key, cn, challenge);
    }

    if (envf) {
        o.envelope = read_file(envf, &o.envelope_len);
    }

    if (innerf) {
        o.inner = read_file(innerf, &o.inner_len);
    } else if (certpoll || getcert) {
        X509                     *iss;
        unsigned char            *p = NULL;

        if (!issuerf) {
            die("--certpoll/--getcert need --issuer");
        }
        iss = load_cert(issuerf);
        if (certpoll) {
            /* SEQUENCE { issuer Name, subject Name } */
            unsigned char  *a = NULL, *b = NULL, *q;
            int             la, lb, body, hl;

            la = i2d_X509_NAME(X509_get_subject_name(iss), &a);
            lb = i2d_X509_NAME(X509_REQ_get_subject_name(o.csr), &b);
            body = la + lb;
            hl = ASN1_object_size(1, body, V_ASN1_SEQUENCE);
            p = OPENSSL_malloc(hl);
            q = p;
            ASN1_put_object(&q, 1, body, V_ASN1_SEQUENCE,
                            V_ASN1_UNIVERSAL);
            memcpy(q, a, la);
            memcpy(q + la, b, lb);
            o.inner = p;
            o.inner_len = hl;
        } else {
            PKCS7_ISSUER_AND_SERIAL  *ias = PKCS7_ISSUER_AND_SERIAL_new();
            BIGNUM                   *bn = NULL;

            X509_NAME_set(&ias->issuer, X509_get_subject_name(iss));
            BN_hex2bn(&bn, getcert);
            ASN1_INTEGER_free(ias->serial);
            ias->serial = BN_to_ASN1_INTEGER(bn, NULL);
            o.inner_len = i2d_PKCS7_ISSUER_AND_SERIAL(ias, &p);
            o.inner = p;
        }
    }

    if (strcmp(cipher, "aes128") == 0) {
        o.cipher = EVP_aes_128_cbc();
    } else if (strcmp(cipher, "aes256") == 0) {
        o.cipher = EVP_aes_256_cbc();
    } else if (strcmp(cipher, "des3") == 0) {
        o.cipher = EVP_des_ede3_cbc();
    } else if (strcmp(cipher, "des") == 0) {
        o.des = 1;
    } else {
        die("cipher");
    }

    o.md = EVP_get_digestbyname(digest);
    if (o.md == NULL) {
        die("digest");
    }

    if (o.tid == NULL) {
        tid_of(X509_REQ_get0_pubkey(o.csr), tid);
        o.tid = tid;
    }

    n = build_req(&o, &der);
    if (n <= 0) {
        die("build");
    }

    if (b64out) {
        char  *t = malloc(n * 2 + 4);

        b64(der, n, t);
        write_file(outf, (unsigned char *) t, strlen(t));
    } else {
        write_file(outf, der, n);
    }

    return 0;
}
