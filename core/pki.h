/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Public API of the nginx-pki CA core (libpkicore).
 *
 * The core is server agnostic: it never includes a web-server header and
 * never logs.  Every fallible call fills a pki_result_t: a status, a short
 * detail that may be sent to the client, and a longer text for the error log
 * (OpenSSL errors, backend errors).  Neither ever holds a private key, a PIN
 * or a password.
 *
 * Threads: objects are built once at configuration time (single thread) and
 * are then read-only, except where a function says otherwise.  Signing,
 * Redis access and the protocol engines are safe to call from many threads at
 * once (nginx thread pool).  Redis connections are per thread.
 *
 * Only symbols marked PKI_API are exported from libpkicore.so.
 */

#ifndef PKI_H
#define PKI_H

#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include <openssl/evp.h>
#include <openssl/x509.h>
#include <openssl/x509v3.h>


#define PKI_API  __attribute__((visibility("default")))


/* ---- results ------------------------------------------------------------ */

typedef enum {
    PKI_OK = 0,
    PKI_MALFORMED,        /* bad syntax: base64, DER, JSON, length       */
    PKI_BAD_SIGNATURE,    /* a signature in the input does not verify     */
    PKI_POLICY,           /* CA or template refuses; detail names the rule */
    PKI_UNAUTHORIZED,     /* no acceptable identity was presented         */
    PKI_FORBIDDEN,        /* identity known, but not allowed to do this   */
    PKI_NOT_FOUND,
    PKI_CONFLICT,         /* e.g. a serial collision that retries missed  */
    PKI_TOO_LARGE,        /* input over its cap                           */
    PKI_UNSUPPORTED,      /* unsupported media type / method / operation  */
    PKI_UNAVAILABLE,      /* backend (Redis, token) down or slow: retry   */
    PKI_INTERNAL          /* unexpected failure: a bug or a broken setup  */
} pki_status_t;

#define PKI_DETAIL_LEN  256
#define PKI_LOG_LEN     1024

typedef struct {
    pki_status_t  status;
    char          detail[PKI_DETAIL_LEN];  /* public: may go to the client */
    char          log[PKI_LOG_LEN];        /* private: error log only      */
} pki_result_t;

/* Sets status and the public detail (printf-style) and returns st.  Also
 * drains the OpenSSL error queue into res->log. */
PKI_API pki_status_t pki_fail(pki_result_t *res, pki_status_t st,
    const char *fmt, ...) __attribute__((format(printf, 3, 4)));

