/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal structures shared by template.c, ca.c, issue.c and est.c.
 * Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_ISSUE_INT_H
#define PKI_ISSUE_INT_H

#include "pki.h"


#define PKI_MAX_KEY_TYPES      16
#define PKI_MAX_SUBJECT_RULES  32
#define PKI_MAX_TEMPLATES      64
#define PKI_CA_CHAIN_MAX       16      /* certificates in a chain file */
#define PKI_CA_PATHS_MAX       1024    /* paths walked through a chain file */
#define PKI_MAX_SANS           100
#define PKI_CSR_MAX            65536
#define PKI_CSR_ATTRS_MAX      64      /* attributes of a request */

/* Latest time an X.509 certificate can express: 9999-12-31T23:59:59Z. */
#define PKI_TIME_MAX           ((time_t) 253402300799LL)

/* RFC 5280 4.1.2.5: a certificate is valid from notBefore through
 * notAfter, both included, so that a validity of v seconds (a template's,
 * a max_validity) from nb ends at nb + v - 1, and one that ends at na
 * starts at na - v + 1 (a "90d" template has notAfter - notBefore of
 * 90 days less one second). */
#define pki_int_validity_end(nb, v)    ((time_t) (nb) + (time_t) (v) - 1)
#define pki_int_validity_start(na, v)  ((time_t) (na) - (time_t) (v) + 1)


typedef enum {
    PKI_KT_EC = 1,
    PKI_KT_RSA,
    PKI_KT_ED25519,
    PKI_KT_ED448
} pki_kt_t;

typedef struct {
    pki_kt_t  type;
    int       nid;       /* EC curve NID */
    int       min_bits;  /* RSA */
    int       max_bits;  /* RSA */
} pki_key_type_t;

typedef enum {
    PKI_RULE_NONE = 0,   /* not mentioned: refused */
    PKI_RULE_COPY,
    PKI_RULE_REQUIRED,
    PKI_RULE_FORBIDDEN,
    PKI_RULE_FIXED
} pki_rule_t;

typedef struct {
    ASN1_OBJECT  *obj;
    char          name[64];   /* as configured, for messages */
    pki_rule_t    rule;
    char         *value;      /* PKI_RULE_FIXED */
} pki_subject_rule_t;

enum {
    PKI_SAN_DNS = 0,
    PKI_SAN_IP,
    PKI_SAN_EMAIL,
    PKI_SAN_URI,
    PKI_SAN_NTYPES
};

struct pki_template_s {
    char                     *name;
    int                       finished;

    pki_key_type_t            key_types[PKI_MAX_KEY_TYPES];
    int                       nkey_types;      /* 0: unset, use defaults */
    char                      key_types_text[256];

    pki_subject_rule_t        subject[PKI_MAX_SUBJECT_RULES];
    int                       nsubject;

    pki_rule_t                san[PKI_SAN_NTYPES];
    int                       san_wildcard;

    long                      validity;        /* seconds, 0: unset */

    unsigned int              key_usage;       /* bit i = KeyUsage bit i */
    int                       key_usage_set;

    STACK_OF(ASN1_OBJECT)    *eku;             /* NULL: none */

    int                       bc_set;
    int                       ca;
    int                       pathlen;         /* -1: none */

    STACK_OF(X509_EXTENSION) *extensions;      /* extra, verbatim */

    int                       server_keygen;   /* -1: unset */
    int                       must_staple;     /* CSRs may ask RFC 7633 */
    int                       beyond_ca_expiry;

    /* Matter profile (matter.c): pki_matter_type_t, 0: none */
    int                       matter;
    char                      matter_vid[5];   /* "" or 4 uppercase hex */
    char                      matter_pid[5];
};

struct pki_ca_s {
    char                     *name;
    char                     *cert_file;
    char                     *chain_file;
    char                     *key_ref;
    char                     *crl_url;
    char                     *ocsp_url;
    char                     *ca_issuers_url;
    long                      max_validity;    /* 0: none */

    char                     *tmpl_names[PKI_MAX_TEMPLATES];
    int                       ntmpl_names;
    const pki_template_t     *tmpls[PKI_MAX_TEMPLATES];
    int                       ntmpls;

