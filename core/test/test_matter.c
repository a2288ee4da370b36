/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter: TLV <-> DER on every vector pair (byte-exact both ways), corrupt
 * and truncated TLV, every attestation vector classified as
 * t/vectors/matter/README.md says, operational chains, and issuance under
 * the built-in profiles with each refusal rule (a CN's Mvid:/Mpid: beside
 * the VID/PID attributes, the CN rule of server keygen, validity beyond
 * what Matter TLV can encode).
 */

#include <dirent.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cjson/cJSON.h>
#include <hiredis/hiredis.h>
#include <openssl/cms.h>
#include <openssl/core_names.h>
#include <openssl/ec.h>
#include <openssl/evp.h>
#include <openssl/pem.h>
#include <openssl/x509.h>

#include "pki.h"
#include "test/unit.h"
#include "test/fixture.h"
#include "test/proxy.h"


static char  vec[PATH_MAX];
static char  tmpdir[PATH_MAX];


static unsigned char *
slurp(const char *dir, const char *name, size_t *len)
{
    FILE           *f;
    long            n;
    char            path[PATH_MAX * 2];
    unsigned char  *buf;

    snprintf(path, sizeof(path), "%s/%s", dir, name);
    f = fopen(path, "rb");
    if (f == NULL) {
        return NULL;
    }
    fseek(f, 0, SEEK_END);
    n = ftell(f);
    fseek(f, 0, SEEK_SET);
    buf = malloc((size_t) n + 1);
    if (buf == NULL || fread(buf, 1, (size_t) n, f) != (size_t) n) {
        free(buf);
        fclose(f);
        return NULL;
    }
    fclose(f);
    buf[n] = '\0';
    *len = (size_t) n;
    return buf;
}


static X509 *
cert_file(const char *sub, const char *name)
{
    X509           *x;
    BIO            *bio;
    size_t          len;
    char            dir[PATH_MAX * 2];
    unsigned char  *buf;

    snprintf(dir, sizeof(dir), "%s/%s", vec, sub);
    buf = slurp(dir, name, &len);
    if (buf == NULL) {
        return NULL;
    }
    bio = BIO_new_mem_buf(buf, (int) len);
    x = PEM_read_bio_X509(bio, NULL, NULL, NULL);
    BIO_free(bio);
    free(buf);
    return x;
}


static X509 *
cert_hex(const char *hex)
{
    long                  n;
    X509                 *x;
    unsigned char        *der;
    const unsigned char  *p;

    der = OPENSSL_hexstr2buf(hex, &n);
    if (der == NULL) {
        return NULL;
    }
    p = der;
    x = d2i_X509(NULL, &p, n);
    OPENSSL_free(der);
    return x;
}


static int
find_vectors(void)
{
    char        exe[PATH_MAX], *d;
    const char *env;
    ssize_t     n;
    struct stat;

    env = getenv("PKI_TEST_MATTER_VECTORS");
    if (env) {
        snprintf(vec, sizeof(vec), "%s", env);
        return access(vec, R_OK) == 0;
    }

    n = readlink("/proc/self/exe", exe, sizeof(exe) - 1);
    if (n > 0) {
        exe[n] = '\0';
        d = dirname(exe);
        snprintf(vec, sizeof(vec), "%s/../t/vectors/matter", d);
        if (access(vec, R_OK) == 0) {
            return 1;
        }
    }

    snprintf(vec, sizeof(vec), "t/vectors/matter");
    if (access(vec, R_OK) == 0) {
        return 1;
    }
    snprintf(vec, sizeof(vec), "../t/vectors/matter");
    return access(vec, R_OK) == 0;
}


/* ---- TLV ------------------------------------------------------------------- */

static const char  *pairs[] = {
    "Chip-Test-Root01-Cert", "Chip-Test-ICA02-Cert", "TestCert-Root02",
    "TestCert-ICA01", "TestCert-Node01_01", "TestCert-Node01_02",
    "TestCert-Node02_04", NULL
};


/*
 * The vector DIR/NAME with its first run of FIND (flen octets) edited:
 * skip octets of the run kept, then PUT (plen octets) in place of the cut
 * octets that follow them; *len is the new length.  NULL when the vector
 * or the run is missing.
 */
static unsigned char *
splice_vector(const char *dir, const char *name, const char *find,
    size_t flen, size_t skip, const char *put, size_t plen, size_t cut,
    size_t *len)
{
    size_t          clen, k;
    unsigned char  *chip, *mut, *p;

    chip = slurp(dir, name, &clen);
    mut = NULL;

    for (k = 0; chip != NULL && k + flen <= clen; k++) {
        if (memcmp(chip + k, find, flen) != 0) {
            continue;
        }

        if (k + skip + cut > clen) {
            break;
        }

        mut = malloc(clen - cut + plen);
        if (mut == NULL) {
            break;
        }

        p = mut;
        memcpy(p, chip, k + skip);
        p += k + skip;
        memcpy(p, put, plen);
        p += plen;
        memcpy(p, chip + k + skip + cut, clen - k - skip - cut);
        *len = clen - cut + plen;
        break;
    }

    free(chip);

    return mut;
}


static void
test_tlv(void)
{
    int             i, bad, crash, st;
    size_t          dlen, clen, olen, blen, mlen, k;
    char            dir[PATH_MAX * 2], name[128];
    unsigned char  *der, *chip, *out, *mut, *back;
    pki_result_t    res;

    snprintf(dir, sizeof(dir), "%s/operational", vec);

    for (i = 0; pairs[i]; i++) {
        snprintf(name, sizeof(name), "%s.der", pairs[i]);
        der = slurp(dir, name, &dlen);
        snprintf(name, sizeof(name), "%s.chip", pairs[i]);
        chip = slurp(dir, name, &clen);
        if (!ok(der && chip, "%s: vector files", pairs[i])) {
            free(der);
            free(chip);
            continue;
        }

        pki_result_init(&res);
        ok(pki_matter_der_to_tlv(der, dlen, &out, &olen, &res) == PKI_OK
           && olen == clen && memcmp(out, chip, clen) == 0,
           "%s: DER -> TLV byte-exact (%zu B) %s", pairs[i], clen,
           res.detail);
        free(out);

        pki_result_init(&res);
        ok(pki_matter_tlv_to_der(chip, clen, &out, &olen, &res) == PKI_OK
           && olen == dlen && memcmp(out, der, dlen) == 0,
           "%s: TLV -> DER byte-exact (%zu B) %s", pairs[i], dlen,
           res.detail);
        free(out);

        /* every truncation is refused, never read past the end */
        bad = 0;
        for (k = 0; k < clen; k++) {
            pki_result_init(&res);
            if (pki_matter_tlv_to_der(chip, k, &out, &olen, &res)
                != PKI_MALFORMED)
            {
                bad++;
            }
            free(out);
        }
        ok(bad == 0, "%s: all %zu truncated TLVs refused", pairs[i], clen);

        bad = 0;
        for (k = 0; k < dlen; k++) {
            pki_result_init(&res);
            if (pki_matter_der_to_tlv(der, k, &out, &olen, &res) == PKI_OK) {
                bad++;
            }
            free(out);
        }
        ok(bad == 0, "%s: all truncated DERs refused", pairs[i]);

        /* single-byte corruption: no crash; a result converts back */
        mut = malloc(clen);
        crash = 0;
        for (k = 0; k < clen; k++) {
            memcpy(mut, chip, clen);
            mut[k] ^= (unsigned char) (0x5a + k);
            pki_result_init(&res);
            if (pki_matter_tlv_to_der(mut, clen, &out, &olen, &res)
                == PKI_OK)
            {
                unsigned char  *back;
                size_t          blen;

                back = NULL;
                if (pki_matter_der_to_tlv(out, olen, &back, &blen, &res)
                    != PKI_OK || blen != clen
                    || memcmp(back, mut, clen) != 0)
                {
                    crash++;        /* taken, yet not its canonical TLV */
                }
                free(back);
            }
            free(out);
        }
        free(mut);
        ok(crash == 0, "%s: corrupt TLVs handled, each one taken the "
       "canonical TLV of its DER (%d not)", pairs[i], crash);

        free(der);
        free(chip);
    }

    snprintf(dir, sizeof(dir), "%s/operational/invalid", vec);
    chip = slurp(dir, "TestCert-Node01_01-Err01-InvalidTag.chip", &clen);
    pki_result_init(&res);
    ok(chip && pki_matter_tlv_to_der(chip, clen, &out, &olen, &res)
               == PKI_MALFORMED
       && strstr(res.detail, "invalid TLV tag"),
       "Err01-InvalidTag rejected: %s", res.detail);
    free(chip);

    /* one certificate, one TLV: ICA01 with its signature algorithm as an
     * 8-octet integer (24 02 01 -> 27 02 01 00..00) makes the same DER,
     * and is refused */
    snprintf(dir, sizeof(dir), "%s/operational", vec);
    mut = splice_vector(dir, "TestCert-ICA01.chip", "\x24\x02\x01", 3, 0,
                        "\x27\x02\x01\0\0\0\0\0\0\0", 10, 3, &mlen);
    pki_result_init(&res);
    out = NULL;
    ok(mut != NULL
       && pki_matter_tlv_to_der(mut, mlen, &out, &olen, &res) == PKI_MALFORMED
       && strstr(res.detail, "canonical") != NULL,
       "ICA01 with a wider integer than needed refused: %s", res.detail);
    free(out);
    free(mut);

    /* an element of a valid type we do not take: ICA01 with its
     * issuer's matter-rcac-id as a signed integer ("27 14" made
     * "23 14"), and the signature algorithm so ("24 02" made "20 02") */
    {
        static const struct {
            const char  *find, *put;
        } signed_int[] = {
            { "\x27\x14", "\x23\x14" }, { "\x24\x02", "\x20\x02" }
        };

        for (k = 0; k < 2; k++) {
            mut = splice_vector(dir, "TestCert-ICA01.chip",
                                signed_int[k].find, 2, 0, signed_int[k].put,
                                2, 2, &mlen);
            pki_result_init(&res);
            out = NULL;
            ok(mut != NULL
               && pki_matter_tlv_to_der(mut, mlen, &out, &olen, &res)
                  == PKI_MALFORMED
               && strstr(res.detail, "unsupported TLV element type"),
               "ICA01 with a signed integer (%zu) refused: %s", k,
               res.detail);
            free(out);
            free(mut);
        }
    }

    /* a notBefore of 0 is 2000-01-01 (only a notAfter of 0 is
     * 99991231235959Z): ICA01 with "26 04 <4 octets>" made "24 04 00" */
    mut = splice_vector(dir, "TestCert-ICA01.chip", "\x26\x04", 2, 0,
                        "\x24\x04\x00", 3, 6, &mlen);
    pki_result_init(&res);
    out = back = NULL;
    st = mut != NULL
         && pki_matter_tlv_to_der(mut, mlen, &out, &olen, &res) == PKI_OK;
    ok(st && memmem(out, olen, "\x17\x0d" "000101000000Z", 15) != NULL
       && memmem(out, olen, "99991231235959Z", 15) == NULL,
       "notBefore 0 is 2000-01-01 in DER %s", res.detail);
    st = st && pki_matter_der_to_tlv(out, olen, &back, &blen, &res) == PKI_OK
         && blen == mlen && memcmp(back, mut, blen) == 0;
    ok(st, "  and back to the same TLV %s", res.detail);
    free(out);
    free(back);
    free(mut);

    /* RFC 5280 4.2.1.9: no pathLenConstraint without cA (Node01_01's
     * basicConstraints "35 01 28 01 18" given "24 02 00") */
    mut = splice_vector(dir, "TestCert-Node01_01.chip",
                        "\x35\x01\x28\x01\x18", 5, 4, "\x24\x02\x00", 3, 0,
                        &mlen);
    pki_result_init(&res);
    out = NULL;
    ok(mut != NULL
       && pki_matter_tlv_to_der(mut, mlen, &out, &olen, &res) == PKI_MALFORMED
       && strstr(res.detail, "pathLenConstraint without cA") != NULL,
       "a pathLenConstraint without cA refused: %s", res.detail);
    free(out);
    free(mut);

    /* attestation DER (VID/PID) cannot be TLV */
    snprintf(dir, sizeof(dir), "%s/attestation/valid", vec);
    der = slurp(dir, "PAA-FFF1-Cert.der", &dlen);
    pki_result_init(&res);
    ok(der && pki_matter_der_to_tlv(der, dlen, &out, &olen, &res)
              == PKI_MALFORMED && strstr(res.detail, "VID/PID"),
       "PAA with VID refused by DER -> TLV: %s", res.detail);
    free(der);

    pki_result_init(&res);
    ok(pki_matter_tlv_to_der((const unsigned char *) "\x15\x18", 2, &out,
                             &olen, &res) == PKI_MALFORMED,
       "empty TLV structure refused");

    {
        unsigned char  big[401];

        memset(big, 0x15, sizeof(big));
        pki_result_init(&res);
        ok(pki_matter_tlv_to_der(big, sizeof(big), &out, &olen, &res)
           == PKI_TOO_LARGE, "TLV over 400 bytes refused");
    }
}


/* ---- attestation vectors ------------------------------------------------------ */

typedef struct {
    const char  *file;
    int          success;
    const char  *reason;
} json_case_t;

static const json_case_t  json_cases[] = {
    { "struct_dac_sig_algo_ecdsa_with_sha256.json", 1, NULL },
    { "struct_dac_vidpid_fallback_encoding_01.json", 1, NULL },
    { "struct_dac_cert_version_v2.json", 0, "must be X.509 v3" },
    { "struct_dac_sig_algo_ecdsa_with_sha1.json", 0, "ecdsa-with-SHA256" },
    { "struct_dac_subject_vid_mismatch.json", 0, "kDacVendorIdMismatch" },
    { "struct_dac_subject_pid_mismatch.json", 0, "product_id_array" },
    { "struct_dac_ext_basic_ca_wrong.json", 0, "cA must be FALSE" },
    { "struct_dac_ext_key_usage_dig_sig_wrong.json", 0,
      "digitalSignature only" },
    { "struct_dac_ext_akid_missing.json", 0,
      "authorityKeyIdentifier: must be present" },
    { "struct_dac_valid_in_future.json", 0, "kDacExpired" },
    { "struct_pai_ext_basic_pathlen_presence_wrong.json", 0,
      "pathLenConstraint must be present" },
    { "struct_cd_vid_mismatch.json", 0, "vendor_id" },
    { NULL, 0, NULL }
};


static pki_status_t
json_vector(const char *sub, const char *file, X509 *paa, X509 *signer,
    pki_result_t *res)
{
    int             pid;
    long            cdlen;
    X509           *dac, *pai;
    cJSON          *j, *v;
    size_t          len;
    char            dir[PATH_MAX * 2];
    pki_status_t    rc;
    unsigned char  *buf, *cd;

    snprintf(dir, sizeof(dir), "%s/%s", vec, sub);
    buf = slurp(dir, file, &len);
    if (buf == NULL) {
        return pki_fail(res, PKI_INTERNAL, "no file %s", file);
    }
    j = cJSON_Parse((char *) buf);
    free(buf);
    if (j == NULL) {
        return pki_fail(res, PKI_INTERNAL, "bad JSON %s", file);
    }

    dac = cert_hex(cJSON_GetStringValue(cJSON_GetObjectItem(j, "dac_cert")));
    pai = cert_hex(cJSON_GetStringValue(cJSON_GetObjectItem(j, "pai_cert")));
    cd = OPENSSL_hexstr2buf(cJSON_GetStringValue(
             cJSON_GetObjectItem(j, "certification_declaration")), &cdlen);
    v = cJSON_GetObjectItem(j, "basic_info_pid");
    pid = cJSON_IsNumber(v) ? v->valueint
          : cJSON_IsString(v) ? atoi(v->valuestring) : -1;

    if (dac == NULL || pai == NULL) {
        /* a DAC parsers refuse outright (v2) */
        rc = pki_fail(res, PKI_POLICY, "kDacFormatInvalid: unparsable "
                      "(must be X.509 v3)");
    } else {
        rc = pki_matter_verify_attestation(dac, pai, paa, 0, res);
        if (rc == PKI_OK && cd) {
            rc = pki_matter_verify_cd(cd, (size_t) cdlen, signer, dac, pai,
                                      paa, -1, pid, res);
        }
    }

    X509_free(dac);
    X509_free(pai);
    OPENSSL_free(cd);
    cJSON_Delete(j);

    return rc;
}


static void
test_attestation(void)
{
    int            i;
    X509          *paa, *paa_cn, *pai, *pai8000, *dac, *dac1, *dac0001,
                  *signer;
    pki_status_t   rc;
    pki_result_t   res;

    paa = cert_file("attestation/valid", "PAA-FFF1-Cert.pem");
    paa_cn = cert_file("attestation/valid", "PAA-FFF1-CNonly-Cert.pem");
    pai = cert_file("attestation/valid", "PAI-FFF1-noPID-Cert.pem");
    pai8000 = cert_file("attestation/valid", "PAI-FFF1-8000-Cert.pem");
    dac = cert_file("attestation/valid", "DAC-FFF1-8000-Cert.pem");
    dac1 = cert_file("attestation/valid", "DAC-FFF1-8001-Cert.pem");
    dac0001 = cert_file("attestation/valid", "DAC-FFF1-8000-0001-Cert.pem");
    signer = cert_file("attestation/certification_declaration",
                       "Chip-Test-CD-Signing-Cert.pem");

    if (!ok(paa && paa_cn && pai && pai8000 && dac && dac1 && dac0001
            && signer, "attestation vector files"))
    {
        return;
    }

    pki_result_init(&res);
    ok(pki_matter_verify_attestation(dac, pai, paa, 0, &res) == PKI_OK,
       "valid: PAA-FFF1 -> PAI-noPID -> DAC-FFF1-8000 %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_attestation(dac1, pai, paa, 0, &res) == PKI_OK,
       "valid: PAA-FFF1 -> PAI-noPID -> DAC-FFF1-8001 %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_attestation(dac0001, pai8000, paa_cn, 0, &res)
       == PKI_OK, "valid: PAA-CNonly -> PAI-8000 -> DAC-0001 %s",
       res.detail);

    pki_result_init(&res);
    ok(pki_matter_verify_attestation(dac0001, pai8000, paa, 0, &res)
       != PKI_OK && strstr(res.detail, "kPaaNotFound"),
       "wrong PAA: %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_attestation(dac, pai8000, paa_cn, 0, &res)
       != PKI_OK, "DAC under the wrong PAI: %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_attestation(dac1, pai8000, paa_cn, 0, &res)
       != PKI_OK && strstr(res.detail, "kDacProductIdMismatch"),
       "PAI PID 8000, DAC PID 8001: %s", res.detail);

    pki_result_init(&res);
    ok(pki_matter_check(paa, PKI_MATTER_PAA, NULL, &res) == PKI_OK,
       "PAA-FFF1 passes the PAA profile %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_check(pai, PKI_MATTER_PAI, paa, &res) == PKI_OK,
       "PAI-noPID passes the PAI profile %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_check(dac, PKI_MATTER_DAC, pai, &res) == PKI_OK,
       "DAC-FFF1-8000 passes the DAC profile %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_check(pai, PKI_MATTER_DAC, paa, &res) == PKI_POLICY,
       "a PAI is no DAC: %s", res.detail);

    for (i = 0; json_cases[i].file; i++) {
        pki_result_init(&res);
        rc = json_vector("attestation/commissioner_dut", json_cases[i].file,
                         paa, signer, &res);
        if (json_cases[i].success) {
            ok(rc == PKI_OK, "%s: accepted %s", json_cases[i].file,
               res.detail);
        } else {
            ok(rc != PKI_OK && strstr(res.detail, json_cases[i].reason),
               "%s: rejected (%s)", json_cases[i].file, res.detail);
        }
    }

    pki_result_init(&res);
    rc = json_vector("attestation/revocation", "revoked-dac-01.json", paa,
                     signer, &res);
    ok(rc == PKI_OK, "revoked-dac-01: chain and CD verify (revocation is "
       "the DCL's) %s", res.detail);

    X509_free(paa);
    X509_free(paa_cn);
    X509_free(pai);
    X509_free(pai8000);
    X509_free(dac);
    X509_free(dac1);
    X509_free(dac0001);
    X509_free(signer);
}


