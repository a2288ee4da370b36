/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * pkictl: offline CA tool over libpkicore (pki.h only).
 *
 *   pkictl selfsign --key REF --subject DN --days N --out FILE [vault]
 *   pkictl issue --ca-cert F --ca-key REF (--csr F | --pubkey-of REF)
 *                --profile ca|server|client [--pathlen N] [--subject DN]
 *                [--dns NAME]... [--ip ADDR]... --days N --out FILE
 *                [vault] [--redis unix:PATH --ca-name NAME [--namespace NS]
 *                [--db N]]
 *
 *   vault: --module PATH --token LABEL --pin-file F
 *
 * REF is a PEM key file or a "pkcs11:" URI.  The PIN is read only from the
 * PIN file.  Errors go to stderr; the exit status is 1 on any failure.
 * --out is created (a temporary file beside it, pkictl.h) before any key
 * is opened, anything signed or recorded; a write that fails after the
 * signature prints the certificate's serial, its issuer and its PEM.  An
 * --out that is not a regular file (or a symlink to one), that is an
 * input of the command, or that holds a private key is refused then.  An
 * option of one value given twice is refused.
 *
 * With --redis, issue records the certificate where nginx looks for the
 * certificates of "pki_ca NAME" (OCSP, CRLs, the admin API): the keys
 * <NS>{ca:NAME}:... of database N, NS and N as in pki_redis (namespace=,
 * db=; default "pki:" and 0).  --ca-name has no default: a record under a
 * name no pki_ca block has is one nginx never reads.
 */

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/stat.h>

#include <openssl/pem.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>

#include "pki.h"
#include "pkictl.h"


#define PKICTL_MAX_NAMES    64
#define PKICTL_MAX_FILE     (1024 * 1024)
#define PKICTL_DEF_MODULE   "/usr/lib/softhsm/libsofthsm2.so"


/* pkictl/matter.c */
int pkictl_matter(int argc, char **argv);


typedef struct {
    const char  *cmd;
    const char  *key;
    const char  *subject;
    const char  *out;
    const char  *ca_cert;
    const char  *ca_key;
    const char  *csr;
    const char  *pubkey_of;
    const char  *profile;
    const char  *module;
    const char  *token;
    const char  *pin_file;
    const char  *redis;
    const char  *redis_password_file;
    const char  *ca_name;
    const char  *ns;
    const char  *audit_log;
    const char  *crl_url;
    const char  *ocsp_url;
    const char  *ca_issuers_url;
    const char  *dns[PKICTL_MAX_NAMES];
    const char  *ip[PKICTL_MAX_NAMES];
    int          ndns;
    int          nip;
    long         days;
    long         pathlen;
    long         db;
} pkictl_opts_t;


static void
usage(void)
{
    fprintf(stderr,
        "usage:\n"
        "  pkictl selfsign --key REF --subject DN --days N --out FILE"
        " [vault]\n"
        "  pkictl issue --ca-cert F --ca-key REF (--csr F | --pubkey-of REF)\n"
        "               --profile ca|server|client [--pathlen N]"
        " [--subject DN]\n"
        "               [--dns NAME]... [--ip ADDR]... --days N --out FILE\n"
        "               [vault] [--redis unix:PATH --ca-name NAME"
        " [--namespace NS]\n"
        "               [--db N] [--redis-password-file F]"
        " --audit-log DIR|none]\n"
        "               [--crl-url URL] [--ocsp-url URL]"
        " [--ca-issuers-url URL]\n"
        "    --redis: the record goes where nginx finds the certificates of"
        "\n"
        "    \"pki_ca NAME\" (OCSP, CRLs, admin API); NS and N as in"
        " pki_redis\n"
        "    namespace= and db= (default \"pki:\" and 0), F as its"
        " password_file=\n"
        "    (the first line is the password); --audit-log: that"
        " nginx's\n"
        "    pki_audit_log DIR (none: it has no log), written before the"
        " file\n"
        "  pkictl matter to-tlv|to-der|verify-attestation|"
        "verify-operational|hierarchy ...\n"
        "  vault: --module PATH --token LABEL --pin-file FILE\n"
        "  pkictl audit verify DIR [--pubkey PEM]... [--max-unsigned N]\n"
        "        [--max-unsigned-age SECONDS] [--lock-wait SECONDS]"
        " [--no-lock]\n"
        "  REF: a PEM key file or a pkcs11: URI; DN: \"/CN=a/O=b\"\n");
}


static int
fail_res(const char *what, const pki_result_t *res)
{
    fprintf(stderr, "pkictl: %s: %s: %s\n", what,
            pki_status_name(res->status),
            res->detail[0] ? res->detail : "(no detail)");
    if (res->log[0]) {
        fprintf(stderr, "pkictl:   %s\n", res->log);
    }
    return 0;
}


/* What the core says of a success that nginx would log as a warning (a
 * key file other users may read, a PIN that could not be locked in
 * memory): said on stderr, not dropped. */
static void
warn_res(const pki_result_t *res)
{
    if (res->log[0]) {
        fprintf(stderr, "pkictl: warning: %s\n", res->log);
    }
}


static int
fail(const char *fmt, const char *arg)
{
    fprintf(stderr, "pkictl: ");
    fprintf(stderr, fmt, arg);
    fprintf(stderr, "\n");
    return 0;
}


static int
parse_long(const char *s, long min, long max, long *out)
{
    char  *end;
    long   v;

    if (s == NULL || *s == '\0') {
        return 0;
    }
    errno = 0;
    v = strtol(s, &end, 10);
    if (errno != 0 || *end != '\0' || v < min || v > max) {
        return 0;
    }
    *out = v;
    return 1;
}


/* "/CN=a/O=b" with "\/" and "\\" escapes. */
static X509_NAME *
parse_dn(const char *dn)
{
    X509_NAME  *name;
    char       *buf, *field, *p, *w, *eq;
    size_t      len;
    int         n = 0;

    len = strlen(dn);
    if (len == 0 || len > 4096 || dn[0] != '/') {
        fail("bad subject \"%s\": use \"/CN=name/O=org\"", dn);
        return NULL;
    }

    name = X509_NAME_new();
    buf = malloc(len + 1);
    if (name == NULL || buf == NULL) {
        goto failed;
    }

    p = (char *) dn + 1;

    while (*p != '\0') {
        /* copy one field, unescaping, up to an unescaped '/' */
        field = w = buf;
        while (*p != '\0' && *p != '/') {
            if (*p == '\\' && p[1] != '\0') {
                p++;
            }
            *w++ = *p++;
        }
        *w = '\0';
        if (*p == '/') {
            p++;
        }

        eq = strchr(field, '=');
        if (eq == NULL || eq == field || eq[1] == '\0') {
            fail("bad subject component \"%s\"", field);
            goto failed;
        }
        *eq = '\0';

        if (!X509_NAME_add_entry_by_txt(name, field, MBSTRING_UTF8,
                                        (unsigned char *) eq + 1, -1, -1, 0))
        {
            fail("bad subject attribute \"%s\"", field);
            goto failed;
        }
        n++;
    }

    if (n == 0) {
        fail("empty subject \"%s\"", dn);
        goto failed;
    }

    free(buf);
    return name;

failed:

    free(buf);
    X509_NAME_free(name);
    return NULL;
}


