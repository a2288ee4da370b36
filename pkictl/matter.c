/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * pkictl matter: Matter certificate tools over libpkicore (pki.h only).
 *
 *   pkictl matter to-tlv IN.der OUT.chip        (alias der2tlv)
 *   pkictl matter to-der IN.chip OUT.der        (alias tlv2der)
 *   pkictl matter verify-attestation --dac F --pai F --paa F
 *                [--cd F --cd-signer F [--pid HEX]]
 *   pkictl matter verify-operational --noc F [--icac F] --rcac F
 *   pkictl matter hierarchy attestation|operational --dir DIR
 *                --module PATH --token LABEL --pin-file F [--keygen on|off]
 *                [--vid FFF1] [--pid 8000] [--cn TEXT]
 *                [--fabric-id HEX16] [--rcac-id HEX16] [--icac-id HEX16]
 *
 * "hierarchy" generates two EC P-256 key pairs inside the PKCS#11 token
 * (labels matter-paa + matter-pai, or matter-rcac + matter-icac; with
 * pkcs11-tool, the PIN given on its standard input) and writes DIR/paa.pem
 * + DIR/pai.pem or DIR/rcac.pem + DIR/icac.pem.  Exit status 0 on success;
 * otherwise 1 with the failed rule on stderr.
 */

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pki.h"


#define MATTER_MAX_FILE  (64 * 1024)