/* payload (hex) signed as a CD with the vectors' CD signing key, then
 * judged against DAC-FFF1-8000 */
static pki_status_t
cd_payload(const char *hex, X509 *signer, EVP_PKEY *key, X509 *dac,
    X509 *pai, X509 *paa, pki_result_t *res)
{
    int               n;
    BIO              *in;
    long              len;
    pki_status_t      rc;
    unsigned char    *payload, *der;
    CMS_ContentInfo  *ci;

    payload = OPENSSL_hexstr2buf(hex, &len);
    in = payload ? BIO_new_mem_buf(payload, (int) len) : NULL;
    ci = in ? CMS_sign(signer, key, NULL, in, CMS_BINARY | CMS_NOCERTS
                       | CMS_NOSMIMECAP | CMS_USE_KEYID | CMS_NOATTR)
            : NULL;
    der = NULL;
    n = ci ? i2d_CMS_ContentInfo(ci, &der) : 0;
    BIO_free(in);
    OPENSSL_free(payload);
    CMS_ContentInfo_free(ci);

    if (n <= 0) {
        return pki_fail(res, PKI_INTERNAL, "cannot sign the CD");
    }

    rc = pki_matter_verify_cd(der, (size_t) n, signer, dac, pai, paa, -1, -1,
                              res);
    OPENSSL_free(der);

    return rc;
}


/* The CD payload read as the SDK reads it: tags 0..8 each once and in
 * order, format_version 1, a certificate_id of 19 characters, tags 9 and
 * 10 together; the parser took a vendor_id twice (the last), skipped
 * unknown elements and required only vendor_id and product_id_array. */
static void
test_cd_strict(void)
{
    int            i;
    X509          *paa, *pai, *dac, *signer;
    EVP_PKEY      *key;
    pki_status_t   rc;
    pki_result_t   res;
    char           dir[PATH_MAX * 2];
    size_t         len;
    BIO           *bio;
    unsigned char *pem;

/* format_version 1, vendor_id FFF1, product_id_array [8000] */
#define CD_HEAD  "152400012501f1ff360205008018"
/* device_type_id 0x16, certificate_id, security_level 0,
 * security_information 0, version_number 0x2694, certification_type 0 */
#define CD_REST  "260316000000" "2c0413" \
                 "5a494732303134315a423333303030312d3234" "240500" "240600" \
                 "25079426" "240800"

    static const struct {
        const char  *hex;
        int          good;
        const char  *name;
    } cases[] = {
        { CD_HEAD CD_REST "18", 1, "a whole CD" },
        { CD_HEAD CD_REST "2509f1ff250a0080" "18", 1,
          "with dac_origin_vendor_id and product_id" },
        { "152400012501f2ff2501f1ff36020500801818", 0,
          "vendor_id twice, device_type_id .. certification_type missing" },
        { "152400012501f2ff2501f1ff360205008018" CD_REST "18", 0,
          "vendor_id twice in a whole CD" },
        { CD_HEAD "18", 0, "only vendor_id and product_id_array" },
        { "152400022501f1ff360205008018" CD_REST "18", 0,
          "format_version 2" },
        { "152501f1ff360205008018" CD_REST "18", 0,
          "no format_version" },
        { CD_HEAD CD_REST "240c00" "18", 0, "an element of tag 12" },
        { CD_HEAD CD_REST "2509f1ff" "18", 0,
          "dac_origin_vendor_id alone" },
        { CD_HEAD CD_REST "250a0080" "18", 0,
          "dac_origin_product_id alone" },
        { CD_HEAD "260316000000" "2c0412"
          "5a494732303134315a423333303030312d32" "240500" "240600"
          "25079426" "240800" "18", 0,
          "a certificate_id of 18 characters" },
        { CD_HEAD "240500" "260316000000" "2c0413"
          "5a494732303134315a423333303030312d3234" "240600" "25079426"
          "240800" "18", 0, "security_level before device_type_id" },
        { "152400012501f1ff3602" "18" CD_REST "18", 0,
          "an empty product_id_array" },
        { CD_HEAD CD_REST "360b" "18" "18", 0,
          "an empty authorized_paa_list" },
        { NULL, 0, NULL }
    };

    paa = cert_file("attestation/valid", "PAA-FFF1-Cert.pem");
    pai = cert_file("attestation/valid", "PAI-FFF1-noPID-Cert.pem");
    dac = cert_file("attestation/valid", "DAC-FFF1-8000-Cert.pem");
    signer = cert_file("attestation/certification_declaration",
                       "Chip-Test-CD-Signing-Cert.pem");
    snprintf(dir, sizeof(dir), "%s/attestation/certification_declaration",
             vec);
    pem = slurp(dir, "Chip-Test-CD-Signing-Key.pem", &len);
    bio = pem ? BIO_new_mem_buf(pem, (int) len) : NULL;
    key = bio ? PEM_read_bio_PrivateKey(bio, NULL, NULL, NULL) : NULL;
    BIO_free(bio);
    free(pem);

    if (ok(paa && pai && dac && signer && key, "CD: vector files")) {
        for (i = 0; cases[i].hex; i++) {
            pki_result_init(&res);
            rc = cd_payload(cases[i].hex, signer, key, dac, pai, paa, &res);
            ok(cases[i].good ? rc == PKI_OK : rc == PKI_MALFORMED,
               "CD payload, %s: %s %s", cases[i].name,
               cases[i].good ? "accepted" : "refused", res.detail);
        }
    }

    EVP_PKEY_free(key);
    X509_free(paa);
    X509_free(pai);
    X509_free(dac);
    X509_free(signer);
}


static void
test_operational(void)
{
    X509          *root01, *ica01, *n11, *n12, *root02, *ica02, *n24;
    pki_result_t   res;

    root01 = cert_file("operational", "Chip-Test-Root01-Cert.pem");
    ica01 = cert_file("operational", "TestCert-ICA01.pem");
    n11 = cert_file("operational", "TestCert-Node01_01.pem");
    n12 = cert_file("operational", "TestCert-Node01_02.pem");
    root02 = cert_file("operational", "TestCert-Root02.pem");
    ica02 = cert_file("operational", "Chip-Test-ICA02-Cert.pem");
    n24 = cert_file("operational", "TestCert-Node02_04.pem");

    if (!ok(root01 && ica01 && n11 && n12 && root02 && ica02 && n24,
            "operational vector files"))
    {
        return;
    }

    pki_result_init(&res);
    ok(pki_matter_verify_operational(n11, ica01, root01, 0, &res) == PKI_OK,
       "Root01 -> ICA01 -> Node01_01 %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_operational(n12, NULL, root01, 0, &res) == PKI_OK,
       "Root01 -> Node01_02 %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_operational(n24, ica02, root02, 0, &res) == PKI_OK,
       "Root02 -> ICA02 -> Node02_04 (5 RDNs, 2 CATs) %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_verify_operational(n24, ica01, root01, 0, &res) != PKI_OK,
       "Node02_04 under ICA01 refused: %s", res.detail);
    pki_result_init(&res);
    ok(pki_matter_check(root01, PKI_MATTER_NOC, NULL, &res) == PKI_POLICY,
       "an RCAC is no NOC: %s", res.detail);

    X509_free(root01);
    X509_free(ica01);
    X509_free(n11);
    X509_free(n12);
    X509_free(root02);
    X509_free(ica02);
    X509_free(n24);
}


/* ---- issuance -------------------------------------------------------------------- */

static EVP_PKEY *
ec_key(const char *curve)
{
    return EVP_PKEY_Q_keygen(NULL, NULL, "EC", curve);
}


static pki_key_t *
file_key(EVP_PKEY *pk, const char *name)
{
    FILE          *f;
    char           path[PATH_MAX * 2];
    pki_key_t     *k;
    pki_result_t   res;

    snprintf(path, sizeof(path), "%s/%s.key", tmpdir, name);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_PrivateKey(f, pk, NULL, NULL, 0, NULL, NULL))
    {
        if (f) {
            fclose(f);
        }
        return NULL;
    }
    fclose(f);

    pki_result_init(&res);
    k = pki_key_new(path, NULL, &res);
    if (k && pki_key_open(k, &res) != PKI_OK) {
        pki_key_free(k);
        return NULL;
    }
    return k;
}


/* A CA named name of cert (written to the temp dir as NAME.pem), chain
 * file chain unless NULL, key and templates t1, t2 (NULL: none) into *out
 * (NULL when any step fails): the status of the first step that failed,
 * or of pki_ca_finish(), its detail in res. */
static pki_status_t
ca_build(X509 *cert, pki_key_t *key, const char *name, pki_template_t *t1,
    pki_template_t *t2, const char *chain, pki_ca_t **out,
    pki_result_t *res)
{
    FILE          *f;
    char           path[PATH_MAX * 2];
    const char    *argv[1];
    pki_ca_t      *ca;
    pki_status_t   rc;

    *out = NULL;
    pki_result_init(res);
    snprintf(path, sizeof(path), "%s/%s.pem", tmpdir, name);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, cert)) {
        if (f) {
            fclose(f);
        }
        return PKI_INTERNAL;
    }
    fclose(f);

    argv[0] = path;
    ca = pki_ca_new(name);
    rc = ca == NULL ? PKI_INTERNAL
                    : pki_ca_set(ca, "certificate", 1, argv, res);
    if (rc == PKI_OK && chain) {
        rc = pki_ca_set(ca, "chain", 1, &chain, res);
    }
    if (rc == PKI_OK) {
        rc = pki_ca_set_key(ca, key, res);
    }
    if (rc == PKI_OK && t1) {
        rc = pki_ca_add_template(ca, t1, res);
    }
    if (rc == PKI_OK && t2) {
        rc = pki_ca_add_template(ca, t2, res);
    }
    if (rc == PKI_OK) {
        rc = pki_ca_finish(ca, res);
    }

    if (rc != PKI_OK) {
        pki_ca_free(ca);
        return rc;
    }

    *out = ca;
    return PKI_OK;
}


static pki_ca_t *
make_ca(X509 *cert, pki_key_t *key, const char *name, pki_template_t *t1,
    pki_template_t *t2, const char *chain)
{
    pki_ca_t      *ca;
    pki_result_t   res;

    if (ca_build(cert, key, name, t1, t2, chain, &ca, &res) != PKI_OK) {
        diag("make_ca %s: %s %s", name, res.detail, res.log);
    }
    return ca;
}


static X509_REQ *
make_csr(EVP_PKEY *pk, const char *cn, const char *vid, const EVP_MD *md)
{
    X509_REQ       *req, *out;
    X509_NAME      *n;
    unsigned char  *der;
    int             len;
    pki_result_t    res;

    req = X509_REQ_new();
    n = X509_NAME_new();
    if (cn) {
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) cn, -1, -1, 0);
    }
    if (vid) {
        X509_NAME_add_entry_by_txt(n, "1.3.6.1.4.1.37244.2.1",
                                   MBSTRING_UTF8, (const unsigned char *) vid,
                                   -1, -1, 0);
    }
    X509_REQ_set_subject_name(req, n);
    X509_NAME_free(n);
    X509_REQ_set_pubkey(req, pk);
    X509_REQ_sign(req, pk, md);

    der = NULL;
    len = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    out = NULL;
    pki_result_init(&res);
    pki_csr_parse(der, (size_t) len, &out, &res);
    OPENSSL_free(der);
    return out;
}


static X509_NAME *
opname(const char *const *attrs)
{
    int         i;
    X509_NAME  *n;

    n = X509_NAME_new();
    for (i = 0; attrs[i]; i += 2) {
        X509_NAME_add_entry_by_txt(n, attrs[i], MBSTRING_UTF8,
                                   (const unsigned char *) attrs[i + 1], -1,
                                   -1, 0);
    }
    return n;
}


#define NODE    "1.3.6.1.4.1.37244.1.1"
#define FABRIC  "1.3.6.1.4.1.37244.1.5"
#define CAT     "1.3.6.1.4.1.37244.1.6"
#define RCACID  "1.3.6.1.4.1.37244.1.4"
#define ICACID  "1.3.6.1.4.1.37244.1.3"
#define VID     "1.3.6.1.4.1.37244.2.1"
#define PID     "1.3.6.1.4.1.37244.2.2"

typedef struct {
    const char   *name;
    const char   *attrs[16];
    const char   *reason;    /* NULL: issued */
} noc_case_t;

static const noc_case_t  noc_cases[] = {
    { "plain NOC", { NODE, "DEDEDEDE00010001", FABRIC, "FAB000000000001D",
                     NULL }, NULL },
    { "3 CATs", { NODE, "0000000000000001", FABRIC, "FAB000000000001D",
                  CAT, "ABCD0001", CAT, "ABCE0002", CAT, "ABCF0003", NULL },
      NULL },
    { "4 CATs", { NODE, "0000000000000001", FABRIC, "FAB000000000001D",
                  CAT, "ABCD0001", CAT, "ABCE0002", CAT, "ABCF0003",
                  CAT, "ABC00003", NULL }, "5 RDNs" },
    { "CAT version 0", { NODE, "0000000000000001", FABRIC, "FAB000000000001D",
                         CAT, "ABCD0000", NULL }, "CAT version" },
    { "CAT identifiers twice", { NODE, "0000000000000001", FABRIC,
                                 "FAB000000000001D", CAT, "ABCD0001",
                                 CAT, "ABCD0002", NULL }, "distinct" },
    { "node-id 0", { NODE, "0000000000000000", FABRIC, "FAB000000000001D",
                     NULL }, "operational range" },
    { "node-id FFFFFFF000000000", { NODE, "FFFFFFF000000000", FABRIC,
                                    "FAB000000000001D", NULL },
      "operational range" },
    { "lowercase node-id", { NODE, "dededede00010001", FABRIC,
                             "FAB000000000001D", NULL }, "uppercase hex" },
    { "short node-id", { NODE, "DEDEDEDE0001", FABRIC, "FAB000000000001D",
                         NULL }, "16 uppercase hex" },
    { "fabric-id 0", { NODE, "0000000000000001", FABRIC, "0000000000000000",
                       NULL }, "fabric-id must not be 0" },
    { "no fabric-id", { NODE, "0000000000000001", NULL },
      "exactly one matter-fabric-id" },
    { "other fabric than the ICAC", { NODE, "0000000000000001", FABRIC,
                                      "FAB0000000000002", NULL },
      "fabric-id must equal" },
    { "no node-id", { FABRIC, "FAB000000000001D", "CN", "x", NULL },
      "exactly one of" },
    { "node-id twice", { NODE, "0000000000000001", NODE, "0000000000000002",
                         FABRIC, "FAB000000000001D", NULL },
      "exactly one of" },
    { "VID in a NOC", { NODE, "0000000000000001", FABRIC, "FAB000000000001D",
                        VID, "FFF1", NULL }, "VID/PID" },
    { "rcac-id in a NOC", { NODE, "0000000000000001", FABRIC,
                            "FAB000000000001D", RCACID, "CACACACA00000001",
                            NULL }, "exactly one of" },
    { NULL, { NULL }, NULL }
};

/* ---- the JSON engine (no Redis: nothing is recorded) ----------------------- */

static char *
csr_b64_v(EVP_PKEY *pk, const char *cn, long version);


static char *
csr_b64(EVP_PKEY *pk, const char *cn)
{
    return csr_b64_v(pk, cn, X509_REQ_VERSION_1);
}


static char *
csr_b64_v(EVP_PKEY *pk, const char *cn, long version)
{
    int             len;
    char           *b64;
    size_t          blen;
    X509_REQ       *req;
    X509_NAME      *n;
    unsigned char  *der;

    req = X509_REQ_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_REQ_set_subject_name(req, n);
    X509_NAME_free(n);
    X509_REQ_set_version(req, version);
    X509_REQ_set_pubkey(req, pk);
    X509_REQ_sign(req, pk, EVP_sha256());
    der = NULL;
    len = i2d_X509_REQ(req, &der);
    X509_REQ_free(req);
    b64 = pki_base64_encode(der, (size_t) len, 0, &blen);
    OPENSSL_free(der);
    return b64;
}


/* A request from 127.0.0.1 with the body (a string) and the rest given. */
static void
matter_req(pki_matter_req_t *req, pki_matter_op_t op, const char *body,
    const char *ctype, const char *method, const char *user)
{
    memset(req, 0, sizeof(*req));
    req->op = op;
    req->method = method;
    req->content_type = ctype;
    req->body = (const unsigned char *) body;
    req->body_len = strlen(body);
    req->user = user;
    req->client = "127.0.0.1";
}


static int
engine(pki_ca_t *ca, pki_template_t *t, pki_matter_op_t op, const char *body,
    const char *ctype, const char *method, const char *user,
    pki_matter_resp_t *resp)
{
    pki_matter_conf_t  conf;
    pki_matter_req_t   req;

    memset(&conf, 0, sizeof(conf));
    conf.ca = ca;
    conf.tmpl = t;
    conf.threads = 4;

    matter_req(&req, op, body, ctype, method, user);

    pki_matter_handle(&conf, &req, resp);

    return resp->http_status;
}


/* cJSON allocations counted through its hooks: what a refused body costs
 * in tree before it is refused */
static size_t  json_allocs;


static void *
count_malloc(size_t n)
{
    json_allocs++;
    return malloc(n);
}


/* A 2 MB body of a million tiny values (under the default batch cap) is
 * refused before cJSON builds its tree: it cost some 80 MB and half a
 * second of a signing thread, the same when it was cut short (then it was
 * parsed twice). */
