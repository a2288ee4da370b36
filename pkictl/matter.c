/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * pkictl matter: Matter certificate tools over libpkicore (pki.h only).
 *
 *   pkictl matter to-tlv IN.der OUT.chip        (alias der2tlv)
 *   pkictl matter to-der IN.chip OUT.der        (alias tlv2der)
 *   pkictl matter verify-attestation --dac F --pai F --paa F
 *                [--cd F --cd-signer F [--pid HEX]] [--at TIME]
 *   pkictl matter verify-operational --noc F [--icac F] --rcac F
 *                [--at TIME]
 *
 * --at YYYYMMDDHHMMSSZ: the time the certificates are judged at (the
 * DAC's, or every operational certificate's, validity), now without it.
 *   pkictl matter hierarchy attestation|operational --dir DIR
 *                --module PATH --token LABEL --pin-file F [--keygen on|off]
 *                [--vid FFF1] [--pid 8000] [--cn TEXT]
 *                [--fabric-id HEX16] [--rcac-id HEX16] [--icac-id HEX16]
 *
 * The fabric-id goes into the RCAC only: an ICAC without one keeps a NOC
 * with three CATs under the 600-byte DER limit.
 *
 * "hierarchy" generates two EC P-256 key pairs inside the PKCS#11 token
 * (C_GenerateKeyPair; labels matter-paa + matter-pai, or matter-rcac +
 * matter-icac; sensitive, not extractable) and writes DIR/paa.pem
 * + DIR/pai.pem or DIR/rcac.pem + DIR/icac.pem.  A token that already
 * holds an object with one of the labels (or ids) is refused before any key
 * is made; --keygen off signs with the keys there.  Both output files are
 * created before any key is made or anything signed.  Exit status 0 on
 * success; otherwise 1 with the failed rule on stderr.
 */

#include <dlfcn.h>
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <sys/types.h>

#include <p11-kit/pkcs11.h>

#include <openssl/crypto.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pki.h"
#include "pkictl.h"


#define MATTER_MAX_FILE  (64 * 1024)


typedef struct {
    const char  *dac, *pai, *paa, *noc, *icac, *rcac, *cd, *cd_signer;
    const char  *dir, *module, *token, *pin_file, *keygen, *cn;
    const char  *vid, *pid, *fabric_id, *rcac_id, *icac_id, *at;
} matter_opts_t;


static int
mfail(const char *what, const char *detail)
{
    fprintf(stderr, "pkictl matter: %s%s%s\n", what, detail ? ": " : "",
            detail ? detail : "");
    return 1;
}


static unsigned char *
mread(const char *path, size_t *len)
{
    FILE           *f;
    unsigned char  *buf;
    size_t          n;

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "pkictl matter: cannot open \"%s\": %s\n", path,
                strerror(errno));
        return NULL;
    }

    buf = malloc(MATTER_MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }

    n = fread(buf, 1, MATTER_MAX_FILE + 1, f);
    if (ferror(f) || n > MATTER_MAX_FILE) {
        fclose(f);
        free(buf);
        fprintf(stderr, "pkictl matter: cannot read \"%s\"\n", path);
        return NULL;
    }

    fclose(f);
    *len = n;

    return buf;
}


/* PEM (text may precede it, as `openssl pkcs7 -print_certs` writes) or
 * DER: DER starts with a SEQUENCE tag. */
static int
is_pem(const unsigned char *buf, size_t len)
{
    return len > 10 && buf[0] != 0x30
           && memmem(buf, len, "-----BEGIN", 10) != NULL;
}


/* PEM or DER certificate. */
static X509 *
mcert(const char *path)
{
    X509                 *x;
    BIO                  *bio;
    size_t                len;
    unsigned char        *buf;
    const unsigned char  *p;

    buf = mread(path, &len);
    if (buf == NULL) {
        return NULL;
    }

    if (is_pem(buf, len)) {
        bio = BIO_new_mem_buf(buf, (int) len);
        x = bio ? PEM_read_bio_X509(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);

    } else {
        p = buf;
        x = d2i_X509(NULL, &p, (long) len);
        if (x && (size_t) (p - buf) != len) {
            X509_free(x);
            x = NULL;
        }
    }

    free(buf);

    if (x == NULL) {
        fprintf(stderr, "pkictl matter: \"%s\" holds no certificate\n", path);
    }

    return x;
}


