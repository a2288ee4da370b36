/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token RSA key (SCEP's RA key) on a token whose policy forbids raw RSA
 * (CKM_RSA_X_509), as many HSMs are set up: SoftHSM behind
 * build/p11shim.so with p11shim_set_deny_raw_rsa(1), whose C_DecryptInit
 * then answers CKR_KEY_FUNCTION_NOT_PERMITTED to that mechanism.
 * RSAES-OAEP on a token key needs raw RSA (OpenSSL checks the padding):
 * pki_key_decrypt_oaep answers PKI_UNAVAILABLE naming the CKR, after one
 * try (the token is asked once, no retry) and without a reopen of the
 * vault (no C_Initialize), however often it is asked; PKCS#1 v1.5 goes
 * through CKM_RSA_PKCS and still decrypts; with the policy lifted OAEP
 * decrypts again.  Before, the refusal was taken for a bad padding
 * (PKI_MALFORMED: SCEP's badMessageCheck).
 */

#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


typedef void (*shim_set_deny_pt)(int on);
typedef void (*shim_decrypt_stats_pt)(long *calls, long *denied);
typedef void (*shim_stats_pt)(long *open, long *peak, long *refused,
    long *inits);


/* in encrypted to pub (md NULL: PKCS#1 v1.5, else RSAES-OAEP with md as
 * hash and MGF1 hash) into out; its length, 0 on failure */
static size_t
encrypt(EVP_PKEY *pub, const EVP_MD *md, const unsigned char *in,
    size_t inlen, unsigned char *out, size_t cap)
{
    size_t         n;
    EVP_PKEY_CTX  *pc;

    n = cap;
    pc = EVP_PKEY_CTX_new(pub, NULL);

    if (pc == NULL || EVP_PKEY_encrypt_init(pc) != 1
        || (md == NULL
            && EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) != 1)
        || (md != NULL
            && (EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_OAEP_PADDING)
                != 1
                || EVP_PKEY_CTX_set_rsa_oaep_md(pc, md) != 1
                || EVP_PKEY_CTX_set_rsa_mgf1_md(pc, md) != 1))
        || EVP_PKEY_encrypt(pc, out, &n, in, inlen) != 1)
    {
        n = 0;
    }

    EVP_PKEY_CTX_free(pc);
    return n;
}