static void
test_body_values(pki_ca_t *capai, pki_template_t *tdac, pki_ca_t *caic,
    pki_template_t *tnoc)
{
    int                 st, k;
    char               *big;
    size_t              n, len, i;
    cJSON_Hooks         hooks;
    pki_matter_resp_t   r;

    len = 2097092;
    big = malloc(len + 1);
    if (big == NULL) {
        ok(0, "no memory");
        return;
    }

    for (k = 0; k < 2; k++) {
        /* {"csrs":[0,0,...,0]} and the same without its end */
        n = strlen("{\"csrs\":[");
        memcpy(big, "{\"csrs\":[", n);
        for (i = n; i + 3 < len; i += 2) {
            memcpy(big + i, "0,", 2);
        }
        big[i++] = '0';
        if (k == 0) {
            big[i++] = ']';
            big[i++] = '}';
        }
        big[i] = '\0';

        hooks.malloc_fn = count_malloc;
        hooks.free_fn = free;
        cJSON_InitHooks(&hooks);
        json_allocs = 0;

        st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, big,
                    "application/json", "POST", "u", &r);

        cJSON_InitHooks(NULL);

        ok(st == 400 && json_allocs < 100,
           "engine: %zu-byte batch of %zu zeros%s -> 400 after %zu cJSON "
           "allocations: %.*s", i, (i - n) / 2,
           k ? " (cut short)" : "", json_allocs, (int) r.body_len,
           r.body ? (char *) r.body : "");
        pki_matter_resp_free(&r);
    }

    /* 1001 values in "csrs" still reach the batch's own rule */
    n = (size_t) sprintf(big, "{\"csrs\": [0");
    for (i = 1; i < 1001; i++) {
        n += (size_t) sprintf(big + n, ", 0");
    }
    strcpy(big + n, "]}");
    st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, big,
                "application/json", "POST", "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "1..1000"),
       "engine: batch of 1001 values -> 400 %.*s", (int) r.body_len,
       r.body ? (char *) r.body : "");
    pki_matter_resp_free(&r);

    /* a NOC request holds a few values */
    n = (size_t) sprintf(big, "{\"cats\": [0");
    for (i = 1; i < 100; i++) {
        n += (size_t) sprintf(big + n, ", 0");
    }
    strcpy(big + n, "]}");
    st = engine(caic, tnoc, PKI_MATTER_OP_NOC, big, "application/json",
                "POST", "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "more JSON values"),
       "engine: NOC request of 100 values -> 400 %.*s", (int) r.body_len,
       r.body ? (char *) r.body : "");
    pki_matter_resp_free(&r);

    /* nested 40 deep: refused, saying why */
    memset(big, '[', 40);
    memset(big + 40, ']', 40);
    big[80] = '\0';
    st = engine(caic, tnoc, PKI_MATTER_OP_NOC, big, "application/json",
                "POST", "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "too deep"),
       "engine: NOC body nested 40 deep -> 400 %.*s", (int) r.body_len,
       r.body ? (char *) r.body : "");
    pki_matter_resp_free(&r);

    free(big);
}


static void
test_engine(pki_ca_t *capai, pki_template_t *tdac, pki_ca_t *caic,
    pki_template_t *tnoc)
{
    int                 i, st;
    char               *c1, *c2, *body;
    cJSON              *j;
    size_t              len;
    EVP_PKEY           *k1, *k2, *k3;
    pki_matter_resp_t   r;

    static const struct {
        const char  *body;
        int          status;
        const char  *error;
    } bad_batch[] = {
        { "{}", 400, "either" },
        { "[]", 400, "JSON object" },
        { "{\"csrs\": 5}", 400, "array" },
        { "{\"csrs\": []}", 400, "1..1000" },
        { "{\"csrs\": [5]}", 400, "csrs[0]" },
        { "{\"csrs\": [\"!!!\"]}", 400, "csrs[0]" },
        { "{\"csrs\": [\"AAAA\"]}", 400, "csrs[0]" },
        { "{\"count\": 0}", 400, "1..1000" },
        { "{\"count\": 1.5}", 400, "integer" },
        { "{\"count\": 1001}", 400, "1..1000" },
        { "{\"count\": 1, \"csrs\": []}", 400, "either" },
        { "{\"csrs\": [\"", 400, "JSON" },
        { NULL, 0, NULL }
    };

    k1 = ec_key("P-256");
    k2 = ec_key("P-256");
    k3 = ec_key("P-384");
    c1 = csr_b64(k1, "unit 1");
    c2 = csr_b64(k2, "unit 2");

    len = strlen(c1) * 20 + 64;
    body = malloc(len);

    /* a batch of 12 (split across threads), each CSR of its own key */
    strcpy(body, "{\"csrs\": [");
    for (i = 0; i < 12; i++) {
        EVP_PKEY  *ki = i < 2 ? NULL : ec_key("P-256");
        char      *ci = ki != NULL ? csr_b64(ki, "unit n") : NULL;

        strcat(body, i ? ",\"" : "\"");
        strcat(body, i == 0 ? c1 : i == 1 ? c2 : ci != NULL ? ci : "");
        strcat(body, "\"");
        free(ci);
        EVP_PKEY_free(ki);
    }
    strcat(body, "]}");
    st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, body,
                "application/json", "POST", "u", &r);
    j = cJSON_ParseWithLength((char *) r.body, r.body_len);
    ok(st == 200 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "certificates"))
                    == 12, "engine: batch of 12 -> 12 certificates %s",
       r.res.detail);
    cJSON_Delete(j);
    pki_matter_resp_free(&r);

    /* two CSRs of one key (unit 1's key under another CN): one DAC per
     * device key, the batch refused whole, naming both places */
    {
        char  *c1b = csr_b64(k1, "unit 1 again");

        snprintf(body, len, "{\"csrs\": [\"%s\", \"%s\", \"%s\"]}", c1,
                 c2, c1b);
        st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, body,
                    "application/json", "POST", "u", &r);
        ok(st == 400 && r.body != NULL
           && strstr((char *) r.body, "csrs[2] has the key of csrs[0]"),
           "engine: two CSRs of one key in a batch -> 400 %.*s",
           (int) r.body_len, r.body ? (char *) r.body : "");
        pki_matter_resp_free(&r);
        free(c1b);
    }

    st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, "{\"count\": 2}",
                "application/json; charset=utf-8", "POST", "u", &r);
    j = cJSON_ParseWithLength((char *) r.body, r.body_len);
    ok(st == 200 && cJSON_GetArraySize(cJSON_GetObjectItem(j, "keys")) == 2,
       "engine: count 2 -> 2 certificates with keys");
    cJSON_Delete(j);
    pki_matter_resp_free(&r);

    for (i = 0; bad_batch[i].body; i++) {
        st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, bad_batch[i].body,
                    "application/json", "POST", "u", &r);
        ok(st == bad_batch[i].status && r.body
           && strstr((char *) r.body, bad_batch[i].error),
           "engine: batch %s -> %d %.*s", bad_batch[i].body, st,
           (int) r.body_len, r.body ? (char *) r.body : "");
        pki_matter_resp_free(&r);
    }

    free(c2);
    c2 = csr_b64(k3, "p384");
    snprintf(body, len, "{\"csrs\": [\"%s\", \"%s\"]}", c1, c2);
    st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, body,
                "application/json", "POST", "u", &r);
    ok(st == 400 && strstr((char *) r.body, "csrs[1]")
       && strstr((char *) r.body, "P-256"),
       "engine: a P-384 CSR in a batch -> 400 %.*s", (int) r.body_len,
       (char *) r.body);
    pki_matter_resp_free(&r);

    /* a CSR with challengePassword twice: refused by the batch's lean
     * reader as by every other (it was taken) */
    {
        char           *cd;
        size_t          dlen, blen;
        unsigned char  *dder;

        dder = fx_dup_attr_csr("EC:P-256", 0x07, &dlen);
        cd = pki_base64_encode(dder, dlen, 0, &blen);
        snprintf(body, len, "{\"csrs\": [\"%s\", \"%s\"]}", c1, cd);
        st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, body,
                    "application/json", "POST", "u", &r);
        ok(st == 400 && r.body != NULL
           && strstr((char *) r.body, "csrs[1]")
           && strstr((char *) r.body, "appears twice"),
           "engine: a CSR with an attribute twice in a batch -> 400 %.*s",
           (int) r.body_len, r.body ? (char *) r.body : "");
        pki_matter_resp_free(&r);
        free(cd);
        free(dder);
    }

    ok(engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, "{}", "application/json",
              "GET", "u", &r) == 405 && r.allow != NULL
       && strcmp(r.allow, "POST") == 0, "engine: GET -> 405, Allow: POST");
    pki_matter_resp_free(&r);
    ok(engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, "{}", "application/json",
              "POST", NULL, &r) == 403, "engine: no identity -> 403");
    pki_matter_resp_free(&r);
    ok(engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, "{}", "text/plain",
              "POST", "u", &r) == 415, "engine: text/plain -> 415");
    pki_matter_resp_free(&r);
    ok(engine(capai, tdac, PKI_MATTER_OP_NOC, "{}", "application/json",
              "POST", "u", &r) == 500, "engine: a DAC template for NOCs -> "
       "500 (configuration)");
    pki_matter_resp_free(&r);

    /* NOC */
    snprintf(body, len, "{\"csr\": \"%s\", \"node_id\": \"0000000000000007\","
             " \"fabric_id\": \"FAB000000000001D\", \"cats\": [\"00010001\"]}",
             c1);
    st = engine(caic, tnoc, PKI_MATTER_OP_NOC, body, "application/json",
                "POST", "u", &r);
    j = cJSON_ParseWithLength((char *) r.body, r.body_len);
    ok(st == 200 && cJSON_IsString(cJSON_GetObjectItem(j, "noc_tlv"))
       && cJSON_IsString(cJSON_GetObjectItem(j, "icac_tlv"))
       && cJSON_IsString(cJSON_GetObjectItem(j, "rcac_tlv")),
       "engine: NOC -> noc, icac, rcac with TLVs %s", r.res.detail);
    cJSON_Delete(j);
    pki_matter_resp_free(&r);

    {
        static const char  *bad[][2] = {
            { "\"node_id\": \"000000000000000g\", \"fabric_id\": "
              "\"FAB000000000001D\"", "node_id" },
            { "\"node_id\": 7, \"fabric_id\": \"FAB000000000001D\"",
              "node_id" },
            { "\"node_id\": \"0000000000000007\"", "fabric_id" },
            { "\"node_id\": \"0000000000000007\", \"fabric_id\": "
              "\"FAB000000000001D\", \"cats\": \"x\"", "array" },
            { "\"node_id\": \"0000000000000007\", \"fabric_id\": "
              "\"FAB000000000001D\", \"cats\": [1]", "CAT" },
            { "\"node_id\": \"0000000000000007\", \"fabric_id\": "
              "\"FAB000000000001D\", \"cats\": [\"00010001\", \"00020001\","
              " \"00030001\", \"00040001\"]", "at most 3" },
            { NULL, NULL }
        };

        for (i = 0; bad[i][0]; i++) {
            snprintf(body, len, "{\"csr\": \"%s\", %s}", c1, bad[i][0]);
            st = engine(caic, tnoc, PKI_MATTER_OP_NOC, body,
                        "application/json", "POST", "u", &r);
            ok(st == 400 && strstr((char *) r.body, bad[i][1]),
               "engine: NOC {%s} -> 400 %.*s", bad[i][0], (int) r.body_len,
               (char *) r.body);
            pki_matter_resp_free(&r);
        }
    }

    snprintf(body, len, "{\"csr\": \"%s\", \"node_id\": \"0000000000000007\","
             " \"fabric_id\": \"FAB000000000001D\"}", c2);
    st = engine(caic, tnoc, PKI_MATTER_OP_NOC, body, "application/json",
                "POST", "u", &r);
    ok(st == 400 && strstr((char *) r.body, "P-256"),
       "engine: NOC from a P-384 NOCSR -> 400");
    pki_matter_resp_free(&r);

    /* a compressed or hybrid P-256 point: refused with the request (the
     * batch's check, before anything is built), not by the profile check
     * of the certificate; a hybrid one already by the CSR reader, as for
     * any template (RFC 5480 2.2) */
    {
        static const char  *forms[] = { "compressed", "hybrid", NULL };
        static const char  *why[] = { "Matter dac public key: must be an "
                                      "uncompressed point",
                                      "the CSR's public key is an EC point "
                                      "in hybrid form" };
        static const char  *nwhy[] = { "uncompressed point", "hybrid form" };

        for (i = 0; forms[i]; i++) {
            EVP_PKEY  *kc;

            kc = ec_key("P-256");
            EVP_PKEY_set_utf8_string_param(kc,
                OSSL_PKEY_PARAM_EC_POINT_CONVERSION_FORMAT, forms[i]);
            free(c2);
            c2 = csr_b64(kc, "point");
            snprintf(body, len, "{\"csrs\": [\"%s\", \"%s\", \"%s\"]}", c1,
                     c1, c2);
            st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, body,
                        "application/json", "POST", "u", &r);
            ok(st == 400 && r.body && strstr((char *) r.body, "csrs[2]: ")
               && strstr((char *) r.body, why[i]),
               "engine: a %s point in a batch -> 400 %.*s", forms[i],
               (int) r.body_len, r.body ? (char *) r.body : "");
            pki_matter_resp_free(&r);

            snprintf(body, len, "{\"csr\": \"%s\", \"node_id\": "
                     "\"0000000000000007\", \"fabric_id\": "
                     "\"FAB000000000001D\"}", c2);
            st = engine(caic, tnoc, PKI_MATTER_OP_NOC, body,
                        "application/json", "POST", "u", &r);
            ok(st == 400 && r.body && strstr((char *) r.body, nwhy[i]),
               "engine: NOC from a %s point -> 400 %.*s", forms[i],
               (int) r.body_len, r.body ? (char *) r.body : "");
            pki_matter_resp_free(&r);
            EVP_PKEY_free(kc);
        }
    }

    /* PKCS#10 version 2: taken for ACME, not for Matter */
    free(c2);
    c2 = csr_b64_v(k2, "v2", 2);
    snprintf(body, len, "{\"csrs\": [\"%s\", \"%s\"]}", c1, c2);
    st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH, body,
                "application/json", "POST", "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "csrs[1]: Matter dac "
                                     "CSR: must be PKCS#10 version 1"),
       "engine: a version 2 CSR in a batch -> 400 %.*s", (int) r.body_len,
       r.body ? (char *) r.body : "");
    pki_matter_resp_free(&r);
    snprintf(body, len, "{\"csr\": \"%s\", \"node_id\": \"0000000000000007\","
             " \"fabric_id\": \"FAB000000000001D\"}", c2);
    st = engine(caic, tnoc, PKI_MATTER_OP_NOC, body, "application/json",
                "POST", "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "version 1"),
       "engine: NOC from a version 2 NOCSR -> 400 %.*s", (int) r.body_len,
       r.body ? (char *) r.body : "");
    pki_matter_resp_free(&r);

    /* a member given twice: one reader's node_id is not another's */
    snprintf(body, len, "{\"csr\": \"%s\", \"node_id\": \"0000000000000007\","
             " \"node_id\": \"0000000000000008\", \"fabric_id\": "
             "\"FAB000000000001D\"}", c1);
    st = engine(caic, tnoc, PKI_MATTER_OP_NOC, body, "application/json",
                "POST", "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "repeats a member"),
       "engine: NOC with node_id twice -> 400 %.*s", (int) r.body_len,
       r.body ? (char *) r.body : "");
    pki_matter_resp_free(&r);
    st = engine(capai, tdac, PKI_MATTER_OP_DAC_BATCH,
                "{\"count\": 1, \"count\": 2}", "application/json", "POST",
                "u", &r);
    ok(st == 400 && r.body && strstr((char *) r.body, "repeats a member"),
       "engine: batch with count twice -> 400");
    pki_matter_resp_free(&r);

    free(body);
    free(c1);
    free(c2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);
    EVP_PKEY_free(k3);
}


/* ---- a CN's Mvid:/Mpid:, keygen CN rules, TLV validity ------------------ */

/* x (its validity set) made with OpenSSL alone: version 3, serial, subject
 * n (freed), issued by issuer (NULL: x itself), key pub, the extensions
 * ext (up to a NULL name) made against the issuer, signed by signer with
 * SHA-256. */
static X509 *
raw_cert(X509 *x, long serial, X509_NAME *n, X509 *issuer, EVP_PKEY *pub,
    const char *(*ext)[2], EVP_PKEY *signer)
{
    int              i;
    X509V3_CTX       v3;
    X509_EXTENSION  *e;

    X509_set_version(x, X509_VERSION_3);
    ASN1_INTEGER_set(X509_get_serialNumber(x), serial);
    X509_set_subject_name(x, n);
    X509_set_issuer_name(x, issuer ? X509_get_subject_name(issuer) : n);
    X509_NAME_free(n);
    X509_set_pubkey(x, pub);

    X509V3_set_ctx(&v3, issuer ? issuer : x, x, NULL, NULL, 0);
    for (i = 0; ext[i][0]; i++) {
        e = X509V3_EXT_conf(NULL, &v3, ext[i][0], ext[i][1]);
        X509_add_ext(x, e, -1);
        X509_EXTENSION_free(e);
    }

    X509_sign(x, signer, EVP_sha256());

    return x;
}


/* A DAC made with OpenSSL alone (the CA's own rules would not sign some of
 * these): subject CN, VID, PID; issued by pai with kpai, within its
 * validity. */
static X509 *
raw_dac(const char *cn, EVP_PKEY *pub, X509 *pai, EVP_PKEY *kpai)
{
    X509       *x;
    X509_NAME  *n;

    static const char  *ext[][2] = {
        { "basicConstraints", "critical,CA:FALSE" },
        { "keyUsage", "critical,digitalSignature" },
        { "subjectKeyIdentifier", "hash" },
        { "authorityKeyIdentifier", "keyid:always" },
        { NULL, NULL }
    };

    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) cn, -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, VID, MBSTRING_UTF8,
                               (const unsigned char *) "FFF1", -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, PID, MBSTRING_UTF8,
                               (const unsigned char *) "8000", -1, -1, 0);
    X509_set1_notBefore(x, X509_get0_notBefore(pai));
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);

    return raw_cert(x, 4242, n, pai, pub, ext, kpai);
}


/* The SDK parses every subject attribute: a CN whose Mvid:/Mpid: is not
 * followed by 4 uppercase hex digits fails (CHIP_ERROR_WRONG_CERT_DN) even
 * beside the VID/PID attributes, whose values then win over the CN's.
 * verify-attestation follows it; the CA signs neither such a CN nor one
 * whose value contradicts the attributes, and refuses the first with the
 * request. */