    X509                     *cert;
    STACK_OF(X509)           *chain;
    pki_key_t                *key;             /* not owned */
    int                       crl_sign;        /* keyUsage allows CRLs */

    char                     *alt_files[PKI_CA_MAX_ALT_CHAINS];
    int                       nalt;
    STACK_OF(X509)           *alt[PKI_CA_MAX_ALT_CHAINS];
    long                      pathlen;         /* -1: unlimited */
    const char               *pathlen_from;    /* the chain file that
                                                  lowered it, or NULL */
    int                       finished;

    /* what it signs ends (pki_ca_end): the CA certificate's notAfter or
     * an earlier one above it in the "chain" file (end_at: 0 the CA
     * certificate, i certificate i of the file) */
    time_t                    end;
    int                       end_at;

    /* the other CAs of the configuration with this one's subject and key
     * (pki_ca_link_same): one CRL issuer, one CRL's worth of revocations */
    char                     *same[PKI_CA_MAX_SAME];
    int                       nsame;
};


/* KeyUsage bit numbers (RFC 5280 4.2.1.3). */
#define PKI_KU_DIGITAL_SIGNATURE  0
#define PKI_KU_NON_REPUDIATION    1
#define PKI_KU_KEY_ENCIPHERMENT   2
#define PKI_KU_DATA_ENCIPHERMENT  3
#define PKI_KU_KEY_AGREEMENT      4
#define PKI_KU_KEY_CERT_SIGN      5
#define PKI_KU_CRL_SIGN           6
#define PKI_KU_ENCIPHER_ONLY      7
#define PKI_KU_DECIPHER_ONLY      8


/* template.c */
int pki_int_parse_time(const char *s, long *out);
/* Effective key types (the defaults when unset). */
const pki_key_type_t *pki_int_key_types(const pki_template_t *t, int *n,
    const char **text);
/* Classifies a public key; returns 1 and fills kt (min/max = bits). */
int pki_int_classify_key(const EVP_PKEY *pk, pki_key_type_t *kt);
int pki_int_key_allowed(const pki_template_t *t, const EVP_PKEY *pk);
void pki_int_describe_key(const pki_key_type_t *kt, char *buf, size_t size);
/* Whether a key of type (PKI_KT_*) may take the key usage of template t:
 * RFC 8410 5 wants one of digitalSignature, nonRepudiation, keyCertSign,
 * cRLSign for an Ed25519 or Ed448 key (PKI_ED_KU_RULE why not). */
int pki_int_ed_key_usage_ok(const pki_template_t *t, int type);
#define PKI_ED_KU_RULE                                                       \
    "an Ed25519 or Ed448 key needs digitalSignature, nonRepudiation, "       \
    "keyCertSign or cRLSign in \"key_usage\" (RFC 8410 5)"
/* The keyUsage bits (1 << PKI_KU_*) a subject key of type (PKI_KT_*) may
 * carry: RSA (RFC 3279 2.3.1) no keyAgreement, EC (RFC 5480 3, RFC 8813
 * 3) no encipherment, Ed25519 and Ed448 (RFC 8410 5) neither; all for a
 * type not known. */
unsigned pki_int_ku_bits(int type);
/* Whether a certificate of template t for a key of that type keeps at
 * least one keyUsage bit (an unset key_usage always does). */
int pki_int_key_usage_ok(const pki_template_t *t, int type);
#define PKI_KU_RULE                                                          \
    "keyAgreement is not for RSA keys (RFC 3279 2.3.1), keyEncipherment "    \
    "and dataEncipherment not for EC keys (RFC 5480 3)"
/* Whether a certificate of template t may carry a SAN of type (PKI_SAN_*),
 * wildcard: a "*." DNS name.  0 with why filled (for a protocol that
 * refuses an identifier before it is validated: ACME newOrder). */
int pki_int_template_san_ok(const pki_template_t *t, int type, int wildcard,
    char *why, size_t size);