static int
cmd_convert(int to_tlv, int argc, char **argv)
{
    int             rc;
    size_t          len, olen;
    const char     *inputs[2];
    unsigned char  *in, *out;
    pki_result_t    res;

    if (argc != 2) {
        return mfail("usage", to_tlv ? "to-tlv IN.der OUT.chip"
                                     : "to-der IN.chip OUT.der");
    }

    in = mread(argv[0], &len);
    if (in == NULL) {
        return 1;
    }

    if (to_tlv && is_pem(in, len)) {
        X509  *x = mcert(argv[0]);
        int    n;

        free(in);
        in = NULL;
        if (x == NULL) {
            return 1;
        }
        n = i2d_X509(x, &in);
        X509_free(x);
        if (n <= 0) {
            return mfail("cannot encode the certificate", NULL);
        }
        len = (size_t) n;
    }

    pki_result_init(&res);
    rc = to_tlv ? pki_matter_der_to_tlv(in, len, &out, &olen, &res)
                : pki_matter_tlv_to_der(in, len, &out, &olen, &res);
    if (to_tlv) {
        OPENSSL_free(in);
    } else {
        free(in);
    }

    if (rc != PKI_OK) {
        return mfail(pki_status_name(res.status), res.detail);
    }

    inputs[0] = argv[0];
    inputs[1] = NULL;

    rc = pkictl_write_file(argv[1], out, olen, 0644, inputs) ? 0 : 1;
    free(out);

    return rc;
}


/* --at: a GeneralizedTime in UTC (YYYYMMDDHHMMSSZ), as certificates
 * write theirs; *t 0 without the option (the verifiers then take the
 * clock).  0 on a bad value. */
static int
matter_at(const matter_opts_t *o, time_t *t)
{
    int                    ok;
    struct tm              tm;
    ASN1_GENERALIZEDTIME  *g;

    *t = 0;

    if (o->at == NULL) {
        return 1;
    }

    memset(&tm, 0, sizeof(tm));
    g = ASN1_GENERALIZEDTIME_new();
    ok = g != NULL && strlen(o->at) == 15 && o->at[14] == 'Z'
         && strspn(o->at, "0123456789") == 14
         && ASN1_GENERALIZEDTIME_set_string(g, o->at)
         && ASN1_TIME_to_tm(g, &tm);
    ASN1_GENERALIZEDTIME_free(g);

    if (!ok) {
        mfail("bad --at", "YYYYMMDDHHMMSSZ (UTC)");
        return 0;
    }

    *t = timegm(&tm);
    if (*t <= 0) {
        mfail("bad --at", "before 1970");
        return 0;
    }

    return 1;
}


static int
cmd_verify_attestation(const matter_opts_t *o)
{
    int            rc, pid;
    X509          *dac, *pai, *paa, *signer;
    time_t         at;
    size_t         len;
    unsigned char *cd;
    pki_result_t   res;

    if (o->dac == NULL || o->pai == NULL || o->paa == NULL) {
        return mfail("usage", "verify-attestation --dac F --pai F --paa F "
                     "[--cd F --cd-signer F [--pid PID]] [--at TIME]");
    }

    if (!matter_at(o, &at)) {
        return 1;
    }

    /* the declaration's options go together: one alone was dropped and
     * "OK" printed, or failed without a word */
    if ((o->cd == NULL) != (o->cd_signer == NULL)
        || (o->pid != NULL && o->cd == NULL))
    {
        return mfail("usage", "--cd and --cd-signer go together, and --pid "
                     "with them");
    }
    if (o->pid != NULL
        && (strlen(o->pid) < 1 || strlen(o->pid) > 4
            || strspn(o->pid, "0123456789abcdefABCDEF") != strlen(o->pid)))
    {
        return mfail("bad --pid", "1 to 4 hex digits");
    }

    dac = mcert(o->dac);
    pai = dac ? mcert(o->pai) : NULL;
    paa = pai ? mcert(o->paa) : NULL;
    rc = 1;

    if (paa) {
        pki_result_init(&res);
        if (pki_matter_verify_attestation(dac, pai, paa, at, &res) != PKI_OK) {
            mfail("attestation chain rejected", res.detail);

        } else if (o->cd) {
            signer = mcert(o->cd_signer);
            cd = signer ? mread(o->cd, &len) : NULL;
            pid = o->pid ? (int) strtol(o->pid, NULL, 16) : -1;
            if (cd && pki_matter_verify_cd(cd, len, signer, dac, pai, paa,
                                           -1, pid, &res) != PKI_OK)
            {
                mfail("certification declaration rejected", res.detail);
            } else if (cd) {
                rc = 0;
            }
            free(cd);
            X509_free(signer);

        } else {
            rc = 0;
        }
    }

    if (rc == 0) {
        printf("OK: DAC, PAI and PAA pass the Matter attestation checks\n");
    }

    X509_free(dac);
    X509_free(pai);
    X509_free(paa);

    return rc;
}


static int
cmd_verify_operational(const matter_opts_t *o)
{
    int            rc;
    X509          *noc, *icac, *rcac;
    time_t         at;
    pki_result_t   res;

    if (o->noc == NULL || o->rcac == NULL) {
        return mfail("usage", "verify-operational --noc F [--icac F] "
                     "--rcac F [--at TIME]");
    }

    if (!matter_at(o, &at)) {
        return 1;
    }

    noc = mcert(o->noc);
    icac = o->icac ? mcert(o->icac) : NULL;
    rcac = mcert(o->rcac);
    rc = 1;

    if (noc && rcac && (o->icac == NULL || icac)) {
        pki_result_init(&res);
        if (pki_matter_verify_operational(noc, icac, rcac, at, &res) != PKI_OK) {
            mfail("operational chain rejected", res.detail);
        } else {
            printf("OK: the operational chain passes the Matter checks\n");
            rc = 0;
        }
    }

    X509_free(noc);
    X509_free(icac);
    X509_free(rcac);

    return rc;
}