static int
add_san(GENERAL_NAMES *gens, int type, const char *value)
{
    GENERAL_NAME       *gn;
    ASN1_IA5STRING     *ia5;
    ASN1_OCTET_STRING  *ip;

    gn = GENERAL_NAME_new();
    if (gn == NULL) {
        return 0;
    }

    if (type == GEN_DNS) {
        if (*value == '\0' || strlen(value) > 253) {
            GENERAL_NAME_free(gn);
            return fail("bad DNS name \"%s\"", value);
        }
        ia5 = ASN1_IA5STRING_new();
        if (ia5 == NULL || !ASN1_STRING_set(ia5, value, -1)) {
            ASN1_IA5STRING_free(ia5);
            GENERAL_NAME_free(gn);
            return 0;
        }
        GENERAL_NAME_set0_value(gn, GEN_DNS, ia5);

    } else {
        ip = a2i_IPADDRESS(value);
        if (ip == NULL) {
            GENERAL_NAME_free(gn);
            return fail("bad IP address \"%s\"", value);
        }
        GENERAL_NAME_set0_value(gn, GEN_IPADD, ip);
    }

    if (!sk_GENERAL_NAME_push(gens, gn)) {
        GENERAL_NAME_free(gn);
        return 0;
    }
    return 1;
}


static unsigned char *
read_file(const char *path, size_t *len)
{
    FILE           *f;
    unsigned char  *buf;
    size_t          n;

    f = fopen(path, "rb");
    if (f == NULL) {
        fprintf(stderr, "pkictl: cannot open \"%s\": %s\n", path,
                strerror(errno));
        return NULL;
    }

    buf = malloc(PKICTL_MAX_FILE + 1);
    if (buf == NULL) {
        fclose(f);
        return NULL;
    }

    n = fread(buf, 1, PKICTL_MAX_FILE + 1, f);
    if (ferror(f) || n > PKICTL_MAX_FILE) {
        fprintf(stderr, "pkictl: cannot read \"%s\" (error or over 1 MiB)\n",
                path);
        fclose(f);
        free(buf);
        return NULL;
    }
    fclose(f);

    *len = n;
    return buf;
}


/* Reads a CSR file, PEM or DER, and has the core parse and verify it. */
static X509_REQ *
load_csr(const char *path)
{
    X509_REQ       *csr = NULL, *pem;
    BIO            *bio;
    unsigned char  *buf, *der = NULL;
    size_t          len;
    int             dlen;
    pki_result_t    res;

    buf = read_file(path, &len);
    if (buf == NULL) {
        return NULL;
    }

    pki_result_init(&res);

    if (len > 10 && memcmp(buf, "-----BEGIN", 10) == 0) {
        bio = BIO_new_mem_buf(buf, (int) len);
        pem = bio ? PEM_read_bio_X509_REQ(bio, NULL, NULL, NULL) : NULL;
        BIO_free(bio);
        if (pem == NULL) {
            fail("\"%s\" holds no PEM certificate request", path);
            goto done;
        }
        dlen = i2d_X509_REQ(pem, &der);
        X509_REQ_free(pem);
        if (dlen <= 0) {
            fail("cannot encode the request in \"%s\"", path);
            goto done;
        }
        if (pki_csr_parse(der, (size_t) dlen, &csr, &res) != PKI_OK) {
            fail_res("bad certificate request", &res);
        }

    } else if (pki_csr_parse(buf, len, &csr, &res) != PKI_OK) {
        fail_res("bad certificate request", &res);
    }

done:

    OPENSSL_free(der);
    free(buf);
    return csr;
}


/*
 * What an output may replace: rename() puts a regular file in the place
 * of whatever is at path, so a device (/dev/null), a FIFO or a socket
 * there would be gone, and so would a symlink to one (/dev/stdout); an
 * input of the same command (selfsign --key k --out k) would be gone
 * after it was read, and so would a private key named by mistake.  1 the
 * path may be replaced, or 0 said on stderr.
 */
static int
pkictl_out_check(const char *path, const char *const *inputs)
{
    int           fd;
    char          buf[8192];
    ssize_t       n;
    struct stat   st, tg, in;

    if (lstat(path, &st) != 0) {
        return 1;
    }

    /* rename() cannot replace a directory: found out now, not after */
    if (S_ISDIR(st.st_mode)) {
        return fail("cannot write \"%s\": it is a directory", path);
    }

    if (S_ISLNK(st.st_mode)) {
        if (stat(path, &tg) == 0 && !S_ISREG(tg.st_mode)) {
            return fail("will not replace \"%s\": it is a symlink to a "
                        "device, FIFO, socket or directory", path);
        }

    } else if (!S_ISREG(st.st_mode)) {
        return fail("will not replace \"%s\": it is a device, FIFO or "
                    "socket, not a regular file", path);
    }

    if (inputs != NULL && stat(path, &tg) == 0) {
        for ( /* void */ ; *inputs != NULL; inputs++) {
            if (strncasecmp(*inputs, "pkcs11:", 7) != 0
                && stat(*inputs, &in) == 0
                && in.st_dev == tg.st_dev && in.st_ino == tg.st_ino)
            {
                fprintf(stderr, "pkictl: will not replace \"%s\": it is "
                        "the input \"%s\"\n", path, *inputs);
                return 0;
            }
        }
    }

    if (!S_ISREG(st.st_mode)) {
        return 1;
    }

    fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
    if (fd == -1) {
        return 1;
    }
    n = read(fd, buf, sizeof(buf));
    close(fd);

    if (n > 0 && memmem(buf, (size_t) n, "-----BEGIN ", 11) != NULL
        && memmem(buf, (size_t) n, "PRIVATE KEY-----", 16) != NULL)
    {
        OPENSSL_cleanse(buf, sizeof(buf));
        return fail("will not replace \"%s\": it holds a private key",
                    path);
    }
    OPENSSL_cleanse(buf, sizeof(buf));

    return 1;
}


/* The outputs open, whose temporary files a SIGTERM, SIGINT or SIGHUP
 * removes before it ends pkictl as it would have: a login to a token or
 * a Redis that does not answer can keep pkictl waiting, and whoever
 * stops it should not find "FILE.XXXXXX" files left beside the output. */
#define PKICTL_OUT_SLOTS  8

static pkictl_out_t *volatile  pkictl_outs[PKICTL_OUT_SLOTS];


static void
pkictl_out_signal(int signo)
{
    int               i, err;
    pkictl_out_t     *out;
    struct sigaction  sa;

    err = errno;

    for (i = 0; i < PKICTL_OUT_SLOTS; i++) {
        out = pkictl_outs[i];
        if (out != NULL) {
            (void) unlink(out->tmp);
        }
    }

    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = SIG_DFL;
    sigemptyset(&sa.sa_mask);
    (void) sigaction(signo, &sa, NULL);

    errno = err;
    (void) raise(signo);
}


/* out in a free slot (the handlers set up on the first): 1, or 0 said */
static int
pkictl_out_hold(pkictl_out_t *out)
{
    int               i;
    size_t            k;
    struct sigaction  sa, old;
    static int        handled;
    static const int  sigs[] = { SIGTERM, SIGINT, SIGHUP };

    if (!handled) {
        memset(&sa, 0, sizeof(sa));
        sa.sa_handler = pkictl_out_signal;
        sigemptyset(&sa.sa_mask);
        for (k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++) {
            sigaddset(&sa.sa_mask, sigs[k]);
        }

        for (k = 0; k < sizeof(sigs) / sizeof(sigs[0]); k++) {
            /* a signal ignored by who started pkictl (nohup) stays so */
            if (sigaction(sigs[k], NULL, &old) == 0
                && old.sa_handler != SIG_IGN)
            {
                (void) sigaction(sigs[k], &sa, NULL);
            }
        }

        handled = 1;
    }

    for (i = 0; i < PKICTL_OUT_SLOTS; i++) {
        if (pkictl_outs[i] == NULL) {
            pkictl_outs[i] = out;
            return 1;
        }
    }

    return fail("too many output files at once (%s)", out->path);
}