static void
test_cn_vidpid(X509 *paa, X509 *pai, EVP_PKEY *kpai, pki_ca_t *capai,
    pki_template_t *tdac, EVP_PKEY *kdev)
{
    int             i;
    X509           *dac;
    X509_REQ       *csr;
    const char     *a[3];
    pki_result_t    res;
    pki_request_t   req;
    pki_template_t *t;

    static const struct {
        const char  *cn;
        int          attest;    /* verify-attestation accepts it */
        int          emit;      /* the CA issues it */
        const char  *reason;    /* why not (the request for !emit) */
    } cases[] = {
        { "Widget", 1, 1, NULL },
        { "Widget Mvid:FFF1 Mpid:8000", 1, 1, NULL },
        { "Widget Mvid:fff1", 0, 0, "Mvid: in the CN" },
        { "Widget Mpid:80", 0, 0, "Mpid: in the CN" },
        { "Widget Mvid:", 0, 0, "Mvid: in the CN" },
        { "Widget Mvid:FFF1 Mpid:x8000", 0, 0, "Mpid: in the CN" },
        /* the leftmost valid one wins */
        { "Widget Mvid:?? Mvid:FFF1", 1, 1, NULL },
        /* the SDK takes the attributes; the CA does not sign a CN that
         * says otherwise */
        { "Widget Mvid:FFF2", 1, 0, "differs from the VID/PID attribute" },
        { "Widget Mpid:8001", 1, 0, "differs from the VID/PID attribute" },
        { NULL, 0, 0, NULL }
    };

    for (i = 0; cases[i].cn; i++) {
        dac = raw_dac(cases[i].cn, kdev, pai, kpai);
        pki_result_init(&res);
        if (cases[i].attest) {
            ok(pki_matter_verify_attestation(dac, pai, paa, 0, &res)
               == PKI_OK, "CN \"%s\" with VID/PID attributes: "
               "verify-attestation accepts it %s", cases[i].cn, res.detail);
        } else {
            ok(pki_matter_verify_attestation(dac, pai, paa, 0, &res)
               == PKI_POLICY && strstr(res.detail, cases[i].reason),
               "CN \"%s\" with VID/PID attributes: verify-attestation "
               "refuses it: %s", cases[i].cn, res.detail);
        }
        pki_result_init(&res);
        if (cases[i].emit) {
            ok(pki_matter_check(dac, PKI_MATTER_DAC, pai, &res) == PKI_OK,
               "  and the DAC profile check takes it %s", res.detail);
        } else {
            ok(pki_matter_check(dac, PKI_MATTER_DAC, pai, &res)
               == PKI_POLICY && strstr(res.detail, cases[i].reason),
               "  and the DAC profile check refuses it: %s", res.detail);
        }
        X509_free(dac);

        /* the same CN through the CA */
        csr = make_csr(kdev, cases[i].cn, NULL, EVP_sha256());
        pki_result_init(&res);
        if (csr == NULL) {
            ok(0, "  CSR with CN \"%s\"", cases[i].cn);
            continue;
        }
        if (pki_request_from_csr(tdac, csr, &req, &res) != PKI_OK) {
            ok(!cases[i].emit && !cases[i].attest
               && strstr(res.detail, cases[i].reason),
               "  refused with the request: %s", res.detail);
            X509_REQ_free(csr);
            continue;
        }
        ok(cases[i].emit || cases[i].attest, "  a request is made (its "
           "value is judged against the PAI's at issuance)");
        dac = NULL;
        pki_result_init(&res);
        if (cases[i].emit) {
            ok(pki_issue(capai, tdac, NULL, &req, NULL, &dac, &res) == PKI_OK
               && pki_matter_verify_attestation(dac, pai, paa, 0, &res)
                  == PKI_OK,
               "  issued, and passes verify-attestation %s %s", res.detail,
               res.log);
        } else {
            ok(pki_issue(capai, tdac, NULL, &req, NULL, &dac, &res)
               == PKI_POLICY && dac == NULL
               && strstr(res.detail, cases[i].reason)
               && !strstr(res.log, "issued certificate failed"),
               "  refused before signing: %s", res.detail);
        }
        X509_free(dac);
        pki_request_clear(&req);
        X509_REQ_free(csr);
    }

    /* a fixed CN that no commissioner takes: refused with the template */
    t = pki_template_new("dac-badcn");
    a[0] = "dac";
    pki_template_set(t, "matter", 1, a, &res);
    a[0] = "CN";
    a[1] = "fixed";
    a[2] = "Widget Mvid:fff1";
    pki_result_init(&res);
    pki_template_set(t, "subject", 3, a, &res);
    pki_result_init(&res);
    ok(pki_template_finish(t, &res) == PKI_MALFORMED
       && strstr(res.detail, "Mvid: in the CN"),
       "template with subject CN fixed \"Widget Mvid:fff1\" refused: %s",
       res.detail);
    pki_template_free(t);
}


/* Server keygen ({"count": N}) takes the template's CN rule as a CSR's
 * request does: "fixed" gives every DAC that CN; "required" finds none. */
static void
test_keygen_cn(X509 *pai, pki_key_t *fpai)
{
    int               i, st;
    char              buf[256];
    X509             *x;
    cJSON            *j, *c;
    size_t            len;
    pki_ca_t         *ca;
    const char       *a[3];
    pki_result_t      res;
    unsigned char    *der;
    const unsigned char  *p;
    pki_template_t   *t[2];
    pki_matter_resp_t r;

    static const char  *rules[] = { "fixed", "required" };

    for (i = 0; i < 2; i++) {
        t[i] = pki_template_new(i ? "dac-required" : "dac-fixed");
        a[0] = "dac";
        pki_template_set(t[i], "matter", 1, a, &res);
        a[0] = "8000";
        pki_template_set(t[i], "matter_pid", 1, a, &res);
        a[0] = "CN";
        a[1] = rules[i];
        a[2] = "Acme Widget DAC";
        pki_result_init(&res);
        pki_template_set(t[i], "subject", i ? 2 : 3, a, &res);
        pki_result_init(&res);
        ok(pki_template_finish(t[i], &res) == PKI_OK,
           "template with subject CN %s %s", rules[i], res.detail);
    }

    ca = make_ca(pai, fpai, "pai-cn", t[0], t[1], NULL);
    ok(ca != NULL, "a PAI CA for the CN rules");

    if (ca) {
        st = engine(ca, t[0], PKI_MATTER_OP_DAC_BATCH, "{\"count\": 2}",
                    "application/json", "POST", "u", &r);
        j = cJSON_ParseWithLength((char *) r.body, r.body_len);
        c = cJSON_GetArrayItem(cJSON_GetObjectItem(j, "certificates"), 1);
        x = NULL;
        buf[0] = '\0';
        if (cJSON_IsString(c)) {
            pki_result_init(&res);
            if (pki_base64_decode((const unsigned char *) c->valuestring,
                                  strlen(c->valuestring), &der, &len, &res)
                == PKI_OK)
            {
                p = der;
                x = d2i_X509(NULL, &p, (long) len);
                free(der);
            }
        }
        if (x) {
            X509_NAME_get_text_by_NID(X509_get_subject_name(x),
                                      NID_commonName, buf, sizeof(buf));
        }
        ok(st == 200 && strcmp(buf, "Acme Widget DAC") == 0,
           "engine: count 2 under subject CN fixed -> CN \"%s\" (%d)", buf,
           st);
        X509_free(x);
        cJSON_Delete(j);
        pki_matter_resp_free(&r);

        st = engine(ca, t[1], PKI_MATTER_OP_DAC_BATCH, "{\"count\": 1}",
                    "application/json", "POST", "u", &r);
        ok(st == 400 && r.body
           && strstr((char *) r.body, "certificates[0]: subject attribute "
                                      "CN is required"),
           "engine: count 1 under subject CN required -> 400 %.*s",
           (int) r.body_len, r.body ? (char *) r.body : "");
        pki_matter_resp_free(&r);
    }

    pki_ca_free(ca);
    pki_template_free(t[0]);
    pki_template_free(t[1]);
}


/* A DAC ends 99991231235959Z under a PAI of ten years: commissioners
 * judge the PAI at the DAC's notBefore, so the device still passes
 * attestation after its PAI ended; a template with beyond_ca_expiry off
 * ends its DACs with the PAI. */
static void
test_dac_beyond_pai(X509 *paa, pki_key_t *fpaa, EVP_PKEY *kdev)
{
    int              i, na;
    X509            *pai, *dac;
    time_t           pai_na;
    EVP_PKEY        *kp;
    X509_REQ        *csr;
    pki_ca_t        *ca, *capaa;
    pki_key_t       *fp;
    X509_NAME       *n;
    const char      *a[1];
    pki_result_t     res;
    pki_request_t    req;
    pki_template_t  *tp, *t[2];
    const char      *attrs[] = { "CN", "Ten-year PAI", VID, "FFF1", PID,
                                 "8000", NULL };

    tp = pki_template_new("pai-10y");
    a[0] = "pai";
    pki_template_set(tp, "matter", 1, a, &res);
    a[0] = "3650d";
    pki_result_init(&res);
    pki_template_set(tp, "validity", 1, a, &res);
    pki_result_init(&res);
    ok(pki_template_finish(tp, &res) == PKI_OK,
       "a PAI template of ten years %s", res.detail);
    capaa = make_ca(paa, fpaa, "paa-10y", tp, NULL, NULL);
    if (!ok(capaa != NULL, "the PAA as a CA of that template")) {
        pki_template_free(tp);
        return;
    }

    kp = ec_key("P-256");
    fp = file_key(kp, "pai10y");
    n = opname(attrs);
    memset(&req, 0, sizeof(req));
    req.subject = n;
    req.pubkey = kp;
    pai = NULL;
    pki_result_init(&res);
    ok(pki_issue(capaa, tp, NULL, &req, NULL, &pai, &res) == PKI_OK,
       "a PAI of ten years issued %s", res.detail);
    X509_NAME_free(n);

    for (i = 0; i < 2; i++) {
        t[i] = pki_template_new(i ? "dac-capped" : "dac-beyond");
        a[0] = "dac";
        pki_template_set(t[i], "matter", 1, a, &res);
        if (i) {
            a[0] = "off";
            pki_template_set(t[i], "beyond_ca_expiry", 1, a, &res);
        }
        pki_result_init(&res);
        ok(pki_template_finish(t[i], &res) == PKI_OK, "template %s %s",
           i ? "dac-capped" : "dac-beyond", res.detail);
    }

    ca = pai ? make_ca(pai, fp, "pai10y", t[0], t[1], NULL) : NULL;
    ok(ca != NULL, "the PAI of ten years as a CA");
    pai_na = 0;
    if (pai != NULL) {
        struct tm  tm;

        if (ASN1_TIME_to_tm(X509_get0_notAfter(pai), &tm)) {
            pai_na = timegm(&tm);
        }
    }

    for (i = 0; ca != NULL && i < 2; i++) {
        csr = make_csr(kdev, "Widget", NULL, EVP_sha256());
        pki_result_init(&res);
        dac = NULL;
        if (csr == NULL
            || pki_request_from_csr(t[i], csr, &req, &res) != PKI_OK
            || pki_issue(ca, t[i], NULL, &req, NULL, &dac, &res) != PKI_OK)
        {
            ok(0, "DAC under %s: %s", i ? "dac-capped" : "dac-beyond",
               res.detail);
        } else {
            na = ASN1_TIME_compare(X509_get0_notAfter(dac),
                                   X509_get0_notAfter(pai));
            ok(i ? na == 0
                 : ASN1_STRING_length(X509_get0_notAfter(dac)) == 15
                   && memcmp(ASN1_STRING_get0_data(
                                 X509_get0_notAfter(dac)),
                             "99991231235959Z", 15) == 0,
               "%s: the DAC ends %s", i ? "dac-capped" : "dac-beyond",
               i ? "with its PAI" : "99991231235959Z");
            pki_result_init(&res);
            ok((pki_matter_verify_attestation(dac, pai, paa,
                                              pai_na + 86400 * 365, &res)
                == PKI_OK) == !i, "  a year after the PAI ended: %s (%s)",
               i ? "kDacExpired" : "attests", res.detail);
        }
        X509_free(dac);
        pki_request_clear(&req);
        X509_REQ_free(csr);
    }

    pki_ca_free(ca);
    pki_ca_free(capaa);
    pki_key_free(fp);
    EVP_PKEY_free(kp);
    X509_free(pai);
    pki_template_free(tp);
    pki_template_free(t[0]);
    pki_template_free(t[1]);
}


/* Matter TLV time is 32-bit seconds since 2000: an operational
 * certificate ending after 2136-02-07T06:28:15Z, other than 9999, has no
 * TLV form.  A template that would always end there is refused with the
 * CA; one that gets there from a requested notBefore is refused before
 * signing, not by the TLV conversion of the signed certificate. */
static void
test_tlv_validity(X509 *icac, pki_key_t *fic, EVP_PKEY *knoc)
{
    int              i;
    X509            *noc;
    FILE            *f;
    pki_ca_t        *ca;
    const char      *a[1];
    char             path[PATH_MAX * 2], chain[PATH_MAX * 2], why[80];
    pki_result_t     res;
    pki_request_t    req;
    pki_template_t  *t[2];

    static const char  *days[] = { "73000d", "3650d" };

    /* the requested windows under the 10-year template (0: none), and the
     * end of the window whose TLV form is refused, or NULL: issued */
    static const struct {
        long long    not_before;
        long long    not_after;
        const char  *what;
        const char  *refused;
    } window[] = {
        { 0, 0, "a NOC of 10 years from now", NULL },
        { 5256835200LL, 0, "a NOC from 2136-08-01", "notBefore" },
        { 4954435200LL, 5206896000LL, "a NOC from 2127 to 2135", NULL },
        { 4954435200LL, 0, "a NOC from 2127 for 10 years", "notAfter" }
    };

    if (!ok(ASN1_TIME_cmp_time_t(X509_get0_notAfter(icac),
                                 (time_t) 253402300799LL) == 0,
            "the ICAC ends 99991231235959Z"))
    {
        return;
    }

    for (i = 0; i < 2; i++) {
        t[i] = pki_template_new(i ? "noc-10y" : "noc-200y");
        a[0] = "noc";
        pki_template_set(t[i], "matter", 1, a, &res);
        a[0] = days[i];
        pki_result_init(&res);
        pki_template_set(t[i], "validity", 1, a, &res);
        pki_result_init(&res);
        ok(pki_template_finish(t[i], &res) == PKI_OK, "template noc "
           "validity %s %s", days[i], res.detail);
    }

    /* the configuration: a NOC would end about 2226 */
    snprintf(path, sizeof(path), "%s/icac-tlv.pem", tmpdir);
    snprintf(chain, sizeof(chain), "%s/rcac-chain.pem", tmpdir);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, icac)) {
        ok(0, "ICAC written");
    }
    if (f) {
        fclose(f);
    }
    pki_result_init(&res);
    ca = pki_ca_new("icac-200y");
    a[0] = path;
    ok(ca != NULL && pki_ca_set(ca, "certificate", 1, a, &res) == PKI_OK
       && (a[0] = chain, pki_ca_set(ca, "chain", 1, a, &res) == PKI_OK)
       && pki_ca_set_key(ca, fic, &res) == PKI_OK
       && pki_ca_add_template(ca, t[0], &res) == PKI_OK
       && pki_ca_finish(ca, &res) == PKI_MALFORMED
       && strstr(res.detail, "template \"noc-200y\": a Matter noc of CA "
                             "\"icac-200y\" would end 22")
       && strstr(res.detail, "Matter TLV cannot encode"),
       "NOC template validity 73000d under an ICAC to 9999: refused with "
       "the CA: %s", res.detail);
    pki_ca_free(ca);

    /* 10 years from a notBefore of 2135 */
    ca = make_ca(icac, fic, "icac-10y", t[1], NULL, chain);
    ok(ca != NULL, "NOC template validity 3650d under that ICAC: taken");

    for (i = 0; ca && i < 4; i++) {
        memset(&req, 0, sizeof(req));
        req.subject = opname(noc_cases[0].attrs);
        req.pubkey = knoc;
        req.not_before = (time_t) window[i].not_before;
        req.not_after = (time_t) window[i].not_after;
        noc = NULL;
        pki_result_init(&res);
        if (window[i].refused == NULL) {
            ok(pki_issue(ca, t[1], NULL, &req, NULL, &noc, &res) == PKI_OK,
               "%s: issued %s", window[i].what, res.detail);
        } else {
            snprintf(why, sizeof(why), "Matter noc validity: %s cannot be "
                     "encoded", window[i].refused);
            ok(pki_issue(ca, t[1], NULL, &req, NULL, &noc, &res)
               == PKI_POLICY && noc == NULL && strstr(res.detail, why)
               && !strstr(res.log, "issued certificate failed"),
               "%s: refused before signing: %s", window[i].what,
               res.detail);
        }
        X509_free(noc);
        X509_NAME_free(req.subject);
    }

    pki_ca_free(ca);
    pki_template_free(t[0]);
    pki_template_free(t[1]);
}


/* A CA certificate made with OpenSSL alone (the CA's own rules would not
 * issue these): subject CN-less, with an emailAddress when mail. */
static X509 *
raw_ca_cert(const char *oid, const char *id, const char *mail,
    EVP_PKEY *pub, X509 *issuer, EVP_PKEY *signer, long serial)
{
    X509       *x;
    X509_NAME  *n;

    static const char  *ext[][2] = {
        { "basicConstraints", "critical,CA:TRUE" },
        { "keyUsage", "critical,keyCertSign,cRLSign" },
        { "subjectKeyIdentifier", "hash" },
        { "authorityKeyIdentifier", "keyid:always" },
        { NULL, NULL }
    };

    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, oid, MBSTRING_UTF8,
                               (const unsigned char *) id, -1, -1, 0);
    if (mail) {
        X509_NAME_add_entry_by_txt(n, "emailAddress", MBSTRING_ASC,
                                   (const unsigned char *) mail, -1, -1, 0);
    }
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);

    return raw_cert(x, serial, n, issuer, pub, ext, signer);
}


/* A NOC made with OpenSSL alone, valid from nb to na (GeneralizedTime;
 * NULL: an hour ago, a year on), issued by issuer with signer. */
static X509 *
raw_noc(const char *nb, const char *na, EVP_PKEY *pub, X509 *issuer,
    EVP_PKEY *signer)
{
    X509       *x;
    X509_NAME  *n;

    static const char  *ext[][2] = {
        { "basicConstraints", "critical,CA:FALSE" },
        { "keyUsage", "critical,digitalSignature" },
        { "extendedKeyUsage", "critical,clientAuth,serverAuth" },
        { "subjectKeyIdentifier", "hash" },
        { "authorityKeyIdentifier", "keyid:always" },
        { NULL, NULL }
    };

    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, NODE, MBSTRING_UTF8,
                               (const unsigned char *) "0000000000000007",
                               -1, -1, 0);
    X509_NAME_add_entry_by_txt(n, FABRIC, MBSTRING_UTF8,
                               (const unsigned char *) "FAB000000000001D",
                               -1, -1, 0);
    if (nb) {
        ASN1_TIME_set_string_X509(X509_getm_notBefore(x), nb);
        ASN1_TIME_set_string_X509(X509_getm_notAfter(x), na);
    } else {
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 365);
    }

    return raw_cert(x, 77, n, issuer, pub, ext, signer);
}


/* verify-operational judges each certificate's validity at a time and
 * each CA's pathLenConstraint: it passed an expired NOC, one not valid
 * for years, and an RCAC of pathLen 0 over an ICAC. */
