/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Matter internals shared by matter_tlv.c, matter.c and the issuance hooks
 * in template.c / issue.c.  Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_MATTER_INT_H
#define PKI_MATTER_INT_H

#include "issue_int.h"


/* Matter attribute OIDs, content octets of 1.3.6.1.4.1.37244.<a>.<b>. */
#define PKI_MATTER_ARC      "\x2b\x06\x01\x04\x01\x82\xa2\x7c"
#define PKI_MATTER_ARC_LEN  8

#define PKI_MATTER_OID_NODE_ID    "1.3.6.1.4.1.37244.1.1"
#define PKI_MATTER_OID_FW_ID      "1.3.6.1.4.1.37244.1.2"
#define PKI_MATTER_OID_ICAC_ID    "1.3.6.1.4.1.37244.1.3"
#define PKI_MATTER_OID_RCAC_ID    "1.3.6.1.4.1.37244.1.4"
#define PKI_MATTER_OID_FABRIC_ID  "1.3.6.1.4.1.37244.1.5"
#define PKI_MATTER_OID_CAT        "1.3.6.1.4.1.37244.1.6"
#define PKI_MATTER_OID_VVS_ID     "1.3.6.1.4.1.37244.1.7"
#define PKI_MATTER_OID_VID        "1.3.6.1.4.1.37244.2.1"
#define PKI_MATTER_OID_PID        "1.3.6.1.4.1.37244.2.2"

/* Matter attribute numbers: DN attribute (…37244.1.n) -> TLV tag 16 + n;
 * VID/PID (…37244.2.n) -> PKI_MATTER_ATTR_VID/PID (no TLV tag). */
#define PKI_MATTER_TAG_NODE_ID    17
#define PKI_MATTER_TAG_FW_ID      18
#define PKI_MATTER_TAG_ICAC_ID    19
#define PKI_MATTER_TAG_RCAC_ID    20
#define PKI_MATTER_TAG_FABRIC_ID  21
#define PKI_MATTER_TAG_CAT        22
#define PKI_MATTER_TAG_VVS_ID     23
#define PKI_MATTER_ATTR_VID       101
#define PKI_MATTER_ATTR_PID       102

/* matter.c: the Matter attribute number of an OID (0: not a Matter
 * attribute). */
int pki_int_matter_attr(const ASN1_OBJECT *obj);

/* matter.c: 1 when a name is a Matter one (an attribute under
 * 1.3.6.1.4.1.37244, or a commonName with "Mvid:" or "Mpid:"). */
int pki_int_matter_name(const X509_NAME *name);

/* matter.c: issuance hooks.  Called by pki_build() after the TBS is built
 * (subject VID/PID for a DAC, criticality, notBefore, pre-sign rules) and
 * by pki_issue()/pki_selfsign() after signing (the whole profile). */
pki_status_t pki_int_matter_prepare(const pki_template_t *t,
    const pki_ca_t *ca, X509 *x, pki_result_t *res);
pki_status_t pki_int_matter_issued(const pki_template_t *t,
    const pki_ca_t *ca, X509 *x, pki_result_t *res);
/* matter.c: 1 when time t has a Matter TLV form (32-bit seconds since
 * 2000-01-01T00:00:00Z, or 99991231235959Z). */
int pki_int_matter_tlv_time(time_t t);
/* matter.c: the configuration check of template t under CA ca (an
 * operational certificate whose notAfter has no TLV form; a DAC template
 * whose CA is not a PAI, or disagrees with it on the VID/PID). */
pki_status_t pki_int_matter_ca_template(const pki_template_t *t,
    const pki_ca_t *ca, pki_result_t *res);
/* matter.c: request from a CSR for a Matter template (the CSR subject is
 * not trusted: only a commonName is taken, for a DAC). */
pki_status_t pki_int_matter_request(const pki_template_t *t, X509_REQ *csr,
    pki_request_t *req, pki_result_t *res);
/* matter.c: NULL when a requested public key fits a Matter certificate
 * (EC P-256, named curve, uncompressed point), else the rule it breaks. */
const char *pki_int_matter_req_key(EVP_PKEY *pk);
/* matter.c: the same from the pieces pki_int_csr_parts() returns (the
 * lean reader takes only version 1 CSRs). */
pki_status_t pki_int_matter_dac_request(const pki_template_t *t,
    EVP_PKEY *pk, int signid, const X509_NAME *subject, pki_request_t *req,
    pki_result_t *res);
/* matter.c: template directive "matter TYPE", "matter_vid", "matter_pid"
 * and the defaults applied by pki_template_finish(). */
pki_status_t pki_int_matter_tmpl_set(pki_template_t *t, const char *name,
    int argc, const char *const *argv, pki_result_t *res);
pki_status_t pki_int_matter_tmpl_finish(pki_template_t *t,
    pki_result_t *res);


/* matter_tlv.c: the TLV payload of a Certification Declaration. */
typedef struct {
    int            vendor_id;
    int            pids[100];
    int            npids;
    int            origin_vid;      /* -1: absent */
    int            origin_pid;      /* -1: absent */
    unsigned char  paas[10][20];
    int            npaas;           /* -1: no authorized_paa_list */
} pki_matter_cd_t;

const char *pki_int_matter_cd_parse(const unsigned char *p, size_t n,
    pki_matter_cd_t *cd);


#endif /* PKI_MATTER_INT_H */