static void
pkictl_out_release(pkictl_out_t *out)
{
    int  i;

    for (i = 0; i < PKICTL_OUT_SLOTS; i++) {
        if (pkictl_outs[i] == out) {
            pkictl_outs[i] = NULL;
        }
    }
}


/* Output files: see pkictl.h. */
int
pkictl_out_open(pkictl_out_t *out, const char *path, mode_t mode,
    const char *const *inputs)
{
    int           n;
    mode_t        mask;
    const char   *slash;

    out->fd = -1;
    out->placed = 0;
    out->path = path;

    n = snprintf(out->tmp, sizeof(out->tmp), "%s.XXXXXX", path);
    if (n < 0 || (size_t) n >= sizeof(out->tmp)) {
        return fail("output path too long: \"%s\"", path);
    }

    slash = strrchr(path, '/');
    if (slash == NULL) {
        strcpy(out->dir, ".");
    } else {
        n = slash == path ? 1 : (int) (slash - path);
        memcpy(out->dir, path, n);
        out->dir[n] = '\0';
    }

    if (!pkictl_out_check(path, inputs)) {
        return 0;
    }

    /* held before the file is made: a signal in between finds no file
     * of that name (the template's XXXXXX) to remove */
    if (!pkictl_out_hold(out)) {
        return 0;
    }

    out->fd = mkstemp(out->tmp);
    if (out->fd == -1) {
        pkictl_out_release(out);
        fprintf(stderr, "pkictl: cannot create a temporary file for "
                "\"%s\": %s\n", path, strerror(errno));
        return 0;
    }

    mask = umask(0);
    umask(mask);

    if (fchmod(out->fd, mode & ~mask) == -1) {
        fprintf(stderr, "pkictl: cannot write \"%s\": %s\n", path,
                strerror(errno));
        close(out->fd);
        out->fd = -1;
        unlink(out->tmp);
        pkictl_out_release(out);
        return 0;
    }

    return 1;
}


void
pkictl_out_abort(pkictl_out_t *out)
{
    if (out->fd != -1) {
        close(out->fd);
        out->fd = -1;
        unlink(out->tmp);
    }

    pkictl_out_release(out);
}


int
pkictl_out_commit(pkictl_out_t *out, const void *data, size_t len)
{
    int       fd;
    size_t    off;
    ssize_t   w;

    for (off = 0; off < len; off += w) {
        w = write(out->fd, (const char *) data + off, len - off);
        if (w == -1 && errno == EINTR) {
            w = 0;
        } else if (w <= 0) {
            goto failed;
        }
    }

    if (fsync(out->fd) == -1) {
        goto failed;
    }

    fd = out->fd;
    out->fd = -1;
    if (close(fd) == -1) {
        unlink(out->tmp);
        goto failed;
    }

    if (rename(out->tmp, out->path) == -1) {
        unlink(out->tmp);
        goto failed;
    }

    out->placed = 1;
    pkictl_out_release(out);

    /* the file is whole and in place, only its name may be lost in a
     * crash: not "not written", which would have the callers print the
     * certificate as lost (they look at placed) */
    fd = open(out->dir, O_RDONLY | O_DIRECTORY);
    if (fd == -1 || fsync(fd) == -1) {
        fprintf(stderr, "pkictl: \"%s\" was written and renamed into place, "
                "but its directory \"%s\" could not be synced (%s): it may "
                "not survive a crash\n", out->path, out->dir,
                strerror(errno));
        if (fd != -1) {
            close(fd);
        }
        return 0;
    }
    close(fd);

    return 1;

failed:

    fprintf(stderr, "pkictl: cannot write \"%s\": %s\n", out->path,
            strerror(errno));
    pkictl_out_abort(out);
    return 0;
}


int
pkictl_write_file(const char *path, const void *data, size_t len,
    mode_t mode, const char *const *inputs)
{
    pkictl_out_t  out;

    return pkictl_out_open(&out, path, mode, inputs)
           && pkictl_out_commit(&out, data, len);
}


/* The PEM of a certificate (*pem in the BIO's memory, *len bytes): the
 * BIO, which the caller frees, or NULL. */
static BIO *
pkictl_cert_pem(X509 *x, char **pem, long *len)
{
    BIO  *bio;

    bio = BIO_new(BIO_s_mem());
    if (bio == NULL || !PEM_write_bio_X509(bio, x)) {
        BIO_free(bio);
        return NULL;
    }

    *len = BIO_get_mem_data(bio, pem);

    return bio;
}


/* The start of what is said of a certificate signed but not written:
 * its serial (into hex) and its issuer. */
static void
pkictl_unwritten_start(X509 *x, char hex[41])
{
    char  issuer[256];

    if (!pki_serial_to_hex(X509_get0_serialNumber(x), hex)) {
        strcpy(hex, "?");
    }

    if (X509_NAME_oneline(X509_get_issuer_name(x), issuer, sizeof(issuer))
        == NULL)
    {
        strcpy(issuer, "?");
    }

    fprintf(stderr, "pkictl: certificate serial %s issued by \"%s\"",
            hex, issuer);
}


/* A certificate signed, recorded nowhere, and not written to path: its
 * serial and issuer, the advice, and its PEM (pem NULL: it could not be
 * encoded) on stderr. */
static void
pkictl_unwritten(X509 *x, const char *path, const char *pem, long len,
    const char *advice)
{
    char  hex[41];

    pkictl_unwritten_start(x, hex);

    fprintf(stderr, " (recorded nowhere) was not written to \"%s\"%s.  "
            "%s\n", path, pem != NULL ? "; it follows" : "", advice);

    if (pem != NULL) {
        fwrite(pem, 1, (size_t) len, stderr);
    }
}


int
pkictl_out_cert(pkictl_out_t *out, X509 *x, const char *advice)
{
    int    ok;
    BIO   *bio;
    long   len;
    char  *pem;

    bio = pkictl_cert_pem(x, &pem, &len);
    if (bio == NULL) {
        fail("cannot encode the certificate for \"%s\"", out->path);
        pkictl_unwritten(x, out->path, NULL, 0, advice);
        return 0;
    }

    ok = pkictl_out_commit(out, pem, (size_t) len);
    if (!ok && !out->placed) {
        pkictl_unwritten(x, out->path, pem, len, advice);
    }

    BIO_free(bio);

    return ok;
}


/*
 * pkictl issue signed (and, with --redis, recorded: OCSP answers good for
 * it) a certificate that could not be written to --out: what the operator
 * needs to name it, the certificate itself, and what to do, on stderr.
 * Run again, the command would issue a second certificate.
 */
static void
pkictl_issued_unwritten(const pkictl_opts_t *o, X509 *x, const char *pem,
    long len)
{
    char  hex[41];

    if (o->redis == NULL) {
        pkictl_unwritten(x, o->out, pem, len, "Keep the certificate below "
                         "rather than run the command again (that issues "
                         "a second certificate)");
        return;
    }

    pkictl_unwritten_start(x, hex);

    fprintf(stderr, " is recorded good for CA \"%s\" (namespace \"%s\", "
            "db %ld) but was not written to \"%s\"%s.  Do not run the "
            "command again (that issues a second certificate): keep the "
            "certificate below, or revoke serial %s of CA \"%s\" (admin "
            "API: POST /pki/admin/revoke)\n", o->ca_name,
            o->ns != NULL ? o->ns : "pki:", o->db >= 0 ? o->db : 0, o->out,
            pem != NULL ? "; it follows" : "", hex, o->ca_name);

    if (pem != NULL) {
        fwrite(pem, 1, (size_t) len, stderr);
    }
}


