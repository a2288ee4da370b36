/*
 * Copyright 2026 The nginx-pki developers
 * SPDX-License-Identifier: Apache-2.0
 *
 * Internal interface of the key layer (key.c) to the JWS verifier (jws.c):
 * ECDSA P-256 verification with a precomputed table for one public point,
 * about half the cost of the generic verifier for a key that verifies
 * often.  Nothing here is exported from libpkicore.so.
 */

#ifndef PKI_KEY_INT_H
#define PKI_KEY_INT_H

#include <stddef.h>

#include <openssl/ec.h>


/* P-256 with the point whose octet encoding is pt as its generator, and
 * that generator's table (about 30 ms to build), checked on a signature
 * (sig over the digest dig) that the generic verifier has just accepted:
 * the table must accept it and refuse it over another digest.  NULL when
 * pt is not a point of P-256 other than infinity, when the check fails, or
 * on any failure.  Free with EC_GROUP_free(); read-only once built, so
 * threads may share it. */
EC_GROUP *pki_int_p256_table(const unsigned char *pt, size_t len,
    const unsigned char *sig, size_t siglen, const unsigned char *dig,
    size_t dlen);

/* 1 when sig (a DER ECDSA-Sig-Value, nothing after it, in its one DER
 * encoding) verifies over the digest dig with the key whose point is gq's
 * generator; 0 otherwise.  The digest's leftmost 256 bits are used. */
int pki_int_p256_verify(const EC_GROUP *gq, const unsigned char *sig,
    size_t siglen, const unsigned char *dig, size_t dlen);

/* The same for a signature as JWS has it (RFC 7518 3.4): r and s as 32
 * bytes each, big-endian, len 64. */
int pki_int_p256_verify_raw(const EC_GROUP *gq, const unsigned char *rs,
    size_t len, const unsigned char *dig, size_t dlen);

/* The largest DER ECDSA-Sig-Value the signing functions release for the EC
 * key pub (its s is always the low one, so for P-256 and P-384 one octet
 * under EVP_PKEY_get_size()); 0 when pub is not an EC key. */
int pki_int_ecdsa_sig_max(const EVP_PKEY *pub);


#endif /* PKI_KEY_INT_H */