int
main(void)
{
    int                    i;
    long                   n, calls, denied, calls0, denied0, inits0, inits,
                           x;
    char                   exe[PATH_MAX], shim[PATH_MAX + 16];
    void                  *dl;
    size_t                 olen, c1, c2, c256;
    p11_env_t              e;
    EVP_PKEY              *pub;
    pki_key_t             *k;
    pki_vault_t           *v;
    pki_status_t           st;
    pki_result_t           res;
    unsigned char          v15[512], oaep1[512], oaep256[512], *out;
    shim_stats_pt          stats;
    shim_set_deny_pt       set_deny;
    shim_decrypt_stats_pt  dstats;
    static const unsigned char  cek[16] = "0123456789abcdef";

    p11_env(&e, 0);

    if (e.uri_rsa == NULL) {
        skip_all("no RSA key on the token (PKI_TEST_KEY_URI_RSA)");
    }

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n <= 0) {
        skip_all("no /proc/self/exe");
    }
    exe[n] = '\0';
    snprintf(shim, sizeof(shim), "%s/p11shim.so", dirname(exe));

    if (access(shim, R_OK) != 0) {
        skip_all("no build/p11shim.so");
    }

    setenv("PKI_P11SHIM_MODULE", e.module, 1);
    unsetenv("PKI_P11SHIM_MAX_SESSIONS");
    unsetenv("PKI_P11SHIM_DENY_RAW_RSA");

    /* the shim stays loaded (its counters with it) while the test runs */
    dl = dlopen(shim, RTLD_NOW | RTLD_LOCAL);
    stats = dl != NULL ? (shim_stats_pt) dlsym(dl, "p11shim_stats") : NULL;
    set_deny = dl != NULL
               ? (shim_set_deny_pt) dlsym(dl, "p11shim_set_deny_raw_rsa")
               : NULL;
    dstats = dl != NULL
             ? (shim_decrypt_stats_pt) dlsym(dl, "p11shim_decrypt_stats")
             : NULL;

    if (!ok(stats != NULL && set_deny != NULL && dstats != NULL,
            "the shim module loads (%s)", shim))
    {
        return done_testing();
    }

    pki_result_init(&res);
    v = pki_vault_new("policy", shim, e.token, e.pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens through the shim [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    pki_result_init(&res);
    k = pki_key_new(e.uri_rsa, v, &res);
    if (!ok(k != NULL && pki_key_open(k, &res) == PKI_OK,
            "the RSA key opens [%s %s]", res.detail, res.log))
    {
        return done_testing();
    }

    pub = pki_key_public(k);
    c1 = encrypt(pub, NULL, cek, sizeof(cek), v15, sizeof(v15));
    c2 = encrypt(pub, EVP_sha1(), cek, sizeof(cek), oaep1, sizeof(oaep1));
    c256 = encrypt(pub, EVP_sha256(), cek, sizeof(cek), oaep256,
                   sizeof(oaep256));
    ok(c1 > 0 && c2 > 0 && c256 > 0, "three ciphertexts of a content key");

    /* the policy allows raw RSA: both decrypt */
    pki_result_init(&res);
    st = pki_key_decrypt_oaep(k, EVP_sha256(), EVP_sha256(), oaep256, c256,
                              &out, &olen, &res);
    ok(st == PKI_OK && olen == sizeof(cek) && memcmp(out, cek, olen) == 0,
       "raw RSA allowed: OAEP SHA-256 decrypts [%s %s]", res.detail,
       res.log);
    if (st == PKI_OK) {
        free(out);
    }

    stats(&x, &x, &x, &inits0);
    set_deny(1);

    for (i = 0; i < 5; i++) {
        const EVP_MD         *md = i % 2 ? EVP_sha1() : EVP_sha256();
        const unsigned char  *ct = i % 2 ? oaep1 : oaep256;

        dstats(&calls0, &denied0);
        pki_result_init(&res);
        st = pki_key_decrypt_oaep(k, md, md, ct, i % 2 ? c2 : c256, &out,
                                  &olen, &res);
        dstats(&calls, &denied);
        ok(st == PKI_UNAVAILABLE, "raw RSA refused, OAEP %s #%d: "
           "PKI_UNAVAILABLE (%d), not a bad ciphertext [%s]",
           EVP_MD_get0_name(md), i, (int) st, res.detail);
        ok(strstr(res.log, "CKR 0x68") != NULL
           && strstr(res.log, "CKM_RSA_X_509") != NULL,
           "  the log names the CKR and the mechanism [%s]", res.log);
        ok(calls - calls0 == 1 && denied - denied0 == 1,
           "  the token was asked once (%ld C_DecryptInit, %ld refused)",
           calls - calls0, denied - denied0);
        if (st == PKI_OK) {
            free(out);
        }
    }

    stats(&x, &x, &x, &inits);
    ok(inits == inits0, "the vault was not reopened (C_Initialize %ld, was "
       "%ld)", inits, inits0);

    /* PKCS#1 v1.5 is CKM_RSA_PKCS: the policy does not touch it, and the
     * key took no backoff from the refusals */
    dstats(&calls0, &denied0);
    pki_result_init(&res);
    st = pki_key_decrypt(k, v15, c1, &out, &olen, &res);
    dstats(&calls, &denied);
    ok(st == PKI_OK && olen == sizeof(cek) && memcmp(out, cek, olen) == 0,
       "PKCS#1 v1.5 still decrypts [%s %s]", res.detail, res.log);
    ok(denied == denied0, "  nothing refused");
    if (st == PKI_OK) {
        free(out);
    }

    set_deny(0);
    pki_result_init(&res);
    st = pki_key_decrypt_oaep(k, EVP_sha1(), EVP_sha1(), oaep1, c2, &out,
                              &olen, &res);
    ok(st == PKI_OK && olen == sizeof(cek) && memcmp(out, cek, olen) == 0,
       "the policy lifted: OAEP decrypts again [%s %s]", res.detail,
       res.log);
    if (st == PKI_OK) {
        free(out);
    }

    stats(&x, &x, &x, &inits);
    ok(inits == inits0, "still no reopen (C_Initialize %ld)", inits);

    pki_key_free(k);
    pki_vault_free(v);

    return done_testing();
}