/* Opens a vault if one is needed for ref (a pkcs11: URI).  *vault stays
 * NULL for file keys. */
static int
open_vault(const pkictl_opts_t *o, const char *ref, pki_vault_t **vault)
{
    char           token[256];
    const char    *label;
    pki_result_t   res;

    if (strncasecmp(ref, "pkcs11:", 7) != 0) {
        return 1;
    }

    /* a PIN in the URI is refused without echoing the URI (it went to
     * stderr whole, PIN included) */
    if (strcasestr(ref, "pin-value") != NULL
        || strcasestr(ref, "pin-source") != NULL)
    {
        return fail("a pkcs11: key URI carries a PIN (%s): give it with "
                    "--pin-file; the URI is not shown", "pin-value or "
                    "pin-source");
    }

    if (*vault != NULL) {
        return 1;
    }

    label = o->token;
    if (label == NULL) {
        if (!pki_key_uri_token(ref, token, sizeof(token))) {
            return fail("key \"%s\" names no token: add --token", ref);
        }
        label = token;
    }
    if (o->pin_file == NULL) {
        return fail("%s: a pkcs11: key needs --pin-file", ref);
    }

    pki_result_init(&res);
    *vault = pki_vault_new("pkictl", o->module ? o->module : PKICTL_DEF_MODULE,
                           label, o->pin_file, &res);
    if (*vault == NULL) {
        return fail_res("vault", &res);
    }
    if (pki_vault_open(*vault, &res) != PKI_OK) {
        return fail_res("cannot open the token", &res);
    }
    warn_res(&res);
    return 1;
}


static pki_key_t *
open_key(const pkictl_opts_t *o, const char *ref, pki_vault_t **vault)
{
    pki_key_t     *k;
    pki_result_t   res;

    if (!open_vault(o, ref, vault)) {
        return NULL;
    }

    pki_result_init(&res);
    k = pki_key_new(ref, strncasecmp(ref, "pkcs11:", 7) == 0 ? *vault : NULL,
                    &res);
    if (k == NULL) {
        fail_res("key", &res);
        return NULL;
    }
    if (pki_key_open(k, &res) != PKI_OK) {
        fail_res("cannot open the key", &res);
        pki_key_free(k);
        return NULL;
    }
    warn_res(&res);
    return k;
}


static int
tmpl_line(pki_template_t *t, const char *name, int argc,
    const char *const *argv)
{
    pki_result_t  res;

    pki_result_init(&res);
    if (pki_template_set(t, name, argc, argv, &res) != PKI_OK) {
        fprintf(stderr, "pkictl: template line \"%s\": ", name);
        return fail_res("rejected", &res);
    }
    return 1;
}


/* Builds the certificate template of a profile.  The subject rules
 * follow the order of the attributes in order (the request's subject, when
 * known), so that an issued subject keeps the order it was asked in. */
static pki_template_t *
make_template(const char *profile, long pathlen, long days, int rsa,
    const X509_NAME *order)
{
    pki_template_t  *t;
    pki_result_t     res;
    char             validity[32], pl[32];
    const char      *kt[] = { "ec:P-256", "ec:P-384", "rsa:2048-4096" };
    const char      *ku_ca[] = { "keyCertSign", "cRLSign", "digitalSignature" };
    const char      *ku_ee[] = { "digitalSignature", "keyEncipherment" };
    const char      *eku_srv[] = { "serverAuth" };
    const char      *eku_cli[] = { "clientAuth" };
    const char      *bc[2];
    const char      *subj[2];
    const char      *attrs[] = { "CN", "O", "OU", "C", "ST", "L" };
    const char      *sdns[] = { "dns", "copy" };
    const char      *sip[] = { "ip", "copy" };
    const char      *v[1];
    const char      *sn;
    int              ok, k, n;
    size_t           i;
    unsigned char    seen[sizeof(attrs) / sizeof(attrs[0])];

    t = pki_template_new(profile);
    if (t == NULL) {
        fail("out of memory%s", "");
        return NULL;
    }

    snprintf(validity, sizeof(validity), "%ldd", days);
    v[0] = validity;

    ok = tmpl_line(t, "key_types", 3, kt)
         && tmpl_line(t, "validity", 1, v);

    /* the subject comes from the command line or the CSR: copy it; an
     * attribute without a rule is refused */
    memset(seen, 0, sizeof(seen));
    subj[1] = "copy";
    n = order ? X509_NAME_entry_count(order) : 0;

    for (k = 0; ok && k <= n; k++) {
        sn = NULL;
        if (k < n) {
            sn = OBJ_nid2sn(OBJ_obj2nid(X509_NAME_ENTRY_get_object(
                                X509_NAME_get_entry(order, k))));
        }

        for (i = 0; ok && i < sizeof(attrs) / sizeof(attrs[0]); i++) {
            if (seen[i] || (k < n && (sn == NULL || strcmp(sn, attrs[i]) != 0)))
            {
                continue;
            }
            seen[i] = 1;
            subj[0] = attrs[i];
            ok = tmpl_line(t, "subject", 2, subj);
        }
    }

    if (strcmp(profile, "ca") == 0) {
        bc[0] = "ca:true";
        if (pathlen >= 0) {
            snprintf(pl, sizeof(pl), "pathlen:%ld", pathlen);
            bc[1] = pl;
        }
        ok = ok && tmpl_line(t, "basic_constraints", pathlen >= 0 ? 2 : 1, bc)
             && tmpl_line(t, "key_usage", 3, ku_ca);

    } else {
        ok = ok && tmpl_line(t, "san", 2, sdns)
             && tmpl_line(t, "san", 2, sip)
             && tmpl_line(t, "key_usage", rsa ? 2 : 1, ku_ee)
             && tmpl_line(t, "extended_key_usage", 1,
                          strcmp(profile, "server") == 0 ? eku_srv : eku_cli);
    }

    if (!ok) {
        pki_template_free(t);
        return NULL;
    }

    pki_result_init(&res);
    if (pki_template_finish(t, &res) != PKI_OK) {
        fail_res("template", &res);
        pki_template_free(t);
        return NULL;
    }
    return t;
}


