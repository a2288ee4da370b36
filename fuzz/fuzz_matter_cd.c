/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter Certification Declarations (pki_matter_verify_cd): the CMS
 * SignedData envelope and the CD's TLV payload, checked against the
 * fixture's DAC (VID FFF1, PID 8000), PAI and PAA.
 *
 * A mutated CMS almost never verifies, so by default the harness SIGNS
 * what the fuzzer writes: the input is the TLV payload, wrapped into a
 * SignedData by the fixed test-only CD signer (SHA-256, ECDSA, signer
 * named by its subjectKeyIdentifier, no certificates: as Matter CDs are).
 * A raw mode feeds the input as the CMS message itself.
 *
 * Input: byte 0 selects, the rest is the payload (or the CMS).
 *   bit 0  raw CMS (else: TLV payload, signed here)
 *   bit 1  the next 4 bytes are BasicInformation VID and PID (big endian)
 *          (else -1, -1: the DAC's)
 *   bit 2  no PAA (the authorized_paa_list check is skipped)
 *   bit 3  with signed attributes (content type, signing time, digest)
 * Invariant: a CD accepted without BasicInformation values names the
 * DAC's VID and PID.
 */

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/cms.h>
#include <openssl/err.h>

#include "fuzz.h"


#define PKI_CD_FUZZ_MAX  (16 * 1024)


static const pki_fuzz_matter_t  *mx;


int
LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void) argc;
    (void) argv;

    mx = pki_fuzz_matter();

    if (pki_fuzz_verbose()) {
        const ASN1_OCTET_STRING  *skid = X509_get0_subject_key_id(mx->paa);
        int                       i;

        fprintf(stderr, "PAA SKID: ");
        for (i = 0; skid && i < ASN1_STRING_length(skid); i++) {
            fprintf(stderr, "%02X", ASN1_STRING_get0_data(skid)[i]);
        }
        fprintf(stderr, "\n");
    }

    return 0;
}


/* SignedData over payload by the CD signer (DER, malloc'd by OpenSSL). */
static unsigned char *
wrap(const uint8_t *payload, size_t len, int attrs, int *outlen)
{
    int               flags;
    BIO              *in;
    unsigned char    *der;
    CMS_ContentInfo  *ci;

    in = BIO_new_mem_buf(payload, (int) len);
    if (in == NULL) {
        abort();
    }

    flags = CMS_BINARY | CMS_NOCERTS | CMS_NOSMIMECAP | CMS_USE_KEYID
            | CMS_PARTIAL;
    if (!attrs) {
        flags |= CMS_NOATTR;
    }

    ci = CMS_sign(NULL, NULL, NULL, NULL, flags);
    if (ci == NULL
        || CMS_add1_signer(ci, mx->cd_signer, mx->cd_key, EVP_sha256(),
                           flags) == NULL
        || CMS_final(ci, in, NULL, flags) != 1)
    {
        abort();
    }
    BIO_free(in);

    der = NULL;
    *outlen = i2d_CMS_ContentInfo(ci, &der);
    CMS_ContentInfo_free(ci);
    if (*outlen <= 0) {
        abort();
    }

    return der;
}


int
LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int             n, vid, pid;
    uint8_t         sel;
    pki_status_t    rc;
    pki_result_t    res;
    unsigned char  *der;

    if (size < 1 || size > PKI_CD_FUZZ_MAX) {
        return 0;
    }

    sel = data[0];
    data++;
    size--;

    vid = pid = -1;
    if (sel & 2) {
        if (size < 4) {
            return 0;
        }
        vid = (data[0] << 8) | data[1];
        pid = (data[2] << 8) | data[3];
        data += 4;
        size -= 4;
    }

    if (sel & 1) {
        der = NULL;
        n = (int) size;
    } else {
        der = wrap(data, size, (sel & 8) != 0, &n);
    }

    pki_result_init(&res);
    rc = pki_matter_verify_cd(der ? der : data, (size_t) n, mx->cd_signer,
                              mx->dac, mx->pai, (sel & 4) ? NULL : mx->paa,
                              vid, pid, &res);

    if (pki_fuzz_verbose()) {
        fprintf(stderr, "sel %02x: %d %s\n", sel, rc, res.detail);

        /* raw seeds: PKI_FUZZ_CD_OUT=file writes the signed CMS */
        if (der != NULL && getenv("PKI_FUZZ_CD_OUT") != NULL) {
            FILE  *f = fopen(getenv("PKI_FUZZ_CD_OUT"), "wb");

            if (f != NULL) {
                fputc(1, f);
                fwrite(der, 1, (size_t) n, f);
                fclose(f);
            }
        }
    }

    /* DAC VID FFF1 PID 8000: nothing else passes without BasicInformation */
    if (rc == PKI_OK && vid < 0 && pid < 0 && (sel & 1) == 0) {
        /* a passing CD must have named FFF1 / 8000: verified again with
         * another PID, it must fail */
        pki_result_init(&res);
        if (pki_matter_verify_cd(der, (size_t) n, mx->cd_signer, mx->dac,
                                 mx->pai, (sel & 4) ? NULL : mx->paa,
                                 0xFFF2, 0x8000, &res) == PKI_OK)
        {
            abort();
        }
    }

    OPENSSL_free(der);
    ERR_clear_error();

    return 0;
}