/* Appends to the private log text (printf-style). */
PKI_API void pki_log(pki_result_t *res, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

PKI_API void pki_result_init(pki_result_t *res);
PKI_API const char *pki_status_name(pki_status_t st);

/* Library initialisation; idempotent.  Returns 1 on success. */
PKI_API int pki_init(void);

/* Who this process runs as, for an error about permissions: "ROLE runs as
 * USER:GROUP (uid N, gid N)" in buf (ROLE from pki_set_process_role(),
 * default "the process"); returns buf.  Names come from the user and group
 * databases (a number when there is none). */
PKI_API const char *pki_process_user(char *buf, size_t size);
/* The ROLE above: a static string, e.g. "the worker" (nginx sets it in
 * its workers before any thread starts). */
PKI_API void pki_set_process_role(const char *role);


/* ---- small helpers -------------------------------------------------------- */

/* Base64 (RFC 4648 standard alphabet).  Decoding ignores CR, LF, space and
 * tab (EST bodies are line-wrapped), rejects anything else and bad padding.
 * Output is malloc'd; caller frees.  Return PKI_OK or PKI_MALFORMED. */
PKI_API pki_status_t pki_base64_decode(const unsigned char *in, size_t len,
    unsigned char **out, size_t *outlen, pki_result_t *res);
/* wrap: line length (64 for EST), 0 for one line.  Returns NULL on OOM. */
PKI_API char *pki_base64_encode(const unsigned char *in, size_t len,
    size_t wrap, size_t *outlen);

/* Serial numbers.  A new serial is 16 bytes from the CSPRNG with the top bit
 * cleared (positive, 127 bits of entropy).  pki_serial_new_octets makes one
 * of 9..20 octets alike (9: over 70 bits; DESIGN.md asks at least 64), 0
 * for another width: Matter operational certificates take 9 (issue_int.h,
 * pki_int_serial_octets).  The first octet is never 0: the DER INTEGER has
 * exactly that many content octets.  The canonical text form is
 * uppercase hex without leading zero bytes, as `openssl x509 -serial`
 * prints it (even number of digits).  pki_serial_normalize accepts any case,
 * an optional leading "0x" and leading zeros; returns 1 if valid (1..20
 * octets, positive) and writes the canonical form into out[41]. */
PKI_API int pki_serial_new(ASN1_INTEGER **out);
PKI_API int pki_serial_new_octets(ASN1_INTEGER **out, size_t octets);
PKI_API int pki_serial_to_hex(const ASN1_INTEGER *serial, char out[41]);
PKI_API int pki_serial_normalize(const char *in, char out[41]);

/* RFC 3339 date-time (section 5.6): YYYY-MM-DD "T" hh:mm:ss, an optional
 * fraction of 1 to PKI_RFC3339_FRAC_MAX digits (dropped), then "Z" or a
 * numeric offset +hh:mm / -hh:mm; "t" and "z" as RFC 3339 allows.  A field
 * out of range (February 29 outside a leap year too), anything after the
 * zone, or a time before 1970 is refused.  A leap second (:60) counts as
 * :59.  The flags widen or narrow that for one caller:
 *   PKI_RFC3339_SPACE  a space may stand for the "T" (RFC 3339 5.6 NOTE)
 *   PKI_RFC3339_UTC    "Z" only, no numeric offset
 * Returns 1 and the seconds since the epoch in *out, else 0. */
#define PKI_RFC3339_SPACE     0x01
#define PKI_RFC3339_UTC       0x02
#define PKI_RFC3339_FRAC_MAX  9

PKI_API int pki_parse_rfc3339(const char *s, unsigned flags, time_t *out);

/* 1 when the Content-Type value ct is the media type type (ASCII case
 * ignored), alone or followed by parameters (RFC 9110 8.3.1), with
 * optional white space around it: "application/jsonx" or
 * "application/json x" is another type.  NULL is no type. */
PKI_API int pki_media_type_is(const char *ct, const char *type);

/* t as RFC 3339 UTC, whole seconds ("2026-12-01T09:42:59Z"), into buf of
 * PKI_RFC3339_LEN bytes.  Returns 1; 0 for a time with no such form
 * (before 1970 or after 9999), and buf is "1970-01-01T00:00:00Z". */
#define PKI_RFC3339_LEN       32

PKI_API int pki_format_rfc3339(time_t t, char buf[PKI_RFC3339_LEN]);


/* ---- keys ------------------------------------------------------------------
 *
 * A vault is one PKCS#11 module + token + PIN file.  A key is a PEM file or
 * an RFC 7512 "pkcs11:" URI (token=, object=, id=, type=private; pin-value
 * is refused: the PIN comes only from the vault's PIN file).
 *
 * Lifecycle with a forking server: create objects and call *_open at
 * configuration time (this validates token, PIN and key), call *_close in
 * the master before fork, and *_open again in each worker after fork.
 * Opening a vault retries with C_Finalize (unload) and 20-50 ms jitter up to
 * 10 times: SoftHSM's file store fails spuriously when several processes
 * initialise at once.  A token key whose open fails (the token away when
 * the worker starts) is not closed: signing and decrypting with it answer
 * PKI_UNAVAILABLE until they have fetched it, and test-signed it, by
 * themselves.  A token key keeps its public key across close and open, so
 * the worker's key must be the one the master opened.
 */

typedef struct pki_vault_s  pki_vault_t;
typedef struct pki_key_s    pki_key_t;

PKI_API pki_vault_t *pki_vault_new(const char *name, const char *module_path,
    const char *token_label, const char *pin_file, pki_result_t *res);
/* The same vault, but its PIN file is not read: for a process that only
 * parses the configuration (nginx -s) and never opens the vault nor its
 * keys; pki_vault_open() of such a vault fails for want of a PIN. */
PKI_API pki_vault_t *pki_vault_declare(const char *name,
    const char *module_path, const char *token_label, const char *pin_file,
    pki_result_t *res);
PKI_API const char *pki_vault_name(const pki_vault_t *v);
PKI_API const char *pki_vault_token(const pki_vault_t *v);
PKI_API pki_status_t pki_vault_open(pki_vault_t *v, pki_result_t *res);
/* EC keys on a token sign on a pool of sessions per key that grows to the
 * number of concurrent signers; a pooled session left idle for ms or more
 * (default 30 s) is closed when another one of its key comes back, so the
 * pool shrinks after a burst and the token's sessions (a small number on
 * some HSMs) are free for other processes.  0: keep only the last one.
 * Call before the signers start. */
PKI_API void pki_vault_session_idle(pki_vault_t *v, long ms);
/* A worker that signs nothing after a burst keeps its pool: a pool thread
 * calls pki_vault_trim_idle() now and then to close the pooled sessions
 * idle that long (returns how many; it makes token calls, never on an
 * event loop).  pki_vault_idle_due(): 1 when there are some, with no token
 * call and no wait for a lock (0 when the vault is busy), for the event
 * loop to decide whether to post the trim.  Neither touches a hung vault
 * (pki_vault_hung). */
PKI_API unsigned pki_vault_trim_idle(pki_vault_t *v);
PKI_API int pki_vault_idle_due(pki_vault_t *v);
/* The hang watchdog.  PKCS#11 cannot cancel a call; a token operation
 * (open, login, fetch, sign, decrypt) of the vault that has not returned
 * after ms (default 10 s; 0: no limit) makes the vault hung: signing and
 * decrypting with its keys answer PKI_UNAVAILABLE at once, with no token
 * call, until that operation returns; a signer that waits for the vault
 * behind it (for its lock, or for a reopen queued behind the call) gives
 * up then, with PKI_UNAVAILABLE too.  Call before the signers start.
 * pki_vault_call_age(): the age in ms of the oldest operation in flight (0:
 * none); pki_vault_hung(): that age when it is at least the limit, else 0;
 * pki_key_hung(): the same for the key's vault (0 for a file key).  The
 * three are lock-free reads of atomics, and make no token call: an event
 * loop may ask them before it hands work on the key to a thread. */
PKI_API void pki_vault_call_timeout(pki_vault_t *v, long ms);
PKI_API long pki_vault_call_age(const pki_vault_t *v);
PKI_API long pki_vault_hung(const pki_vault_t *v);
PKI_API long pki_key_hung(const pki_key_t *k);
PKI_API void pki_vault_close(pki_vault_t *v);
PKI_API void pki_vault_free(pki_vault_t *v);

/* The PIN file path read as a vault reads its pin_file, for a tool that
 * logs in to a token itself (pkictl matter hierarchy): a regular file, read
 * with read(2) straight into memory of its own (left out of core dumps,
 * locked against swap where allowed: no stdio buffer, no other copy);
 * trailing CR and LF are dropped and wiped; an empty PIN, one over 256
 * bytes or one with a NUL byte is refused.  Returns the PIN, NUL-terminated,
 * its length in *len; NULL with res filled (the detail names "vault NAME"
 * and the file, never holds the PIN).  Free it with pki_pin_free(), which
 * wipes it; NULL is a no-op. */
PKI_API char *pki_pin_read(const char *name, const char *path, size_t *len,
    pki_result_t *res);
PKI_API void pki_pin_free(char *pin);

/* Returns 1 and the token label of a pkcs11: URI (into buf), 0 if ref is
 * not a pkcs11: URI or has no token attribute. */
PKI_API int pki_key_uri_token(const char *ref, char *buf, size_t size);

/* vault: required for pkcs11: URIs, NULL for files. */
PKI_API pki_key_t *pki_key_new(const char *ref, pki_vault_t *vault,
    pki_result_t *res);
PKI_API pki_status_t pki_key_open(pki_key_t *k, pki_result_t *res);
PKI_API void pki_key_close(pki_key_t *k);
PKI_API void pki_key_free(pki_key_t *k);
PKI_API const char *pki_key_ref(const pki_key_t *k);  /* file or URI */
/* The public key (borrowed; valid until the key is closed).  NULL for a
 * closed key, and for a token key that has not opened yet and never had
 * its public key fetched. */
PKI_API EVP_PKEY *pki_key_public(const pki_key_t *k);

/* Signs x (X509 or X509_CRL via the functions below) with the default
 * digest for the key type (SHA-256 for P-256 and RSA, SHA-384 for P-384,
 * none for Ed25519), then verifies the signature with the public key before
 * returning PKI_OK.  A token error closes and reopens the vault (bounded
 * retries) and tries again; a persistent failure gives PKI_UNAVAILABLE.
 * A failure of the key alone (not found or ambiguous on the token, a
 * signature that does not verify, a token error that a reopen for it did
 * not cure) gives PKI_UNAVAILABLE at once for the key's backoff (100 ms
 * doubling up to 30 s), after which one caller reopens the vault for it
 * once.  Thread safe. */
PKI_API pki_status_t pki_key_sign_x509(pki_key_t *k, X509 *x,
    pki_result_t *res);
PKI_API pki_status_t pki_key_sign_crl(pki_key_t *k, X509_CRL *crl,
    pki_result_t *res);
/* Raw: signs tbs with md (NULL for Ed25519), verifies, returns malloc'd
 * signature in *sig. */
PKI_API pki_status_t pki_key_sign(pki_key_t *k, const EVP_MD *md,
    const unsigned char *tbs, size_t tbslen, unsigned char **sig,
    size_t *siglen, pki_result_t *res);

/* Describes a public key: "EC P-256", "EC P-384", "RSA 2048", "Ed25519". */
PKI_API void pki_pkey_describe(const EVP_PKEY *pk, char *buf, size_t size);

/* Generates a new private key of the same type and size as like (server
 * side key generation).  Returns NULL on failure. */
PKI_API EVP_PKEY *pki_keygen_like(const EVP_PKEY *like, pki_result_t *res);


/* ---- Redis -----------------------------------------------------------------
 *
 * One pki_redis_t per configuration; connections are opened lazily, one per
 * thread, and reopened after any error.  Every command has the configured
 * timeout; a timeout or connection error is PKI_UNAVAILABLE.
 *
 * Key layout (a contract shared by every host of a fleet):
 *   <ns>{ca:<CA>}:serial:<SERIAL>  string, SET NX reservation (never reused)
 *   <ns>{ca:<CA>}:cert:<SERIAL>    hash, the certificate record
 *   <ns>{ca:<CA>}:expiry           zset, SERIAL scored by notAfter
 *   <ns>{ca:<CA>}:revoked          hash, SERIAL -> "REASON REVOKED_AT
 *                                  INVALIDITY_DATE" (decimal, 0 = none):
 *                                  every revoked or on-hold serial, read
 *                                  whole (HGETALL/HSCAN) to build a CRL
 *   <ns>{ca:<CA>}:revgen           integer, moved on by every revocation
 *                                  change to a value it never held
 *                                  (Redis's clock in microseconds, or + 1:
 *                                  a restored store repeats none); caches
 *                                  and CRL builders compare it
 *   <ns>{ca:<CA>}:crlnumber        integer, INCR'd per CRL built
 * <ns> is the configured namespace (default "pki:").
 */

typedef struct pki_redis_s  pki_redis_t;

typedef struct {
    const char  *host;         /* TCP host, or NULL with unix_path      */
    int          port;         /* default 6379                          */
    const char  *unix_path;    /* unix socket path, or NULL             */
    const char  *password;     /* AUTH, or NULL                         */
    int          db;           /* SELECT, default 0                     */
    const char  *ns;           /* key namespace, default "pki:"         */
    int          timeout_ms;   /* connect and command timeout, def 1000 */
} pki_redis_conf_t;

PKI_API pki_redis_t *pki_redis_new(const pki_redis_conf_t *conf,
    pki_result_t *res);
PKI_API void pki_redis_free(pki_redis_t *r);
/* Closes this thread's connection (call after fork or on thread exit). */
PKI_API void pki_redis_disconnect(pki_redis_t *r);
PKI_API pki_status_t pki_redis_ping(pki_redis_t *r, pki_result_t *res);
PKI_API const char *pki_redis_ns(const pki_redis_t *r);
/* Whether the server runs with its append-only file (aof_enabled of INFO
 * persistence, read with the maxmemory-policy by a new connection of this
 * process): 1 yes (with appendfsync always, or CONFIG refused), 2 yes but
 * with appendfsync everysec or no (a crash of the host loses what was
 * answered in the last second or more), 0 no (a restart loses what was
 * written since the last snapshot), -1 not known yet (or INFO refused). */
PKI_API int pki_redis_aof(const pki_redis_t *r);
/* 1 if r is reached without a name lookup (a unix socket, a literal IPv4
 * or IPv6 address): its connect is bounded by its timeout, a lookup
 * (getaddrinfo) is not. */
PKI_API int pki_redis_literal(const pki_redis_t *r);

/* What a pki_redis_probe() found. */
typedef enum {
    PKI_REDIS_PROBE_OK = 0,
    PKI_REDIS_PROBE_NO_SOCKET,  /* no such unix socket (ENOENT)           */
    PKI_REDIS_PROBE_DENIED,     /* permission denied on the unix socket   */
    PKI_REDIS_PROBE_REFUSED,    /* connection refused                     */
    PKI_REDIS_PROBE_TIMEOUT,    /* no connection or answer in time        */
    PKI_REDIS_PROBE_AUTH,       /* AUTH refused, or NOAUTH without it     */
    PKI_REDIS_PROBE_SELECT,     /* SELECT refused (no such database)      */
    PKI_REDIS_PROBE_EVICTS,     /* an allkeys-* maxmemory-policy          */
    PKI_REDIS_PROBE_OTHER       /* anything else (name lookup, protocol)  */
} pki_redis_probe_t;

/*
 * A configuration check ("nginx -t"): one new connection to r's server,
 * as a thread would open it (connect, AUTH, SELECT, the INFO that reads
 * the maxmemory-policy and aof_enabled) and a PING, closed at once.  All
 * of it takes about timeout_ms at most (or r's own timeout when shorter).
 * On failure res->log starts with the cause in words; it never holds the
 * password.  On success pki_redis_aof(r) tells what INFO said.
 */
PKI_API pki_redis_probe_t pki_redis_probe(pki_redis_t *r, int timeout_ms,
    pki_result_t *res);
/* The same from a root process (nginx -t) for processes that will run as
 * user (uid, gid; its supplementary groups as initgroups() gives them):
 * root connects to any unix socket, so a socket or a directory on its
 * path that user may not use (write on the socket, search on each
 * directory) is PKI_REDIS_PROBE_DENIED, with res->log naming the user
 * and the file.  Not root, or uid 0: as pki_redis_probe(). */
PKI_API pki_redis_probe_t pki_redis_probe_user(pki_redis_t *r,
    int timeout_ms, const char *user, unsigned long uid, unsigned long gid,
    pki_result_t *res);
/* 1 if a and b reach the same server and database with the same password
 * (namespace and timeout aside): one probe does for both. */
PKI_API int pki_redis_same(const pki_redis_t *a, const pki_redis_t *b);

typedef enum {
    PKI_CERT_PENDING = 0,   /* intent recorded, not yet signed          */
    PKI_CERT_GOOD,
    PKI_CERT_REVOKED
} pki_cert_status_t;

typedef struct {
    char               serial[41];
    char               ca[64];
    char               template_name[64];
    char              *subject;      /* RFC 2253 text                   */
    char              *sans;         /* "DNS:a,IP:1.2.3.4,email:..,URI:.." */
    char              *requester;    /* authenticated identity or ""     */
    char              *client;       /* client address or ""             */
    char               protocol[16]; /* "est", "acme", ...              */
    pki_cert_status_t  status;
    int                reason;       /* CRL reason code when revoked     */
    time_t             revoked_at;
    time_t             not_before;
    time_t             not_after;
    time_t             created;
    unsigned char     *der;          /* NULL while pending              */
    size_t             der_len;
    time_t             invalidity_date;  /* 0: none (revoked only)      */
    time_t             revoke_planned;   /* 0: none; else a good
                                            certificate's planned
                                            revocation time (RFC 9773 ARI
                                            moves its renewal window)    */
    int                planned_reason;
    char               realm[32];    /* ACME: the issuing location's policy
                                        ("" for others and older records) */
    int                withdrawn;    /* revoked by pki_int_issue_withdraw:
                                        recorded, never handed out */
} pki_record_t;

/* Reserves serial (SET NX) and writes a pending record in one atomic step.
 * PKI_CONFLICT if the serial is taken. */
PKI_API pki_status_t pki_record_reserve(pki_redis_t *r,
    const pki_record_t *rec, pki_result_t *res);
/* Completes a pending record: DER, status good, expiry index. */
PKI_API pki_status_t pki_record_commit(pki_redis_t *r,
    const pki_record_t *rec, pki_result_t *res);
/* Removes a pending record after a failed signature (the serial stays
 * reserved so it is never reused). */
PKI_API pki_status_t pki_record_abandon(pki_redis_t *r, const char *ca,
    const char *serial, pki_result_t *res);
/* PKI_NOT_FOUND if there is no record. */
PKI_API pki_status_t pki_record_get(pki_redis_t *r, const char *ca,
    const char *serial, pki_record_t *out, pki_result_t *res);
PKI_API void pki_record_clear(pki_record_t *rec);

/* Revocation.  reason is the RFC 5280 CRLReason code: 0 unspecified,
 * 1 keyCompromise, 2 cACompromise, 3 affiliationChanged, 4 superseded,
 * 5 cessationOfOperation, 6 certificateHold, 8 removeFromCRL (releases a
 * hold: the record is good again), 9 privilegeWithdrawn, 10 aACompromise.
 * One atomic step: record status/reason/revoked_at/invalidity_date, the
 * revoked hash, revgen.  PKI_NOT_FOUND: no record (or only pending);
 * PKI_CONFLICT: already revoked (only a hold may change: to another reason
 * or released with 8); 8 on a certificate not on hold; PKI_MALFORMED: bad
 * reason.  A hold keeps a planned revocation (pki_record_plan_revoke) and
 * its release keeps it too, or, once its time has come, revokes the
 * certificate as planned (that reason, dated at the planned time; audited
 * as "planned REASON, due").  out (may be NULL) receives the updated
 * record. */
PKI_API pki_status_t pki_record_revoke(pki_redis_t *r, const char *ca,
    const char *serial, int reason, time_t when, time_t invalidity_date,
    pki_record_t *out, pki_result_t *res);

/* A planned revocation: the good certificate serial is to be revoked
 * with reason at time at (> now).  Recorded in its record
 * (revoke_planned, planned_reason: RFC 9773 renewalInfo moves the
 * certificate's renewal window before it) and in the CA's plan (a sorted
 * set by time) that pki_record_revoke_due() works through, which logs the
 * revocation as the admin "planned by BY".  A second plan replaces the
 * first.  The plan itself is audited (a "revoke-plan" request entry of
 * the thread's actor, pki_event_set_actor), and refused (PKI_UNAVAILABLE,
 * nothing planned) while the transaction log cannot take the entry, as
 * pki_record_revoke is.  PKI_NOT_FOUND: no such certificate;
 * PKI_CONFLICT: not good (revoked, pending).  out (may be NULL): the
 * updated record. */
PKI_API pki_status_t pki_record_plan_revoke(pki_redis_t *r, const char *ca,
    const char *serial, int reason, time_t at, const char *by,
    pki_record_t *out, pki_result_t *res);
/* Revokes (pki_record_revoke: logged like any revocation) every planned
 * revocation of the CA due at now, at most max (0: 256) per call, and
 * takes them off the plan; *done (may be NULL) counts the revocations.
 * The revocation is dated at the planned time, as every reader saw it
 * from then on (pki_record_at), so it changes no answer and leaves the
 * revocation generation (revgen) alone: the CRL listing the plan stays
 * current.  A plan whose certificate was revoked or removed meanwhile is
 * dropped. */
PKI_API pki_status_t pki_record_revoke_due(pki_redis_t *r, const char *ca,
    time_t now, unsigned max, unsigned *done, pki_result_t *res);

/* rec as it stands at now: a good certificate whose planned revocation
 * time has come is revoked, since the planned time and for the planned
 * reason (no invalidity date, no plan left), whether or not the plan was
 * carried out yet.  Every reader of a record's status goes through this
 * (OCSP, EST and SCEP renewal, ACME renewalInfo, the CRL's plans).
 * Returns 1 when it changed rec. */
PKI_API int pki_record_at(pki_record_t *rec, time_t now);

/* Calls cb for every entry of the CA's revoked hash (HSCAN, in batches).
 * cb returns 0 to stop early.  An entry whose value cannot be read comes
 * with reason -1 and no dates (0); one whose serial cannot be read fails
 * the walk. */
typedef int (*pki_revoked_cb)(void *arg, const char *serial, int reason,
    time_t revoked_at, time_t invalidity_date);
PKI_API pki_status_t pki_record_revoked_each(pki_redis_t *r, const char *ca,
    pki_revoked_cb cb, void *arg, pki_result_t *res);
/* As pki_record_revoked_each, with each certificate's notAfter from the
 * CA's expiry index (0 when it is not there), looked up a page at a time
 * (ZMSCORE, Redis 6.2 and later). */
typedef int (*pki_revoked_exp_cb)(void *arg, const char *serial, int reason,
    time_t revoked_at, time_t invalidity_date, time_t not_after);
PKI_API pki_status_t pki_record_revoked_walk(pki_redis_t *r, const char *ca,
    pki_revoked_exp_cb cb, void *arg, pki_result_t *res);
/* Calls cb for every certificate of the CA that pki_record_at() finds
 * revoked at now by a plan not carried out yet (the CA's plan, then each
 * record: pipelined single-key reads).  *next (may be NULL) receives the
 * earliest planned time after now, 0 for none. */
PKI_API pki_status_t pki_record_plans_due(pki_redis_t *r, const char *ca,
    time_t now, pki_revoked_cb cb, void *arg, time_t *next,
    pki_result_t *res);

/* Current value of <ns>{ca:CA}:revgen (0 when absent). */
PKI_API pki_status_t pki_record_revgen(pki_redis_t *r, const char *ca,
    long long *gen, pki_result_t *res);
/* The revgen and the time of the CA's earliest planned revocation after
 * after (*plan 0: none), in one step. */
PKI_API pki_status_t pki_record_revgen_plan(pki_redis_t *r, const char *ca,
    time_t after, long long *gen, time_t *plan, pki_result_t *res);
/* INCR of <ns>{ca:CA}:crlnumber. */
PKI_API pki_status_t pki_record_next_crlnumber(pki_redis_t *r,
    const char *ca, long long *number, pki_result_t *res);

/* A page of the CA's records, soonest expiry first: up to max (1..1000)
 * members of the CA's expiry index, read one by one (pending, vanished or
 * corrupt records and members that are no serials are left out, so a page
 * may hold fewer, even none, before the end).  The work is the page's,
 * never the keyspace's.  cursor "0" (or NULL, "") starts, else the *next
 * of the page before; *next (PKI_RECORD_CURSOR_MAX bytes) is
 * "<notAfter>_<SERIAL>" or, after a page that held no serial,
 * "<notAfter>~<N>"; "0" when done.  A cursor of any other form (among
 * them the SCAN cursors of older versions): PKI_MALFORMED.  *out is a
 * malloc'd array (pki_record_clear each, then free the array). */
#define PKI_RECORD_CURSOR_MAX  64

PKI_API pki_status_t pki_record_list(pki_redis_t *r, const char *ca,
    const char *cursor, size_t max, pki_record_t **out, size_t *n,
    char *next, pki_result_t *res);


/* ---- templates ---------------------------------------------------------------
 *
 * Built from directive lines (name + arguments), the same for every server
 * glue.  See README.md for the directive list.  pki_template_finish checks
 * consistency; after it the template is read-only.
 */

typedef struct pki_template_s  pki_template_t;

PKI_API pki_template_t *pki_template_new(const char *name);
PKI_API void pki_template_free(pki_template_t *t);
PKI_API const char *pki_template_name(const pki_template_t *t);
/* PKI_MALFORMED with a detail such as "unknown key type \"ec:P-999\"". */
PKI_API pki_status_t pki_template_set(pki_template_t *t, const char *name,
    int argc, const char *const *argv, pki_result_t *res);
PKI_API pki_status_t pki_template_finish(pki_template_t *t,
    pki_result_t *res);
PKI_API int pki_template_server_keygen(const pki_template_t *t);
PKI_API long pki_template_validity(const pki_template_t *t);  /* seconds */


/* ---- CAs -------------------------------------------------------------------- */

typedef struct pki_ca_s  pki_ca_t;

#define PKI_CA_MAX_ALT_CHAINS  4     /* "alternate_chain" lines of a CA */
#define PKI_CA_MAX_SAME        8     /* other CAs with its subject and key */
#define PKI_NAME_MAX           63    /* bytes of a configured name */

/* 1 when the len bytes at s are a name as the configuration gives a CA, a
 * template or a vault (pki_ca NAME, ...; a CA's name is the NAME of its
 * Redis keys' {ca:NAME}): 1 to PKI_NAME_MAX of A-Z a-z 0-9 . _ -; else 0.
 * The glue and pkictl check names with it before they use them. */
PKI_API int pki_name_valid(const char *s, size_t len);

PKI_API pki_ca_t *pki_ca_new(const char *name);
PKI_API void pki_ca_free(pki_ca_t *ca);
PKI_API const char *pki_ca_name(const pki_ca_t *ca);
/* Directive lines: certificate FILE; chain FILE; key REF; templates N...;
 * max_validity TIME; crl_url URL; ocsp_url URL; ca_issuers_url URL;
 * alternate_chain FILE (up to PKI_CA_MAX_ALT_CHAINS).  ocsp_url and
 * ca_issuers_url go into one AIA extension of what the CA issues.  "key"
 * and "templates" only record the names: the glue resolves them with the
 * two calls below. */
PKI_API pki_status_t pki_ca_set(pki_ca_t *ca, const char *name, int argc,
    const char *const *argv, pki_result_t *res);
PKI_API const char *pki_ca_key_ref(const pki_ca_t *ca);
PKI_API pki_status_t pki_ca_set_key(pki_ca_t *ca, pki_key_t *key,
    pki_result_t *res);
PKI_API int pki_ca_template_count(const pki_ca_t *ca);
PKI_API const char *pki_ca_template_name(const pki_ca_t *ca, int i);
PKI_API pki_status_t pki_ca_add_template(pki_ca_t *ca, pki_template_t *t,
    pki_result_t *res);
/* Loads certificate and chain, checks the key matches the certificate, the
 * certificate is a CA valid now (with cRLSign, if it has a keyUsage, when
 * the CA has a crl_url), and every template is compatible with the CA.
 * The chain (1 to 16 certificates, after the CA certificate itself when
 * the file begins with it) is the path above the CA: the first the
 * issuer of the CA certificate, each next one the issuer of the one
 * before (signature checked), each a CA valid now whose pathlen allows
 * the CAs below it.  Each alternate chain must hold 1 to 16 certificates,
 * the first with the CA certificate's subject and public key, then the
 * same path checks; it may not be the "chain" file nor hold the same
 * certificates as another chain. */
PKI_API pki_status_t pki_ca_finish(pki_ca_t *ca, pki_result_t *res);
/* The same checks, but the key is neither opened nor matched with the
 * certificate: for a process that only parses the configuration (nginx -s)
 * and never signs with the CA. */
PKI_API pki_status_t pki_ca_finish_unkeyed(pki_ca_t *ca,
    pki_result_t *res);
/* 1 when the (finished) CA certificate may sign CRLs: no keyUsage, or one
 * with cRLSign; else the CA publishes no CRL. */
PKI_API int pki_ca_signs_crls(const pki_ca_t *ca);
PKI_API int pki_ca_allows(const pki_ca_t *ca, const pki_template_t *t);
PKI_API X509 *pki_ca_cert(const pki_ca_t *ca);                 /* borrowed */
/* When what the (finished) CA signs ends: the earliest notAfter of the
 * CA certificate and the certificates above it in its "chain" file, up to
 * the trust anchor (whose own copy in the file does not count: relying
 * parties hold theirs), along the path that ends last; (time_t) -1 when
 * unreadable.  No certificate, CRL or OCSP response is signed from then
 * on, and none of them lasts beyond it. */
PKI_API time_t pki_ca_end(const pki_ca_t *ca);
/* Which certificate ends it: 0 the CA certificate, i certificate i (from
 * 1) of pki_ca_chain; -1 when unknown. */
PKI_API int pki_ca_end_at(const pki_ca_t *ca);
/* PKI_OK while the CA may sign at now (before pki_ca_end); else
 * PKI_UNAVAILABLE, with which certificate ended in res. */
PKI_API pki_status_t pki_ca_live(const pki_ca_t *ca, time_t now,
    pki_result_t *res);
/* 1 when the (finished) CA's certificate and "chain" file carry no trust
 * anchor (RFC 7030 4.1.3, what EST /cacerts and SCEP GetCACert serve): no
 * path up from the CA certificate (or a certificate of the CA in the
 * file: a cross certificate) through the file, issuer by issuer in any
 * order, reaches a self-signed certificate; issuer (size bytes, may be
 * NULL) then holds the issuer name that is missing, X509_NAME_oneline()
 * form ("" when unreadable).  0 otherwise: the CA certificate is
 * self-signed, the file holds a root above it, or the CA is not finished. */
PKI_API int pki_ca_anchor_missing(const pki_ca_t *ca, char *issuer,
    size_t size);
PKI_API STACK_OF(X509) *pki_ca_chain(const pki_ca_t *ca);      /* borrowed */
/* Alternate chains (RFC 8555 7.4.2), in the order of their lines: the
 * certificates that follow a leaf of this CA in another path, such as
 * the CA cross-signed by another root.  i is 0-based; the stack is
 * borrowed, NULL before pki_ca_finish() or when i is out of range. */
PKI_API int pki_ca_alt_chain_count(const pki_ca_t *ca);
PKI_API STACK_OF(X509) *pki_ca_alt_chain(const pki_ca_t *ca, int i);
PKI_API pki_key_t *pki_ca_key(const pki_ca_t *ca);
/* 1 if cert names this CA as issuer and its signature verifies with the
 * CA's public key. */
PKI_API int pki_ca_issued(const pki_ca_t *ca, X509 *cert);
/* Two finished CAs of one configuration with the same subject and key (a
 * CA re-certified, its old and new certificate both declared) are one CRL
 * issuer to relying parties, which take the newest CRL of an issuer as
 * the whole of its revocations: each CA's CRL then lists the other's too
 * (pki_crl_build, pki_crl_current).  Links a and b when they are such a
 * pair (*linked 1), else nothing (*linked 0); PKI_MALFORMED when a CA
 * would have more than PKI_CA_MAX_SAME others. */
PKI_API pki_status_t pki_ca_link_same(pki_ca_t *a, pki_ca_t *b, int *linked,
    pki_result_t *res);
PKI_API int pki_ca_same_count(const pki_ca_t *ca);
PKI_API const char *pki_ca_same_name(const pki_ca_t *ca, int i);


/* ---- issuance --------------------------------------------------------------- */

/* Parses a DER PKCS#10 (no trailing bytes, at most 64 KiB) and verifies its
 * self-signature.  PKI_MALFORMED or PKI_BAD_SIGNATURE; PKI_POLICY for a key
 * no certificate may have (an RSA modulus that is even or has a small
 * factor, ...) or a signature with MD2, MD4 or MD5 (the detail says why). */
PKI_API pki_status_t pki_csr_parse(const unsigned char *der, size_t len,
    X509_REQ **out, pki_result_t *res);

/* The explicit issuance request: what the CA will sign, built from policy.
 * Never the CSR itself. */
typedef struct {
    X509_NAME        *subject;
    GENERAL_NAMES    *sans;       /* NULL or empty: no SAN extension */
    EVP_PKEY         *pubkey;
    time_t            not_before;  /* 0: now */
    time_t            not_after;   /* 0: from template */
    int               must_staple; /* TLS feature status_request (RFC 7633) */
} pki_request_t;

/* Applies the template to a CSR: key type and size, subject rules, SAN
 * rules.  PKI_POLICY with the rule named in the detail. */
PKI_API pki_status_t pki_request_from_csr(const pki_template_t *t,
    X509_REQ *csr, pki_request_t *req, pki_result_t *res);
/* The same rules for a request given in parts (an offline tool's command
 * line): key, subject and SAN rules.  The request gets copies of subject
 * and sans and a reference to pub. */
PKI_API pki_status_t pki_request_build(const pki_template_t *t,
    const X509_NAME *subject, const GENERAL_NAMES *sans, EVP_PKEY *pub,
    pki_request_t *req, pki_result_t *res);
/* Renewal (EST simplereenroll): the CSR's subject and SANs must equal the
 * old certificate's (PKI_FORBIDDEN otherwise); the request copies them.
 * A Matter template renews nothing (PKI_POLICY). */
PKI_API pki_status_t pki_request_renewal(const pki_template_t *t,
    X509_REQ *csr, X509 *old, pki_request_t *req, pki_result_t *res);
/* Names bound to a certificate (EST est_bind_names): the CSR's subject and
 * SANs must equal cert's, compared as pki_request_renewal compares them
 * (PKI_FORBIDDEN otherwise, the detail saying which differs). */
PKI_API pki_status_t pki_request_names_bound(const pki_template_t *t,
    X509_REQ *csr, X509 *cert, pki_result_t *res);
/* Replaces the request's public key (server-side key generation). */
PKI_API void pki_request_set_pubkey(pki_request_t *req, EVP_PKEY *pub);
PKI_API void pki_request_clear(pki_request_t *req);

typedef struct {
    const char  *protocol;    /* "est", "acme", "scep", ... */
    const char  *requester;   /* authenticated identity, or NULL */
    const char  *client;      /* client address, or NULL */
    const char  *realm;       /* ACME: the policy of the issuing location
                                 (kept in the record), or NULL */
    int         *committed;   /* or NULL; set to 1 once the record's commit
                                 was sent: from then on the certificate
                                 may be issued even when the call fails */
} pki_issue_ctx_t;

/* Issues: policy checks, fresh serial reserved in Redis (SET NX, retried on
 * collision), intent recorded, TBS built from the request and template,
 * signed, signature verified, record committed, certificate returned.  Any
 * failure after the reservation abandons the pending record.  r may be NULL
 * only for offline tools (pkictl), which then record nothing. */
PKI_API pki_status_t pki_issue(pki_ca_t *ca, const pki_template_t *t,
    pki_redis_t *r, const pki_request_t *req, const pki_issue_ctx_t *ictx,
    X509 **out, pki_result_t *res);

/* Self-signed certificate (a root CA) for offline tools. */
PKI_API pki_status_t pki_selfsign(pki_key_t *key, const pki_template_t *t,
    X509_NAME *subject, X509 **out, pki_result_t *res);

/* Status of a certificate this CA issued: looks up the record.
 * PKI_NOT_FOUND if there is none. */
PKI_API pki_status_t pki_cert_status(pki_redis_t *r, const pki_ca_t *ca,
    X509 *cert, pki_cert_status_t *status, pki_result_t *res);


/* ---- EST (RFC 7030) --------------------------------------------------------- */

typedef enum {
    PKI_EST_UNKNOWN = 0,
    PKI_EST_CACERTS,
    PKI_EST_SIMPLEENROLL,
    PKI_EST_SIMPLEREENROLL,
    PKI_EST_CSRATTRS,
    PKI_EST_SERVERKEYGEN
} pki_est_op_t;

typedef struct {
    pki_ca_t          *ca;
    pki_template_t    *tmpl;
    pki_redis_t       *redis;
    int                pop_linking;  /* require channel binding in the
                                        CSR's challengePassword */
    size_t             max_body;     /* default 65536 */
    int                bind_names;   /* a client certificate's names only:
                                        simpleenroll and serverkeygen with
                                        one ask for its subject and SANs */
    pki_ca_t *const   *cas;          /* every CA of the server (ncas), or
                                        NULL: a client certificate shown
                                        beside a password is judged by the
                                        one that issued it */
    size_t             ncas;
} pki_est_conf_t;

typedef struct {
    pki_est_op_t          op;
    const char           *method;        /* "GET", "POST", ...          */
    const char           *content_type;  /* NULL if absent              */
    const unsigned char  *body;
    size_t                body_len;
    const char           *user;          /* authenticated user, or NULL */
    X509                 *client_cert;   /* verified by the TLS layer   */
    const unsigned char  *channel_binding;  /* tls-unique (TLS 1.2) or
                                               tls-exporter (TLS 1.3)   */
    size_t                channel_binding_len;
    int                   binding_no_ems;   /* TLS 1.2 without the
                                               Extended Master Secret:
                                               tls-unique does not bind
                                               (RFC 7627), none given   */
    const char           *client;        /* client address              */
} pki_est_req_t;

typedef struct {
    int             http_status;
    const char     *content_type;      /* static string, or NULL        */
    int             cte_base64;        /* send Content-Transfer-Encoding */
    const char     *www_authenticate;  /* static string, or NULL        */
    const char     *allow;             /* Allow of a 405 (static), NULL */
    int             retry_after;       /* seconds, 0 for none           */
    unsigned char  *body;              /* malloc'd, may be NULL         */
    size_t          body_len;
    pki_result_t    res;               /* what happened, for the log    */
    char            content_type_buf[128];  /* content_type may point
                                               here (multipart boundary) */
} pki_est_resp_t;

/* Maps the last path segment ("simpleenroll", ...) to an operation. */
PKI_API pki_est_op_t pki_est_op(const char *name, size_t len);
/* 1 if the operation needs Redis or the key (run it off the event loop). */
PKI_API int pki_est_op_blocking(pki_est_op_t op);
/* Handles one request.  Never fails to fill resp. */
PKI_API void pki_est_handle(const pki_est_conf_t *conf,
    const pki_est_req_t *req, pki_est_resp_t *resp);
PKI_API void pki_est_resp_free(pki_est_resp_t *resp);

/* ---- OCSP (RFC 6960; RFC 5019 profile for GET) ----------------------------
 *
 * A stateless engine: message in, message out, like pki_est_handle.  The
 * responses are signed by the CA key (ResponderID byKey, no certificates
 * included), or by the CA's delegated responder (below) while that
 * certificate is within its validity (its answers then end, nextUpdate,
 * no later than its notAfter), with the digest pki_key_sign_x509 uses for
 * the key.  CertIDs with SHA-1 and SHA-256 hashes are matched
 * against the CAs of the configuration; a serial is looked up in the
 * Redis record (as pki_record_get reads it) of every CA the CertID names
 * (several when a CA was re-certified with the same subject and key), the
 * records of all the CertIDs in one round trip: revoked (time,
 * reason) if any record says so, good if one does, otherwise unknown (or
 * the RFC 6960 section 2.2 "revoked, certificateHold, 1970-01-01" form
 * with unknown_revoked).  A serial is never good unless a record of a CA
 * it names says so, and a record counts only when that CA issued its
 * certificate (issuer name and key identifier, or the signature): one
 * that another CA, or the CA's former key, issued under the same name
 * counts as none (logged in res.log).  An issuer none of the CAs matches
 * makes the whole response "unauthorized" (so do CertIDs of two
 * different CAs in one request: one signer per response); Redis
 * unreachable gives "tryLater"; garbage, trailing bytes, more than
 * PKI_OCSP_MAX_IDS CertIDs, more than PKI_OCSP_MAX_EXTS extensions in
 * the requestExtensions or in one Request's singleRequestExtensions, a
 * nonce empty or longer than 128 octets (RFC 9654) or a critical
 * extension other than the nonce give
 * "malformedRequest" (pki_ocsp_cache_key gives no key for them).  The
 * nonce is echoed.  A request signature is not verified (RFC 6960 4.1.2
 * lets a responder ignore it): only its shape is checked, its
 * certificates are never decoded, and the answer is the one of the
 * CertIDs; nor is the requestorName, which nothing uses.  Requests are
 * DER (definite lengths).
 */

#define PKI_OCSP_MAX_IDS    100
#define PKI_OCSP_MAX_EXTS   16      /* RFC 6960 defines eight */
#define PKI_OCSP_MAX_BODY   65536

/* A delegated responder (RFC 6960 4.2.2.2) for one CA: a certificate the
 * CA issued with extendedKeyUsage id-kp-OCSPSigning (and, by convention,
 * id-pkix-ocsp-nocheck), and its key (file or PKCS#11, open).  Responses
 * for that CA are then signed with this key, name the responder's key hash
 * and include the responder certificate. */
typedef struct {
    pki_ca_t      *ca;
    X509          *cert;
    pki_key_t     *key;
} pki_ocsp_signer_t;

/* PKI_OK if s->ca issued s->cert, s->cert has id-kp-OCSPSigning, and
 * s->key is its key; PKI_MALFORMED with the reason otherwise. */
PKI_API pki_status_t pki_ocsp_signer_check(const pki_ocsp_signer_t *s,
    pki_result_t *res);

typedef struct {
    pki_ca_t     **cas;              /* the CAs answered for            */
    size_t         ncas;
    pki_redis_t   *redis;
    int            unknown_revoked;  /* 1: RFC 6960 2.2 form for unknown */
    long           next_update;      /* seconds; 0: no nextUpdate        */
    const pki_ocsp_signer_t  *signers;  /* delegated responders, or NULL:
                                           the CA key signs          */
    size_t         nsigners;
} pki_ocsp_conf_t;

typedef struct {
    const char           *method;        /* "GET" or "POST"              */
    const char           *content_type;  /* POST; NULL if absent         */
    const unsigned char  *body;          /* POST: DER; GET: the base64
                                            path segment, percent-decoded */
    size_t                body_len;
} pki_ocsp_req_t;

typedef struct {
    int             http_status;     /* 200 for every OCSP answer; 405
                                        for a bad method                 */
    const char     *content_type;    /* static string, or NULL           */
    unsigned char  *body;            /* malloc'd DER OCSPResponse        */
    size_t          body_len;
    int             ocsp_status;     /* OCSPResponseStatus (0 successful) */
    int             cacheable;       /* successful, no nonce: may be
                                        cached (HTTP GET headers)        */
    time_t          this_update;     /* = producedAt                     */
    time_t          next_update;     /* 0: none; a delegated responder's
                                        answer: no later than its
                                        notAfter                         */
    char            etag[41];        /* hex SHA-1 of body                */
    pki_result_t    res;             /* what happened, for the log       */
} pki_ocsp_resp_t;

/* Handles one request.  Never fails to fill resp.  Thread safe. */
PKI_API void pki_ocsp_handle(const pki_ocsp_conf_t *conf,
    const pki_ocsp_req_t *req, pki_ocsp_resp_t *resp);
PKI_API void pki_ocsp_resp_free(pki_ocsp_resp_t *resp);

/* Response cache key (added for the nginx module's shared-memory cache):
 * SHA-256 over salt and the DER of each CertID of the request, so that the
 * POST and the GET form of a request (or two encodings differing only in
 * other fields) give the same key.  PKI_OK only when the request parses
 * (same rules as pki_ocsp_handle: method, content type, size, base64 for
 * GET, 1..PKI_OCSP_MAX_IDS CertIDs) and carries no nonce: only then may a
 * cached response answer it.  Otherwise PKI_MALFORMED or PKI_UNSUPPORTED
 * (nonce); the caller then calls pki_ocsp_handle.  res may be NULL.
 * Thread safe; no Redis, no signature. */
#define PKI_OCSP_KEY_LEN    32
PKI_API pki_status_t pki_ocsp_cache_key(const pki_ocsp_req_t *req,
    const unsigned char *salt, size_t salt_len,
    unsigned char key[PKI_OCSP_KEY_LEN], pki_result_t *res);

/* 1 when pki_ocsp_handle() would sign the answer to req with a key whose
 * vault is hung (pki_key_hung()): the CA key, or the key of its delegated
 * responder valid now, of every CA of conf a CertID of req names.  0 when
 * no key of conf is hung (without parsing req: the usual case costs a
 * few atomic reads), and for a request answered unsigned (it does not
 * parse, or names none of conf's CAs).  No Redis, no token call: an event
 * loop asks it before it posts req to a thread pool, and answers tryLater
 * at once when it is 1. */
PKI_API int pki_ocsp_hung(const pki_ocsp_conf_t *conf,
    const pki_ocsp_req_t *req);

/* ---- CRLs (RFC 5280 v2) ------------------------------------------------------
 *
 * A full CRL of the CA: version 2, issuer = the CA's subject, thisUpdate =
 * now, nextUpdate = now + next_update_secs (1 s .. 366 days), cRLNumber,
 * authorityKeyIdentifier (the CA's subjectKeyIdentifier, else the SHA-1 of
 * its public key), one entry per serial of the revoked hash with its
 * revocationDate, reasonCode (omitted for 0, unspecified) and
 * invalidityDate (when set); certificateHold entries carry reason 6.  No
 * revokedCertificates field when nothing is revoked.  Entries are sorted by
 * serial.  An unparsable serial in the store is skipped, a bad reason or
 * time keeps the entry without it; either is noted in res->log.  Signed
 * with the CA key (signature verified).  *der is malloc'd; caller frees.
 * Blocking (Redis, key): run it off the event loop.
 */

typedef struct {
    const char  *serial;           /* hex, any case, leading zeros ok */
    int          reason;
    time_t       revoked_at;
    time_t       invalidity_date;  /* 0: none */
} pki_crl_entry_t;

/* Reads the plans due (pki_record_plans_due: a due plan is a revocation
 * even before worker 0 carries it out), then the revoked hash
 * (pki_record_revoked_each; a serial in both is listed once, as the hash
 * has it), then takes the next CRL number (pki_record_next_crlnumber),
 * then signs.  nextUpdate is next_update_secs away, or the earliest
 * planned revocation still to come when that is sooner: no relying party
 * keeps the CRL past the time a certificate it calls good is revoked. */
PKI_API pki_status_t pki_crl_build(pki_ca_t *ca, pki_redis_t *r,
    long next_update_secs, unsigned char **der, size_t *len,
    pki_result_t *res);
/* The same from an in-memory list, CRL number and time (now 0: the clock);
 * no Redis. */
PKI_API pki_status_t pki_crl_build_list(pki_ca_t *ca,
    const pki_crl_entry_t *entries, size_t n, long long number, time_t now,
    long next_update_secs, unsigned char **der, size_t *len,
    pki_result_t *res);

/* The CRL of a CA as the fleet shares it in Redis:
 *   <ns>{ca:<CA>}:crl:<N>    string, the DER of CRL number N (plain
 *                            SET, read in GETRANGE chunks)
 *   <ns>{ca:<CA>}:crl_meta   string "REVGEN NEXTUPDATE NUMBER THISUPDATE"
 *   <ns>{ca:<CA>}:crl_lock   SET NX PX 10000: the one builder
 * REVGEN is the revgen read before the revoked hash was. */
typedef struct {
    unsigned char  *der;           /* malloc'd; NULL: unchanged (number ==
                                      have_number) */
    size_t          len;
    long long       revgen;
    long long       group;         /* the sum of the revgens of the CAs
                                      with this one's subject and key
                                      (pki_ca_link_same) it was built
                                      from, 0: none; <ns>{ca:<CA>}:
                                      crl_group */
    long long       number;
    time_t          this_update;
    time_t          next_update;
    time_t          planned;       /* pki_crl_store_read: the earliest
                                      planned revocation after
                                      this_update (0: none) */
    int             rebuild_failed;  /* pki_crl_current: due for a
                                        rebuild that failed; the stored
                                        CRL, still valid (res->log) */
} pki_crl_info_t;

/* Redis only: in one step the current revgen, the stored meta, the
 * earliest planned revocation after its thisUpdate and (when the stored
 * number differs from have_number, and have_number is not negative: the
 * meta alone) the stored DER.  No CRL stored:
 * out->number 0.  *revgen receives the current revgen. */
PKI_API pki_status_t pki_crl_store_read(pki_redis_t *r, const char *ca,
    long long have_number, long long *revgen, pki_crl_info_t *out,
    pki_result_t *res);
/* Stores a CRL (*stored 1) while crl_lock holds token, unless a higher
 * number or a newer revgen is stored already (*stored 0); a lock that is
 * no longer token's (expired, or another builder's): *stored -1. */
PKI_API pki_status_t pki_crl_store_put(pki_redis_t *r, const char *ca,
    const pki_crl_info_t *crl, const char *token, int *stored,
    pki_result_t *res);
/* SET crl_lock token NX PX ttl_ms; *won 1 when taken.  token: up to 63
 * characters. */
PKI_API pki_status_t pki_crl_lock(pki_redis_t *r, const char *ca,
    const char *token, long ttl_ms, int *won, pki_result_t *res);
/* PEXPIRE crl_lock ttl_ms if it still holds token (*held 1); *held 0
 * when it does not (expired, or another builder's): the build is no
 * longer this caller's to store. */
PKI_API pki_status_t pki_crl_lock_renew(pki_redis_t *r, const char *ca,
    const char *token, long ttl_ms, int *held, pki_result_t *res);
/* Deletes crl_lock if it still holds token. */
PKI_API pki_status_t pki_crl_unlock(pki_redis_t *r, const char *ca,
    const char *token, pki_result_t *res);

/* The current CRL, built at most once across the fleet per change: the
 * stored one when its revgen is the current one, no plan falls due before
 * its nextUpdate (but the one it was cut to) and its nextUpdate is more
 * than a quarter of its lifetime away (a CRL cut to a plan: until that
 * plan is due); else whoever wins crl_lock
 * builds (pki_crl_build) and stores it, the others return the stored one
 * while it is still valid or wait for the builder (up to about 3 s).  The
 * builder renews the lock as its build goes on, however long it takes; a
 * build that finds the lock no longer its own stops there, as one that
 * finds it so when it stores (the stored CRL is the answer).  A
 * build that fails (token down) returns the stored one too while it is
 * valid, with out->rebuild_failed set and res->log saying why.
 * have_number: the number of the caller's copy (0: none); when the
 * current CRL has that number out->der is NULL.  Blocking. */
PKI_API pki_status_t pki_crl_current(pki_ca_t *ca, pki_redis_t *r,
    long next_update_secs, long long have_number, pki_crl_info_t *out,
    pki_result_t *res);
/* For the unit tests: crl_lock's TTL in ms (0: the default, 10 s), so
 * that a build outlives it in a short test.  Set while no build runs. */
PKI_API void pki_crl_set_lock_ttl(long ms);

/* A local copy of a CA's current CRL, for a process that starts while Redis
 * is down: dir/<CA>.crl, written whole (temporary file, fsync, rename).
 * Blocking (disk). */
PKI_API pki_status_t pki_crl_file_save(const pki_ca_t *ca, const char *dir,
    const pki_crl_info_t *crl, pki_result_t *res);
/* Reads the copy back when this CA's current certificate and key signed it
 * and it has not expired (out->der malloc'd, number and dates filled;
 * revgen 0).  PKI_NOT_FOUND: no copy, or an expired one. */
PKI_API pki_status_t pki_crl_file_load(const pki_ca_t *ca, const char *dir,
    pki_crl_info_t *out, pki_result_t *res);

/* ---- admin API (revocation; JSON) ------------------------------------------
 *
 * A stateless engine like pki_est_handle.  Paths are relative to the admin
 * root: POST "revoke" {"serial", "reason" (RFC 5280 name, default
 * unspecified), "invalidity_date" (RFC 3339, optional), "ca" (optional:
 * default all CAs are searched)} -> 200 and the updated record;
 * GET "certificates/<serial>" [?ca=] -> the record (with "der", base64);
 * GET "certificates" ?status=good|revoked|hold &subject= (substring, any
 * case) &expires_before= (RFC 3339) &ca= &cursor= &limit= (1..1000, 100)
 * -> {"certificates": [...], "next_cursor": "..." ("0": done)}.  A page is
 * limit serials of one CA's expiry index (pki_record_list), filtered
 * afterwards: it may hold fewer records than the limit (even none) before
 * the end; an index page that yields no record is passed over, up to 10
 * index pages a request.  Errors: {"error": "..."} with 400 (bad JSON,
 * reason, date, serial, cursor), 403 (no identity), 404, 405, 409 (revoked
 * certificate, only a hold may change), 413 (body over max_body), 503.
 * Blocking (Redis): run it off the event loop.  Thread safe.
 */

typedef struct {
    pki_ca_t     **cas;        /* every CA the API manages               */
    size_t         ncas;
    pki_redis_t   *redis;
    size_t         max_body;   /* default 16384                          */
    pki_redis_t  **acme_state; /* every acme_redis store (their copies of
                                  the ACME accounts), or NULL            */
    size_t         nacme_state;
} pki_admin_conf_t;

typedef struct {
    const char           *method;
    const char           *path;       /* "revoke", "certificates/ABCD"  */
    size_t                path_len;
    const char           *query;      /* without "?", or NULL           */
    size_t                query_len;
    const unsigned char  *body;
    size_t                body_len;
    const char           *identity;   /* authenticated admin; NULL: 403 */
    const char           *client;     /* client address, or NULL        */
} pki_admin_req_t;

/* What an answer holding a secret made, so that it can be taken back
 * when the answer cannot be built or sent (pki_admin_withdraw): nobody
 * saw the secret, yet what it opens is live.  Nothing secret is kept
 * here: an EAB key by its kid, a one-time SCEP challenge by its id (the
 * start of the SHA-256 of the password, as in the log) and its Redis key
 * (the namespace, "scep:chal:" and that whole SHA-256). */
typedef enum {
    PKI_ADMIN_MADE_NONE = 0,
    PKI_ADMIN_MADE_EAB_KEY,           /* withdrawn: disabled            */
    PKI_ADMIN_MADE_SCEP_CHALLENGE     /* withdrawn: deleted             */
} pki_admin_made_kind_t;

#define PKI_ADMIN_MADE_ID   33        /* with the NUL                   */
#define PKI_ADMIN_MADE_KEY  256       /* with the NUL                   */

typedef struct {
    pki_admin_made_kind_t  kind;
    char                   id[PKI_ADMIN_MADE_ID];    /* kid, challenge id */
    char                   key[PKI_ADMIN_MADE_KEY];  /* challenge: Redis
                                                        key, else ""     */
} pki_admin_made_t;

typedef struct {
    int             http_status;
    const char     *content_type;     /* "application/json"              */
    unsigned char  *body;             /* malloc'd JSON                   */
    size_t          body_len;
    pki_result_t    res;              /* what happened, for the log; on
                                         success res.log names the change */
    const char     *allow;            /* 405: the methods the endpoint
                                         takes (static), else NULL       */
    int             secret;           /* the body holds a secret (a new
                                         EAB key or SCEP challenge): wipe
                                         every copy of it
                                         (pki_admin_resp_free wipes the
                                         body)                          */
    pki_admin_made_t  made;           /* with secret: what it made, for
                                         pki_admin_withdraw             */
} pki_admin_resp_t;

/* Handles one request.  Never fails to fill resp. */
PKI_API void pki_admin_handle(const pki_admin_conf_t *conf,
    const pki_admin_req_t *req, pki_admin_resp_t *resp);
/* Wipes the body, then frees it (resp->made stays). */
PKI_API void pki_admin_resp_free(pki_admin_resp_t *resp);
/* Takes back what a secret answer made (resp->made) when the answer could
 * not be built or sent: an EAB key is disabled, a one-time SCEP challenge
 * deleted; the transaction log gets the action's entry as req's identity
 * ("acme-eab-disable", "scep-challenge-withdraw").  Blocking (Redis, the
 * log): call from a thread-pool thread.  PKI_OK when it is withdrawn (a
 * challenge found already gone counts: nobody can use it); otherwise res
 * says why.  An entry the log could not take is said in res->log, the
 * withdrawal done all the same (it only takes trust away). */
PKI_API pki_status_t pki_admin_withdraw(const pki_admin_conf_t *conf,
    const pki_admin_req_t *req, const pki_admin_resp_t *resp,
    pki_result_t *res);


/* ---- ACME challenge validation (core/acme_validate.c) ------------------- */

/* Outbound checks of RFC 8555 section 8 and RFC 8737.  Blocking: call from
 * a thread-pool thread, never from an event loop.  Every step is bounded in
 * time (timeout_ms for the whole validation) and in size. */

typedef enum {
    PKI_ACME_HTTP01 = 0,
    PKI_ACME_DNS01,
    PKI_ACME_TLSALPN01
} pki_acme_chall_t;

#define PKI_ACME_VALIDATE_TIMEOUT  10000   /* ms, when timeout_ms is 0 */

typedef struct {
    unsigned        http_port;        /* 80 unless a lab overrides it       */
    unsigned        tls_port;         /* 443 unless a lab overrides it      */
    const char     *resolver;         /* "ip[:port]" for DNS queries (A,
                                         AAAA, TXT); NULL: /etc/resolv.conf */
    const char     *resolve_to;       /* lab: every name resolves to this
                                         IP literal (no DNS for A/AAAA)    */
    int             allow_private;    /* 1: loopback/private/link-local
                                         targets allowed (labs, tests)     */
    unsigned        timeout_ms;       /* whole validation; 0: default       */
    unsigned        max_redirects;    /* http-01; default 10                */
    int             caa;              /* 1: check CAA (pki_acme_caa_check)  */
    const char *const *caa_ids;       /* our issuer domain names, NULL
                                         ended (acme_caa_identities)       */
    const char     *resolv_conf;      /* tests: read instead of
                                         /etc/resolv.conf when resolver is
                                         unset; its nameservers may carry
                                         a port (ip:port, [v6]:port)       */
} pki_acme_validate_conf_t;

/* Outcome: PKI_OK when the challenge is satisfied.  Otherwise a status and
 * problem_type, the RFC 8555 section 6.7 type name without the
 * "urn:ietf:params:acme:error:" prefix ("connection", "dns",
 * "incorrectResponse", "tls", "unauthorized", "rejectedIdentifier"), with
 * res->detail telling the client what was seen. */
typedef struct {
    pki_result_t    res;
    const char     *problem_type;     /* static string, NULL on success     */
} pki_acme_validate_out_t;

/* id_type "dns" or "ip" (RFC 8738); identifier without a "*." prefix (the
 * caller strips it for dns-01); key_authz is token "." base64url(thumbprint)
 * (http-01 and tls-alpn-01 compare it, dns-01 compares base64url(SHA-256 of
 * it) with the TXT records of _acme-challenge.<identifier>). */
PKI_API pki_status_t pki_acme_validate(const pki_acme_validate_conf_t *conf,
    pki_acme_chall_t type, const char *id_type, const char *identifier,
    const char *token, const char *key_authz, pki_acme_validate_out_t *out);

/* A process-wide stop flag (the server's "terminate now", e.g. nginx's
 * ngx_terminate), set once before any validation runs.  While it is
 * non-zero every wait of a validation or CAA lookup ends within
 * PKI_ACME_STOP_SLICE_MS, as a timeout, and pki_acme_validate_stopping()
 * says so: the caller then stores no result (the challenge stays
 * processing, and a poll restarts it later). */
#define PKI_ACME_STOP_SLICE_MS  100
PKI_API void pki_acme_validate_stop_on(const volatile sig_atomic_t *flag);
PKI_API int pki_acme_validate_stopping(void);

/* Outbound lookups that may hold threads of the shared pool at once in
 * this process: a server's validation jobs and finalize's CAA re-checks
 * draw from one budget (nginx: acme_validation_jobs per worker; default
 * PKI_ACME_OUTBOUND_DEFAULT), so that lookups a target or a name server
 * stalls never take every thread.  pki_acme_outbound_take() takes a slot
 * (1) or finds them all held (0); pki_acme_outbound_give() returns one.
 * Thread-safe.  pki_acme_handle() takes one for a CAA re-check and
 * answers 503 rateLimited with Retry-After, the order unchanged, when
 * none is free; the caller of pki_acme_job_run() holds one per job. */
#define PKI_ACME_OUTBOUND_DEFAULT  4
PKI_API void pki_acme_outbound_max(unsigned n);
PKI_API int pki_acme_outbound_take(void);
PKI_API void pki_acme_outbound_give(void);

/* The configuration's addresses, checked once at startup: NULL when they
 * parse (resolver "IP" or "IP:PORT", "[IPv6]:PORT"; resolve_to an IP
 * address) or are unset, else a static text saying which one does not. */
PKI_API const char *pki_acme_validate_conf_check(
    const pki_acme_validate_conf_t *conf);

/* CAA (RFC 8659) for a dns identifier (without "*."; wildcard 1 for a
 * wildcard name), with RFC 8657's accounturi (account_uri: the account's
 * URL) and validationmethods (method: "http-01", ...).  PKI_OK when the
 * records let one of conf->caa_ids issue, or there are none; else
 * problem_type "caa" (PKI_FORBIDDEN) or "dns" (the lookup failed). */
PKI_API pki_status_t pki_acme_caa_check(const pki_acme_validate_conf_t *conf,
    const char *identifier, int wildcard, const char *account_uri,
    const char *method, pki_acme_validate_out_t *out);


/* ---- events: transaction log and metrics (core/audit.c) -------------------
 *
 * ONE hook for every outcome worth an audit record or a counter.  The core
 * calls it itself from the common paths: pki_issue (every outcome once the
 * CA is reached), pki_record_revoke (every revocation change), the Redis
 * command wrapper and the key's sign path (latency, errors: counted only).
 * So every protocol that issues through pki_issue is logged and counted
 * with no code of its own.  Server glue adds the requests it refused before
 * the core was reached (PKI_EV_REQUEST) and admin actions.
 *
 * The audited events go to the default transaction log (pki_audit_open +
 * pki_audit_set_default), when there is one, then to the sink (the server's
 * metrics), when there is one.  Nothing secret may be put into an event:
 * the fields are identities, names, serials and public details.
 */

typedef enum {
    PKI_EV_ISSUE = 1,     /* pki_issue outcome                  (audited) */
    PKI_EV_REVOKE,        /* pki_record_revoke outcome          (audited) */
    PKI_EV_REQUEST,       /* refused request, admin action      (audited) */
    PKI_EV_SIGN,          /* one signature: seconds, status     (counted) */
    PKI_EV_REDIS          /* one Redis command: seconds, status (counted) */
} pki_event_type_t;

typedef struct {
    pki_event_type_t  type;
    pki_status_t      status;        /* PKI_OK or the failure             */
    const char       *protocol;      /* NULL: this thread's actor         */
    const char       *operation;     /* "enroll", "renew", "revoke", ...;
                                        PKI_EV_SIGN: "certificate", "crl",
                                        "other" (OCSP responses)        */
    const char       *ca;
    const char       *template_name;
    const char       *serial;
    const char       *subject;
    const char       *requester;     /* NULL: this thread's actor         */
    const char       *client;        /* NULL: this thread's actor         */
    const char       *reason;        /* public detail or revocation reason */
    double            seconds;       /* PKI_EV_SIGN, PKI_EV_REDIS; < 0:
                                        an error without a latency      */
    const char       *reason_label;  /* PKI_EV_REVOKE: the reason alone,
                                        when reason says more (a date):
                                        for labels, a bounded set; NULL:
                                        reason is one                   */
} pki_event_t;

/* The outcome class of a status, for labels: "success", "auth", "policy",
 * "malformed", "backend" (Redis, token, internal). */
PKI_API const char *pki_outcome_class(pki_status_t st);

/* The metrics sink.  Called from any thread (pool threads included): it
 * must be thread safe and must not block.  Set once at start. */
typedef void (*pki_event_sink_pt)(void *arg, const pki_event_t *ev);
PKI_API void pki_event_set_sink(pki_event_sink_pt sink, void *arg);

/* Who acts on this thread (thread-local; copied, truncated to 255 bytes;
 * NULLs clear).  pki_issue sets it from its pki_issue_ctx_t; an engine that
 * revokes sets it before calling pki_record_revoke.  operation: what the
 * next pki_issue is ("renew"; NULL: "issue"), reset by pki_issue. */
PKI_API void pki_event_set_actor(const char *protocol, const char *requester,
    const char *client);
PKI_API void pki_event_set_operation(const char *operation);

/* Appends to the default log (durable: fsync'd before it returns, with
 * group commit; otherwise the next commit carries it) and calls the sink.
 * PKI_UNAVAILABLE when the log cannot be written: pki_issue then fails
 * rather than hand out a certificate that is not in the log. */
PKI_API pki_status_t pki_event_emit(const pki_event_t *ev, int durable,
    pki_result_t *res);

/*
 * The transaction log: a directory with "audit.log" (the current file),
 * "audit-<FIRSTSEQ>.log" (rotated files, 12 digits), "audit.lock" and
 * "audit-key.pem" (the public checkpoint key).  One JSON object per line:
 *   {"seq":N,"time":"RFC 3339 UTC","type":"issue|revoke|request|checkpoint",
 *    ...fields...,"pid":P,"prev":"<hex SHA-256 of the previous line's
 *    hash>","hash":"<hex SHA-256 of this line up to ,\"hash\">"}
 * seq counts from 1 across rotated files; the first "prev" is 64 zeros.
 * Checkpoints (every checkpoint_every entries, at rotation and on
 * pki_audit_checkpoint) add "sig": base64 of the audit key's signature
 * over "nginx-pki audit checkpoint v2\n<seq>\n<time>\n<prev>\n" (logs
 * of older versions: "nginx-pki audit checkpoint\n<seq>\n<prev>\n",
 * whose time is not signed).  Many processes
 * and threads may append to one directory (flock + a mutex); rotation
 * renames audit.log when it would grow over max_size.
 */

typedef struct pki_audit_s  pki_audit_t;

typedef struct {
    const char  *dir;               /* must exist                        */
    size_t       max_size;          /* bytes per file; 0: 64 MiB         */
    pki_key_t   *key;               /* checkpoint key (open), or NULL    */
    unsigned     checkpoint_every;  /* entries; 0: 1000                  */
    int          no_fsync;          /* 1: never fsync (benchmarks only)  */
    unsigned     orphan_ms;         /* carried entries: 0: 30000         */
    size_t       max_backlog;       /* bytes held unwritten; 0: 64 MiB   */
} pki_audit_conf_t;

PKI_API pki_audit_t *pki_audit_open(const pki_audit_conf_t *conf,
    pki_result_t *res);
PKI_API void pki_audit_close(pki_audit_t *a);
/* pki_audit_close() that tells report(arg, lost, msg) what the file
 * never took (it failed to the end: ENOSPC, EIO) after a last try to
 * write and sync it: each entry that is nowhere else (a revocation, an
 * admin action, an issuance with carry=off) with lost 1, in a message
 * ending in its JSON text (time, fields, pid: no seq nor hash, the chain
 * goes on without it), for the operator to restore; the carried ones
 * (still in their Redis streams, for the janitor) counted in one message
 * with lost 0.  pki_audit_close() writes these messages to stderr. */
typedef void (*pki_audit_report_pt)(void *arg, int lost, const char *msg);
PKI_API void pki_audit_close_report(pki_audit_t *a,
    pki_audit_report_pt report, void *arg);
/* The log pki_event_emit writes to (NULL: none).  A log that opens late
 * (a retry) may be set while other threads emit: it is published whole
 * to them, so finish its setup (pki_audit_carry, the syncer,
 * pki_audit_set_deferred) first.  A log once set is not closed while
 * threads may still use it. */
PKI_API void pki_audit_set_default(pki_audit_t *a);
/* A log is configured (set once at start): while no default log is set
 * (it did not open), pki_event_emit refuses issuance and revocation events
 * with PKI_UNAVAILABLE and pki_issue refuses before it signs (fail
 * closed).  The sink still gets the events.  2: the same, but the first
 * open is under way in another thread: a refusal first waits for it a
 * short while (see core/audit.c). */
PKI_API void pki_audit_set_required(int on);
/* Entries that the syncer holds in memory because the file has not
 * taken them yet (not written) are capped at max_backlog bytes: from
 * there on, until the file takes them, issuance and revocation are
 * refused before anything is signed or changed (PKI_UNAVAILABLE: fail
 * closed) and the entries of failed ones are not queued; nothing queued
 * is dropped.  Entries written and waiting for their sync are not
 * counted: they are bounded apart, synced at once past max_backlog bytes
 * (and nothing more is written while that sync fails).  Fills the bytes
 * not written now, the cap, and the count of refusals since the log
 * opened; returns 1 while the cap refuses. */
PKI_API int pki_audit_backlog(pki_audit_t *a, size_t *bytes, size_t *max,
    unsigned long long *refused);
/* For a configuration test: DIR/audit.id, if there is one, is well formed
 * (the log does not open otherwise). */
PKI_API pki_status_t pki_audit_check_dir(const char *dir, pki_result_t *res);
PKI_API pki_status_t pki_audit_append(pki_audit_t *a, const pki_event_t *ev,
    int durable, pki_result_t *res);
/* Writes a signed checkpoint now if entries were added since the last. */
PKI_API pki_status_t pki_audit_checkpoint(pki_audit_t *a, pki_result_t *res);

/* Deferred durability, for a server that must not hold a thread while the
 * log syncs.  With pki_audit_set_deferred(1), the durable appends of
 * pki_event_emit (issuance, revocation) are written without waiting and
 * leave a ticket in the calling thread: pki_audit_take_ticket() returns it
 * (0: nothing written) and clears it.  The server must not answer until
 * pki_audit_synced(a) >= ticket; pki_audit_sync() (blocking, one
 * fdatasync for everything written so far) gets it there.  Tickets count
 * this process's writes; pki_audit_written() is the current count. */
PKI_API void pki_audit_set_deferred(int on);
PKI_API unsigned long long pki_audit_take_ticket(void);
PKI_API unsigned long long pki_audit_written(pki_audit_t *a);
PKI_API unsigned long long pki_audit_synced(pki_audit_t *a);
PKI_API pki_status_t pki_audit_sync(pki_audit_t *a, pki_result_t *res);
/* (a NULL: the default log) */

typedef struct {
    unsigned long long  entries;       /* lines checked                  */
    unsigned long long  checkpoints;   /* with a good signature          */
    unsigned long long  unsigned_tail; /* entries after the last one     */
    unsigned long long  last_seq;
    unsigned long long  partial;       /* bytes of a torn last line of
                                        * audit.log, not synced: not
                                        * checked (the next writer cuts
                                        * it off), not a failure         */
    char                bad[512];      /* the first bad entry, or ""     */
} pki_audit_report_t;

/* Checks every file of dir in order: each line's hash, the chain of prev,
 * seq without gaps, checkpoint signatures with pub (NULL: the directory's
 * audit-key.pem; none there: signatures are not checked).  PKI_OK when
 * intact; PKI_MALFORMED with rep->bad naming file, line and seq of the
 * first bad entry; PKI_UNAVAILABLE with rep->bad naming a file that
 * cannot be opened or read (an I/O problem, not tampering); PKI_NOT_FOUND
 * for a directory that cannot be opened or holds no log. */
PKI_API pki_status_t pki_audit_verify(const char *dir, EVP_PKEY *pub,
    pki_audit_report_t *rep, pki_result_t *res);

/* The same; with pub given, the entries after the last checkpoint it
 * signed (all of them if none) must be at most max_unsigned and, after a
 * checkpoint, run at most max_unsigned_seconds past it (each 0: not
 * bounded): a log cut back to an earlier checkpoint, audit.head replaced
 * by that one and entries added, fails unless the added entries stay
 * within both.  A healthy log's tail is up to workers x checkpoint_every
 * entries, and a quiet CA writes no checkpoint until its next entry. */
typedef struct {
    unsigned long long  max_unsigned;          /* 0: no bound            */
    unsigned long long  max_unsigned_seconds;  /* 0: no bound            */
    /* how long to wait for audit.lock while a writer holds it (a sync or
     * a checkpoint signature stuck in a hung token): PKI_UNAVAILABLE
     * after it; 0: PKI_AUDIT_LOCK_WAIT_MS */
    unsigned long long  lock_wait_ms;
    /* read without audit.lock (a rotation meanwhile may show as a gap);
     * otherwise an audit.lock that is there but cannot be opened or
     * locked (no read access) is PKI_UNAVAILABLE, not read around */
    int                 no_lock;
} pki_audit_limits_t;

#define PKI_AUDIT_LOCK_WAIT_MS  30000

PKI_API pki_status_t pki_audit_verify_limits(const char *dir, EVP_PKEY *pub,
    const pki_audit_limits_t *lim, pki_audit_report_t *rep,
    pki_result_t *res);

/* The same with up to PKI_AUDIT_MAX_PUBKEYS keys (npubs 0: as pub NULL):
 * the checkpoint key replaced, a log holds checkpoints of each; every
 * checkpoint is checked with the given key of the id it names ("key"), and
 * one that names none of them fails ("signed by a key not given (ID)"),
 * as a bad signature does.  The bounds apply after the last checkpoint
 * signed by any of them. */
#define PKI_AUDIT_MAX_PUBKEYS  8

PKI_API pki_status_t pki_audit_verify_keys(const char *dir,
    EVP_PKEY *const *pubs, size_t npubs, const pki_audit_limits_t *lim,
    pki_audit_report_t *rep, pki_result_t *res);

/* ---- metrics history in Redis (core/metrics.c) -----------------------------
 *
 *   <ns>{metrics}:m:<UNIX MINUTE>  hash FIELD -> count, TTL 48 h
 *   <ns>{metrics}:h:<UNIX HOUR>    hash FIELD -> count, TTL 90 days
 *   <ns>{metrics}:f:<SOURCE>       the sequence number of the sender's
 *                                  last batch added, TTL 15 min
 * Every host of a fleet adds its own deltas, so the buckets hold the
 * fleet's totals.  Fields are short names such as "req:est:success" or
 * "iss:CA:success".  All three calls are blocking (thread pool).
 */

/* One sender's batch of deltas.  source names the sender, unique in the
 * fleet for its lifetime (a worker: random bytes in hex), up to 64 of
 * [0-9A-Za-z_.-]; seq (1, 2, ...) grows with each new batch of the
 * source, and a sender has at most one batch in flight. */
typedef struct {
    const char                *source;
    unsigned long long         seq;
    time_t                     now;       /* picks the buckets */
    const char *const         *fields;
    const long long           *deltas;
    size_t                     n;         /* up to 256 */
} pki_metrics_batch_t;

/* Adds deltas[i] to fields[i] of the minute and hour buckets of b->now:
 * one round trip, once per source and seq.  PKI_OK when added, now or
 * before (the same batch sent again adds nothing).  On failure *unknown
 * (if not NULL) tells whether Redis may have added it: 1 when it was sent
 * and no answer came (a timeout, a connection lost), and then the sender
 * sends the same batch again (same source, seq, now and deltas) within 5
 * minutes of its first sending, holding any new deltas back meanwhile; 0
 * when it surely was not added (no connection, an error reply), and then
 * its deltas may go into the sender's next batch. */
PKI_API pki_status_t pki_metrics_flush(pki_redis_t *r,
    const pki_metrics_batch_t *b, int *unknown, pki_result_t *res);

/* pki_metrics_flush() on a connection of its own whose connect and each
 * command (AUTH, SELECT, the script) wait at most timeout_ms, whatever the
 * store's timeout: a worker's last flush at exit, which nginx must not
 * wait for long.  The same outcomes; blocking.  A store named by a host
 * name (not pki_redis_literal()) is not looked up, its wait unbounded:
 * PKI_UNAVAILABLE, nothing sent (*unknown 0). */
PKI_API pki_status_t pki_metrics_flush_within(pki_redis_t *r,
    const pki_metrics_batch_t *b, int timeout_ms, int *unknown,
    pki_result_t *res);

/* The last count buckets up to now (minute: up to 2880; hourly: up to
 * 2160) as malloc'd JSON: {"step":60|3600,"from":T,"to":T,
 * "buckets":[{"t":T,"v":{"FIELD":N,...}},...]} (empty buckets left out).
 * Read 60 buckets per Redis script: no single command keeps Redis long. */
PKI_API pki_status_t pki_metrics_history(pki_redis_t *r, int hourly,
    time_t now, unsigned count, char **json, pki_result_t *res);

/* Certificates of a CA at now: out[0] unexpired, out[1] of those revoked
 * or on hold, out[2] of the others (neither revoked nor on hold) expiring
 * within 7 days, out[3] within 30 days.  No
 * Redis command does work in proportion to the CA's certificates: ZCOUNTs,
 * then the revoked hash a page at a time (HSCAN, ZMSCORE of the page in the
 * expiry index; Redis 6.2 or later).
 *
 * With ttl_ms > 0 the fleet counts once per ttl_ms: the caller that finds
 * no <ns>{ca:CA}:counts takes it as a lease (PX ttl_ms), counts and stores
 * "U R E7 E30" there; the others answer that (counted at the counter's
 * now), or PKI_CONFLICT while it is being counted.  A key of another type
 * or content: counted, not cached.  ttl_ms 0: counted, the key unused. */
PKI_API pki_status_t pki_metrics_cert_counts(pki_redis_t *r, const char *ca,
    time_t now, unsigned long ttl_ms, long long out[4], pki_result_t *res);

/* ---- key decryption (added for SCEP) ----------------------------------------
 *
 * RSA PKCS#1 v1.5 decryption of in with key k (file or PKCS#11; the private
 * key never leaves the token).  *out is malloc'd (caller cleanses and
 * frees).  PKI_MALFORMED for a ciphertext that does not decrypt (no vault
 * reopen: hostile input must not churn the token), PKI_UNSUPPORTED for a
 * non-RSA key, PKI_UNAVAILABLE when the token stays unusable after bounded
 * reopens.  Thread safe.  Callers that answer differently on a bad padding
 * give an oracle away: SCEP substitutes a random content key instead.
 */
PKI_API pki_status_t pki_key_decrypt(pki_key_t *k, const unsigned char *in,
    size_t inlen, unsigned char **out, size_t *outlen, pki_result_t *res);

/* The same with RSAES-OAEP (RFC 8017 7.1, empty label): md the OAEP hash,
 * mgf1 MGF1's hash (both non-NULL; md NULL is PKCS#1 v1.5).  A bad OAEP
 * block is PKI_MALFORMED, as a bad v1.5 padding. */
PKI_API pki_status_t pki_key_decrypt_oaep(pki_key_t *k, const EVP_MD *md,
    const EVP_MD *mgf1, const unsigned char *in, size_t inlen,
    unsigned char **out, size_t *outlen, pki_result_t *res);


/* ---- SCEP (RFC 8894) ----------------------------------------------------------
 *
 * A stateless engine like pki_est_handle: GetCACaps, GetCACert,
 * GetNextCACert and PKIOperation (PKCSReq, RenewalReq, CertPoll, GetCert,
 * GetCRL; any other messageType is refused with failInfo badRequest).  The
 * recipient of requests and the signer of CertReps is the RA (ra_cert +
 * ra_key, RSA) or, without one, the CA itself (then its key must be RSA).
 *
 * Redis layout (besides the certificate records of pki_issue):
 *   <ns>scep:chal:<SHA256HEX(challenge)>  string "TEMPLATE\nCN\nSAN" with
 *                                         the TTL: a one-time challenge,
 *                                         consumed with GETDEL
 *   <ns>scep:pend:<SHA256HEX(transactionID)>  hash: a request waiting for
 *                                         manual approval (status pending |
 *                                         approved | rejected | issued,
 *                                         csr, key, ca, template, serial,
 *                                         subject, sans, client, created,
 *                                         expires), with a TTL
 *   <ns>scep:seen:<SHA256HEX(signer SPKI || signed attributes DER)>
 *                                         string "1": a PKCSReq or
 *                                         RenewalReq taken (SET NX), so a
 *                                         copy of it is refused; TTL: while
 *                                         its signingTime passes + 300 s,
 *                                         without one 2 * skew + 300 s
 *   <ns>scep:pending                      zset (scores 0) of
 *                                         "<expires 12 digits>:<SHA256HEX
 *                                         (transactionID)>": the pending
 *                                         requests, for the admin listing
 */

#define PKI_SCEP_MAX_BODY      (256 * 1024)
#define PKI_SCEP_CHALLENGE_MAX 255

typedef enum {
    PKI_SCEP_UNKNOWN = 0,
    PKI_SCEP_GETCACAPS,
    PKI_SCEP_GETCACERT,
    PKI_SCEP_GETNEXTCACERT,
    PKI_SCEP_PKIOPERATION
} pki_scep_op_t;

typedef struct {
    pki_ca_t              *ca;
    pki_template_t        *tmpl;
    pki_redis_t           *redis;
    X509                  *ra_cert;        /* NULL: the CA is the RA     */
    pki_key_t             *ra_key;
    STACK_OF(X509)        *ra_chain;       /* extra certs for GetCACert  */
    int                    ca_chain;       /* no RA: GetCACert answers the
                                              CA and its chain too      */
    X509                  *next_ca;        /* GetNextCACert, or NULL     */
    const unsigned char   *challenge;      /* static challenge, or NULL  */
    size_t                 challenge_len;
    int                    dynamic;        /* one-time challenges        */
    int                    manual;         /* PKCSReq waits for approval */
    int                    tid_any;        /* 1: transactionID not bound
                                              to the key                 */
    int                    accept_des;     /* 1: requests in single DES
                                              are decrypted (legacy)     */
    size_t                 max_body;       /* default PKI_SCEP_MAX_BODY  */
    long                   pending_ttl;    /* seconds, default 7 days    */
    long                   pending_max;    /* requests waiting for
                                              approval; 0: no limit     */
    long                   crl_next_update;  /* GetCRL, default 1 day    */
    long                   max_skew;       /* signingTime window, seconds;
                                              0: not checked             */
    STACK_OF(X509)        *next_chain;     /* GetNextCACert: more certs
                                              of the rollover (next RA,
                                              intermediates), or NULL.
                                              GetNextCACert is signed by
                                              the current CA key         */
} pki_scep_conf_t;

typedef struct {
    pki_scep_op_t          op;
    const char            *method;         /* "GET" or "POST"            */
    const unsigned char   *body;           /* POST: DER; GET: the
                                              percent-decoded base64
                                              message parameter          */
    size_t                 body_len;
    const char            *client;         /* client address, or NULL    */
} pki_scep_req_t;

typedef struct {
    int                    http_status;
    const char            *content_type;   /* static string, or NULL     */
    unsigned char         *body;           /* malloc'd                   */
    size_t                 body_len;
    int                    retry_after;
    int                    message_type;   /* of the request, -1: none   */
    int                    pki_status;     /* of the CertRep, -1: none   */
    int                    fail_info;      /* -1: none                   */
    char                   tid[72];        /* transactionID (printable)  */
    pki_result_t           res;            /* what happened, for the log */
} pki_scep_resp_t;

/* "GetCACaps" ... "PKIOperation" (case-sensitive, as RFC 8894 spells). */
PKI_API pki_scep_op_t pki_scep_op(const char *name, size_t len);
/* 1 if the operation needs Redis or a key (run it off the event loop). */
PKI_API int pki_scep_op_blocking(pki_scep_op_t op);
/* Configuration check: RA certificate and key match, the key is RSA, the
 * RA certificate chains to the CA.  Creates the SCEP OIDs; call it once at
 * configuration time, before any thread runs pki_scep_handle. */
PKI_API pki_status_t pki_scep_conf_check(const pki_scep_conf_t *conf,
    pki_result_t *res);
/* Handles one request.  Never fails to fill resp.  Thread safe. */
PKI_API void pki_scep_handle(const pki_scep_conf_t *conf,
    const pki_scep_req_t *req, pki_scep_resp_t *resp);
PKI_API void pki_scep_resp_free(pki_scep_resp_t *resp);

/* ---- JWS (RFC 7515 as profiled by RFC 8555 section 6.2; core/jws.c) -----
 *
 * Flattened JSON serialization only, exactly one signature, protected
 * header only.  Algorithms: ES256, ES384, ES512, RS256, PS256, EdDSA
 * (Ed25519, Ed448).  "crit" and "b64" are refused.  Used by the ACME
 * engine; exported for the unit tests.
 */

#define PKI_JWS_ALGS  "ES256 ES384 ES512 RS256 PS256 EdDSA"
#define PKI_JWK_THUMB_LEN  44     /* base64url SHA-256 + NUL */

typedef struct {
    char            alg[8];
    char           *kid;          /* malloc'd, or NULL                 */
    char           *nonce;        /* malloc'd, or NULL                 */
    char           *url;          /* malloc'd, or NULL                 */
    EVP_PKEY       *jwk;          /* from the "jwk" header, or NULL    */
    char           *jwk_json;     /* canonical RFC 7638 form of jwk    */
    char            thumb[PKI_JWK_THUMB_LEN];  /* of jwk                */
    unsigned char  *payload;      /* decoded, NUL-terminated           */
    size_t          payload_len;  /* 0: POST-as-GET                    */
    char           *signing_input;  /* protected "." payload (b64url)  */
    unsigned char  *sig;
    size_t          sig_len;
    const char     *problem;      /* on failure: "malformed" or
                                     "badSignatureAlgorithm"           */
} pki_jws_t;

/* base64url without padding.  Decoding refuses padding, whitespace and
 * anything outside the alphabet. */
PKI_API char *pki_b64url_encode(const unsigned char *in, size_t len);
PKI_API int pki_b64url_decode(const char *in, size_t len,
    unsigned char **out, size_t *outlen);

/* Parses the JWS (no signature check).  PKI_MALFORMED (problem set). */
PKI_API pki_status_t pki_jws_parse(const unsigned char *body, size_t len,
    pki_jws_t *jws, pki_result_t *res);
/* Verifies the signature with key (the jwk header's or the account's):
 * the algorithm must fit the key (ES256 P-256, ..., RSA >= 2048 bits).
 * PKI_BAD_SIGNATURE or PKI_MALFORMED (problem set). */
PKI_API pki_status_t pki_jws_verify(pki_jws_t *jws, EVP_PKEY *key,
    pki_result_t *res);
PKI_API void pki_jws_clear(pki_jws_t *jws);

/* ES256 keys that verify often (an account signing most requests) get a
 * precomputed table per process (jws.c).  Counters since the last
 * pki_jws_hot_clear(), which also drops every table (tests, leak
 * checks). */
typedef struct {
    unsigned long long  fast;       /* verifications with a table */
    unsigned long long  built;      /* tables built */
    unsigned long long  refused;    /* tables that failed their check */
} pki_jws_hot_stats_t;

PKI_API void pki_jws_hot_stats(pki_jws_hot_stats_t *st);
PKI_API void pki_jws_hot_clear(void);

/* JWK (RFC 7517) text -> public key.  EC P-256/384/521, RSA >= 2048,
 * OKP Ed25519/Ed448.  Private members ("d", ...) are refused. */
PKI_API EVP_PKEY *pki_jwk_parse(const char *json, size_t len,
    pki_result_t *res);
/* Canonical RFC 7638 JSON (malloc'd) and its SHA-256 thumbprint. */
PKI_API char *pki_jwk_json(EVP_PKEY *pk);
PKI_API int pki_jwk_thumbprint(EVP_PKEY *pk, char out[PKI_JWK_THUMB_LEN]);


/* ---- ACME server (RFC 8555, RFC 8737, RFC 8738, RFC 9773; core/acme.c) ---
 *
 * A stateless engine over Redis, like pki_est_handle.  The glue passes the
 * base URL (scheme, host and location prefix, no trailing "/") and the path
 * below it; every URL the engine hands out is base + "/" + path.
 *
 * Redis layout (<ns> the pki_redis namespace):
 *   <ns>acme:noncekey                 the key nonces are made under
 *   <ns>acme:nonce:<NONCE>            the used mark of a spent nonce
 *                                     (SET NX, until the nonce expires)
 *   <ns>acme:jwk:<THUMBPRINT>         account id of the key
 *   <ns>acme:newacct:<HOUR>:<ADDR>    new accounts of an address (IPv6:
 *                                     its /64) in a clock hour (TTL)
 *   <ns>acme:eab:<KID>                hash: hmac, status, created, account
 *   <ns>acme:eabs                     set of EAB kids
 *   <ns>{acme:<ACCT>}:acct            JSON: the account (key, contact, ..)
 *   <ns>{acme:<ACCT>}:order:<ID>      JSON: an order (TTL); "profile"
 *                                     names its profile, absent: the
 *                                     default template
 *   <ns>{acme:<ACCT>}:orders          zset of order ids by creation time
 *   <ns>{acme:<ACCT>}:authz:<ID>      JSON: an authorization (TTL)
 *   <ns>{acme:<ACCT>}:valid:<T>:<V>   authz id reusable for identifier
 *   (nonces, orders, authorizations, "valid" and rate keys live in
 *   state_redis when it is set, under its own namespace)
 *   <ns>{acme:<ACCT>}:replaced:<CA>:<SERIAL>  RFC 9773: the id of the
 *                                     order that replaces the certificate
 *                                     ("!" before it and ":" tokens
 *                                     after it: being finalized, "=":
 *                                     issued; see core/acme.c)
 * Certificates are the CA's records (requester "acme:<ACCT>").
 */

/* ACME profiles (draft-ietf-acme-profiles): a name a client may put in
 * newOrder's "profile" to be issued with another template of the CA.  The
 * directory's meta.profiles lists them {name: description}; an order
 * keeps the name it was made with ("profile" in its JSON) and every
 * decision about it (names at newOrder, validity, finalize's issuance,
 * renewalInfo) uses that profile's template. */
#define PKI_ACME_MAX_PROFILES   8
#define PKI_ACME_REALM_LEN      24      /* 22 base64url characters + NUL */
#define PKI_ACME_PROFILE_LEN    32      /* [a-z0-9._-]{1,32} */

typedef struct {
    const char       *name;           /* NULL ends the array           */
    pki_template_t   *tmpl;           /* the CA must allow it          */
    const char       *description;    /* meta.profiles value, or NULL:
                                         the name                      */
} pki_acme_profile_t;

typedef struct {
    pki_ca_t         *ca;
    pki_template_t   *tmpl;           /* the default: an order without
                                         "profile" (and any order made
                                         before profiles existed)      */
    const pki_acme_profile_t  *profiles;  /* or NULL; ended by an entry
                                         whose name is NULL; at most
                                         PKI_ACME_MAX_PROFILES         */
    pki_redis_t      *redis;
    const char       *tos;            /* termsOfService URL, or NULL   */
    const char       *website;        /* or NULL                       */
    const char       *ari_explanation; /* RFC 9773 explanationURL of a
                                         window moved earlier, or NULL */
    const char      **caa;            /* caaIdentities, NULL ended     */
    int               eab_required;
    long              authz_reuse;    /* seconds; 0: no reuse          */
    long              nonce_ttl;      /* seconds; default 3600         */
    long              order_ttl;      /* seconds; default 86400        */
    size_t            max_body;       /* default 65536                 */
    pki_acme_validate_conf_t  validate;
    long              orders_per_hour;  /* per account; 0: no limit    */
    long              pending_authz_max;  /* pending authorizations per
                                             account; 0: no limit      */
    long              accounts_per_hour;  /* new accounts per client
                                             address (IPv6: /64); 0: no
                                             limit                     */
    /* acme2: the replay-safe state (nonces, orders, authorizations,
     * challenges) in a second store, e.g. a Redis with appendfsync
     * everysec; NULL: everything in redis.  Accounts, EAB keys, the
     * "replaced" marks and every certificate record stay in redis. */
    pki_redis_t      *state_redis;
    /* every state store of the server (each location's acme_redis), or
     * NULL: an account is the server's, not a location's, so its
     * deactivation (RFC 8555 7.3.6) cancels its open work and updates
     * its copy wherever it may have made orders, as the admin API's
     * revocation does (pki_acme_account_revoke) */
    pki_redis_t     **acme_state;
    size_t            nacme_state;
    /* the kind of policy orders and authorizations are made under (the
     * CA; EAB or not; lab settings or not: resolve_to, private targets,
     * other ports or resolver; CAA or not), set by pki_acme_realm(); "":
     * none.  Orders and authorizations keep it, and a location under
     * another kind treats them as absent: an authorization proven at a
     * lab location never serves the production one on the same Redis */
    char              realm[PKI_ACME_REALM_LEN];
    /* seconds an account's order list keeps an order's certificate past
     * the order, at least: the longest validity of any ACME location of
     * the server, whose orders share the list (0: this location's) */
    long              list_keep;
} pki_acme_conf_t;

/* Fills conf->realm from the fields it names (call once they are set). */
PKI_API void pki_acme_realm(pki_acme_conf_t *conf);

typedef struct {
    const char           *method;
    const char           *base_url;     /* "https://host:port/acme"     */
    const char           *path;         /* below base, without "/"      */
    const char           *content_type; /* NULL if absent               */
    const unsigned char  *body;
    size_t                body_len;
    const char           *client;       /* client address, or NULL      */
} pki_acme_req_t;

/* A challenge validation the glue runs after the response went out. */
typedef struct pki_acme_job_s  pki_acme_job_t;

/* Link headers of one answer; the most: a certificate's, rel="index" and
 * rel="alternate" to the default chain or up to 4 alternate chains */
#define PKI_ACME_MAX_LINKS  (2 + PKI_CA_MAX_ALT_CHAINS)

typedef struct {
    int              http_status;
    const char      *content_type;     /* static string, or NULL        */
    unsigned char   *body;             /* malloc'd, may be NULL         */
    size_t           body_len;
    char            *location;         /* malloc'd, or NULL             */
    char            *links[PKI_ACME_MAX_LINKS];  /* malloc'd Link values */
    char             nonce[32];        /* Replay-Nonce, "" for none     */
    int              retry_after;      /* seconds, 0 for none           */
    int              busy;             /* refused for load (a limit of
                                          this server, nothing failed):
                                          the log line is a warning     */
    int              no_store;         /* Cache-Control: no-store       */
    int              max_age;          /* > 0: cacheable, "public,
                                          max-age=N" instead of no-store */
    const char      *allow;            /* Allow of a 405 or OPTIONS,
                                          static, or NULL             */
    pki_acme_job_t  *job;              /* run pki_acme_job_run() in a
                                          pool thread, then free it     */
    pki_result_t     res;              /* what happened, for the log    */
    char             requester[80];    /* "acme:ID", the records'
                                          requester: the request was
                                          signed by valid account ID of
                                          this location, with a fresh
                                          nonce; "" for none (a bad
                                          signature or nonce, no such
                                          account, jwk-signed)          */
} pki_acme_resp_t;

/* Handles one request; blocking (Redis, key).  Never fails to fill resp. */
/* The first subject attribute other than CN that template t copies from
 * a request ("copy" or "required"), as the template names it, or NULL: an
 * ACME location's templates must copy none (no challenge validates them;
 * fixed values are the template's own). */
PKI_API const char *pki_acme_template_copies(const pki_template_t *t);

PKI_API void pki_acme_handle(const pki_acme_conf_t *conf,
    const pki_acme_req_t *req, pki_acme_resp_t *resp);
PKI_API void pki_acme_resp_free(pki_acme_resp_t *resp);
/* The answer to a request the glue refuses before routing it (a body over
 * its cap, a path it does not take): the problem (status, RFC 8555 type
 * such as "malformed", detail) with Link rel="index" (none when
 * req->base_url is NULL).  nonce 1: with a fresh Replay-Nonce too (RFC
 * 8555 6.5), blocking on Redis as pki_acme_handle does, and without one if
 * Redis fails (the status stays); nonce 0: no I/O at all, for an event
 * loop that cannot reach the pool. */
PKI_API void pki_acme_refuse(const pki_acme_conf_t *conf,
    const pki_acme_req_t *req, int status, const char *type,
    const char *detail, int nonce, pki_acme_resp_t *resp);
/* 1 when req is a POST to a finalize URL ("finalize/<acct>/<order>"):
 * the one resource that signs, with conf->ca's key (revokeCert and the
 * others only read and write Redis).  No I/O, no parsing of the JWS: an
 * event loop asks it, with pki_key_hung(), before it posts the request to
 * a thread pool that a hung token may hold. */
PKI_API int pki_acme_signs(const pki_acme_req_t *req);
/* Validates the challenge and records the outcome (blocking).  The job
 * may be run at most once; res (may be NULL) says what happened.  A
 * fault of this server (res->status PKI_INTERNAL: out of memory, an
 * unusable resolver setting, ...) records nothing: the challenge stays
 * processing, and a poll restarts it once stale. */
PKI_API void pki_acme_job_run(const pki_acme_conf_t *conf,
    pki_acme_job_t *job, pki_result_t *res);
PKI_API void pki_acme_job_free(pki_acme_job_t *job);
/* The id of the account whose challenge the job validates. */
PKI_API const char *pki_acme_job_account(const pki_acme_job_t *job);

/* RFC 9773 certificate identifier: base64url(AKI keyIdentifier) "."
 * base64url(serial octets).  malloc'd; NULL without an AKI. */
PKI_API char *pki_acme_cert_id(X509 *cert);

/* EAB keys (the admin API's "acme/eab" section).  pki_acme_eab_new makes
 * a kid and a 64-byte HMAC key (both base64url): long enough for HS512,
 * as RFC 7518 3.2 asks of a key for each HMAC algorithm.  The caller wipes
 * key after use; on failure it is wiped already. */
#define PKI_ACME_EAB_KEY_BYTES  64
#define PKI_ACME_EAB_KEY_BUF    96      /* its base64url text and NUL */
PKI_API pki_status_t pki_acme_eab_new(pki_redis_t *r, char kid[32],
    char key[PKI_ACME_EAB_KEY_BUF], pki_result_t *res);
/* One page of the EAB keys: JSON array of {"kid","status","created",
 * "account"} (malloc'd), from cursor ("0" or NULL starts; digits only),
 * about limit keys (an SSCAN page: a few more or fewer); next gets the
 * cursor of the next page, "0" when done. */
PKI_API pki_status_t pki_acme_eab_list(pki_redis_t *r, const char *cursor,
    size_t limit, char **json, char next[24], pki_result_t *res);
PKI_API pki_status_t pki_acme_eab_disable(pki_redis_t *r, const char *kid,
    pki_result_t *res);

/* ACME accounts (the admin API's "acme/accounts" section).  The account's
 * public view {"id","status","contact","createdAt","termsOfServiceAgreed",
 * "eab_kid","thumbprint"} (malloc'd; members absent when not stored).
 * PKI_NOT_FOUND for an unknown or malformed id (Redis is not asked). */
PKI_API pki_status_t pki_acme_account_get(pki_redis_t *r, const char *id,
    char **json, pki_result_t *res);
/* Sets the account's status to "revoked" (RFC 8555 7.1.6, the server's
 * deactivation; compare-and-set) and writes the revoked account into each
 * of the nstate acme_redis stores (their copy of the account), so that
 * every request of the account is refused from the next one on.
 * *changed 0: it was revoked before (the copies are written again, PKI_OK);
 * PKI_CONFLICT: deactivated by its client; PKI_UNAVAILABLE with the
 * durable revocation done when a state store failed: call again. */
PKI_API pki_status_t pki_acme_account_revoke(pki_redis_t *r,
    pki_redis_t *const *state, size_t nstate, const char *id, int *changed,
    char **json, pki_result_t *res);


/* ---- Matter (core/matter_tlv.c, core/matter.c) -----------------------------
 *
 * Matter device attestation (PAA -> PAI -> DAC, X.509 DER) and operational
 * (RCAC -> [ICAC] -> NOC, Matter TLV) certificates; the rules are those of
 * vectors/matter/PROFILES.md.  Built-in templates "matter-paa",
 * "matter-pai", "matter-dac", "matter-rcac", "matter-icac" and "matter-noc"
 * (or "matter TYPE;" in a template of one's own, with "matter_vid XXXX;"
 * and "matter_pid XXXX;") make pki_issue() enforce the profile: P-256 and
 * ecdsa-with-SHA256 only, the extensions, DN and size rules; a DAC's VID
 * and PID come from the template and the PAI, never from the CSR.  A
 * request that would break a rule is refused (PKI_POLICY) with the rule
 * named; every certificate is checked again after signing.
 */

typedef enum {
    PKI_MATTER_NONE = 0,
    PKI_MATTER_PAA,
    PKI_MATTER_PAI,
    PKI_MATTER_DAC,
    PKI_MATTER_RCAC,
    PKI_MATTER_ICAC,
    PKI_MATTER_NOC
} pki_matter_type_t;

#define PKI_MATTER_DER_MAX    600
#define PKI_MATTER_TLV_MAX    400
#define PKI_MATTER_MAX_BATCH  1000

/* "paa" .. "noc" or "matter-paa" .. "matter-noc"; PKI_MATTER_NONE if
 * neither. */
PKI_API pki_matter_type_t pki_matter_type_by_name(const char *name);
PKI_API const char *pki_matter_type_name(pki_matter_type_t type);

/* X.509 DER <-> Matter TLV.  Output malloc'd.  DER -> TLV refuses what TLV
 * cannot represent byte-exactly; TLV -> DER refuses corrupt or truncated
 * input (never reads past len).  PKI_MALFORMED / PKI_TOO_LARGE. */
PKI_API pki_status_t pki_matter_der_to_tlv(const unsigned char *der,
    size_t len, unsigned char **tlv, size_t *tlvlen, pki_result_t *res);
PKI_API pki_status_t pki_matter_tlv_to_der(const unsigned char *tlv,
    size_t len, unsigned char **der, size_t *derlen, pki_result_t *res);

/* A built-in template by name ("matter-dac", ...), finished; NULL if the
 * name is not one. */
PKI_API pki_template_t *pki_matter_template_new(const char *name,
    pki_result_t *res);
PKI_API pki_matter_type_t pki_matter_template_type(const pki_template_t *t);

/* The profile of one certificate (PROFILES.md 1-2), issuer may be NULL
 * (the issuer-dependent rules are then skipped; a self-signed type is its
 * own issuer).  PKI_POLICY with the rule in the detail. */
/* matter_noc: the CA is an RCAC, or an ICAC with its issuing RCAC in
 * its chain (PKI_MALFORMED, with the reason, otherwise). */
PKI_API pki_status_t pki_matter_noc_ca_check(pki_ca_t *ca,
    pki_result_t *res);
PKI_API pki_status_t pki_matter_check(X509 *x, pki_matter_type_t type,
    X509 *issuer, pki_result_t *res);

/* Device attestation chain checks (PROFILES.md 3, chip-cert
 * validate-att-cert): format of each, VID/PID rules, the chain verified
 * (X509_V_FLAG_X509_STRICT) at the DAC's notBefore, the DAC valid at now
 * (0: the clock).  PKI_POLICY / PKI_BAD_SIGNATURE with the rule named. */
PKI_API pki_status_t pki_matter_verify_attestation(X509 *dac, X509 *pai,
    X509 *paa, time_t now, pki_result_t *res);
/* Certification Declaration (PROFILES.md 3 step 10, 4): the CMS signature
 * with signer (the CD signing certificate), then the payload against the
 * DAC/PAI VID/PID (basic_vid/basic_pid: BasicInformation, -1: the DAC's)
 * and, with paa, authorized_paa_list. */
PKI_API pki_status_t pki_matter_verify_cd(const unsigned char *cms,
    size_t len, X509 *signer, X509 *dac, X509 *pai, X509 *paa,
    int basic_vid, int basic_pid, pki_result_t *res);
/* Operational chain: RCAC -> [ICAC] -> NOC (icac may be NULL), each
 * profile, fabric-id consistency, TLV round trip, signatures, each
 * certificate valid at now (0: the clock; a notAfter of 99991231235959Z
 * never expires) and each CA's pathLenConstraint. */
PKI_API pki_status_t pki_matter_verify_operational(X509 *noc, X509 *icac,
    X509 *rcac, time_t now, pki_result_t *res);

/* Matter HTTP engine (JSON).  POST dac/batch {"csrs": [b64 DER, ...]} or
 * {"count": N} -> {"certificates": [...]} (+ "keys": [b64 PKCS#8, ...]);
 * POST noc {"csr", "node_id", "fabric_id", "cats"} -> {"noc", "noc_tlv",
 * "icac", "icac_tlv", "rcac", "rcac_tlv"}.  Errors {"error": "..."} with
 * 400 (the rule), 403, 405, 413, 415, 503.  Blocking. */
typedef enum {
    PKI_MATTER_OP_UNKNOWN = 0,
    PKI_MATTER_OP_DAC_BATCH,
    PKI_MATTER_OP_NOC
} pki_matter_op_t;

typedef struct {
    pki_ca_t          *ca;           /* PAI (DAC batch) or ICAC/RCAC (NOC) */
    pki_template_t    *tmpl;         /* a matter-dac / matter-noc template  */
    pki_redis_t       *redis;
    size_t             max_body;     /* default 2 MiB (batch), 16 KiB (NOC) */
    int                threads;      /* batch signing threads, <= 0: 2
                                        (nginx: matter_batch_threads,
                                        default 32)                         */
} pki_matter_conf_t;

typedef struct {
    pki_matter_op_t        op;
    const char            *method;
    const char            *content_type;
    const unsigned char   *body;
    size_t                 body_len;
    const char            *user;     /* authenticated identity, or NULL     */
    const char            *client;
} pki_matter_req_t;

typedef struct {
    int             http_status;
    const char     *content_type;
    int             retry_after;
    const char     *allow;           /* Allow of a 405 (static), NULL   */
    unsigned char  *body;            /* malloc'd JSON */
    size_t          body_len;
    pki_result_t    res;
    int             secret;          /* the body holds private keys (a
                                        keygen batch): no copy of it may
                                        stay in a buffer */
    char           *unsettled;       /* malloc'd, or NULL: the serials a
                                        failed batch issued and could not
                                        withdraw, for the error log (at
                                        error: to revoke by hand) */
} pki_matter_resp_t;

PKI_API void pki_matter_handle(const pki_matter_conf_t *conf,
    const pki_matter_req_t *req, pki_matter_resp_t *resp);
PKI_API void pki_matter_resp_free(pki_matter_resp_t *resp);

/* ---- batch issuance (core/issue.c, core/redis.c) -------------------------
 *
 * pki_issue for many requests of one CA and template at two Redis round
 * trips per batch instead of two per certificate.  Per certificate the
 * invariants of pki_issue hold: a fresh serial reserved with SET NX and its
 * intent (pending record) written before anything is signed, the signature
 * verified, the record committed before the certificate is returned, a
 * failure after the reservation abandons the pending record, and every
 * item gets its PKI_EV_ISSUE event (transaction log + metrics) like a
 * single issuance; the batch's log entries are made durable together.
 *   1. each item: policy checks, TBS built                (threads)
 *   2. all serials + intents reserved in one pipelined round trip
 *      (collisions drawn again, bounded as in pki_issue)
 *   3. each item: signed, verified, profile-checked       (threads)
 *   4. all records committed in one pipelined round trip
 *   5. events emitted in the calling thread (its audit ticket covers all)
 * An item refused in step 1 refuses the batch: the others are not
 * reserved, signed or recorded (status: that item's, stopped = 1).  Later
 * failures (Redis, the key, the profile of the signed certificate) are the
 * item's own: the others go on, and the caller withdraws what it will not
 * deliver (items[i].committed).  threads:
 * worker threads for steps 1 and 3 (<= 1: the calling thread only; at most
 * 64).  Returns PKI_OK when every item was issued, otherwise the status
 * of the first item that failed on its own (res gets its detail). */

typedef struct {
    const pki_request_t  *req;      /* in                                 */
    X509                 *cert;     /* out: the certificate, or NULL      */
    pki_status_t          status;   /* out                                */
    pki_result_t          res;      /* out                                */
    int                   stopped;  /* out: 1: not tried, another item of
                                       the batch was refused in step 1    */
    char                  committed[41]; /* out: the serial (hex) once its
                                            record is committed, even when
                                            cert is dropped after (its
                                            audit entry failed); else "" */
} pki_issue_item_t;

PKI_API pki_status_t pki_issue_batch(pki_ca_t *ca, const pki_template_t *t,
    pki_redis_t *r, pki_issue_item_t *items, size_t n,
    const pki_issue_ctx_t *ictx, int threads, pki_result_t *res);

/* pki_record_reserve for n records (one CA) in one pipelined round trip:
 * taken[i] is set to 1 when record i's serial was already used (nothing
 * written for it), 0 when it is reserved.  A failure of the round trip
 * returns its status and leaves taken[] unset. */
PKI_API pki_status_t pki_record_reserve_batch(pki_redis_t *r,
    const pki_record_t *recs, size_t n, int *taken, pki_result_t *res);
/* pki_record_commit for n records (one CA) in one pipelined round trip:
 * status[i] PKI_OK, PKI_UNAVAILABLE (record gone) or PKI_CONFLICT (not
 * pending). */
PKI_API pki_status_t pki_record_commit_batch(pki_redis_t *r,
    const pki_record_t *recs, size_t n, pki_status_t *status,
    pki_result_t *res);

/* ---- transaction log: syncer thread (core/audit.c, issue 7) ----------------
 *
 * A thread of its own that makes the deferred appends durable.  While it
 * runs, a deferred pki_event_emit only formats the entry and queues it
 * (its ticket then counts queued entries); the thread writes everything
 * queued as one batch (one flock, one write), one fdatasync for all of it
 * (group commit; across processes one sync at a time covers them all),
 * then notify(arg) from that thread (e.g. a write to an eventfd the event
 * loop watches), which then finds pki_audit_synced() covering the tickets
 * it waits for.  A batch that cannot be written or synced is retried; the
 * answers wait (fail closed).  No thread of the server's pool waits for
 * the disk.  pki_audit_syncer_stop() writes what is queued;
 * pki_audit_close() stops it too.  pki_audit_synced() reads without a lock
 * (the event loop may call it). */
PKI_API pki_status_t pki_audit_syncer_start(pki_audit_t *a,
    void (*notify)(void *arg), void *arg, pki_result_t *res);
PKI_API void pki_audit_syncer_stop(pki_audit_t *a);

/* Entries carried by the certificate store.  After pki_audit_carry(a, r,
 * ca), while a's syncer runs, the success entry of an issuance by CA "ca"
 * with its record in store r is appended to a Redis stream
 * ("<ns>{ca:CA}:audit:<host>-<id>", fields t: time, b: the entry's fields,
 * p: the writer's pid; id: the 16 hex digits of DIR/audit.id, made at the
 * log's first open and kept, so that two log directories never share a
 * stream, not even with one host name and one path in two containers) in
 * the same script that commits the record, so it is durable exactly when
 * the record is, and no answer waits for the log file.  The syncer writes
 * carried entries in batches (within 20 ms), syncs the file every second
 * and then deletes the synced entries from the stream.  A janitor in every
 * syncer looks each second for entries left in a stream: one whose writer
 * process is gone (kill -9, a crash), or older than orphan_ms (30 s; a
 * machine that lost the file's page cache), is written unless the file
 * holds it already (its line has "rid": the stream id, and "stream": the
 * "<host>-<id>" it is of), then deleted.  The janitor does the same with
 * the stream of the previous version ("<host>-<dir hash>", the first 6
 * bytes of SHA-256 over the directory's real path; its lines have no
 * "stream"), so an upgrade loses none of its entries.  Call before the
 * syncer starts.
 * pki_audit_ticket_done(): whether the answer holding ticket may leave. */
PKI_API pki_status_t pki_audit_carry(pki_audit_t *a, pki_redis_t *r,
    const char *ca, pki_result_t *res);
PKI_API int pki_audit_ticket_done(pki_audit_t *a, unsigned long long ticket);

#endif /* PKI_H */