static void
test_operational_validity(void)
{
    X509          *rcac, *rcac0, *icac, *noc, *old, *later, *direct, *root01;
    X509          *n11, *ica01;
    X509_NAME     *nm;
    EVP_PKEY      *krc, *kic, *kn;
    pki_result_t   res;

    static const char  *ext0[][2] = {
        { "basicConstraints", "critical,CA:TRUE,pathlen:0" },
        { "keyUsage", "critical,keyCertSign,cRLSign" },
        { "subjectKeyIdentifier", "hash" },
        { "authorityKeyIdentifier", "keyid:always" },
        { NULL, NULL }
    };

    krc = ec_key("P-256");
    kic = ec_key("P-256");
    kn = ec_key("P-256");

    /* rcac0: the RCAC's subject and key, with pathLen 0: the ICAC and
     * the NOC below it verify under either */
    rcac = raw_ca_cert(RCACID, "CACACACA00000001", NULL, krc, NULL, krc, 1);
    rcac0 = X509_new();
    nm = X509_NAME_new();
    X509_NAME_add_entry_by_txt(nm, RCACID, MBSTRING_UTF8,
                               (const unsigned char *) "CACACACA00000001",
                               -1, -1, 0);
    X509_gmtime_adj(X509_getm_notBefore(rcac0), -3600);
    X509_gmtime_adj(X509_getm_notAfter(rcac0), 86400L * 365);
    rcac0 = raw_cert(rcac0, 3, nm, NULL, krc, ext0, krc);
    icac = raw_ca_cert(ICACID, "CACACACA00000002", NULL, kic, rcac, krc, 2);

    noc = raw_noc(NULL, NULL, kn, icac, kic);
    old = raw_noc("20200101000000Z", "20210101000000Z", kn, icac, kic);
    later = raw_noc("20350101000000Z", "20360101000000Z", kn, icac, kic);
    direct = raw_noc(NULL, NULL, kn, rcac0, krc);

    pki_result_init(&res);
    ok(pki_matter_verify_operational(noc, icac, rcac, 0, &res) == PKI_OK,
       "operational: RCAC -> ICAC -> NOC, all valid now %s", res.detail);

    pki_result_init(&res);
    ok(pki_matter_verify_operational(old, icac, rcac, 0, &res) == PKI_POLICY
       && strstr(res.detail, "CERT_EXPIRED"),
       "operational: a NOC valid 2020..2021 refused: %s", res.detail);

    pki_result_init(&res);
    ok(pki_matter_verify_operational(later, icac, rcac, 0, &res)
       == PKI_POLICY && strstr(res.detail, "CERT_NOT_VALID_YET"),
       "operational: a NOC valid from 2035 refused: %s", res.detail);

    pki_result_init(&res);
    ok(pki_matter_verify_operational(noc, icac, rcac0, 0, &res) == PKI_POLICY
       && strstr(res.detail, "CERT_PATH_LEN_CONSTRAINT_EXCEEDED"),
       "operational: an RCAC of pathLen 0 over an ICAC refused: %s",
       res.detail);

    pki_result_init(&res);
    ok(pki_matter_verify_operational(direct, NULL, rcac0, 0, &res) == PKI_OK,
       "operational: the RCAC of pathLen 0 over a NOC alone passes %s",
       res.detail);

    /* the SDK's vectors: valid 2020-10-15 .. 2040-10-15 */
    root01 = cert_file("operational", "Chip-Test-Root01-Cert.pem");
    ica01 = cert_file("operational", "TestCert-ICA01.pem");
    n11 = cert_file("operational", "TestCert-Node01_01.pem");
    if (root01 && ica01 && n11) {
        pki_result_init(&res);
        ok(pki_matter_verify_operational(n11, ica01, root01, 1893456000,
                                         &res) == PKI_OK,
           "operational: Node01_01 in 2030 passes %s", res.detail);
        pki_result_init(&res);
        ok(pki_matter_verify_operational(n11, ica01, root01, 2234567890,
                                         &res) == PKI_POLICY,
           "operational: Node01_01 in 2040 refused: %s", res.detail);
        pki_result_init(&res);
        ok(pki_matter_verify_operational(n11, ica01, root01, 1577836800,
                                         &res) == PKI_POLICY,
           "operational: Node01_01 in 2020-01 refused: %s", res.detail);
    }

    X509_free(root01);
    X509_free(ica01);
    X509_free(n11);
    X509_free(rcac);
    X509_free(rcac0);
    X509_free(icac);
    X509_free(noc);
    X509_free(old);
    X509_free(later);
    X509_free(direct);
    EVP_PKEY_free(krc);
    EVP_PKEY_free(kic);
    EVP_PKEY_free(kn);
}


/* The 600-byte DER limit is judged before anything is signed, by the
 * longest signature the key can make: with a CRL URL in the DACs, every
 * CN up to some length is issued and fits, every longer one is refused
 * saying so, and the longest issued comes within the few octets an ECDSA
 * signature's length varies by. */
static void
test_der_bound(X509 *pai, pki_key_t *fpai, pki_template_t *tdac,
    EVP_PKEY *kdev)
{
    int             len, n, last_ok, first_no, others, max_size;
    char            cn[80], path[PATH_MAX * 2];
    X509           *dac;
    FILE           *f;
    pki_ca_t       *ca;
    X509_REQ       *csr;
    const char     *argv[1];
    pki_result_t    res;
    pki_request_t   req;

    snprintf(path, sizeof(path), "%s/pai-crl.pem", tmpdir);
    f = fopen(path, "w");
    if (f == NULL || !PEM_write_X509(f, pai)) {
        if (f) {
            fclose(f);
        }
        ok(0, "DER bound: PAI written");
        return;
    }
    fclose(f);

    pki_result_init(&res);
    ca = pki_ca_new("pai-crl");
    argv[0] = path;
    if (ca == NULL || pki_ca_set(ca, "certificate", 1, argv, &res) != PKI_OK
        || (argv[0] = "http://crl.example.com/pppppppppppppppppppppppppp"
                      "pppppppppppppppppppppppppppppppppp.crl",
            pki_ca_set(ca, "crl_url", 1, argv, &res) != PKI_OK)
        || pki_ca_set_key(ca, fpai, &res) != PKI_OK
        || pki_ca_add_template(ca, tdac, &res) != PKI_OK
        || pki_ca_finish(ca, &res) != PKI_OK)
    {
        ok(0, "DER bound: a PAI with a CRL URL (%s %s)", res.detail,
           res.log);
        pki_ca_free(ca);
        return;
    }

    last_ok = first_no = 0;
    others = max_size = 0;

    for (len = 1; len <= 64; len++) {
        memset(cn, 'x', (size_t) len);
        cn[len] = '\0';
        csr = make_csr(kdev, cn, NULL, EVP_sha256());
        pki_result_init(&res);
        dac = NULL;
        if (csr == NULL
            || pki_request_from_csr(tdac, csr, &req, &res) != PKI_OK)
        {
            X509_REQ_free(csr);
            others++;
            continue;
        }
        pki_result_init(&res);
        switch (pki_issue(ca, tdac, NULL, &req, NULL, &dac, &res)) {
        case PKI_OK:
            n = i2d_X509(dac, NULL);
            if (first_no || n > 600) {
                others++;
                diag("CN of %d: issued, %d bytes", len, n);
            }
            last_ok = len;
            max_size = n > max_size ? n : max_size;
            break;
        case PKI_POLICY:
            if (strstr(res.detail, "larger than 600 bytes once signed")) {
                first_no = first_no ? first_no : len;
                break;
            }
            /* fall through */
        default:
            others++;
            diag("CN of %d: %s", len, res.detail);
        }
        X509_free(dac);
        pki_request_clear(&req);
        X509_REQ_free(csr);
    }

    ok(others == 0 && last_ok > 0 && first_no == last_ok + 1,
       "DER bound: CNs up to %d characters issued, longer ones refused "
       "before signing (%d)", last_ok, first_no);
    ok(max_size > 596 && max_size <= 600,
       "  the longest issued is %d bytes (at most 600, the bound tight)",
       max_size);

    pki_ca_free(ca);
}


/* The test Redis's socket, and with c a raw connection to it (the test's
 * own look at the store), NULL when that does not connect; NULL without
 * PKI_TEST_REDIS_SOCK (the test what said skipped). */
static const char *
redis_sock(const char *what, redisContext **c)
{
    const char  *sock;

    sock = getenv("PKI_TEST_REDIS_SOCK");
    if (sock == NULL) {
        diag("%s: no PKI_TEST_REDIS_SOCK, skipped", what);
        return NULL;
    }

    if (c != NULL) {
        *c = redisConnectUnix(sock);
        if (*c != NULL && (*c)->err) {
            redisFree(*c);
            *c = NULL;
        }
    }

    return sock;
}


/* A store on the Redis at path (or a proxy in front of it), its keys
 * under a namespace of its own (tag and the pid, into ns), commands timing
 * out after ms; NULL with res filled. */
static pki_redis_t *
ns_redis(const char *path, const char *tag, char *ns, size_t size, int ms,
    pki_result_t *res)
{
    snprintf(ns, size, "%s%d:", tag, (int) getpid());
    return fx_redis(path, ns, ms, res);
}


/* A NOC issued and committed, then not deliverable (its RCAC has no TLV
 * form: refused at configuration, so only the engine sees it): 500, and
 * the record is revoked, not left good. */
static void
test_noc_withdraw(pki_template_t *tnoc, EVP_PKEY *kic, pki_key_t *fic)
{
    int                 st;
    char                ns[64], serial[41], chain[PATH_MAX * 2], *c, *p;
    char                body[2048];
    X509               *rcac, *icac;
    FILE               *f;
    EVP_PKEY           *krc, *kn;
    pki_ca_t           *ca;
    const char         *sock;
    pki_redis_t        *r;
    pki_record_t        rec;
    pki_result_t        res;
    pki_matter_req_t    req;
    pki_matter_resp_t   resp;
    pki_matter_conf_t   conf;

    sock = redis_sock("NOC withdrawal", NULL);
    if (sock == NULL) {
        return;
    }

    krc = ec_key("P-256");
    kn = ec_key("P-256");
    rcac = raw_ca_cert(RCACID, "CACACACA00000009", "pki@example.com", krc,
                       NULL, krc, 1);
    icac = raw_ca_cert(ICACID, "CACACACA0000000A", NULL, kic, rcac, krc, 2);

    snprintf(chain, sizeof(chain), "%s/mail-rcac.pem", tmpdir);
    f = fopen(chain, "w");
    if (f) {
        PEM_write_X509(f, rcac);
        fclose(f);
    }
    ca = make_ca(icac, fic, "mail-icac", tnoc, NULL, chain);

    pki_result_init(&res);
    ok(ca && pki_matter_noc_ca_check(ca, &res) == PKI_MALFORMED,
       "NOC CA under an RCAC with an emailAddress refused by the "
       "configuration check: %s", res.detail);

    r = ns_redis(sock, "mwd", ns, sizeof(ns), 1000, &res);

    c = csr_b64(kn, "nocsr");
    snprintf(body, sizeof(body), "{\"csr\": \"%s\", \"node_id\": "
             "\"0000000000000007\", \"fabric_id\": \"FAB000000000001D\"}",
             c);

    memset(&conf, 0, sizeof(conf));
    conf.ca = ca;
    conf.tmpl = tnoc;
    conf.redis = r;
    matter_req(&req, PKI_MATTER_OP_NOC, body, "application/json", "POST",
               "u");

    st = 0;
    memset(&resp, 0, sizeof(resp));
    if (ca && r) {
        pki_matter_handle(&conf, &req, &resp);
        st = resp.http_status;
    }

    p = strstr(resp.res.log, "issued NOC serial ");
    serial[0] = '\0';
    if (p && sscanf(p, "issued NOC serial %40[0-9A-F]", serial) != 1) {
        serial[0] = '\0';
    }
    ok(st == 500 && serial[0], "NOC not deliverable: 500, withdrawn (%s; %s)",
       resp.res.detail, resp.res.log);

    memset(&rec, 0, sizeof(rec));
    pki_result_init(&res);
    ok(serial[0] && pki_record_get(r, "mail-icac", serial, &rec, &res)
                    == PKI_OK
       && rec.status == PKI_CERT_REVOKED && rec.reason == 5,
       "  its record %s is revoked (cessationOfOperation) %s", serial,
       res.detail);
    pki_record_clear(&rec);

    pki_matter_resp_free(&resp);
    free(c);
    pki_redis_free(r);
    pki_ca_free(ca);
    X509_free(rcac);
    X509_free(icac);
    EVP_PKEY_free(krc);
    EVP_PKEY_free(kn);
}


/* The records of CA ca under namespace ns: how many (their serials into
 * serial[], up to max), of them good (their serials into gserial[]), and
 * revoked cessationOfOperation with the withdrawn mark. */
static int
batch_records(redisContext *c, const char *ns, const char *ca,
    char serial[][41], char gserial[][41], int max, int *good,
    int *withdrawn)
{
    int          n, g;
    size_t       i;
    const char  *p;
    redisReply  *keys, *f;

    *good = 0;
    *withdrawn = 0;
    n = 0;

    keys = redisCommand(c, "KEYS %s{ca:%s}:cert:*", ns, ca);
    if (keys == NULL || keys->type != REDIS_REPLY_ARRAY) {
        freeReplyObject(keys);
        return -1;
    }

    for (i = 0; i < keys->elements; i++) {
        p = strstr(keys->element[i]->str, ":cert:");
        if (p == NULL) {
            continue;
        }

        if (n >= max || strlen(p + 6) > 40) {
            continue;
        }

        memcpy(serial[n], p + 6, strlen(p + 6) + 1);
        n++;

        f = redisCommand(c, "HMGET %s status reason withdrawn",
                         keys->element[i]->str);
        if (f != NULL && f->type == REDIS_REPLY_ARRAY && f->elements == 3
            && f->element[0]->type == REDIS_REPLY_STRING)
        {
            g = strcmp(f->element[0]->str, "good") == 0;
            if (g) {
                memcpy(gserial[*good], serial[n - 1], 41);
            }
            *good += g;
            *withdrawn += strcmp(f->element[0]->str, "revoked") == 0
                          && f->element[1]->type == REDIS_REPLY_STRING
                          && strcmp(f->element[1]->str, "5") == 0
                          && f->element[2]->type == REDIS_REPLY_STRING
                          && strcmp(f->element[2]->str, "1") == 0;
        }
        freeReplyObject(f);
    }

    freeReplyObject(keys);

    return n;
}


/* The sink that closes the transaction log (a required one, not open) at
 * the first issuance event of a batch: its other entries are refused, as
 * when the batch pushes the log's backlog past max_backlog. */
static int  log_closer_on;

static void
log_closer(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (log_closer_on && ev->type == PKI_EV_ISSUE) {
        pki_audit_set_required(1);
    }
}


static double
mono_now(void)
{
    struct timespec  ts;

    clock_gettime(CLOCK_MONOTONIC, &ts);

    return ts.tv_sec + ts.tv_nsec / 1e9;
}


/* A DAC batch of n CSRs (each of its own key) through the engine on
 * store r; *dt its time. */
static int
batch_run(pki_ca_t *ca, pki_template_t *t, pki_redis_t *r, int n,
    pki_matter_resp_t *resp, double *dt)
{
    int                 i;
    char               *c1, *c2, *body;
    double              t0;
    EVP_PKEY           *k1, *k2;
    pki_matter_req_t    req;
    pki_matter_conf_t   conf;

    k1 = ec_key("P-256");
    k2 = NULL;
    c1 = csr_b64(k1, "unit 1");
    c2 = NULL;
    body = malloc((strlen(c1) + 16) * (n + 1) + 64);

    strcpy(body, "{\"csrs\": [");
    for (i = 0; i < n; i++) {
        /* one DAC per device key: a key of its own for each */
        EVP_PKEY_free(k2);
        free(c2);
        k2 = i == 0 ? NULL : ec_key("P-256");
        c2 = k2 != NULL ? csr_b64(k2, "unit n") : NULL;
        strcat(body, i ? ",\"" : "\"");
        strcat(body, i == 0 ? c1 : c2 != NULL ? c2 : "");
        strcat(body, "\"");
    }
    strcat(body, "]}");

    memset(&conf, 0, sizeof(conf));
    conf.ca = ca;
    conf.tmpl = t;
    conf.redis = r;
    conf.threads = 2;

    matter_req(&req, PKI_MATTER_OP_DAC_BATCH, body, "application/json",
               "POST", "u");

    t0 = mono_now();
    pki_matter_handle(&conf, &req, resp);
    *dt = mono_now() - t0;

    free(body);
    free(c1);
    free(c2);
    EVP_PKEY_free(k1);
    EVP_PKEY_free(k2);

    return resp->http_status;
}


/* A DAC batch whose transaction log refuses its entries (the backlog past
 * max_backlog; here a required log gone at the batch's first entry) fails
 * after its records were committed good: each is withdrawn, although the
 * log takes nothing.  They were revoked through the gate that waits for
 * the log, and each was refused: up to 999 DACs good in OCSP, delivered
 * to no one. */
static void
test_batch_log_refused(pki_ca_t *ca, pki_template_t *t)
{
    int                 st, n, good, wd;
    char                ns[64], serial[64][41], gs[64][41];
    double              dt;
    const char         *sock;
    redisContext       *c;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_matter_resp_t   resp;

    sock = redis_sock("batch withdrawal", &c);
    if (sock == NULL || !ok(c != NULL, "batch withdrawal: Redis")) {
        return;
    }

    pki_event_set_sink(log_closer, NULL);

    r = ns_redis(sock, "mbw", ns, sizeof(ns), 1000, &res);
    memset(&resp, 0, sizeof(resp));
    log_closer_on = 1;
    st = r ? batch_run(ca, t, r, 6, &resp, &dt) : 0;
    log_closer_on = 0;
    pki_audit_set_required(0);

    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good,
                      &wd);
    ok(st == 503 && n == 6, "log refusing the batch's entries: 503, 6 "
       "records (%d) %s", n, resp.res.detail);
    ok(wd == 6 && good == 0, "  each withdrawn: revoked, "
       "cessationOfOperation, marked (%d withdrawn, %d good) %s", wd,
       good, resp.res.log);
    pki_matter_resp_free(&resp);
    pki_redis_free(r);

    pki_event_set_sink(NULL, NULL);
    redisFree(c);
}


/* A batch of the CSRs csr[0..n-1] (base64) on store r; its certificates
 * (base64 DER, malloc'd) into cert[] when 200. */
static int
idx_batch(pki_ca_t *ca, pki_template_t *t, pki_redis_t *r, char **csr,
    int n, char **cert, pki_matter_resp_t *resp)
{
    int                 i;
    char               *body;
    size_t              len;
    cJSON              *j, *a;
    pki_matter_req_t    req;
    pki_matter_conf_t   conf;

    len = 64;
    for (i = 0; i < n; i++) {
        len += strlen(csr[i]) + 4;
    }
    body = malloc(len);
    strcpy(body, "{\"csrs\": [");
    for (i = 0; i < n; i++) {
        strcat(body, i ? ",\"" : "\"");
        strcat(body, csr[i]);
        strcat(body, "\"");
    }
    strcat(body, "]}");

    memset(&conf, 0, sizeof(conf));
    conf.ca = ca;
    conf.tmpl = t;
    conf.redis = r;
    conf.threads = 2;

    matter_req(&req, PKI_MATTER_OP_DAC_BATCH, body, "application/json",
               "POST", "u");
    memset(resp, 0, sizeof(*resp));
    pki_matter_handle(&conf, &req, resp);
    free(body);

    for (i = 0; cert != NULL && i < n; i++) {
        cert[i] = NULL;
    }

    if (resp->http_status != 200 || cert == NULL) {
        return resp->http_status;
    }

    j = cJSON_ParseWithLength((const char *) resp->body, resp->body_len);
    a = cJSON_GetObjectItemCaseSensitive(j, "certificates");
    for (i = 0; i < n && i < cJSON_GetArraySize(a); i++) {
        cert[i] = strdup(cJSON_GetArrayItem(a, i)->valuestring);
    }
    cJSON_Delete(j);

    return resp->http_status;
}


/* test_batch_index's second DAC template, added to the PAI's CA */
static pki_template_t  *idx_tmpl;


typedef struct {
    pki_ca_t            *ca;
    pki_template_t      *t;
    pki_redis_t         *r;
    char               **csr;
    int                  n;
    char                *cert[20];
    int                  st;
} idx_run_t;


static void *
idx_thread(void *arg)
{
    idx_run_t          *x = arg;
    pki_matter_resp_t   resp;

    x->st = idx_batch(x->ca, x->t, x->r, x->csr, x->n, x->cert, &resp);
    pki_matter_resp_free(&resp);

    return NULL;
}


static void
idx_free(char **cert, int n)
{
    int  i;

    for (i = 0; i < n; i++) {
        free(cert[i]);
        cert[i] = NULL;
    }
}


