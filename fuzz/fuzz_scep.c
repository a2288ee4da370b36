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
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/err.h>
#include <openssl/pem.h>

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


static const pki_fuzz_fixture_t  *fx;
static X509                      *ra_cert;
static pki_key_t                 *ra_key;


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

    return 0;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t           mode;
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

    memset(&conf, 0, sizeof(conf));
    conf.ca = fx->ca;
    conf.tmpl = fx->device;
    conf.redis = fx->dead_redis;
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
    ERR_clear_error();

    return 0;
}
