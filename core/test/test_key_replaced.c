/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token key replaced under the same label while the CA runs: another key
 * pair now answers to the label, and the CA certificate still holds the
 * old public key.  Before, once the vault was opened again (a lost login,
 * a token error) the new key was fetched and used as the key: an RSA
 * decryption of what a client encrypted to the certificate failed as the
 * input's fault (PKI_MALFORMED "cannot decrypt": a SCEP client is told its
 * message is bad), and a signature failed with "does not verify", which
 * named neither the label nor the certificate.  What must hold, for an
 * RSA key (decryption and signing) and an EC key (signing):
 *   - the operation answers PKI_UNAVAILABLE (the token's state, not the
 *     request's), and the log names the label and says that the key no
 *     longer matches its certificate;
 *   - the key's backoff holds further requests off (said again, at once);
 *   - once the old key is back under its label, the key works again by
 *     itself: decryptions give the plaintext, signatures verify with the
 *     certificate's (the opened key's) public key.
 * Environment as for test_key.c; without it the test skips.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"


#define MSG  "a SCEP client's content-encryption key"


static p11_t        p;
static p11_env_t    env;


/* PKCS#1 v1.5 encryption of MSG to pub, as a SCEP client does. */
static int
encrypt(EVP_PKEY *pub, unsigned char *out, size_t *outlen)
{
    int            rc;
    EVP_PKEY_CTX  *c;

    c = EVP_PKEY_CTX_new(pub, NULL);
    rc = c != NULL && EVP_PKEY_encrypt_init(c) == 1
         && EVP_PKEY_CTX_set_rsa_padding(c, RSA_PKCS1_PADDING) == 1
         && EVP_PKEY_encrypt(c, out, outlen, (const unsigned char *) MSG,
                             sizeof(MSG) - 1) == 1;
    EVP_PKEY_CTX_free(c);

    return rc;
}


/* pki_key_decrypt of ct; 1 when it gave MSG back. */
static pki_status_t
decrypt(pki_key_t *k, const unsigned char *ct, size_t len, int *same,
    pki_result_t *res)
{
    size_t          n = 0;
    pki_status_t    st;
    unsigned char  *pt = NULL;

    pki_result_init(res);
    st = pki_key_decrypt(k, ct, len, &pt, &n, res);

    *same = st == PKI_OK && n == sizeof(MSG) - 1
            && memcmp(pt, MSG, n) == 0;

    free(pt);
    return st;
}


/* The label's words in res (detail or log). */
static int
says(const pki_result_t *res, const char *label)
{
    char  want[160];

    snprintf(want, sizeof(want), "label \"%s\"", label);

    return (strstr(res->log, "no longer matches its certificate") != NULL
            || strstr(res->detail, "no longer matches its certificate")
               != NULL)
           && (strstr(res->log, want) != NULL
               || strstr(res->detail, want) != NULL);
}


/* The key pair label moves to label-old and other takes its label; the
 * login is dropped, so that the vault opens again and fetches the key. */
static int
replace(const char *label, const char *other)
{
    char  old[128];

    snprintf(old, sizeof(old), "%s-old", label);

    return p11_find_slot(&p, env.token) && p11_relabel(&p, label, old)
           && p11_relabel(&p, other, label) && p11_logout(&p);
}


static int
restore(const char *label, const char *other)
{
    char  old[128];

    snprintf(old, sizeof(old), "%s-old", label);

    return p11_find_slot(&p, env.token) && p11_relabel(&p, label, other)
           && p11_relabel(&p, old, label) && p11_logout(&p);
}