/* ca.c */
time_t pki_int_asn1_time(const ASN1_TIME *t);
/* issue.c: notAfter na of a certificate starting at nb, capped as the
 * CA caps it (max_validity counted inclusively, the CA's notAfter,
 * 99991231235959Z). */
time_t pki_int_cap_not_after(const pki_template_t *t, const pki_ca_t *ca,
    time_t nb, time_t na);
/* issue.c: the octets of the serials of template t's certificates
 * (pki_serial_new_octets): 9 for a Matter operational certificate (RCAC,
 * ICAC, NOC), whose DER must fit 600 bytes: with 16, a NOC with 3 CATs
 * under an ICAC with a fabric-id never did; 16 for the others. */
size_t pki_int_serial_octets(const pki_template_t *t);

/* issue.c: why a DNS label (len LDH characters, any case) may not be
 * issued: one of the reserved "??--" form that is no IDNA2008 A-label
 * (RFC 5891 4.2.3.1); NULL when it may.  ACME newOrder refuses such an
 * identifier with it, the CSR policy a dNSName, an email domain or a CN
 * judged as a DNS name. */
const char *pki_int_dns_label_refused(const char *label, size_t len);

/* issue.c: RFC 2253 text of a name, malloc'd; NULL on failure. */
char *pki_int_name_text(const X509_NAME *name);

/* issue.c: the record of a certificate this CA issued (see there). */
pki_status_t pki_int_cert_record(pki_redis_t *r, const pki_ca_t *ca,
    X509 *cert, pki_record_t *rec, pki_result_t *res);

/* req's subject, when equal to name in canonical form and each of
 * name's values as template t issues it, replaced by name's own encoding
 * (core/issue.c); -1 out of memory. */
int pki_int_request_keep_subject(const pki_template_t *t,
    pki_request_t *req, X509_NAME *name);

/* issue.c: revokes (cessationOfOperation) a certificate recorded good that
 * will not be delivered; 1 done, 0 not (said in res's log). */
int pki_int_issue_withdraw(pki_redis_t *r, const pki_ca_t *ca, X509 *x,
    pki_result_t *res);

/* issue.c: the same for the serial hex (any form) of CA ca: revoked,
 * cessationOfOperation, whether or not the transaction log can take the
 * entry now, then marked withdrawn.  Returns the revocation's status;
 * *marked 1 when the mark is set too.  wres says why either failed (its
 * status PKI_UNAVAILABLE: Redis did not answer one of the two). */
pki_status_t pki_int_issue_withdraw_serial(pki_redis_t *r, const char *ca,
    const char *hex, int *marked, pki_result_t *wres);

/* issue.c: when the cleanup of n items of a failed batch (abandons,
 * withdrawals; one Redis round trip or two each) stops, in pki_int_now()'s
 * clock: the store's timeout, and a hundredth of it per item. */
double pki_int_cleanup_deadline(const pki_redis_t *r, size_t n);

/* redis.c: the store's command timeout (milliseconds). */
int pki_int_redis_timeout_ms(const pki_redis_t *r);

/* csr.c: the hot-path PKCS#10 reader (see there). */
int pki_int_csr_fast(const unsigned char *der, size_t len, X509_REQ **out,
    pki_status_t *st, pki_result_t *res);
int pki_int_csr_parts(const unsigned char *der, size_t len, EVP_PKEY **pk,
    X509_NAME **subject, int *signid, pki_status_t *st, pki_result_t *res);
/* csr.c: 1 when pk is an EC key at the point at infinity (no key). */
int pki_int_key_at_infinity(const EVP_PKEY *pk);
/* csr.c: the detail of a request whose attributes break PKCS#9's rules
 * (a type twice, a challenge or extensions not single-valued), or NULL;
 * at(src, i) gives the i-th of n. */
const char *pki_int_csr_attrs_refused(const void *src, int n,
    X509_ATTRIBUTE *(*at)(const void *src, int i));
/* csr.c: the detail of a request whose EC key is a hybrid point (RFC 5480
 * 2.2 forbids the form), or NULL. */