static int
cmd_selfsign(pkictl_opts_t *o)
{
    pki_vault_t     *vault = NULL;
    pki_key_t       *key = NULL;
    pki_template_t  *t = NULL;
    X509_NAME       *subject = NULL;
    X509            *x = NULL;
    pki_result_t     res;
    pkictl_out_t     out;
    const char      *inputs[3];
    int              rc = 1;

    out.fd = -1;

    if (o->key == NULL || o->subject == NULL || o->out == NULL
        || o->days <= 0)
    {
        usage();
        return 1;
    }

    /* an option of issue is not dropped without a word (a --redis that
     * recorded nothing, a --dns that is not in the certificate) */
    if (o->csr || o->pubkey_of || o->profile || o->ca_cert || o->ca_key
        || o->redis || o->redis_password_file || o->ca_name || o->ns
        || o->db >= 0 || o->ndns
        || o->nip || o->audit_log || o->crl_url || o->ocsp_url
        || o->ca_issuers_url)
    {
        fprintf(stderr, "pkictl: selfsign takes --key, --subject, --days, "
                "--out, --pathlen and the vault's options only\n");
        return 1;
    }

    subject = parse_dn(o->subject);
    if (subject == NULL) {
        goto done;
    }
    t = make_template("ca", o->pathlen, o->days, 0, NULL);
    if (t == NULL) {
        goto done;
    }

    /* the output file, before the key is opened (a token's login) and
     * anything signed: a path it cannot be written to costs no
     * certificate and no signature of the key */

    inputs[0] = o->key;
    inputs[1] = o->pin_file;
    inputs[2] = NULL;

    if (!pkictl_out_open(&out, o->out, 0644, inputs)) {
        goto done;
    }

    key = open_key(o, o->key, &vault);
    if (key == NULL) {
        goto done;
    }

    pki_result_init(&res);
    if (pki_selfsign(key, t, subject, &x, &res) != PKI_OK) {
        fail_res("selfsign", &res);
        goto done;
    }

    if (pkictl_out_cert(&out, x, "Keep the certificate below rather than "
                        "run the command again (that signs a second one)"))
    {
        rc = 0;
    }

done:

    pkictl_out_abort(&out);
    X509_free(x);
    X509_NAME_free(subject);
    pki_template_free(t);
    if (key) {
        pki_key_close(key);
        pki_key_free(key);
    }
    if (vault) {
        pki_vault_close(vault);
        pki_vault_free(vault);
    }
    return rc;
}


static void
pkictl_audit_lost(void *arg, int lost, const char *msg)
{
    fprintf(stderr, "pkictl: audit log: %s\n", msg);
    if (lost) {
        *(int *) arg = 1;
    }
}


/*
 * The log's directory is one whose log nginx has opened: audit.lock and
 * audit.id are there, regular files (not followed if links), made by the
 * user of nginx's workers.  When audit.log is missing (no entry written
 * yet), it is made here empty, before anything is signed, and given to
 * audit.lock's owner through its own fd: the writer then appends to it,
 * and no file of the log is ever owned by the user running pkictl (the
 * workers could not append to it: issuance would fail closed).  1 done,
 * 0 said on stderr.
 */
static int
pkictl_audit_prepare(const char *dir)
{
    int                 i, fd;
    char                path[4096];
    struct stat         sb, lk;
    static const char  *made[] = { "audit.id", "audit.lock" };

    for (i = 0; i < 2; i++) {
        snprintf(path, sizeof(path), "%s/%s", dir, made[i]);
        if (lstat(path, i ? &lk : &sb) != 0
            || !S_ISREG(i ? lk.st_mode : sb.st_mode))
        {
            fprintf(stderr, "pkictl: --audit-log \"%s\": no %s there: not "
                    "the pki_audit_log directory of an nginx that has opened "
                    "its log\n", dir, made[i]);
            return 0;
        }
    }

    snprintf(path, sizeof(path), "%s/audit.log", dir);
    fd = open(path, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
              0640);
    if (fd < 0) {
        if (errno == EEXIST) {
            return 1;
        }
        fprintf(stderr, "pkictl: --audit-log: cannot make %s: %s\n", path,
                strerror(errno));
        return 0;
    }

    if (fstat(fd, &sb) != 0
        || ((sb.st_uid != lk.st_uid || sb.st_gid != lk.st_gid)
            && fchown(fd, lk.st_uid, lk.st_gid) != 0))
    {
        fprintf(stderr, "pkictl: --audit-log: cannot give %s to the owner "
                "of audit.lock (uid %u): %s; run pkictl as root or as that "
                "user\n", path, (unsigned) lk.st_uid, strerror(errno));
        (void) unlink(path);
        close(fd);
        return 0;
    }

    (void) fsync(fd);
    close(fd);

    fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd >= 0) {
        (void) fsync(fd);
        close(fd);
    }

    return 1;
}


/* The password of a --redis-password-file: its first line (a CR before
 * the LF dropped), as pki_redis password_file= reads it, into buf (size
 * bytes, NUL-terminated): 1, or 0 said on stderr, never the password. */
static int
read_password_file(const char *path, char *buf, size_t size)
{
    int          fd, err;
    char        *nl;
    size_t       len;
    ssize_t      n;
    struct stat  st;

    fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd == -1) {
        fprintf(stderr, "pkictl: --redis-password-file \"%s\": %s\n",
                path, strerror(errno));
        return 0;
    }

    if (fstat(fd, &st) == -1 || !S_ISREG(st.st_mode)) {
        close(fd);
        return fail("--redis-password-file \"%s\" is no regular file",
                    path);
    }

    len = 0;
    n = 0;
    while (len < size) {
        n = read(fd, buf + len, size - len);
        if (n == -1 && errno == EINTR) {
            continue;
        }
        if (n <= 0) {
            break;
        }
        len += (size_t) n;
    }

    err = (n == -1) ? errno : 0;
    close(fd);

    if (err != 0 || len >= size) {
        OPENSSL_cleanse(buf, size);
        fprintf(stderr, "pkictl: --redis-password-file \"%s\": %s\n",
                path, err != 0 ? strerror(err)
                : "too large (at most 1024 bytes)");
        return 0;
    }

    nl = memchr(buf, '\n', len);
    if (nl != NULL) {
        len = (size_t) (nl - buf);
    }
    if (len > 0 && buf[len - 1] == '\r') {
        len--;
    }
    OPENSSL_cleanse(buf + len, size - len);

    if (len == 0 || memchr(buf, '\0', len) != NULL) {
        OPENSSL_cleanse(buf, size);
        return fail("--redis-password-file \"%s\" is empty or holds a NUL "
                    "byte", path);
    }

    return 1;
}