int
main(void)
{
    int             same, verified, i;
    size_t          ctlen;
    double          t0;
    EVP_PKEY       *pub_r, *pub_e;
    pki_key_t      *r, *e;
    pki_vault_t    *v;
    pki_status_t    st;
    pki_result_t    res;
    unsigned char   ct[512];
    char            uri_r[256], uri_e[256];
    static const char  *labels[] = {
        "repl-rsa", "repl-rsa-new", "repl-rsa-old",
        "repl-ec", "repl-ec-new", "repl-ec-old"
    };

    p11_env(&env, 0);

    pki_result_init(&res);
    v = pki_vault_new("replaced", env.module, env.token, env.pin_file, &res);
    if (!ok(v != NULL && pki_vault_open(v, &res) == PKI_OK,
            "vault opens [%s]", res.detail)
        || !ok(p11_load(&p, env.module, env.token),
               "the token's module, directly"))
    {
        return done_testing();
    }

    for (i = 0; i < 6; i++) {
        (void) p11_destroy_label(&p, labels[i]);
    }

    if (!ok(p11_rsa_keygen(&p, "repl-rsa", 0xd1)
            && p11_rsa_keygen(&p, "repl-rsa-new", 0xd2)
            && p11_ec_keygen(&p, "repl-ec", 0xd3)
            && p11_ec_keygen(&p, "repl-ec-new", 0xd4),
            "two RSA and two P-256 key pairs made on the token"))
    {
        return done_testing();
    }

    snprintf(uri_r, sizeof(uri_r), "pkcs11:token=%s;object=repl-rsa;"
             "type=private", env.token);
    snprintf(uri_e, sizeof(uri_e), "pkcs11:token=%s;object=repl-ec;"
             "type=private", env.token);

    r = p11_key_new(uri_r, v);
    e = p11_key_new(uri_e, v);
    pki_result_init(&res);
    if (!ok(r != NULL && e != NULL && pki_key_open(r, &res) == PKI_OK
            && pki_key_open(e, &res) == PKI_OK,
            "both keys open [%s]", res.detail))
    {
        return done_testing();
    }

    /* what the CA certificate holds: the keys as they were opened */
    pub_r = EVP_PKEY_dup(pki_key_public(r));
    pub_e = EVP_PKEY_dup(pki_key_public(e));

    ctlen = sizeof(ct);
    ok(pub_r != NULL && encrypt(pub_r, ct, &ctlen), "a message encrypted "
       "to the RSA key's certificate");

    st = decrypt(r, ct, ctlen, &same, &res);
    ok(st == PKI_OK && same, "RSA: decrypts [%s]", res.detail);
    ok(p11_sign(r, pub_r, &verified, &res) == PKI_OK && verified,
       "RSA: signs, verified [%s]", res.detail);
    ok(p11_sign(e, pub_e, &verified, &res) == PKI_OK && verified,
       "EC: signs, verified [%s]", res.detail);

    /* ---- RSA: another key under the label ---- */

    ok(replace("repl-rsa", "repl-rsa-new"), "RSA: another key pair under "
       "the label, the login dropped");

    st = decrypt(r, ct, ctlen, &same, &res);
    ok(st == PKI_UNAVAILABLE, "RSA: the decryption is unavailable, not "
       "the input's fault (%s: %s)", pki_status_name(st), res.detail);
    ok(says(&res, "repl-rsa"), "RSA: the log names the label and says the "
       "key no longer matches its certificate [%s | %s]", res.detail,
       res.log);

    st = decrypt(r, ct, ctlen, &same, &res);
    ok(st == PKI_UNAVAILABLE && says(&res, "repl-rsa"), "RSA: again, in "
       "its backoff, said again (%s) [%s]", pki_status_name(st), res.log);

    st = p11_sign(r, NULL, NULL, &res);
    ok(st == PKI_UNAVAILABLE && says(&res, "repl-rsa"), "RSA: signing is "
       "unavailable too, saying why (%s) [%s]", pki_status_name(st),
       res.log);

    ok(restore("repl-rsa", "repl-rsa-new"), "RSA: its key back under the "
       "label");

    t0 = unit_now();
    while (decrypt(r, ct, ctlen, &same, &res) != PKI_OK
           && unit_now() - t0 < 15)
    {
        usleep(20000);
    }

    ok(same, "RSA: back, it decrypts by itself in %.3f s [%s]",
       unit_now() - t0, res.log);
    ok(p11_sign(r, pub_r, &verified, &res) == PKI_OK && verified,
       "RSA: and signs, verified with the certificate's key [%s]",
       res.log);

    /* ---- EC: another key under the label ---- */

    ok(replace("repl-ec", "repl-ec-new"), "EC: another key pair under the "
       "label, the login dropped");

    st = p11_sign(e, NULL, NULL, &res);
    ok(st == PKI_UNAVAILABLE, "EC: signing is unavailable (%s)",
       pki_status_name(st));
    ok(says(&res, "repl-ec"), "EC: the log names the label and says the "
       "key no longer matches its certificate [%s]", res.log);

    ok(restore("repl-ec", "repl-ec-new"), "EC: its key back under the "
       "label");

    t0 = unit_now();
    while (p11_sign(e, NULL, NULL, &res) != PKI_OK && unit_now() - t0 < 15) {
        usleep(20000);
    }

    ok(p11_sign(e, pub_e, &verified, &res) == PKI_OK && verified,
       "EC: back, it signs by itself in %.3f s, verified [%s]",
       unit_now() - t0, res.log);

    ok(p11_find_slot(&p, env.token)
       && p11_destroy_label(&p, "repl-rsa") == 2
       && p11_destroy_label(&p, "repl-rsa-new") == 2
       && p11_destroy_label(&p, "repl-ec") == 2
       && p11_destroy_label(&p, "repl-ec-new") == 2,
       "the test's key pairs removed");

    pki_key_free(r);
    pki_key_free(e);
    pki_vault_free(v);
    EVP_PKEY_free(pub_r);
    EVP_PKEY_free(pub_e);
    dlclose(p.dl);

    return done_testing();
}