const char *pki_int_csr_point_refused(const X509_PUBKEY *xpk);
/* csr.c: a certificate's compressed EC point set again uncompressed (the
 * form every verifier takes); 1, or 0 on failure. */
int pki_int_cert_point_uncompressed(X509 *x);
/* csr.c: why a request's key is not worth checking its signature (no
 * template could issue it, and the check would cost more than a request
 * should), or NULL. */
const char *pki_int_csr_key_refused(const EVP_PKEY *pk);
/* csr.c: why a well-formed public key is no key to certify, or NULL (an
 * EdDSA key of small order, an RSA modulus even or with a small factor). */
const char *pki_int_key_weak(const EVP_PKEY *pk);
/* csr.c: why a request's signature algorithm is refused (MD2, MD4, MD5),
 * or NULL. */
const char *pki_int_csr_sig_refused(const X509_ALGOR *alg);
/* csr.c: the text of a challengePassword value t (a DirectoryString, RFC
 * 2985 5.4.1) in *pw, *len: PrintableString, UTF8String, IA5String and
 * T61String as they are (no length check); BMPString and UniversalString
 * (NDES-era clients send BMPString) converted to UTF-8 of at most max
 * octets, in *buf (the caller OPENSSL_clear_free()s it; NULL for the
 * other types).  1, or 0 for another type, or a BMPString or
 * UniversalString that is empty, not whole characters, too long, or holds
 * a NUL, a surrogate or a value past U+10FFFF. */
int pki_int_challenge_text(const ASN1_TYPE *t, size_t max,
    const unsigned char **pw, size_t *len, unsigned char **buf);

/* issue.c: a hook for this thread's next pki_issue() only (ACME finalize).
 * fn runs right after the serial was reserved with its intent and before
 * anything is signed; a status other than PKI_OK abandons the reservation
 * and pki_issue() returns that status.  pki_issue() clears the hook. */
typedef pki_status_t (*pki_int_reserved_fn)(void *arg, const char *serial,
    pki_result_t *res);
void pki_int_issue_on_reserved(pki_int_reserved_fn fn, void *arg);

/* An ACME order's link in the certificate store (redis.c, for an order
 * kept in a state store that may lose its last second): the serial last
 * reserved for the order, so that the order's certificate is found, and
 * not signed twice, after the state store forgot it. */
typedef struct {
    const char  *key;       /* the link's key, in the certificate store  */
    const char  *token;     /* this finalization's, random               */
    long         stale;     /* seconds: another finalization's pending
                               record older than this is taken over      */
    int          found;     /* out: 2 the linked certificate is recorded,
                               3 another finalization runs (pki_issue()
                               then fails with PKI_CONFLICT)             */
} pki_int_link_t;

/*
 * A reservation's time, for the commit that follows it: Redis's clock
 * (milliseconds) when the reservation's script ran, and ours (monotonic
 * seconds, pki_int_now()) when its answer came.  From them redis.c tells
 * the commit's script a deadline in Redis's clock: Redis's time when the
 * commit is sent (at least redis_ms plus our time since then) plus the
 * store's timeout.  Past it the client has given up on the answer (and
 * may have reported the issuance as failed), so the script writes nothing
 * and answers "too late" (late set).  redis_ms 0: no deadline.
 */
typedef struct {
    long long    redis_ms;
    double       local;
    int          late;      /* out: the commit ran past its deadline */
} pki_int_rsv_t;

/* redis.c: revokes (cessationOfOperation) a certificate recorded good
 * but not handed out, whether or not the transaction log can take the
 * entry now (pki_int_issue_withdraw). */
pki_status_t pki_int_record_withdraw(pki_redis_t *r, const char *ca,
    const char *serial, pki_result_t *res);

/* redis.c: the mark of a withdrawn certificate on its record (mark 1:
 * set by pki_int_issue_withdraw; 0: read, *yes 1 when set).  A record
 * revoked otherwise has none. */
pki_status_t pki_int_record_withdrawn(pki_redis_t *r, const char *ca,
    const char *serial, int mark, int *yes, pki_result_t *res);