static int
cmd_issue(pkictl_opts_t *o)
{
    pki_vault_t          *vault = NULL;
    pki_key_t            *cakey = NULL, *subjkey = NULL;
    pki_template_t       *t = NULL;
    pki_ca_t             *ca = NULL;
    pki_redis_t          *redis = NULL;
    pki_audit_t          *audit = NULL;
    pki_audit_conf_t      ac;
    pki_redis_conf_t      rc_conf;
    X509_REQ             *csr = NULL;
    X509                 *x = NULL;
    X509_NAME            *subject = NULL;
    const X509_NAME      *name;
    EVP_PKEY             *pub = NULL;
    GENERAL_NAMES        *gens = NULL;
    STACK_OF(X509_EXTENSION) *exts = NULL;
    pki_request_t         req;
    pki_issue_ctx_t       ictx;
    pki_result_t          res;
    pkictl_out_t          out;
    BIO                  *bio = NULL;
    char                  maxv[32], *pem = NULL, password[1025];
    const char           *argv[1], *inputs[6];
    long                  len = 0;
    int                   rc = 1, i, crit, lost;

    memset(&req, 0, sizeof(req));
    out.fd = -1;

    if (o->ca_cert == NULL || o->ca_key == NULL || o->profile == NULL
        || o->out == NULL || o->days <= 0
        || (o->csr == NULL) == (o->pubkey_of == NULL))
    {
        usage();
        return 1;
    }
    if (strcmp(o->profile, "ca") != 0 && strcmp(o->profile, "server") != 0
        && strcmp(o->profile, "client") != 0)
    {
        fail("unknown profile \"%s\" (ca, server or client)", o->profile);
        return 1;
    }
    if (o->pathlen >= 0 && strcmp(o->profile, "ca") != 0) {
        fail("--pathlen goes with --profile ca only (a %s certificate "
             "is no CA)", o->profile);
        return 1;
    }
    if (o->pubkey_of != NULL && o->subject == NULL) {
        fail("%s needs --subject", "--pubkey-of");
        return 1;
    }
    if (o->key != NULL) {
        fail("issue takes no %s (--ca-key, --pubkey-of)", "--key");
        return 1;
    }

    /* the Redis record: checked before the keys are opened */

    if (o->redis == NULL) {
        if (o->ca_name != NULL || o->ns != NULL || o->db >= 0
            || o->redis_password_file != NULL)
        {
            fprintf(stderr, "pkictl: --ca-name, --namespace, --db and "
                    "--redis-password-file go with --redis\n");
            return 1;
        }
        if (o->audit_log != NULL) {
            fail("%s goes with --redis (a certificate not recorded is not "
                 "nginx's)", "--audit-log");
            return 1;
        }

    } else {
        if (o->ca_name == NULL) {
            fail("--redis needs --ca-name NAME: %s", "the NAME of the "
                 "\"pki_ca NAME\" block in nginx.conf that has this CA");
            return 1;
        }
        if (!pki_name_valid(o->ca_name, strlen(o->ca_name))) {
            fail("bad --ca-name \"%s\": 1-63 of A-Z a-z 0-9 . _ -, as in "
                 "\"pki_ca NAME\"", o->ca_name);
            return 1;
        }
        if (strncmp(o->redis, "unix:", 5) != 0 || o->redis[5] == '\0') {
            fail("--redis \"%s\": use unix:/path/to/redis.sock", o->redis);
            return 1;
        }
        if (o->audit_log == NULL) {
            fail("--redis needs --audit-log DIR: %s", "the pki_audit_log "
                 "directory of the nginx that has this CA, so that the "
                 "certificate is in its transaction log (none: it has no "
                 "log)");
            return 1;
        }

        /* as pki_redis unix:PATH [namespace=NS] [db=N] does it */
        memset(&rc_conf, 0, sizeof(rc_conf));
        rc_conf.unix_path = o->redis + 5;
        rc_conf.ns = o->ns != NULL ? o->ns : "pki:";
        rc_conf.db = o->db >= 0 ? (int) o->db : 0;
        rc_conf.timeout_ms = 2000;

        if (o->redis_password_file != NULL) {
            if (!read_password_file(o->redis_password_file, password,
                                    sizeof(password)))
            {
                return 1;
            }
            rc_conf.password = password;
        }

        pki_result_init(&res);
        redis = pki_redis_new(&rc_conf, &res);
        OPENSSL_cleanse(password, sizeof(password));
        if (redis == NULL) {
            fail_res("redis", &res);
            return 1;
        }

        /* nginx's transaction log: the entry is appended (and synced)
         * before the file is written; a log that does not open costs no
         * certificate */
        if (strcmp(o->audit_log, "none") != 0) {
            /* pkictl does not rotate the log (the workers do, at their
             * max_size): no file of it is made by the user running it */
            if (!pkictl_audit_prepare(o->audit_log)) {
                pki_redis_free(redis);
                return 1;
            }

            memset(&ac, 0, sizeof(ac));
            ac.dir = o->audit_log;
            ac.max_size = (size_t) -1 / 2;
            pki_result_init(&res);
            audit = pki_audit_open(&ac, &res);
            if (audit == NULL) {
                fail_res("audit log", &res);
                pki_redis_free(redis);
                return 1;
            }
            pki_audit_set_default(audit);
            pki_audit_set_required(1);
        }
    }

    /* the output file, before anything is signed or recorded: a path it
     * cannot be written to costs no certificate */

    /* the list ends at its first NULL: the optional ones last */
    i = 0;
    inputs[i++] = o->ca_cert;
    inputs[i++] = o->ca_key;
    inputs[i++] = o->csr != NULL ? o->csr : o->pubkey_of;
    if (o->pin_file != NULL) {
        inputs[i++] = o->pin_file;
    }
    if (o->redis_password_file != NULL) {
        inputs[i++] = o->redis_password_file;
    }
    inputs[i] = NULL;

    if (!pkictl_out_open(&out, o->out, 0644, inputs)) {
        goto done;
    }

    /* the request: subject, SANs, public key */

    if (o->csr) {
        csr = load_csr(o->csr);
        if (csr == NULL) {
            goto done;
        }
        pub = X509_REQ_get_pubkey(csr);
        if (pub == NULL) {
            fail("no public key in \"%s\"", o->csr);
            goto done;
        }
    } else {
        subjkey = open_key(o, o->pubkey_of, &vault);
        if (subjkey == NULL) {
            goto done;
        }
        pub = pki_key_public(subjkey);
        if (pub == NULL || !EVP_PKEY_up_ref(pub)) {
            fail("no public key for \"%s\"", o->pubkey_of);
            pub = NULL;
            goto done;
        }
    }

    /* the request goes through the template's key, subject and SAN rules,
     * as a network request does: a CSR as it is, or with the subject or
     * the SANs of the command line in its place */

    if (o->subject) {
        subject = parse_dn(o->subject);
        if (subject == NULL) {
            goto done;
        }
        name = subject;
    } else {
        name = X509_REQ_get_subject_name(csr);
    }

    if (o->ndns > 0 || o->nip > 0) {
        gens = sk_GENERAL_NAME_new_null();
        if (gens == NULL) {
            goto done;
        }
        for (i = 0; i < o->ndns; i++) {
            if (!add_san(gens, GEN_DNS, o->dns[i])) {
                goto done;
            }
        }
        for (i = 0; i < o->nip; i++) {
            if (!add_san(gens, GEN_IPADD, o->ip[i])) {
                goto done;
            }
        }

    } else if (csr != NULL && o->subject != NULL) {
        exts = X509_REQ_get_extensions(csr);
        crit = -1;
        gens = exts ? X509V3_get_d2i(exts, NID_subject_alt_name, &crit, NULL)
                    : NULL;
        if (gens == NULL && crit != -1) {
            fail("bad or repeated subjectAltName in \"%s\"", o->csr);
            goto done;
        }
    }

    /* keyEncipherment only for RSA subject keys */
    t = make_template(o->profile, o->pathlen, o->days,
                      EVP_PKEY_get_base_id(pub) == EVP_PKEY_RSA, name);
    if (t == NULL) {
        goto done;
    }

    pki_result_init(&res);
    if (csr != NULL && o->subject == NULL && gens == NULL) {
        if (pki_request_from_csr(t, csr, &req, &res) != PKI_OK) {
            fail_res("issue", &res);
            goto done;
        }

    } else if (pki_request_build(t, name, gens, pub, &req, &res) != PKI_OK) {
        fail_res("issue", &res);
        goto done;
    }

    /* the CA */

    cakey = open_key(o, o->ca_key, &vault);
    if (cakey == NULL) {
        goto done;
    }

    ca = pki_ca_new(o->ca_name != NULL ? o->ca_name : "pkictl");
    if (ca == NULL) {
        goto done;
    }

    pki_result_init(&res);
    argv[0] = o->ca_cert;
    if (pki_ca_set(ca, "certificate", 1, argv, &res) != PKI_OK) {
        fail_res("CA certificate", &res);
        goto done;
    }
    snprintf(maxv, sizeof(maxv), "%ldd", o->days);
    argv[0] = maxv;
    if (pki_ca_set(ca, "max_validity", 1, argv, &res) != PKI_OK) {
        fail_res("CA max_validity", &res);
        goto done;
    }
    argv[0] = o->crl_url;
    if (o->crl_url != NULL
        && pki_ca_set(ca, "crl_url", 1, argv, &res) != PKI_OK)
    {
        fail_res("--crl-url", &res);
        goto done;
    }
    argv[0] = o->ocsp_url;
    if (o->ocsp_url != NULL
        && pki_ca_set(ca, "ocsp_url", 1, argv, &res) != PKI_OK)
    {
        fail_res("--ocsp-url", &res);
        goto done;
    }
    argv[0] = o->ca_issuers_url;
    if (o->ca_issuers_url != NULL
        && pki_ca_set(ca, "ca_issuers_url", 1, argv, &res) != PKI_OK)
    {
        fail_res("--ca-issuers-url", &res);
        goto done;
    }
    if (pki_ca_set_key(ca, cakey, &res) != PKI_OK) {
        fail_res("CA key", &res);
        goto done;
    }
    if (pki_ca_add_template(ca, t, &res) != PKI_OK) {
        fail_res("CA template", &res);
        goto done;
    }
    if (pki_ca_finish(ca, &res) != PKI_OK) {
        fail_res("CA", &res);
        goto done;
    }

    memset(&ictx, 0, sizeof(ictx));
    ictx.protocol = "pkictl";
    ictx.requester = "pkictl";

    if (pki_issue(ca, t, redis, &req, &ictx, &x, &res) != PKI_OK) {
        fail_res("issue", &res);
        goto done;
    }

    /* as nginx warns of its pki_redis (its connection read aof_enabled):
     * nothing is refused */
    if (redis != NULL && pki_redis_aof(redis) == 0) {
        fprintf(stderr, "pkictl: warning: --redis \"%s\": Redis runs "
                "without its append-only file (appendonly no): the "
                "record of this certificate and its serial reservation are "
                "lost if Redis restarts before its next snapshot; run it "
                "with appendonly yes and appendfsync always\n", o->redis);

    } else if (redis != NULL && pki_redis_aof(redis) == 2) {
        fprintf(stderr, "pkictl: warning: --redis \"%s\": Redis writes "
                "its append-only file without appendfsync always: the "
                "record of this certificate is lost if its host crashes "
                "within the next second or more; run it with appendfsync "
                "always\n", o->redis);
    }

    /* a validity cut at the CA's own end is said, not left to be found;
     * notBefore through notAfter, both included (RFC 5280 4.1.2.5), is
     * the span: a full one has notAfter - notBefore of days less 1 s */
    {
        int  vd, vs;

        if (ASN1_TIME_diff(&vd, &vs, X509_get0_notBefore(x),
                           X509_get0_notAfter(x))
            && (long long) vd * 86400 + vs + 1
               < (long long) o->days * 86400)
        {
            fprintf(stderr, "pkictl: note: the certificate ends with its CA "
                    "(notAfter before the %ld days asked)\n", o->days);
        }
    }

    bio = pkictl_cert_pem(x, &pem, &len);
    if (bio == NULL) {
        fail("cannot encode the certificate for \"%s\"", o->out);
        pkictl_issued_unwritten(o, x, NULL, 0);
        goto done;
    }

    if (!pkictl_out_commit(&out, pem, (size_t) len)) {
        if (!out.placed) {
            pkictl_issued_unwritten(o, x, pem, len);
        }
        goto done;
    }

    rc = 0;

done:

    pkictl_out_abort(&out);
    BIO_free(bio);
    X509_free(x);
    X509_NAME_free(subject);
    pki_request_clear(&req);
    EVP_PKEY_free(pub);
    GENERAL_NAMES_free(gens);
    sk_X509_EXTENSION_pop_free(exts, X509_EXTENSION_free);
    X509_REQ_free(csr);
    if (audit) {
        /* what the log could not take is said on stderr: the certificate
         * is recorded, its entry is not */
        pki_audit_set_default(NULL);
        pki_audit_set_required(0);
        lost = 0;
        pki_audit_close_report(audit, pkictl_audit_lost, &lost);
        if (lost) {
            fprintf(stderr, "pkictl: the transaction log in \"%s\" did not "
                    "take the entry of this issuance\n", o->audit_log);
            rc = 1;
        }
    }
    if (redis) {
        pki_redis_free(redis);
    }
    pki_ca_free(ca);
    pki_template_free(t);
    if (subjkey) {
        pki_key_close(subjkey);
        pki_key_free(subjkey);
    }
    if (cakey) {
        pki_key_close(cakey);
        pki_key_free(cakey);
    }
    if (vault) {
        pki_vault_close(vault);
        pki_vault_free(vault);
    }
    return rc;
}


