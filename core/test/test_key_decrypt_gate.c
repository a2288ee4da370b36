/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * A token RSA key (SCEP's RA key) in its own backoff (key.c, pki_key_gate)
 * after its label went away and came back, then asked for decryptions
 * whose padding fails (a PKIOperation's enc_key of garbage, which anyone
 * can send) between good ones.  The token did the private-key operation
 * for those: the key works, its backoff ends.  Before, a bad padding left
 * the backoff standing and every later try after it reopened the whole
 * vault (10 reopens in 10 rounds) and answered the good ones 503.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>

#include "pki.h"
#include "test/unit.h"
#include "test/p11.h"

static p11_t  p;

static void
msleep(long ms)
{
    usleep(ms * 1000);
}

int
main(void)
{
    const char     *conf, *module, *token, *pinf, *uri;
    pki_vault_t    *v;
    pki_key_t      *k;
    pki_result_t    res;
    EVP_PKEY       *pub;
    EVP_PKEY_CTX   *pc;
    unsigned char   good[1024], bogus[1024], *out;
    size_t          glen, blen, olen;
    pki_status_t    st, st2;
    int             i, reopens, unavail_after, malformed;
    p11_ulong       probe;
    static const unsigned char  cek[16] = "0123456789abcdef";

    conf = getenv("PKI_TEST_SOFTHSM_CONF");
    module = getenv("PKI_TEST_P11_MODULE");
    token = getenv("PKI_TEST_TOKEN");
    pinf = getenv("PKI_TEST_PIN_FILE");
    uri = getenv("PKI_TEST_KEY_URI_RSA");

    if (conf == NULL || module == NULL || token == NULL || pinf == NULL
        || uri == NULL)
    {
        skip_all("no SoftHSM token");
    }

    setenv("SOFTHSM2_CONF", conf, 1);
    pki_init();

    pki_result_init(&res);
    v = pki_vault_new("rev", module, token, pinf, &res);
    ok(v != NULL && pki_vault_open(v, &res) == PKI_OK, "vault [%s]",
       res.detail);
    ok(p11_load(&p, module, token), "module");

    k = pki_key_new(uri, v, &res);
    pki_result_init(&res);
    ok(k != NULL && pki_key_open(k, &res) == PKI_OK, "rsa key opens [%s]",
       res.detail);

    pub = pki_key_public(k);
    glen = sizeof(good);
    pc = EVP_PKEY_CTX_new(pub, NULL);
    ok(pc != NULL && EVP_PKEY_encrypt_init(pc) == 1
       && EVP_PKEY_CTX_set_rsa_padding(pc, RSA_PKCS1_PADDING) == 1
       && EVP_PKEY_encrypt(pc, good, &glen, cek, sizeof(cek)) == 1,
       "a good ciphertext (%zu bytes)", glen);
    EVP_PKEY_CTX_free(pc);

    blen = glen;
    RAND_bytes(bogus, (int) blen);
    bogus[0] = 0x00;
    bogus[1] = 0x7f;                 /* not 0x02: bad PKCS#1 v1.5 padding */

    pki_result_init(&res);
    st = pki_key_decrypt(k, good, glen, &out, &olen, &res);
    ok(st == PKI_OK, "good decrypts [%s]", res.detail);
    if (st == PKI_OK) free(out);

    pki_result_init(&res);
    st = pki_key_decrypt(k, bogus, blen, &out, &olen, &res);
    ok(st == PKI_MALFORMED, "bogus: %s [%s | %s]", pki_status_name(st),
       res.detail, res.log);

    /* into the key's backoff: label away + logout (as test_key_broken A) */
    ok(p11_relabel(&p, "rsa", "rsa-away") && p11_logout(&p),
       "label away, logged out");
    pki_result_init(&res);
    st = pki_key_decrypt(k, good, glen, &out, &olen, &res);
    ok(st == PKI_UNAVAILABLE, "good while away: %s [%s]",
       pki_status_name(st), res.log);
    ok(p11_find_slot(&p, token) && p11_relabel(&p, "rsa-away", "rsa"),
       "label back");

    reopens = 0;
    unavail_after = 0;
    malformed = 0;

    for (i = 0; i < 10; i++) {
        msleep(120);
        probe = p11_probe_arm(&p);

        pki_result_init(&res);
        st = pki_key_decrypt(k, bogus, blen, &out, &olen, &res);
        malformed += st == PKI_MALFORMED;

        if (probe == 0 || !p11_probe_alive(&p, probe)) {
            reopens++;
        } else {
            (void) p.find_final(probe);
            p.close(probe);
        }

        pki_result_init(&res);
        st2 = pki_key_decrypt(k, good, glen, &out, &olen, &res);
        unavail_after += st2 == PKI_UNAVAILABLE;
        if (st2 == PKI_OK) free(out);
        diag("round %d: bogus %s, then good %s [%s]", i,
             pki_status_name(st), pki_status_name(st2), res.log);
    }

    diag("10 rounds 120 ms apart: %d vault reopens, %d bogus MALFORMED, "
         "%d good ones UNAVAILABLE right after", reopens, malformed,
         unavail_after);
    ok(reopens <= 3, "reopens bounded (%d)", reopens);
    ok(unavail_after == 0, "a good decryption right after works (%d "
       "unavailable)", unavail_after);

    pki_key_free(k);
    pki_vault_free(v);
    return done_testing();
}