/* ---- hierarchy ---------------------------------------------------------------- */

/* 1 if the token holds an object with the attribute a, -1 on an error. */
static int
token_has(CK_FUNCTION_LIST_PTR fl, CK_SESSION_HANDLE s, CK_ATTRIBUTE *a)
{
    CK_RV             rv;
    CK_ULONG          count;
    CK_OBJECT_HANDLE  obj;

    if (fl->C_FindObjectsInit(s, a, 1) != CKR_OK) {
        return -1;
    }

    count = 0;
    rv = fl->C_FindObjects(s, &obj, 1, &count);
    fl->C_FindObjectsFinal(s);

    return rv != CKR_OK ? -1 : count > 0;
}


/* Two EC P-256 key pairs generated inside the token (C_GenerateKeyPair):
 * private, sensitive, not extractable.  The PIN comes from the PIN file,
 * read by the core as the vault reads it afterwards (pki_pin_read: no
 * stdio buffer, the same rules, wiped by pki_pin_free on every path); a
 * PIN file the vault would refuse is refused before any C_Login.
 * An object that already has one of the labels or ids is refused before
 * any key is made: a second key of a label makes every reference to it
 * ambiguous ("--keygen off" signs with the keys already there). */
static int
keygen(const matter_opts_t *o, const char *const *labels,
    const unsigned char *ids)
{
    int                  ok, k, has;
    const char          *label;
    unsigned char        id;
    char                *pin;
    void                *h;
    size_t               n, llen, pinlen;
    pki_result_t         res;
    CK_RV                rv;
    CK_ULONG             nslots, i;
    CK_SLOT_ID          *slots, slot;
    CK_BBOOL             yes = CK_TRUE, no = CK_FALSE;
    CK_TOKEN_INFO        ti;
    CK_MECHANISM         mech = { CKM_EC_KEY_PAIR_GEN, NULL, 0 };
    CK_SESSION_HANDLE    s;
    CK_OBJECT_HANDLE     hpub, hpriv;
    CK_FUNCTION_LIST_PTR fl;
    CK_C_GetFunctionList gfl;
    unsigned char        curve[] = { 0x06, 0x08, 0x2a, 0x86, 0x48, 0xce,
                                     0x3d, 0x03, 0x01, 0x07 };

    CK_ATTRIBUTE  by_label = { CKA_LABEL, NULL, 0 };
    CK_ATTRIBUTE  by_id = { CKA_ID, &id, 1 };
    CK_ATTRIBUTE  pub[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_VERIFY, &yes, sizeof(yes) },
        { CKA_EC_PARAMS, curve, sizeof(curve) },
        { CKA_LABEL, NULL, 0 },
        { CKA_ID, &id, 1 },
    };
    CK_ATTRIBUTE  priv[] = {
        { CKA_TOKEN, &yes, sizeof(yes) },
        { CKA_PRIVATE, &yes, sizeof(yes) },
        { CKA_SENSITIVE, &yes, sizeof(yes) },
        { CKA_EXTRACTABLE, &no, sizeof(no) },
        { CKA_SIGN, &yes, sizeof(yes) },
        { CKA_LABEL, NULL, 0 },
        { CKA_ID, &id, 1 },
    };

    pki_result_init(&res);
    pin = pki_pin_read("pkictl", o->pin_file, &pinlen, &res);
    if (pin == NULL) {
        mfail("cannot open the token", res.detail);
        return 0;
    }

    ok = 0;
    slots = NULL;
    fl = NULL;

    h = dlopen(o->module, RTLD_NOW | RTLD_LOCAL);
    gfl = h ? (CK_C_GetFunctionList) dlsym(h, "C_GetFunctionList") : NULL;
    if (gfl == NULL || gfl(&fl) != CKR_OK) {
        mfail("cannot load the PKCS#11 module", o->module);
        goto done;
    }

    rv = fl->C_Initialize(NULL);
    if (rv != CKR_OK && rv != CKR_CRYPTOKI_ALREADY_INITIALIZED) {
        mfail("C_Initialize failed", NULL);
        fl = NULL;
        goto done;
    }

    if (fl->C_GetSlotList(CK_TRUE, NULL, &nslots) != CKR_OK || nslots == 0
        || (slots = calloc(nslots, sizeof(CK_SLOT_ID))) == NULL
        || fl->C_GetSlotList(CK_TRUE, slots, &nslots) != CKR_OK)
    {
        mfail("no PKCS#11 token", NULL);
        goto done;
    }

    llen = strlen(o->token);
    for (i = 0; i < nslots; i++) {
        if (fl->C_GetTokenInfo(slots[i], &ti) != CKR_OK || llen > 32) {
            continue;
        }
        n = 32;
        while (n > 0 && ti.label[n - 1] == ' ') {
            n--;
        }
        if (n == llen && memcmp(ti.label, o->token, llen) == 0) {
            break;
        }
    }
    if (i == nslots) {
        mfail("token not found", o->token);
        goto done;
    }
    slot = slots[i];

    if (fl->C_OpenSession(slot, CKF_SERIAL_SESSION | CKF_RW_SESSION, NULL,
                          NULL, &s) != CKR_OK)
    {
        mfail("C_OpenSession failed", NULL);
        goto done;
    }

    rv = fl->C_Login(s, CKU_USER, (CK_UTF8CHAR_PTR) pin, pinlen);
    if (rv != CKR_OK && rv != CKR_USER_ALREADY_LOGGED_IN) {
        mfail("C_Login failed", NULL);
        fl->C_CloseSession(s);
        goto done;
    }

    for (k = 0; k < 2; k++) {
        label = labels[k];
        id = ids[k];
        by_label.pValue = (void *) label;
        by_label.ulValueLen = strlen(label);

        has = token_has(fl, s, &by_label);
        if (has == 0) {
            has = token_has(fl, s, &by_id);
        }

        if (has < 0) {
            fprintf(stderr, "pkictl matter: cannot search token \"%s\" for "
                    "\"%s\"\n", o->token, label);
            goto close;
        }

        if (has) {
            fprintf(stderr, "pkictl matter: token \"%s\" already holds an "
                    "object labelled \"%s\" or with id %02x: use --keygen "
                    "off to sign with the keys there, or delete them "
                    "first\n", o->token, label, id);
            goto close;
        }
    }

    for (k = 0; k < 2; k++) {
        label = labels[k];
        id = ids[k];
        pub[3].pValue = priv[5].pValue = (void *) label;
        pub[3].ulValueLen = priv[5].ulValueLen = strlen(label);

        rv = fl->C_GenerateKeyPair(s, &mech, pub,
                                   sizeof(pub) / sizeof(pub[0]), priv,
                                   sizeof(priv) / sizeof(priv[0]), &hpub,
                                   &hpriv);
        if (rv != CKR_OK) {
            fprintf(stderr, "pkictl matter: C_GenerateKeyPair(%s) failed: "
                    "0x%lx\n", label, (unsigned long) rv);
            goto close;
        }
    }

    ok = 1;