/*
 * pkictl audit verify DIR [--pubkey PEM]... [--max-unsigned N]
 *     [--max-unsigned-age SECONDS] [--lock-wait SECONDS]: exit 0 for an
 * intact transaction log,
 * 1 naming the first bad entry, 2 for a usage or I/O problem (a file of
 * the log that cannot be opened or read).  --pubkey may be given up to
 * PKI_AUDIT_MAX_PUBKEYS times (the checkpoint key replaced: each
 * checkpoint is checked with the key of its id).  With --pubkey, the
 * options bound the entries after the last signed checkpoint
 * (pki_audit_verify_keys; no bound by default); without it they are a
 * usage error (2), not dropped.  --lock-wait bounds the wait for a
 * writer that holds audit.lock (default 30 s; then 2).  An audit.lock
 * this user cannot read is 2 too, unless --no-lock reads the log without
 * it (a rotation meanwhile may then show as a gap).
 */
static int
cmd_audit(int argc, char **argv)
{
    int                  i, rc;
    char                *end;
    FILE                *f;
    size_t               npub, k;
    EVP_PKEY            *pub[PKI_AUDIT_MAX_PUBKEYS];
    pki_status_t         st;
    pki_result_t         res;
    const char          *dir, *pubfile[PKI_AUDIT_MAX_PUBKEYS];
    pki_audit_limits_t   lim;
    pki_audit_report_t   rep;
    unsigned long long   n;

    if (argc < 4 || strcmp(argv[2], "verify") != 0) {
        usage();
        return 2;
    }

    dir = argv[3];
    npub = 0;
    memset(pub, 0, sizeof(pub));
    memset(&lim, 0, sizeof(lim));

    for (i = 4; i < argc; i += 2) {
        if (strcmp(argv[i], "--no-lock") == 0 && !lim.no_lock) {
            lim.no_lock = 1;
            i--;
            continue;
        }

        if (i + 1 >= argc) {
            usage();
            return 2;
        }

        if (strcmp(argv[i], "--pubkey") == 0) {
            if (npub == PKI_AUDIT_MAX_PUBKEYS) {
                fprintf(stderr, "pkictl: --pubkey given more than %d "
                        "times\n", PKI_AUDIT_MAX_PUBKEYS);
                return 2;
            }
            pubfile[npub++] = argv[i + 1];
            continue;
        }

        errno = 0;
        n = strtoull(argv[i + 1], &end, 10);

        if (errno != 0 || end == argv[i + 1] || *end != '\0' || n == 0) {
            usage();
            return 2;
        }

        if (strcmp(argv[i], "--max-unsigned") == 0
            && lim.max_unsigned == 0)
        {
            lim.max_unsigned = n;

        } else if (strcmp(argv[i], "--max-unsigned-age") == 0
                   && lim.max_unsigned_seconds == 0)
        {
            lim.max_unsigned_seconds = n;

        } else if (strcmp(argv[i], "--lock-wait") == 0
                   && lim.lock_wait_ms == 0 && n <= 86400)
        {
            lim.lock_wait_ms = n * 1000;

        } else {
            usage();
            return 2;
        }
    }

    /* the bounds apply to the entries after the last signed checkpoint,
     * which only a key finds: without one they were dropped, and "OK"
     * said of a log they would have failed */
    if (npub == 0 && (lim.max_unsigned || lim.max_unsigned_seconds)) {
        fprintf(stderr, "pkictl: audit verify: --max-unsigned and "
                "--max-unsigned-age need --pubkey (the checkpoints' "
                "key)\n");
        return 2;
    }

    for (k = 0; k < npub; k++) {
        f = fopen(pubfile[k], "r");
        if (f == NULL) {
            fprintf(stderr, "pkictl: cannot open %s\n", pubfile[k]);
            rc = 2;
            goto done;
        }

        pub[k] = PEM_read_PUBKEY(f, NULL, NULL, NULL);
        fclose(f);

        if (pub[k] == NULL) {
            fprintf(stderr, "pkictl: %s: not a PEM public key\n",
                    pubfile[k]);
            rc = 2;
            goto done;
        }
    }

    pki_result_init(&res);
    st = pki_audit_verify_keys(dir, pub, npub, &lim, &rep, &res);

    if (st == PKI_NOT_FOUND || st == PKI_INTERNAL) {
        fprintf(stderr, "pkictl: audit verify: %s\n", res.detail);
        rc = 2;
        goto done;
    }

    /* a file that cannot be opened or read: not a verdict on the log */
    if (st == PKI_UNAVAILABLE) {
        fprintf(stderr, "pkictl: audit verify: not verified after %llu "
                "good entries: %s\n", rep.entries, res.detail);
        rc = 2;
        goto done;
    }

    if (st != PKI_OK) {
        printf("FAILED after %llu good entries: %s\n", rep.entries, rep.bad);
        rc = 1;
        goto done;
    }

    printf("OK: %llu entries (last seq %llu), %llu signed checkpoints, "
           "%llu entries after the last checkpoint\n", rep.entries,
           rep.last_seq, rep.checkpoints, rep.unsigned_tail);

    if (rep.partial > 0) {
        printf("not checked: the last %llu bytes of audit.log, a line "
               "without its end that no sync covered (torn by a crash or "
               "a failed write; the next writer cuts it off)\n",
               rep.partial);
    }

    rc = 0;

done:

    while (npub > 0) {
        EVP_PKEY_free(pub[--npub]);
    }

    return rc;
}