/* The serial the PAI's index names for key k (into out, "" if none). */
static void
idx_serial(redisContext *c, const char *ns, pki_ca_t *ca, EVP_PKEY *k,
    char out[41])
{
    int             i, dlen;
    char            key[256];
    unsigned char   md[32], *der;
    redisReply     *v;

    der = NULL;
    dlen = i2d_PUBKEY(k, &der);
    EVP_Digest(der, (size_t) dlen, md, NULL, EVP_sha256(), NULL);
    OPENSSL_free(der);
    snprintf(key, sizeof(key), "%s{ca:%s}:matterdac:", ns, pki_ca_name(ca));
    for (i = 0; i < 32; i++) {
        snprintf(key + strlen(key), 3, "%02x", md[i]);
    }

    out[0] = '\0';
    v = redisCommand(c, "GET %s", key);
    if (v != NULL && v->type == REDIS_REPLY_STRING && v->len > 2
        && v->len < 43 && strncmp(v->str, "s:", 2) == 0)
    {
        memcpy(out, v->str + 2, v->len - 1);
    }
    freeReplyObject(v);
}


/*
 * One DAC per device key across batches (the CA's index of SPKI hashes):
 *  - a CSR sent again in another batch (a station's retry after a lost
 *    answer) is answered with the DAC already issued, byte for byte, and
 *    no second record is made; the batch's new keys are issued beside it;
 *  - a batch whose issuance failed (the log refusing its entries: the
 *    DACs withdrawn) leaves its keys free: the retry issues them;
 *  - two batches with the same keys at once: never two good DACs for a
 *    key (one may answer 503 to retry);
 *  - a key claimed by another batch: 503, Retry-After, nothing issued;
 *  - a key whose DAC is revoked (keyCompromise): 400, nothing issued.
 * Before, each of these batches issued a second good DAC for the key.
 */
static void
test_batch_index(pki_ca_t *ca, pki_template_t *t)
{
    int                 i, st, n, good, wd, same;
    char                ns[64], serial[128][41], gs[128][41], key[256];
    char               *csr[20], *a[20], *b[20], *retry[3];
    const char         *sock;
    EVP_PKEY           *k[20];
    redisContext       *c;
    redisReply         *v;
    pki_redis_t        *r, *r2;
    pki_result_t        res;
    pki_template_t     *t2;
    const char         *a8[1];
    pthread_t           tid;
    idx_run_t           x1, x2;
    unsigned char       md[32];
    unsigned char      *der;
    int                 dlen;
    pki_matter_resp_t   resp;

    sock = redis_sock("DAC index", &c);
    if (sock == NULL || !ok(c != NULL, "DAC index: Redis")) {
        return;
    }

    r = ns_redis(sock, "mix", ns, sizeof(ns), 1000, &res);
    r2 = fx_redis(sock, ns, 1000, &res);
    if (!ok(r != NULL && r2 != NULL, "DAC index: stores")) {
        redisFree(c);
        return;
    }

    for (i = 0; i < 20; i++) {
        k[i] = ec_key("P-256");
        csr[i] = csr_b64(k[i], "idx unit");
    }

    /* a retry: csr 1 and 0 again, with a new one (2) between */
    st = idx_batch(ca, t, r, csr, 2, a, &resp);
    ok(st == 200 && a[0] && a[1], "index: first batch 200 %s",
       resp.res.detail);
    pki_matter_resp_free(&resp);

    retry[0] = csr[1];
    retry[1] = csr[2];
    retry[2] = csr[0];
    st = idx_batch(ca, t, r, retry, 3, b, &resp);
    ok(st == 200 && b[0] && b[2] && a[0] && a[1] && strcmp(b[0], a[1]) == 0
       && strcmp(b[2], a[0]) == 0, "index: the CSRs sent again get the "
       "DACs already issued, byte for byte (%d) %s", st, resp.res.log);
    pki_matter_resp_free(&resp);

    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 128, &good, &wd);
    ok(n == 3 && good == 3, "index: 3 keys, 3 records, all good (%d, %d "
       "good)", n, good);

    /* all known: nothing issued, the same answer again */
    idx_free(b, 3);
    st = idx_batch(ca, t, r, csr, 2, b, &resp);
    ok(st == 200 && b[0] && b[1] && strcmp(b[0], a[0]) == 0
       && strcmp(b[1], a[1]) == 0, "index: the first batch again: its "
       "DACs (%d)", st);
    pki_matter_resp_free(&resp);
    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 128, &good, &wd);
    ok(n == 3, "  no record made (%d)", n);

    /* the same key asking for another subject: not the DAC it has (a
     * station that corrected a subject would install what it did not ask
     * for), nor a second one: refused */
    {
        char  *o[1], *ob[1] = { NULL };

        o[0] = csr_b64(k[0], "idx other subject");
        st = idx_batch(ca, t, r, o, 1, ob, &resp);
        ok(st == 400 && ob[0] == NULL
           && strstr(resp.res.detail, "another subject") != NULL,
           "index: its key with another subject: 400, not its DAC (%d) %s",
           st, resp.res.detail);
        pki_matter_resp_free(&resp);
        n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 128, &good,
                          &wd);
        ok(n == 3, "  no record made (%d)", n);
        idx_free(ob, 1);
        free(o[0]);
    }

    idx_free(a, 2);
    idx_free(b, 3);

    /* a failed issuance: its keys free again */
    pki_event_set_sink(log_closer, NULL);
    log_closer_on = 1;
    st = idx_batch(ca, t, r, csr + 3, 2, a, &resp);
    log_closer_on = 0;
    pki_audit_set_required(0);
    pki_event_set_sink(NULL, NULL);
    ok(st == 503, "index: a batch whose log refuses its entries: 503 (%d)",
       st);
    pki_matter_resp_free(&resp);

    st = idx_batch(ca, t, r, csr + 3, 2, a, &resp);
    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 128, &good, &wd);
    ok(st == 200 && n == 7 && good == 5 && wd == 2, "index: its retry "
       "issues them (%d; %d records, %d good, %d withdrawn) %s", st, n,
       good, wd, resp.res.detail);
    pki_matter_resp_free(&resp);
    st = idx_batch(ca, t, r, csr + 3, 2, b, &resp);
    ok(st == 200 && a[0] && b[0] && strcmp(a[0], b[0]) == 0 && a[1] && b[1]
       && strcmp(a[1], b[1]) == 0, "  and once more: the same DACs (%d)",
       st);
    pki_matter_resp_free(&resp);
    idx_free(a, 2);
    idx_free(b, 2);

    /* two batches of the same 15 keys at once */
    memset(&x1, 0, sizeof(x1));
    x1.ca = ca;
    x1.t = t;
    x1.r = r;
    x1.csr = csr + 5;
    x1.n = 15;
    x2 = x1;
    x2.r = r2;
    pthread_create(&tid, NULL, idx_thread, &x2);
    idx_thread(&x1);
    pthread_join(tid, NULL);

    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 128, &good, &wd);
    same = 1;
    for (i = 0; i < 15 && x1.st == 200 && x2.st == 200; i++) {
        same &= x1.cert[i] && x2.cert[i]
                && strcmp(x1.cert[i], x2.cert[i]) == 0;
    }
    ok((x1.st == 200 || x2.st == 200) && (x1.st == 200 || x1.st == 503)
       && (x2.st == 200 || x2.st == 503) && same && good == 20 && n == 22,
       "index: two batches of one 15 keys at once: %d and %d, the same "
       "DACs, 15 more good records (%d good, %d records)", x1.st, x2.st,
       good, n);
    idx_free(x1.cert, 15);
    idx_free(x2.cert, 15);

    /* a key another batch has claimed */
    der = NULL;
    dlen = i2d_PUBKEY(k[0], &der);
    EVP_Digest(der, (size_t) dlen, md, NULL, EVP_sha256(), NULL);
    OPENSSL_free(der);
    snprintf(key, sizeof(key), "%s{ca:%s}:matterdac:", ns, pki_ca_name(ca));
    for (i = 0; i < 32; i++) {
        snprintf(key + strlen(key), 3, "%02x", md[i]);
    }
    v = redisCommand(c, "GET %s", key);
    ok(v && v->type == REDIS_REPLY_STRING && strncmp(v->str, "s:", 2) == 0,
       "index: the key's entry names its serial (%s)",
       v && v->type == REDIS_REPLY_STRING ? v->str : "none");
    if (v && v->type == REDIS_REPLY_STRING) {
        memcpy(serial[0], v->str + 2, strlen(v->str + 2) < 41
                                      ? strlen(v->str + 2) + 1 : 1);
    }
    freeReplyObject(v);

    freeReplyObject(redisCommand(c, "SET %s c:0123 EX 60", key));
    st = idx_batch(ca, t, r, csr, 3, NULL, &resp);
    n = batch_records(c, ns, pki_ca_name(ca), serial + 1, gs, 127, &good,
                      &wd);
    ok(st == 503 && resp.retry_after > 0 && n == 22
       && strstr((char *) resp.body, "csrs[0]: another batch") != NULL,
       "index: a key another batch claims: 503, Retry-After, nothing "
       "issued (%d, %d records) %.200s", st, n, (char *) resp.body);
    pki_matter_resp_free(&resp);

    /* the key's DAC is of another template (another PID) */
    freeReplyObject(redisCommand(c, "SET %s s:%s", key, serial[0]));
    t2 = pki_template_new("dac-8001");
    idx_tmpl = t2;                  /* freed after the CA */
    a8[0] = "dac";
    pki_template_set(t2, "matter", 1, a8, &res);
    a8[0] = "8001";
    pki_template_set(t2, "matter_pid", 1, a8, &res);
    pki_result_init(&res);
    if (pki_template_finish(t2, &res) == PKI_OK
        && pki_ca_add_template(ca, t2, &res) == PKI_OK)
    {
        st = idx_batch(ca, t2, r, csr, 3, NULL, &resp);
        n = batch_records(c, ns, pki_ca_name(ca), serial + 1, gs, 127,
                          &good, &wd);
        ok(st == 400 && n == 22 && strstr((char *) resp.body,
           ", of template ") != NULL, "index: a key whose DAC "
           "is of another template: 400, nothing issued (%d, %d records) "
           "%.200s", st, n, (char *) resp.body);
        pki_matter_resp_free(&resp);
    } else {
        ok(0, "index: template dac-8001 under the PAI: %s", res.detail);
    }

    /* the DAC's record past its notAfter: not handed out */
    freeReplyObject(redisCommand(c, "HSET %s{ca:%s}:cert:%s not_after "
                                 "1000000000", ns, pki_ca_name(ca),
                                 serial[0]));
    st = idx_batch(ca, t, r, csr, 3, NULL, &resp);
    n = batch_records(c, ns, pki_ca_name(ca), serial + 1, gs, 127, &good,
                      &wd);
    ok(st == 400 && n == 22 && strstr((char *) resp.body, "has expired")
       != NULL, "index: a key whose DAC has expired: 400, nothing issued "
       "(%d, %d records) %.200s", st, n, (char *) resp.body);
    pki_matter_resp_free(&resp);
    freeReplyObject(redisCommand(c, "HSET %s{ca:%s}:cert:%s not_after "
                                 "253402300799", ns, pki_ca_name(ca),
                                 serial[0]));

    /* the entry back, then the DAC revoked for a key compromise */
    v = redisCommand(c, "SET %s s:%s", key, serial[0]);
    freeReplyObject(v);
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), serial[0], 1, time(NULL), 0,
                           NULL, &res);
    ok(st == PKI_OK, "index: DAC %s revoked %s", serial[0], res.detail);
    st = idx_batch(ca, t, r, csr, 3, NULL, &resp);
    n = batch_records(c, ns, pki_ca_name(ca), serial + 1, gs, 127, &good,
                      &wd);
    ok(st == 400 && n == 22 && strstr((char *) resp.body, "csrs[0]: its "
       "key's DAC") != NULL, "index: a key whose DAC is revoked: 400, "
       "nothing issued (%d, %d records) %.200s", st, n,
       (char *) resp.body);
    pki_matter_resp_free(&resp);

    /* key 1's DAC on hold: refused (a release would make it good);
     * released: answered again; revoked cessationOfOperation (as the
     * operator revokes a failed batch's serials): the key is free */
    idx_serial(c, ns, ca, k[1], serial[1]);
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), serial[1], 6, time(NULL), 0,
                           NULL, &res);
    i = idx_batch(ca, t, r, csr + 1, 1, NULL, &resp);
    ok(st == PKI_OK && i == 400, "index: a key whose DAC is on hold: 400 "
       "(%d) %.200s", i, (char *) resp.body);
    pki_matter_resp_free(&resp);
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), serial[1], 8, time(NULL), 0,
                           NULL, &res);
    i = idx_batch(ca, t, r, csr + 1, 1, a, &resp);
    idx_serial(c, ns, ca, k[1], serial[2]);
    ok(st == PKI_OK && i == 200 && strcmp(serial[1], serial[2]) == 0,
       "  released: its DAC again (%d) %s", i, res.detail);
    pki_matter_resp_free(&resp);
    pki_result_init(&res);
    st = pki_record_revoke(r, pki_ca_name(ca), serial[1], 5, time(NULL), 0,
                           NULL, &res);
    i = idx_batch(ca, t, r, csr + 1, 1, b, &resp);
    idx_serial(c, ns, ca, k[1], serial[2]);
    n = batch_records(c, ns, pki_ca_name(ca), serial + 3, gs, 120, &good,
                      &wd);
    ok(st == PKI_OK && i == 200 && serial[2][0] != '\0'
       && strcmp(serial[1], serial[2]) != 0 && a[0] && b[0]
       && strcmp(a[0], b[0]) != 0 && n == 23, "index: a key whose DAC is "
       "revoked cessationOfOperation: a new DAC (%d, %s -> %s, %d "
       "records) %.200s", i, serial[1], serial[2], n, (char *) resp.body);
    pki_matter_resp_free(&resp);
    idx_free(a, 1);
    idx_free(b, 1);

    for (i = 0; i < 20; i++) {
        EVP_PKEY_free(k[i]);
        free(csr[i]);
    }
    pki_redis_free(r);
    pki_redis_free(r2);
    redisFree(c);
}


/* Every serial of serial[0..n-1] in the list s. */
static int
all_listed(const char *s, char serial[][41], int n)
{
    int  i;

    for (i = 0; i < n; i++) {
        if (s == NULL || strstr(s, serial[i]) == NULL) {
            return 0;
        }
    }

    return 1;
}


/*
 * The cleanup of a DAC batch that fails after its records were committed
 * good is bounded:
 *  - Redis stalled after the commit: the abandons and withdrawals stop at
 *    the first with no answer (each waited the whole timeout: 24 DACs at
 *    100 ms, over 4.8 s; 1000 at the default 1 s, over half an hour), the
 *    serials left listed for the operator;
 *  - Redis answering each just in time: the withdrawals stop at the
 *    cleanup's deadline, the rest listed.
 */
static void
test_batch_cleanup(pki_ca_t *ca, pki_template_t *t)
{
    int                 st, n, good, wd, fired;
    char                ns[64], pdir[64], serial[64][41], gs[64][41];
    double              dt;
    proxy_t             px;
    const char         *sock;
    redisContext       *c;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_matter_resp_t   resp;

    sock = redis_sock("batch cleanup", &c);
    if (sock == NULL) {
        return;
    }

    snprintf(pdir, sizeof(pdir), "/tmp/mpx-XXXXXX");
    if (!ok(c != NULL && mkdtemp(pdir) != NULL
            && proxy_start(&px, sock, pdir, "px.sock"),
            "batch cleanup: Redis and a proxy to it"))
    {
        redisFree(c);
        return;
    }

    pki_event_set_sink(log_closer, NULL);

    /* Redis stalled after the commit */
    r = ns_redis(px.path, "mbs", ns, sizeof(ns), 100, &res);
    (void) pki_redis_ping(r, &res);
    proxy_arm(&px, "PERSIST", PX_STALL, 0);
    memset(&resp, 0, sizeof(resp));
    st = r ? batch_run(ca, t, r, 24, &resp, &dt) : 0;
    ok(px.fired && st == 503, "Redis stalled after the commit: 503 (%d) %s",
       st, resp.res.detail);
    ok(dt < 2.5, "  answered in %.2f s (< 2.5; a timeout per abandon and "
       "per withdrawal: over 4.8)", dt);
    proxy_arm(&px, "", 0, 0);

    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good,
                      &wd);
    ok(n == 24 && good == 24, "  the commit ran: 24 records good (%d, %d)",
       n, good);
    ok(resp.unsettled != NULL && all_listed(resp.unsettled, serial, n)
       && strstr(resp.unsettled, "a retry of the same CSRs is answered "
                 "with it") != NULL
       && strstr(resp.res.log, "24 certificate(s) the failed batch had "
                 "issued not withdrawn (Redis did not answer one, twice)") != NULL,
       "  every serial listed for the operator to revoke: %.160s; %s",
       resp.unsettled ? resp.unsettled : "(none)", resp.res.log);
    pki_matter_resp_free(&resp);
    pki_redis_free(r);

    /* Redis answering each command 150 ms late (timeout 400 ms), the log
     * refusing the entries (the batch fails after its commit): the
     * withdrawals stop at the cleanup's deadline (0.4 s + 24 x 50 ms) */
    r = ns_redis(px.path, "mbd", ns, sizeof(ns), 400, &res);
    (void) pki_redis_ping(r, &res);
    proxy_arm(&px, "PERSIST", PX_SLOW, 150);
    memset(&resp, 0, sizeof(resp));
    log_closer_on = 1;
    st = r ? batch_run(ca, t, r, 24, &resp, &dt) : 0;
    log_closer_on = 0;
    pki_audit_set_required(0);
    fired = px.fired;
    proxy_arm(&px, "", 0, 0);

    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good,
                      &wd);
    ok(fired && st == 503 && n == 24, "Redis slow: 503 (%d), 24 records "
       "(%d) %s", st, n, resp.res.detail);
    ok(dt < 4.0, "  answered in %.2f s (< 4; 24 withdrawals at 300 ms: "
       "over 7.2)", dt);
    ok(wd >= 1 && good >= 1 && wd + good == 24, "  withdrawn until the "
       "cleanup's deadline: %d withdrawn, %d left good", wd, good);
    ok(resp.unsettled != NULL && all_listed(resp.unsettled, gs, good)
       && strstr(resp.unsettled, "ran out of time") != NULL,
       "  the %d left good listed for the operator: %.160s", good,
       resp.unsettled ? resp.unsettled : "(none)");
    pki_matter_resp_free(&resp);
    pki_redis_free(r);

    pki_event_set_sink(NULL, NULL);

    /* the answer to the reservation (which sets the index entries) lost,
     * its connection closed: redis.c sends it again on a new one, and the
     * script, run twice, finds its own entries and reserves (it answered
     * "claim lost" and the batch failed, 503) */
    r = ns_redis(px.path, "mbi", ns, sizeof(ns), 1000, &res);
    (void) pki_redis_ping(r, &res);
    proxy_arm(&px, "'s:' .. ARGV[b + 1]", PX_DROP, 0);
    memset(&resp, 0, sizeof(resp));
    st = r ? batch_run(ca, t, r, 8, &resp, &dt) : 0;
    fired = px.fired;
    proxy_arm(&px, "", 0, 0);
    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good,
                      &wd);
    ok(fired && st == 200 && n == 8 && good == 8, "indexed reservation run "
       "twice (its answer lost): 200, 8 records good (%d; %d, %d good) %s %s",
       st, n, good, resp.res.detail, resp.res.log);
    pki_matter_resp_free(&resp);
    pki_redis_free(r);

    redisFree(c);
    unlink(px.path);
    rmdir(pdir);
}


