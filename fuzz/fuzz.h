/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Shared fixture of the fuzz targets: a two-level CA (root + issuing CA)
 * with file keys in a private temporary directory, templates, a leaf
 * certificate, and a Redis store that points at a socket that does not
 * exist (every backend call fails at once with PKI_UNAVAILABLE, so the
 * parsers in front of it run at full speed).
 *
 * Each target defines LLVMFuzzerTestOneInput() and, when it needs the
 * fixture, LLVMFuzzerInitialize().  The same source links either with
 * libFuzzer or with replay_main.c.
 */

#ifndef PKI_FUZZ_H
#define PKI_FUZZ_H

#include <stddef.h>
#include <stdint.h>

#include "pki.h"


typedef struct {
    pki_ca_t        *root;        /* self-signed root CA                   */
    pki_ca_t        *ca;          /* issuing CA (signed by root)           */
    X509            *root_cert;   /* borrowed from root                    */
    X509            *ca_cert;     /* borrowed from ca                      */
    X509            *leaf;        /* a device certificate issued by ca     */
    EVP_PKEY        *leaf_key;
    pki_template_t  *device;      /* ec, rsa 2048-4096, ed25519; SAN dns
                                     copy; server_keygen off              */
    pki_template_t  *keygen;      /* ec + ed25519 only, server_keygen on   */
    pki_template_t  *strict;      /* every rule kind: required, forbidden,
                                     fixed, several SAN types             */
    pki_template_t  *wide;        /* copies most subject attributes (each
                                     string type rule of pki_name_type),
                                     san dns copy wildcard, serverAuth    */
    pki_template_t  *nodns;       /* san dns forbidden, no EKU: a dotted
                                     CN is judged as a dNSName            */
    pki_template_t  *client;      /* clientAuth only: a dotted CN passes  */
    pki_redis_t     *dead_redis;  /* unix socket that does not exist       */
    pki_template_t  *root_tmpl;   /* the CA profiles (kept reachable)      */
    pki_template_t  *sub_tmpl;
} pki_fuzz_fixture_t;

/* Builds the fixture once (idempotent); exits the process on failure. */
const pki_fuzz_fixture_t *pki_fuzz_fixture(void);

/* A template from "directive arg arg" lines (NULL-terminated); NULL if a
 * line or the finish step fails. */
pki_template_t *pki_fuzz_template(const char *name, const char *const *lines);

/* A key from PEM text, written into the fixture's temporary directory as
 * name and opened (pki_key_new + pki_key_open); exits on failure. */
pki_key_t *pki_fuzz_key_pem(const char *pem, const char *name);

/* 1 when PKI_FUZZ_VERBOSE is set: targets then print what each input
 * led to (to check that seeds reach the paths they are meant for). */
int pki_fuzz_verbose(void);

/* Splits data into a NUL-terminated copy (malloc'd). */
char *pki_fuzz_strndup(const uint8_t *data, size_t size);

/* The fixture's private temporary directory (removed at exit). */
const char *pki_fuzz_dir(void);

/* A tiny in-process Redis (fakeredis.c): a thread serving a unix socket
 * in the fixture directory from an in-memory key space.  Started by the
 * first pki_fuzz_kv_redis() call (namespace "fz:").  Targets build their
 * state, take a snapshot, and reset to it at the END of each input (so
 * what an input allocated is freed within it: libFuzzer runs a leak check
 * after each input whose mallocs and frees do not balance).  EVAL runs
 * the script (Lua 5.1, redis.call on the same key space), unless
 * pki_fuzz_kv_eval_reply set a fixed RESP answer ("" to run again). */
pki_redis_t *pki_fuzz_kv_redis(void);
void pki_fuzz_kv_snapshot(void);
void pki_fuzz_kv_reset(void);
void pki_fuzz_kv_eval_reply(const char *resp);
char *pki_fuzz_kv_get(const char *key);          /* malloc'd or NULL */
void pki_fuzz_kv_set(const char *key, const char *value);
void pki_fuzz_kv_hset(const char *key, const char *field, const char *value,
    size_t vlen);
void pki_fuzz_kv_each(const char *prefix, void (*fn)(void *arg,
    const char *key, const char *value), void *arg);

/* The Matter hierarchies (fixture_matter.c), built once; exits on
 * failure.  Certificates borrowed from their CA, except dac. */
typedef struct {
    pki_ca_t        *capaa, *capai, *carc, *caic;
    X509            *paa, *pai, *dac, *rcac, *icac;
    pki_template_t  *tdac;        /* matter dac, matter_pid 8000          */
    pki_template_t  *tdac2;       /* dac-8001: a second PID                */
    pki_template_t  *tnoc;        /* matter-noc (under RCAC and ICAC)      */
    pki_template_t  *tpaa, *trc;  /* the self-signed profiles              */
    EVP_PKEY        *dev_key;     /* the DAC's key                         */
    X509            *cd_signer;   /* CD signing certificate (self-signed)  */
    EVP_PKEY        *cd_key;
} pki_fuzz_matter_t;

const pki_fuzz_matter_t *pki_fuzz_matter(void);

/* A private key from PEM text; exits on failure. */
EVP_PKEY *pki_fuzz_pem_pkey(const char *pem);

/* s[0..n) with each names[i] replaced by values[i] (NULL: ""), the
 * first name that matches at a position wins (list longer names first).
 * malloc'd, NUL-terminated. */
char *pki_fuzz_expand(const char *s, size_t n, const char *const *names,
    const char *const *values, int count);

int LLVMFuzzerInitialize(int *argc, char ***argv);
int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#endif /* PKI_FUZZ_H */