typedef struct {
    const char  *dac, *pai, *paa, *noc, *icac, *rcac, *cd, *cd_signer;
    const char  *dir, *module, *token, *pin_file, *keygen, *cn;
    const char  *vid, *pid, *fabric_id, *rcac_id, *icac_id;
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


static int
mwrite(const char *path, const unsigned char *d, size_t n)
{
    FILE  *f;

    f = fopen(path, "wb");
    if (f == NULL || fwrite(d, 1, n, f) != n) {
        if (f) {
            fclose(f);
        }
        fprintf(stderr, "pkictl matter: cannot write \"%s\"\n", path);
        return 0;
    }

    return fclose(f) == 0;
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

    if (len > 10 && memcmp(buf, "-----BEGIN", 10) == 0) {
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

    if (to_tlv && len > 10 && memcmp(in, "-----BEGIN", 10) == 0) {
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

    rc = mwrite(argv[1], out, olen) ? 0 : 1;
    free(out);

    return rc;
}


static int
cmd_verify_attestation(const matter_opts_t *o)
{
    int            rc, pid;
    X509          *dac, *pai, *paa, *signer;
    size_t         len;
    unsigned char *cd;
    pki_result_t   res;

    if (o->dac == NULL || o->pai == NULL || o->paa == NULL) {
        return mfail("usage", "verify-attestation --dac F --pai F --paa F");
    }

    dac = mcert(o->dac);
    pai = dac ? mcert(o->pai) : NULL;
    paa = pai ? mcert(o->paa) : NULL;
    rc = 1;

    if (paa) {
        pki_result_init(&res);
        if (pki_matter_verify_attestation(dac, pai, paa, 0, &res) != PKI_OK) {
            mfail("attestation chain rejected", res.detail);

        } else if (o->cd) {
            signer = o->cd_signer ? mcert(o->cd_signer) : NULL;
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
    pki_result_t   res;

    if (o->noc == NULL || o->rcac == NULL) {
        return mfail("usage", "verify-operational --noc F [--icac F] "
                     "--rcac F");
    }

    noc = mcert(o->noc);
    icac = o->icac ? mcert(o->icac) : NULL;
    rcac = mcert(o->rcac);
    rc = 1;

    if (noc && rcac && (o->icac == NULL || icac)) {
        pki_result_init(&res);
        if (pki_matter_verify_operational(noc, icac, rcac, &res) != PKI_OK) {
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

static int
keygen(const matter_opts_t *o, const char *label, const char *id)
{
    int     fd[2], status;
    pid_t   pid;
    char    pin[256];
    size_t  n;
    FILE   *f;

    f = fopen(o->pin_file, "r");
    if (f == NULL || fgets(pin, sizeof(pin), f) == NULL) {
        if (f) {
            fclose(f);
        }
        return mfail("cannot read the PIN file", NULL) && 0;
    }
    fclose(f);
    n = strcspn(pin, "\r\n");
    pin[n] = '\n';

    if (pipe(fd) != 0) {
        return 0;
    }

    pid = fork();
    if (pid < 0) {
        close(fd[0]);
        close(fd[1]);
        return 0;
    }

    if (pid == 0) {
        dup2(fd[0], 0);
        close(fd[0]);
        close(fd[1]);
        if (freopen("/dev/null", "w", stdout) == NULL) {
            _exit(127);
        }
        execlp("pkcs11-tool", "pkcs11-tool", "--module", o->module,
               "--token-label", o->token, "--login", "--keypairgen",
               "--key-type", "EC:prime256v1", "--label", label, "--id", id,
               (char *) NULL);
        _exit(127);
    }

    close(fd[0]);
    if (write(fd[1], pin, n + 1) != (ssize_t) (n + 1)) {
        /* the child reports */
    }
    memset(pin, 0, sizeof(pin));
    close(fd[1]);

    if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status)
        || WEXITSTATUS(status) != 0)
    {
        fprintf(stderr, "pkictl matter: pkcs11-tool --keypairgen %s failed\n",
                label);
        return 0;
    }

    return 1;
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


static int
write_pem(const char *dir, const char *file, X509 *x)
{
    char   path[4096];
    FILE  *f;

    snprintf(path, sizeof(path), "%s/%s", dir, file);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, x)) {
        if (f) {
            fclose(f);
        }
        fprintf(stderr, "pkictl matter: cannot write \"%s\"\n", path);
        return 0;
    }

    return fclose(f) == 0;
}


static int
cmd_hierarchy(const char *kind, const matter_opts_t *o)
{
    int              att, rc;
    char             root_ref[512], ca_ref[512], path[4096];
    const char      *rlabel, *clabel, *argv1[1];
    X509            *root, *ca;
    X509_NAME       *rname, *cname;
    pki_key_t       *rkey, *ckey;
    pki_vault_t     *vault;
    pki_template_t  *rt, *ct;
    pki_ca_t        *rca;
    pki_request_t    req;
    pki_result_t     res;

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

    rlabel = att ? "matter-paa" : "matter-rcac";
    clabel = att ? "matter-pai" : "matter-icac";

    if (o->keygen == NULL || strcmp(o->keygen, "on") == 0) {
        if (!keygen(o, rlabel, att ? "a1" : "c1")
            || !keygen(o, clabel, att ? "a2" : "c2"))
        {
            return 1;
        }
    }

    snprintf(root_ref, sizeof(root_ref), "pkcs11:token=%s;object=%s;"
             "type=private", o->token, rlabel);
    snprintf(ca_ref, sizeof(ca_ref), "pkcs11:token=%s;object=%s;"
             "type=private", o->token, clabel);

    rc = 1;
    root = ca = NULL;
    rname = X509_NAME_new();
    cname = X509_NAME_new();
    rkey = ckey = NULL;
    rt = ct = NULL;
    rca = NULL;
    memset(&req, 0, sizeof(req));
    pki_result_init(&res);

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

    rt = pki_matter_template_new(att ? "matter-paa" : "matter-rcac", &res);
    ct = pki_matter_template_new(att ? "matter-pai" : "matter-icac", &res);
    if (rt == NULL || ct == NULL || rname == NULL || cname == NULL) {
        mfail("template", res.detail);
        goto done;
    }

    if (att) {
        if (!X509_NAME_add_entry_by_txt(rname, "CN", MBSTRING_UTF8,
                (const unsigned char *) (o->cn ? o->cn : "Matter PAA"), -1,
                -1, 0)
            || !add_attr(rname, "1.3.6.1.4.1.37244.2.1", o->vid)
            || !X509_NAME_add_entry_by_txt(cname, "CN", MBSTRING_UTF8,
                (const unsigned char *) (o->cn ? o->cn : "Matter PAI"), -1,
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
                         o->icac_id ? o->icac_id : "CACACACA00000002")
            || (o->fabric_id && !add_attr(cname, "1.3.6.1.4.1.37244.1.5",
                                          o->fabric_id)))
        {
            mfail("bad --rcac-id/--icac-id/--fabric-id", NULL);
            goto done;
        }
    }

    if (pki_selfsign(rkey, rt, rname, &root, &res) != PKI_OK) {
        mfail(att ? "PAA refused" : "RCAC refused", res.detail);
        goto done;
    }
    if (!write_pem(o->dir, att ? "paa.pem" : "rcac.pem", root)) {
        goto done;
    }

    snprintf(path, sizeof(path), "%s/%s", o->dir, att ? "paa.pem"
                                                       : "rcac.pem");
    argv1[0] = path;
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
    if (!write_pem(o->dir, att ? "pai.pem" : "icac.pem", ca)) {
        goto done;
    }

    rc = 0;

done:

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


int
pkictl_matter(int argc, char **argv)
{
    int             i;
    const char     *a, *v, *sub, *kind;
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
    o.module = "/usr/lib/softhsm/libsofthsm2.so";
    kind = NULL;
    i = 1;

    if (strcmp(sub, "hierarchy") == 0) {
        if (argc < 2) {
            return mfail("usage", "hierarchy attestation|operational ...");
        }
        kind = argv[1];
        i = 2;
    }

    for ( ; i < argc; i += 2) {
        a = argv[i];
        if (i + 1 >= argc) {
            return mfail("option needs a value", a);
        }
        v = argv[i + 1];

#define OPT(name, field)                                                     \
        if (strcmp(a, name) == 0) { o.field = v; continue; }

        OPT("--dac", dac) OPT("--pai", pai) OPT("--paa", paa)
        OPT("--noc", noc) OPT("--icac", icac) OPT("--rcac", rcac)
        OPT("--cd", cd) OPT("--cd-signer", cd_signer) OPT("--dir", dir)
        OPT("--module", module) OPT("--token", token)
        OPT("--pin-file", pin_file) OPT("--keygen", keygen) OPT("--cn", cn)
        OPT("--vid", vid) OPT("--pid", pid) OPT("--fabric-id", fabric_id)
        OPT("--rcac-id", rcac_id) OPT("--icac-id", icac_id)

#undef OPT

        return mfail("unknown option", a);
    }

    if (strcmp(sub, "verify-attestation") == 0) {
        return cmd_verify_attestation(&o);
    }
    if (strcmp(sub, "verify-operational") == 0) {
        return cmd_verify_operational(&o);
    }
    if (kind) {
        return cmd_hierarchy(kind, &o);
    }

    return mfail("unknown command", sub);
}