close:

    fl->C_Logout(s);
    fl->C_CloseSession(s);

done:

    pki_pin_free(pin);
    free(slots);
    if (fl) {
        fl->C_Finalize(NULL);
    }
    if (h) {
        dlclose(h);
    }

    return ok;
}


static int
add_attr(X509_NAME *name, const char *oid, const char *value)
{
    int           ok;
    ASN1_OBJECT  *obj;

    obj = OBJ_txt2obj(oid, 1);
    ok = obj && X509_NAME_add_entry_by_OBJ(name, obj, MBSTRING_UTF8,
                                           (const unsigned char *) value, -1,
                                           -1, 0);
    ASN1_OBJECT_free(obj);

    return ok;
}


/* dir/file into path: 1, or 0 said. */
/* 1 when s is n uppercase hex digits, as the Matter profile writes VIDs,
 * PIDs (4) and Matter IDs (16). */
static int
upper_hex(const char *s, size_t n)
{
    size_t  i;

    if (strlen(s) != n) {
        return 0;
    }

    for (i = 0; i < n; i++) {
        if (!((s[i] >= '0' && s[i] <= '9') || (s[i] >= 'A' && s[i] <= 'F'))) {
            return 0;
        }
    }

    return 1;
}


/* The token label as a pkcs11: URI value (RFC 7512: every byte but the
 * unreserved ones percent-encoded): 0 when it does not fit. */