/* The sink that takes a key's claim (its index entry set to another
 * batch's) at the first Redis round trip of a batch: the claim's. */
static redisContext  *steal_c;
static const char    *steal_key;

static void
claim_stealer(void *arg, const pki_event_t *ev)
{
    (void) arg;

    if (ev->type == PKI_EV_REDIS && steal_key != NULL) {
        freeReplyObject(redisCommand(steal_c, "SET %s c:0123 EX 60",
                                     steal_key));
        steal_key = NULL;
    }
}


/* 1 when sn is one of the n serials of gs. */
static int
good_serial(const char *sn, char gs[][41], int n)
{
    int  i;

    for (i = 0; sn[0] != '\0' && i < n; i++) {
        if (strcmp(gs[i], sn) == 0) {
            return 1;
        }
    }

    return 0;
}


/* The serial (hex) of a base64 DER certificate, into out ("" if none). */
static void
b64_serial(const char *b64, char out[41])
{
    size_t                len;
    X509                 *x;
    unsigned char        *der;
    pki_result_t          res;
    const unsigned char  *p;

    out[0] = '\0';
    pki_result_init(&res);
    if (b64 == NULL
        || pki_base64_decode((const unsigned char *) b64, strlen(b64), &der,
                             &len, &res) != PKI_OK)
    {
        return;
    }

    p = der;
    x = d2i_X509(NULL, &p, (long) len);
    free(der);
    if (x != NULL) {
        (void) pki_serial_to_hex(X509_get0_serialNumber(x), out);
        X509_free(x);
    }
}


/*
 * A worker that dies right after its batch's commit ran: Redis ran the
 * commit, and nothing of the worker reaches Redis after it (the proxy
 * cuts the connection with the commit's answer and refuses every later
 * one).  Its claims, if any stand, expire (deleted here, as after their
 * 300 s), and the station retries: it gets the DACs committed, byte for
 * byte, and no second DAC is made for a key.  Before, the index named
 * the serials only in a step after the commit: the keys stood claimed,
 * then free, their DACs good and unindexed, and the retry issued 6 more.
 */
static void
test_batch_index_crash(pki_ca_t *ca, pki_template_t *t)
{
    int                 i, st, n, good, wd, fired, named, same;
    char                ns[64], pdir[64], serial[64][41], gs[64][41];
    char                sn[41], *csr[6], *cert[6], pre[64][41];
    int                 npre;
    proxy_t             px;
    EVP_PKEY           *k[6];
    const char         *sock;
    redisContext       *c;
    redisReply         *ks, *v;
    pki_redis_t        *r;
    pki_result_t        res;
    pki_matter_resp_t   resp;

    sock = redis_sock("DAC index, worker gone", &c);
    if (sock == NULL) {
        return;
    }

    snprintf(pdir, sizeof(pdir), "/tmp/mpk-XXXXXX");
    if (!ok(c != NULL && mkdtemp(pdir) != NULL
            && proxy_start(&px, sock, pdir, "px.sock"),
            "DAC index, worker gone: Redis and a proxy to it"))
    {
        redisFree(c);
        return;
    }

    for (i = 0; i < 6; i++) {
        k[i] = ec_key("P-256");
        csr[i] = csr_b64(k[i], "crash unit");
        cert[i] = NULL;
    }

    r = ns_redis(px.path, "mbk", ns, sizeof(ns), 300, &res);
    (void) pki_redis_ping(r, &res);
    proxy_arm(&px, "PERSIST", PX_CUT, 0);
    st = r ? idx_batch(ca, t, r, csr, 6, NULL, &resp) : 0;
    fired = px.fired;
    pki_matter_resp_free(&resp);
    pki_redis_free(r);
    proxy_arm(&px, "", 0, 0);

    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good, &wd);
    ok(fired && st != 200 && n == 6 && good == 6, "worker gone after its "
       "commit: 6 DACs recorded good, delivered to no one (%d; %d, %d "
       "good)", st, n, good);

    named = 0;
    for (i = 0; i < 6; i++) {
        idx_serial(c, ns, ca, k[i], sn);
        named += good_serial(sn, gs, good);
    }
    ok(named == 6, "  each key's index entry names its DAC (%d of 6)",
       named);

    memcpy(pre, gs, sizeof(pre));
    npre = good;

    /* the claims that stand expire (300 s): deleted */
    ks = redisCommand(c, "KEYS %s{ca:%s}:matterdac:*", ns, pki_ca_name(ca));
    for (i = 0; ks != NULL && ks->type == REDIS_REPLY_ARRAY
                && (size_t) i < ks->elements; i++)
    {
        v = redisCommand(c, "GET %s", ks->element[i]->str);
        if (v != NULL && v->type == REDIS_REPLY_STRING
            && strncmp(v->str, "c:", 2) == 0)
        {
            freeReplyObject(redisCommand(c, "DEL %s",
                                         ks->element[i]->str));
        }
        freeReplyObject(v);
    }
    freeReplyObject(ks);

    /* the station's retry, on a worker of its own */
    r = fx_redis(sock, ns, 1000, &res);
    st = r ? idx_batch(ca, t, r, csr, 6, cert, &resp) : 0;
    n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good, &wd);
    same = 0;
    for (i = 0; i < 6; i++) {
        b64_serial(cert[i], sn);
        same += good_serial(sn, pre, npre);
    }
    ok(st == 200 && n == 6 && good == 6 && same == 6, "  the retry once "
       "the claims are gone: the 6 DACs committed, no second DAC (%d; %d "
       "records, %d good, %d of the answers committed before) %s", st, n,
       good, same, resp.res.detail);
    pki_matter_resp_free(&resp);
    idx_free(cert, 6);

    /* a claim taken between the claim and the reservation (its 300 s
     * passed and another batch claimed the key): the batch fails before
     * anything is signed, nothing recorded; its other claims released,
     * the other batch's kept.  Before, the batch signed and committed
     * its 6 DACs, then withdrew them. */
    for (i = 0; i < 6; i++) {
        EVP_PKEY_free(k[i]);
        free(csr[i]);
        k[i] = ec_key("P-256");
        csr[i] = csr_b64(k[i], "stolen unit");
    }
    {
        int             dlen;
        char            key[256];
        unsigned char   md[32], *der;

        der = NULL;
        dlen = i2d_PUBKEY(k[3], &der);
        EVP_Digest(der, (size_t) dlen, md, NULL, EVP_sha256(), NULL);
        OPENSSL_free(der);
        snprintf(key, sizeof(key), "%s{ca:%s}:matterdac:", ns,
                 pki_ca_name(ca));
        for (i = 0; i < 32; i++) {
            snprintf(key + strlen(key), 3, "%02x", md[i]);
        }

        steal_c = c;
        steal_key = key;
        pki_event_set_sink(claim_stealer, NULL);
        st = r ? idx_batch(ca, t, r, csr, 6, NULL, &resp) : 0;
        pki_event_set_sink(NULL, NULL);
        fired = steal_key == NULL;
        steal_key = NULL;

        n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good,
                          &wd);
        ok(fired && st == 503 && n == 6 && good == 6
           && strstr((char *) resp.body, "csrs[3]: ") != NULL,
           "a claim taken before the reservation: 503 on csrs[3], nothing "
           "signed or recorded (%d; %d records, %d good, %d withdrawn) "
           "%.200s", st, n, good, wd, (char *) resp.body);
        pki_matter_resp_free(&resp);

        named = 0;
        for (i = 0; i < 6; i++) {
            idx_serial(c, ns, ca, k[i], sn);
            named += sn[0] != '\0';
        }
        v = redisCommand(c, "GET %s", key);
        ok(named == 0 && v != NULL && v->type == REDIS_REPLY_STRING
           && strcmp(v->str, "c:0123") == 0, "  no entry names a serial "
           "(%d), the other batch's claim kept (%s)", named,
           v != NULL && v->type == REDIS_REPLY_STRING ? v->str : "none");
        freeReplyObject(v);
    }

    /* the same in the second chunk of 128 of a batch of 130: the first
     * chunk's reservations ran, their entries set; each abandoned, its
     * pending record deleted and its entry dropped (a key free at once,
     * not busy until the record expired) */
    {
        int             dlen, left;
        char            key[256], *big[130];
        EVP_PKEY       *bk[130];
        unsigned char   md[32], *der;

        for (i = 0; i < 130; i++) {
            bk[i] = ec_key("P-256");
            big[i] = csr_b64(bk[i], "chunk unit");
        }

        der = NULL;
        dlen = i2d_PUBKEY(bk[129], &der);
        EVP_Digest(der, (size_t) dlen, md, NULL, EVP_sha256(), NULL);
        OPENSSL_free(der);
        snprintf(key, sizeof(key), "%s{ca:%s}:matterdac:", ns,
                 pki_ca_name(ca));
        for (i = 0; i < 32; i++) {
            snprintf(key + strlen(key), 3, "%02x", md[i]);
        }

        steal_c = c;
        steal_key = key;
        pki_event_set_sink(claim_stealer, NULL);
        st = r ? idx_batch(ca, t, r, big, 130, NULL, &resp) : 0;
        pki_event_set_sink(NULL, NULL);
        fired = steal_key == NULL;
        steal_key = NULL;

        n = batch_records(c, ns, pki_ca_name(ca), serial, gs, 64, &good,
                          &wd);
        ok(fired && st == 503 && n == 6 && good == 6
           && strstr((char *) resp.body, "csrs[129]: ") != NULL,
           "a claim taken in the second chunk: 503 on csrs[129], the first "
           "chunk's reservations abandoned (%d; %d records) %.200s", st, n,
           (char *) resp.body);
        pki_matter_resp_free(&resp);

        left = 0;
        for (i = 0; i < 129; i++) {
            idx_serial(c, ns, ca, bk[i], sn);
            left += sn[0] != '\0';
        }
        ks = redisCommand(c, "KEYS %s{ca:%s}:matterdac:*", ns,
                          pki_ca_name(ca));
        ok(left == 0 && ks != NULL && ks->type == REDIS_REPLY_ARRAY
           && ks->elements == 6 + 2, "  their entries dropped (%d left), "
           "the claims released (%zu entries: the 6 DACs and the 2 other "
           "batch's)", left, ks != NULL ? ks->elements : 0);
        freeReplyObject(ks);

        for (i = 0; i < 130; i++) {
            EVP_PKEY_free(bk[i]);
            free(big[i]);
        }
    }

    for (i = 0; i < 6; i++) {
        EVP_PKEY_free(k[i]);
        free(csr[i]);
    }
    pki_redis_free(r);
    redisFree(c);
    unlink(px.path);
    rmdir(pdir);
}


/* A CA named by pem (written to the temp dir) with key and templates t1,
 * t2 (NULL: none): the status of pki_ca_finish(), its detail in res. */
static pki_status_t
ca_status(X509 *cert, pki_key_t *key, const char *name, pki_template_t *t1,
    pki_template_t *t2, pki_result_t *res)
{
    pki_ca_t      *ca;
    pki_status_t   rc;

    rc = ca_build(cert, key, name, t1, t2, NULL, &ca, res);
    pki_ca_free(ca);

    return rc;
}


/* A Matter CA issues through Matter templates only, also when its subject
 * says so only in the legacy CN form (a PAI "... Mvid:FFF1", which
 * commissioners read as its VID: an ordinary template on it would sign
 * what passes as a DAC), and a CA that has Matter templates has no other
 * (a PAA without a VID, which nothing else marks as Matter, serving a PAI
 * template and an ordinary one). */
static void
test_ca_matter_only(pki_template_t *tpai)
{
    int              i;
    X509            *x;
    EVP_PKEY        *k;
    X509_NAME       *n;
    pki_key_t       *fk;
    pki_result_t     res;
    pki_status_t     rc;
    const char      *a[2];
    pki_ca_t        *ca;
    pki_template_t  *tdev;

    static const char  *ext[][2] = {
        { "basicConstraints", "critical,CA:TRUE,pathlen:1" },
        { "keyUsage", "critical,keyCertSign,cRLSign" },
        { "subjectKeyIdentifier", "hash" },
        { NULL, NULL }
    };

    static const struct {
        const char  *cn;
        int          matter;
    } cases[] = {
        { "Legacy PAI Mvid:FFF1", 1 },
        { "Legacy PAI Mvid:FFF1 Mpid:8000", 1 },
        { "Legacy Mpid:8000", 1 },
        { "Broken Mvid:fff1", 1 },
        { "Ordinary CA", 0 },
        { NULL, 0 }
    };

    k = ec_key("P-256");
    fk = k ? file_key(k, "legacy") : NULL;
    tdev = pki_template_new("device");
    a[0] = "CN";
    a[1] = "copy";
    pki_result_init(&res);
    ok(fk && tdev && pki_template_set(tdev, "subject", 2, a, &res) == PKI_OK
       && pki_template_finish(tdev, &res) == PKI_OK,
       "an ordinary template %s", res.detail);

    for (i = 0; fk && cases[i].cn; i++) {
        x = X509_new();
        n = X509_NAME_new();
        X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                                   (const unsigned char *) cases[i].cn, -1,
                                   -1, 0);
        X509_gmtime_adj(X509_getm_notBefore(x), -3600);
        X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
        raw_cert(x, 100 + i, n, NULL, k, ext, k);

        rc = ca_status(x, fk, "legacy", tdev, NULL, &res);
        if (cases[i].matter) {
            ok(rc == PKI_MALFORMED
               && strstr(res.detail, "template \"device\" is not a Matter "
                                     "template, but CA \"legacy\" is a "
                                     "Matter CA"),
               "CA CN \"%s\", ordinary template: refused: %s", cases[i].cn,
               res.detail);
        } else {
            ok(rc == PKI_OK, "CA CN \"%s\", ordinary template: taken %s",
               cases[i].cn, res.detail);
        }
        X509_free(x);
    }

    /* a PAA without a VID: a PAI template, and an ordinary one beside */
    x = X509_new();
    n = X509_NAME_new();
    X509_NAME_add_entry_by_txt(n, "CN", MBSTRING_UTF8,
                               (const unsigned char *) "PAA without VID", -1,
                               -1, 0);
    X509_gmtime_adj(X509_getm_notBefore(x), -3600);
    X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
    raw_cert(x, 200, n, NULL, k, ext, k);

    ok(fk && ca_status(x, fk, "paa-novid", tpai, NULL, &res) == PKI_OK,
       "a PAA without VID, the PAI template alone: taken %s", res.detail);
    ok(fk && ca_status(x, fk, "paa-novid", tdev, NULL, &res) == PKI_OK,
       "that CA, an ordinary template alone: taken %s", res.detail);
    for (i = 0; fk && i < 2; i++) {
        rc = ca_status(x, fk, "paa-novid", i ? tdev : tpai, i ? tpai : tdev,
                       &res);
        ok(rc == PKI_MALFORMED
           && strstr(res.detail, "CA \"paa-novid\"")
           && strstr(res.detail, "Matter template \"matter-pai\"")
           && strstr(res.detail, "template \"device\""),
           "that CA with both (%s first): refused: %s",
           i ? "ordinary" : "Matter", res.detail);
    }
    /* the ordinary one added to the CA once finished */
    ca = fk ? make_ca(x, fk, "paa-novid", tpai, NULL, NULL) : NULL;
    pki_result_init(&res);
    ok(ca && pki_ca_add_template(ca, tdev, &res) == PKI_MALFORMED
       && strstr(res.detail, "the non-Matter template \"device\""),
       "an ordinary template added to that CA once finished: refused: %s",
       res.detail);
    pki_ca_free(ca);
    X509_free(x);

    pki_template_free(tdev);
    pki_key_free(fk);
    EVP_PKEY_free(k);
}


/* A PAI whose subject a DAC may not have as its issuer (over 5 RDNs, an
 * emailAddress IA5String) is refused with the configuration: every DAC
 * request under it used to fail. */
static void
test_pai_dn(X509 *paa, EVP_PKEY *kpaa, pki_template_t *tdac)
{
    int            i, j;
    X509          *x;
    EVP_PKEY      *k;
    X509_NAME     *n;
    pki_key_t     *fk;
    pki_result_t   res;
    pki_status_t   rc;

    static const char  *ext[][2] = {
        { "basicConstraints", "critical,CA:TRUE,pathlen:0" },
        { "keyUsage", "critical,keyCertSign,cRLSign" },
        { "subjectKeyIdentifier", "hash" },
        { "authorityKeyIdentifier", "keyid:always" },
        { NULL, NULL }
    };

    static const struct {
        const char  *name;
        const char  *rdn[7][2];
        const char  *reason;
    } cases[] = {
        { "CN, VID", { { "CN", "PAI" }, { VID, "FFF1" } }, NULL },
        { "O, OU, L, ST, CN, VID",
          { { "O", "Acme" }, { "OU", "Devices" }, { "L", "Town" },
            { "ST", "State" }, { "CN", "PAI" }, { VID, "FFF1" } },
          "more than 5 RDNs" },
        { "CN, VID, emailAddress",
          { { "CN", "PAI" }, { VID, "FFF1" },
            { "emailAddress", "pki@example.com" } },
          "name string type not UTF8String" },
        { NULL, { { NULL, NULL } }, NULL }
    };

    k = ec_key("P-256");
    fk = k ? file_key(k, "pai-dn") : NULL;

    for (i = 0; fk && paa && cases[i].name; i++) {
        x = X509_new();
        n = X509_NAME_new();
        for (j = 0; j < 7 && cases[i].rdn[j][0]; j++) {
            X509_NAME_add_entry_by_txt(n, cases[i].rdn[j][0],
                strcmp(cases[i].rdn[j][0], "emailAddress") == 0
                ? MBSTRING_ASC : MBSTRING_UTF8,
                (const unsigned char *) cases[i].rdn[j][1], -1, -1, 0);
        }
        X509_set1_notBefore(x, X509_get0_notBefore(paa));
        X509_gmtime_adj(X509_getm_notAfter(x), 86400L * 30);
        raw_cert(x, 300 + i, n, paa, k, ext, kpaa);

        rc = ca_status(x, fk, "pai-dn", tdac, NULL, &res);
        if (cases[i].reason == NULL) {
            ok(rc == PKI_OK, "PAI subject %s: taken %s", cases[i].name,
               res.detail);
        } else {
            ok(rc == PKI_MALFORMED
               && strstr(res.detail, "the subject of CA \"pai-dn\" (a "
                                     "Matter PAI), the issuer of every DAC")
               && strstr(res.detail, cases[i].reason),
               "PAI subject %s: refused with the CA: %s", cases[i].name,
               res.detail);
        }
        X509_free(x);
    }

    pki_key_free(fk);
    EVP_PKEY_free(k);
}