/* The options of one string value, each at most once. */
static const struct {
    const char  *name;
    size_t       off;
} str_opts[] = {
    { "--key", offsetof(pkictl_opts_t, key) },
    { "--subject", offsetof(pkictl_opts_t, subject) },
    { "--out", offsetof(pkictl_opts_t, out) },
    { "--ca-cert", offsetof(pkictl_opts_t, ca_cert) },
    { "--ca-key", offsetof(pkictl_opts_t, ca_key) },
    { "--csr", offsetof(pkictl_opts_t, csr) },
    { "--pubkey-of", offsetof(pkictl_opts_t, pubkey_of) },
    { "--profile", offsetof(pkictl_opts_t, profile) },
    { "--module", offsetof(pkictl_opts_t, module) },
    { "--token", offsetof(pkictl_opts_t, token) },
    { "--pin-file", offsetof(pkictl_opts_t, pin_file) },
    { "--redis", offsetof(pkictl_opts_t, redis) },
    { "--redis-password-file", offsetof(pkictl_opts_t, redis_password_file) },
    { "--ca-name", offsetof(pkictl_opts_t, ca_name) },
    { "--namespace", offsetof(pkictl_opts_t, ns) },
    { "--audit-log", offsetof(pkictl_opts_t, audit_log) },
    { "--crl-url", offsetof(pkictl_opts_t, crl_url) },
    { "--ocsp-url", offsetof(pkictl_opts_t, ocsp_url) },
    { "--ca-issuers-url", offsetof(pkictl_opts_t, ca_issuers_url) },
};


int
main(int argc, char **argv)
{
    size_t          k;
    pkictl_opts_t   o;
    const char     *a, *v, **p;
    int             i;

    memset(&o, 0, sizeof(o));
    o.pathlen = -1;
    o.db = -1;

    if (argc >= 2 && strcmp(argv[1], "audit") == 0) {
        if (!pki_init()) {
            fprintf(stderr, "pkictl: library initialisation failed\n");
            return 2;
        }
        return cmd_audit(argc, argv);
    }

    /* pkictl matter ...: pkictl/matter.c */
    if (argc >= 2 && strcmp(argv[1], "matter") == 0) {
        if (!pki_init()) {
            fprintf(stderr, "pkictl: library initialisation failed\n");
            return 1;
        }
        return pkictl_matter(argc - 2, argv + 2);
    }

    if (argc < 2 || strcmp(argv[1], "-h") == 0
        || strcmp(argv[1], "--help") == 0)
    {
        usage();
        return argc < 2 ? 1 : 0;
    }
    o.cmd = argv[1];

    for (i = 2; i < argc; i++) {
        a = argv[i];
        if (i + 1 >= argc) {
            fprintf(stderr, "pkictl: option %s needs a value\n", a);
            return 1;
        }
        v = argv[++i];

        /* an option of one value given twice: which one was meant is
         * not guessed (the last one silently won) */
        for (k = 0; k < sizeof(str_opts) / sizeof(str_opts[0]); k++) {
            if (strcmp(a, str_opts[k].name) == 0) {
                break;
            }
        }

        if (k < sizeof(str_opts) / sizeof(str_opts[0])) {
            p = (const char **) ((char *) &o + str_opts[k].off);
            if (*p != NULL) {
                fprintf(stderr, "pkictl: %s given twice\n", a);
                return 1;
            }
            *p = v;

        } else if (strcmp(a, "--db") == 0) {
            if (o.db >= 0) {
                fprintf(stderr, "pkictl: %s given twice\n", a);
                return 1;
            }
            if (!parse_long(v, 0, 65535, &o.db)) {
                fprintf(stderr, "pkictl: bad --db \"%s\"\n", v);
                return 1;
            }
        } else if (strcmp(a, "--days") == 0) {
            if (o.days > 0) {
                fprintf(stderr, "pkictl: %s given twice\n", a);
                return 1;
            }
            if (!parse_long(v, 1, 36500, &o.days)) {
                fprintf(stderr, "pkictl: bad --days \"%s\"\n", v);
                return 1;
            }
        } else if (strcmp(a, "--pathlen") == 0) {
            if (o.pathlen >= 0) {
                fprintf(stderr, "pkictl: %s given twice\n", a);
                return 1;
            }
            if (!parse_long(v, 0, 16, &o.pathlen)) {
                fprintf(stderr, "pkictl: bad --pathlen \"%s\"\n", v);
                return 1;
            }
        } else if (strcmp(a, "--dns") == 0) {
            if (o.ndns == PKICTL_MAX_NAMES) {
                fprintf(stderr, "pkictl: too many --dns\n");
                return 1;
            }
            o.dns[o.ndns++] = v;
        } else if (strcmp(a, "--ip") == 0) {
            if (o.nip == PKICTL_MAX_NAMES) {
                fprintf(stderr, "pkictl: too many --ip\n");
                return 1;
            }
            o.ip[o.nip++] = v;
        } else {
            fprintf(stderr, "pkictl: unknown option %s\n", a);
            usage();
            return 1;
        }
    }

    if (!pki_init()) {
        fprintf(stderr, "pkictl: library initialisation failed\n");
        return 1;
    }

    if (strcmp(o.cmd, "selfsign") == 0) {
        return cmd_selfsign(&o);
    }
    if (strcmp(o.cmd, "issue") == 0) {
        return cmd_issue(&o);
    }

    fprintf(stderr, "pkictl: unknown command \"%s\"\n", o.cmd);
    usage();
    return 1;
}