static int
uri_value(char *out, size_t size, const char *in)
{
    static const char  hex[] = "0123456789ABCDEF";
    size_t             n = 0;
    unsigned char      c;

    for (; *in != '\0'; in++) {
        c = (unsigned char) *in;
        if ((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z')
            || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_'
            || c == '~')
        {
            if (n + 1 >= size) {
                return 0;
            }
            out[n++] = (char) c;

        } else {
            if (n + 3 >= size) {
                return 0;
            }
            out[n++] = '%';
            out[n++] = hex[c >> 4];
            out[n++] = hex[c & 0x0f];
        }
    }

    out[n] = '\0';
    return 1;
}


static int
out_path(char *path, size_t size, const char *dir, const char *file)
{
    int  n;

    n = snprintf(path, size, "%s/%s", dir, file);
    if (n < 0 || (size_t) n >= size) {
        fprintf(stderr, "pkictl matter: path too long: \"%s\"\n", dir);
        return 0;
    }

    return 1;
}


/* A file of mkstemp() (template, 0600) holding the PEM that pem writes
 * into bio: 1, or 0 said (nothing left). */
static int
draft_file(char *path, int (*pem)(BIO *, void *), void *obj)
{
    int   fd, ok;
    BIO  *bio;

    fd = mkstemp(path);
    if (fd == -1) {
        fprintf(stderr, "pkictl matter: cannot create \"%s\": %s\n", path,
                strerror(errno));
        return 0;
    }

    bio = BIO_new_fd(fd, BIO_CLOSE);
    if (bio == NULL) {
        close(fd);
        ok = 0;

    } else {
        ok = pem(bio, obj) && BIO_flush(bio) == 1;
        BIO_free(bio);
    }

    if (!ok) {
        unlink(path);
        mfail("cannot write a draft file", path);
    }

    return ok;
}


static int
draft_key_pem(BIO *bio, void *pk)
{
    return PEM_write_bio_PrivateKey(bio, pk, NULL, NULL, 0, NULL, NULL);
}


static int
draft_cert_pem(BIO *bio, void *x)
{
    return PEM_write_bio_X509(bio, x);
}


/*
 * The hierarchy signed first with a throwaway P-256 key (in memory; its
 * file, and the draft root's, in the temporary directory only while the
 * core reads them): the Matter profile's checks of the names (a CN whose
 * "Mvid:" is not 4 uppercase hex digits, a DN over 200 bytes, ...) as the
 * core makes them when the token's keys sign, made before any key is made
 * on the token.  They were made after: a refusal left two key pairs there
 * that a second run refused to make again.  1, or 0 said.  (With --keygen
 * off, which makes no key, the signing checks them before anything is
 * written.)
 */
static int
hierarchy_draft(int att, const char *rlabel, X509_NAME *rname,
    X509_NAME *cname)
{
    int              ok;
    char             tmpl[PATH_MAX], kpath[PATH_MAX], cpath[PATH_MAX];
    const char      *tmp, *argv1[1];
    X509            *root, *ca;
    EVP_PKEY        *pk;
    pki_key_t       *key;
    pki_ca_t        *rca;
    pki_template_t  *rt, *ct;
    pki_request_t    req;
    pki_result_t     res;

    tmp = getenv("TMPDIR");
    if (tmp == NULL || *tmp == '\0') {
        tmp = "/tmp";
    }
    if (snprintf(tmpl, sizeof(tmpl), "%s/pkictl-draft-XXXXXX", tmp)
        >= (int) sizeof(tmpl))
    {
        mfail("TMPDIR too long", NULL);
        return 0;
    }

    ok = 0;
    root = ca = NULL;
    key = NULL;
    rca = NULL;
    cpath[0] = '\0';
    memset(&req, 0, sizeof(req));
    pki_result_init(&res);

    rt = pki_matter_template_new(att ? "matter-paa" : "matter-rcac", &res);
    ct = pki_matter_template_new(att ? "matter-pai" : "matter-icac", &res);
    pk = EVP_EC_gen("P-256");
    if (rt == NULL || ct == NULL || pk == NULL) {
        mfail("draft", res.detail[0] ? res.detail : "out of memory");
        goto done;
    }

    strcpy(kpath, tmpl);
    if (!draft_file(kpath, draft_key_pem, pk)) {
        goto done;
    }

    key = pki_key_new(kpath, NULL, &res);
    if (key == NULL || pki_key_open(key, &res) != PKI_OK) {
        unlink(kpath);
        mfail("draft key", res.detail);
        goto done;
    }
    unlink(kpath);

    if (pki_selfsign(key, rt, rname, &root, &res) != PKI_OK) {
        mfail(att ? "PAA refused" : "RCAC refused", res.detail);
        goto done;
    }

    strcpy(cpath, tmpl);
    if (!draft_file(cpath, draft_cert_pem, root)) {
        cpath[0] = '\0';
        goto done;
    }

    argv1[0] = cpath;
    rca = pki_ca_new(rlabel);
    if (rca == NULL || pki_ca_set(rca, "certificate", 1, argv1, &res) != PKI_OK
        || pki_ca_set_key(rca, key, &res) != PKI_OK
        || pki_ca_add_template(rca, ct, &res) != PKI_OK
        || pki_ca_finish(rca, &res) != PKI_OK)
    {
        mfail("root CA", res.detail);
        goto done;
    }

    req.subject = cname;
    req.pubkey = pk;
    if (pki_issue(rca, ct, NULL, &req, NULL, &ca, &res) != PKI_OK) {
        mfail(att ? "PAI refused" : "ICAC refused", res.detail);
        goto done;
    }

    ok = 1;

done:

    if (cpath[0] != '\0') {
        unlink(cpath);
    }
    X509_free(root);
    X509_free(ca);
    pki_ca_free(rca);
    pki_template_free(rt);
    pki_template_free(ct);
    if (key) {
        pki_key_close(key);
        pki_key_free(key);
    }
    EVP_PKEY_free(pk);

    return ok;
}


/*
 * The root and the CA under it: PAA and PAI, or RCAC and ICAC.  The names,
 * the templates and both output files are checked and opened before any
 * key is made or opened and anything signed: a --dir they cannot be
 * written to costs no key pair on the token and no certificate.  The
 * root's file is committed before the CA is issued, which reads it back
 * as its CA certificate.  A certificate signed and then not written is
 * said on stderr with its serial, its issuer and its PEM.
 */
static int
cmd_hierarchy(const char *kind, const matter_opts_t *o)
{
    int              att, rc, made;
    char             root_ref[512], ca_ref[512], rpath[4096], cpath[4096];
    char             tok[400];
    char             advice[9000];
    const char      *rlabel, *clabel, *argv1[1], *labels[2], *inputs[2];
    unsigned char    ids[2];
    X509            *root, *ca;
    X509_NAME       *rname, *cname;
    pki_key_t       *rkey, *ckey;
    pki_vault_t     *vault;
    pki_template_t  *rt, *ct;
    pki_ca_t        *rca;
    pki_request_t    req;
    pki_result_t     res;
    pkictl_out_t     rout, cout;

    att = strcmp(kind, "attestation") == 0;
    if ((!att && strcmp(kind, "operational") != 0) || o->dir == NULL
        || o->token == NULL || o->pin_file == NULL)
    {
        return mfail("usage", "hierarchy attestation|operational --dir DIR "
                     "--token LABEL --pin-file F [--module PATH]");
    }

    if (att && o->vid == NULL) {
        return mfail("usage", "an attestation hierarchy needs --vid");
    }

    /* the values the Matter profile checks when it signs, checked here
     * before any key is made: a refusal after the keygen left two key
     * pairs on the token that a second run refuses to make again */
    if (att && (!upper_hex(o->vid, 4) || (o->pid && !upper_hex(o->pid, 4))))
    {
        return mfail("bad --vid/--pid", "4 uppercase hex digits");
    }
    if ((o->rcac_id && !upper_hex(o->rcac_id, 16))
        || (o->icac_id && !upper_hex(o->icac_id, 16))
        || (o->fabric_id && !upper_hex(o->fabric_id, 16)))
    {
        return mfail("bad --rcac-id/--icac-id/--fabric-id",
                     "16 uppercase hex digits");
    }
    if (o->fabric_id && strcmp(o->fabric_id, "0000000000000000") == 0) {
        return mfail("bad --fabric-id", "it must not be 0");
    }
    if (!uri_value(tok, sizeof(tok), o->token)) {
        return mfail("bad --token", "too long");
    }

    rlabel = att ? "matter-paa" : "matter-rcac";
    clabel = att ? "matter-pai" : "matter-icac";

    rc = 1;
    root = ca = NULL;
    rname = X509_NAME_new();
    cname = X509_NAME_new();
    rkey = ckey = NULL;
    vault = NULL;
    rca = NULL;
    rout.fd = cout.fd = -1;
    memset(&req, 0, sizeof(req));
    pki_result_init(&res);

    /* the names and the templates: no token needed */

    rt = pki_matter_template_new(att ? "matter-paa" : "matter-rcac", &res);
    ct = pki_matter_template_new(att ? "matter-pai" : "matter-icac", &res);
    if (rt == NULL || ct == NULL || rname == NULL || cname == NULL) {
        mfail("template", res.detail);
        goto done;
    }

    if (att) {
        char  rcn[128], ccn[128];

        snprintf(rcn, sizeof(rcn), "%s PAA", o->cn ? o->cn : "Matter");
        snprintf(ccn, sizeof(ccn), "%s PAI", o->cn ? o->cn : "Matter");

        if (!X509_NAME_add_entry_by_txt(rname, "CN", MBSTRING_UTF8,
                                        (const unsigned char *) rcn, -1, -1,
                                        0)
            || !add_attr(rname, "1.3.6.1.4.1.37244.2.1", o->vid)
            || !X509_NAME_add_entry_by_txt(cname, "CN", MBSTRING_UTF8,
                                           (const unsigned char *) ccn, -1,
                                           -1, 0)
            || !add_attr(cname, "1.3.6.1.4.1.37244.2.1", o->vid)
            || (o->pid && !add_attr(cname, "1.3.6.1.4.1.37244.2.2", o->pid)))
        {
            mfail("bad --vid/--pid/--cn", NULL);
            goto done;
        }

    } else {
        if (!add_attr(rname, "1.3.6.1.4.1.37244.1.4",
                      o->rcac_id ? o->rcac_id : "CACACACA00000001")
            || (o->fabric_id && !add_attr(rname, "1.3.6.1.4.1.37244.1.5",
                                          o->fabric_id))
            || !add_attr(cname, "1.3.6.1.4.1.37244.1.3",
                         o->icac_id ? o->icac_id : "CACACACA00000002"))
        {
            mfail("bad --rcac-id/--icac-id/--fabric-id", NULL);
            goto done;
        }
    }

    /* the names through the profile's checks, before any key is made
     * (with --keygen off no key is made: the signing itself checks them,
     * before anything is written) */

    if ((o->keygen == NULL || strcmp(o->keygen, "on") == 0)
        && !hierarchy_draft(att, rlabel, rname, cname))
    {
        goto done;
    }

    /* both outputs, before any key is made or opened */

    inputs[0] = o->pin_file;
    inputs[1] = NULL;

    if (!out_path(rpath, sizeof(rpath), o->dir, att ? "paa.pem" : "rcac.pem")
        || !out_path(cpath, sizeof(cpath), o->dir,
                     att ? "pai.pem" : "icac.pem")
        || !pkictl_out_open(&rout, rpath, 0644, inputs)
        || !pkictl_out_open(&cout, cpath, 0644, inputs))
    {
        goto done;
    }

    made = 0;

    if (o->keygen == NULL || strcmp(o->keygen, "on") == 0) {
        labels[0] = rlabel;
        labels[1] = clabel;
        ids[0] = att ? 0xa1 : 0xc1;
        ids[1] = att ? 0xa2 : 0xc2;
        if (!keygen(o, labels, ids)) {
            goto done;
        }
        made = 1;
    }

    snprintf(root_ref, sizeof(root_ref), "pkcs11:token=%s;object=%s;"
             "type=private", tok, rlabel);
    snprintf(ca_ref, sizeof(ca_ref), "pkcs11:token=%s;object=%s;"
             "type=private", tok, clabel);

    vault = pki_vault_new("pkictl", o->module, o->token, o->pin_file, &res);
    if (vault == NULL || pki_vault_open(vault, &res) != PKI_OK) {
        mfail("cannot open the token", res.detail);
        goto done;
    }

    rkey = pki_key_new(root_ref, vault, &res);
    ckey = rkey ? pki_key_new(ca_ref, vault, &res) : NULL;
    if (ckey == NULL || pki_key_open(rkey, &res) != PKI_OK
        || pki_key_open(ckey, &res) != PKI_OK)
    {
        mfail("cannot open the keys", res.detail);
        goto done;
    }

    /* what nginx would log as a warning (a PIN not locked in memory) */
    if (res.log[0]) {
        fprintf(stderr, "pkictl matter: warning: %s\n", res.log);
    }

    if (pki_selfsign(rkey, rt, rname, &root, &res) != PKI_OK) {
        mfail(att ? "PAA refused" : "RCAC refused", res.detail);
        goto done;
    }

    if (made) {
        snprintf(advice, sizeof(advice), "Its key and the %s's stay on "
                 "token \"%s\" as \"%s\" and \"%s\": keep the certificate "
                 "below, or run the command again with --keygen off",
                 att ? "PAI" : "ICAC", o->token, rlabel, clabel);
    } else {
        snprintf(advice, sizeof(advice), "Keep the certificate below, or "
                 "run the command again (that signs a second one)");
    }

    if (!pkictl_out_cert(&rout, root, advice)) {
        goto done;
    }

    argv1[0] = rpath;
    rca = pki_ca_new(rlabel);
    if (rca == NULL || pki_ca_set(rca, "certificate", 1, argv1, &res) != PKI_OK
        || pki_ca_set_key(rca, rkey, &res) != PKI_OK
        || pki_ca_add_template(rca, ct, &res) != PKI_OK
        || pki_ca_finish(rca, &res) != PKI_OK)
    {
        mfail("root CA", res.detail);
        goto done;
    }

    req.subject = cname;
    req.pubkey = pki_key_public(ckey);
    if (pki_issue(rca, ct, NULL, &req, NULL, &ca, &res) != PKI_OK) {
        mfail(att ? "PAI refused" : "ICAC refused", res.detail);
        goto done;
    }

    snprintf(advice, sizeof(advice), "Its issuer is in \"%s\": keep the "
             "certificate below as \"%s\", or run the command again with "
             "--keygen off (that signs both again with the keys on token "
             "\"%s\")", rpath, cpath, o->token);

    if (!pkictl_out_cert(&cout, ca, advice)) {
        goto done;
    }

    rc = 0;

done:

    pkictl_out_abort(&rout);
    pkictl_out_abort(&cout);
    X509_free(root);
    X509_free(ca);
    X509_NAME_free(rname);
    X509_NAME_free(cname);
    pki_ca_free(rca);
    pki_template_free(rt);
    pki_template_free(ct);
    if (rkey) {
        pki_key_close(rkey);
        pki_key_free(rkey);
    }
    if (ckey) {
        pki_key_close(ckey);
        pki_key_free(ckey);
    }
    if (vault) {
        pki_vault_close(vault);
        pki_vault_free(vault);
    }

    return rc;
}


#define M_VA  0x01     /* verify-attestation */
#define M_VO  0x02     /* verify-operational */
#define M_HA  0x04     /* hierarchy attestation */
#define M_HO  0x08     /* hierarchy operational */
#define M_H   (M_HA | M_HO)


/* The options: each of one value, given at most once, and only to the
 * commands that use it (one that does not was dropped without a word). */
static const struct {
    const char  *name;
    size_t       off;
    unsigned     cmds;
} matter_opts[] = {
    { "--dac", offsetof(matter_opts_t, dac), M_VA },
    { "--pai", offsetof(matter_opts_t, pai), M_VA },
    { "--paa", offsetof(matter_opts_t, paa), M_VA },
    { "--cd", offsetof(matter_opts_t, cd), M_VA },
    { "--cd-signer", offsetof(matter_opts_t, cd_signer), M_VA },
    { "--noc", offsetof(matter_opts_t, noc), M_VO },
    { "--icac", offsetof(matter_opts_t, icac), M_VO },
    { "--rcac", offsetof(matter_opts_t, rcac), M_VO },
    { "--at", offsetof(matter_opts_t, at), M_VA | M_VO },
    { "--dir", offsetof(matter_opts_t, dir), M_H },
    { "--module", offsetof(matter_opts_t, module), M_H },
    { "--token", offsetof(matter_opts_t, token), M_H },
    { "--pin-file", offsetof(matter_opts_t, pin_file), M_H },
    { "--keygen", offsetof(matter_opts_t, keygen), M_H },
    { "--vid", offsetof(matter_opts_t, vid), M_HA },
    { "--pid", offsetof(matter_opts_t, pid), M_HA | M_VA },
    { "--cn", offsetof(matter_opts_t, cn), M_HA },
    { "--fabric-id", offsetof(matter_opts_t, fabric_id), M_HO },
    { "--rcac-id", offsetof(matter_opts_t, rcac_id), M_HO },
    { "--icac-id", offsetof(matter_opts_t, icac_id), M_HO },
};


int
pkictl_matter(int argc, char **argv)
{
    int             i;
    size_t          k, n;
    unsigned        cmd;
    const char     *a, *sub, *kind, **p;
    matter_opts_t   o;

    if (argc < 1) {
        return mfail("usage", "pkictl matter to-tlv|to-der|"
                     "verify-attestation|verify-operational|hierarchy ...");
    }

    sub = argv[0];

    if (strcmp(sub, "to-tlv") == 0 || strcmp(sub, "der2tlv") == 0) {
        return cmd_convert(1, argc - 1, argv + 1);
    }
    if (strcmp(sub, "to-der") == 0 || strcmp(sub, "tlv2der") == 0) {
        return cmd_convert(0, argc - 1, argv + 1);
    }

    memset(&o, 0, sizeof(o));
    kind = NULL;
    i = 1;

    if (strcmp(sub, "verify-attestation") == 0) {
        cmd = M_VA;

    } else if (strcmp(sub, "verify-operational") == 0) {
        cmd = M_VO;

    } else if (strcmp(sub, "hierarchy") == 0) {
        if (argc < 2) {
            return mfail("usage", "hierarchy attestation|operational ...");
        }
        kind = argv[1];
        i = 2;
        if (strcmp(kind, "attestation") == 0) {
            cmd = M_HA;
        } else if (strcmp(kind, "operational") == 0) {
            cmd = M_HO;
        } else {
            return mfail("usage", "hierarchy attestation|operational ...");
        }

    } else {
        return mfail("unknown command", sub);
    }

    n = sizeof(matter_opts) / sizeof(matter_opts[0]);

    for ( ; i < argc; i += 2) {
        a = argv[i];

        for (k = 0; k < n; k++) {
            if (strcmp(a, matter_opts[k].name) == 0) {
                break;
            }
        }
        if (k == n) {
            return mfail("unknown option", a);
        }
        if (i + 1 >= argc) {
            return mfail("option needs a value", a);
        }
        if (!(matter_opts[k].cmds & cmd)) {
            fprintf(stderr, "pkictl matter: %s does not apply to %s%s%s\n",
                    a, sub, kind ? " " : "", kind ? kind : "");
            return 1;
        }

        p = (const char **) ((char *) &o + matter_opts[k].off);
        if (*p != NULL) {
            return mfail("option given twice", a);
        }
        *p = argv[i + 1];
    }

    if (o.keygen != NULL && strcmp(o.keygen, "on") != 0
        && strcmp(o.keygen, "off") != 0)
    {
        fprintf(stderr, "pkictl matter: bad --keygen \"%s\": on or off\n",
                o.keygen);
        return 1;
    }

    if (o.module == NULL) {
        o.module = "/usr/lib/softhsm/libsofthsm2.so";
    }

    if (cmd == M_VA) {
        return cmd_verify_attestation(&o);
    }
    if (cmd == M_VO) {
        return cmd_verify_operational(&o);
    }

    return cmd_hierarchy(kind, &o);
}