/* rsv (may be NULL) receives the reservation's time. */
pki_status_t pki_int_record_reserve_link(pki_redis_t *r,
    const pki_record_t *rec, pki_int_link_t *link, pki_int_rsv_t *rsv,
    pki_result_t *res);

/* The same, rec's index entry ixkey (which must hold claim) set to
 * "s:<serial>" by the script that reserves it (pki_int_record_reserve_batch
 * for one record): PKI_CONFLICT with *lost 1 when the entry did not hold
 * claim (nothing written), PKI_CONFLICT with *lost 0 a serial taken. */
pki_status_t pki_int_record_reserve_ix(pki_redis_t *r,
    const pki_record_t *rec, const char *claim, const char *ixkey,
    int *lost, pki_int_rsv_t *rsv, pki_result_t *res);

/* redis.c: pki_int_record_commit_carry() (audit_int.h) within the
 * deadline of reservation rsv (NULL: none).  A commit that Redis runs too
 * late writes nothing and fails with PKI_UNAVAILABLE, rsv->late set: the
 * record stays pending, it is not committed. */
pki_status_t pki_int_record_commit_by(pki_redis_t *r,
    const pki_record_t *rec, pki_int_rsv_t *rsv, const char *stream,
    const char *time, const char *body, size_t blen, char *rid,
    size_t ridsize, pki_result_t *res);

/* redis.c: pki_record_reserve_batch() and pki_record_commit_batch() with
 * the deadline above: the reservation's rsv is that of its last round
 * trip; the commit's late[i] (may be NULL) is set to 1 for a record whose
 * script ran too late (status[i] PKI_UNAVAILABLE, nothing written). */
pki_status_t pki_int_record_reserve_batch(pki_redis_t *r,
    const pki_record_t *recs, size_t n, int *taken, pki_int_rsv_t *rsv,
    const char *claim, const char *const *ixkeys, pki_result_t *res);
/* ixkeys (NULL: none) names each record's entry in an index of the
 * caller's, which must hold claim: a record reserved sets it to
 * "s:<serial>" in the same script; taken[i] is then -1 when its entry did
 * not hold claim (lost, or another's), -2 when it was not tried (another
 * of its chunk's did not): nothing written for either.
 * pki_int_record_abandon_ix: pki_record_abandon() of such a record, its
 * entry dropped while it names it (ixkey NULL: pki_record_abandon()). */
pki_status_t pki_int_record_abandon_ix(pki_redis_t *r, const char *ca,
    const char *serial, const char *ixkey, pki_result_t *res);

/*
 * pki_issue_batch() with an index of the caller's (NULL: none, as
 * pki_issue_batch()): keys[i] is items[i]'s entry (none NULL), each
 * holding claim, the caller's.  Each item's serial is named in its entry
 * by the script that reserves it (pki_int_record_reserve_batch), so an
 * entry names a record from its reservation on, also when the caller dies
 * after the commit; an entry that does not hold the claim any more fails
 * the batch before anything is signed (that item PKI_CONFLICT, the others
 * stopped, their reservations abandoned); an abandoned item's entry is
 * dropped with its pending record.
 */
typedef struct {
    const char          *claim;
    const char *const   *keys;
} pki_int_batch_ix_t;

pki_status_t pki_int_issue_batch(pki_ca_t *ca, const pki_template_t *t,
    pki_redis_t *r, pki_issue_item_t *items, size_t n,
    const pki_issue_ctx_t *ictx, const pki_int_batch_ix_t *ix, int threads,
    pki_result_t *res);
pki_status_t pki_int_record_commit_batch(pki_redis_t *r,
    const pki_record_t *recs, size_t n, pki_status_t *status,
    const pki_int_rsv_t *rsv, int *late, pki_result_t *res);
pki_status_t pki_int_link_serial(pki_redis_t *r, const char *key,
    char serial[41], pki_result_t *res);
/* issue.c: reserve this thread's next pki_issue() with this link (cleared
 * by pki_issue(), like the hook above). */
void pki_int_issue_link(pki_int_link_t *link);
/* issue.c: this thread's next pki_issue() reserves its serial with an
 * index entry ixkey, which must hold claim (pki_int_record_reserve_ix): the
 * entry names the record from its reservation on, and is dropped with it
 * when it is abandoned; an entry lost fails the issuance PKI_CONFLICT
 * before anything is signed.  Cleared by pki_issue(), like the link. */