static void
test_issuance(void)
{
    int              i, st;
    X509            *paa, *pai, *dac, *rcac, *icac, *noc;
    EVP_PKEY        *kpaa, *kpai, *kdev, *k384, *krc, *kic, *knoc;
    X509_REQ        *csr;
    pki_key_t       *fpaa, *fpai, *frc, *fic;
    pki_ca_t        *capaa, *capai, *carc, *caic;
    pki_template_t  *tpaa, *tpai, *tdac, *tdac2, *trc, *tic, *tnoc, *t;
    pki_request_t    req;
    pki_result_t     res;
    X509_NAME       *n;
    unsigned char   *der, *tlv, *back;
    size_t           tlvlen, blen;
    int              dlen;
    const char      *paa_attrs[] = { "CN", "Test PAA", VID, "FFF1", NULL };
    const char      *pai_attrs[] = { "CN", "Test PAI", VID, "FFF1", NULL };
    const char      *rc_attrs[] = { RCACID, "CACACACA00000001", FABRIC,
                                    "FAB000000000001D", NULL };
    const char      *ic_attrs[] = { ICACID, "CACACACA00000002", NULL };
    const char      *ic2_attrs[] = { ICACID, "CACACACA00000003", FABRIC,
                                     "FAB000000000001D", NULL };
    const char      *a[4];

    kpaa = ec_key("P-256");
    kpai = ec_key("P-256");
    kdev = ec_key("P-256");
    k384 = ec_key("P-384");
    krc = ec_key("P-256");
    kic = ec_key("P-256");
    knoc = ec_key("P-256");
    fpaa = file_key(kpaa, "paa");
    fpai = file_key(kpai, "pai");
    frc = file_key(krc, "rcac");
    fic = file_key(kic, "icac");

    pki_result_init(&res);
    tpaa = pki_matter_template_new("matter-paa", &res);
    tpai = pki_matter_template_new("matter-pai", &res);
    tdac = pki_matter_template_new("matter-dac", &res);
    trc = pki_matter_template_new("matter-rcac", &res);
    tic = pki_matter_template_new("matter-icac", &res);
    tnoc = pki_matter_template_new("matter-noc", &res);
    ok(tpaa && tpai && tdac && trc && tic && tnoc && fpaa && fpai && frc
       && fic, "built-in templates and keys %s", res.detail);
    ok(pki_matter_template_new("matter-xyz", &res) == NULL
       && pki_matter_template_new("device", &res) == NULL,
       "unknown built-in names give NULL");
    ok(pki_matter_template_type(tnoc) == PKI_MATTER_NOC,
       "template type of matter-noc");

    /* PAA -> PAI -> DAC */
    n = opname(paa_attrs);
    pki_result_init(&res);
    ok(pki_selfsign(fpaa, tpaa, n, &paa, &res) == PKI_OK,
       "PAA issued %s %s", res.detail, res.log);
    X509_NAME_free(n);

    test_ca_matter_only(tpai);

    capaa = paa ? make_ca(paa, fpaa, "paa", tpai, NULL, NULL) : NULL;
    n = opname(pai_attrs);
    memset(&req, 0, sizeof(req));
    req.subject = n;
    req.pubkey = kpai;
    pki_result_init(&res);
    pai = NULL;
    ok(capaa && pki_issue(capaa, tpai, NULL, &req, NULL, &pai, &res)
                == PKI_OK, "PAI (FFF1, no PID) issued %s", res.detail);
    X509_NAME_free(n);

    /* DAC needs a PID: template matter_pid */
    t = pki_template_new("dac-8000");
    a[0] = "dac";
    pki_template_set(t, "matter", 1, a, &res);
    a[0] = "8000";
    pki_template_set(t, "matter_pid", 1, a, &res);
    pki_result_init(&res);
    ok(pki_template_finish(t, &res) == PKI_OK, "template dac-8000 %s",
       res.detail);
    tdac2 = t;

    capai = pai ? make_ca(pai, fpai, "pai", tdac2, NULL, NULL) : NULL;
    ok(capai != NULL, "PAI as a CA");
    test_pai_dn(paa, kpaa, tdac2);
    if (paa) {
        test_dac_beyond_pai(paa, fpaa, kdev);
    }

    /* a DAC template under a CA that is not a PAI, or disagreeing with
     * it: refused with the configuration, not request by request */
    pki_result_init(&res);
    ok(capaa && pki_ca_add_template(capaa, tdac2, &res) == PKI_MALFORMED
       && strstr(res.detail, "is not a PAI: Matter pai basicConstraints"),
       "DAC template under the PAA refused: %s", res.detail);

    if (capai) {
        /* the CSR claims VID FFF2: ignored, the DAC gets the PAI's VID */
        csr = make_csr(kdev, "device 0001", "FFF2", EVP_sha256());
        pki_result_init(&res);
        ok(csr && pki_request_from_csr(tdac2, csr, &req, &res) == PKI_OK,
           "DAC request from a CSR %s", res.detail);
        dac = NULL;
        pki_result_init(&res);
        ok(pki_issue(capai, tdac2, NULL, &req, NULL, &dac, &res) == PKI_OK,
           "DAC issued %s %s", res.detail, res.log);
        pki_request_clear(&req);
        pki_result_init(&res);
        ok(dac && pki_matter_verify_attestation(dac, pai, paa, 0, &res)
                  == PKI_OK, "issued chain passes verify-attestation %s",
           res.detail);
        if (dac) {
            char  buf[256];

            X509_NAME_oneline(X509_get_subject_name(dac), buf, sizeof(buf));
            ok(strstr(buf, "=FFF1") && strstr(buf, "=8000")
               && !strstr(buf, "FFF2"), "DAC subject %s", buf);
            ok(ASN1_STRING_length(X509_get0_serialNumber(dac)) <= 20,
               "DAC serial at most 20 octets");
            ok(i2d_X509(dac, NULL) <= 600, "DAC DER at most 600 bytes");
        }
        X509_free(dac);

        /* no PID anywhere */
        pki_result_init(&res);
        ok(pki_ca_add_template(capai, tdac, &res) == PKI_MALFORMED
           && strstr(res.detail, "the PAI has no PID and template "
                                 "\"matter-dac\" sets no matter_pid"),
           "DAC template without any PID refused: %s", res.detail);
        X509_REQ_free(csr);

        /* P-384 */
        csr = make_csr(k384, "device", NULL, EVP_sha256());
        pki_result_init(&res);
        ok(csr && pki_request_from_csr(tdac2, csr, &req, &res) == PKI_POLICY
           && strstr(res.detail, "P-256"), "P-384 CSR refused: %s",
           res.detail);
        X509_REQ_free(csr);

        /* SHA-384 signature */
        csr = make_csr(kdev, "device", NULL, EVP_sha384());
        pki_result_init(&res);
        ok(csr && pki_request_from_csr(tdac2, csr, &req, &res) == PKI_POLICY
           && strstr(res.detail, "ecdsa-with-SHA256"),
           "ecdsa-with-SHA384 CSR refused: %s", res.detail);
        X509_REQ_free(csr);
    }

    /* template VID differing from the PAI */
    t = pki_template_new("dac-fff2");
    a[0] = "dac";
    pki_template_set(t, "matter", 1, a, &res);
    a[0] = "FFF2";
    pki_template_set(t, "matter_vid", 1, a, &res);
    a[0] = "8000";
    pki_template_set(t, "matter_pid", 1, a, &res);
    pki_template_finish(t, &res);
    if (capai) {
        pki_result_init(&res);
        ok(pki_ca_add_template(capai, t, &res) == PKI_MALFORMED
           && strstr(res.detail, "DAC VID = PAI VID"),
           "template VID FFF2 under a FFF1 PAI refused: %s", res.detail);
    }
    pki_template_free(t);

    /* template rules */
    {
        static const struct {
            const char  *type;
            const char  *line;
            const char  *arg;
            const char  *reason;
        } tc[] = {
            { "dac", "key_types", "ec:P-384", "only \"key_types ec:P-256\"" },
            { "noc", "extended_key_usage", "serverAuth", "clientAuth" },
            { "rcac", "extended_key_usage", "clientAuth", "no extended" },
            { "pai", "basic_constraints", "ca:true", "basic_constraints" },
            { "dac", "key_usage", "keyAgreement", "key_usage" },
            { "noc", "matter_vid", "FFF1", "do not apply" },
            { NULL, NULL, NULL, NULL }
        };

        for (i = 0; tc[i].type; i++) {
            t = pki_template_new("x");
            a[0] = tc[i].type;
            pki_template_set(t, "matter", 1, a, &res);
            a[0] = tc[i].arg;
            pki_result_init(&res);
            pki_template_set(t, tc[i].line, 1, a, &res);
            pki_result_init(&res);
            ok(pki_template_finish(t, &res) != PKI_OK
               && strstr(res.detail, tc[i].reason),
               "template matter %s + %s %s refused: %s", tc[i].type,
               tc[i].line, tc[i].arg, res.detail);
            pki_template_free(t);
        }

        t = pki_template_new("x");
        a[0] = "fff1";
        pki_result_init(&res);
        ok(pki_template_set(t, "matter_vid", 1, a, &res) == PKI_MALFORMED,
           "lowercase matter_vid refused: %s", res.detail);
        a[0] = "nocx";
        ok(pki_template_set(t, "matter", 1, a, &res) == PKI_MALFORMED,
           "unknown Matter profile refused");
        pki_template_free(t);
    }

    /* RCAC -> ICAC -> NOC */
    n = opname(rc_attrs);
    pki_result_init(&res);
    rcac = NULL;
    ok(pki_selfsign(frc, trc, n, &rcac, &res) == PKI_OK, "RCAC issued %s",
       res.detail);
    X509_NAME_free(n);

    carc = rcac ? make_ca(rcac, frc, "rcac", tic, NULL, NULL) : NULL;
    n = opname(ic_attrs);
    memset(&req, 0, sizeof(req));
    req.subject = n;
    req.pubkey = kic;
    icac = NULL;
    pki_result_init(&res);
    ok(carc && pki_issue(carc, tic, NULL, &req, NULL, &icac, &res) == PKI_OK,
       "ICAC issued %s", res.detail);
    X509_NAME_free(n);

    /* a chain file: the ICAC CA knows its RCAC */
    if (icac && rcac) {
        char   cpath[PATH_MAX * 2];
        FILE  *f;

        snprintf(cpath, sizeof(cpath), "%s/rcac-chain.pem", tmpdir);
        f = fopen(cpath, "w");
        if (f) {
            PEM_write_X509(f, rcac);
            fclose(f);
        }
    }
    {
        char  cpath[PATH_MAX * 2];

        snprintf(cpath, sizeof(cpath), "%s/rcac-chain.pem", tmpdir);
        caic = icac ? make_ca(icac, fic, "icac", tnoc, NULL, cpath) : NULL;
    }

    for (i = 0; caic && noc_cases[i].name; i++) {
        n = opname(noc_cases[i].attrs);
        memset(&req, 0, sizeof(req));
        req.subject = n;
        req.pubkey = knoc;
        noc = NULL;
        pki_result_init(&res);
        if (noc_cases[i].reason == NULL) {
            ok(pki_issue(caic, tnoc, NULL, &req, NULL, &noc, &res) == PKI_OK,
               "NOC %s issued %s", noc_cases[i].name, res.detail);
            pki_result_init(&res);
            ok(noc && pki_matter_verify_operational(noc, icac, rcac, 0, &res)
                      == PKI_OK, "NOC %s passes the operational checks %s",
               noc_cases[i].name, res.detail);
            der = NULL;
            dlen = noc ? i2d_X509(noc, &der) : 0;
            tlv = back = NULL;
            tlvlen = 0;
            pki_result_init(&res);
            /* converted before ok(): its arguments (tlvlen) may be read
             * before its condition runs (found by Valgrind) */
            st = dlen > 0
                 && pki_matter_der_to_tlv(der, (size_t) dlen, &tlv, &tlvlen,
                                          &res) == PKI_OK
                 && tlvlen <= 400
                 && pki_matter_tlv_to_der(tlv, tlvlen, &back, &blen, &res)
                    == PKI_OK
                 && blen == (size_t) dlen && memcmp(back, der, blen) == 0;
            ok(st, "NOC %s: TLV %zu B round-trips %s", noc_cases[i].name,
               tlvlen, res.detail);
            OPENSSL_free(der);
            free(tlv);
            free(back);
        } else {
            ok(pki_issue(caic, tnoc, NULL, &req, NULL, &noc, &res)
               == PKI_POLICY && strstr(res.detail, noc_cases[i].reason),
               "NOC %s refused: %s", noc_cases[i].name, res.detail);
        }
        X509_free(noc);
        X509_NAME_free(n);
    }

    /* an ICAC with a fabric-id too (the SDK's ICA02 has that shape): a
     * NOC with 3 CATs ending before 2050 (UTCTime) fits 600 B of DER
     * with its 9-octet serial; with 16 octets it was always refused ("up
     * to 606").  Ending 99991231235959Z (GeneralizedTime, 2 octets more)
     * it fits too, at up to 600, as every EC signature has the low s (one
     * octet less than the longest DER signature). */
    if (carc) {
        X509            *icac2 = NULL;
        pki_ca_t        *caic2;
        pki_template_t  *t10;
        char             cpath[PATH_MAX * 2], hex[41];

        t10 = pki_template_new("noc-10y");
        a[0] = "noc";
        pki_result_init(&res);
        pki_template_set(t10, "matter", 1, a, &res);
        a[0] = "3650d";
        pki_template_set(t10, "validity", 1, a, &res);
        ok(pki_template_finish(t10, &res) == PKI_OK, "template noc-10y %s",
           res.detail);

        n = opname(ic2_attrs);
        memset(&req, 0, sizeof(req));
        req.subject = n;
        req.pubkey = kic;
        pki_result_init(&res);
        ok(pki_issue(carc, tic, NULL, &req, NULL, &icac2, &res) == PKI_OK,
           "ICAC with fabric-id issued %s", res.detail);
        X509_NAME_free(n);
        snprintf(cpath, sizeof(cpath), "%s/rcac-chain.pem", tmpdir);
        caic2 = icac2 ? make_ca(icac2, fic, "icac2", tnoc, t10, cpath)
                      : NULL;
        n = opname(noc_cases[1].attrs);
        req.subject = n;
        req.pubkey = knoc;
        noc = NULL;
        pki_result_init(&res);
        ok(caic2 && pki_issue(caic2, t10, NULL, &req, NULL, &noc, &res)
                    == PKI_OK,
           "NOC with 3 CATs for 10 years under an ICAC with a fabric-id "
           "issued %s", res.detail);
        pki_result_init(&res);
        ok(noc && icac2 && rcac
           && pki_matter_verify_operational(noc, icac2, rcac, 0, &res)
              == PKI_OK,
           "  passes the operational checks %s", res.detail);
        ok(noc && pki_serial_to_hex(X509_get0_serialNumber(noc), hex)
           && strlen(hex) == 18 && hex[0] <= '7',
           "  its serial has 9 octets, positive (%s)", noc ? hex : "");
        der = NULL;
        dlen = noc ? i2d_X509(noc, &der) : 0;
        tlv = back = NULL;
        tlvlen = 0;
        pki_result_init(&res);
        st = dlen > 0 && dlen <= 600
             && pki_matter_der_to_tlv(der, (size_t) dlen, &tlv, &tlvlen,
                                      &res) == PKI_OK
             && tlvlen <= 400
             && pki_matter_tlv_to_der(tlv, tlvlen, &back, &blen, &res)
                == PKI_OK
             && blen == (size_t) dlen && memcmp(back, der, blen) == 0;
        ok(st, "  DER %d B (<= 600), TLV %zu B (<= 400) round-trips %s",
           dlen, tlvlen, res.detail);
        OPENSSL_free(der);
        free(tlv);
        free(back);
        X509_free(noc);

        /* 16 of them: with a high s about half were 601 octets */
        for (i = 0, st = 1, dlen = 0; caic2 && i < 16 && st; i++) {
            noc = NULL;
            der = NULL;
            tlv = back = NULL;
            pki_result_init(&res);
            st = pki_issue(caic2, tnoc, NULL, &req, NULL, &noc, &res)
                 == PKI_OK
                 && (dlen = i2d_X509(noc, &der)) > 0 && dlen <= 600
                 && pki_matter_der_to_tlv(der, (size_t) dlen, &tlv, &tlvlen,
                                          &res) == PKI_OK
                 && pki_matter_tlv_to_der(tlv, tlvlen, &back, &blen, &res)
                    == PKI_OK
                 && blen == (size_t) dlen && memcmp(back, der, blen) == 0;
            OPENSSL_free(der);
            free(tlv);
            free(back);
            X509_free(noc);
        }
        ok(caic2 && st && i == 16, "the same NOC to 9999: 16 issued, each "
           "DER <= 600 B (last %d) round-tripping through TLV %s", dlen,
           res.detail);
        X509_NAME_free(n);
        pki_template_free(t10);
        pki_ca_free(caic2);
        X509_free(icac2);
    }

    if (icac && rcac) {
        der = NULL;
        dlen = i2d_X509(icac, &der);
        pki_result_init(&res);
        ok(pki_matter_der_to_tlv(der, (size_t) dlen, &tlv, &tlvlen, &res)
           == PKI_OK, "ICAC converts to TLV (%zu B)", tlvlen);
        free(tlv);
        OPENSSL_free(der);
        pki_result_init(&res);
        ok(pki_matter_check(rcac, PKI_MATTER_RCAC, NULL, &res) == PKI_OK,
           "RCAC profile %s", res.detail);
    }

    if (capai && caic) {
        test_engine(capai, tdac2, caic, tnoc);
        test_body_values(capai, tdac2, caic, tnoc);
        test_batch_log_refused(capai, tdac2);
        test_batch_index(capai, tdac2);
        test_batch_cleanup(capai, tdac2);
        test_batch_index_crash(capai, tdac2);
    }

    test_noc_withdraw(tnoc, kic, fic);

    if (pai) {
        test_der_bound(pai, fpai, tdac2, kdev);
    }

    if (paa && pai && capai) {
        test_cn_vidpid(paa, pai, kpai, capai, tdac2, kdev);
        test_keygen_cn(pai, fpai);
    }

    if (icac && caic) {
        test_tlv_validity(icac, fic, knoc);
    }

    /* a DAC template cannot issue from a NOC CA's plain CSR path */
    csr = make_csr(kdev, "x", NULL, EVP_sha256());
    pki_result_init(&res);
    ok(pki_request_from_csr(tnoc, csr, &req, &res) == PKI_POLICY,
       "matter-noc from a plain CSR refused: %s", res.detail);
    X509_REQ_free(csr);

    pki_ca_free(capaa);
    pki_ca_free(capai);
    pki_ca_free(carc);
    pki_ca_free(caic);
    X509_free(paa);
    X509_free(pai);
    X509_free(rcac);
    X509_free(icac);
    pki_template_free(tpaa);
    pki_template_free(tpai);
    pki_template_free(tdac);
    pki_template_free(tdac2);
    pki_template_free(idx_tmpl);
    pki_template_free(trc);
    pki_template_free(tic);
    pki_template_free(tnoc);
    pki_key_free(fpaa);
    pki_key_free(fpai);
    pki_key_free(frc);
    pki_key_free(fic);
    EVP_PKEY_free(kpaa);
    EVP_PKEY_free(kpai);
    EVP_PKEY_free(kdev);
    EVP_PKEY_free(k384);
    EVP_PKEY_free(krc);
    EVP_PKEY_free(kic);
    EVP_PKEY_free(knoc);
}


int
main(void)
{
    const char  *t;

    pki_init();

    if (!find_vectors()) {
        skip_all("t/vectors/matter not found");
    }

    t = getenv("PKI_TEST_TMPDIR");
    snprintf(tmpdir, sizeof(tmpdir), "%s/matter-XXXXXX", t ? t : "/tmp");
    if (mkdtemp(tmpdir) == NULL) {
        skip_all("no temp dir");
    }

    test_tlv();
    test_attestation();
    test_cd_strict();
    test_operational();
    test_operational_validity();
    test_issuance();

    return done_testing();
}