void pki_int_issue_index(const char *claim, const char *ixkey);

/*
 * matter_ix.c: the per-PAI index of the device keys a PAI certified (see
 * matter_api.c), shared by the Matter batch and EST under a Matter DAC
 * template.  pki_int_lua_dac_claim, pki_int_lua_dac_release: its scripts.
 * pki_int_dac_spki: SHA-256 of pub's SPKI DER (1, or 0).
 * pki_int_dac_ix_key: the entry of that key in CA ca's index (1, or 0).
 * pki_int_dac_new_claim: a fresh claim ("c:" and 32 hex digits).
 * pki_int_dac_check: the DAC rec an entry names, checked as the key's
 * answer (good, not expired, of template t, of this very key, issued by
 * ca, of the subject asked, when not NULL): PKI_OK with *out, else the
 * status with msg (what names the request).
 */
#define PKI_INT_DAC_CLAIM_TTL  "300"
#define PKI_INT_DAC_CLAIM_LEN  (2 + 32 + 1)
#define PKI_INT_DAC_KEY_LEN    256

extern const char  pki_int_lua_dac_claim[];
extern const char  pki_int_lua_dac_release[];

int pki_int_dac_spki(EVP_PKEY *pub, unsigned char spki[32]);
int pki_int_dac_ix_key(pki_redis_t *r, const char *ca,
    const unsigned char spki[32], char *buf, size_t size);
int pki_int_dac_new_claim(char claim[PKI_INT_DAC_CLAIM_LEN]);
pki_status_t pki_int_dac_check(const pki_ca_t *ca, const pki_template_t *t,
    const pki_record_t *rec, const unsigned char spki[32],
    const X509_NAME *subject, const char *what, X509 **out, char *msg,
    size_t size);

/* One key's claim (EST): pki_int_dac_one_claim() answers PKI_OK with
 * *known the DAC the key has (checked as above; no claim), or with the
 * key claimed (d->claimed: issue it with pki_int_issue_index(d->claim,
 * d->key), then release the claim when it failed); PKI_CONFLICT: another
 * issuance claims the key, or its DAC is pending; PKI_POLICY: the key has
 * a DAC that is not this request's answer; PKI_UNAVAILABLE.  A claim
 * lost with its answer is marked claimed, for the release. */
typedef struct {
    char     claim[PKI_INT_DAC_CLAIM_LEN];
    char     key[PKI_INT_DAC_KEY_LEN];
    int      claimed;
} pki_int_dac_one_t;

pki_status_t pki_int_dac_one_claim(pki_redis_t *r, const pki_ca_t *ca,
    const pki_template_t *t, EVP_PKEY *pub, const X509_NAME *subject,
    pki_int_dac_one_t *d, X509 **known, pki_result_t *res);
void pki_int_dac_one_release(pki_redis_t *r, pki_int_dac_one_t *d,
    pki_result_t *res);

/* redis.c, for ocsp.c: the records of n (CA, serial) pairs read in one
 * round trip (the HGETALLs of pki_record_get(), pipelined).
 * pki_int_records_fetch() returns PKI_OK with *out set, or the Redis
 * failure (res; nothing read).  pki_int_records_get() then gives pair i
 * as pki_record_get() would have: PKI_OK with rec filled (the caller
 * clears it), PKI_NOT_FOUND, or that call's failure (res).  cas and
 * serials are borrowed until pki_int_records_free(). */
typedef struct pki_int_records_s  pki_int_records_t;

pki_status_t pki_int_records_fetch(pki_redis_t *r, const char *const *cas,
    const char *const *serials, size_t n, pki_int_records_t **out,
    pki_result_t *res);
pki_status_t pki_int_records_get(pki_int_records_t *b, size_t i,
    pki_record_t *rec, pki_result_t *res);
void pki_int_records_free(pki_int_records_t *b);


#endif /* PKI_ISSUE_INT_H */
